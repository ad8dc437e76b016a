//! The memory engine: one node, no external services.
//!
//! Each topic is a [`TopicStream`] behind its own mutex. `publish` assigns the
//! seq, stores the item and delivers it to the hub while holding that mutex, so
//! concurrent publishers to one topic are seen by every subscriber in seq order.
//! A sweeper drops history `history_ttl` after a topic's last publish and frees
//! topics that nobody watches once their history is gone.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;

use super::{
    new_epoch, Engine, EngineError, EngineStats, Epoch, History, Publication, PublicationSink,
    StreamPosition,
};
use crate::names::TopicKey;
use crate::protocol::{encode_item, Value};

struct TopicStream {
    seq: u64,
    epoch: Epoch,
    history: VecDeque<Publication>,
    last_publish: Instant,
    watchers: usize,
    /// Set when the sweeper removed this stream from the map; a publisher that
    /// raced the removal looks the topic up again instead of publishing into it.
    freed: bool,
}

impl TopicStream {
    fn new(now: Instant) -> Self {
        Self {
            seq: 0,
            epoch: new_epoch(),
            history: VecDeque::new(),
            last_publish: now,
            watchers: 0,
            freed: false,
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            seq: self.seq,
            epoch: self.epoch.clone(),
        }
    }

    fn expire_history(&mut self, now: Instant, ttl: Duration) {
        if !self.history.is_empty() && now.duration_since(self.last_publish) >= ttl {
            self.history.clear();
            self.history.shrink_to_fit();
        }
    }
}

pub struct MemoryEngine {
    topics: DashMap<TopicKey, Arc<Mutex<TopicStream>>>,
    sink: OnceLock<Weak<dyn PublicationSink>>,
    history_size: usize,
    history_ttl: Duration,
}

impl MemoryEngine {
    pub fn new(history_size: usize, history_ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            topics: DashMap::new(),
            sink: OnceLock::new(),
            history_size,
            history_ttl,
        })
    }

    fn stream(&self, topic: &TopicKey) -> Arc<Mutex<TopicStream>> {
        if let Some(s) = self.topics.get(topic) {
            return s.clone();
        }
        self.topics
            .entry(topic.clone())
            .or_insert_with(|| Arc::new(Mutex::new(TopicStream::new(Instant::now()))))
            .clone()
    }

    /// Drops expired history and frees unwatched topics without history.
    /// Returns how many topics were freed.
    pub fn sweep(&self, now: Instant) -> usize {
        let before = self.topics.len();
        self.topics.retain(|_, stream| {
            let mut s = stream.lock();
            s.expire_history(now, self.history_ttl);
            let keep = s.watchers > 0 || !s.history.is_empty();
            if !keep {
                s.freed = true;
            }
            keep
        });
        before - self.topics.len()
    }

    fn spawn_sweeper(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let period =
            (self.history_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        rt.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(engine) = weak.upgrade() else { break };
                let freed = engine.sweep(Instant::now());
                if freed > 0 {
                    tracing::debug!(freed, "memory engine freed idle topics");
                }
            }
        });
    }
}

/// Builds the memory engine and starts its sweeper on the current runtime.
pub fn start(history_size: usize, history_ttl: Duration) -> Arc<MemoryEngine> {
    let engine = MemoryEngine::new(history_size, history_ttl);
    engine.spawn_sweeper();
    engine
}

#[async_trait]
impl Engine for MemoryEngine {
    fn attach(&self, sink: Weak<dyn PublicationSink>) {
        let _ = self.sink.set(sink);
    }

    async fn publish(
        &self,
        topic: &TopicKey,
        value: &Value,
        from: &str,
    ) -> Result<StreamPosition, EngineError> {
        let sink = self.sink.get().and_then(Weak::upgrade);
        loop {
            let stream = self.stream(topic);
            let mut s = stream.lock();
            if s.freed {
                continue;
            }
            let now = Instant::now();
            s.expire_history(now, self.history_ttl);
            s.seq += 1;
            s.last_publish = now;
            let publication = Publication {
                seq: s.seq,
                epoch: s.epoch.clone(),
                frame: encode_item(topic, s.seq, value, from),
            };
            if self.history_size > 0 {
                if s.history.len() == self.history_size {
                    s.history.pop_front();
                }
                s.history.push_back(publication.clone());
            }
            if let Some(sink) = &sink {
                sink.deliver(topic, &publication);
            }
            return Ok(s.position());
        }
    }

    async fn history(&self, topic: &TopicKey, after: Option<u64>) -> Result<History, EngineError> {
        let stream = self.stream(topic);
        let mut s = stream.lock();
        s.expire_history(Instant::now(), self.history_ttl);
        let items = match after {
            None => Vec::new(),
            Some(after) => s
                .history
                .iter()
                .filter(|p| p.seq > after)
                .cloned()
                .collect(),
        };
        Ok(History {
            position: s.position(),
            items,
        })
    }

