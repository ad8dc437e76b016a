//! The per-tick delta, built from change detection.

use bevy_ecs::prelude::*;

use crate::sim::components::*;
use crate::sim::events::GameEvent;
use crate::sim::msgpack::{put_array_len, put_nil, put_str, put_uint};
use crate::sim::resources::{Acorns, Clock, Phase, Roster, TeamScores};

use super::wire::{self, pack_move, quantise};
use super::{NetState, SentSquirrel};

/// What the delta encoder reads of a squirrel.
pub type SquirrelState = (
    &'static Squirrel,
    &'static PlayerName,
    &'static Position,
    Ref<'static, Carry>,
    Ref<'static, Dash>,
    Ref<'static, Stun>,
    Ref<'static, Presence>,
    &'static Score,
    &'static InputAck,
    &'static mut SentSquirrel,
);

/// Squirrels worth a look this tick: new, or with a changed networked component.
pub type SquirrelChanged = Or<(
    Added<Squirrel>,
    Changed<Position>,
    Changed<Carry>,
    Changed<Dash>,
    Changed<Stun>,
    Changed<Presence>,
    Changed<Score>,
    Changed<InputAck>,
)>;

/// Writes one squirrel record `[id, team, name, x, y, status, score, ack]`.
pub(crate) fn put_squirrel(out: &mut Vec<u8>, sq: &Squirrel, name: &PlayerName, s: &SentSquirrel) {
    put_array_len(out, 8);
    put_uint(out, sq.id.0 as u64);
    put_uint(out, sq.team as u64);
    put_str(out, &name.0);
    put_uint(out, s.x as u64);
    put_uint(out, s.y as u64);
    put_uint(out, s.status as u64);
    put_uint(out, s.score as u64);
    put_uint(out, s.ack as u64);
}

/// Writes the phase (and winner) sections from the replica.
pub(crate) fn put_phase(net: &mut NetState, winner: Option<u8>) {
    let (phase, end) = net.sent_phase;
    net.sections.phase.uint(phase as u64);
    net.sections.phase.uint(end as u64);
    if phase == Phase::Ended {
        let out = net.sections.winner.set_scalar();
        match winner {
            Some(t) => put_uint(out, t as u64),
            None => put_nil(out),
        }
    }
}

