//! Dropping acorns: placing them on free grass near a spot (used when a dash
//! knocks acorns loose and when a squirrel leaves the match).

use bevy_ecs::prelude::*;

use crate::sim::components::{Acorn, AcornKind, Carry, Vec2};
use crate::sim::map::{tile_coord, Map};
use crate::sim::params::SCATTER_RADIUS;
use crate::sim::resources::{Acorns, GameRng};

/// Spawns an acorn entity on tile `(x, y)` (which must be free) and records it.
pub fn spawn_acorn(commands: &mut Commands, acorns: &mut Acorns, x: i32, y: i32, kind: AcornKind) {
    let id = acorns.alloc_id();
    let entity = commands
        .spawn(Acorn {
            id,
            kind,
            tile: (x as u16, y as u16),
        })
        .id();
    acorns.place(x, y, entity, id, kind);
}

/// Places the acorns of `carry` on free spawnable tiles around `at`: ring 1
/// first (the 8 neighbours of the tile under `at`), then ring 2, then ring 3,
/// in a random order within each ring; golden acorns are placed first. Acorns
/// with no free tile within [`SCATTER_RADIUS`] are lost. Returns how many
/// were placed.
pub fn scatter(
    commands: &mut Commands,
    acorns: &mut Acorns,
    map: &Map,
    rng: &mut GameRng,
    at: Vec2,
    carry: Carry,
) -> u8 {
    let mut kinds = std::iter::repeat_n(AcornKind::Golden, carry.golden as usize)
        .chain(std::iter::repeat_n(AcornKind::Plain, carry.plain as usize))
        .peekable();
    let (cx, cy) = (tile_coord(at.x), tile_coord(at.y));
    let mut placed = 0;
    let mut ring = [(0i32, 0i32); 8 * SCATTER_RADIUS as usize];
    for r in 1..=SCATTER_RADIUS {
        if kinds.peek().is_none() {
            break;
        }
        let mut n = 0;
        for dy in -r..=r {
            for dx in -r..=r {
                if dx.abs() != r && dy.abs() != r {
                    continue;
                }
                let (x, y) = (cx + dx, cy + dy);
                if map.is_spawnable(x, y) && acorns.is_free(x, y) {
                    ring[n] = (x, y);
                    n += 1;
                }
            }
        }
        // Partial Fisher-Yates: draw tiles in random order as needed.
        for i in 0..n {
            let Some(kind) = kinds.next() else { break };
            let j = i + rng.below((n - i) as u32) as usize;
            ring.swap(i, j);
            let (x, y) = ring[i];
            spawn_acorn(commands, acorns, x, y, kind);
            placed += 1;
        }
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::components::{Acorn, AcornKind};
    use crate::sim::resources::GameMap;
    use crate::sim::rules::testkit::*;

    #[test]
    fn scatters_near_and_never_on_trees_or_acorns() {
        let mut w = world();
        spawn_acorn_at(&mut w, 4, 3);
        let at = tile_centre(4, 4); // next to the tree block at x 5..=6, y 4..=5
        let placed = w
            .run_system_once(
                move |mut c: Commands,
                      mut a: ResMut<Acorns>,
                      m: Res<GameMap>,
                      mut r: ResMut<GameRng>| {
                    scatter(
                        &mut c,
                        &mut a,
                        &m,
                        &mut r,
                        at,
                        Carry {
                            plain: 3,
                            golden: 2,
                        },
                    )
                },
            )
            .expect("runs");
        assert_eq!(placed, 5);
        let mut tiles = Vec::new();
        let mut golden = 0;
        for a in w.query::<&Acorn>().iter(&w) {
            tiles.push(a.tile);
            golden += (a.kind == AcornKind::Golden) as u32;
        }
        assert_eq!(tiles.len(), 6);
        assert_eq!(golden, 2);
        tiles.sort();
        tiles.dedup();
        assert_eq!(tiles.len(), 6, "one acorn per tile");
        let map = w.resource::<GameMap>().clone();
        for (x, y) in tiles {
            assert!(map.is_spawnable(x as i32, y as i32));
            assert!((x as i32 - 4).abs() <= 3 && (y as i32 - 4).abs() <= 3);
        }
        assert_eq!(w.resource::<Acorns>().count(), 6);
    }

    fn spawn_acorn_at(w: &mut World, x: i32, y: i32) {
        crate::sim::rules::testkit::spawn_acorn(w, x, y, AcornKind::Plain);
    }

    use bevy_ecs::system::RunSystemOnce;
}
