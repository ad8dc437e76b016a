//! `GET /v1/ws`: the WebSocket endpoint.
//!
//! The token is checked before the upgrade (a bad one gets HTTP 401). Each
//! connection then runs two tasks: the reader (this module's `read_loop`,
//! which decodes frames and drives the [`Session`]) and the writer, which
//! drains the connection's [`Outbox`] into as few frames as possible and
//! flushes once per batch. Either side ends the connection by asking the outbox
//! to close; the writer sends the close frame.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;

use crate::error::{close, ApiError, ErrorCode};
use crate::http::bearer_token;
use crate::outbox::{Drained, Outbox, OutboxLimits};
use crate::protocol::{decode_messages, encode_hb, Request};
use crate::server::App;
use crate::session::Session;
use crate::token::Claims;

/// Frames the server sends are packed up to this size: big enough to batch
/// thousands of small items, small enough that socket buffers stay modest.
const PACK_LIMIT: usize = 64 * 1024;
/// tungstenite's read buffer per connection (its default is 128 KiB; most
/// client frames are tiny, and larger ones grow it on demand).
const READ_BUFFER: usize = 2 * 1024;
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

async fn serve_connection(socket: WebSocket, app: Arc<App>, claims: Claims) {
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
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(write_loop(sink, outbox.clone(), app.clone()));
    let mut session = Session::new(app.clone(), outbox.clone(), claims);
    let conn = session.id();
    tracing::debug!(conn, sub = %session.subject(), "connected");
    read_loop(&mut stream, &mut session, &outbox, &app).await;
    session.finish();
    drop(session);

    let write_timeout = app.config.limits.write_timeout;
    let _ = tokio::time::timeout(write_timeout + CLOSE_LINGER, writer).await;
    // Let the peer's close reply (and anything it still sends) arrive before the
    // socket is dropped, so the kernel doesn't reset a connection with unread data.
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    app.connections.fetch_sub(1, Ordering::AcqRel);
    metrics.connections.dec();
    tracing::debug!(conn, "disconnected");
}

/// Reads frames until the peer leaves or the connection must close.
async fn read_loop(
    stream: &mut SplitStream<WebSocket>,
    session: &mut Session,
    outbox: &Outbox,
    app: &App,
) {
    let expiry = tokio::time::sleep_until(session.expires_at());
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            biased;
            _ = outbox.closing().cancelled() => return,
            _ = app.shutdown.cancelled() => {
                outbox.close(close::GOING_AWAY, "server shutting down");
                return;
            }
            _ = &mut expiry => {
                if session.expired() {
                    outbox.close(close::TOKEN_EXPIRED, "token expired");
                    return;
                }
                expiry.as_mut().reset(session.expires_at());
            }
            msg = stream.next() => {
                let msg = match msg {
                    None => return,
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        if is_capacity_error(e) {
                            outbox.close(
                                close::FRAME_TOO_LARGE,
                                format!("frame over the {} byte limit", app.config.limits.max_frame_bytes),
                            );
                        } else {
                            outbox.abort();
                        }
                        return;
                    }
                };
                match msg {
                    Message::Binary(frame) => {
                        app.metrics.bytes_in.inc_by(frame.len() as u64);
                        if let Err(c) = handle_frame(session, &frame).await {
                            outbox.close(c.code, c.reason);
                            return;
                        }
                        // An `auth` may have moved the expiry.
                        expiry.as_mut().reset(session.expires_at());
                    }
                    Message::Text(_) => {
                        outbox.close(close::PROTOCOL_VIOLATION, "text frames are not allowed: send binary MessagePack frames");
                        return;
                    }
                    Message::Close(_) => {
                        outbox.abort();
                        return;
                    }
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
        }
    }
}

async fn handle_frame(
    session: &mut Session,
    frame: &[u8],
) -> Result<(), crate::outbox::CloseRequest> {
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

fn violation(reason: String) -> crate::outbox::CloseRequest {
    crate::outbox::CloseRequest {
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

/// Drains the outbox into the socket: one flush per batch, `hb` when idle.
async fn write_loop(mut sink: SplitSink<WebSocket, Message>, outbox: Arc<Outbox>, app: Arc<App>) {
    let heartbeat = app.config.limits.heartbeat;
    let write_timeout = app.config.limits.write_timeout;
    let metrics = &app.metrics;
    let mut last_sent = Instant::now();
    loop {
        match outbox.drain() {
            Drained::Frames(frames) => {
                let count = frames.len() as u64;
                let bytes: usize = frames.iter().map(|f| f.len()).sum();
                let sent = tokio::time::timeout(write_timeout, async {
                    for frame in frames {
                        sink.feed(Message::Binary(frame)).await?;
                    }
                    sink.flush().await
                })
                .await;
                match sent {
                    Ok(Ok(())) => {
                        metrics.bytes_out.inc_by(bytes as u64);
                        metrics.frames_out.inc_by(count);
                        last_sent = Instant::now();
                    }
                    Ok(Err(_)) => {
                        outbox.abort();
                        return;
                    }
                    Err(_) => {
                        tracing::info!(
                            "write made no progress for {write_timeout:?}: dropping the connection"
                        );
                        metrics.slow_consumer_closes.inc();
                        outbox.abort();
                        return;
                    }
                }
            }
            Drained::Close(c) => {
                if c.code != 0 {
                    let frame = CloseFrame {
                        code: c.code,
                        reason: clip_reason(&c.reason).into(),
                    };
                    let _ =
                        tokio::time::timeout(write_timeout, sink.send(Message::Close(Some(frame))))
                            .await;
                }
                return;
            }
            Drained::Empty => {
                let idle = heartbeat.saturating_sub(last_sent.elapsed());
                tokio::select! {
                    _ = outbox.wait() => {}
                    _ = tokio::time::sleep(idle) => {
                        if last_sent.elapsed() >= heartbeat {
                            outbox.push_control(encode_hb());
                        }
                    }
                }
            }
        }
    }
}
