//! `ApiError`: every handler's error, rendered as RFC 9457 problem details.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gridclue_core::tokens::AuthError;

pub use gridclue_core::service::PROBLEM_CONTENT_TYPE;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this token may not {0}")]
    Forbidden(&'static str),
    /// A query parameter that is unknown, repeated or malformed; `detail` names it.
    #[error("query parameter `{name}`: {detail}")]
    InvalidParameter { name: String, detail: String },
    /// A request body (or a required header) that is missing or malformed; `field` names it.
    #[error("`{field}`: {detail}")]
    InvalidBody { field: String, detail: String },
    #[error("{0}")]
    NotFound(String),
    /// A redemption larger than the reporter's balance: nothing was spent.
    #[error("the balance is {balance} points; {requested} cannot be redeemed")]
    InsufficientPoints { balance: i64, requested: u32 },
    /// An `Idempotency-Key` already used for a different request.
    #[error("Idempotency-Key {0:?} was used for a different request")]
    IdempotencyKeyReused(String),
    /// A token holding its maximum of open live streams (or the service holding its own).
    #[error("at most {limit} live streams may be open at once; close one first")]
    TooManyStreams { limit: usize },
    #[error("the statistics store is not available; retry later")]
    Unavailable,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthorized(match e {
            AuthError::Missing => "a bearer token is required (Authorization: Bearer <token>)",
            AuthError::Invalid => "the bearer token is not valid",
            AuthError::Revoked => "the bearer token has been revoked",
        })
    }
}

impl ApiError {
    pub fn invalid_parameter(name: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::InvalidParameter {
            name: name.into(),
            detail: detail.into(),
        }
    }

    pub fn invalid_body(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::InvalidBody {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidBody { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InsufficientPoints { .. } | ApiError::IdempotencyKeyReused(_) => {
                StatusCode::CONFLICT
            }
            ApiError::TooManyStreams { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code (the last segment of `type`).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::InvalidParameter { .. } => "invalid_parameter",
            ApiError::InvalidBody { .. } => "invalid_body",
            ApiError::NotFound(_) => "not_found",
            ApiError::InsufficientPoints { .. } => "insufficient_points",
            ApiError::IdempotencyKeyReused(_) => "idempotency_key_reused",
            ApiError::TooManyStreams { .. } => "too_many_streams",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::InvalidParameter { .. } => "Invalid query parameter",
            ApiError::InvalidBody { .. } => "Invalid request",
            ApiError::NotFound(_) => "Not found",
            ApiError::InsufficientPoints { .. } => "Insufficient points",
            ApiError::IdempotencyKeyReused(_) => "Idempotency-Key reused",
            ApiError::TooManyStreams { .. } => "Too many streams",
            ApiError::Unavailable => "Service unavailable",
            ApiError::Internal(_) => "Internal error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %cause, "request failed");
        }
        let mut response =
            gridclue_core::service::problem(status, self.code(), self.title(), &self.to_string());
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            _ => {}
        }
        response
    }
}
