//! [`Match`]: one match = one bevy_ecs `World` + one `Schedule`, driven by
//! [`Match::tick`] at a fixed rate.

use std::sync::Arc;
use std::time::Duration;

use bevy_ecs::prelude::*;
use bytes::Bytes;
use serde::Serialize;

use super::components::*;
use super::input::{self, InputBuffer, InputError, InputStats};
use super::map::Map;
use super::net::info::encode_info;
use super::net::keyframe::keyframe_now;
use super::net::NetState;
use super::params::{Rules, MAX_PLAYERS, NAME_MAX_CHARS, TICK_HZ_RANGE};
use super::resources::*;
use super::rules::build_schedule;
use super::setup::{insert_resources, spawn_point, SquirrelBundle};

/// How to set up a match. [`MatchConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct MatchConfig {
    /// The map.
    pub map: Arc<Map>,
    /// Teams in play (2..=the map's teams); `None`: all of the map's teams.
    pub teams: Option<u8>,
    /// Most players at once (1..=256). Default 16.
    pub max_players: u16,
    /// Length of the running phase. Default 3 minutes.
    pub duration: Duration,
    /// Length of the countdown. Default 3 s.
    pub countdown: Duration,
    /// How long a disconnected player keeps the squirrel. Default 30 s.
    pub grace: Duration,
    /// Ticks per second (1..=60). Default 20.
    pub tick_hz: u32,
    /// Seed of the match's random numbers (acorn spawns, scatter). Default 0.
    pub seed: u64,
    /// Start the countdown by itself once this many players are connected;
    /// `None`: only [`Match::start`] starts it. Default `Some(2)`.
    pub auto_start: Option<u16>,
    /// Acorns on the ground at most; `None`: the map's `acorns:` value.
    pub acorn_cap: Option<u16>,
}

impl MatchConfig {
    /// The default configuration on a map.
    pub fn new(map: impl Into<Arc<Map>>) -> Self {
        MatchConfig {
            map: map.into(),
            teams: None,
            max_players: 16,
            duration: Duration::from_secs(180),
            countdown: Duration::from_secs(3),
            grace: Duration::from_secs(30),
            tick_hz: 20,
            seed: 0,
            auto_start: Some(2),
            acorn_cap: None,
        }
    }
}

/// A configuration [`Match::new`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `tick_hz` outside 1..=60.
    #[error("tick rate {0} Hz is outside 1..=60")]
    TickRate(u32),
    /// `teams` outside 2..=the map's teams.
    #[error("{teams} teams requested; the map has burrows for 2 to {map}")]
    Teams {
        /// Requested.
        teams: u8,
        /// The map's.
        map: u8,
    },
    /// `max_players` outside 1..=256.
    #[error("max players {0} is outside 1..=256")]
    MaxPlayers(u16),
    /// `acorn_cap` of 0 or more than half the map's reachable grass tiles.
    #[error("acorn cap {0} is 0 or more than half the map's free tiles")]
    AcornCap(u16),
    /// The schedule could not be built (a bug, not a configuration problem).
    #[error("internal error building the schedule: {0}")]
    Internal(String),
}

/// Why [`Match::add_player`] refused a player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinError {
    /// `max_players` are in the match.
    #[error("the match is full")]
    Full,
    /// The match has ended.
    #[error("the match has ended")]
    Ended,
    /// The team index is not in play.
    #[error("no such team")]
    NoSuchTeam,
    /// The team has its share of `max_players` already.
    #[error("that team is full")]
    TeamFull,
    /// Empty, longer than 16 characters, or with control characters.
    #[error("the name must be 1 to 16 characters without control characters")]
    BadName,
}

/// A player id that is not (or no longer) in the match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no such player in this match")]
pub struct UnknownPlayer;

