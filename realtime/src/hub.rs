//! The hub: which connection on this node subscribes to what, and fan-out.
//!
//! Publishing goes through the engine, which assigns the seq and hands every
//! publication back to [`Hub::deliver`] in seq order. Fan-out pushes the
//! once-encoded bytes into each subscriber's [`Outbox`] without waiting.
//!
//! Subscribing with resume must not lose or repeat a seq at the seam between
//! history and live items, whatever the engine's latency. So a new subscriber
//! first registers in a *syncing* state that buffers live publications, then
//! reads history, then (under the topic's lock, so nothing interleaves) sends
//! `ok`, any `gap`, the history, and the buffered items newer than the history.
//! From then on each subscriber's last seq filters duplicates and turns any
//! jump in seq (or a new epoch) into a `gap`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::engine::{
    Engine, EngineError, EngineStats, Epoch, History, Publication, PublicationSink, StreamPosition,
};
use crate::metrics::Metrics;
use crate::names::TopicKey;
use crate::outbox::Outbox;
use crate::protocol::{encode_ok, RequestId, Value};

/// Identifies a connection within this node.
pub type ConnId = u64;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

pub fn next_conn_id() -> ConnId {
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}

/// Where a resuming subscriber left off.
#[derive(Debug, Clone)]
pub struct Resume {
    pub after: u64,
    pub epoch: Option<String>,
}

struct Subscriber {
    conn: ConnId,
    outbox: Arc<Outbox>,
    epoch: Epoch,
    last: u64,
    /// Live publications that arrived while history was being read.
    syncing: Option<Vec<Publication>>,
}

impl Subscriber {
    /// Queues one live publication, filtering repeats and reporting jumps.
    /// Returns whether an item was queued.
    fn offer(&mut self, topic: &Arc<TopicKey>, p: &Publication) -> bool {
        if !Arc::ptr_eq(&self.epoch, &p.epoch) && *self.epoch != *p.epoch {
            // The topic's sequence restarted under this subscriber.
            self.outbox
                .push_gap(topic, self.last, p.seq, Some(&p.epoch));
            self.epoch = p.epoch.clone();
        } else if p.seq <= self.last {
            return false;
        } else if p.seq > self.last + 1 {
            self.outbox.push_gap(topic, self.last, p.seq, None);
        }
        self.outbox.push_item(topic, p.seq, &p.frame);
        self.last = p.seq;
        true
    }
}

/// The subscribers of one topic on this node.
struct LocalTopic {
    key: Arc<TopicKey>,
    subscribers: Mutex<Vec<Subscriber>>,
    /// Set once the engine confirmed it delivers this topic here.
    watched: OnceCell<()>,
}

