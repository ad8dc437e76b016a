//! Combat: a dash into an enemy who carries acorns knocks them loose.

use bevy_ecs::prelude::*;

use crate::sim::components::{Carry, Dash, PlayerId, Position, Squirrel, Stats, Stun, Vec2};
use crate::sim::events::GameEvent;
use crate::sim::params::{Rules, KNOCK_RADIUS};
use crate::sim::resources::{Acorns, GameMap, GameRng, Roster};

use super::scatter::scatter;
use super::TickSet;

/// Adds the combat systems.
pub fn plugin(schedule: &mut Schedule) {
    schedule.add_systems(knock_out.in_set(TickSet::Combat));
}

/// What [`knock_out`] reads and writes of a squirrel.
pub type Fighter = (
    &'static Squirrel,
    &'static Position,
    &'static mut Dash,
    &'static mut Carry,
    &'static mut Stun,
    &'static mut Stats,
);

/// Every squirrel that dashed this tick knocks out each enemy (another team)
/// within [`KNOCK_RADIUS`] who carries acorns: the victim's acorns scatter on
/// free tiles nearby (see [`scatter`]) and the victim is stunned. Dash and
/// stun timers run down by one tick here too (one pass over the squirrels).
#[allow(clippy::too_many_arguments)]
pub fn knock_out(
    mut commands: Commands,
    map: Res<GameMap>,
    rules: Res<Rules>,
    roster: Res<Roster>,
    mut rng: ResMut<GameRng>,
    mut acorns: ResMut<Acorns>,
    mut squirrels: Query<Fighter>,
    mut events: MessageWriter<GameEvent>,
    mut dashers: Local<Vec<(PlayerId, u8, Vec2)>>,
) {
    dashers.clear();
    for (sq, pos, mut dash, _, mut stun, _) in &mut squirrels {
        if dash.active() {
            dashers.push((sq.id, sq.team, pos.0));
            dash.ticks_left -= 1;
        }
        if stun.0 > 0 {
            stun.0 -= 1;
        }
    }
    if dashers.is_empty() {
        return;
    }
    let r2 = KNOCK_RADIUS * KNOCK_RADIUS;
    for &(attacker, team, at) in dashers.iter() {
        let mut hits = 0;
        for (sq, pos, _, mut carry, mut stun, mut stats) in &mut squirrels {
            if sq.team == team || carry.count() == 0 || (pos.0 - at).length_squared() >= r2 {
                continue;
            }
            let lost = std::mem::take(&mut *carry);
            stun.0 = rules.stun_ticks;
            stats.knocked_out += 1;
            scatter(&mut commands, &mut acorns, &map, &mut rng, pos.0, lost);
            events.write(GameEvent::KnockOut {
                attacker,
                victim: sq.id,
                acorns: lost.count(),
            });
            hits += 1;
        }
        if hits > 0 {
            if let Some(mut stats) = roster
                .entity(attacker)
                .and_then(|e| squirrels.get_mut(e).ok())
                .map(|q| q.5)
            {
                stats.knockouts += hits;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::components::{Acorn, AcornKind};
    use crate::sim::rules::testkit::*;

    #[test]
    fn dash_knocks_enemy_acorns_loose() {
        let mut w = world();
        let attacker = spawn_squirrel(&mut w, 0, 0, tile_centre(3, 6));
        let victim = spawn_squirrel(&mut w, 1, 1, Vec2::new(4.0, 6.5));
        let friend = spawn_squirrel(&mut w, 2, 0, Vec2::new(3.2, 6.5));
        w.get_mut::<Dash>(attacker).expect("a").ticks_left = 2;
        *w.get_mut::<Carry>(victim).expect("v") = Carry {
            plain: 2,
            golden: 1,
        };
        *w.get_mut::<Carry>(friend).expect("f") = Carry {
            plain: 1,
            golden: 0,
        };
        run(&mut w, knock_out);
        assert_eq!(w.get::<Carry>(victim), Some(&Carry::default()));
        assert_eq!(
            w.get::<Carry>(friend),
            Some(&Carry {
                plain: 1,
                golden: 0
            }),
            "no friendly fire"
        );
        assert_eq!(
            w.get::<Stun>(victim),
            Some(&Stun(w.resource::<Rules>().stun_ticks))
        );
        assert_eq!(w.get::<Stats>(attacker).map(|s| s.knockouts), Some(1));
        assert_eq!(w.get::<Stats>(victim).map(|s| s.knocked_out), Some(1));
        let mut kinds: Vec<AcornKind> = w.query::<&Acorn>().iter(&w).map(|a| a.kind).collect();
        kinds.sort_by_key(|k| *k as u8);
        assert_eq!(
            kinds,
            [AcornKind::Plain, AcornKind::Plain, AcornKind::Golden]
        );
        assert_eq!(
            events(&mut w),
            vec![GameEvent::KnockOut {
                attacker: PlayerId(0),
                victim: PlayerId(1),
                acorns: 3
            }]
        );
    }

    #[test]
    fn no_knock_out_without_dash_range_or_acorns() {
        let mut w = world();
        let a = spawn_squirrel(&mut w, 0, 0, tile_centre(3, 6));
        let far = spawn_squirrel(&mut w, 1, 1, Vec2::new(4.4, 6.5));
        let empty = spawn_squirrel(&mut w, 2, 1, Vec2::new(3.5, 6.9));
        *w.get_mut::<Carry>(far).expect("far") = Carry {
            plain: 2,
            golden: 0,
        };
        // Not dashing: nothing happens even in range.
        let near = spawn_squirrel(&mut w, 3, 1, Vec2::new(3.6, 6.5));
        *w.get_mut::<Carry>(near).expect("near") = Carry {
            plain: 1,
            golden: 0,
        };
        run(&mut w, knock_out);
        assert_eq!(w.get::<Carry>(near).map(|c| c.count()), Some(1));
        w.get_mut::<Dash>(a).expect("a").ticks_left = 1;
        *w.get_mut::<Carry>(near).expect("near") = Carry::default();
        run(&mut w, knock_out);
        assert_eq!(
            w.get::<Carry>(far).map(|c| c.count()),
            Some(2),
            "out of range"
        );
        assert_eq!(
            w.get::<Stun>(empty),
            Some(&Stun(0)),
            "empty paws: nothing to knock"
        );
        assert!(events(&mut w).is_empty());
    }

    #[test]
    fn timers_run_down() {
        let mut w = world();
        let a = spawn_squirrel(&mut w, 0, 0, tile_centre(3, 6));
        w.get_mut::<Dash>(a).expect("a").ticks_left = 2;
        w.get_mut::<Stun>(a).expect("a").0 = 1;
        run(&mut w, knock_out);
        run(&mut w, knock_out);
        run(&mut w, knock_out);
        assert_eq!(w.get::<Dash>(a).map(|d| d.ticks_left), Some(0));
        assert_eq!(w.get::<Stun>(a), Some(&Stun(0)));
    }
}
