//! HTTP endpoints (PROTOCOL.md, "HTTP"): publish, token minting, health, metrics.
//! Errors are JSON `{"code", "message"}` with the protocol's codes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::names::TopicKey;
use crate::protocol::Value;
use crate::server::App;
use crate::token::{secrets_equal, Action, Permission};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            code: &'static str,
            message: &'a str,
        }
        let body = Json(Body {
            code: self.code.as_str(),
            message: &self.message,
        });
        (self.code.http_status(), body).into_response()
    }
}

/// The token in `Authorization: Bearer <token>`, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

#[derive(Serialize)]
pub struct PublishReply {
    pub seq: u64,
}

/// `POST /v1/topics/{cache}/{topic}`: publishes the body.
pub async fn publish(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishReply>, ApiError> {
    let token = bearer_token(&headers)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "a bearer token is required"))?;
    let claims = app
        .tokens
        .verify(&token)
        .map_err(|e| ApiError::new(ErrorCode::Unauthenticated, e.to_string()))?;
    let Path((cache, topic)) =
        path.map_err(|e| ApiError::new(ErrorCode::InvalidName, e.body_text()))?;
    let key = TopicKey::new(&cache, &topic)?;
    if !claims.allows(Action::Publish, &cache, &topic) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!("token may not publish to {key}"),
        ));
    }
    let max = app.config.limits.max_value_bytes;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::TooLarge,
            format!("value is over the {max} byte limit"),
        ),
        _ => ApiError::new(ErrorCode::BadRequest, e.body_text()),
    })?;
    if body.len() > max {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("value is {} bytes; the limit is {max}", body.len()),
        ));
    }
    if app.http_rate.check_key(&claims.sub).is_err() {
        app.metrics.rate_limited.inc();
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "rate limited: slow down",
        ));
    }
    let is_text = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/"));
    let value = if is_text {
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::new(ErrorCode::BadRequest, "a text/* body must be UTF-8"))?;
        Value::Text(text)
    } else {
        Value::Binary(body)
    };
    app.metrics.bytes_in.inc_by(value.len() as u64);
    let position = app
        .hub
        .publish(&key, &value, &claims.sub)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
    app.metrics.publish("http");
    Ok(Json(PublishReply { seq: position.seq }))
}

#[derive(Deserialize)]
pub struct MintRequest {
    pub sub: String,
    pub expires_in: i64,
    pub perms: Vec<Permission>,
}

#[derive(Serialize)]
pub struct MintReply {
    pub token: String,
    pub expires_at: u64,
}

/// Checks `Authorization: Bearer <operator key>` in constant time.
pub fn require_operator(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer_token(headers) {
        Some(key) if secrets_equal(&key, &app.config.operator_key) => Ok(()),
        Some(_) => Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "wrong operator key",
        )),
        None => Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "the operator key is required as a bearer token",
        )),
    }
}

/// `POST /v1/tokens`: operators mint scoped tokens.
pub async fn mint_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<MintRequest>, JsonRejection>,
) -> Result<Json<MintReply>, ApiError> {
    require_operator(&app, &headers)?;
    let Json(req) = body.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    if req.expires_in <= 0 {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "`expires_in` must be a positive number of seconds",
        ));
    }
    let (token, claims) = app
        .tokens
        .mint(
            &req.sub,
            Duration::from_secs(req.expires_in as u64),
            req.perms,
        )
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    Ok(Json(MintReply {
        token,
        expires_at: claims.exp,
    }))
}

/// `GET /v1/health`: 200 when this node can serve.
pub async fn health(State(app): State<Arc<App>>) -> Response {
    if app.shutdown.is_cancelled() {
        return ApiError::new(ErrorCode::Unavailable, "shutting down").into_response();
    }
    if app.hub.healthy().await {
        Json(serde_json::json!({"status": "ok"})).into_response()
    } else {
        ApiError::new(ErrorCode::Unavailable, "the engine is unreachable").into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.render(app.hub.engine_stats());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Unknown routes: 404 with the usual JSON error body.
pub async fn not_found() -> Response {
    let mut response = ApiError::new(ErrorCode::BadRequest, "no such endpoint").into_response();
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}
