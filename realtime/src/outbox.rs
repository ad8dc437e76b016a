//! A connection's outbound queue, bounded in bytes.
//!
//! Producers (the hub's fan-out, the connection's own replies) push without
//! ever waiting; the connection's writer drains the queue and packs everything
//! into as few frames as it can. Two lanes:
//!
//! - **control**: replies (`ok`, `err`, `pong`). Never dropped, sent first. A
//!   client that pipelines requests but never reads would grow this lane, so
//!   it has a hard cap: over it the connection is closed 4503.
//! - **items**: `item`s and hub-detected `gap`s, in order. When the lane holds
//!   more than `queue_bytes`, the oldest entries are dropped and remembered as
//!   a pending `gap` per topic, sent ahead of the remaining items: the
//!   subscriber learns exactly what it lost. A connection that stays over the
//!   cap for `slow_timeout` is closed 4503.
//!
//! So one slow client costs at most its cap in memory and never delays others.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::engine::Epoch;
use crate::error::close;
use crate::metrics::Metrics;
use crate::names::TopicKey;
use crate::protocol::encode_gap;

/// Per-connection queue limits.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    pub queue_bytes: usize,
    pub slow_timeout: Duration,
    /// Most bytes packed into one outgoing frame.
    pub max_frame_bytes: usize,
}

impl OutboxLimits {
    /// The control lane's hard cap.
    fn control_cap(&self) -> usize {
        self.queue_bytes.max(64 * 1024)
    }
}

enum Entry {
    Item {
        topic: Arc<TopicKey>,
        seq: u64,
        frame: Bytes,
    },
    Gap {
        topic: Arc<TopicKey>,
        last: u64,
        next: u64,
        epoch: Option<Epoch>,
    },
}

impl Entry {
    fn topic(&self) -> &Arc<TopicKey> {
        match self {
            Entry::Item { topic, .. } | Entry::Gap { topic, .. } => topic,
        }
    }

    fn cost(&self) -> usize {
        match self {
            Entry::Item { frame, .. } => frame.len(),
            Entry::Gap { .. } => 32,
        }
    }
}

/// A gap owed to the client because queued entries were dropped.
struct PendingGap {
    topic: Arc<TopicKey>,
    last: u64,
    next: u64,
    /// Set when what was dropped included a restart of the sequence.
    epoch: Option<Epoch>,
}

/// Why and how the server closes a connection (code 0: without a close frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
}

#[derive(Default)]
struct State {
    control: VecDeque<Bytes>,
    control_bytes: usize,
    items: VecDeque<Entry>,
    item_bytes: usize,
    pending_gaps: Vec<PendingGap>,
    over_since: Option<Instant>,
    close: Option<CloseRequest>,
}

pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    limits: OutboxLimits,
    metrics: Arc<Metrics>,
}

/// What the writer should do next.
pub enum Drained {
    /// Frames to send, in order.
    Frames(Vec<Bytes>),
    /// Nothing queued.
    Empty,
    /// Send this close frame and stop.
    Close(CloseRequest),
}

