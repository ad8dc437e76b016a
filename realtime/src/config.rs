//! Server configuration: where to listen, the secrets, and every limit.
//!
//! The `acorn` binary fills this from flags and `ACORN_*` environment
//! variables; library users build it directly. Defaults are PROTOCOL.md's.

use std::net::SocketAddr;
use std::time::Duration;

/// Limits that protect the server and the other clients from one client.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest published value (`pub` gets `too_large`, HTTP 413).
    pub max_value_bytes: usize,
    /// Largest WebSocket frame a client may send (close 4413), and the most the
    /// server packs into one outgoing frame.
    pub max_frame_bytes: usize,
    /// Subscriptions per connection (the next `sub` gets `limit_exceeded`).
    pub max_subscriptions: usize,
    /// Items kept per topic for resume.
    pub history_size: usize,
    /// History is dropped this long after a topic's last publish.
    pub history_ttl: Duration,
    /// `hb` after this long without any frame to the client.
    pub heartbeat: Duration,
    /// Items queued for one connection beyond this many bytes are dropped,
    /// oldest first, and the subscriber gets a `gap` for them.
    pub outbound_queue_bytes: usize,
    /// A connection that stays over `outbound_queue_bytes` this long is closed 4503.
    pub slow_consumer_timeout: Duration,
    /// A socket write that makes no progress this long drops the connection.
    pub write_timeout: Duration,
    /// Messages per second one WebSocket connection may send...
    pub ws_rate_per_sec: u32,
    /// ...with this burst; this many refusals within a second close it 4429.
    pub ws_rate_burst: u32,
    /// HTTP publishes per second per token subject, and the burst.
    pub http_rate_per_sec: u32,
    pub http_rate_burst: u32,
    /// Open WebSocket connections; further upgrades get 503 `unavailable`.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_value_bytes: 64 * 1024,
            max_frame_bytes: 1024 * 1024,
            max_subscriptions: 256,
            history_size: 256,
            history_ttl: Duration::from_secs(60),
            heartbeat: Duration::from_secs(15),
            outbound_queue_bytes: 1024 * 1024,
            slow_consumer_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            ws_rate_per_sec: 10_000,
            ws_rate_burst: 20_000,
            http_rate_per_sec: 1_000,
            http_rate_burst: 2_000,
            max_connections: 100_000,
        }
    }
}

/// Everything a node needs to serve.
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Bearer key for operator endpoints (`POST /v1/tokens`).
    pub operator_key: String,
    /// HS256 secret for tokens.
    pub token_secret: Vec<u8>,
    pub limits: Limits,
    /// How long shutdown waits for connections to close before exiting anyway.
    pub shutdown_grace: Duration,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("limits", &self.limits)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish_non_exhaustive()
    }
}

/// A random secret of 32 bytes, hex-encoded (dev-mode operator keys and token secrets).
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
