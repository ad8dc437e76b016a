//! Match hosting: every match is one task that owns its `sim::Match`, ticks it
//! at its rate, reads player inputs from topics and publishes the state to its
//! topic — through the same hub as any client, via an in-process
//! [`LocalClient`]. HTTP handlers talk to a match only through its command
//! channel, so a tick is never contended by a lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use realtime::local::LocalClient;
use realtime::names::TopicKey;
use realtime::outbox::OutboxLimits;
use realtime::protocol::{ServerMessage, Value};
use realtime::server::App;
use realtime::token::{unix_now, Permission, Role};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use crate::sim::{self, Match, MatchConfig, PlayerId};
use crate::store::{GameStore, MatchRecord, MatchResults};

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

/// The store's form of a finished match.
fn results_of(id: &str, r: &sim::MatchResults, ended_at: u64) -> MatchResults {
    MatchResults {
        id: id.to_owned(),
        map: r.map.clone(),
        ended_at,
        winner: r.winner,
        teams: r
            .teams
            .iter()
            .map(|t| crate::store::TeamResult {
                team: t.team,
                score: t.score,
            })
            .collect(),
        players: r
            .players
            .iter()
            .map(|p| crate::store::PlayerResult {
                player_id: p.id.0,
                name: p.name.clone(),
                team: p.team,
                score: p.score,
            })
            .collect(),
    }
}

struct Player {
    input_topic: TopicKey,
    last_input: Instant,
    connected: bool,
}

/// The task that runs one match.
struct MatchTask {
    host: Arc<MatchHost>,
    id: String,
    game: Match,
    view: Arc<Mutex<MatchView>>,
    client: LocalClient,
    state_topic: TopicKey,
    players: HashMap<u16, Player>,
    map: String,
    duration: Duration,
    created_at: u64,
}

