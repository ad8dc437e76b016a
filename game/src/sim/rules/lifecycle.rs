//! Lifecycle: lobby → countdown → running → ended, and players leaving.

use bevy_ecs::prelude::*;

use crate::sim::components::{Carry, Leaving, Position, Presence, Squirrel};
use crate::sim::input::InputBuffer;
use crate::sim::params::Rules;
use crate::sim::resources::{Acorns, Clock, GameMap, GameRng, Phase, Roster, TeamScores};

use super::scatter::scatter;
use super::TickSet;

/// Adds the lifecycle systems.
pub fn plugin(schedule: &mut Schedule) {
    schedule.add_systems(
        (advance_phase, drop_players.run_if(anyone_away))
            .chain()
            .in_set(TickSet::Lifecycle),
    );
}

/// Run condition of [`drop_players`]: a player is leaving or disconnected.
/// Almost every tick nobody is, and this one query is much cheaper than the
/// resources `drop_players` fetches.
pub fn anyone_away(squirrels: Query<(&Presence, Has<Leaving>)>) -> bool {
    squirrels
        .iter()
        .any(|(presence, leaving)| leaving || !presence.connected)
}

/// Advances the match clock's phase:
/// - lobby → countdown when [`Match::start`](crate::sim::Match::start) was
///   called or, with auto-start, once enough players are connected (straight
///   to running if the countdown is zero);
/// - countdown → running when the countdown is over (the field fills up then);
/// - running → ended when the time is up; the team with the most points wins
///   (`None` on a tie for first place).
pub fn advance_phase(
    mut clock: ResMut<Clock>,
    rules: Res<Rules>,
    scores: Res<TeamScores>,
    players: Query<&Presence, (With<Squirrel>, Without<Leaving>)>,
) {
    let tick = clock.tick;
    if clock.end_requested && clock.phase != Phase::Ended {
        clock.end_requested = false;
        clock.phase = Phase::Ended;
        clock.phase_end = 0;
        clock.winner = winner(&scores.0);
        return;
    }
    match clock.phase {
        Phase::Lobby => {
            let auto = rules
                .auto_start
                .is_some_and(|n| players.iter().filter(|p| p.connected).count() >= n as usize);
            if clock.start_requested || auto {
                clock.start_requested = false;
                if rules.countdown_ticks == 0 {
                    begin_running(&mut clock, &rules);
                } else {
                    clock.phase = Phase::Countdown;
                    clock.phase_end = tick + rules.countdown_ticks;
                }
            }
        }
        Phase::Countdown => {
            if tick >= clock.phase_end {
                begin_running(&mut clock, &rules);
            }
        }
        Phase::Running => {
            if tick >= clock.phase_end {
                clock.phase = Phase::Ended;
                clock.phase_end = 0;
                clock.winner = winner(&scores.0);
            }
        }
        Phase::Ended => {}
    }
}

fn begin_running(clock: &mut Clock, rules: &Rules) {
    clock.phase = Phase::Running;
    clock.phase_end = clock.tick + rules.duration_ticks;
    clock.next_spawn = clock.tick;
}

/// The team with the highest score, or `None` if several share it.
pub fn winner(scores: &[u32]) -> Option<u8> {
    let best = *scores.iter().max()?;
    let mut leaders = scores.iter().enumerate().filter(|(_, &s)| s == best);
    let (team, _) = leaders.next()?;
    leaders.next().is_none().then_some(team as u8)
}

