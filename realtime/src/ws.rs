//! `GET /v1/ws`: the WebSocket endpoint.
//!
//! The token is checked before the upgrade (a bad one gets HTTP 401). Each
//! connection is then one task: it decodes frames and drives the
//! [`Session`], and drains the connection's [`Outbox`] into as few frames as
//! possible, flushing once per batch. Whatever decides the connection must end
//! (a protocol violation, the hub finding it too slow, expiry, shutdown) asks
//! the outbox to close; the task sends the close frame after what was queued.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use tokio::time::Instant;

use crate::error::{close, ApiError, ErrorCode};
use crate::http::bearer_token;
use crate::outbox::{CloseRequest, Drained, Outbox, OutboxLimits};
use crate::protocol::{decode_messages, encode_hb, Request};
use crate::server::App;
use crate::session::Session;
use crate::token::Claims;

/// Frames the server sends are packed up to this size: big enough to batch
/// thousands of small items, small enough that socket buffers stay modest.
const PACK_LIMIT: usize = 64 * 1024;
/// tungstenite's read buffer per connection (its default is 128 KiB). Most
/// client frames are tiny; a larger one grows the buffer to its size, and is
/// read in chunks of this size.
const READ_BUFFER: usize = 256;
/// How long a closing connection waits for the peer's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

pub async fn upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = bearer_token(&headers).or_else(|| {
        query
            .as_deref()
            .and_then(|q| serde_urlencoded::from_str::<TokenQuery>(q).ok())
            .and_then(|q| q.token)
    });
    let Some(token) = token else {
        return ApiError::new(ErrorCode::Unauthenticated, "a token is required").into_response();
    };
    let claims = match app.tokens.verify(&token) {
        Ok(c) => c,
        Err(e) => return ApiError::new(ErrorCode::Unauthenticated, e.to_string()).into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let limits = &app.config.limits;
    if app.connections.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
        app.connections.fetch_sub(1, Ordering::AcqRel);
        return ApiError::new(ErrorCode::Unavailable, "connection limit reached").into_response();
    }
    let tracker = app.tracker.clone();
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(PACK_LIMIT.max(limits.max_value_bytes) * 4)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| tracker.track_future(serve_connection(socket, app, claims)))
}

