//! Building a match's world: the resources and the squirrel bundle.

use std::sync::Arc;

use bevy_ecs::prelude::*;

use super::components::*;
use super::events::GameEvent;
use super::input::{InputBuffer, InputStats};
use super::map::Map;
use super::net::{NetState, SentSquirrel};
use super::params::Rules;
use super::resources::*;

/// Everything a new squirrel is made of.
#[derive(Bundle)]
pub struct SquirrelBundle {
    squirrel: Squirrel,
    name: PlayerName,
    position: Position,
    intent: Intent,
    facing: Facing,
    carry: Carry,
    dash: Dash,
    stun: Stun,
    score: Score,
    presence: Presence,
    ack: InputAck,
    stats: Stats,
    sent: SentSquirrel,
}

impl SquirrelBundle {
    /// A fresh squirrel for `id` of `team` at `at`, connected since `tick`.
    pub fn new(id: PlayerId, team: u8, name: &str, at: Vec2, tick: u32) -> Self {
        SquirrelBundle {
            squirrel: Squirrel { id, team },
            name: PlayerName(name.into()),
            position: Position(at),
            intent: Intent::default(),
            facing: Facing::default(),
            carry: Carry::default(),
            dash: Dash::default(),
            stun: Stun::default(),
            score: Score::default(),
            presence: Presence {
                connected: true,
                since_tick: tick,
            },
            ack: InputAck::default(),
            stats: Stats::default(),
            sent: SentSquirrel::default(),
        }
    }
}

/// Inserts every resource the rules and encoders use.
pub fn insert_resources(
    world: &mut World,
    map: Arc<Map>,
    rules: Rules,
    max_players: u16,
    seed: u64,
) {
    let teams = rules.teams as usize;
    world.insert_resource(Acorns::new(&map));
    world.insert_resource(GameMap(map));
    world.insert_resource(Clock::default());
    world.insert_resource(TeamScores(vec![0; teams]));
    world.insert_resource(Roster {
        slots: vec![None; max_players as usize],
        team_sizes: vec![0; teams],
        ..Roster::default()
    });
    world.insert_resource(GameRng::new(seed));
    world.insert_resource(InputBuffer::new(max_players));
    world.insert_resource(InputStats::default());
    world.insert_resource(NetState::new(teams, max_players));
    world.insert_resource(rules);
    world.init_resource::<Messages<GameEvent>>();
}

/// The centre of a team's burrow tile chosen for `player`.
pub fn spawn_point(map: &Map, team: u8, player: PlayerId) -> Vec2 {
    let tiles = map.burrow_tiles(team);
    match tiles.get(player.0 as usize % tiles.len().max(1)) {
        Some(&(x, y)) => Vec2::new(x as f32 + 0.5, y as f32 + 0.5),
        None => Vec2::new(0.5, 0.5),
    }
}
