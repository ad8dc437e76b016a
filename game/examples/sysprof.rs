// Scratch: per-system timing (not committed).
use std::sync::Arc;
use std::time::{Duration, Instant};

use acorn_game::sim::components::*;
use acorn_game::sim::net::delta::encode_delta;
use acorn_game::sim::params::Rules;
use acorn_game::sim::resources::*;
use acorn_game::sim::rules::{collect, control, dash, lifecycle, movement, spawning};
use acorn_game::sim::setup::{insert_resources, SquirrelBundle};
use bevy_ecs::prelude::*;

fn time<M>(world: &mut World, name: &str, n: usize, sys: impl IntoScheduleConfigs<bevy_ecs::system::ScheduleSystem, M>) {
    let mut s = Schedule::default();
    s.add_systems(sys);
    s.run(world);
    world.clear_trackers();
    let t = Instant::now();
    for _ in 0..n {
        world.resource_mut::<Clock>().tick += 1;
        s.run(world);
        world.clear_trackers();
    }
    println!("{name:>14}: {:>8.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
}

fn noop() {}

fn main() {
    let players: u16 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let map = Arc::new(acorn_game::sim::maps::builtin("oak-city").unwrap());
    let rules = Rules::new(20, 4, 40, 10, Duration::from_secs(3), Duration::from_secs(100000), Duration::from_secs(30), None);
    let mut w = World::new();
    insert_resources(&mut w, map.clone(), rules, players, 1);
    let mut rng = GameRng::new(5);
    let tiles = map.spawnable().to_vec();
    for i in 0..players {
        let t = tiles[rng.below(tiles.len() as u32) as usize];
        let p = Vec2::new((t % map.width() as u32) as f32 + 0.5, (t / map.width() as u32) as f32 + 0.5);
        let e = w.spawn(SquirrelBundle::new(PlayerId(i), (i % 4) as u8, "x", p, 0)).id();
        let a = rng.below(360) as f32 * 0.01745;
        w.get_mut::<Intent>(e).unwrap().0 = Vec2::new(a.cos(), a.sin());
        let mut r = w.resource_mut::<Roster>();
        r.slots[i as usize] = Some(e);
    }
    {
        let mut c = w.resource_mut::<Clock>();
        c.phase = Phase::Running; c.tick = 1; c.phase_end = 100000; c.next_spawn = 0;
    }
    bare::run(16);
    bare::run(200);
    slide_bench();
    let n = 20000;
    time(&mut w, "noop", n, noop);
    time(&mut w, "noop x10", n, (noop, noop, noop, noop, noop, noop, noop, noop, noop, noop));
    time(&mut w, "apply_inputs", n, control::apply_inputs);
    time(&mut w, "advance_phase", n, lifecycle::advance_phase);
    time(&mut w, "drop_players", n, lifecycle::drop_players);
    time(&mut w, "move", n, movement::move_squirrels);
    time(&mut w, "knock_out", n, dash::knock_out);
    time(&mut w, "collect", n, collect::collect);
    time(&mut w, "spawn", n, spawning::spawn_acorns);
    time(&mut w, "encode_delta", n, encode_delta);
    time(&mut w, "move+encode", n, (movement::move_squirrels, encode_delta).chain());
}

#[allow(dead_code)]
pub fn slide_bench() {
    use acorn_game::sim::rules::collide::slide;
    let map = acorn_game::sim::maps::builtin("oak-city").unwrap();
    let mut rng = GameRng::new(9);
    let tiles = map.spawnable().to_vec();
    let pts: Vec<(Vec2, Vec2)> = (0..1024).map(|_| {
        let t = tiles[rng.below(tiles.len() as u32) as usize];
        let p = Vec2::new((t % map.width() as u32) as f32 + 0.5, (t / map.width() as u32) as f32 + 0.5);
        let a = rng.below(360) as f32 * 0.01745;
        (p, Vec2::new(a.cos() * 0.2, a.sin() * 0.2))
    }).collect();
    let n = 2_000_000;
    let t = Instant::now();
    let mut acc = 0.0f32;
    for i in 0..n {
        let (p, d) = pts[i & 1023];
        let q = slide(&map, p, d);
        acc += q.x;
    }
    println!("slide: {:.1} ns (acc {acc})", t.elapsed().as_nanos() as f64 / n as f64);
}

mod bare {
    use super::*;
    #[derive(Component)]
    pub struct P(pub Vec2);
    #[derive(Component)]
    pub struct V(pub Vec2);
    #[derive(Component)]
    pub struct Id(pub u16);
    #[derive(Component, Default)]
    pub struct Last(pub u16, pub u16);
    #[derive(Resource, Default)]
    pub struct Out(pub Vec<u8>, pub Vec<bool>, pub u32);

    fn movement(mut q: Query<(&mut P, &V)>) {
        for (mut p, v) in &mut q {
            let mut n = p.0 + v.0 * 0.05;
            n.x = n.x.clamp(1.0, 39.0);
            n.y = n.y.clamp(1.0, 25.0);
            p.0 = n;
        }
    }
    fn pickup(mut out: ResMut<Out>, q: Query<&P>) {
        let out = &mut *out;
        for p in &q {
            let i = (p.0.y as usize) * 40 + p.0.x as usize;
            if out.1[i] {
                out.1[i] = false;
                out.2 += 1;
            }
        }
    }
    fn encode(mut out: ResMut<Out>, mut q: Query<(&Id, &P, &mut Last), Changed<P>>) {
        out.0.clear();
        for (id, p, mut last) in &mut q {
            let (x, y) = ((p.0.x * 16.0) as u16, (p.0.y * 16.0) as u16);
            out.0.push(id.0 as u8);
            out.0.push((x.wrapping_sub(last.0)) as u8);
            out.0.push((y.wrapping_sub(last.1)) as u8);
            *last = Last(x, y);
        }
    }
    pub fn run(n_ent: u16) {
        let mut w = World::new();
        w.insert_resource(Out(Vec::new(), vec![true; 40 * 26], 0));
        let mut rng = GameRng::new(3);
        for i in 0..n_ent {
            let a = rng.below(360) as f32 * 0.01745;
            w.spawn((P(Vec2::new(10.0, 10.0)), V(Vec2::new(a.cos() * 4.0, a.sin() * 4.0)), Id(i), Last::default()));
        }
        let mut s = Schedule::default();
        s.add_systems((movement, pickup, encode).chain());
        let n = 50000;
        s.run(&mut w);
        let t = Instant::now();
        for _ in 0..n {
            s.run(&mut w);
            w.clear_trackers();
        }
        println!("bare {n_ent}: {:.2} us", t.elapsed().as_nanos() as f64 / n as f64 / 1000.0);
    }
}
