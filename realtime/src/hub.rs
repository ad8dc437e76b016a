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

use crate::engine::{Engine, EngineError, EngineStats, Epoch, History, Publication, PublicationSink, StreamPosition};
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
            self.outbox.push_gap(topic, self.last, p.seq);
            self.epoch = p.epoch.clone();
        } else if p.seq <= self.last {
            return false;
        } else if p.seq > self.last + 1 {
            self.outbox.push_gap(topic, self.last, p.seq);
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
    pub async fn publish(&self, topic: &TopicKey, value: &Value, from: &str) -> Result<StreamPosition, EngineError> {
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
            topic.watched.get_or_try_init(|| self.engine.watch(&topic.key)).await?;
            // A resume needs every retained item: whether they count depends on the epoch.
            self.engine.history(&topic.key, resume.as_ref().map(|_| 0)).await
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
        let freed = self
            .topics
            .remove_if(key, |_, t| Arc::ptr_eq(t, &topic) && t.subscribers.lock().is_empty());
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
    let same_epoch = resume.epoch.as_deref().is_none_or(|e| e == &*position.epoch);
    let first_retained = history.items.first().map_or(position.seq + 1, |p| p.seq);
    if !same_epoch {
        // The sequence the client knew is gone: everything retained now is new to it.
        outbox.push_gap(topic, resume.after, first_retained);
        for p in &history.items {
            outbox.push_item(topic, p.seq, &p.frame);
        }
        return;
    }
    if resume.after >= position.seq {
        return;
    }
    if first_retained > resume.after + 1 {
        outbox.push_gap(topic, resume.after, first_retained);
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
