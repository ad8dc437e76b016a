//! The engine seam: where sequence numbers, history and cross-node fan-out live.
//!
//! The hub never assigns a seq or keeps history itself; it asks the engine.
//! An engine delivers every publication — from this node or another — to the
//! hub through [`PublicationSink::deliver`], in seq order per topic. The memory
//! engine does this for one node; a Redis engine does it for many, without any
//! change to the hub or the connection code.

pub mod memory;

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use bytes::Bytes;

use crate::names::TopicKey;
use crate::protocol::Value;

/// Names one run of a topic's sequence. A new epoch starts when a topic's
/// sequence restarts (its state was freed or lost).
pub type Epoch = Arc<str>;

/// A published value as stored and fanned out: the `item` message is encoded
/// once, here, and shared by history and every subscriber.
#[derive(Clone, Debug)]
pub struct Publication {
    pub seq: u64,
    pub epoch: Epoch,
    /// The encoded `item` message (see [`crate::protocol::encode_item`]).
    pub frame: Bytes,
}

/// Where a topic's sequence stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPosition {
    /// Last seq published, 0 if none.
    pub seq: u64,
    pub epoch: Epoch,
}

/// What a subscriber needs to catch up.
#[derive(Clone, Debug)]
pub struct History {
    pub position: StreamPosition,
    /// Retained items with seq greater than the requested one, ascending.
    pub items: Vec<Publication>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}

/// Receives every publication for the topics this node watches.
pub trait PublicationSink: Send + Sync {
    /// Called in seq order per topic. Must not block: it runs on the engine's
    /// delivery path (for the memory engine, inside `publish`).
    fn deliver(&self, topic: &TopicKey, publication: &Publication);
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineStats {
    pub topics: usize,
    pub retained_items: usize,
}

#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Connects the engine to the hub; called once, before any other call.
    fn attach(&self, sink: Weak<dyn PublicationSink>);

    /// Assigns the next seq, stores the item in history and delivers it to
    /// every node watching the topic (this one included).
    async fn publish(
        &self,
        topic: &TopicKey,
        value: &Value,
        from: &str,
    ) -> Result<StreamPosition, EngineError>;

    /// The topic's position and, when `after` is given, the retained items after it.
    async fn history(&self, topic: &TopicKey, after: Option<u64>) -> Result<History, EngineError>;

    /// This node has subscribers on `topic`: deliver its publications here.
    /// Watches are counted; each `watch` is paired with one `unwatch`.
    async fn watch(&self, topic: &TopicKey) -> Result<(), EngineError>;

    /// This node's last subscriber on `topic` left.
    fn unwatch(&self, topic: &TopicKey);

    /// Whether the engine can serve (for `/v1/health`).
    async fn healthy(&self) -> bool;

    fn stats(&self) -> EngineStats;
}

/// A fresh epoch: 16 hex digits from a random 64-bit value.
pub fn new_epoch() -> Epoch {
    format!("{:016x}", rand::random::<u64>()).into()
}
