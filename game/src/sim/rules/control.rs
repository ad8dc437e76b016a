//! Control: the latest input of each player becomes its squirrel's intent.

use bevy_ecs::prelude::*;

use crate::sim::components::{Dash, InputAck, Intent, Leaving, Stun};
use crate::sim::events::GameEvent;
use crate::sim::input::InputBuffer;
use crate::sim::params::Rules;
use crate::sim::resources::{Clock, Phase, Roster};

use super::TickSet;

/// Adds the control systems.
pub fn plugin(schedule: &mut Schedule) {
    schedule.add_systems(apply_inputs.in_set(TickSet::Control));
}

/// Starts the tick's events (rotating the event buffers: standalone bevy_ecs
/// has no app to do it, and each tick's events must be read exactly once),
/// then applies each player's latest accepted input: sets the wanted direction,
/// starts a dash (running, a charge left, not dashing, not stunned) and records
/// the input's seq as acknowledged. Inputs arriving in lobby or countdown are
/// applied (and acknowledged) but nothing moves until the match runs.
pub fn apply_inputs(
    mut buffer: ResMut<InputBuffer>,
    roster: Res<Roster>,
    clock: Res<Clock>,
    rules: Res<Rules>,
    mut squirrels: Query<(&mut Intent, &mut Dash, &Stun, &mut InputAck), Without<Leaving>>,
    mut events: ResMut<Messages<GameEvent>>,
) {
    events.update();
    let running = clock.phase == Phase::Running;
    buffer.drain(|player, fresh| {
        let Some((dir, dash, seq)) = fresh else {
            return;
        };
        let Some(entity) = roster.entity(player) else {
            return;
        };
        let Ok((mut intent, mut d, stun, mut ack)) = squirrels.get_mut(entity) else {
            return;
        };
        intent.set_if_neq(Intent(dir));
        ack.set_if_neq(InputAck(seq));
        if dash && running && d.charges > 0 && !d.active() && stun.0 == 0 {
            d.charges -= 1;
            d.ticks_left = rules.dash_ticks;
            events.write(GameEvent::Dash { player });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::components::{PlayerId, Vec2};
    use crate::sim::input::Input;
    use crate::sim::rules::testkit::*;

    #[test]
    fn latest_input_wins_and_dash_spends_a_charge() {
        let mut w = world();
        set_phase(&mut w, Phase::Running);
        let e = spawn_squirrel(&mut w, 0, 0, tile_centre(3, 3));
        {
            let mut b = w.resource_mut::<InputBuffer>();
            let p = PlayerId(0);
            for (seq, x, dash) in [(1, 1.0, false), (2, -1.0, true), (3, 0.0, false)] {
                b.admit(p).expect("admit");
                b.accept(
                    p,
                    Input {
                        seq,
                        dir: Vec2::new(x, 0.0),
                        dash,
                    },
                    1,
                )
                .expect("accept");
            }
        }
        run(&mut w, apply_inputs);
        assert_eq!(w.get::<Intent>(e), Some(&Intent(Vec2::ZERO)));
        assert_eq!(w.get::<InputAck>(e), Some(&InputAck(3)));
        let dash = *w.get::<Dash>(e).expect("dash");
        assert_eq!(dash.charges, 0);
        assert_eq!(dash.ticks_left, w.resource::<Rules>().dash_ticks);
        assert_eq!(
            events(&mut w),
            vec![GameEvent::Dash {
                player: PlayerId(0)
            }]
        );
    }

    #[test]
    fn no_dash_outside_running() {
        let mut w = world();
        let e = spawn_squirrel(&mut w, 0, 0, tile_centre(3, 3));
        {
            let mut b = w.resource_mut::<InputBuffer>();
            b.admit(PlayerId(0)).expect("admit");
            b.accept(
                PlayerId(0),
                Input {
                    seq: 1,
                    dir: Vec2::ZERO,
                    dash: true,
                },
                1,
            )
            .expect("accept");
        }
        run(&mut w, apply_inputs);
        assert_eq!(
            w.get::<Dash>(e).map(|d| (d.charges, d.ticks_left)),
            Some((1, 0))
        );
        assert_eq!(w.get::<InputAck>(e), Some(&InputAck(1)));
    }
}
