//! `acorn sub` and `acorn pub`: the topics service from a terminal, through the
//! Rust client (so `sub` reconnects and resumes by itself).

use clap::Args;
use realtime::client::{Client, Event};
use realtime::protocol::Value;

/// Where and as whom: shared by `sub` and `pub`.
#[derive(Args)]
pub struct TopicArgs {
    /// Server WebSocket URL.
    #[arg(long, env = "ACORN_URL_WS", default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, env = "ACORN_TOKEN", hide_env_values = true)]
    pub token: String,
    #[arg(long)]
    pub cache: String,
    #[arg(long)]
    pub topic: String,
}

#[derive(Args)]
pub struct SubArgs {
    #[command(flatten)]
    pub at: TopicArgs,
    /// Replay retained items after this seq first.
    #[arg(long)]
    pub resume_after: Option<u64>,
    /// Exit after this many items.
    #[arg(long)]
    pub count: Option<u64>,
}

#[derive(Args)]
pub struct PubArgs {
    #[command(flatten)]
    pub at: TopicArgs,
    /// The value, published as text.
    pub value: String,
}

pub async fn sub(args: SubArgs) -> anyhow::Result<()> {
    let TopicArgs {
        url,
        token,
        cache,
        topic,
    } = args.at;
    let client = Client::connect(&url, token).await?;
    let mut sub = match args.resume_after {
        Some(after) => client.subscribe_from(&cache, &topic, after, None).await?,
        None => client.subscribe(&cache, &topic).await?,
    };
    let mut seen = 0u64;
    while let Some(event) = sub.recv().await {
        match event {
            Event::Item { seq, value, from } => {
                let shown = match &value {
                    Value::Text(t) => t.clone(),
                    Value::Binary(b) => format!("<{} bytes>", b.len()),
                };
                println!("{cache}/{topic} #{seq} from {from}: {shown}");
                seen += 1;
                if args.count.is_some_and(|n| seen >= n) {
                    break;
                }
            }
            Event::Gap { last, next, .. } => {
                println!("{cache}/{topic} gap: items after {last} and before {next} are gone");
            }
        }
    }
    if let Some(err) = sub.end_reason() {
        anyhow::bail!("subscription ended: {err}");
    }
    Ok(())
}

pub async fn publish(args: PubArgs) -> anyhow::Result<()> {
    let at = args.at;
    let client = Client::connect(&at.url, at.token).await?;
    let seq = client.publish(&at.cache, &at.topic, args.value).await?;
    println!("{{\"seq\":{seq}}}");
    client.close().await?;
    Ok(())
}
