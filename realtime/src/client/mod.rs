//! A Rust client for the topics protocol (PROTOCOL.md), for services, bots and tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), realtime::client::ClientError> {
//! use realtime::client::{Client, Event};
//!
//! let client = Client::connect("ws://127.0.0.1:8080", "<token>").await?;
//! let mut sub = client.subscribe("game", "match.42.state").await?;
//! let seq = client.publish("game", "match.42.state", "hello").await?;
//! while let Some(ev) = sub.recv().await {
//!     match ev {
//!         Event::Item { seq, value, from } => println!("{seq} from {from}: {value:?}"),
//!         Event::Gap { last, next, .. } => println!("missed {}..{}", last + 1, next),
//!     }
//! }
//! # let _ = seq; Ok(()) }
//! ```
//!
//! Design:
//! - One background task per [`Client`] owns the socket; [`Client`] is a cheap
//!   handle (an `Arc` around two channels) to clone into every task that needs it.
//! - Whatever is queued when the socket is free goes out as one binary frame
//!   (the protocol allows several messages back to back), so a burst of
//!   publishes costs one write, not one per message.
//! - Replies are matched to requests by id. Every wait is bounded by
//!   [`ClientOptions::request_timeout`].
//! - When the connection drops, the task reconnects with exponential backoff
//!   and jitter and re-subscribes every live [`Subscription`] from the last
//!   seq it saw, in the epoch it saw, so consumers see each seq once or a
//!   `Gap`. It does not reconnect after [`Client::close`], after a 401 on the
//!   upgrade, or after close 4401 (token expired) unless a newer token was
//!   given with [`Client::set_token`].
//! - A consumer that falls behind never blocks the socket: its queue drops the
//!   oldest events and it gets a `Gap` for them (see [`Subscription`]).

mod backoff;
mod conn;
mod socket;
mod subscription;
mod tracker;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub use subscription::{Event, Subscription};

use crate::names::{is_valid_cache, is_valid_topic};
use crate::protocol::{Request, RequestId, Value};
use conn::{Ctrl, Publish, SubOk};

/// How a [`Client`] behaves. Start from `ClientOptions::default()` and adjust
/// with the `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// First reconnect delay; it doubles per failed attempt... (100 ms)
    pub reconnect_initial: Duration,
    /// ...up to this. (5 s)
    pub reconnect_max: Duration,
    /// Fraction of each delay that is random, so that the clients of a
    /// restarted server do not all come back at once. (0.5)
    pub reconnect_jitter: f64,
    /// Longest wait for a reply (`ok`, `err`, `pong`), including time spent
    /// queued while reconnecting. (10 s)
    pub request_timeout: Duration,
    /// Longest wait for one TCP connect + WebSocket upgrade. (10 s)
    pub connect_timeout: Duration,
    /// Largest frame this client sends; the server closes with 4413 above its
    /// frame limit, so keep this at or below it. Batches are cut to fit, and a
    /// single message that cannot fit is refused locally. (1 MiB)
    pub max_frame_bytes: usize,
    /// Largest frame accepted from the server. (16 MiB)
    pub max_incoming_frame_bytes: usize,
    /// Socket read buffer. Small by default: bots and tests open many clients. (8 KiB)
    pub read_buffer_bytes: usize,
    /// Events queued per subscription before the oldest are dropped (with a gap). (1024)
    pub subscription_buffer: usize,
    /// Publishes queued for the socket task before `publish` waits. (1024)
    pub publish_queue: usize,
    /// No frame at all from the server for this long (it sends `hb` at least
    /// every 15 s) means the connection is dead: reconnect. `None` disables. (45 s)
    pub idle_timeout: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            reconnect_jitter: 0.5,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_frame_bytes: 1024 * 1024,
            max_incoming_frame_bytes: 16 * 1024 * 1024,
            read_buffer_bytes: 8 * 1024,
            subscription_buffer: 1024,
            publish_queue: 1024,
            idle_timeout: Some(Duration::from_secs(45)),
        }
    }
}

