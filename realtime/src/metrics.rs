//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! Hot paths only touch atomics: a publish adds its delivery count once, not
//! once per subscriber; the writer adds bytes once per frame.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::EngineStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CloseLabel {
    pub code: u16,
}

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_total: Counter,
    pub subscriptions: Gauge,
    pub topics: Gauge,
    pub local_topics: Gauge,
    pub retained_items: Gauge,
    pub publishes: Family<TransportLabel, Counter>,
    pub deliveries: Counter,
    pub gaps: Counter,
    pub dropped_items: Counter,
    pub slow_consumer_closes: Counter,
    pub closes: Family<CloseLabel, Counter>,
    pub rate_limited: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub frames_out: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("acorn");
        let m = Self {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            subscriptions: Gauge::default(),
            topics: Gauge::default(),
            local_topics: Gauge::default(),
            retained_items: Gauge::default(),
            publishes: Family::default(),
            deliveries: Counter::default(),
            gaps: Counter::default(),
            dropped_items: Counter::default(),
            slow_consumer_closes: Counter::default(),
            closes: Family::default(),
            rate_limited: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            frames_out: Counter::default(),
            registry: Registry::default(),
        };
        // Both transports show from the start, at 0.
        for transport in ["ws", "http"] {
            let _ = m.publishes.get_or_create(&TransportLabel { transport });
        }
        registry.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "connections_opened",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "subscriptions",
            "Active subscriptions on this node",
            m.subscriptions.clone(),
        );
        registry.register(
            "topics",
            "Topics held by the engine (with history or watchers)",
            m.topics.clone(),
        );
        registry.register(
            "local_topics",
            "Topics with subscribers on this node",
            m.local_topics.clone(),
        );
        registry.register(
            "retained_items",
            "Items held in topic history",
            m.retained_items.clone(),
        );
        registry.register(
            "publishes",
            "Values published, by transport",
            m.publishes.clone(),
        );
        registry.register(
            "deliveries",
            "Items queued to subscribers",
            m.deliveries.clone(),
        );
        registry.register("gaps", "Gap messages sent to subscribers", m.gaps.clone());
        registry.register(
            "dropped_items",
            "Queued items dropped for slow consumers",
            m.dropped_items.clone(),
        );
        registry.register(
            "slow_consumer_closes",
            "Connections closed 4503 (too slow)",
            m.slow_consumer_closes.clone(),
        );
        registry.register(
            "closes",
            "Connections closed by the server, by close code",
            m.closes.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused for rate",
            m.rate_limited.clone(),
        );
        registry.register(
            "bytes_in",
            "Bytes received in WebSocket frames and HTTP publish bodies",
            m.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Bytes sent in WebSocket frames",
            m.bytes_out.clone(),
        );
        registry.register("frames_out", "WebSocket frames sent", m.frames_out.clone());
        Self { registry, ..m }
    }

    pub fn publish(&self, transport: &'static str) {
        self.publishes
            .get_or_create(&TransportLabel { transport })
            .inc();
    }

    pub fn close(&self, code: u16) {
        self.closes.get_or_create(&CloseLabel { code }).inc();
    }

    /// Renders the Prometheus text format, refreshing engine-derived gauges.
    pub fn render(&self, engine: EngineStats) -> String {
        self.topics.set(engine.topics as i64);
        self.retained_items.set(engine.retained_items as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_the_prefix() {
        let m = Metrics::new();
        m.publish("ws");
        m.deliveries.inc_by(10);
        m.close(4503);
        let text = m.render(EngineStats {
            topics: 3,
            retained_items: 7,
        });
        for name in [
            "acorn_connections ",
            "acorn_subscriptions ",
            "acorn_topics 3",
            "acorn_publishes_total{transport=\"ws\"} 1",
            "acorn_deliveries_total 10",
            "acorn_gaps_total",
            "acorn_slow_consumer_closes_total",
            "acorn_bytes_in_total",
            "acorn_bytes_out_total",
            "acorn_closes_total{code=\"4503\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