pub struct Hub {
    engine: Arc<dyn Engine>,
    topics: DashMap<TopicKey, Arc<LocalTopic>>,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(engine: Arc<dyn Engine>, metrics: Arc<Metrics>) -> Arc<Self> {
        let hub = Arc::new(Self {
            engine,
            topics: DashMap::new(),
            metrics,
        });
        let weak = Arc::downgrade(&hub);
        hub.engine.attach(weak);
        hub
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub async fn healthy(&self) -> bool {
        self.engine.healthy().await
    }

    pub fn engine_stats(&self) -> EngineStats {
        self.engine.stats()
    }

    /// Publishes a value; it reaches subscribers through [`Hub::deliver`].
    pub async fn publish(
        &self,
        topic: &TopicKey,
        value: &Value,
        from: &str,
    ) -> Result<StreamPosition, EngineError> {
        self.engine.publish(topic, value, from).await
    }

    /// Subscribes a connection, replying `ok` (with `reply_id`) through its
    /// outbox, followed by any replay. Returns the shared topic key.
    pub async fn subscribe(
        &self,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        key: TopicKey,
        reply_id: &RequestId,
        resume: Option<Resume>,
    ) -> Result<Arc<TopicKey>, EngineError> {
        let topic = {
            let shared = Arc::new(key.clone());
            let entry = self.topics.entry(key).or_insert_with(|| {
                self.metrics.local_topics.inc();
                Arc::new(LocalTopic {
                    key: shared,
                    subscribers: Mutex::new(Vec::new()),
                    watched: OnceCell::new(),
                })
            });
            let topic = entry.value().clone();
            topic.subscribers.lock().push(Subscriber {
                conn,
                outbox: outbox.clone(),
                epoch: Epoch::from(""),
                last: 0,
                syncing: Some(Vec::new()),
            });
            topic
        };
        self.metrics.subscriptions.inc();

        let history = async {
            topic
                .watched
                .get_or_try_init(|| self.engine.watch(&topic.key))
                .await?;
            // A resume needs every retained item: whether they count depends on the epoch.
            self.engine
                .history(&topic.key, resume.as_ref().map(|_| 0))
                .await
        }
        .await;
        let history = match history {
            Ok(h) => h,
            Err(e) => {
                self.unsubscribe(conn, &topic.key);
                return Err(e);
            }
        };

        let mut subs = topic.subscribers.lock();
        if let Some(sub) = subs.iter_mut().find(|s| s.conn == conn) {
            outbox.push_control(encode_ok(
                Some(reply_id),
                Some(history.position.seq),
                Some(&history.position.epoch),
            ));
            if let Some(resume) = &resume {
                replay(&topic.key, outbox, resume, &history);
            }
            sub.epoch = history.position.epoch.clone();
            sub.last = history.position.seq;
            let buffered = sub.syncing.take().unwrap_or_default();
            let delivered = buffered.iter().filter(|p| sub.offer(&topic.key, p)).count();
            self.metrics.deliveries.inc_by(delivered as u64);
        }
        Ok(topic.key.clone())
    }

    /// Removes a connection's subscription; frees the topic when it was the last.
    pub fn unsubscribe(&self, conn: ConnId, key: &TopicKey) {
        let Some(topic) = self.topics.get(key).map(|t| t.clone()) else {
            return;
        };
        let removed = {
            let mut subs = topic.subscribers.lock();
            match subs.iter().position(|s| s.conn == conn) {
                Some(i) => {
                    subs.swap_remove(i);
                    true
                }
                None => false,
            }
        };
        if removed {
            self.metrics.subscriptions.dec();
        }
        let freed = self.topics.remove_if(key, |_, t| {
            Arc::ptr_eq(t, &topic) && t.subscribers.lock().is_empty()
        });
        if freed.is_some() {
            self.metrics.local_topics.dec();
            if topic.watched.initialized() {
                self.engine.unwatch(key);
            }
        }
    }
}

/// Queues what a resuming subscriber missed: a `gap` where items are gone,
/// then the retained items it has not seen.
fn replay(topic: &Arc<TopicKey>, outbox: &Outbox, resume: &Resume, history: &History) {
    let position = &history.position;
    let same_epoch = resume
        .epoch
        .as_deref()
        .is_none_or(|e| e == &*position.epoch);
    let first_retained = history.items.first().map_or(position.seq + 1, |p| p.seq);
    if !same_epoch {
        // The sequence the client knew is gone: everything retained now is new to it.
        outbox.push_gap(topic, resume.after, first_retained, Some(&position.epoch));
        for p in &history.items {
            outbox.push_item(topic, p.seq, &p.frame);
        }
        return;
    }
    if resume.after >= position.seq {
        return;
    }
    if first_retained > resume.after + 1 {
        outbox.push_gap(topic, resume.after, first_retained, None);
    }
    for p in history.items.iter().filter(|p| p.seq > resume.after) {
        outbox.push_item(topic, p.seq, &p.frame);
    }
}

impl PublicationSink for Hub {
    fn deliver(&self, key: &TopicKey, publication: &Publication) {
        let Some(topic) = self.topics.get(key).map(|t| t.clone()) else {
            return;
        };
        let mut delivered = 0u64;
        for sub in topic.subscribers.lock().iter_mut() {
            match &mut sub.syncing {
                Some(buffer) => buffer.push(publication.clone()),
                None => delivered += u64::from(sub.offer(&topic.key, publication)),
            }
        }
        self.metrics.deliveries.inc_by(delivered);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::engine::memory::MemoryEngine;
    use crate::outbox::{Drained, OutboxLimits};
    use crate::protocol::{decode_server_frame, ServerMessage};

    /// Delegates to the memory engine, but publishes `during_history` values
    /// while a history read is in flight: the race the sync protocol exists for.
    struct RacyEngine {
        inner: Arc<MemoryEngine>,
        during_history: Mutex<u32>,
    }

    #[async_trait]
    impl Engine for RacyEngine {
        fn attach(&self, sink: Weak<dyn PublicationSink>) {
            self.inner.attach(sink)
        }
        async fn publish(
            &self,
            t: &TopicKey,
            v: &Value,
            from: &str,
        ) -> Result<StreamPosition, EngineError> {
            self.inner.publish(t, v, from).await
        }
        async fn history(&self, t: &TopicKey, after: Option<u64>) -> Result<History, EngineError> {
            let n = std::mem::take(&mut *self.during_history.lock());
            for _ in 0..n {
                self.inner.publish(t, &"racing".into(), "racer").await?;
            }
            // Read history *before* the racing items would be visible, as a slow
            // remote engine could: drop the items published just now.
            let mut h = self.inner.history(t, after).await?;
            h.items.retain(|p| p.seq + u64::from(n) <= h.position.seq);
            h.position.seq -= u64::from(n);
            Ok(h)
        }
        async fn watch(&self, t: &TopicKey) -> Result<(), EngineError> {
            self.inner.watch(t).await
        }
        fn unwatch(&self, t: &TopicKey) {
            self.inner.unwatch(t)
        }
        async fn healthy(&self) -> bool {
            true
        }
        fn stats(&self) -> EngineStats {
            self.inner.stats()
        }
    }

    fn setup(history: usize, racing: u32) -> (Arc<Hub>, Arc<MemoryEngine>) {
        let inner = MemoryEngine::new(history, Duration::from_secs(60));
        let engine = Arc::new(RacyEngine {
            inner: inner.clone(),
            during_history: Mutex::new(racing),
        });
        (Hub::new(engine, Arc::new(Metrics::new())), inner)
    }

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(
            OutboxLimits {
                queue_bytes: 1 << 20,
                slow_timeout: Duration::from_secs(5),
                max_frame_bytes: 1 << 20,
            },
            Arc::new(Metrics::new()),
        ))
    }

