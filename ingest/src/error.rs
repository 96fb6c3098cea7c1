//! The one error type every handler returns, rendered as RFC 9457 problem details.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this token may not {0}")]
    Forbidden(&'static str),
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{detail}")]
    Invalid { code: &'static str, detail: String },
    #[error("not found")]
    NotFound,
    #[error("the message broker did not acknowledge in time; retry later")]
    BrokerUnavailable { retry_after_secs: u64 },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    type_: String,
    code: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
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
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BrokerUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code; also the metric label for rejections.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::Invalid { code, .. } => code,
            ApiError::NotFound => "not_found",
            ApiError::BrokerUnavailable { .. } => "broker_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::UnsupportedMediaType => "Unsupported media type",
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::InvalidJson(_) => "Malformed request",
            ApiError::Invalid { .. } => "Invalid clue",
            ApiError::NotFound => "Not found",
            ApiError::BrokerUnavailable { .. } => "Service unavailable",
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
        let problem = Problem {
            type_: format!("https://gridclue.dev/problems/{}", self.code()),
            code: self.code(),
            title: self.title(),
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        match &self {
            ApiError::BrokerUnavailable { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
