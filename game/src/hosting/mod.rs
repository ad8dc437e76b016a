//! Match hosting: every match is one task that owns its `sim::Match`, ticks it
//! at its rate, reads player inputs from topics and publishes the state to its
//! topic — through the same hub as any client, via an in-process
//! [`LocalClient`]. HTTP handlers talk to a match only through its command
//! channel, so a tick is never contended by a lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use realtime::server::App;
use realtime::token::{unix_now, Permission, Role};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::sim::{self, Match, MatchConfig, PlayerId};
use crate::store::{GameStore, MatchRecord, MatchResults};

mod task;
use task::MatchTask;

/// Node-wide game settings.
#[derive(Debug, Clone)]
pub struct GameSettings {
    /// The cache all match topics live in.
    pub cache: String,
    /// A player with no input for this long counts as disconnected (its
    /// squirrel stays for the match's grace period).
    pub idle_timeout: Duration,
    /// How long an ended match stays listed with its results.
    pub ended_linger: Duration,
    /// Most matches hosted at once on this node.
    pub max_matches: usize,
}

impl Default for GameSettings {
    fn default() -> Self {
        Self {
            cache: "acorn".into(),
            idle_timeout: Duration::from_secs(3),
            ended_linger: Duration::from_secs(60),
            max_matches: 1000,
        }
    }
}

/// `POST /v1/matches`.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateMatch {
    /// A built-in map's name (`GET /v1/maps`).
    #[serde(default = "default_map")]
    pub map: String,
    /// A map in the text format of `assets/maps/` (see docs/GAME.md); when
    /// given it is used instead of `map`, and `map` is the name it is listed by.
    pub map_text: Option<String>,
    pub teams: Option<u8>,
    #[serde(default = "default_max_players")]
    pub max_players: u16,
    /// Seconds of running time.
    #[serde(default = "default_duration")]
    pub duration: f64,
    #[serde(default = "default_tick_hz")]
    pub tick_hz: u32,
}

fn default_map() -> String {
    "oak-city".into()
}
fn default_max_players() -> u16 {
    16
}
fn default_duration() -> f64 {
    180.0
}
fn default_tick_hz() -> u32 {
    20
}

