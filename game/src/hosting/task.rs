//! The task that runs one match: ticks the simulation at its rate, feeds it
//! the inputs that arrived on the players' input topics, publishes each tick's
//! state message once, and keeps the host's view and the store up to date.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use realtime::local::LocalClient;
use realtime::names::TopicKey;
use realtime::outbox::OutboxLimits;
use realtime::protocol::{ServerMessage, Value};
use realtime::token::unix_now;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::{record_of, Command, GameError, MatchHost, MatchView};
use crate::sim::{self, Match, PlayerId};
use crate::store::MatchResults;

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
pub(super) struct MatchTask {
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
    pub(super) fn new(
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

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
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
