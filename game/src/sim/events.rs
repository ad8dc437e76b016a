//! Game events: things that happened during a tick, sent in that tick's delta
//! (key `"e"`) so clients can play effects. The state changes they cause are
//! in the delta's other sections anyway.

use bevy_ecs::prelude::*;

use super::components::{AcornKind, PlayerId};

/// One thing that happened this tick (a bevy [`Message`]; the buffers are
/// rotated at the start of every tick by
/// [`apply_inputs`](super::rules::control::apply_inputs)).
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GameEvent {
    /// A squirrel picked up an acorn. Wire: `[0, player, acorn_id, kind]`.
    Pickup {
        /// Who picked it up.
        player: PlayerId,
        /// The acorn's wire id.
        acorn: u16,
        /// Its kind.
        kind: AcornKind,
    },
    /// A squirrel delivered acorns into its burrow. Wire: `[1, player, acorns, points]`.
    Deliver {
        /// Who delivered.
        player: PlayerId,
        /// Acorns delivered.
        acorns: u8,
        /// Points scored for the team.
        points: u32,
    },
    /// A dash knocked an enemy's acorns loose. Wire: `[2, attacker, victim, acorns]`.
    KnockOut {
        /// The dashing squirrel.
        attacker: PlayerId,
        /// The squirrel that lost its acorns.
        victim: PlayerId,
        /// Acorns knocked loose.
        acorns: u8,
    },
    /// A squirrel started a dash. Wire: `[3, player]`.
    Dash {
        /// Who dashes.
        player: PlayerId,
    },
}
