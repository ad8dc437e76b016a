//! The Acorn Hunt simulation: squirrels in teams collect acorns and bring
//! them home. One match is one bevy_ecs `World` and one `Schedule` of plain
//! system functions, ticked at a fixed rate by [`Match::tick`], which returns
//! the tick's delta (and once a second a keyframe) as compact MessagePack.
//!
//! ```
//! use acorn_game::sim::{maps, Match, MatchConfig};
//!
//! let map = maps::builtin("Oak City").expect("built-in map");
//! let mut game = Match::new(MatchConfig { seed: 7, ..MatchConfig::new(map) }).expect("config");
//! let hazel = game.add_player("Hazel", None).expect("joined");
//! let _bob = game.add_player("Bob", None).expect("joined");
//! // {"seq": 1, "dir": [1, 0]} as MessagePack
//! let input = [0x82, 0xa3, b's', b'e', b'q', 0x01, 0xa3, b'd', b'i', b'r', 0x92, 0x01, 0x00];
//! game.push_input(hazel, &input).expect("valid input");
//! let out = game.tick();
//! assert!(out.keyframe.is_some(), "tick 1 carries a keyframe");
//! ```
//!
//! Layout: [`map`] and [`maps`] (the text map format and the built-in maps),
//! [`components`], [`resources`] and [`events`] (the data), [`rules`] (the
//! systems), [`input`] (input decoding and validation), [`net`] (delta,
//! keyframe and info encoding), [`chat`], and the facade [`Match`].
//! The rules and the wire schema are documented in docs/GAME.md.

pub mod bot;
pub mod chat;
pub mod components;
pub mod events;
mod facade;
pub mod input;
pub mod map;
pub mod maps;
mod msgpack;
pub mod net;
pub mod params;
pub mod resources;
pub mod rules;
pub mod setup;

pub use components::{AcornKind, PlayerId};
pub use facade::{
    ConfigError, JoinError, Match, MatchConfig, MatchResults, MatchSummary, PlayerResult,
    PlayerSummary, TeamSummary, TickOutput, UnknownPlayer,
};
pub use input::{InputError, InputStats};
pub use map::{Map, MapError};
pub use resources::Phase;

#[cfg(test)]
mod tests;