impl ClientOptions {
    pub fn with_reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_initial = initial;
        self.reconnect_max = max;
        self
    }

    pub fn with_reconnect_jitter(mut self, jitter: f64) -> Self {
        self.reconnect_jitter = jitter;
        self
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn with_max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    pub fn with_max_incoming_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_incoming_frame_bytes = bytes;
        self
    }

    pub fn with_read_buffer_bytes(mut self, bytes: usize) -> Self {
        self.read_buffer_bytes = bytes;
        self
    }

    pub fn with_subscription_buffer(mut self, events: usize) -> Self {
        self.subscription_buffer = events;
        self
    }

    pub fn with_publish_queue(mut self, messages: usize) -> Self {
        self.publish_queue = messages;
        self
    }

    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }
}

/// Why a request (or the client) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server refused the token on the upgrade (HTTP 401). Not retried:
    /// another attempt with the same token would fail the same way.
    #[error("the server refused the token")]
    Unauthenticated,
    /// The server answered `err`; `code` is one of PROTOCOL.md's error codes
    /// (`permission_denied`, `too_large`, `rate_limited`, ...).
    #[error("server refused the request ({code}): {message}")]
    Server { code: String, message: String },
    /// The connection closed while the request was in flight, or the client is
    /// closed for good. `code` is the WebSocket close code (1006 when the
    /// socket dropped without a close frame).
    #[error("connection closed ({code}): {reason}")]
    Closed { code: u16, reason: String },
    /// No reply within [`ClientOptions::request_timeout`]. A `publish` may or
    /// may not have happened.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The first connection attempt failed (later ones are retried).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server sent something the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Refused locally: a bad name, URL or token, or a message over the frame limit.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// This client already has a subscription to the topic (the server would
    /// replace the first with the second; share the stream or use another client).
    #[error("already subscribed to {cache}/{topic} on this client")]
    AlreadySubscribed { cache: String, topic: String },
}

impl ClientError {
    /// The protocol error code, for `Server` errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    fn client_closed() -> Self {
        ClientError::Closed {
            code: 1000,
            reason: "closed by the client".into(),
        }
    }
}

/// A WebSocket close: its code and the reason a person can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    pub code: u16,
    pub reason: String,
}

/// State shared between the handles and the socket task.
#[derive(Default)]
struct Shared {
    connected: AtomicBool,
    connections: AtomicU64,
    last_close: Mutex<Option<CloseInfo>>,
    /// Set (before the task drops its channels) once the client stopped for good.
    terminal: Mutex<Option<ClientError>>,
}

struct Inner {
    ctrl: mpsc::UnboundedSender<Ctrl>,
    pubs: mpsc::Sender<Publish>,
    ids: Arc<AtomicU64>,
    next_sub: AtomicU64,
    shared: Arc<Shared>,
    opts: ClientOptions,
}

