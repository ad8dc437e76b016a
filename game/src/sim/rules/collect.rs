//! Collecting: pick acorns up, bring them home, score.

use bevy_ecs::prelude::*;

use crate::sim::components::{
    AcornKind, Carry, Dash, Position, Score, Squirrel, Stats, Stun, Vec2,
};
use crate::sim::events::GameEvent;
use crate::sim::map::tile_coord;
use crate::sim::params::{MAX_CHARGES, PICKUP_RADIUS};
use crate::sim::resources::{Acorns, GameMap, TeamScores};

use super::TickSet;

/// Adds the collecting system.
pub fn plugin(schedule: &mut Schedule) {
    schedule.add_systems(collect.in_set(TickSet::Collect));
}

/// What [`collect`] reads and writes of every squirrel.
pub type Collector = (
    Entity,
    &'static Squirrel,
    &'static Position,
    &'static Stun,
    &'static mut Carry,
    &'static mut Dash,
);

/// Each squirrel first picks up ([`pick_up`]), then delivers ([`deliver`]).
/// Scores are only touched on a delivery.
pub fn collect(
    mut commands: Commands,
    map: Res<GameMap>,
    mut acorns: ResMut<Acorns>,
    mut scores: ResMut<TeamScores>,
    mut squirrels: Query<Collector>,
    mut scorers: Query<(&mut Score, &mut Stats)>,
    mut events: MessageWriter<GameEvent>,
) {
    let any_acorns = acorns.count() > 0;
    for (entity, sq, pos, stun, mut carry, mut dash) in &mut squirrels {
        if any_acorns && stun.0 == 0 && !carry.is_full() {
            pick_up(
                &mut commands,
                &mut acorns,
                sq,
                pos.0,
                &mut carry,
                &mut dash,
                &mut events,
            );
        }
        if carry.count() > 0 && at_home(&map, sq, pos.0) {
            if let Ok((mut score, mut stats)) = scorers.get_mut(entity) {
                deliver(
                    &mut scores,
                    sq,
                    &mut carry,
                    &mut score,
                    &mut stats,
                    &mut events,
                );
            }
        }
    }
}

/// Pickup: a squirrel that is not stunned and has room picks up every acorn
/// whose tile centre is within [`PICKUP_RADIUS`] of its centre, up to the
/// carry cap. A golden acorn also gives a dash charge (at most [`MAX_CHARGES`]).
pub fn pick_up(
    commands: &mut Commands,
    acorns: &mut Acorns,
    sq: &Squirrel,
    p: Vec2,
    carry: &mut Mut<Carry>,
    dash: &mut Mut<Dash>,
    events: &mut MessageWriter<GameEvent>,
) {
    // Every tile in reach (below) is the squirrel's own or a neighbour.
    if !acorns.any_near(tile_coord(p.x), tile_coord(p.y)) {
        return;
    }
    let r2 = PICKUP_RADIUS * PICKUP_RADIUS;
    // Only tiles whose centre (t + 0.5) can be within the radius: t in
    // (p - R - 0.5, p + R - 0.5), one or two per axis (a little slack so
    // rounding never leaves out a tile the distance check would accept).
    let reach = |v: f32| {
        (
            tile_coord(v - PICKUP_RADIUS - 0.5 - 1e-3) + 1,
            tile_coord(v + PICKUP_RADIUS - 0.5 + 1e-3),
        )
    };
    let (x0, x1) = reach(p.x);
    let (y0, y1) = reach(p.y);
    for ty in y0..=y1 {
        for tx in x0..=x1 {
            if carry.is_full() {
                return;
            }
            let Some(acorn) = acorns.at(tx, ty) else {
                continue;
            };
            let (dx, dy) = (tx as f32 + 0.5 - p.x, ty as f32 + 0.5 - p.y);
            if dx * dx + dy * dy >= r2 {
                continue;
            }
            acorns.take(tx, ty);
            commands.entity(acorn.entity).despawn();
            carry.add(acorn.kind);
            if acorn.kind == AcornKind::Golden && dash.charges < MAX_CHARGES {
                dash.charges += 1;
            }
            events.write(GameEvent::Pickup {
                player: sq.id,
                acorn: acorn.id,
                kind: acorn.kind,
            });
        }
    }
}

