//! The game's HTTP API, served beside the topics endpoints:
//!
//!     GET    /v1/matches                 list
//!     GET    /v1/matches/{id}            details (teams, players, scores)
//!     POST   /v1/matches/{id}/join       {"name", "team"?} → token and topics
//!     GET    /v1/matches/{id}/info       static match info (MessagePack)
//!     POST   /v1/matches                 operator: create
//!     DELETE /v1/matches/{id}            operator: end now
//!     GET    /v1/leaderboard?limit=N     all-time leaderboard
//!     GET    /v1/maps                    built-in maps
//!
//! Errors are JSON `{"code", "message"}` like the topics API.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::hosting::{CreateMatch, GameError, JoinRequest, MatchHost};
use crate::sim;

impl IntoResponse for GameError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            GameError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            GameError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            GameError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            GameError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        let body = serde_json::json!({"code": code, "message": self.to_string()});
        (status, Json(body)).into_response()
    }
}

pub fn routes(host: Arc<MatchHost>) -> Router {
    Router::new()
        .route("/v1/matches", get(list).post(create))
        .route("/v1/matches/{id}", get(details).delete(end))
        .route("/v1/matches/{id}/join", post(join))
        .route("/v1/matches/{id}/info", get(info))
        .route("/v1/leaderboard", get(leaderboard))
        .route("/v1/maps", get(maps))
        .with_state(host)
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, GameError> {
    body.map(|Json(b)| b)
        .map_err(|e| GameError::BadRequest(e.body_text()))
}

fn operator(host: &MatchHost, headers: &HeaderMap) -> Result<(), realtime::error::ApiError> {
    realtime::http::require_operator(host.app(), headers)
}

async fn list(State(host): State<Arc<MatchHost>>) -> Response {
    match host.list().await {
        Ok(matches) => Json(matches).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn details(State(host): State<Arc<MatchHost>>, Path(id): Path<String>) -> Response {
    match host.details(&id).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The static match info (MessagePack): map grid and rule numbers.
async fn info(State(host): State<Arc<MatchHost>>, Path(id): Path<String>) -> Response {
    match host.info(&id) {
        Ok(bytes) => (
            [(axum::http::header::CONTENT_TYPE, "application/vnd.msgpack")],
            bytes,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn create(
    State(host): State<Arc<MatchHost>>,
    headers: HeaderMap,
    body: Result<Json<CreateMatch>, JsonRejection>,
) -> Response {
    if let Err(e) = operator(&host, &headers) {
        return e.into_response();
    }
    let result = async { host.create(json_body(body)?).await }.await;
    match result {
        Ok(record) => (StatusCode::CREATED, Json(record)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn end(
    State(host): State<Arc<MatchHost>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = operator(&host, &headers) {
        return e.into_response();
    }
    match host.end(&id).await {
        Ok(record) => Json(record).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn join(
    State(host): State<Arc<MatchHost>>,
    Path(id): Path<String>,
    body: Result<Json<JoinRequest>, JsonRejection>,
) -> Response {
    let result = async { host.join(&id, json_body(body)?).await }.await;
    match result {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct LeaderboardQuery {
    limit: Option<usize>,
}

async fn leaderboard(
    State(host): State<Arc<MatchHost>>,
    query: Result<Query<LeaderboardQuery>, QueryRejection>,
) -> Response {
    let limit = match query {
        Ok(Query(q)) => q.limit.unwrap_or(20).clamp(1, 1000),
        Err(e) => return GameError::BadRequest(e.body_text()).into_response(),
    };
    match host.store().leaderboard(limit).await {
        Ok(board) => Json(board).into_response(),
        Err(e) => GameError::from(e).into_response(),
    }
}

#[derive(Serialize)]
struct MapInfo {
    name: String,
    title: String,
    width: u16,
    height: u16,
    teams: u8,
}

async fn maps() -> Json<Vec<MapInfo>> {
    Json(
        sim::maps::list()
            .filter_map(|name| {
                sim::maps::builtin(name).map(|m| MapInfo {
                    name: name.to_owned(),
                    title: m.name().to_owned(),
                    width: m.width(),
                    height: m.height(),
                    teams: m.teams(),
                })
            })
            .collect(),
    )
}
