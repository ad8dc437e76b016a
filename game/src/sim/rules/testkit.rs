//! Helpers for testing systems on a bare `World`.

use std::sync::Arc;
use std::time::Duration;

use bevy_ecs::prelude::*;
use bevy_ecs::system::RunSystemOnce;

use crate::sim::components::*;
use crate::sim::events::GameEvent;
use crate::sim::map::Map;
use crate::sim::params::Rules;
use crate::sim::resources::*;
use crate::sim::setup::{insert_resources, SquirrelBundle};

/// A 12 x 9 two-team map: burrows in the top corners, a 2 x 2 tree block in the middle.
pub const TEST_MAP: &str = "name: Test\nteams: 2\nacorns: 6\ngolden: 0\n---\n\
TTTTTTTTTTTT\n\
T11......22T\n\
T11......22T\n\
T..........T\n\
T....TT....T\n\
T....TT....T\n\
T..........T\n\
T..........T\n\
TTTTTTTTTTTT\n";

/// A world with every resource of a 20 Hz, two-team match on [`TEST_MAP`] (in the lobby).
pub fn world() -> World {
    let map = Arc::new(Map::parse(TEST_MAP).expect("test map"));
    let rules = Rules::new(
        20,
        2,
        map.acorn_cap(),
        map.golden_percent(),
        Duration::from_secs(3),
        Duration::from_secs(180),
        Duration::from_secs(10),
        None,
    );
    let mut world = World::new();
    insert_resources(&mut world, map, rules, 8, 1);
    world
}

/// The centre of tile `(x, y)`.
pub fn tile_centre(x: i32, y: i32) -> Vec2 {
    Vec2::new(x as f32 + 0.5, y as f32 + 0.5)
}

/// Spawns a squirrel for player `id` of `team` at `at` and enters it in the roster.
pub fn spawn_squirrel(world: &mut World, id: u16, team: u8, at: Vec2) -> Entity {
    let tick = world.resource::<Clock>().tick;
    let e = world
        .spawn(SquirrelBundle::new(PlayerId(id), team, "tester", at, tick))
        .id();
    let mut roster = world.resource_mut::<Roster>();
    roster.slots[id as usize] = Some(e);
    roster.team_sizes[team as usize] += 1;
    roster.ids.insert(e, PlayerId(id));
    e
}

/// Spawns an acorn on tile `(x, y)`.
pub fn spawn_acorn(world: &mut World, x: i32, y: i32, kind: AcornKind) -> Entity {
    let id = world.resource_mut::<Acorns>().alloc_id();
    let e = world
        .spawn(Acorn {
            id,
            kind,
            tile: (x as u16, y as u16),
        })
        .id();
    world.resource_mut::<Acorns>().place(x, y, e, id, kind);
    e
}

/// Sets the phase (and for `Running`, an end three minutes ahead).
pub fn set_phase(world: &mut World, phase: Phase) {
    let mut clock = world.resource_mut::<Clock>();
    clock.phase = phase;
    if phase == Phase::Running {
        clock.phase_end = clock.tick + 3600;
    }
}

/// Runs one system once (applying its commands).
pub fn run<M>(world: &mut World, system: impl IntoSystem<(), (), M>) {
    world.run_system_once(system).expect("system runs");
}

/// Every event written since the last rotation.
pub fn events(world: &mut World) -> Vec<GameEvent> {
    world
        .resource::<Messages<GameEvent>>()
        .iter_current_update_messages()
        .copied()
        .collect()
}

/// The position of an entity.
pub fn pos(world: &World, e: Entity) -> Vec2 {
    world.get::<Position>(e).expect("position").0
}
