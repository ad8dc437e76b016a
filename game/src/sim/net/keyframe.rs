//! Keyframes: the whole state, written from the replica the deltas were coded
//! against, so that a keyframe of tick t equals the result of applying every
//! delta up to t.

use bevy_ecs::prelude::*;
use bytes::Bytes;

use crate::sim::components::{Acorn, PlayerName, Squirrel};
use crate::sim::resources::Clock;

use super::delta::{put_phase, put_squirrel};
use super::{wire, NetState, SentSquirrel};

/// Encodes the keyframe of this tick into [`NetState::keyframe`] (with this tick's events).
pub fn encode_keyframe(
    mut net: ResMut<NetState>,
    clock: Res<Clock>,
    squirrels: Query<(&Squirrel, &PlayerName, &SentSquirrel)>,
    acorns: Query<&Acorn>,
) {
    let net = net.bypass_change_detection();
    let kf = write_keyframe(net, &clock, &squirrels, &acorns, true);
    net.keyframe = Some(kf);
}

/// Builds a keyframe of the last tick's state on demand (without events);
/// players who joined since that tick are not in it yet.
pub fn keyframe_now(
    mut net: ResMut<NetState>,
    clock: Res<Clock>,
    squirrels: Query<(&Squirrel, &PlayerName, &SentSquirrel)>,
    acorns: Query<&Acorn>,
) -> Bytes {
    write_keyframe(
        net.bypass_change_detection(),
        &clock,
        &squirrels,
        &acorns,
        false,
    )
}

fn write_keyframe(
    net: &mut NetState,
    clock: &Clock,
    squirrels: &Query<(&Squirrel, &PlayerName, &SentSquirrel)>,
    acorns: &Query<&Acorn>,
    with_events: bool,
) -> Bytes {
    net.sections.clear_state();
    if !with_events {
        net.sections.events.clear();
    }
    put_phase(net, clock.winner);
    for (sq, name, sent) in squirrels {
        if sent.sent {
            put_squirrel(net.sections.added.element(), sq, name, sent);
        }
    }
    for acorn in acorns {
        if net.acorn_sent(acorn.id) {
            let a = &mut net.sections.acorns_added;
            a.uint(acorn.id as u64);
            a.uint(acorn.tile.0 as u64);
            a.uint(acorn.tile.1 as u64);
            a.uint(acorn.kind as u64);
        }
    }
    for i in 0..net.sent_scores.len() {
        let s = net.sent_scores[i];
        net.sections.team_scores.uint(s as u64);
    }
    net.assemble(wire::KEY_KEYFRAME, clock.tick)
}
