//! Command-line interface. Every `serve` setting also comes from an `ACORN_*`
//! environment variable; these names are a contract operators script against.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use realtime::config::{Limits, ServerConfig};
use realtime::token::Permission;

#[derive(Parser)]
#[command(
    name = "acorn",
    version,
    about = "Acorn: realtime topics service and game server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a node: the topics service over WebSocket and HTTP.
    Serve(ServeArgs),
    /// Token tools.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Host matches on a running node (operators).
    #[command(subcommand)]
    Match(crate::match_cli::MatchCommand),
    /// Subscribe to a topic and print what arrives.
    Sub(crate::topics_cli::SubArgs),
    /// Publish one text value over the WebSocket.
    Pub(crate::topics_cli::PubArgs),
    /// Load generators (see BENCHMARKS.md).
    Bench(crate::bench::BenchArgs),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint a token with the configured secret and print it.
    Mint(MintArgs),
}

#[derive(Args)]
pub struct MintArgs {
    /// Who the token is for (`sub`; appears as `from` on what it publishes).
    #[arg(long)]
    pub sub: String,
    /// ROLE:CACHE:TOPIC, e.g. subscribeonly:game:match.42.state (repeatable).
    #[arg(long = "perm", value_parser = Permission::parse_cli, required = true)]
    pub perms: Vec<Permission>,
    /// Lifetime, e.g. 30s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    #[arg(long, env = "ACORN_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: String,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the real one is printed).
    #[arg(long, env = "ACORN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Bearer key for operator endpoints. Generated and printed once when unset.
    #[arg(long, env = "ACORN_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: Option<String>,
    /// HS256 secret for tokens. Random when unset (tokens then die with the process).
    #[arg(long, env = "ACORN_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// How long shutdown waits for connections to close.
    #[arg(long, env = "ACORN_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

#[derive(Args)]
pub struct LimitArgs {
    #[arg(long, env = "ACORN_MAX_VALUE_BYTES", default_value_t = Limits::default().max_value_bytes)]
    pub max_value_bytes: usize,
    #[arg(long, env = "ACORN_MAX_FRAME_BYTES", default_value_t = Limits::default().max_frame_bytes)]
    pub max_frame_bytes: usize,
    #[arg(long, env = "ACORN_MAX_SUBSCRIPTIONS", default_value_t = Limits::default().max_subscriptions)]
    pub max_subscriptions: usize,
    #[arg(long, env = "ACORN_HISTORY_SIZE", default_value_t = Limits::default().history_size)]
    pub history_size: usize,
    #[arg(long, env = "ACORN_HISTORY_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub history_ttl: Duration,
    #[arg(long, env = "ACORN_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    #[arg(long, env = "ACORN_OUTBOUND_QUEUE_BYTES", default_value_t = Limits::default().outbound_queue_bytes)]
    pub outbound_queue_bytes: usize,
    #[arg(long, env = "ACORN_SLOW_CONSUMER_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub slow_consumer_timeout: Duration,
    #[arg(long, env = "ACORN_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
    #[arg(long, env = "ACORN_WS_RATE", default_value_t = Limits::default().ws_rate_per_sec)]
    pub ws_rate: u32,
    #[arg(long, env = "ACORN_WS_BURST", default_value_t = Limits::default().ws_rate_burst)]
    pub ws_burst: u32,
    #[arg(long, env = "ACORN_HTTP_RATE", default_value_t = Limits::default().http_rate_per_sec)]
    pub http_rate: u32,
    #[arg(long, env = "ACORN_HTTP_BURST", default_value_t = Limits::default().http_rate_burst)]
    pub http_burst: u32,
    #[arg(long, env = "ACORN_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
}

impl LimitArgs {
    pub fn to_limits(&self) -> Limits {
        Limits {
            max_value_bytes: self.max_value_bytes,
            max_frame_bytes: self.max_frame_bytes,
            max_subscriptions: self.max_subscriptions,
            history_size: self.history_size,
            history_ttl: self.history_ttl,
            heartbeat: self.heartbeat,
            outbound_queue_bytes: self.outbound_queue_bytes,
            slow_consumer_timeout: self.slow_consumer_timeout,
            write_timeout: self.write_timeout,
            ws_rate_per_sec: self.ws_rate,
            ws_rate_burst: self.ws_burst,
            http_rate_per_sec: self.http_rate,
            http_rate_burst: self.http_burst,
            max_connections: self.max_connections,
        }
    }
}

impl ServeArgs {
    /// The server configuration, with dev-mode secrets filled in. Returns the
    /// generated operator key, if one was generated, so it can be printed once.
    pub fn to_config(&self) -> (ServerConfig, Option<String>) {
        let generated_key = self
            .operator_key
            .is_none()
            .then(realtime::config::random_secret);
        let operator_key = self
            .operator_key
            .clone()
            .or(generated_key.clone())
            .unwrap_or_default();
        let token_secret = match &self.token_secret {
            Some(s) if !s.is_empty() => s.clone().into_bytes(),
            _ => {
                tracing::warn!(
                    "ACORN_TOKEN_SECRET is not set: using a random secret; tokens won't survive a restart"
                );
                realtime::config::random_secret().into_bytes()
            }
        };
        let config = ServerConfig {
            listen: self.listen,
            operator_key,
            token_secret,
            limits: self.limits.to_limits(),
            shutdown_grace: self.shutdown_grace,
        };
        (config, generated_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn mint_parses_repeated_perms_and_ttl() {
        let cli = Cli::try_parse_from([
            "acorn",
            "token",
            "mint",
            "--sub",
            "svc",
            "--perm",
            "subscribeonly:c:t",
            "--perm",
            "publishonly:*:match.*",
            "--ttl",
            "2h",
            "--token-secret",
            "s",
        ])
        .unwrap();
        let Command::Token(TokenCommand::Mint(m)) = cli.command else {
            panic!()
        };
        assert_eq!(m.perms.len(), 2);
        assert_eq!(m.ttl, Duration::from_secs(7200));
    }

    #[test]
    fn refuses_a_bad_perm() {
        assert!(Cli::try_parse_from([
            "acorn",
            "token",
            "mint",
            "--sub",
            "s",
            "--perm",
            "root:c:t",
            "--token-secret",
            "s"
        ])
        .is_err());
    }

    #[test]
    fn serve_defaults_match_the_protocol() {
        let cli = Cli::try_parse_from([
            "acorn",
            "serve",
            "--operator-key",
            "k",
            "--token-secret",
            "s",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!()
        };
        let (config, generated) = s.to_config();
        assert!(generated.is_none());
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.limits.max_value_bytes, 64 * 1024);
        assert_eq!(config.limits.max_subscriptions, 256);
        assert_eq!(config.limits.history_ttl, Duration::from_secs(60));
    }
}
