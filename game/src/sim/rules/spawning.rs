//! Spawning: acorns appear on free grass tiles, up to the cap.

use bevy_ecs::prelude::*;

use crate::sim::components::AcornKind;
use crate::sim::params::Rules;
use crate::sim::resources::{Acorns, Clock, GameMap, GameRng};

use super::scatter::spawn_acorn;
use super::TickSet;

/// Tries per spawn to find a free tile before giving up until the next spawn.
const SPAWN_TRIES: u32 = 16;

/// Adds the spawning systems.
pub fn plugin(schedule: &mut Schedule) {
    schedule.add_systems(spawn_acorns.in_set(TickSet::Spawn));
}

/// On the first running tick the field fills up to the acorn cap; after that
/// one acorn spawns every [`Rules::spawn_every`] ticks while below the cap.
/// Each lands on a random free, reachable grass tile (seeded RNG) and is
/// golden with the map's golden percentage.
pub fn spawn_acorns(
    mut commands: Commands,
    mut clock: ResMut<Clock>,
    rules: Res<Rules>,
    map: Res<GameMap>,
    mut rng: ResMut<GameRng>,
    mut acorns: ResMut<Acorns>,
) {
    let cap = rules.acorn_cap;
    if acorns.count() >= cap || clock.tick < clock.next_spawn {
        return;
    }
    let first_tick = clock.phase_end.wrapping_sub(rules.duration_ticks) == clock.tick;
    let wanted = if first_tick { cap - acorns.count() } else { 1 };
    clock.next_spawn = clock.tick + rules.spawn_every;
    let tiles = map.spawnable();
    let width = map.width() as u32;
    for _ in 0..wanted {
        for _ in 0..SPAWN_TRIES {
            let i = tiles[rng.below(tiles.len() as u32) as usize];
            let (x, y) = ((i % width) as i32, (i / width) as i32);
            if acorns.is_free(x, y) {
                let kind = if rng.chance(rules.golden_percent) {
                    AcornKind::Golden
                } else {
                    AcornKind::Plain
                };
                spawn_acorn(&mut commands, &mut acorns, x, y, kind);
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::components::Acorn;
    use crate::sim::resources::Phase;
    use crate::sim::rules::testkit::*;

    fn start_running(w: &mut World) {
        set_phase(w, Phase::Running);
        let d = w.resource::<Rules>().duration_ticks;
        let mut clock = w.resource_mut::<Clock>();
        clock.tick = 10;
        clock.phase_end = 10 + d;
        clock.next_spawn = 10;
    }

    #[test]
    fn fills_to_cap_then_trickles() {
        let mut w = world();
        start_running(&mut w);
        run(&mut w, spawn_acorns);
        let cap = w.resource::<Rules>().acorn_cap;
        assert_eq!(w.resource::<Acorns>().count(), cap);
        assert_eq!(w.query::<&Acorn>().iter(&w).count(), cap as usize);
        let map = w.resource::<GameMap>().clone();
        for a in w.query::<&Acorn>().iter(&w) {
            assert!(
                map.is_spawnable(a.tile.0 as i32, a.tile.1 as i32),
                "{:?}",
                a.tile
            );
        }
        // At the cap nothing spawns; below it, one per interval.
        w.resource_mut::<Clock>().tick = 30;
        run(&mut w, spawn_acorns);
        assert_eq!(w.resource::<Acorns>().count(), cap);
        // Empty the grid (the entities stay; only the bookkeeping matters here).
        let tiles: Vec<(u16, u16)> = w.query::<&Acorn>().iter(&w).map(|a| a.tile).collect();
        for (x, y) in tiles {
            w.resource_mut::<Acorns>().take(x as i32, y as i32);
        }
        let every = w.resource::<Rules>().spawn_every;
        let next = w.resource::<Clock>().next_spawn;
        w.resource_mut::<Clock>().tick = next;
        run(&mut w, spawn_acorns);
        assert_eq!(w.resource::<Acorns>().count(), 1, "one acorn per interval");
        run(&mut w, spawn_acorns);
        assert_eq!(w.resource::<Acorns>().count(), 1, "not before the interval");
        w.resource_mut::<Clock>().tick = next + every;
        run(&mut w, spawn_acorns);
        assert_eq!(w.resource::<Acorns>().count(), 2);
    }

    #[test]
    fn same_seed_same_field() {
        let field = || {
            let mut w = world();
            start_running(&mut w);
            run(&mut w, spawn_acorns);
            let mut tiles: Vec<(u16, u16)> = w.query::<&Acorn>().iter(&w).map(|a| a.tile).collect();
            tiles.sort();
            tiles
        };
        assert_eq!(field(), field());
    }
}