    async fn watch(&self, topic: &TopicKey) -> Result<(), EngineError> {
        loop {
            let stream = self.stream(topic);
            let mut s = stream.lock();
            if !s.freed {
                s.watchers += 1;
                return Ok(());
            }
        }
    }

    fn unwatch(&self, topic: &TopicKey) {
        if let Some(stream) = self.topics.get(topic).map(|s| s.clone()) {
            let mut s = stream.lock();
            s.watchers = s.watchers.saturating_sub(1);
        }
    }

    async fn healthy(&self) -> bool {
        true
    }

    fn stats(&self) -> EngineStats {
        let mut stats = EngineStats::default();
        for entry in self.topics.iter() {
            stats.topics += 1;
            stats.retained_items += entry.value().lock().history.len();
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Mutex<Vec<(TopicKey, u64)>>);
    impl PublicationSink for Collect {
        fn deliver(&self, topic: &TopicKey, p: &Publication) {
            self.0.lock().push((topic.clone(), p.seq));
        }
    }

    fn key(t: &str) -> TopicKey {
        TopicKey::new("c", t).unwrap()
    }

    #[tokio::test]
    async fn seq_starts_at_one_and_counts_per_topic() {
        let engine = MemoryEngine::new(4, Duration::from_secs(60));
        let sink: Arc<dyn PublicationSink> = Arc::new(Collect(Mutex::new(vec![])));
        engine.attach(Arc::downgrade(&sink));
        for _ in 0..3 {
            engine.publish(&key("a"), &"x".into(), "s").await.unwrap();
        }
        let p = engine.publish(&key("b"), &"x".into(), "s").await.unwrap();
        assert_eq!(p.seq, 1);
        assert_eq!(
            engine.history(&key("a"), None).await.unwrap().position.seq,
            3
        );
    }

    #[tokio::test]
    async fn history_keeps_the_last_n_and_filters_by_seq() {
        let engine = MemoryEngine::new(4, Duration::from_secs(60));
        for _ in 0..10 {
            engine.publish(&key("a"), &"x".into(), "s").await.unwrap();
        }
        let h = engine.history(&key("a"), Some(0)).await.unwrap();
        assert_eq!(
            h.items.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [7, 8, 9, 10]
        );
        let h = engine.history(&key("a"), Some(8)).await.unwrap();
        assert_eq!(h.items.iter().map(|p| p.seq).collect::<Vec<_>>(), [9, 10]);
        assert!(h.items.iter().all(|p| p.epoch == h.position.epoch));
    }

    #[tokio::test]
    async fn history_expires_and_unwatched_topics_restart_with_a_new_epoch() {
        let engine = MemoryEngine::new(4, Duration::from_millis(50));
        engine.publish(&key("a"), &"x".into(), "s").await.unwrap();
        let first = engine.history(&key("a"), Some(0)).await.unwrap();
        assert_eq!(first.items.len(), 1);
        let later = Instant::now() + Duration::from_millis(60);
        assert_eq!(engine.sweep(later), 1);
        let p = engine.publish(&key("a"), &"x".into(), "s").await.unwrap();
        assert_eq!(p.seq, 1);
        assert_ne!(p.epoch, first.position.epoch);
    }

    #[tokio::test]
    async fn watched_topics_keep_their_sequence_after_history_expires() {
        let engine = MemoryEngine::new(4, Duration::from_millis(50));
        engine.watch(&key("a")).await.unwrap();
        let p1 = engine.publish(&key("a"), &"x".into(), "s").await.unwrap();
        engine.sweep(Instant::now() + Duration::from_millis(60));
        let h = engine.history(&key("a"), Some(0)).await.unwrap();
        assert!(h.items.is_empty());
        assert_eq!(h.position, p1);
        engine.unwatch(&key("a"));
        assert_eq!(engine.sweep(Instant::now() + Duration::from_millis(60)), 1);
    }

    #[tokio::test]
    async fn delivers_in_order_to_the_sink() {
        let engine = MemoryEngine::new(4, Duration::from_secs(60));
        let collect = Arc::new(Collect(Mutex::new(vec![])));
        let sink: Arc<dyn PublicationSink> = collect.clone();
        engine.attach(Arc::downgrade(&sink));
        for _ in 0..5 {
            engine.publish(&key("a"), &"x".into(), "s").await.unwrap();
        }
        let seqs: Vec<u64> = collect.0.lock().iter().map(|(_, s)| *s).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }
}