    fn received(o: &Outbox) -> Vec<String> {
        let Drained::Frames(frames) = o.drain() else {
            return vec![];
        };
        frames
            .iter()
            .flat_map(|f| decode_server_frame(f).unwrap())
            .map(|m| match m {
                ServerMessage::Ok { seq, .. } => format!("ok{}", seq.unwrap_or(0)),
                ServerMessage::Item { seq, .. } => format!("{seq}"),
                ServerMessage::Gap { last, next, .. } => format!("gap{last}-{next}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn key() -> TopicKey {
        TopicKey::new("c", "t").unwrap()
    }

    async fn publish(hub: &Hub, n: usize) {
        for _ in 0..n {
            hub.publish(&key(), &"v".into(), "p").await.unwrap();
        }
    }

    fn resume(after: u64, epoch: Option<&str>) -> Option<Resume> {
        Some(Resume {
            after,
            epoch: epoch.map(str::to_owned),
        })
    }

    #[tokio::test]
    async fn new_subscriber_gets_ok_with_position_then_only_new_items() {
        let (hub, _) = setup(16, 0);
        publish(&hub, 3).await;
        let o = outbox();
        hub.subscribe(1, &o, key(), &1u64.into(), None)
            .await
            .unwrap();
        publish(&hub, 2).await;
        assert_eq!(received(&o), ["ok3", "4", "5"]);
    }

    #[tokio::test]
    async fn resume_replays_then_goes_live_without_loss_or_repeat_at_the_seam() {
        let (hub, _) = setup(16, 3);
        publish(&hub, 5).await;
        let o = outbox();
        // Items 6, 7, 8 are published while history is read: they arrive both
        // live (buffered) and not in history; each must appear exactly once.
        hub.subscribe(1, &o, key(), &1u64.into(), resume(2, None))
            .await
            .unwrap();
        publish(&hub, 1).await;
        assert_eq!(received(&o), ["ok5", "3", "4", "5", "6", "7", "8", "9"]);
    }

    #[tokio::test]
    async fn resume_from_another_epoch_gets_a_gap_then_everything_retained() {
        let (hub, _) = setup(16, 0);
        publish(&hub, 3).await;
        let o = outbox();
        hub.subscribe(1, &o, key(), &1u64.into(), resume(7, Some("old-epoch")))
            .await
            .unwrap();
        assert_eq!(received(&o), ["ok3", "gap7-1", "1", "2", "3"]);
    }

    #[tokio::test]
    async fn resume_past_the_history_gets_a_gap_to_the_first_retained() {
        let (hub, engine) = setup(4, 0);
        publish(&hub, 10).await;
        let epoch = engine.history(&key(), None).await.unwrap().position.epoch;
        let o = outbox();
        hub.subscribe(1, &o, key(), &1u64.into(), resume(2, Some(&epoch)))
            .await
            .unwrap();
        assert_eq!(received(&o), ["ok10", "gap2-7", "7", "8", "9", "10"]);
    }

    #[tokio::test]
    async fn resume_when_up_to_date_replays_nothing() {
        let (hub, _) = setup(4, 0);
        publish(&hub, 3).await;
        let o = outbox();
        hub.subscribe(1, &o, key(), &1u64.into(), resume(3, None))
            .await
            .unwrap();
        publish(&hub, 1).await;
        assert_eq!(received(&o), ["ok3", "4"]);
    }

    #[tokio::test]
    async fn each_subscriber_gets_each_item_once() {
        let (hub, _) = setup(4, 0);
        let (a, b) = (outbox(), outbox());
        hub.subscribe(1, &a, key(), &1u64.into(), None)
            .await
            .unwrap();
        hub.subscribe(2, &b, key(), &1u64.into(), None)
            .await
            .unwrap();
        publish(&hub, 2).await;
        assert_eq!(received(&a), ["ok0", "1", "2"]);
        assert_eq!(received(&b), ["ok0", "1", "2"]);
        hub.unsubscribe(1, &key());
        publish(&hub, 1).await;
        assert_eq!(received(&a), Vec::<String>::new());
        assert_eq!(received(&b), ["3"]);
    }

    #[tokio::test]
    async fn the_last_unsubscribe_frees_the_topic_and_the_engine_watch() {
        let (hub, engine) = setup(4, 0);
        let o = outbox();
        hub.subscribe(1, &o, key(), &1u64.into(), None)
            .await
            .unwrap();
        assert_eq!(hub.metrics.local_topics.get(), 1);
        hub.unsubscribe(1, &key());
        assert_eq!(hub.metrics.local_topics.get(), 0);
        assert_eq!(hub.metrics.subscriptions.get(), 0);
        // Unwatched with no history: the engine frees it on the next sweep.
        assert_eq!(engine.sweep(std::time::Instant::now()), 1);
    }

    #[tokio::test]
    async fn an_epoch_change_under_a_live_subscriber_is_a_gap() {
        let (hub, _) = setup(4, 0);
        let o = outbox();
        hub.subscribe(1, &o, key(), &1u64.into(), None)
            .await
            .unwrap();
        publish(&hub, 2).await;
        let restarted = Publication {
            seq: 1,
            epoch: "new".into(),
            frame: crate::protocol::encode_item(&key(), 1, &"v".into(), "p"),
        };
        hub.deliver(&key(), &restarted);
        assert_eq!(received(&o), ["ok0", "1", "2", "gap2-1", "1"]);
    }
}