/// What one tick produced.
#[derive(Debug, Clone)]
pub struct TickOutput {
    /// The tick's number (the first tick is 1).
    pub tick: u32,
    /// Phase after the tick.
    pub phase: Phase,
    /// The phase changed during this tick.
    pub phase_changed: bool,
    /// The delta of this tick (always present; small when little changed).
    pub delta: Bytes,
    /// The keyframe of this tick, once per second (tick 1, 1 + hz, ...). It
    /// carries the same tick, events and acks as the delta, so it can be
    /// published instead of it.
    pub keyframe: Option<Bytes>,
    /// Entities in the delta (added, removed or changed).
    pub changed: u32,
}

impl TickOutput {
    /// The one message to publish on the state topic for this tick: the
    /// keyframe when there is one, otherwise the delta.
    pub fn message(&self) -> &Bytes {
        self.keyframe.as_ref().unwrap_or(&self.delta)
    }
}

/// A player in [`MatchSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlayerSummary {
    /// Player id (the squirrel's wire id).
    pub id: PlayerId,
    /// Display name.
    pub name: String,
    /// Team index.
    pub team: u8,
    /// Points delivered.
    pub score: u32,
    /// Acorns carried now.
    pub carrying: u8,
    /// Connected now.
    pub connected: bool,
    /// Inputs of this player rejected so far.
    pub rejected_inputs: u32,
}

/// A team in [`MatchSummary`] and [`MatchResults`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TeamSummary {
    /// Team index.
    pub team: u8,
    /// Team score.
    pub score: u32,
    /// Players in the team.
    pub players: u16,
}

/// A snapshot of a match for listings and HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchSummary {
    /// Map name.
    pub map: String,
    /// Current phase.
    pub phase: Phase,
    /// Last tick run.
    pub tick: u32,
    /// Ticks per second.
    pub tick_hz: u32,
    /// Time left in the current phase (countdown or running), in ms; 0 otherwise.
    pub time_left_ms: u64,
    /// Most players.
    pub max_players: u16,
    /// Players, by id.
    pub players: Vec<PlayerSummary>,
    /// Teams, by index.
    pub teams: Vec<TeamSummary>,
    /// Winner once ended (`None` on a draw or before the end).
    pub winner: Option<u8>,
}

/// A player in [`MatchResults`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlayerResult {
    /// Player id.
    pub id: PlayerId,
    /// Display name.
    pub name: String,
    /// Team index.
    pub team: u8,
    /// Points delivered.
    pub score: u32,
    /// Acorns delivered.
    pub delivered: u32,
    /// Enemies knocked out.
    pub knockouts: u32,
    /// Times knocked out.
    pub knocked_out: u32,
}

/// Final results, fixed at the tick the match ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchResults {
    /// Map name.
    pub map: String,
    /// Tick the match ended on.
    pub ended_tick: u32,
    /// Winning team, `None` on a draw.
    pub winner: Option<u8>,
    /// Teams, by index.
    pub teams: Vec<TeamSummary>,
    /// Players still in the match at the end, best score first.
    pub players: Vec<PlayerResult>,
}

/// One match: a bevy_ecs `World` holding the state and a `Schedule` of the
/// rules. Not thread-safe by itself (`Send`, not shared): call everything from
/// the task that owns it. Nothing here blocks or panics on client input.
pub struct Match {
    world: World,
    schedule: Schedule,
    info: Bytes,
    map_name: String,
    max_players: u16,
    teams: u8,
    results: Option<MatchResults>,
}

impl std::fmt::Debug for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Match")
            .field("map", &self.map_name)
            .field("phase", &self.phase())
            .field("tick", &self.tick_count())
            .finish_non_exhaustive()
    }
}