/// A connection to a topics server that survives disconnects. Cheap to clone;
/// the connection closes when the last clone and the last [`Subscription`] are
/// dropped, or at [`Client::close`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("connected", &self.is_connected())
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects with default options. `url` is `ws://host:port` (the path
    /// `/v1/ws` is added when the URL has none) or a full WebSocket URL.
    /// The token goes in `Authorization: Bearer` on the upgrade.
    pub async fn connect(url: &str, token: impl Into<String>) -> Result<Client, ClientError> {
        Self::connect_with(url, token, ClientOptions::default()).await
    }

    /// Connects with the given options. Fails if the first attempt fails
    /// (`Unauthenticated` on a 401, `Connect` otherwise): a wrong URL or
    /// token shows at once instead of as an endless reconnect loop.
    pub async fn connect_with(
        url: &str,
        token: impl Into<String>,
        opts: ClientOptions,
    ) -> Result<Client, ClientError> {
        let url = socket::normalize_url(url)?;
        let token = token.into();
        socket::check_token(&token)?;
        let ws = match socket::open(url.clone(), token.clone(), opts.clone()).await {
            Ok(ws) => ws,
            Err(socket::ConnectError::Unauthorized(_)) => return Err(ClientError::Unauthenticated),
            Err(socket::ConnectError::Other(e)) => return Err(ClientError::Connect(e)),
        };
        let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
        let (pub_tx, pub_rx) = mpsc::channel(opts.publish_queue.max(1));
        let shared = Arc::new(Shared::default());
        let ids = Arc::new(AtomicU64::new(1));
        let task = conn::Task::new(
            url,
            token,
            opts.clone(),
            shared.clone(),
            ids.clone(),
            ctrl_rx,
            pub_rx,
        );
        tokio::spawn(task.run(ws));
        Ok(Client {
            inner: Arc::new(Inner {
                ctrl: ctrl_tx,
                pubs: pub_tx,
                ids,
                next_sub: AtomicU64::new(1),
                shared,
                opts,
            }),
        })
    }

    /// Subscribes to new items on a topic (published after the `ok`).
    pub async fn subscribe(&self, cache: &str, topic: &str) -> Result<Subscription, ClientError> {
        self.subscribe_inner(cache, topic, None).await
    }

    /// Subscribes and replays every retained item after `resume_after` first
    /// (or a `Gap` where history is gone). `epoch` is the epoch that seq counts
    /// in ([`Subscription::epoch`]); if the topic has restarted since, the
    /// stream starts with a `Gap` carrying the new epoch. `None` means the
    /// current epoch.
    pub async fn subscribe_from(
        &self,
        cache: &str,
        topic: &str,
        resume_after: u64,
        epoch: Option<&str>,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_inner(cache, topic, Some((resume_after, epoch.map(str::to_owned))))
            .await
    }

    async fn subscribe_inner(
        &self,
        cache: &str,
        topic: &str,
        resume: Option<(u64, Option<String>)>,
    ) -> Result<Subscription, ClientError> {
        check_names(cache, topic)?;
        let queue = Arc::new(subscription::SubQueue::new(
            self.inner.opts.subscription_buffer,
        ));
        let sub_id = self.inner.next_sub.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.send_ctrl(Ctrl::Subscribe {
            sub_id,
            key: (cache.to_owned(), topic.to_owned()),
            resume: resume.clone(),
            queue: queue.clone(),
            reply: tx,
        })?;
        let SubOk { seq, epoch } = self.wait(rx).await?;
        let (last, epoch) = match resume {
            None => (seq, epoch),
            Some((after, asked)) => (after, asked.or(epoch)),
        };
        Ok(Subscription::new(
            self.clone(),
            sub_id,
            cache.to_owned(),
            topic.to_owned(),
            queue,
            last,
            epoch,
        ))
    }

    /// Publishes and waits for the `ok`; returns the value's seq.
    pub async fn publish(
        &self,
        cache: &str,
        topic: &str,
        value: impl Into<Value>,
    ) -> Result<u64, ClientError> {
        let id = self.next_id();
        let bytes = self.encode_pub(Some(id), cache, topic, value.into())?;
        let (tx, rx) = oneshot::channel();
        let timeout = self.inner.opts.request_timeout;
        let work = async {
            self.send_pub(Publish {
                id: Some(id),
                bytes,
                reply: Some(tx),
            })
            .await?;
            self.recv_reply(rx).await
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(ClientError::Timeout(timeout)))
    }

    /// Publishes without an id: no reply, no seq, no confirmation. Waits only
    /// when the publish queue is full (backpressure instead of unbounded
    /// memory). A refusal by the server (`err` without an id) is logged.
    pub async fn publish_nowait(
        &self,
        cache: &str,
        topic: &str,
        value: impl Into<Value>,
    ) -> Result<(), ClientError> {
        let bytes = self.encode_pub(None, cache, topic, value.into())?;
        self.send_pub(Publish {
            id: None,
            bytes,
            reply: None,
        })
        .await
    }

    /// Replaces the connection's token (send a fresh one before the old one
    /// expires; the server closes with 4401 about a second after `exp`).
    /// Waits for the server's `ok`; a refused token (`Server` error
    /// `unauthenticated`) leaves the current one in place. The new token is
    /// also used for every later reconnect. While disconnected, it is only
    /// stored (and checked on the next upgrade).
    pub async fn set_token(&self, token: impl Into<String>) -> Result<(), ClientError> {
        let token = token.into();
        socket::check_token(&token)?;
        let (tx, rx) = oneshot::channel();
        self.send_ctrl(Ctrl::Auth { token, reply: tx })?;
        self.wait(rx).await
    }

    /// Round trip to the server (`ping` → `pong`).
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        let (tx, rx) = oneshot::channel();
        self.send_ctrl(Ctrl::Ping { reply: tx })?;
        self.wait(rx).await?;
        Ok(start.elapsed())
    }

    /// Sends what is queued, closes the connection with 1000 and stops
    /// reconnecting. Subscriptions end (after their queued events); later
    /// requests fail with `Closed`. Calling it again is harmless.
    pub async fn close(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        if self.send_ctrl(Ctrl::Close { reply: tx }).is_err() {
            return Ok(());
        }
        // The task answers once the close handshake is done (or timed out);
        // a dropped reply means the task already stopped.
        let _ = tokio::time::timeout(self.inner.opts.request_timeout, rx).await;
        Ok(())
    }

    /// Whether a connection is up right now (false while reconnecting).
    pub fn is_connected(&self) -> bool {
        self.inner.shared.connected.load(Ordering::Relaxed)
    }

    /// How many connections were established so far (1 + reconnects).
    pub fn connection_count(&self) -> u64 {
        self.inner.shared.connections.load(Ordering::Relaxed)
    }

    /// The most recent close of a connection, by either side (1006 when the
    /// socket dropped without a close frame).
    pub fn last_close(&self) -> Option<CloseInfo> {
        self.inner.shared.last_close.lock().clone()
    }

    /// Why the client stopped for good, if it has (`Closed` after
    /// [`Client::close`] or a final server close, `Unauthenticated`).
    pub fn terminal_error(&self) -> Option<ClientError> {
        self.inner.shared.terminal.lock().clone()
    }

    /// Drops the socket without a close handshake, as a network failure
    /// would; the client then reconnects and resumes. For tests.
    #[doc(hidden)]
    pub fn drop_connection_for_test(&self) {
        let _ = self.send_ctrl(Ctrl::DropConnection);
    }

    fn next_id(&self) -> u64 {
        self.inner.ids.fetch_add(1, Ordering::Relaxed)
    }

    fn encode_pub(
        &self,
        id: Option<u64>,
        cache: &str,
        topic: &str,
        value: Value,
    ) -> Result<Vec<u8>, ClientError> {
        check_names(cache, topic)?;
        let mut bytes = Vec::with_capacity(48 + cache.len() + topic.len() + value.len());
        Request::Pub {
            id: id.map(RequestId::from),
            cache: cache.to_owned(),
            topic: topic.to_owned(),
            value,
        }
        .encode_into(&mut bytes);
        let limit = self.inner.opts.max_frame_bytes;
        if bytes.len() > limit {
            return Err(ClientError::InvalidArgument(format!(
                "the publish is {} bytes encoded; the frame limit is {limit}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    async fn send_pub(&self, p: Publish) -> Result<(), ClientError> {
        self.inner
            .pubs
            .send(p)
            .await
            .map_err(|_| self.stopped_error())
    }

    fn send_ctrl(&self, c: Ctrl) -> Result<(), ClientError> {
        self.inner.ctrl.send(c).map_err(|_| self.stopped_error())
    }

    /// Waits for a reply from the socket task, at most the request timeout.
    async fn wait<T>(
        &self,
        rx: oneshot::Receiver<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let timeout = self.inner.opts.request_timeout;
        tokio::time::timeout(timeout, self.recv_reply(rx))
            .await
            .unwrap_or(Err(ClientError::Timeout(timeout)))
    }

    async fn recv_reply<T>(
        &self,
        rx: oneshot::Receiver<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        rx.await.unwrap_or_else(|_| Err(self.stopped_error()))
    }

    /// The error for a request the task can no longer answer: it has stopped.
    fn stopped_error(&self) -> ClientError {
        self.terminal_error()
            .unwrap_or_else(ClientError::client_closed)
    }
}

fn check_names(cache: &str, topic: &str) -> Result<(), ClientError> {
    if !is_valid_cache(cache) {
        return Err(ClientError::InvalidArgument(format!(
            "bad cache name {cache:?}: 1-64 of A-Z a-z 0-9 _ -"
        )));
    }
    if !is_valid_topic(topic) {
        return Err(ClientError::InvalidArgument(format!(
            "bad topic name {topic:?}: 1-256 of A-Z a-z 0-9 _ - . :"
        )));
    }
    Ok(())
}
