//! The protocol's error codes (PROTOCOL.md, "Error codes"), shared by the
//! WebSocket `err` message and HTTP error bodies.

use axum::http::StatusCode;
use serde::Serialize;

/// One of the codes a client can see in `err.code` or an HTTP error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    PermissionDenied,
    InvalidName,
    TooLarge,
    RateLimited,
    LimitExceeded,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::InvalidName => "invalid_name",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::LimitExceeded => "limit_exceeded",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code on the HTTP endpoints.
    pub fn http_status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::InvalidName => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited | Self::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A refused request: a code plus a message a person can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<crate::names::NameError> for ApiError {
    fn from(e: crate::names::NameError) -> Self {
        Self::new(ErrorCode::InvalidName, e.to_string())
    }
}

/// WebSocket close codes (PROTOCOL.md, "Close codes").
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_VIOLATION: u16 = 4400;
    pub const TOKEN_EXPIRED: u16 = 4401;
    pub const FRAME_TOO_LARGE: u16 = 4413;
    pub const TOO_MANY_REQUESTS: u16 = 4429;
    pub const TOO_SLOW: u16 = 4503;
}