/// Removes squirrels whose player left ([`Leaving`]) or stayed disconnected for
/// the grace period. While running, their acorns scatter around them first.
/// The player id is free for a new player from the next tick on.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn drop_players(
    mut commands: Commands,
    clock: Res<Clock>,
    rules: Res<Rules>,
    map: Res<GameMap>,
    mut rng: ResMut<GameRng>,
    mut acorns: ResMut<Acorns>,
    mut roster: ResMut<Roster>,
    mut inputs: ResMut<InputBuffer>,
    squirrels: Query<(Entity, &Squirrel, &Presence, Has<Leaving>)>,
    carried: Query<(&Position, &Carry)>,
) {
    for (entity, sq, presence, leaving) in &squirrels {
        let expired = !presence.connected
            && clock.tick.saturating_sub(presence.since_tick) >= rules.grace_ticks;
        if !leaving && !expired {
            continue;
        }
        if let Ok((pos, carry)) = carried.get(entity) {
            if carry.count() > 0 && clock.phase == Phase::Running {
                scatter(&mut commands, &mut acorns, &map, &mut rng, pos.0, *carry);
            }
        }
        roster.free(sq.id, sq.team);
        inputs.reset(sq.id);
        commands.entity(entity).despawn();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::components::{Acorn, Vec2};
    use crate::sim::rules::testkit::*;
    use bevy_ecs::system::RunSystemOnce;

    fn at_tick(w: &mut World, tick: u32) {
        w.resource_mut::<Clock>().tick = tick;
        run(w, advance_phase);
    }

    #[test]
    fn lobby_countdown_running_ended() {
        let mut w = world();
        at_tick(&mut w, 1);
        assert_eq!(
            w.resource::<Clock>().phase,
            Phase::Lobby,
            "waits for a start"
        );
        w.resource_mut::<Clock>().start_requested = true;
        at_tick(&mut w, 2);
        let rules = w.resource::<Rules>().clone();
        let clock = w.resource::<Clock>().clone();
        assert_eq!(
            (clock.phase, clock.phase_end),
            (Phase::Countdown, 2 + rules.countdown_ticks)
        );
        at_tick(&mut w, clock.phase_end - 1);
        assert_eq!(w.resource::<Clock>().phase, Phase::Countdown);
        at_tick(&mut w, clock.phase_end);
        let running = w.resource::<Clock>().clone();
        assert_eq!(running.phase, Phase::Running);
        assert_eq!(running.phase_end, clock.phase_end + rules.duration_ticks);
        w.resource_mut::<TeamScores>().0 = vec![3, 5];
        at_tick(&mut w, running.phase_end - 1);
        assert_eq!(w.resource::<Clock>().phase, Phase::Running);
        at_tick(&mut w, running.phase_end);
        let ended = w.resource::<Clock>().clone();
        assert_eq!((ended.phase, ended.winner), (Phase::Ended, Some(1)));
        at_tick(&mut w, running.phase_end + 100);
        assert_eq!(w.resource::<Clock>().phase, Phase::Ended, "ended is final");
    }

    #[test]
    fn an_end_request_ends_the_match_from_any_phase() {
        for start in [false, true] {
            let mut w = world();
            if start {
                w.resource_mut::<Clock>().start_requested = true;
                at_tick(&mut w, 1);
                assert_ne!(w.resource::<Clock>().phase, Phase::Lobby);
            }
            w.resource_mut::<TeamScores>().0 = vec![3, 7];
            w.resource_mut::<Clock>().end_requested = true;
            at_tick(&mut w, 2);
            let c = w.resource::<Clock>().clone();
            assert_eq!((c.phase, c.winner), (Phase::Ended, Some(1)));
        }
    }

    #[test]
    fn auto_start_counts_connected_players() {
        let mut w = world();
        w.resource_mut::<Rules>().auto_start = Some(2);
        spawn_squirrel(&mut w, 0, 0, tile_centre(1, 1));
        let b = spawn_squirrel(&mut w, 1, 1, tile_centre(9, 1));
        w.get_mut::<Presence>(b).expect("b").connected = false;
        at_tick(&mut w, 1);
        assert_eq!(w.resource::<Clock>().phase, Phase::Lobby);
        w.get_mut::<Presence>(b).expect("b").connected = true;
        at_tick(&mut w, 2);
        assert_eq!(w.resource::<Clock>().phase, Phase::Countdown);
    }

    #[test]
    fn winner_needs_a_unique_top_score() {
        assert_eq!(winner(&[1, 4, 2]), Some(1));
        assert_eq!(winner(&[4, 4, 2]), None);
        assert_eq!(winner(&[0, 0]), None);
        assert_eq!(winner(&[]), None);
    }

    #[test]
    fn grace_period_then_removal_with_scatter() {
        let mut w = world();
        set_phase(&mut w, Phase::Running);
        let grace = w.resource::<Rules>().grace_ticks;
        let stay = spawn_squirrel(&mut w, 0, 0, tile_centre(3, 6));
        let gone = spawn_squirrel(&mut w, 1, 1, tile_centre(8, 6));
        *w.get_mut::<Carry>(gone).expect("gone") = Carry {
            plain: 2,
            golden: 0,
        };
        *w.get_mut::<Presence>(gone).expect("gone") = Presence {
            connected: false,
            since_tick: 0,
        };
        let away = |w: &mut World| w.run_system_once(anyone_away).expect("runs");
        assert!(away(&mut w), "a disconnected player");
        w.resource_mut::<Clock>().tick = grace - 1;
        run(&mut w, drop_players);
        assert!(w.get_entity(gone).is_ok(), "still within grace");
        w.resource_mut::<Clock>().tick = grace;
        run(&mut w, drop_players);
        assert!(w.get_entity(gone).is_err(), "grace over");
        assert!(w.get_entity(stay).is_ok());
        assert_eq!(
            w.resource::<Roster>()
                .entity(crate::sim::components::PlayerId(1)),
            None
        );
        assert_eq!(w.resource::<Roster>().team_sizes, vec![1, 0]);
        assert_eq!(w.query::<&Acorn>().iter(&w).count(), 2, "acorns dropped");
        assert!(!away(&mut w), "everyone left is connected");
        // A reconnected player within grace is kept; one who left is removed at once.
        w.entity_mut(stay).insert(Leaving);
        assert!(away(&mut w), "a player leaving");
        run(&mut w, drop_players);
        assert!(w.get_entity(stay).is_err());
        let _ = Vec2::ZERO;
    }
}
