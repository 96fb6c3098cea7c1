//! The one error type every handler returns, rendered as RFC 9457 problem details.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub use gridclue_core::service::PROBLEM_CONTENT_TYPE;

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
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
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
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::IdempotencyConflict => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BrokerUnavailable { .. } | ApiError::ReadsUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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
            ApiError::Invalid { code, .. } => code,
            ApiError::IdempotencyConflict => "idempotency_key_reused",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::NotFound => "not_found",
            ApiError::NoRoute => "no_route",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::BrokerUnavailable { .. } => "broker_unavailable",
            ApiError::ReadsUnavailable(_) => "reads_unavailable",
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
        )
    }

    /// Seconds for a `Retry-After` header, for the errors that carry one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited {
                retry_after_secs, ..
            }
            | ApiError::BrokerUnavailable { retry_after_secs } => Some(*retry_after_secs),
            ApiError::ReadsUnavailable(_) => Some(5),
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
            ApiError::Invalid { .. } => "Invalid clue",
            ApiError::IdempotencyConflict => "Idempotency key reused",
            ApiError::RateLimited { .. } => "Too many requests",
            ApiError::NotFound | ApiError::NoRoute => "Not found",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::BrokerUnavailable { .. } | ApiError::ReadsUnavailable(_) => {
                "Service unavailable"
            }
            ApiError::Internal(_) => "Internal error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            // Logged once here; the client gets a generic body.
            tracing::error!(error = %cause, "request failed");
        }
        let mut response =
            gridclue_core::service::problem(status, self.code(), self.title(), &self.to_string());
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
