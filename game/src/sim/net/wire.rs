//! Wire-format constants and the small pure functions of the schema
//! (quantisation, move packing, status bits). docs/GAME.md is the reference.

use crate::sim::components::{Carry, Dash, Presence, Stun};
use crate::sim::params::POS_SCALE;

/// Delta: the map key holding the tick (its presence marks a delta).
pub const KEY_DELTA: &str = "d";
/// Keyframe: the map key holding the tick (its presence marks a keyframe).
pub const KEY_KEYFRAME: &str = "k";
/// `[phase, end_tick]`.
pub const KEY_PHASE: &str = "P";
/// Winning team (uint) or nil on a draw; only with phase 3 (ended).
pub const KEY_WINNER: &str = "W";
/// Removed squirrels: `[id, ...]`.
pub const KEY_REMOVED: &str = "r";
/// Removed acorns: `[id, ...]`.
pub const KEY_ACORNS_REMOVED: &str = "R";
/// Added squirrels: `[[id, team, name, x, y, status, score, ack], ...]`.
pub const KEY_ADDED: &str = "a";
/// Added acorns: `[id, tile_x, tile_y, kind, ...]` (flat, 4 per acorn).
pub const KEY_ACORNS_ADDED: &str = "A";
/// Small moves: `[id, packed, ...]` (flat, 2 per squirrel).
pub const KEY_MOVES: &str = "m";
/// Other moves: `[id, dx, dy, ...]` (flat, 3 per squirrel).
pub const KEY_MOVES_LARGE: &str = "M";
/// Status changes: `[id, status, ...]`.
pub const KEY_STATUS: &str = "s";
/// Player score changes: `[id, score, ...]`.
pub const KEY_SCORES: &str = "p";
/// Input acks: `[id, seq, ...]`.
pub const KEY_ACKS: &str = "q";
/// Team scores: `[score_team0, score_team1, ...]`.
pub const KEY_TEAM_SCORES: &str = "S";
/// Events: `[[code, ...], ...]`.
pub const KEY_EVENTS: &str = "e";

/// Event code: `[0, player, acorn_id, kind]`.
pub const EV_PICKUP: u8 = 0;
/// Event code: `[1, player, acorns, points]`.
pub const EV_DELIVER: u8 = 1;
/// Event code: `[2, attacker, victim, acorns]`.
pub const EV_KNOCKOUT: u8 = 2;
/// Event code: `[3, player]`.
pub const EV_DASH: u8 = 3;

/// Largest |dx| or |dy| of a packed small move.
pub const SMALL_MOVE_MAX: i32 = 5;
const SMALL_MOVE_SPAN: i32 = 2 * SMALL_MOVE_MAX + 1;

/// Status bits 0-2: acorns carried (0..=5).
pub const STATUS_CARRY_MASK: u16 = 0b111;
/// Status bits 3-5: golden acorns among them.
pub const STATUS_GOLDEN_SHIFT: u16 = 3;
/// Status bits 6-8: dash charges (0..=5).
pub const STATUS_CHARGES_SHIFT: u16 = 6;
/// Status bit 9: dashing.
pub const STATUS_DASHING: u16 = 1 << 9;
/// Status bit 10: stunned.
pub const STATUS_STUNNED: u16 = 1 << 10;
/// Status bit 11: disconnected (within the grace period).
pub const STATUS_DISCONNECTED: u16 = 1 << 11;

/// A coordinate in tiles to its wire form: 1/16 tile, rounded half up
/// (coordinates are never negative; out-of-range values clamp).
#[inline]
pub fn quantise(v: f32) -> u16 {
    // `as` saturates (and maps NaN to 0), so this is a clamp to 0..=65535.
    (v * POS_SCALE + 0.5) as u16
}

/// Packs a move with |dx|, |dy| ≤ 5 into one positive fixint
/// (`(dx + 5) * 11 + (dy + 5)`, 0..=120).
#[inline]
pub fn pack_move(dx: i32, dy: i32) -> Option<u8> {
    if dx.abs() <= SMALL_MOVE_MAX && dy.abs() <= SMALL_MOVE_MAX {
        Some(((dx + SMALL_MOVE_MAX) * SMALL_MOVE_SPAN + dy + SMALL_MOVE_MAX) as u8)
    } else {
        None
    }
}

/// Inverse of [`pack_move`].
#[inline]
pub fn unpack_move(packed: u8) -> (i32, i32) {
    let p = packed as i32;
    (
        p / SMALL_MOVE_SPAN - SMALL_MOVE_MAX,
        p % SMALL_MOVE_SPAN - SMALL_MOVE_MAX,
    )
}

/// A squirrel's status word.
#[inline]
pub fn status(carry: &Carry, dash: &Dash, stun: &Stun, presence: &Presence) -> u16 {
    let mut s = (carry.count() as u16 & STATUS_CARRY_MASK)
        | ((carry.golden as u16 & 0b111) << STATUS_GOLDEN_SHIFT)
        | ((dash.charges as u16 & 0b111) << STATUS_CHARGES_SHIFT);
    if dash.active() {
        s |= STATUS_DASHING;
    }
    if stun.0 > 0 {
        s |= STATUS_STUNNED;
    }
    if !presence.connected {
        s |= STATUS_DISCONNECTED;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_packing_round_trips() {
        for dx in -5..=5 {
            for dy in -5..=5 {
                let p = pack_move(dx, dy).expect("small");
                assert!(p <= 120);
                assert_eq!(unpack_move(p), (dx, dy));
            }
        }
        assert_eq!(pack_move(6, 0), None);
        assert_eq!(pack_move(0, -6), None);
    }

    #[test]
    fn status_bits() {
        let s = status(
            &Carry {
                plain: 2,
                golden: 1,
            },
            &Dash {
                charges: 4,
                ticks_left: 2,
            },
            &Stun(0),
            &Presence {
                connected: false,
                since_tick: 0,
            },
        );
        assert_eq!(
            s,
            3 | (1 << 3) | (4 << 6) | STATUS_DASHING | STATUS_DISCONNECTED
        );
        assert_eq!(quantise(2.5), 40);
        assert_eq!(quantise(-1.0), 0);
    }
}
