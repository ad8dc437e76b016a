//! The `acorn` binary: `serve` runs a node; `token mint` mints tokens;
//! `bench` drives load. See README.md.

mod bench;
mod cli;
mod match_cli;
mod topics_cli;

use std::io::Write;

use std::sync::Arc;

use acorn_game::api;
use acorn_game::hosting::{GameSettings, MatchHost};
use acorn_game::store::MemoryStore;
use clap::Parser;
use cli::{Cli, Command, TokenCommand};
use realtime::server::Server;
use realtime::token::TokenAuthority;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Token(TokenCommand::Mint(args)) => {
            let authority = TokenAuthority::new(args.token_secret.as_bytes())?;
            let (token, _) = authority.mint(&args.sub, args.ttl, args.perms)?;
            println!("{token}");
            Ok(())
        }
        Command::Match(cmd) => runtime.block_on(match_cli::run(cmd)),
        Command::Sub(args) => runtime.block_on(topics_cli::sub(args)),
        Command::Pub(args) => runtime.block_on(topics_cli::publish(args)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
    }
}

async fn serve(args: cli::ServeArgs) -> anyhow::Result<()> {
    let (config, generated_key) = args.to_config();
    tracing::info!(?config, "starting");
    let server = Server::bind(config).await?;
    let host = MatchHost::new(
        server.app().clone(),
        Arc::new(MemoryStore::new()),
        GameSettings::default(),
    );
    let server = server.merge(api::routes(host));
    // Signal handlers must exist before anyone can see we are up, or an early
    // SIGTERM would kill the process instead of shutting it down.
    let shutdown = shutdown_signal()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", server.local_addr())?;
    if let Some(key) = generated_key {
        writeln!(out, "operator key: {key}")?;
        tracing::warn!(
            "ACORN_OPERATOR_KEY is not set: generated the operator key printed above (dev mode)"
        );
    }
    out.flush()?;
    drop(out);
    server.run(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Registers SIGINT and SIGTERM handlers now; the future resolves on either.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