impl Outbox {
    pub fn new(limits: OutboxLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            limits,
            metrics,
        }
    }

    /// Queues a reply. Replies are never dropped; too many unread ones close
    /// the connection.
    pub fn push_control(&self, frame: Bytes) {
        let mut s = self.state.lock();
        if s.close.is_some() {
            return;
        }
        s.control_bytes += frame.len();
        s.control.push_back(frame);
        if s.control_bytes > self.limits.control_cap() {
            self.close_locked(
                &mut s,
                close::TOO_SLOW,
                "too slow: replies are not being read",
            );
        }
        drop(s);
        self.wake.notify_one();
    }

    /// Queues an item (the hot path: one call per subscriber per publish).
    pub fn push_item(&self, topic: &Arc<TopicKey>, seq: u64, frame: &Bytes) {
        self.push_entry(Entry::Item {
            topic: topic.clone(),
            seq,
            frame: frame.clone(),
        });
    }

    /// Queues a gap detected upstream (history gone, epoch changed, missed seqs).
    /// `epoch` is set when the gap is a restart of the topic's sequence.
    pub fn push_gap(&self, topic: &Arc<TopicKey>, last: u64, next: u64, epoch: Option<&Epoch>) {
        self.metrics.gaps.inc();
        self.push_entry(Entry::Gap {
            topic: topic.clone(),
            last,
            next,
            epoch: epoch.cloned(),
        });
    }

    fn push_entry(&self, entry: Entry) {
        let mut s = self.state.lock();
        if s.close.is_some() {
            return;
        }
        s.item_bytes += entry.cost();
        s.items.push_back(entry);
        if s.item_bytes > self.limits.queue_bytes {
            self.shed_locked(&mut s);
        }
        drop(s);
        self.wake.notify_one();
    }

    /// Drops the oldest entries until the lane fits, owing a gap for them.
    fn shed_locked(&self, s: &mut State) {
        let mut dropped = 0u64;
        while s.item_bytes > self.limits.queue_bytes {
            let Some(entry) = s.items.pop_front() else {
                break;
            };
            s.item_bytes -= entry.cost();
            let (topic, last, next, epoch) = match entry {
                Entry::Item { topic, seq, .. } => {
                    dropped += 1;
                    (topic, seq.saturating_sub(1), seq + 1, None)
                }
                Entry::Gap {
                    topic,
                    last,
                    next,
                    epoch,
                } => (topic, last, next, epoch),
            };
            match s
                .pending_gaps
                .iter_mut()
                .find(|g| Arc::ptr_eq(&g.topic, &topic) || g.topic == topic)
            {
                Some(g) => {
                    g.last = g.last.min(last);
                    g.next = g.next.max(next);
                    g.epoch = epoch.or(g.epoch.take());
                }
                None => s.pending_gaps.push(PendingGap {
                    topic,
                    last,
                    next,
                    epoch,
                }),
            }
        }
        self.metrics.dropped_items.inc_by(dropped);
        let now = Instant::now();
        match s.over_since {
            None => s.over_since = Some(now),
            Some(since) if now.duration_since(since) >= self.limits.slow_timeout => {
                self.close_locked(
                    s,
                    close::TOO_SLOW,
                    "too slow: could not keep up with its subscriptions",
                );
            }
            Some(_) => {}
        }
    }

    /// Forgets queued entries for a topic (after `unsub` or a replacing `sub`).
    pub fn purge_topic(&self, topic: &TopicKey) {
        let mut s = self.state.lock();
        let before = s.items.len();
        let mut freed = 0;
        s.items.retain(|e| {
            let keep = **e.topic() != *topic;
            if !keep {
                freed += e.cost();
            }
            keep
        });
        if s.items.len() != before {
            s.item_bytes -= freed;
        }
        s.pending_gaps.retain(|g| *g.topic != *topic);
    }

    /// Asks the writer to send a close frame and stop. The first request wins.
    pub fn close(&self, code: u16, reason: impl Into<String>) {
        let mut s = self.state.lock();
        self.close_locked(&mut s, code, &reason.into());
    }

    fn close_locked(&self, s: &mut State, code: u16, reason: &str) {
        if s.close.is_some() {
            return;
        }
        if code == close::TOO_SLOW {
            self.metrics.slow_consumer_closes.inc();
        }
        self.metrics.close(code);
        s.close = Some(CloseRequest {
            code,
            reason: reason.to_owned(),
        });
        // Undeliverable now: free the memory at once.
        s.items = VecDeque::new();
        s.item_bytes = 0;
        s.pending_gaps.clear();
        self.wake.notify_one();
    }

    /// Ends the connection without a close frame (the peer is gone or closed first).
    pub fn abort(&self) {
        let mut s = self.state.lock();
        if s.close.is_none() {
            s.close = Some(CloseRequest {
                code: 0,
                reason: String::new(),
            });
            s.items = VecDeque::new();
            s.item_bytes = 0;
            s.pending_gaps.clear();
        }
        drop(s);
        self.wake.notify_one();
    }

    /// Whether a close was requested.
    pub fn is_closed(&self) -> bool {
        self.state.lock().close.is_some()
    }

    /// Resolves when something was queued or a close was requested since the
    /// last call (a wake-up that came while nobody waited is kept).
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    /// Takes everything queued, packed into frames of at most `max_frame_bytes`
    /// (a single message is never split). Control replies first, then owed gaps,
    /// then items in order.
    pub fn drain(&self) -> Drained {
        let mut s = self.state.lock();
        if s.control.is_empty() && s.items.is_empty() && s.pending_gaps.is_empty() {
            s.over_since = None;
            return match &s.close {
                Some(c) => Drained::Close(c.clone()),
                None => Drained::Empty,
            };
        }
        let control = std::mem::take(&mut s.control);
        let gaps = std::mem::take(&mut s.pending_gaps);
        let items = std::mem::take(&mut s.items);
        s.control_bytes = 0;
        s.item_bytes = 0;
        s.over_since = None;
        drop(s);

        if !gaps.is_empty() {
            self.metrics.gaps.inc_by(gaps.len() as u64);
        }
        let mut packer = FramePacker::new(self.limits.max_frame_bytes);
        for frame in control {
            packer.push(frame);
        }
        for g in gaps {
            packer.push(encode_gap(&g.topic, g.last, g.next, g.epoch.as_deref()));
        }
        for entry in items {
            match entry {
                Entry::Item { frame, .. } => packer.push(frame),
                Entry::Gap {
                    topic,
                    last,
                    next,
                    epoch,
                } => packer.push(encode_gap(&topic, last, next, epoch.as_deref())),
            }
        }
        Drained::Frames(packer.finish())
    }

    #[cfg(test)]
    fn queued_item_bytes(&self) -> usize {
        self.state.lock().item_bytes
    }
}

