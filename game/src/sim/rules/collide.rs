//! Collision of a squirrel's square box with trees and the map border.
//!
//! Movement is resolved one axis at a time (x, then y), so a squirrel pushing
//! diagonally into a wall slides along it. Long moves are cut into steps of at
//! most [`MAX_STEP`] tiles so that no move can tunnel through a tree.

use crate::sim::components::Vec2;
use crate::sim::map::{tile_coord, Map};
use crate::sim::params::SQUIRREL_HALF;

/// Longest sub-step, in tiles (less than a tile, so no tile is skipped).
pub const MAX_STEP: f32 = 0.45;
/// Longest move considered in one tick, in tiles (the fastest legal move, a
/// dash at 1 Hz, is 12 tiles); longer deltas are shortened to this.
pub const MAX_MOVE: f32 = 16.0;
/// Gap left between a squirrel and what it bumps into, in tiles.
const GAP: f32 = 1e-3;

/// Where a squirrel at `from` ends up after trying to move by `delta`.
pub fn slide(map: &Map, from: Vec2, delta: Vec2) -> Vec2 {
    let mut longest = delta.x.abs().max(delta.y.abs());
    if longest == 0.0 || !longest.is_finite() {
        return from;
    }
    let mut delta = delta;
    if longest > MAX_MOVE {
        delta = delta * (MAX_MOVE / longest);
        longest = MAX_MOVE;
    }
    // Fast paths: in open ground (no tree next to the tile), or when the box
    // swept from `from` to `from + delta` touches no solid tile.
    if longest <= MAX_STEP {
        if map.is_open(tile_coord(from.x), tile_coord(from.y)) {
            return from + delta;
        }
        let to = from + delta;
        if area_free(
            map,
            from.x.min(to.x),
            from.x.max(to.x),
            from.y.min(to.y),
            from.y.max(to.y),
        ) {
            return to;
        }
    }
    let steps = if longest <= MAX_STEP {
        1
    } else {
        (longest / MAX_STEP) as u32 + 1
    };
    let step = delta * (1.0 / steps as f32);
    let mut p = from;
    for _ in 0..steps {
        let x = move_axis(map, p.x, p.y, step.x, true);
        let y = move_axis(map, p.y, x, step.y, false);
        if x == p.x && y == p.y {
            break;
        }
        p = Vec2::new(x, y);
    }
    p
}

/// True if a box of half-size [`SQUIRREL_HALF`] whose centre spans
/// `[x0, x1] x [y0, y1]` overlaps no solid tile.
#[inline]
fn area_free(map: &Map, x0: f32, x1: f32, y0: f32, y1: f32) -> bool {
    let h = SQUIRREL_HALF;
    let (tx0, tx1) = (tile_coord(x0 - h), tile_coord(x1 + h - GAP * 0.5));
    let (ty0, ty1) = (tile_coord(y0 - h), tile_coord(y1 + h - GAP * 0.5));
    map.is_clear(tx0, tx1, ty0, ty1)
}

/// Moves coordinate `a` by `d` along one axis; `b` is the other coordinate.
fn move_axis(map: &Map, a: f32, b: f32, d: f32, horizontal: bool) -> f32 {
    if d == 0.0 {
        return a;
    }
    let h = SQUIRREL_HALF;
    let solid = |ta: i32, tb: i32| {
        if horizontal {
            map.is_solid(ta, tb)
        } else {
            map.is_solid(tb, ta)
        }
    };
    // Tiles the box covers on the other axis.
    let b0 = tile_coord(b - h);
    let b1 = tile_coord(b + h - GAP * 0.5);
    let na = a + d;
    if d > 0.0 {
        let t = tile_coord(na + h);
        if (b0..=b1).any(|tb| solid(t, tb)) {
            return (t as f32 - h - GAP).max(a);
        }
    } else {
        let t = tile_coord(na - h);
        if (b0..=b1).any(|tb| solid(t, tb)) {
            return ((t + 1) as f32 + h + GAP).min(a);
        }
    }
    na
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rules::testkit::{tile_centre, TEST_MAP};

    fn map() -> Map {
        Map::parse(TEST_MAP).expect("map")
    }

    #[test]
    fn free_movement_is_exact() {
        let m = map();
        let p = slide(&m, tile_centre(3, 3), Vec2::new(0.2, -0.1));
        assert!(
            (p.x - 3.7).abs() < 1e-6 && (p.y - 3.4).abs() < 1e-6,
            "{p:?}"
        );
    }

    #[test]
    fn stops_at_a_tree_and_slides_along_it() {
        let m = map();
        // Tree block covers tiles x 5..=6, y 4..=5. Walk right into it from (3.5, 4.5).
        let mut p = tile_centre(3, 4);
        for _ in 0..20 {
            p = slide(&m, p, Vec2::new(0.2, 0.0));
        }
        assert!(
            p.x <= 5.0 - SQUIRREL_HALF && p.x > 5.0 - SQUIRREL_HALF - 0.01,
            "{p:?}"
        );
        // Diagonally into the same face: x is blocked, y still moves.
        let q = slide(&m, p, Vec2::new(0.2, 0.2));
        assert_eq!(q.x, p.x);
        assert!((q.y - (p.y + 0.2)).abs() < 1e-6);
    }

    #[test]
    fn borders_are_walls() {
        let m = map();
        let mut p = tile_centre(1, 6);
        for _ in 0..50 {
            p = slide(&m, p, Vec2::new(-0.3, 0.3));
        }
        // Left border tree column is x = 0, bottom tree row is y = 8.
        assert!((p.x - (1.0 + SQUIRREL_HALF)).abs() < 0.01, "{p:?}");
        assert!((p.y - (8.0 - SQUIRREL_HALF)).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn long_moves_do_not_tunnel() {
        let m = map();
        // A 3-tile move right from x 3.5 must stop before the tree at x = 5.
        let p = slide(&m, tile_centre(3, 4), Vec2::new(3.0, 0.0));
        assert!(p.x < 5.0 - SQUIRREL_HALF + 1e-6, "{p:?}");
    }

    #[test]
    fn hostile_deltas_are_harmless() {
        let m = map();
        let from = tile_centre(3, 3);
        assert_eq!(slide(&m, from, Vec2::new(f32::NAN, 0.0)), from);
        assert_eq!(slide(&m, from, Vec2::new(f32::INFINITY, 1.0)), from);
        let p = slide(&m, from, Vec2::new(1e9, 1e9));
        assert!(p.x > 0.0 && p.x < 12.0 && p.y > 0.0 && p.y < 9.0, "{p:?}");
    }
}