impl MatchTask {
    fn new(
        host: Arc<MatchHost>,
        id: String,
        game: Match,
        view: Arc<Mutex<MatchView>>,
        duration: Duration,
    ) -> Result<Self, GameError> {
        let limits = &host.app.config.limits;
        let client = LocalClient::new(
            host.app.hub.clone(),
            "acorn-game",
            OutboxLimits {
                queue_bytes: limits.outbound_queue_bytes,
                slow_timeout: limits.slow_consumer_timeout,
                max_frame_bytes: 64 * 1024,
            },
        );
        let state_topic = TopicKey::new(&host.settings.cache, &host.topic(&id, "state"))
            .map_err(|e| GameError::BadRequest(e.to_string()))?;
        let (created_at, map) = {
            let v = view.lock();
            (v.record.created_at, v.record.map.clone())
        };
        Ok(Self {
            host,
            id,
            game,
            view,
            client,
            state_topic,
            players: HashMap::new(),
            map,
            duration,
            created_at,
        })
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let hz = self.game.tick_hz().clamp(1, 60);
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(hz)));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut ended_at: Option<Instant> = None;
        let mut tick: u64 = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                cmd = commands.recv() => {
                    match cmd {
                        Some(cmd) => self.handle(cmd).await,
                        None => break,
                    }
                    continue;
                }
            }
            tick += 1;
            self.take_inputs();
            let out = self.game.tick();
            // On keyframe ticks the keyframe stands in for the delta.
            self.publish(out.message().clone()).await;
            if let Some(keyframe) = &out.keyframe {
                let _ = self
                    .host
                    .store
                    .put_snapshot(&self.id, u64::from(out.tick), keyframe.clone())
                    .await;
            }
            if tick.is_multiple_of(u64::from(hz.div_ceil(4))) || out.phase_changed {
                self.refresh_view().await;
            }
            if out.phase == sim::Phase::Ended {
                let at = *ended_at.get_or_insert_with(Instant::now);
                if out.phase_changed {
                    self.record_results().await;
                }
                if at.elapsed() >= self.host.settings.ended_linger {
                    break;
                }
            }
        }
        self.host.forget(&self.id);
        let _ = self.host.store.remove_match(&self.id).await;
        tracing::info!(match_id = %self.id, "match closed");
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Join { name, team, reply } => {
                let result = self.join(&name, team).await;
                let _ = reply.send(result);
                self.refresh_view().await;
            }
            Command::End { reply } => {
                if self.game.phase() != sim::Phase::Ended {
                    self.game.end_now();
                    let out = self.game.tick();
                    self.publish(out.message().clone()).await;
                    self.record_results().await;
                }
                self.refresh_view().await;
                let _ = reply.send(());
            }
        }
    }

    async fn join(&mut self, name: &str, team: Option<u8>) -> Result<PlayerId, GameError> {
        let player = self.game.add_player(name, team).map_err(|e| match e {
            sim::JoinError::Full | sim::JoinError::Ended => GameError::Conflict(e.to_string()),
            other => GameError::BadRequest(other.to_string()),
        })?;
        let topic = TopicKey::new(
            &self.host.settings.cache,
            &self.host.topic(&self.id, &format!("input.{}", player.0)),
        )
        .map_err(|e| GameError::BadRequest(e.to_string()))?;
        if let Err(e) = self.client.subscribe(topic.clone()).await {
            let _ = self.game.remove_player(player);
            return Err(GameError::Unavailable(e.to_string()));
        }
        self.players.insert(
            player.0,
            Player {
                input_topic: topic,
                last_input: Instant::now(),
                connected: true,
            },
        );
        Ok(player)
    }

    /// Feeds every input that arrived since the last tick to the simulation,
    /// and tracks who is still sending.
    fn take_inputs(&mut self) {
        let now = Instant::now();
        for msg in self.client.drain() {
            let ServerMessage::Item { topic, value, .. } = msg else {
                continue;
            };
            let Some(id) = topic
                .rsplit_once(".input.")
                .and_then(|(_, p)| p.parse::<u16>().ok())
            else {
                continue;
            };
            let Some(player) = self.players.get_mut(&id) else {
                continue;
            };
            player.last_input = now;
            if !player.connected {
                player.connected = true;
                let _ = self.game.set_connected(PlayerId(id), true);
            }
            // Rejections are counted by the simulation; nothing else to do.
            let _ = self.game.push_input(PlayerId(id), value.as_bytes());
        }
        let idle = self.host.settings.idle_timeout;
        for (id, player) in &mut self.players {
            if player.connected && now.duration_since(player.last_input) >= idle {
                player.connected = false;
                let _ = self.game.set_connected(PlayerId(*id), false);
            }
        }
    }

    /// Stops listening to players the simulation removed (grace ran out).
    fn forget_departed(&mut self, summary: &sim::MatchSummary) {
        let gone: Vec<u16> = self
            .players
            .keys()
            .copied()
            .filter(|id| !summary.players.iter().any(|p| p.id.0 == *id))
            .collect();
        for id in gone {
            if let Some(p) = self.players.remove(&id) {
                self.client.unsubscribe(&p.input_topic);
            }
        }
    }

    async fn publish(&self, state: Bytes) {
        if let Err(e) = self
            .client
            .publish(&self.state_topic, &Value::Binary(state))
            .await
        {
            tracing::warn!(match_id = %self.id, "cannot publish state: {e}");
        }
    }

    async fn refresh_view(&mut self) {
        let mut summary = self.game.summary();
        self.forget_departed(&summary);
        summary.map = self.map.clone();
        let record = record_of(&self.id, &summary, self.duration, self.created_at);
        let _ = self.host.store.put_match(&record).await;
        let mut view = self.view.lock();
        view.record = record;
        view.summary = summary;
    }

    async fn record_results(&mut self) {
        let Some(results) = self.game.results() else {
            return;
        };
        let results = results_of(&self.id, results, unix_now());
        if let Err(e) = self.host.store.put_results(&results).await {
            tracing::warn!(match_id = %self.id, "cannot store results: {e}");
        }
        tracing::info!(match_id = %self.id, winner = ?results.winner, "match ended");
    }
}
