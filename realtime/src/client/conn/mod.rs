//! The socket task: owns the WebSocket, the subscriptions' positions and the
//! requests in flight; batches writes; reconnects and resumes.
//!
//! Everything mutable lives in this one task, so there are no locks on the
//! hot path: handles talk to it through channels, and it talks back through
//! oneshot replies and the subscriptions' queues. Writing happens in a small
//! writer task so that a slow socket write never stops the reading of replies
//! and items.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::backoff::Backoff;
use super::socket::{open, write_loop, ConnectError, WriterMsg, Ws};
use super::subscription::SubQueue;
use super::tracker::Tracker;
use super::{ClientError, ClientOptions, CloseInfo, Shared};
use crate::protocol::Request;

mod incoming;

/// (cache, topic)
type Key = (String, String);

/// A connection that lasted this long was healthy: the next failure starts
/// the backoff from the beginning. A shorter one keeps growing the delay, so
/// a server that accepts and then closes at once is not hammered.
const STABLE_AFTER: Duration = Duration::from_secs(2);
/// How long a graceful close waits for the server's half of the handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Commands from the handles. Unbounded: each is either awaited by its sender
/// or (unsubscribe on drop) bounded by the number of subscriptions.
pub(super) enum Ctrl {
    Subscribe {
        sub_id: u64,
        key: Key,
        resume: Option<(u64, Option<String>)>,
        queue: Arc<SubQueue>,
        reply: oneshot::Sender<Result<SubOk, ClientError>>,
    },
    Unsubscribe {
        sub_id: u64,
        key: Key,
        reply: Option<oneshot::Sender<Result<(), ClientError>>>,
    },
    Auth {
        token: String,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Ping {
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    DropConnection,
}

/// A publish, already encoded by the caller (which spreads the encoding work
/// and lets the size check happen before queueing). Sent through a bounded
/// channel: that is the backpressure for fast publishers.
pub(super) struct Publish {
    pub id: Option<u64>,
    pub bytes: Vec<u8>,
    pub reply: Option<oneshot::Sender<Result<u64, ClientError>>>,
}

/// The `ok` of a subscribe: the topic's current seq and epoch.
pub(super) struct SubOk {
    pub seq: u64,
    pub epoch: Option<String>,
}

/// A request waiting for its reply, by request id.
enum Pending {
    Publish(oneshot::Sender<Result<u64, ClientError>>),
    Ping(oneshot::Sender<Result<(), ClientError>>),
    Auth {
        token: String,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Sub {
        key: Key,
        sub_id: u64,
    },
    Unsub(Option<oneshot::Sender<Result<(), ClientError>>>),
}

impl Pending {
    /// Whether nobody waits for the reply any more (the caller timed out).
    fn abandoned(&self) -> bool {
        match self {
            Pending::Publish(r) => r.is_closed(),
            Pending::Ping(r) => r.is_closed(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutKind {
    Sub,
    Unsub,
    Auth,
    Other,
}

/// One encoded message waiting for the writer.
struct Out {
    bytes: Vec<u8>,
    id: Option<u64>,
    kind: OutKind,
}

struct SubState {
    sub_id: u64,
    tracker: Tracker,
    queue: Arc<SubQueue>,
    /// The subscribe call waiting for the first `ok`.
    reply: Option<oneshot::Sender<Result<SubOk, ClientError>>>,
}

impl SubState {
    fn abandoned(&self) -> bool {
        self.reply.as_ref().is_some_and(|r| r.is_closed())
    }
}

/// Why the serving loop stopped.
enum Break {
    UserClose,
    /// The server sent something undecodable: close 1002 and reconnect.
    Protocol(String),
    ServerClose(CloseInfo),
    Lost(String),
    DropForTest,
}

/// How a connection ended.
enum ConnEnd {
    Stop(ClientError),
    Reconnect,
}

pub(super) struct Task {
    url: String,
    token: String,
    /// Bumped whenever `token` changes...
    token_gen: u64,
    /// ...and this is the generation the live connection is authenticated
    /// with: a 4401 close is worth a reconnect only if a newer token exists.
    conn_token_gen: u64,
    opts: ClientOptions,
    shared: Arc<Shared>,
    ids: Arc<AtomicU64>,
    ctrl_rx: mpsc::UnboundedReceiver<Ctrl>,
    pub_rx: mpsc::Receiver<Publish>,
    pub_open: bool,
    online: bool,
    subs: HashMap<Key, SubState>,
    pending: HashMap<u64, Pending>,
    sweep_at: usize,
    unsent: VecDeque<Out>,
    unsent_bytes: usize,
    backoff: Backoff,
    close_replies: Vec<oneshot::Sender<()>>,
}

impl Task {
    pub(super) fn new(
        url: String,
        token: String,
        opts: ClientOptions,
        shared: Arc<Shared>,
        ids: Arc<AtomicU64>,
        ctrl_rx: mpsc::UnboundedReceiver<Ctrl>,
        pub_rx: mpsc::Receiver<Publish>,
    ) -> Self {
        Self {
            backoff: Backoff::new(
                opts.reconnect_initial,
                opts.reconnect_max,
                opts.reconnect_jitter,
            ),
            url,
            token,
            token_gen: 0,
            conn_token_gen: 0,
            opts,
            shared,
            ids,
            ctrl_rx,
            pub_rx,
            pub_open: true,
            online: false,
            subs: HashMap::new(),
            pending: HashMap::new(),
            sweep_at: 1024,
            unsent: VecDeque::new(),
            unsent_bytes: 0,
            close_replies: Vec::new(),
        }
    }

    pub(super) async fn run(mut self, first: Ws) {
        let mut ws = Some(first);
        loop {
            let socket = match ws.take() {
                Some(s) => s,
                None => match self.reconnect().await {
                    Ok(s) => s,
                    Err(e) => return self.finish(e),
                },
            };
            let started = Instant::now();
            match self.serve(socket).await {
                ConnEnd::Stop(e) => return self.finish(e),
                ConnEnd::Reconnect => {
                    if started.elapsed() >= STABLE_AFTER {
                        self.backoff.reset();
                    }
                }
            }
        }
    }

    /// Waits out the backoff and connects, serving commands meanwhile. Fails
    /// only for good: the user closed, or the server refused the token.
    async fn reconnect(&mut self) -> Result<Ws, ClientError> {
        loop {
            let delay = self.backoff.next_delay(rand::random::<f64>());
            tracing::debug!(?delay, url = %self.url, "reconnecting");
            self.offline_until(tokio::time::sleep(delay)).await?;
            let generation = self.token_gen;
            let attempt = open(self.url.clone(), self.token.clone(), self.opts.clone());
            match self.offline_until(attempt).await? {
                Ok(ws) => {
                    self.conn_token_gen = generation;
                    return Ok(ws);
                }
                Err(ConnectError::Unauthorized(msg)) => {
                    if self.token_gen != generation {
                        continue; // a newer token arrived meanwhile: try that one
                    }
                    tracing::warn!(%msg, "the server refused the token; giving up");
                    return Err(ClientError::Unauthenticated);
                }
                Err(ConnectError::Other(e)) => tracing::debug!(error = %e, "reconnect failed"),
            }
        }
    }

    /// Runs `fut` to completion while handling commands as an offline client.
    async fn offline_until<F: Future>(&mut self, fut: F) -> Result<F::Output, ClientError> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                c = self.ctrl_rx.recv() => {
                    if self.on_ctrl(c).is_some() {
                        return Err(ClientError::client_closed());
                    }
                }
                p = self.pub_rx.recv(), if self.pub_open && self.has_room() => self.on_publish(p),
            }
        }
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, ws: Ws) -> ConnEnd {
        self.online = true;
        self.shared.connected.store(true, Ordering::Relaxed);
        self.shared.connections.fetch_add(1, Ordering::Relaxed);
        let (sink, mut stream) = ws.split();
        // Capacity 1: while the writer is busy, messages pile up in `unsent`
        // and go out together as one frame.
        let (wtx, wrx) = mpsc::channel(1);
        let mut writer: JoinHandle<Result<(), WsError>> = tokio::spawn(write_loop(sink, wrx));
        self.resubscribe_all();

        let idle = self.opts.idle_timeout;
        let mut last_rx = Instant::now();
        let period = idle.map_or(Duration::from_secs(3600), |d| {
            (d / 4).max(Duration::from_millis(10))
        });
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let brk = loop {
            tokio::select! {
                c = self.ctrl_rx.recv() => {
                    if let Some(b) = self.on_ctrl(c) {
                        break b;
                    }
                }
                p = self.pub_rx.recv(), if self.pub_open && self.has_room() => self.on_publish(p),
                permit = wtx.reserve(), if !self.unsent.is_empty() => match permit {
                    Ok(permit) => permit.send(WriterMsg::Frame(self.take_frame())),
                    Err(_) => break Break::Lost("the writer stopped".into()),
                },
                m = stream.next() => match m {
                    Some(Ok(msg)) => {
                        last_rx = Instant::now();
                        if let Err(b) = self.on_frame(msg) {
                            break b;
                        }
                    }
                    Some(Err(e)) => break Break::Lost(e.to_string()),
                    None => break Break::Lost("the connection ended without a close frame".into()),
                },
                res = &mut writer => break Break::Lost(match res {
                    Ok(Err(e)) => format!("write failed: {e}"),
                    _ => "the writer stopped".into(),
                }),
                _ = tick.tick(), if idle.is_some() => {
                    if let Some(idle) = idle.filter(|d| last_rx.elapsed() >= *d) {
                        break Break::Lost(format!("nothing from the server in {idle:?}"));
                    }
                }
            }
        };

        let (info, stop) = match brk {
            Break::UserClose => {
                let reason = "closed by the client";
                self.shutdown(&wtx, &mut stream, 1000, reason).await;
                (
                    CloseInfo {
                        code: 1000,
                        reason: reason.into(),
                    },
                    Some(ClientError::client_closed()),
                )
            }
            Break::Protocol(reason) => {
                tracing::warn!(%reason, "protocol error from the server; reconnecting");
                self.shutdown(&wtx, &mut stream, 1002, &reason).await;
                (CloseInfo { code: 1002, reason }, None)
            }
            Break::ServerClose(info) => {
                // Let tungstenite flush its half of the close handshake.
                let _ = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
                (info, None)
            }
            Break::Lost(reason) => (CloseInfo { code: 1006, reason }, None),
            Break::DropForTest => (
                CloseInfo {
                    code: 1006,
                    reason: "dropped for a test".into(),
                },
                None,
            ),
        };
        writer.abort();
        drop(stream);
        self.online = false;
        self.shared.connected.store(false, Ordering::Relaxed);
        *self.shared.last_close.lock() = Some(info.clone());
        tracing::debug!(code = info.code, reason = %info.reason, "connection ended");
        self.abandon_in_flight(&info);
        if let Some(e) = stop {
            return ConnEnd::Stop(e);
        }
        // Token expired or revoked: reconnecting with the same token cannot
        // work; with a newer one (set_token while this was going on) it can.
        if info.code == crate::error::close::TOKEN_EXPIRED && self.token_gen == self.conn_token_gen
        {
            return ConnEnd::Stop(ClientError::Closed {
                code: info.code,
                reason: info.reason,
            });
        }
        ConnEnd::Reconnect
    }

    /// Graceful close: flush (for a user close), send the close frame, then
    /// read until the server's close, still handling the replies that arrive.
    async fn shutdown(
        &mut self,
        wtx: &mpsc::Sender<WriterMsg>,
        stream: &mut SplitStream<Ws>,
        code: u16,
        reason: &str,
    ) {
        let work = async {
            if code == 1000 {
                while let Ok(p) = self.pub_rx.try_recv() {
                    self.queue_publish(p);
                }
                while !self.unsent.is_empty() {
                    let frame = self.take_frame();
                    if wtx.send(WriterMsg::Frame(frame)).await.is_err() {
                        return;
                    }
                }
            }
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            if wtx.send(WriterMsg::Close(frame)).await.is_err() {
                return;
            }
            while let Some(Ok(msg)) = stream.next().await {
                if matches!(msg, Message::Close(_)) || self.on_frame(msg).is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, work).await;
    }

    /// After a connection ended: requests that were written may or may not
    /// have been handled, so they fail with the close; requests still queued
    /// go out on the next connection. Subscriptions are re-derived from
    /// `subs`, and a token sent with `auth` becomes the token for reconnecting.
    fn abandon_in_flight(&mut self, info: &CloseInfo) {
        let err = ClientError::Closed {
            code: info.code,
            reason: info.reason.clone(),
        };
        let mut kept_ids = HashSet::new();
        self.unsent.retain(|o| o.kind == OutKind::Other);
        self.unsent_bytes = 0;
        for o in &self.unsent {
            self.unsent_bytes += o.bytes.len();
            kept_ids.extend(o.id);
        }
        for (id, p) in std::mem::take(&mut self.pending) {
            match p {
                Pending::Auth { token, reply } => {
                    self.token = token;
                    self.token_gen += 1;
                    let _ = reply.send(Ok(()));
                }
                Pending::Sub { .. } | Pending::Unsub(None) => {}
                // The server forgets a connection's subscriptions with it.
                Pending::Unsub(Some(r)) => {
                    let _ = r.send(Ok(()));
                }
                p if kept_ids.contains(&id) => {
                    self.pending.insert(id, p);
                }
                Pending::Publish(r) => {
                    let _ = r.send(Err(err.clone()));
                }
                Pending::Ping(r) => {
                    let _ = r.send(Err(err.clone()));
                }
            }
        }
    }

    /// The client stops for good. The error is published before the channels
    /// close, so every waiter that sees its reply dropped reports it.
    fn finish(mut self, err: ClientError) {
        tracing::debug!(error = %err, "client stopped");
        *self.shared.terminal.lock() = Some(err.clone());
        self.shared.connected.store(false, Ordering::Relaxed);
        for (_, s) in self.subs.drain() {
            s.queue.end(Some(err.clone()));
        }
        for r in self.close_replies.drain(..) {
            let _ = r.send(());
        }
        self.ctrl_rx.close();
        self.pub_rx.close();
        // Dropping `self` drops every reply sender still held, queued or pending.
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    fn has_room(&self) -> bool {
        self.unsent_bytes < (4 * self.opts.max_frame_bytes).max(64 * 1024)
    }

    fn push_out(&mut self, out: Out) {
        self.unsent_bytes += out.bytes.len();
        self.unsent.push_back(out);
    }

    fn insert_pending(&mut self, id: u64, p: Pending) {
        if self.pending.len() >= self.sweep_at {
            // Callers that timed out leave entries behind if the server never
            // answers; drop those now and then so they cannot accumulate.
            self.pending.retain(|_, p| !p.abandoned());
            self.sweep_at = (self.pending.len() * 2).max(1024);
        }
        self.pending.insert(id, p);
    }

    fn encode(&mut self, req: Request, kind: OutKind, id: u64, pending: Pending) {
        let mut bytes = Vec::with_capacity(64);
        req.encode_into(&mut bytes);
        self.insert_pending(id, pending);
        self.push_out(Out {
            bytes,
            id: Some(id),
            kind,
        });
    }

    /// Takes queued messages, in order, into one frame of at most
    /// `max_frame_bytes` (a single larger message goes alone).
    fn take_frame(&mut self) -> Vec<u8> {
        let Some(first) = self.unsent.pop_front() else {
            return Vec::new();
        };
        let max = self.opts.max_frame_bytes;
        let mut frame = first.bytes;
        while self
            .unsent
            .front()
            .is_some_and(|next| frame.len() + next.bytes.len() <= max)
        {
            if let Some(next) = self.unsent.pop_front() {
                frame.extend_from_slice(&next.bytes);
            }
        }
        self.unsent_bytes = self.unsent.iter().map(|o| o.bytes.len()).sum();
        frame
    }

    fn on_publish(&mut self, p: Option<Publish>) {
        let Some(p) = p else {
            self.pub_open = false;
            return;
        };
        self.queue_publish(p);
        // Take whatever else is queued right now: it all goes in one frame.
        while self.has_room() {
            match self.pub_rx.try_recv() {
                Ok(p) => self.queue_publish(p),
                Err(_) => break,
            }
        }
    }

    fn queue_publish(&mut self, p: Publish) {
        if let (Some(id), Some(reply)) = (p.id, p.reply) {
            self.insert_pending(id, Pending::Publish(reply));
        }
        self.push_out(Out {
            bytes: p.bytes,
            id: p.id,
            kind: OutKind::Other,
        });
    }

    /// Handles a command; `Some` means stop serving.
    fn on_ctrl(&mut self, c: Option<Ctrl>) -> Option<Break> {
        let Some(c) = c else {
            // Every handle and subscription is gone.
            return Some(Break::UserClose);
        };
        match c {
            Ctrl::Subscribe {
                sub_id,
                key,
                resume,
                queue,
                reply,
            } => {
                if self.subs.get(&key).is_some_and(|s| !s.abandoned()) {
                    let _ = reply.send(Err(ClientError::AlreadySubscribed {
                        cache: key.0,
                        topic: key.1,
                    }));
                    return None;
                }
                let tracker = match resume {
                    None => Tracker::fresh(),
                    Some((after, epoch)) => Tracker::resuming(after, epoch),
                };
                if self.online {
                    self.send_sub(&key, sub_id, &tracker);
                }
                self.subs.insert(
                    key,
                    SubState {
                        sub_id,
                        tracker,
                        queue,
                        reply: Some(reply),
                    },
                );
            }
            Ctrl::Unsubscribe { sub_id, key, reply } => {
                if self.subs.get(&key).is_some_and(|s| s.sub_id == sub_id) {
                    if let Some(s) = self.subs.remove(&key) {
                        s.queue.end(None);
                    }
                    if self.online {
                        self.send_unsub(key, reply);
                        return None;
                    }
                }
                if let Some(r) = reply {
                    let _ = r.send(Ok(()));
                }
            }
            Ctrl::Auth { token, reply } => {
                if self.online {
                    let id = self.next_id();
                    let req = Request::Auth {
                        id: id.into(),
                        token: token.clone(),
                    };
                    self.encode(req, OutKind::Auth, id, Pending::Auth { token, reply });
                } else {
                    self.token = token;
                    self.token_gen += 1;
                    let _ = reply.send(Ok(()));
                }
            }
            Ctrl::Ping { reply } => {
                let id = self.next_id();
                self.encode(
                    Request::Ping { id: id.into() },
                    OutKind::Other,
                    id,
                    Pending::Ping(reply),
                );
            }
            Ctrl::Close { reply } => {
                self.close_replies.push(reply);
                return Some(Break::UserClose);
            }
            Ctrl::DropConnection => {
                if self.online {
                    return Some(Break::DropForTest);
                }
            }
        }
        None
    }

    fn send_sub(&mut self, key: &Key, sub_id: u64, tracker: &Tracker) {
        let id = self.next_id();
        let (resume_after, epoch) = match tracker.resume_point() {
            Some((after, epoch)) => (Some(after), epoch),
            None => (None, None),
        };
        let req = Request::Sub {
            id: id.into(),
            cache: key.0.clone(),
            topic: key.1.clone(),
            resume_after,
            epoch,
        };
        let pending = Pending::Sub {
            key: key.clone(),
            sub_id,
        };
        self.encode(req, OutKind::Sub, id, pending);
    }

    fn send_unsub(&mut self, key: Key, reply: Option<oneshot::Sender<Result<(), ClientError>>>) {
        let id = self.next_id();
        let (cache, topic) = key;
        let req = Request::Unsub {
            id: id.into(),
            cache,
            topic,
        };
        self.encode(req, OutKind::Unsub, id, Pending::Unsub(reply));
    }

    /// On a new connection: `sub` every live subscription from where it is,
    /// ahead of whatever was queued while offline.
    /// Requests queued while offline whose callers gave up (timed out) are
    /// dropped rather than sent late: a caller told `Timeout` should not see
    /// its publish happen seconds afterwards if that can be avoided.
    fn resubscribe_all(&mut self) {
        self.subs.retain(|_, s| !s.abandoned());
        let pending = &mut self.pending;
        self.unsent.retain(|o| {
            match o
                .id
                .and_then(|id| pending.get(&id).map(|p| (id, p.abandoned())))
            {
                Some((id, true)) => {
                    pending.remove(&id);
                    false
                }
                _ => true,
            }
        });
        let subs: Vec<(Key, u64, Tracker)> = self
            .subs
            .iter()
            .map(|(k, s)| (k.clone(), s.sub_id, s.tracker.clone()))
            .collect();
        let queued = std::mem::take(&mut self.unsent);
        self.unsent_bytes = 0;
        for (key, sub_id, tracker) in subs {
            self.send_sub(&key, sub_id, &tracker);
        }
        for o in queued {
            self.push_out(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::subscription::Event;
    use crate::protocol::{decode_messages, ServerMessage, Value};

    fn task(max_frame: usize) -> Task {
        let (_ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
        let (_pub_tx, pub_rx) = mpsc::channel(8);
        Task::new(
            "ws://h/v1/ws".into(),
            "old-token".into(),
            ClientOptions::default().with_max_frame_bytes(max_frame),
            Arc::new(Shared::default()),
            Arc::new(AtomicU64::new(1)),
            ctrl_rx,
            pub_rx,
        )
    }

    fn publish(
        t: &mut Task,
        n: u8,
        with_reply: bool,
    ) -> Option<oneshot::Receiver<Result<u64, ClientError>>> {
        let id = t.next_id();
        let mut bytes = Vec::new();
        Request::Pub {
            id: with_reply.then(|| id.into()),
            cache: "c".into(),
            topic: "t".into(),
            value: Value::Binary(vec![n; 20].into()),
        }
        .encode_into(&mut bytes);
        let (tx, rx) = oneshot::channel();
        t.queue_publish(Publish {
            id: with_reply.then_some(id),
            bytes,
            reply: with_reply.then_some(tx),
        });
        with_reply.then_some(rx)
    }

    #[test]
    fn queued_messages_share_frames_up_to_the_limit() {
        let mut t = task(120);
        for n in 0..7 {
            publish(&mut t, n, false);
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            (!t.unsent.is_empty()).then(|| {
                let frame = t.take_frame();
                let msgs: Vec<_> = decode_messages(&frame).collect::<Result<_, _>>().unwrap();
                assert!(frame.len() <= 120);
                msgs.len()
            })
        })
        .collect();
        // Each publish is 52 bytes encoded: two fit in a 120-byte frame.
        assert_eq!(sizes, [2, 2, 2, 1]);
        assert_eq!(t.unsent_bytes, 0);

        // A message larger than the limit still goes out, alone.
        let mut t = task(10);
        publish(&mut t, 1, false);
        publish(&mut t, 2, false);
        assert_eq!(decode_messages(&t.take_frame()).count(), 1);
        assert_eq!(t.unsent.len(), 1);
    }

    #[test]
    fn a_lost_connection_fails_what_was_written_and_keeps_what_was_not() {
        let mut t = task(1024 * 1024);
        t.online = true;
        let mut written = publish(&mut t, 1, true).unwrap();
        let (auth_tx, mut auth_rx) = oneshot::channel();
        t.on_ctrl(Some(Ctrl::Auth {
            token: "new-token".into(),
            reply: auth_tx,
        }));
        let _ = t.take_frame(); // the publish and the auth are on the wire
        let mut queued = publish(&mut t, 2, true).unwrap();
        let (sub_tx, _sub_rx) = oneshot::channel();
        t.on_ctrl(Some(Ctrl::Subscribe {
            sub_id: 1,
            key: ("c".into(), "t".into()),
            resume: None,
            queue: Arc::new(SubQueue::new(4)),
            reply: sub_tx,
        }));
        assert_eq!(t.unsent.len(), 2);

        t.online = false;
        t.abandon_in_flight(&CloseInfo {
            code: 1006,
            reason: "gone".into(),
        });
        assert!(matches!(
            written.try_recv(),
            Ok(Err(ClientError::Closed { code: 1006, .. }))
        ));
        // The refreshed token is what the next upgrade will carry.
        assert_eq!(auth_rx.try_recv(), Ok(Ok(())));
        assert_eq!(t.token, "new-token");
        assert_ne!(t.token_gen, t.conn_token_gen);
        // The unsent publish waits for the next connection; the `sub` is re-derived.
        assert!(queued.try_recv().is_err());
        assert_eq!(t.unsent.len(), 1);
        assert_eq!(t.pending.len(), 1);
        // A publish queued offline whose caller gave up is not sent late.
        drop(publish(&mut t, 3, true));
        publish(&mut t, 4, false);
        t.resubscribe_all();
        let frame = t.take_frame();
        let msgs: Vec<_> = decode_messages(&frame).map(Result::unwrap).collect();
        let ops: Vec<&str> = msgs.iter().map(|m| m.op.as_str()).collect();
        assert_eq!(ops, ["sub", "pub", "pub"]);
        assert_eq!(msgs[2].id, None);
        assert_eq!(t.pending.len(), 2); // the new `sub` and the live publish
    }

    #[test]
    fn incoming_messages_reach_the_right_places() {
        let mut t = task(1024 * 1024);
        t.online = true;
        let queue = Arc::new(SubQueue::new(16));
        let (sub_tx, mut sub_rx) = oneshot::channel();
        t.on_ctrl(Some(Ctrl::Subscribe {
            sub_id: 7,
            key: ("c".into(), "t".into()),
            resume: None,
            queue: queue.clone(),
            reply: sub_tx,
        }));
        let sub_id = t.pending.keys().copied().next().unwrap();
        let item = |seq| ServerMessage::Item {
            cache: "c".into(),
            topic: "t".into(),
            seq,
            value: Value::Text("v".into()),
            from: "p".into(),
        };
        // Before the `ok` nothing is delivered; after it, duplicates are dropped
        // and jumps become gaps.
        t.on_message(item(1)).unwrap_or_else(|_| panic!());
        let ok = ServerMessage::Ok {
            id: Some(sub_id.into()),
            seq: Some(4),
            epoch: Some("e".into()),
        };
        t.on_message(ok).unwrap_or_else(|_| panic!());
        assert!(matches!(sub_rx.try_recv(), Ok(Ok(SubOk { seq: 4, .. }))));
        for seq in [4, 5, 5, 8] {
            t.on_message(item(seq)).unwrap_or_else(|_| panic!());
        }
        let gap = ServerMessage::Gap {
            cache: "c".into(),
            topic: "t".into(),
            last: 8,
            next: 11,
            epoch: None,
        };
        t.on_message(gap).unwrap_or_else(|_| panic!());
        let other_topic = ServerMessage::Item {
            cache: "c".into(),
            topic: "other".into(),
            seq: 1,
            value: Value::Text("x".into()),
            from: "p".into(),
        };
        t.on_message(other_topic).unwrap_or_else(|_| panic!());
        let got: Vec<_> = std::iter::from_fn(|| queue.try_pop())
            .map(|e| match e {
                Event::Item { seq, .. } => format!("i{seq}"),
                Event::Gap { last, next, .. } => format!("g{last}-{next}"),
            })
            .collect();
        assert_eq!(got, ["i5", "g5-8", "i8", "g8-11"]);

        // Replies by id; unknown ids are ignored.
        let mut p = publish(&mut t, 1, true).unwrap();
        let id = *t.pending.keys().max().unwrap();
        let err = ServerMessage::Err {
            id: Some(id.into()),
            code: "too_large".into(),
            message: "big".into(),
        };
        t.on_message(err).unwrap_or_else(|_| panic!());
        assert_eq!(p.try_recv().unwrap().unwrap_err().code(), Some("too_large"));
        let stray = ServerMessage::Ok {
            id: Some(9999u64.into()),
            seq: None,
            epoch: None,
        };
        t.on_message(stray).unwrap_or_else(|_| panic!());
    }

    #[test]
    fn undecodable_frames_are_protocol_errors() {
        let mut t = task(1024);
        assert!(matches!(
            t.on_frame(Message::Binary(vec![0xc1, 0x00].into())),
            Err(Break::Protocol(_))
        ));
        assert!(matches!(
            t.on_frame(Message::text("hi")),
            Err(Break::Protocol(_))
        ));
        assert!(t.on_frame(Message::Binary(Vec::new().into())).is_ok());
    }
}