impl Match {
    /// Sets up a match in the lobby.
    pub fn new(config: MatchConfig) -> Result<Match, ConfigError> {
        let map = config.map;
        if !TICK_HZ_RANGE.contains(&config.tick_hz) {
            return Err(ConfigError::TickRate(config.tick_hz));
        }
        let teams = config.teams.unwrap_or(map.teams());
        if teams < 2 || teams > map.teams() {
            return Err(ConfigError::Teams {
                teams,
                map: map.teams(),
            });
        }
        if config.max_players == 0 || config.max_players > MAX_PLAYERS {
            return Err(ConfigError::MaxPlayers(config.max_players));
        }
        let cap = config.acorn_cap.unwrap_or(map.acorn_cap());
        if cap == 0 || cap as usize * 2 > map.spawnable().len() {
            return Err(ConfigError::AcornCap(cap));
        }
        let rules = Rules::new(
            config.tick_hz,
            teams,
            cap,
            map.golden_percent(),
            config.countdown,
            config.duration,
            config.grace,
            config.auto_start,
        );
        let info = encode_info(&map, &rules, config.max_players);
        let map_name = map.name().to_string();
        let mut world = World::new();
        insert_resources(&mut world, map, rules, config.max_players, config.seed);
        let mut schedule = build_schedule();
        schedule
            .initialize(&mut world)
            .map_err(|e| ConfigError::Internal(format!("{e:?}")))?;
        Ok(Match {
            world,
            schedule,
            info,
            map_name,
            max_players: config.max_players,
            teams,
            results: None,
        })
    }

    /// Adds a player to `team`, or with `None` to the smallest team (lowest
    /// index on a tie). Allowed in every phase but `Ended`; the squirrel starts
    /// in its team's burrow and appears in the next tick's delta.
    pub fn add_player(&mut self, name: &str, team: Option<u8>) -> Result<PlayerId, JoinError> {
        let name = clean_name(name).ok_or(JoinError::BadName)?;
        let (tick, phase) = {
            let c = self.world.resource::<Clock>();
            (c.tick, c.phase)
        };
        if phase == Phase::Ended {
            return Err(JoinError::Ended);
        }
        let roster = self.world.resource::<Roster>();
        let slot = roster
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(JoinError::Full)?;
        let per_team = self.max_players.div_ceil(self.teams as u16);
        let team = match team {
            Some(t) if t >= self.teams => return Err(JoinError::NoSuchTeam),
            Some(t) if roster.team_sizes[t as usize] >= per_team => {
                return Err(JoinError::TeamFull)
            }
            Some(t) => t,
            None => (0..self.teams)
                .min_by_key(|&t| (roster.team_sizes[t as usize], t))
                .unwrap_or(0),
        };
        let id = PlayerId(slot as u16);
        let at = spawn_point(&self.world.resource::<GameMap>().0, team, id);
        let entity = self
            .world
            .spawn(SquirrelBundle::new(id, team, &name, at, tick))
            .id();
        let mut roster = self.world.resource_mut::<Roster>();
        roster.slots[slot] = Some(entity);
        roster.team_sizes[team as usize] += 1;
        roster.ids.insert(entity, id);
        self.world.resource_mut::<InputBuffer>().reset(id);
        Ok(id)
    }

    /// Marks a player connected or disconnected. A disconnected player's
    /// squirrel stops and stays for the grace period; reconnecting within it
    /// gives it back as it was.
    pub fn set_connected(
        &mut self,
        player: PlayerId,
        connected: bool,
    ) -> Result<(), UnknownPlayer> {
        let entity = self.live_entity(player).ok_or(UnknownPlayer)?;
        let tick = self.world.resource::<Clock>().tick;
        let mut e = self.world.entity_mut(entity);
        if let Some(mut presence) = e.get_mut::<Presence>() {
            if presence.connected != connected {
                *presence = Presence {
                    connected,
                    since_tick: tick,
                };
            }
        }
        if !connected {
            if let Some(mut intent) = e.get_mut::<Intent>() {
                intent.set_if_neq(Intent::default());
            }
        }
        Ok(())
    }

    /// Removes a player (they left). The squirrel is removed on the next tick,
    /// dropping its acorns; its id is free for new players after that tick.
    pub fn remove_player(&mut self, player: PlayerId) -> Result<(), UnknownPlayer> {
        let entity = self.live_entity(player).ok_or(UnknownPlayer)?;
        self.world.entity_mut(entity).insert(Leaving);
        Ok(())
    }

