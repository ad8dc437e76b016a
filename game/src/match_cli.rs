//! `acorn match create|list|end`: operators host matches on a running node
//! through its HTTP API, and read the answers as tables.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use serde_json::{json, Value};

#[derive(Args)]
pub struct NodeArgs {
    /// The node's HTTP base URL.
    #[arg(long, env = "ACORN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, env = "ACORN_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: Option<String>,
}

#[derive(Subcommand)]
pub enum MatchCommand {
    /// Create a match and print it.
    Create {
        #[command(flatten)]
        node: NodeArgs,
        /// A built-in map name (see `acorn match maps`) or a map file path on the node.
        #[arg(long, default_value = "oak-city")]
        map: String,
        /// Number of teams (2-4; at most the map's burrows).
        #[arg(long)]
        teams: Option<u8>,
        #[arg(long, default_value_t = 16)]
        max_players: u32,
        /// Running time, e.g. 3m.
        #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Ticks per second (1-60).
        #[arg(long, default_value_t = 20)]
        tick_hz: u32,
    },
    /// List matches.
    List {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// End a match now.
    End {
        #[command(flatten)]
        node: NodeArgs,
        id: String,
    },
}

pub async fn run(cmd: MatchCommand) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    match cmd {
        MatchCommand::Create {
            node,
            map,
            teams,
            max_players,
            duration,
            tick_hz,
        } => {
            let mut body = json!({
                "map": map,
                "max_players": max_players,
                "duration": duration.as_secs_f64(),
                "tick_hz": tick_hz,
            });
            if let Some(teams) = teams {
                body["teams"] = json!(teams);
            }
            let reply =
                send(operator(http.post(url(&node, "/v1/matches")), &node)?.json(&body)).await?;
            print_matches(std::slice::from_ref(&reply));
        }
        MatchCommand::List { node } => {
            let reply = send(http.get(url(&node, "/v1/matches"))).await?;
            let matches = reply.as_array().cloned().unwrap_or_default();
            if matches.is_empty() {
                println!("no matches");
            } else {
                print_matches(&matches);
            }
        }
        MatchCommand::End { node, id } => {
            let reply = send(operator(
                http.delete(url(&node, &format!("/v1/matches/{id}"))),
                &node,
            )?)
            .await?;
            print_matches(std::slice::from_ref(&reply));
        }
    }
    Ok(())
}

fn url(node: &NodeArgs, path: &str) -> String {
    format!("{}{path}", node.url.trim_end_matches('/'))
}

fn operator(
    req: reqwest::RequestBuilder,
    node: &NodeArgs,
) -> anyhow::Result<reqwest::RequestBuilder> {
    let key = node
        .operator_key
        .as_deref()
        .context("this needs the operator key: set ACORN_OPERATOR_KEY or pass --operator-key")?;
    Ok(req.bearer_auth(key))
}

async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await.context("cannot reach the node")?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = body["message"].as_str().unwrap_or("no message");
        let code = body["code"].as_str().unwrap_or("?");
        bail!("{status}: {code}: {msg}");
    }
    Ok(body)
}

fn print_matches(matches: &[Value]) {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(["id", "map", "state", "players", "time left"]);
    for m in matches {
        let players = format!("{}/{}", m["players"], m["max_players"]);
        let left = m["time_left"]
            .as_f64()
            .map_or("-".into(), |s| format!("{}s", s.round()));
        table.add_row([
            m["id"].as_str().unwrap_or("?").to_owned(),
            m["map"].as_str().unwrap_or("?").to_owned(),
            m["state"].as_str().unwrap_or("?").to_owned(),
            players,
            left,
        ]);
    }
    println!("{table}");
}