/// Encodes this tick's delta into [`NetState::delta`]: removals (from
/// `RemovedComponents`), additions (`Added`), and for changed squirrels only
/// the fields whose wire value differs from what was last sent; positions as
/// steps in 1/16 tile. Also the team scores and phase if they changed, and
/// this tick's events.
#[allow(clippy::too_many_arguments)]
pub fn encode_delta(
    mut net: ResMut<NetState>,
    clock: Res<Clock>,
    scores: Res<TeamScores>,
    mut roster: ResMut<Roster>,
    mut acorns: ResMut<Acorns>,
    mut gone_squirrels: RemovedComponents<Squirrel>,
    mut gone_acorns: RemovedComponents<Acorn>,
    new_acorns: Query<&Acorn, Added<Acorn>>,
    mut squirrels: Query<SquirrelState, SquirrelChanged>,
    mut events: MessageReader<GameEvent>,
) {
    let net = net.bypass_change_detection();
    net.sections.clear_state();
    net.sections.events.clear();
    let mut changed = 0u32;

    for entity in gone_squirrels.read() {
        if let Some(id) = roster.bypass_change_detection().ids.remove(&entity) {
            if net.set_player_sent(id.0, false) {
                net.sections.removed.uint(id.0 as u64);
                changed += 1;
            }
        }
    }
    for entity in gone_acorns.read() {
        if let Some(id) = acorns.bypass_change_detection().release(entity) {
            if net.set_acorn_sent(id, false) {
                net.sections.acorns_removed.uint(id as u64);
                changed += 1;
            }
        }
    }

    for (sq, name, pos, carry, dash, stun, presence, score, ack, mut sent) in &mut squirrels {
        let sent = sent.bypass_change_detection();
        let x = quantise(pos.0.x);
        let y = quantise(pos.0.y);
        let status_changed =
            carry.is_changed() || dash.is_changed() || stun.is_changed() || presence.is_changed();
        let status = if status_changed || !sent.sent {
            wire::status(&carry, &dash, &stun, &presence)
        } else {
            sent.status
        };
        let id = sq.id.0 as u64;
        if !sent.sent {
            *sent = SentSquirrel {
                sent: true,
                x,
                y,
                status,
                score: score.0,
                ack: ack.0,
            };
            net.set_player_sent(sq.id.0, true);
            put_squirrel(net.sections.added.element(), sq, name, sent);
            changed += 1;
            continue;
        }
        let mut any = false;
        if x != sent.x || y != sent.y {
            let (dx, dy) = (x as i32 - sent.x as i32, y as i32 - sent.y as i32);
            match pack_move(dx, dy) {
                Some(p) => {
                    net.sections.moves.uint(id);
                    net.sections.moves.uint(p as u64);
                }
                None => {
                    let m = &mut net.sections.moves_large;
                    m.uint(id);
                    m.int(dx as i64);
                    m.int(dy as i64);
                }
            }
            sent.x = x;
            sent.y = y;
            any = true;
        }
        if status != sent.status {
            net.sections.status.uint(id);
            net.sections.status.uint(status as u64);
            sent.status = status;
            any = true;
        }
        if score.0 != sent.score {
            net.sections.scores.uint(id);
            net.sections.scores.uint(score.0 as u64);
            sent.score = score.0;
            any = true;
        }
        if ack.0 != sent.ack {
            net.sections.acks.uint(id);
            net.sections.acks.uint(ack.0 as u64);
            sent.ack = ack.0;
            any = true;
        }
        changed += any as u32;
    }

    for acorn in &new_acorns {
        net.set_acorn_sent(acorn.id, true);
        let a = &mut net.sections.acorns_added;
        a.uint(acorn.id as u64);
        a.uint(acorn.tile.0 as u64);
        a.uint(acorn.tile.1 as u64);
        a.uint(acorn.kind as u64);
        changed += 1;
    }

    if scores.0 != net.sent_scores {
        net.sent_scores.clone_from(&scores.0);
        for &s in &scores.0 {
            net.sections.team_scores.uint(s as u64);
        }
    }
    if (clock.phase, clock.phase_end) != net.sent_phase {
        net.sent_phase = (clock.phase, clock.phase_end);
        put_phase(net, clock.winner);
    }

    for event in events.read() {
        let out = net.sections.events.element();
        match *event {
            GameEvent::Pickup {
                player,
                acorn,
                kind,
            } => put_uints(
                out,
                &[
                    wire::EV_PICKUP as u64,
                    player.0 as u64,
                    acorn as u64,
                    kind as u64,
                ],
            ),
            GameEvent::Deliver {
                player,
                acorns,
                points,
            } => put_uints(
                out,
                &[
                    wire::EV_DELIVER as u64,
                    player.0 as u64,
                    acorns as u64,
                    points as u64,
                ],
            ),
            GameEvent::KnockOut {
                attacker,
                victim,
                acorns,
            } => put_uints(
                out,
                &[
                    wire::EV_KNOCKOUT as u64,
                    attacker.0 as u64,
                    victim.0 as u64,
                    acorns as u64,
                ],
            ),
            GameEvent::Dash { player } => put_uints(out, &[wire::EV_DASH as u64, player.0 as u64]),
        }
    }

    net.changed = changed;
    let delta = net.assemble(wire::KEY_DELTA, clock.tick);
    net.delta = Some(delta);
}

/// An event record: an array of unsigned integers, the event code first.
fn put_uints(out: &mut Vec<u8>, values: &[u64]) {
    put_array_len(out, values.len() as u32);
    for &v in values {
        put_uint(out, v);
    }
}