    /// Takes one input message of `player` (see [`input`] for the format). The
    /// latest accepted input is applied at the next tick. Every outcome is
    /// counted in [`Match::input_stats`].
    pub fn push_input(&mut self, player: PlayerId, bytes: &[u8]) -> Result<(), InputError> {
        let result = self.try_input(player, bytes);
        let mut stats = self.world.resource_mut::<InputStats>();
        match result {
            Ok(()) => stats.accepted += 1,
            Err(e) => {
                stats.reject(e);
                if e != InputError::UnknownPlayer {
                    self.world
                        .resource_mut::<InputBuffer>()
                        .note_rejection(player);
                }
            }
        }
        result
    }

    fn try_input(&mut self, player: PlayerId, bytes: &[u8]) -> Result<(), InputError> {
        if self.phase() == Phase::Ended {
            return Err(InputError::MatchEnded);
        }
        let entity = self.live_entity(player).ok_or(InputError::UnknownPlayer)?;
        let mut buffer = self.world.resource_mut::<InputBuffer>();
        buffer.admit(player)?;
        let input = input::decode(bytes)?;
        let charges = self.world.get::<Dash>(entity).map_or(0, |d| d.charges);
        self.world
            .resource_mut::<InputBuffer>()
            .accept(player, input, charges)
    }

    /// Leaves the lobby on the next tick (countdown, then running). Returns
    /// false if the match is not in the lobby.
    pub fn start(&mut self) -> bool {
        let mut clock = self.world.resource_mut::<Clock>();
        if clock.phase != Phase::Lobby {
            return false;
        }
        clock.start_requested = true;
        true
    }

    /// Ends the match on the next tick, from any phase (an operator's call):
    /// scores are final and the winner is decided as at the end of time.
    pub fn end_now(&mut self) {
        self.world.resource_mut::<Clock>().end_requested = true;
    }

    /// Runs one tick of every rule and encodes its delta (and keyframe when
    /// due). Synchronous, never blocks; reuses its buffers between ticks.
    pub fn tick(&mut self) -> TickOutput {
        let before = {
            let mut clock = self.world.resource_mut::<Clock>();
            clock.tick = clock.tick.wrapping_add(1);
            clock.phase
        };
        self.schedule.run(&mut self.world);
        self.world.clear_trackers();
        let (tick, phase) = {
            let c = self.world.resource::<Clock>();
            (c.tick, c.phase)
        };
        let mut net = self.world.resource_mut::<NetState>();
        let delta = net.delta.take().unwrap_or_default();
        let keyframe = net.keyframe.take();
        let changed = net.changed;
        if phase == Phase::Ended && self.results.is_none() {
            self.results = Some(self.build_results());
        }
        TickOutput {
            tick,
            phase,
            phase_changed: phase != before,
            delta,
            keyframe,
            changed,
        }
    }

    /// A keyframe of the state as of the last tick (for a client that joins
    /// between two keyframes). Players added since the last tick are not in it.
    pub fn keyframe(&mut self) -> Bytes {
        self.world
            .run_system_cached(keyframe_now)
            .unwrap_or_default()
    }

    /// The static match info message (map grid, tick rate, rule numbers).
    pub fn info(&self) -> Bytes {
        self.info.clone()
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.world.resource::<Clock>().phase
    }

    /// Number of the last tick run (0 before the first).
    pub fn tick_count(&self) -> u32 {
        self.world.resource::<Clock>().tick
    }

    /// Ticks per second.
    pub fn tick_hz(&self) -> u32 {
        self.world.resource::<Rules>().hz
    }

    /// The tick interval.
    pub fn tick_interval(&self) -> Duration {
        Duration::from_secs(1) / self.tick_hz()
    }

    /// Players in the match (including disconnected ones within grace).
    pub fn player_count(&self) -> usize {
        self.world.resource::<Roster>().len()
    }

    /// Most players at once.
    pub fn max_players(&self) -> u16 {
        self.max_players
    }

    /// Input counters (accepted, and rejected by reason).
    pub fn input_stats(&self) -> InputStats {
        self.world.resource::<InputStats>().clone()
    }