/// One task per connection: it reads and handles requests, and whenever the
/// outbox has something it writes it out (one flush per batch). While a write
/// is in progress the connection's own requests wait — backpressure on that
/// client only; the hub never waits for a connection.
async fn serve_connection(mut socket: WebSocket, app: Arc<App>, claims: Claims) {
    let metrics = app.metrics.clone();
    metrics.connections.inc();
    metrics.connections_total.inc();
    let limits = &app.config.limits;
    let outbox = Arc::new(Outbox::new(
        OutboxLimits {
            queue_bytes: limits.outbound_queue_bytes,
            slow_timeout: limits.slow_consumer_timeout,
            max_frame_bytes: PACK_LIMIT,
        },
        metrics.clone(),
    ));
    let mut session = Session::new(app.clone(), outbox.clone(), claims);
    let conn = session.id();
    tracing::debug!(conn, sub = %session.subject(), "connected");

    if let Some(close) = run(&mut socket, &mut session, &outbox, &app).await {
        let frame = CloseFrame {
            code: close.code,
            reason: clip_reason(&close.reason).into(),
        };
        let sent = tokio::time::timeout(
            limits.write_timeout,
            socket.send(Message::Close(Some(frame))),
        );
        if sent.await.is_ok() {
            // Let the peer's close reply (and anything it still sends) arrive
            // before the socket is dropped, so the kernel doesn't reset a
            // connection with unread data and lose the close frame.
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                while let Some(Ok(msg)) = socket.recv().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
    session.finish();
    app.connections.fetch_sub(1, Ordering::AcqRel);
    metrics.connections.dec();
    tracing::debug!(conn, "disconnected");
}

/// Serves the connection until it must close: returns the close frame to
/// send, or `None` when the peer is gone (or closed first).
///
/// One timer serves three deadlines — the token's expiry, the next heartbeat
/// and, while writing, the write timeout — because every timer is state that
/// each idle connection carries.
async fn run(
    socket: &mut WebSocket,
    session: &mut Session,
    outbox: &Outbox,
    app: &App,
) -> Option<CloseRequest> {
    let limits = &app.config.limits;
    let mut expires_at = session.expires_at();
    let mut heartbeat_at = Instant::now() + limits.heartbeat;
    let timer = tokio::time::sleep_until(expires_at.min(heartbeat_at));
    tokio::pin!(timer);
    loop {
        // Everything queued goes out before waiting again.
        match outbox.drain() {
            Drained::Frames(frames) => {
                timer.as_mut().reset(Instant::now() + limits.write_timeout);
                if !write_batch(socket, frames, app, timer.as_mut()).await {
                    return None;
                }
                heartbeat_at = Instant::now() + limits.heartbeat;
                timer.as_mut().reset(expires_at.min(heartbeat_at));
                continue;
            }
            Drained::Close(c) if c.code == 0 => return None,
            Drained::Close(c) => return Some(c),
            Drained::Empty => {}
        }
        tokio::select! {
            biased;
            _ = outbox.wait() => {}
            _ = app.shutdown.cancelled() => outbox.close(close::GOING_AWAY, "server shutting down"),
            _ = &mut timer => {
                let now = Instant::now();
                if now >= expires_at && session.expired() {
                    outbox.close(close::TOKEN_EXPIRED, "token expired");
                } else if now >= heartbeat_at {
                    outbox.push_control(encode_hb());
                    heartbeat_at = now + limits.heartbeat;
                }
                expires_at = session.expires_at();
                timer.as_mut().reset(expires_at.min(heartbeat_at));
            }
            msg = socket.recv() => match msg {
                None => return None,
                Some(Err(e)) => {
                    if !is_capacity_error(e) {
                        return None;
                    }
                    outbox.close(
                        close::FRAME_TOO_LARGE,
                        format!("frame over the {} byte limit", limits.max_frame_bytes),
                    );
                }
                Some(Ok(Message::Binary(frame))) => {
                    app.metrics.bytes_in.inc_by(frame.len() as u64);
                    // Boxed: request handling (subscribe, publish) nests deep
                    // futures; inlined, they would bloat every idle connection's task.
                    if let Err(c) = Box::pin(handle_frame(session, &frame)).await {
                        outbox.close(c.code, c.reason);
                    }
                    // An `auth` may have moved the expiry.
                    if session.expires_at() != expires_at {
                        expires_at = session.expires_at();
                        timer.as_mut().reset(expires_at.min(heartbeat_at));
                    }
                }
                Some(Ok(Message::Text(_))) => outbox.close(
                    close::PROTOCOL_VIOLATION,
                    "text frames are not allowed: send binary MessagePack frames",
                ),
                // tungstenite answers pings, and a peer's close, by itself.
                Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            },
        }
    }
}

/// Writes frames with one flush, giving up when `deadline` fires first. False
/// when the connection is unusable: the peer is gone, or the write made no
/// progress before the deadline.
async fn write_batch(
    socket: &mut WebSocket,
    frames: Vec<bytes::Bytes>,
    app: &App,
    deadline: std::pin::Pin<&mut tokio::time::Sleep>,
) -> bool {
    let count = frames.len() as u64;
    let bytes: usize = frames.iter().map(|f| f.len()).sum();
    let write = async {
        for frame in frames {
            socket.feed(Message::Binary(frame)).await?;
        }
        socket.flush().await
    };
    tokio::select! {
        sent = write => match sent {
            Ok(()) => {
                app.metrics.bytes_out.inc_by(bytes as u64);
                app.metrics.frames_out.inc_by(count);
                true
            }
            Err(_) => false,
        },
        _ = deadline => {
            let write_timeout = app.config.limits.write_timeout;
            tracing::info!("write made no progress for {write_timeout:?}: dropping the connection");
            app.metrics.slow_consumer_closes.inc();
            false
        }
    }
}

async fn handle_frame(session: &mut Session, frame: &[u8]) -> Result<(), CloseRequest> {
    if frame.is_empty() {
        return Err(violation(
            "empty frame: a frame holds one or more MessagePack maps".into(),
        ));
    }
    for msg in decode_messages(frame) {
        let req = msg
            .and_then(Request::try_from)
            .map_err(|e| violation(e.to_string()))?;
        session.handle(req).await?;
    }
    Ok(())
}

fn violation(reason: String) -> CloseRequest {
    CloseRequest {
        code: close::PROTOCOL_VIOLATION,
        reason,
    }
}

fn is_capacity_error(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    match e.into_inner().downcast::<Error>() {
        Ok(e) => matches!(*e, Error::Capacity(_)),
        Err(_) => false,
    }
}

/// A close reason must fit in a control frame (123 bytes of UTF-8).
fn clip_reason(reason: &str) -> String {
    if reason.len() <= 123 {
        return reason.to_owned();
    }
    let mut end = 120;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &reason[..end])
}
