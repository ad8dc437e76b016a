//! Motion: squirrels walk (or dash) in their intended direction.

use bevy_ecs::prelude::*;

use crate::sim::components::{Carry, Dash, Facing, Intent, Position, Stun};
use crate::sim::params::Rules;
use crate::sim::resources::GameMap;

use super::collide::slide;
use super::TickSet;

/// Adds the motion systems.
pub fn plugin(schedule: &mut Schedule) {
    schedule.add_systems(move_squirrels.in_set(TickSet::Motion));
}

/// Moves every squirrel that is not stunned: walking at `speed - slowdown *
/// carried` times the intent's length, or dashing at full dash speed in the
/// intent's direction (or, with no intent, the facing direction). Trees and
/// borders stop it (see [`slide`]). Only squirrels that actually move are
/// marked changed.
pub fn move_squirrels(
    map: Res<GameMap>,
    rules: Res<Rules>,
    mut squirrels: Query<(&Intent, &mut Facing, &Dash, &Stun, &Carry, &mut Position)>,
) {
    for (intent, mut facing, dash, stun, carry, mut pos) in &mut squirrels {
        if stun.0 > 0 {
            continue;
        }
        let want = intent.0;
        let unit = {
            let len = want.length();
            (len > 0.0).then(|| want * (1.0 / len))
        };
        if let Some(u) = unit {
            facing.set_if_neq(Facing(u));
        }
        let delta = if dash.active() {
            unit.unwrap_or(facing.0) * rules.dash_speed
        } else {
            if want.is_zero() {
                continue;
            }
            let speed = rules.speed - rules.carry_slowdown * carry.count() as f32;
            want * speed
        };
        let next = slide(&map, pos.0, delta);
        if next != pos.0 {
            pos.0 = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::components::Vec2;
    use crate::sim::rules::testkit::*;

    #[test]
    fn walks_at_speed_and_slows_when_carrying() {
        let mut w = world();
        let a = spawn_squirrel(&mut w, 0, 0, tile_centre(2, 6));
        let b = spawn_squirrel(&mut w, 1, 0, tile_centre(2, 7));
        w.get_mut::<Intent>(a).expect("a").0 = Vec2::new(1.0, 0.0);
        w.get_mut::<Intent>(b).expect("b").0 = Vec2::new(1.0, 0.0);
        *w.get_mut::<Carry>(b).expect("b") = Carry {
            plain: 5,
            golden: 0,
        };
        run(&mut w, move_squirrels);
        let step = 4.0 / 20.0;
        assert!((pos(&w, a).x - (2.5 + step)).abs() < 1e-5);
        assert!((pos(&w, b).x - (2.5 + 3.0 / 20.0)).abs() < 1e-5);
        assert_eq!(w.get::<Facing>(a), Some(&Facing(Vec2::new(1.0, 0.0))));
    }

    #[test]
    fn analog_intent_walks_slower() {
        let mut w = world();
        let a = spawn_squirrel(&mut w, 0, 0, tile_centre(2, 6));
        w.get_mut::<Intent>(a).expect("a").0 = Vec2::new(0.0, -0.5);
        run(&mut w, move_squirrels);
        assert!((pos(&w, a).y - (6.5 - 0.1)).abs() < 1e-5);
        assert_eq!(w.get::<Facing>(a), Some(&Facing(Vec2::new(0.0, -1.0))));
    }

    #[test]
    fn dash_goes_fast_along_facing_and_stun_freezes() {
        let mut w = world();
        let a = spawn_squirrel(&mut w, 0, 0, tile_centre(2, 6));
        let b = spawn_squirrel(&mut w, 1, 1, tile_centre(2, 7));
        w.get_mut::<Dash>(a).expect("a").ticks_left = 3;
        w.get_mut::<Intent>(b).expect("b").0 = Vec2::new(1.0, 0.0);
        w.get_mut::<Stun>(b).expect("b").0 = 5;
        run(&mut w, move_squirrels);
        assert!((pos(&w, a).x - (2.5 + 12.0 / 20.0)).abs() < 1e-5);
        assert_eq!(pos(&w, b), tile_centre(2, 7));
    }

    #[test]
    fn idle_squirrels_are_not_marked_changed() {
        let mut w = world();
        let a = spawn_squirrel(&mut w, 0, 0, tile_centre(2, 6));
        let mut schedule = Schedule::default();
        schedule.add_systems(move_squirrels);
        schedule.run(&mut w);
        w.clear_trackers();
        let before = w
            .entity(a)
            .get_ref::<Position>()
            .expect("pos")
            .last_changed();
        schedule.run(&mut w);
        let after = w
            .entity(a)
            .get_ref::<Position>()
            .expect("pos")
            .last_changed();
        assert_eq!(before, after);
    }
}