    /// A snapshot of the match.
    pub fn summary(&self) -> MatchSummary {
        let clock = self.world.resource::<Clock>();
        let rules = self.world.resource::<Rules>();
        let time_left_ticks = match clock.phase {
            Phase::Countdown | Phase::Running => clock.phase_end.saturating_sub(clock.tick),
            Phase::Lobby | Phase::Ended => 0,
        };
        let buffer = self.world.resource::<InputBuffer>();
        let players = self
            .players()
            .map(|(sq, e)| PlayerSummary {
                id: sq.id,
                name: e
                    .get::<PlayerName>()
                    .map_or(String::new(), |n| n.0.to_string()),
                team: sq.team,
                score: e.get::<Score>().map_or(0, |s| s.0),
                carrying: e.get::<Carry>().map_or(0, |c| c.count()),
                connected: e.get::<Presence>().is_some_and(|p| p.connected),
                rejected_inputs: buffer.slot(sq.id).map_or(0, |s| s.rejected),
            })
            .collect();
        MatchSummary {
            map: self.map_name.clone(),
            phase: clock.phase,
            tick: clock.tick,
            tick_hz: rules.hz,
            time_left_ms: time_left_ticks as u64 * 1000 / rules.hz as u64,
            max_players: self.max_players,
            players,
            teams: self.team_summaries(),
            winner: clock.winner,
        }
    }

    /// Final results once the match has ended (`None` before).
    pub fn results(&self) -> Option<&MatchResults> {
        self.results.as_ref()
    }

    /// Read access to the ECS world (for inspection and tests).
    pub fn world(&self) -> &World {
        &self.world
    }

    fn live_entity(&self, player: PlayerId) -> Option<Entity> {
        let entity = self.world.resource::<Roster>().entity(player)?;
        let e = self.world.get_entity(entity).ok()?;
        (!e.contains::<Leaving>()).then_some(entity)
    }

    fn players(&self) -> impl Iterator<Item = (Squirrel, EntityRef<'_>)> + '_ {
        let roster = self.world.resource::<Roster>();
        roster.slots.iter().flatten().filter_map(|&entity| {
            let e = self.world.get_entity(entity).ok()?;
            Some((*e.get::<Squirrel>()?, e))
        })
    }

    fn team_summaries(&self) -> Vec<TeamSummary> {
        let scores = self.world.resource::<TeamScores>();
        let roster = self.world.resource::<Roster>();
        (0..self.teams)
            .map(|t| TeamSummary {
                team: t,
                score: scores.0.get(t as usize).copied().unwrap_or(0),
                players: roster.team_sizes.get(t as usize).copied().unwrap_or(0),
            })
            .collect()
    }

    fn build_results(&self) -> MatchResults {
        let clock = self.world.resource::<Clock>();
        let mut players: Vec<PlayerResult> = self
            .players()
            .map(|(sq, e)| {
                let stats = e.get::<Stats>().copied().unwrap_or_default();
                PlayerResult {
                    id: sq.id,
                    name: e
                        .get::<PlayerName>()
                        .map_or(String::new(), |n| n.0.to_string()),
                    team: sq.team,
                    score: e.get::<Score>().map_or(0, |s| s.0),
                    delivered: stats.delivered,
                    knockouts: stats.knockouts,
                    knocked_out: stats.knocked_out,
                }
            })
            .collect();
        players.sort_by(|a, b| b.score.cmp(&a.score).then(a.id.cmp(&b.id)));
        MatchResults {
            map: self.map_name.clone(),
            ended_tick: clock.tick,
            winner: clock.winner,
            teams: self.team_summaries(),
            players,
        }
    }
}

/// Trims a name and checks it: 1..=16 characters, no control characters.
fn clean_name(name: &str) -> Option<String> {
    let name = name.trim();
    let n = name.chars().count();
    (n > 0 && n <= NAME_MAX_CHARS && !name.chars().any(char::is_control)).then(|| name.to_string())
}