/// Packs messages back to back into frames. A frame holding one message is
/// that message's bytes, shared, not copied.
struct FramePacker {
    max: usize,
    frames: Vec<Bytes>,
    single: Option<Bytes>,
    buf: BytesMut,
}

impl FramePacker {
    fn new(max: usize) -> Self {
        Self {
            max,
            frames: Vec::new(),
            single: None,
            buf: BytesMut::new(),
        }
    }

    fn current_len(&self) -> usize {
        self.single.as_ref().map_or(self.buf.len(), Bytes::len)
    }

    fn push(&mut self, msg: Bytes) {
        let len = self.current_len();
        if len > 0 && len + msg.len() > self.max {
            self.flush();
        }
        if self.current_len() == 0 {
            self.single = Some(msg);
            return;
        }
        if let Some(first) = self.single.take() {
            self.buf.reserve(first.len() + msg.len());
            self.buf.extend_from_slice(&first);
        }
        self.buf.extend_from_slice(&msg);
    }

    fn flush(&mut self) {
        if let Some(single) = self.single.take() {
            self.frames.push(single);
        } else if !self.buf.is_empty() {
            self.frames.push(self.buf.split().freeze());
        }
    }

    fn finish(mut self) -> Vec<Bytes> {
        self.flush();
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_server_frame, ServerMessage};

    fn outbox(queue_bytes: usize, slow: Duration) -> Outbox {
        Outbox::new(
            OutboxLimits {
                queue_bytes,
                slow_timeout: slow,
                max_frame_bytes: 1 << 20,
            },
            Arc::new(Metrics::new()),
        )
    }

    fn item(topic: &TopicKey, seq: u64) -> Bytes {
        crate::protocol::encode_item(topic, seq, &vec![0u8; 100].into(), "p")
    }

    fn messages(d: Drained) -> Vec<ServerMessage> {
        match d {
            Drained::Frames(frames) => frames
                .iter()
                .flat_map(|f| decode_server_frame(f).unwrap())
                .collect(),
            _ => vec![],
        }
    }

