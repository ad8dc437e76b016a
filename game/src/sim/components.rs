//! Components: small plain structs, one fact each.
//!
//! A squirrel is an entity with [`Squirrel`], [`PlayerName`], [`Position`],
//! [`Intent`], [`Facing`], [`Carry`], [`Dash`], [`Stun`], [`Score`],
//! [`Presence`], [`InputAck`], [`Stats`] and the net replica
//! [`SentSquirrel`](super::net::SentSquirrel). An acorn is an entity with
//! [`Acorn`]. Trees and burrows are part of the map, not entities.

use std::fmt;
use std::ops::{Add, Mul, Sub};

use bevy_ecs::prelude::*;
use serde::Serialize;

use super::params::{ACORN_POINTS, CARRY_CAP, GOLDEN_POINTS, START_CHARGES};

/// A player's id in this match: 0..max_players, the squirrel's id on the wire.
/// Ids of players who left are reused by later joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PlayerId(pub u16);

impl fmt::Display for PlayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A 2-D vector in tiles (x right, y down; the map's top-left corner is 0,0).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Vec2 {
    /// Horizontal component.
    pub x: f32,
    /// Vertical component (down is positive).
    pub y: f32,
}

impl Vec2 {
    /// The zero vector.
    pub const ZERO: Vec2 = Vec2 { x: 0.0, y: 0.0 };

    /// A vector from components.
    pub const fn new(x: f32, y: f32) -> Self {
        Vec2 { x, y }
    }
    /// Squared length.
    #[inline]
    pub fn length_squared(self) -> f32 {
        self.x * self.x + self.y * self.y
    }
    /// Length.
    #[inline]
    pub fn length(self) -> f32 {
        self.length_squared().sqrt()
    }
    /// True if both components are zero.
    #[inline]
    pub fn is_zero(self) -> bool {
        self.x == 0.0 && self.y == 0.0
    }
}

impl Add for Vec2 {
    type Output = Vec2;
    fn add(self, o: Vec2) -> Vec2 {
        Vec2::new(self.x + o.x, self.y + o.y)
    }
}

impl Sub for Vec2 {
    type Output = Vec2;
    fn sub(self, o: Vec2) -> Vec2 {
        Vec2::new(self.x - o.x, self.y - o.y)
    }
}

impl Mul<f32> for Vec2 {
    type Output = Vec2;
    fn mul(self, k: f32) -> Vec2 {
        Vec2::new(self.x * k, self.y * k)
    }
}

/// Marks a squirrel: whose it is and its team (0-based).
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Squirrel {
    /// The controlling player.
    pub id: PlayerId,
    /// Team index, 0-based.
    pub team: u8,
}

/// The player's display name.
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct PlayerName(pub Box<str>);

/// Centre of the squirrel, in tiles.
#[derive(Component, Debug, Clone, Copy, PartialEq, Default)]
pub struct Position(pub Vec2);

/// The direction the player wants to move in (length 0..=1; shorter is slower).
#[derive(Component, Debug, Clone, Copy, PartialEq, Default)]
pub struct Intent(pub Vec2);

/// The last non-zero movement direction (unit length); a dash without a
/// direction goes this way.
#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct Facing(pub Vec2);

impl Default for Facing {
    fn default() -> Self {
        Facing(Vec2::new(1.0, 0.0))
    }
}

/// Acorns in the squirrel's paws.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Carry {
    /// Plain acorns carried.
    pub plain: u8,
    /// Golden acorns carried.
    pub golden: u8,
}

impl Carry {
    /// Acorns carried in total.
    #[inline]
    pub fn count(&self) -> u8 {
        self.plain + self.golden
    }
    /// True at [`CARRY_CAP`].
    #[inline]
    pub fn is_full(&self) -> bool {
        self.count() >= CARRY_CAP
    }
    /// Points these acorns are worth when delivered.
    #[inline]
    pub fn points(&self) -> u32 {
        self.plain as u32 * ACORN_POINTS + self.golden as u32 * GOLDEN_POINTS
    }
    /// Adds one acorn of `kind` (the caller checks the cap).
    #[inline]
    pub fn add(&mut self, kind: AcornKind) {
        match kind {
            AcornKind::Plain => self.plain += 1,
            AcornKind::Golden => self.golden += 1,
        }
    }
}

/// Dash charges and the running dash.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dash {
    /// Charges left (0..=5).
    pub charges: u8,
    /// Ticks of the current dash still to go (0: not dashing).
    pub ticks_left: u16,
}

impl Default for Dash {
    fn default() -> Self {
        Dash {
            charges: START_CHARGES,
            ticks_left: 0,
        }
    }
}

impl Dash {
    /// True while a dash is running.
    #[inline]
    pub fn active(&self) -> bool {
        self.ticks_left > 0
    }
}

/// Ticks left of a knock-out stun (0: not stunned).
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stun(pub u16);

/// Points this player delivered.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Score(pub u32);

/// Whether the player is connected, and since which tick it is in that state.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    /// Connected now.
    pub connected: bool,
    /// Tick of the last change.
    pub since_tick: u32,
}

/// Marks a squirrel whose player left; the lifecycle rules remove it on the next tick.
#[derive(Component, Debug, Clone, Copy)]
pub struct Leaving;

/// Seq of the last input applied to this squirrel (0: none yet).
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputAck(pub u32);

/// Per-player counters for the results.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Acorns delivered.
    pub delivered: u32,
    /// Enemies knocked out.
    pub knockouts: u32,
    /// Times knocked out.
    pub knocked_out: u32,
}

/// The kind of an acorn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AcornKind {
    /// Worth [`ACORN_POINTS`].
    Plain = 0,
    /// Worth [`GOLDEN_POINTS`] and a dash charge.
    Golden = 1,
}

/// An acorn on the ground; acorns lie at the centre of a tile.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acorn {
    /// Wire id (small, reused after the removal was sent).
    pub id: u16,
    /// Plain or golden.
    pub kind: AcornKind,
    /// Tile coordinates.
    pub tile: (u16, u16),
}
