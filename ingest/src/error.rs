//! The one error type every handler returns, rendered as RFC 9457 problem details.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gridclue_core::roles::{RefusalClass, RefusalReason};
use gridclue_core::{Action, CommandId, Status};

pub use gridclue_core::service::PROBLEM_CONTENT_TYPE;

/// The clue processor refused a transition.
#[derive(Debug)]
pub struct Refused {
    pub class: RefusalClass,
    pub reason: RefusalReason,
    pub detail: String,
    pub command_id: CommandId,
    pub action: Action,
    /// The clue's status when refused (none for an unknown clue).
    pub clue_status: Option<Status>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this token may not {0}")]
    Forbidden(&'static str),
    #[error("request body must be {0}")]
    UnsupportedMediaType(&'static str),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{detail}")]
    Invalid { code: &'static str, detail: String },
    /// A transition request whose field `field` is missing, of the wrong type or out of range.
    #[error("{detail}")]
    InvalidField {
        code: &'static str,
        field: String,
        detail: String,
    },
    #[error("{}", .0.detail)]
    Refused(Box<Refused>),
    #[error("this Idempotency-Key or clue_id was already used for a different clue")]
    IdempotencyConflict,
    #[error("too many requests from this {scope}; retry after {retry_after_secs} s")]
    RateLimited {
        scope: &'static str,
        retry_after_secs: u64,
    },
    #[error("not found")]
    NotFound,
    #[error("no route for this method and path")]
    NoRoute,
    #[error("this path does not accept the request's method")]
    MethodNotAllowed,
    #[error("the message broker did not acknowledge in time; retry later")]
    BrokerUnavailable { retry_after_secs: u64 },
    #[error("clue reads are unavailable: {0}")]
    ReadsUnavailable(&'static str),
    #[error("the photo store is unavailable; retry later")]
    PhotoStoreUnavailable,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<gridclue_core::tokens::AuthError> for ApiError {
    fn from(e: gridclue_core::tokens::AuthError) -> Self {
        use gridclue_core::tokens::AuthError;
        ApiError::Unauthorized(match e {
            AuthError::Missing => "a bearer token is required",
            AuthError::Invalid => "the bearer token is not valid",
            AuthError::Revoked => "the bearer token has been revoked",
        })
    }
}

impl ApiError {
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Invalid {
            code,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } | ApiError::InvalidField { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Refused(r) => {
                StatusCode::from_u16(r.class.http_status()).unwrap_or(StatusCode::CONFLICT)
            }
            ApiError::IdempotencyConflict => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BrokerUnavailable { .. }
            | ApiError::ReadsUnavailable(_)
            | ApiError::PhotoStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code; also the metric label for rejections.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::Invalid { code, .. } | ApiError::InvalidField { code, .. } => code,
            ApiError::Refused(r) => r.reason.as_str(),
            ApiError::IdempotencyConflict => "idempotency_key_reused",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::NotFound => "not_found",
            ApiError::NoRoute => "no_route",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::BrokerUnavailable { .. } => "broker_unavailable",
            ApiError::ReadsUnavailable(_) => "reads_unavailable",
            ApiError::PhotoStoreUnavailable => "photo_store_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Whether the same request may succeed later unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::BrokerUnavailable { .. }
                | ApiError::ReadsUnavailable(_)
                | ApiError::PhotoStoreUnavailable
        ) || matches!(self, ApiError::Refused(r) if r.class == RefusalClass::Unavailable)
    }

    /// Seconds for a `Retry-After` header, for the errors that carry one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited {
                retry_after_secs, ..
            }
            | ApiError::BrokerUnavailable { retry_after_secs } => Some(*retry_after_secs),
            ApiError::ReadsUnavailable(_) | ApiError::PhotoStoreUnavailable => Some(5),
            ApiError::Refused(r) if r.class == RefusalClass::Unavailable => Some(1),
            _ => None,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::UnsupportedMediaType(_) => "Unsupported media type",
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::InvalidJson(_) => "Malformed request",
            ApiError::Invalid {
                code: "empty_photo" | "photo_type_mismatch" | "invalid_image",
                ..
            } => "Invalid photo",
            ApiError::Invalid { .. } => "Invalid clue",
            ApiError::InvalidField { .. } => "Invalid transition",
            ApiError::Refused(r) => match r.class {
                RefusalClass::Forbidden => "Not allowed for this token",
                RefusalClass::Conflict => "Not possible in the clue's current state",
                RefusalClass::NotFound => "No such clue",
                RefusalClass::Unavailable => "Not possible right now",
            },
            ApiError::IdempotencyConflict => "Idempotency key reused",
            ApiError::RateLimited { .. } => "Too many requests",
            ApiError::NotFound | ApiError::NoRoute => "Not found",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::BrokerUnavailable { .. }
            | ApiError::ReadsUnavailable(_)
            | ApiError::PhotoStoreUnavailable => "Service unavailable",
            ApiError::Internal(_) => "Internal error",
        }
    }
}

/// A problem+json response like the shared builder's, with extra members.
fn problem_with(
    status: StatusCode,
    code: &str,
    title: &str,
    detail: &str,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Response {
    let mut body = serde_json::json!({
        "type": format!("{}{code}", gridclue_core::service::PROBLEM_TYPE_BASE),
        "code": code,
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(obj) = body.as_object_mut() {
        obj.extend(extra);
    }
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            // Logged once here; the client gets a generic body.
            tracing::error!(error = %cause, "request failed");
        }
        let extra = match &self {
            ApiError::InvalidField { field, .. } => serde_json::json!({ "field": field }),
            ApiError::Refused(r) => serde_json::json!({
                "command_id": r.command_id.to_string(),
                "action": r.action,
                "clue_status": r.clue_status,
            }),
            _ => serde_json::Value::Null,
        };
        let mut response = match extra {
            serde_json::Value::Object(extra) => {
                problem_with(status, self.code(), self.title(), &self.to_string(), extra)
            }
            _ => gridclue_core::service::problem(
                status,
                self.code(),
                self.title(),
                &self.to_string(),
            ),
        };
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::Unauthorized(_) = &self {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
