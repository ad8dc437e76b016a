//! The static match info message: everything a client needs besides the state
//! (the map grid, the tick rate, the quantisation and the rule numbers).

use bytes::Bytes;

use crate::sim::map::Map;
use crate::sim::msgpack::{put_array_len, put_f32, put_map_len, put_str, put_uint};
use crate::sim::params::*;

/// Schema version of the info, state and input messages.
pub const SCHEMA_VERSION: u64 = 1;

/// Encodes the info message (a MessagePack map; see docs/GAME.md).
pub fn encode_info(map: &Map, rules: &Rules, max_players: u16) -> Bytes {
    let mut out = Vec::with_capacity(256 + map.width() as usize * map.height() as usize);
    put_map_len(&mut out, 18);
    let uint = |out: &mut Vec<u8>, k: &str, v: u64| {
        put_str(out, k);
        put_uint(out, v);
    };
    uint(&mut out, "v", SCHEMA_VERSION);
    put_str(&mut out, "map");
    put_str(&mut out, map.name());
    uint(&mut out, "w", map.width() as u64);
    uint(&mut out, "h", map.height() as u64);
    put_str(&mut out, "grid");
    put_array_len(&mut out, map.height() as u32);
    for row in map.rows() {
        put_str(&mut out, &row);
    }
    uint(&mut out, "teams", rules.teams as u64);
    uint(&mut out, "max", max_players as u64);
    uint(&mut out, "hz", rules.hz as u64);
    uint(&mut out, "q", POS_SCALE as u64);
    uint(&mut out, "kf", rules.keyframe_every as u64);
    uint(&mut out, "countdown", rules.countdown_ticks as u64);
    uint(&mut out, "duration", rules.duration_ticks as u64);
    uint(&mut out, "carry", CARRY_CAP as u64);
    uint(&mut out, "charges", MAX_CHARGES as u64);
    let float = |out: &mut Vec<u8>, k: &str, v: f32| {
        put_str(out, k);
        put_f32(out, v);
    };
    float(&mut out, "speed", BASE_SPEED);
    float(&mut out, "slow", CARRY_SLOWDOWN);
    float(&mut out, "dash", DASH_SPEED);
    float(&mut out, "half", SQUIRREL_HALF);
    Bytes::from(out)
}
