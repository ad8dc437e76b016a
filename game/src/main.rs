//! The `acorn` binary: `serve` runs a node; `token mint` mints tokens;
//! `bench` drives load. See README.md.

mod bench;
mod cli;
mod match_cli;
mod topics_cli;

use std::io::Write;

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
    server.run(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