/// True if the squirrel's centre `p` is on a tile of its own team's burrow.
#[inline]
pub fn at_home(map: &GameMap, sq: &Squirrel, p: Vec2) -> bool {
    map.burrow_team(tile_coord(p.x), tile_coord(p.y)) == Some(sq.team)
}

/// Delivery: a squirrel carrying acorns whose centre is on a tile of its own
/// team's burrow ([`at_home`]) delivers them all: the points go to the player
/// and the team.
pub fn deliver(
    scores: &mut ResMut<TeamScores>,
    sq: &Squirrel,
    carry: &mut Mut<Carry>,
    score: &mut Mut<Score>,
    stats: &mut Mut<Stats>,
    events: &mut MessageWriter<GameEvent>,
) {
    let delivered = std::mem::take(&mut **carry);
    let points = delivered.points();
    score.0 += points;
    stats.delivered += delivered.count() as u32;
    if let Some(team) = scores.0.get_mut(sq.team as usize) {
        *team += points;
    }
    events.write(GameEvent::Deliver {
        player: sq.id,
        acorns: delivered.count(),
        points,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::components::{Acorn, PlayerId};
    use crate::sim::params::{ACORN_POINTS, GOLDEN_POINTS};
    use crate::sim::rules::testkit::*;

    #[test]
    fn picks_up_nearby_acorns_only() {
        let mut w = world();
        let s = spawn_squirrel(&mut w, 0, 0, Vec2::new(3.8, 6.5));
        let near = spawn_acorn(&mut w, 4, 6, AcornKind::Plain); // centre 0.7 away: out of reach
        let on = spawn_acorn(&mut w, 3, 6, AcornKind::Golden); // centre 0.3 away
        let far = spawn_acorn(&mut w, 3, 4, AcornKind::Plain);
        run(&mut w, collect);
        assert_eq!(
            w.get::<Carry>(s),
            Some(&Carry {
                plain: 0,
                golden: 1
            })
        );
        assert_eq!(
            w.get::<Dash>(s).map(|d| d.charges),
            Some(2),
            "golden gives a charge"
        );
        assert!(w.get_entity(on).is_err(), "picked acorn is despawned");
        assert!(w.get_entity(near).is_ok() && w.get_entity(far).is_ok());
        assert_eq!(w.resource::<Acorns>().count(), 2);
        assert_eq!(
            events(&mut w),
            vec![GameEvent::Pickup {
                player: PlayerId(0),
                acorn: 1,
                kind: AcornKind::Golden
            }]
        );
        // Step closer: now the other one is within reach.
        w.get_mut::<Position>(s).expect("s").0 = Vec2::new(4.1, 6.5);
        run(&mut w, collect);
        assert_eq!(w.get::<Carry>(s).map(|c| c.count()), Some(2));
    }

    #[test]
    fn picks_up_exactly_the_acorns_within_the_radius() {
        // Squirrel centres on a 0.05-tile grid over two tiles, acorns on every
        // tile around: the acorns picked up are exactly those whose tile centre
        // is closer than the radius (the tile-range shortcuts leave none out).
        let r2 = PICKUP_RADIUS * PICKUP_RADIUS;
        for i in 0..40 {
            for j in 0..40 {
                let p = Vec2::new(4.0 + i as f32 * 0.05, 6.0 + j as f32 * 0.05);
                let mut w = world();
                let mut tiles = Vec::new();
                for ty in 6..=7 {
                    for tx in 2..=8 {
                        let a = spawn_acorn(&mut w, tx, ty, AcornKind::Plain);
                        let id = w.get::<Acorn>(a).expect("acorn").id;
                        tiles.push((id, (tx, ty)));
                    }
                }
                spawn_squirrel(&mut w, 0, 0, p);
                run(&mut w, collect);
                let mut picked: Vec<(i32, i32)> = events(&mut w)
                    .into_iter()
                    .filter_map(|e| match e {
                        GameEvent::Pickup { acorn, .. } => {
                            tiles.iter().find(|(id, _)| *id == acorn).map(|(_, t)| *t)
                        }
                        _ => None,
                    })
                    .collect();
                picked.sort();
                let mut expected: Vec<(i32, i32)> = tiles
                    .iter()
                    .map(|(_, t)| *t)
                    .filter(|&(tx, ty)| {
                        let (dx, dy) = (tx as f32 + 0.5 - p.x, ty as f32 + 0.5 - p.y);
                        dx * dx + dy * dy < r2
                    })
                    .collect();
                expected.sort();
                assert_eq!(picked, expected, "squirrel at {p:?}");
            }
        }
    }

    #[test]
    fn carry_cap_charge_cap_and_stun() {
        let mut w = world();
        let s = spawn_squirrel(&mut w, 0, 0, tile_centre(4, 6));
        *w.get_mut::<Carry>(s).expect("s") = Carry {
            plain: 5,
            golden: 0,
        };
        spawn_acorn(&mut w, 4, 6, AcornKind::Plain);
        run(&mut w, collect);
        assert_eq!(w.get::<Carry>(s).map(|c| c.count()), Some(5), "full paws");
        *w.get_mut::<Carry>(s).expect("s") = Carry::default();
        w.get_mut::<Stun>(s).expect("s").0 = 3;
        run(&mut w, collect);
        assert_eq!(w.get::<Carry>(s).map(|c| c.count()), Some(0), "stunned");
        w.get_mut::<Stun>(s).expect("s").0 = 0;
        w.get_mut::<Dash>(s).expect("s").charges = MAX_CHARGES;
        w.resource_mut::<Acorns>().take(4, 6);
        spawn_acorn(&mut w, 4, 6, AcornKind::Golden);
        run(&mut w, collect);
        assert_eq!(w.get::<Carry>(s).map(|c| c.golden), Some(1));
        assert_eq!(w.get::<Dash>(s).map(|d| d.charges), Some(MAX_CHARGES));
        assert_eq!(
            w.query::<&Acorn>().iter(&w).count(),
            1,
            "the acorn taken off the grid stays until despawned by its owner"
        );
    }

    #[test]
    fn delivery_scores_only_at_home() {
        let mut w = world();
        // Team 0's burrow is tiles (1..=2, 1..=2); team 1's is (9..=10, 1..=2).
        let home = spawn_squirrel(&mut w, 0, 0, tile_centre(1, 2));
        let away = spawn_squirrel(&mut w, 1, 0, tile_centre(9, 1));
        *w.get_mut::<Carry>(home).expect("h") = Carry {
            plain: 3,
            golden: 1,
        };
        *w.get_mut::<Carry>(away).expect("a") = Carry {
            plain: 2,
            golden: 0,
        };
        run(&mut w, collect);
        let points = 3 * ACORN_POINTS + GOLDEN_POINTS;
        assert_eq!(w.get::<Carry>(home), Some(&Carry::default()));
        assert_eq!(w.get::<Score>(home), Some(&Score(points)));
        assert_eq!(w.get::<Stats>(home).map(|s| s.delivered), Some(4));
        assert_eq!(
            w.get::<Carry>(away).map(|c| c.count()),
            Some(2),
            "enemy burrow"
        );
        assert_eq!(w.resource::<TeamScores>().0, vec![points, 0]);
        assert_eq!(
            events(&mut w),
            vec![GameEvent::Deliver {
                player: PlayerId(0),
                acorns: 4,
                points
            }]
        );
    }
}
