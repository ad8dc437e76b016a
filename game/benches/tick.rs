//! Game tick benchmark (BENCHMARKS.md, "Game tick").
//!
//! `cargo bench -p acorn --bench tick` measures `push_input` of the tick's
//! inputs + `Match::tick()` (every rule system and the delta's encoding, and
//! the keyframe every 20th tick) for a running Oak City match of 16, 64 and
//! 200 bot players at 20 Hz. The bots decide outside the timed section.
//! Before the timings it prints the wire sizes: bytes per changed entity in
//! deltas and state bytes per player per second (what one client receives).

use std::hint::black_box;
use std::time::{Duration, Instant};

use acorn_game::sim::bot::Bot;
use acorn_game::sim::{maps, Match, MatchConfig, Phase, PlayerId};
use criterion::{BenchmarkId, Criterion};

fn running_match(players: u16, seed: u64) -> (Match, Vec<Bot>) {
    let mut game = Match::new(MatchConfig {
        seed,
        max_players: players,
        duration: Duration::from_secs(24 * 3600),
        ..MatchConfig::new(maps::builtin("oak-city").expect("map"))
    })
    .expect("config");
    let bots: Vec<Bot> = (0..players)
        .map(|i| Bot::new(game.add_player(&format!("squirrel{i}"), None).expect("join"), seed + i as u64))
        .collect();
    while game.phase() != Phase::Running {
        game.tick();
    }
    let mut game_bots = (game, bots);
    // Warm up into a steady state: acorns picked up, delivered, dashes.
    for _ in 0..400 {
        step(&mut game_bots.0, &mut game_bots.1, &mut Vec::new());
    }
    game_bots
}

/// Collects the bots' inputs (untimed), then pushes them and ticks (timed).
fn step(game: &mut Match, bots: &mut [Bot], inputs: &mut Vec<(PlayerId, Vec<u8>)>) -> Duration {
    inputs.clear();
    for bot in bots.iter_mut() {
        if let Some(msg) = bot.think(game) {
            inputs.push((bot.player, msg));
        }
    }
    let start = Instant::now();
    for (player, msg) in inputs.iter() {
        let _ = black_box(game.push_input(*player, msg));
    }
    let out = game.tick();
    let elapsed = start.elapsed();
    black_box(out);
    elapsed
}

fn print_wire_sizes() {
    println!("wire sizes (Oak City, 20 Hz, bots, 60 s of running play):");
    for players in [16u16, 64, 200] {
        let (mut game, mut bots) = running_match(players, 1);
        let (mut delta_bytes, mut changed, mut deltas) = (0usize, 0u64, 0u64);
        let (mut kf_bytes, mut kfs, mut total) = (0usize, 0u64, 0usize);
        let seconds = 60;
        for _ in 0..seconds * game.tick_hz() {
            for bot in bots.iter_mut() {
                if let Some(msg) = bot.think(&game) {
                    let _ = game.push_input(bot.player, &msg);
                }
            }
            let out = game.tick();
            match &out.keyframe {
                Some(kf) => {
                    kf_bytes += kf.len();
                    kfs += 1;
                }
                None => {
                    delta_bytes += out.delta.len();
                    changed += out.changed as u64;
                    deltas += 1;
                }
            }
            total += out.message().len();
        }
        println!(
            "  {players:>3} players: {:.2} bytes/changed entity ({:.1} changed entities, {:.0} bytes per delta), \
             keyframe {:.0} bytes, state {:.0} bytes/s per player",
            delta_bytes as f64 / changed.max(1) as f64,
            changed as f64 / deltas.max(1) as f64,
            delta_bytes as f64 / deltas.max(1) as f64,
            kf_bytes as f64 / kfs.max(1) as f64,
            total as f64 / seconds as f64,
        );
    }
}

fn bench_tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("tick");
    group.measurement_time(Duration::from_secs(8));
    for players in [16u16, 64, 200] {
        group.bench_function(BenchmarkId::from_parameter(players), |b| {
            let (mut game, mut bots) = running_match(players, 2);
            let mut inputs = Vec::with_capacity(players as usize);
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += step(&mut game, &mut bots, &mut inputs);
                }
                total
            });
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        print_wire_sizes();
    }
    bench_tick(&mut c);
    c.final_summary();
}
