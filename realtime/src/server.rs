//! A node: binds the listener, wires engine → hub → endpoints, serves until
//! shutdown, then closes every WebSocket with 1001 and waits for them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use governor::DefaultKeyedRateLimiter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::engine::{memory, Engine};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::session::quota;
use crate::token::TokenAuthority;
use crate::{http, ws};

/// Shared state of a running node.
pub struct App {
    pub config: ServerConfig,
    pub hub: Arc<Hub>,
    pub tokens: TokenAuthority,
    pub metrics: Arc<Metrics>,
    /// HTTP publishes per token subject.
    pub http_rate: DefaultKeyedRateLimiter<String>,
    /// Open WebSocket connections (for the connection limit).
    pub connections: AtomicUsize,
    /// Cancelled when the node starts shutting down.
    pub shutdown: CancellationToken,
    /// Every WebSocket connection task, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    extra_routes: Router,
}

impl Server {
    /// Binds `config.listen` and builds a node on the memory engine.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Self> {
        let engine = memory::start(config.limits.history_size, config.limits.history_ttl);
        Self::bind_with_engine(config, engine).await
    }

    /// Binds `config.listen` and builds a node on the given engine.
    pub async fn bind_with_engine(
        config: ServerConfig,
        engine: Arc<dyn Engine>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let metrics = Arc::new(Metrics::new());
        let tokens = TokenAuthority::new(&config.token_secret)?;
        let http_rate = DefaultKeyedRateLimiter::keyed(quota(
            config.limits.http_rate_per_sec,
            config.limits.http_rate_burst,
        ));
        let app = Arc::new(App {
            hub: Hub::new(engine, metrics.clone()),
            config,
            tokens,
            metrics,
            http_rate,
            connections: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        Ok(Self {
            listener,
            app,
            extra_routes: Router::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serves `routes` beside the topics endpoints (e.g. the game's API).
    pub fn merge(mut self, routes: Router) -> Self {
        self.extra_routes = self.extra_routes.merge(routes);
        self
    }

    /// Serves until `shutdown` resolves, then closes every connection.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = self.app;
        let router = router(app.clone()).merge(self.extra_routes);
        let cancel = app.shutdown.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: closing connections");
            cancel.cancel();
        };
        let sweeper = tokio::spawn(sweep_rate_limiter(app.clone()));
        // Frames are already batched per connection and flushed once per batch;
        // Nagle's algorithm would only hold each batch back for a delayed ACK.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(signal)
            .await?;
        sweeper.abort();
        app.tracker.close();
        let grace = app.config.shutdown_grace;
        if tokio::time::timeout(grace, app.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = app.tracker.len(),
                "connections still open after {grace:?}; exiting anyway"
            );
        }
        Ok(())
    }
}

/// Request bodies other than published values (token requests) are small.
const OTHER_BODY_LIMIT: usize = 64 * 1024;

/// The HTTP contract at a glance.
pub fn router(app: Arc<App>) -> Router {
    let value_limit = DefaultBodyLimit::max(app.config.limits.max_value_bytes);
    Router::new()
        .route("/v1/ws", get(ws::upgrade))
        .route(
            "/v1/topics/{cache}/{topic}",
            post(http::publish).layer(value_limit),
        )
        .route("/v1/tokens", post(http::mint_token))
        .route("/v1/health", get(http::health))
        .route("/metrics", get(http::metrics))
        .fallback(http::not_found)
        .layer(DefaultBodyLimit::max(OTHER_BODY_LIMIT))
        .with_state(app)
}

/// The keyed HTTP limiter keeps a cell per token subject; forget idle ones.
async fn sweep_rate_limiter(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        app.http_rate.retain_recent();
        app.http_rate.shrink_to_fit();
    }
}