    fn summary(msgs: &[ServerMessage]) -> Vec<String> {
        msgs.iter()
            .map(|m| match m {
                ServerMessage::Item { topic, seq, .. } => format!("{topic}:{seq}"),
                ServerMessage::Gap {
                    topic, last, next, ..
                } => format!("{topic}:gap{last}-{next}"),
                ServerMessage::Ok { .. } => "ok".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn control_goes_first_then_items_in_order_in_one_frame() {
        let o = outbox(1 << 20, Duration::from_secs(5));
        let t = Arc::new(TopicKey::new("c", "t").unwrap());
        o.push_item(&t, 1, &item(&t, 1));
        o.push_control(crate::protocol::encode_ok(None, None, None));
        o.push_item(&t, 2, &item(&t, 2));
        match o.drain() {
            Drained::Frames(f) => assert_eq!(f.len(), 1),
            _ => panic!(),
        }
        o.push_item(&t, 3, &item(&t, 3));
        o.push_control(crate::protocol::encode_ok(None, None, None));
        assert_eq!(summary(&messages(o.drain())), ["ok", "t:3"]);
    }

    #[test]
    fn over_the_cap_drops_oldest_and_owes_an_exact_gap() {
        let frame_len = item(&TopicKey::new("c", "a").unwrap(), 1).len();
        let o = outbox(frame_len * 3, Duration::from_secs(60));
        let a = Arc::new(TopicKey::new("c", "a").unwrap());
        let b = Arc::new(TopicKey::new("c", "b").unwrap());
        o.push_item(&a, 1, &item(&a, 1));
        o.push_item(&b, 1, &item(&b, 1));
        o.push_item(&a, 2, &item(&a, 2));
        o.push_item(&a, 3, &item(&a, 3));
        o.push_item(&a, 4, &item(&a, 4));
        assert!(o.queued_item_bytes() <= frame_len * 3);
        assert_eq!(
            summary(&messages(o.drain())),
            ["a:gap0-2", "b:gap0-2", "a:2", "a:3", "a:4"]
        );
    }

    #[test]
    fn dropping_consecutive_items_merges_into_one_gap() {
        let t = Arc::new(TopicKey::new("c", "t").unwrap());
        let frame_len = item(&t, 1).len();
        let o = outbox(frame_len * 2, Duration::from_secs(60));
        for seq in 1..=10 {
            o.push_item(&t, seq, &item(&t, seq));
        }
        assert_eq!(summary(&messages(o.drain())), ["t:gap0-9", "t:9", "t:10"]);
        // After a drain the next items flow normally.
        o.push_item(&t, 11, &item(&t, 11));
        assert_eq!(summary(&messages(o.drain())), ["t:11"]);
    }

    #[test]
    fn staying_over_the_cap_closes_4503_and_frees_the_queue() {
        let t = Arc::new(TopicKey::new("c", "t").unwrap());
        let o = outbox(item(&t, 1).len(), Duration::ZERO);
        o.push_item(&t, 1, &item(&t, 1));
        o.push_item(&t, 2, &item(&t, 2));
        o.push_item(&t, 3, &item(&t, 3));
        assert!(o.is_closed());
        assert_eq!(o.queued_item_bytes(), 0);
        match o.drain() {
            Drained::Close(c) => assert_eq!(c.code, close::TOO_SLOW),
            _ => panic!("expected close"),
        }
    }

    #[test]
    fn purge_forgets_one_topic() {
        let o = outbox(1 << 20, Duration::from_secs(5));
        let a = Arc::new(TopicKey::new("c", "a").unwrap());
        let b = Arc::new(TopicKey::new("c", "b").unwrap());
        o.push_item(&a, 1, &item(&a, 1));
        o.push_item(&b, 1, &item(&b, 1));
        o.purge_topic(&a);
        assert_eq!(summary(&messages(o.drain())), ["b:1"]);
    }

    #[test]
    fn frames_never_exceed_the_limit_and_never_split_a_message() {
        let t = Arc::new(TopicKey::new("c", "t").unwrap());
        let len = item(&t, 1).len();
        let o = Outbox::new(
            OutboxLimits {
                queue_bytes: 1 << 20,
                slow_timeout: Duration::from_secs(5),
                max_frame_bytes: len * 3,
            },
            Arc::new(Metrics::new()),
        );
        for seq in 1..=10 {
            o.push_item(&t, seq, &item(&t, seq));
        }
        let Drained::Frames(frames) = o.drain() else {
            panic!()
        };
        assert_eq!(frames.len(), 4);
        assert!(frames.iter().all(|f| f.len() <= len * 3));
        let n: usize = frames
            .iter()
            .map(|f| decode_server_frame(f).unwrap().len())
            .sum();
        assert_eq!(n, 10);
    }
}
