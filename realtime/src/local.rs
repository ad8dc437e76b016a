//! An in-process client of the hub, for services that run inside a node (the
//! game server). It goes through the same hub, outbox and limits as a
//! WebSocket connection — only the socket and the token check are skipped, as
//! the code is trusted — so it sees exactly what a remote subscriber would:
//! items in seq order, `gap`s when it falls behind, and bounded memory.

use std::collections::HashSet;
use std::sync::Arc;

use crate::engine::{EngineError, StreamPosition};
use crate::hub::{next_conn_id, ConnId, Hub};
use crate::names::TopicKey;
use crate::outbox::{Drained, Outbox, OutboxLimits};
use crate::protocol::{decode_server_frame, RequestId, ServerMessage, Value};

pub struct LocalClient {
    id: ConnId,
    name: String,
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    /// Shares the hub's key for each topic: no per-connection copies.
    subscriptions: HashSet<Arc<TopicKey>>,
}

impl LocalClient {
    /// `name` is what subscribers see as `from` on this client's publishes.
    pub fn new(hub: Arc<Hub>, name: impl Into<String>, limits: OutboxLimits) -> Self {
        let outbox = Arc::new(Outbox::new(limits, hub.metrics().clone()));
        Self {
            id: next_conn_id(),
            name: name.into(),
            hub,
            outbox,
            subscriptions: HashSet::new(),
        }
    }

    /// Subscribes to new items on `topic` (its `ok` is consumed here).
    pub async fn subscribe(&mut self, topic: TopicKey) -> Result<(), EngineError> {
        if self.subscriptions.contains(&topic) {
            return Ok(());
        }
        let shared = self
            .hub
            .subscribe(self.id, &self.outbox, topic, &RequestId::Unsigned(0), None)
            .await?;
        self.subscriptions.insert(shared);
        Ok(())
    }

    pub fn unsubscribe(&mut self, topic: &TopicKey) {
        if self.subscriptions.remove(topic) {
            self.hub.unsubscribe(self.id, topic);
            self.outbox.purge_topic(topic);
        }
    }

    pub async fn publish(
        &self,
        topic: &TopicKey,
        value: &Value,
    ) -> Result<StreamPosition, EngineError> {
        self.hub.publish(topic, value, &self.name).await
    }

    /// Everything that arrived since the last call: items and gaps, in order
    /// per topic. Never waits.
    pub fn drain(&self) -> Vec<ServerMessage> {
        match self.outbox.drain() {
            Drained::Frames(frames) => frames
                .iter()
                .filter_map(|f| decode_server_frame(f).ok())
                .flatten()
                .filter(|m| !matches!(m, ServerMessage::Ok { .. }))
                .collect(),
            Drained::Empty | Drained::Close(_) => Vec::new(),
        }
    }
}

impl Drop for LocalClient {
    fn drop(&mut self) {
        for key in std::mem::take(&mut self.subscriptions) {
            self.hub.unsubscribe(self.id, &key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::memory::MemoryEngine;
    use crate::metrics::Metrics;

    fn limits() -> OutboxLimits {
        OutboxLimits {
            queue_bytes: 1 << 20,
            slow_timeout: Duration::from_secs(5),
            max_frame_bytes: 1 << 16,
        }
    }

    #[tokio::test]
    async fn publishes_and_receives_through_the_hub() {
        let hub = Hub::new(
            MemoryEngine::new(8, Duration::from_secs(60)),
            Arc::new(Metrics::new()),
        );
        let mut game = LocalClient::new(hub.clone(), "game", limits());
        let player = LocalClient::new(hub.clone(), "p1", limits());
        let input = TopicKey::new("g", "match.1.input.p1").unwrap();
        game.subscribe(input.clone()).await.unwrap();
        player.publish(&input, &"left".into()).await.unwrap();
        let got = game.drain();
        assert!(
            matches!(&got[..], [ServerMessage::Item { seq: 1, from, .. }] if from == "p1"),
            "{got:?}"
        );
        game.unsubscribe(&input);
        player.publish(&input, &"right".into()).await.unwrap();
        assert!(game.drain().is_empty());
    }
}
