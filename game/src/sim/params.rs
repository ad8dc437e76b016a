//! The rule numbers (documented in docs/GAME.md) and their per-tick forms.

use std::time::Duration;

use bevy_ecs::prelude::Resource;

/// Position quantisation on the wire: units per tile (positions are sent in 1/16 tile).
pub const POS_SCALE: f32 = 16.0;
/// Walking speed with empty paws, in tiles per second.
pub const BASE_SPEED: f32 = 4.0;
/// Speed lost per carried acorn, in tiles per second (5 acorns: 3.0 tiles/s).
pub const CARRY_SLOWDOWN: f32 = 0.2;
/// Speed while dashing, in tiles per second.
pub const DASH_SPEED: f32 = 12.0;
/// How long a dash lasts, in seconds.
pub const DASH_SECONDS: f32 = 0.25;
/// Half the side of a squirrel's square collision box, in tiles (the box is 0.6 x 0.6).
pub const SQUIRREL_HALF: f32 = 0.3;
/// A squirrel picks up an acorn whose tile centre is closer than this to its centre.
pub const PICKUP_RADIUS: f32 = 0.6;
/// A dashing squirrel knocks out an enemy whose centre is closer than this.
pub const KNOCK_RADIUS: f32 = 0.8;
/// Acorns a squirrel can carry at once.
pub const CARRY_CAP: u8 = 5;
/// Dash charges a squirrel can hold.
pub const MAX_CHARGES: u8 = 5;
/// Dash charges a squirrel starts with.
pub const START_CHARGES: u8 = 1;
/// Points for a delivered plain acorn.
pub const ACORN_POINTS: u32 = 1;
/// Points for a delivered golden acorn (which also gave a dash charge when picked up).
pub const GOLDEN_POINTS: u32 = 3;
/// How long a knocked-out squirrel is stunned (cannot move or pick up), in seconds.
pub const STUN_SECONDS: f32 = 0.75;
/// Knocked-loose acorns land on free grass at most this many tiles (Chebyshev) away.
pub const SCATTER_RADIUS: i32 = 3;
/// While running and below the cap, one acorn spawns every this many seconds.
pub const SPAWN_INTERVAL: f32 = 0.5;
/// Inputs accepted per player per tick; further ones are rejected (`rate_limited`).
pub const MAX_INPUTS_PER_TICK: u8 = 4;
/// Largest accepted input message, in bytes.
pub const MAX_INPUT_BYTES: usize = 64;
/// Longest player name, in characters.
pub const NAME_MAX_CHARS: usize = 16;
/// Most players a match can hold (player ids are 0..256).
pub const MAX_PLAYERS: u16 = 256;
/// Accepted tick rates.
pub const TICK_HZ_RANGE: std::ops::RangeInclusive<u32> = 1..=60;

/// Seconds to whole ticks (at least `min`).
pub fn ticks(d: Duration, hz: u32, min: u32) -> u32 {
    ((d.as_secs_f64() * hz as f64).round() as u32).max(min)
}

fn secs_to_ticks(s: f32, hz: u32) -> u16 {
    ((s * hz as f32).round() as u16).max(1)
}

/// The rules of one match in per-tick units.
#[derive(Resource, Debug, Clone)]
pub struct Rules {
    /// Ticks per second.
    pub hz: u32,
    /// Walking distance per tick with empty paws, in tiles.
    pub speed: f32,
    /// Distance lost per tick per carried acorn, in tiles.
    pub carry_slowdown: f32,
    /// Dash distance per tick, in tiles.
    pub dash_speed: f32,
    /// Ticks a dash lasts.
    pub dash_ticks: u16,
    /// Ticks a knocked-out squirrel is stunned.
    pub stun_ticks: u16,
    /// Ticks between two spawns while below the cap.
    pub spawn_every: u32,
    /// Ticks of countdown.
    pub countdown_ticks: u32,
    /// Ticks of play.
    pub duration_ticks: u32,
    /// Ticks a disconnected player keeps the squirrel.
    pub grace_ticks: u32,
    /// Acorns on the ground at most (spawning stops there; scattering may exceed it).
    pub acorn_cap: u16,
    /// Percent of spawned acorns that are golden.
    pub golden_percent: u8,
    /// Ticks between two keyframes.
    pub keyframe_every: u32,
    /// Teams in this match.
    pub teams: u8,
    /// Start the countdown by itself once this many players are connected.
    pub auto_start: Option<u16>,
}

impl Rules {
    /// Builds per-tick rules; `hz` must already be within [`TICK_HZ_RANGE`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hz: u32,
        teams: u8,
        acorn_cap: u16,
        golden_percent: u8,
        countdown: Duration,
        duration: Duration,
        grace: Duration,
        auto_start: Option<u16>,
    ) -> Self {
        let per_tick = 1.0 / hz as f32;
        Rules {
            hz,
            speed: BASE_SPEED * per_tick,
            carry_slowdown: CARRY_SLOWDOWN * per_tick,
            dash_speed: DASH_SPEED * per_tick,
            dash_ticks: secs_to_ticks(DASH_SECONDS, hz),
            stun_ticks: secs_to_ticks(STUN_SECONDS, hz),
            spawn_every: secs_to_ticks(SPAWN_INTERVAL, hz) as u32,
            countdown_ticks: ticks(countdown, hz, 0),
            duration_ticks: ticks(duration, hz, 1),
            grace_ticks: ticks(grace, hz, 0),
            acorn_cap,
            golden_percent,
            keyframe_every: hz,
            teams,
            auto_start,
        }
    }
}