/// `POST /v1/matches/{id}/join`.
#[derive(Debug, Clone, Deserialize)]
pub struct JoinRequest {
    pub name: String,
    pub team: Option<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JoinReply {
    pub player_id: u16,
    pub token: String,
    pub cache: String,
    pub state_topic: String,
    pub input_topic: String,
    pub chat_topic: String,
    #[serde(rename = "match")]
    pub match_: MatchRecord,
}

/// A match's details: the record plus teams and players.
#[derive(Debug, Clone, Serialize)]
pub struct MatchDetails {
    #[serde(flatten)]
    pub record: MatchRecord,
    pub cache: String,
    pub state_topic: String,
    pub chat_topic: String,
    pub summary: sim::MatchSummary,
    pub results: Option<MatchResults>,
}

#[derive(Debug, thiserror::Error)]
pub enum GameError {
    #[error("no match with id {0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<crate::store::StoreError> for GameError {
    fn from(e: crate::store::StoreError) -> Self {
        GameError::Unavailable(e.to_string())
    }
}

enum Command {
    Join {
        name: String,
        team: Option<u8>,
        reply: oneshot::Sender<Result<PlayerId, GameError>>,
    },
    End {
        reply: oneshot::Sender<()>,
    },
}

struct MatchHandle {
    commands: mpsc::Sender<Command>,
    /// Refreshed by the match task a few times per second.
    view: Arc<Mutex<MatchView>>,
}

#[derive(Clone)]
struct MatchView {
    record: MatchRecord,
    summary: sim::MatchSummary,
    /// The static match info message (map grid, rule numbers).
    info: Bytes,
}

pub struct MatchHost {
    app: Arc<App>,
    store: Arc<dyn GameStore>,
    settings: GameSettings,
    matches: Mutex<HashMap<String, MatchHandle>>,
}

impl MatchHost {
    pub fn new(app: Arc<App>, store: Arc<dyn GameStore>, settings: GameSettings) -> Arc<Self> {
        Arc::new(Self {
            app,
            store,
            settings,
            matches: Mutex::new(HashMap::new()),
        })
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    pub fn store(&self) -> &Arc<dyn GameStore> {
        &self.store
    }

    fn topic(&self, id: &str, suffix: &str) -> String {
        format!("match.{id}.{suffix}")
    }

    /// Creates a match in the lobby and starts its task.
    pub async fn create(self: &Arc<Self>, req: CreateMatch) -> Result<MatchRecord, GameError> {
        if self.matches.lock().len() >= self.settings.max_matches {
            return Err(GameError::Unavailable(format!(
                "this node hosts at most {} matches",
                self.settings.max_matches
            )));
        }
        if !(1..=60).contains(&req.tick_hz) {
            return Err(GameError::BadRequest("`tick_hz` must be 1-60".into()));
        }
        if !(req.duration.is_finite() && req.duration >= 1.0 && req.duration <= 24.0 * 3600.0) {
            return Err(GameError::BadRequest(
                "`duration` must be 1 s to 24 h".into(),
            ));
        }
        let map = match &req.map_text {
            Some(text) => {
                if text.len() > 64 * 1024 {
                    return Err(GameError::BadRequest("`map_text` is over 64 KiB".into()));
                }
                sim::Map::parse(text).map_err(|e| GameError::BadRequest(format!("bad map: {e}")))?
            }
            None => sim::maps::builtin(&req.map).ok_or_else(|| {
                GameError::BadRequest(format!("unknown map `{}` (see GET /v1/maps)", req.map))
            })?,
        };
        let id = new_match_id();
        let mut config = MatchConfig::new(map);
        config.teams = req.teams;
        config.max_players = req.max_players;
        config.duration = Duration::from_secs_f64(req.duration);
        config.tick_hz = req.tick_hz;
        config.seed = rand::random();
        let duration = config.duration;
        let game = Match::new(config).map_err(|e| GameError::BadRequest(e.to_string()))?;
        let mut summary = game.summary();
        summary.map = req.map.clone();
        let record = record_of(&id, &summary, duration, unix_now());
        let info = game.info();
        self.store.put_match(&record).await?;
        let (tx, rx) = mpsc::channel(64);
        let view = Arc::new(Mutex::new(MatchView {
            record: record.clone(),
            summary,
            info,
        }));
        self.matches.lock().insert(
            id.clone(),
            MatchHandle {
                commands: tx,
                view: view.clone(),
            },
        );
        let task = MatchTask::new(self.clone(), id.clone(), game, view, duration)?;
        tokio::spawn(task.run(rx));
        tracing::info!(match_id = %id, map = %record.map, "match created");
        Ok(record)
    }

    /// The static match info message (MessagePack; docs/GAME.md, "Match info").
    pub fn info(&self, id: &str) -> Result<Bytes, GameError> {
        self.matches
            .lock()
            .get(id)
            .map(|h| h.view.lock().info.clone())
            .ok_or_else(|| GameError::NotFound(id.to_owned()))
    }

    pub async fn list(&self) -> Result<Vec<MatchRecord>, GameError> {
        Ok(self.store.list_matches().await?)
    }

    pub async fn details(&self, id: &str) -> Result<MatchDetails, GameError> {
        let view = self
            .matches
            .lock()
            .get(id)
            .map(|h| h.view.lock().clone())
            .ok_or_else(|| GameError::NotFound(id.to_owned()))?;
        Ok(MatchDetails {
            cache: self.settings.cache.clone(),
            state_topic: self.topic(id, "state"),
            chat_topic: self.topic(id, "chat"),
            results: self.store.results(id).await?,
            record: view.record,
            summary: view.summary,
        })
    }

    /// Adds a player and mints its token: subscribe-only on the state topic,
    /// publish-subscribe on the chat topic, publish-only on its own input topic.
    pub async fn join(&self, id: &str, req: JoinRequest) -> Result<JoinReply, GameError> {
        let name = req.name.trim().to_owned();
        let max = sim::params::NAME_MAX_CHARS;
        if name.is_empty() || name.chars().count() > max || name.chars().any(char::is_control) {
            return Err(GameError::BadRequest(format!(
                "`name` must be 1-{max} printable characters"
            )));
        }
        let (commands, view) = self.handle(id)?;
        let (reply, rx) = oneshot::channel();
        commands
            .send(Command::Join {
                name,
                team: req.team,
                reply,
            })
            .await
            .map_err(|_| GameError::Conflict("the match has ended".into()))?;
        let player = rx
            .await
            .map_err(|_| GameError::Conflict("the match has ended".into()))??;
        let cache = self.settings.cache.clone();
        let state_topic = self.topic(id, "state");
        let chat_topic = self.topic(id, "chat");
        let input_topic = self.topic(id, &format!("input.{}", player.0));
        let record = view.lock().record.clone();
        let perm = |role, topic: &str| Permission {
            role,
            cache: cache.clone(),
            topic: topic.to_owned(),
        };
        let ttl = Duration::from_secs_f64(record.time_left.max(0.0)) + Duration::from_secs(15 * 60);
        let (token, _) = self
            .app
            .tokens
            .mint(
                &format!("player.{}@{id}", player.0),
                ttl,
                vec![
                    perm(Role::SubscribeOnly, &state_topic),
                    perm(Role::PublishSubscribe, &chat_topic),
                    perm(Role::PublishOnly, &input_topic),
                ],
            )
            .map_err(|e| GameError::Unavailable(e.to_string()))?;
        Ok(JoinReply {
            player_id: player.0,
            token,
            cache,
            state_topic,
            input_topic,
            chat_topic,
            match_: record,
        })
    }

    /// Ends a match now; it stays listed (ended, with results) for a while.
    pub async fn end(&self, id: &str) -> Result<MatchRecord, GameError> {
        let (commands, view) = self.handle(id)?;
        let (reply, rx) = oneshot::channel();
        if commands.send(Command::End { reply }).await.is_ok() {
            let _ = rx.await;
        }
        let record = view.lock().record.clone();
        Ok(record)
    }

    /// The match's command channel and view.
    fn handle(
        &self,
        id: &str,
    ) -> Result<(mpsc::Sender<Command>, Arc<Mutex<MatchView>>), GameError> {
        let matches = self.matches.lock();
        let h = matches
            .get(id)
            .ok_or_else(|| GameError::NotFound(id.to_owned()))?;
        Ok((h.commands.clone(), h.view.clone()))
    }

    fn forget(&self, id: &str) {
        self.matches.lock().remove(id);
    }
}

fn new_match_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    (0..8)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn phase_name(phase: sim::Phase) -> &'static str {
    match phase {
        sim::Phase::Lobby => "lobby",
        sim::Phase::Countdown => "countdown",
        sim::Phase::Running => "running",
        sim::Phase::Ended => "ended",
    }
}

fn record_of(id: &str, s: &sim::MatchSummary, duration: Duration, created_at: u64) -> MatchRecord {
    let phase_left = s.time_left_ms as f64 / 1000.0;
    let time_left = match s.phase {
        sim::Phase::Lobby => duration.as_secs_f64(),
        sim::Phase::Countdown => phase_left + duration.as_secs_f64(),
        sim::Phase::Running => phase_left,
        sim::Phase::Ended => 0.0,
    };
    MatchRecord {
        id: id.to_owned(),
        map: s.map.clone(),
        state: phase_name(s.phase).to_owned(),
        players: s.players.len() as u32,
        max_players: u32::from(s.max_players),
        teams: s.teams.len() as u8,
        time_left,
        duration: duration.as_secs_f64(),
        tick_hz: s.tick_hz,
        created_at,
    }
}
