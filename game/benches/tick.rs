//! Game tick benchmark (BENCHMARKS.md, "Game tick").
//!
//! `cargo bench -p acorn --bench tick`
//!
//! Measures `push_input` of the tick's inputs + `Match::tick()` (every rule
//! system, the delta's encoding, and the keyframe every 20th tick) of a
//! running 20 Hz Oak City match with 16, 64 and 200 bot players.
//!
//! The bots play one match while their inputs are recorded; the timed match
//! is an identical one (same seed, same joins) that replays those inputs, so
//! it goes through exactly the same states without any bot logic in the timed
//! loop. Time is the thread's CPU time over batches of ticks, which keeps
//! other processes on a shared machine out of the figures (set
//! `TICK_BENCH_WALL=1` for wall-clock time instead).
//!
//! The `reference` and `reference-scan` groups are the calibration the targets
//! were set against: a bare bevy_ecs schedule with movement, pickup and a
//! compact encode (`tick/reference.rs`; pickup by grid lookup or by scanning
//! the acorns), timed in the same run so they can be compared on whatever
//! machine runs them.
//!
//! Before the timings it prints the wire sizes: bytes per changed entity in
//! deltas and state bytes per player per second (what one client receives:
//! one message per tick, the keyframe in place of the delta once a second).

use std::hint::black_box;
use std::time::{Duration, Instant};

use acorn_game::sim::bot::Bot;
use acorn_game::sim::{maps, Match, MatchConfig, Phase, PlayerId};
use criterion::{BenchmarkId, Criterion};

#[path = "tick/reference.rs"]
mod reference;

use reference::{Pickup, Reference};

/// Ticks replayed untimed before timing starts (lobby, countdown and ~15 s of play).
const WARMUP: usize = 400;
/// Ticks recorded after the warm-up (then the replay starts over).
const RECORDED: usize = 2400;

fn new_match(players: u16, seed: u64) -> Match {
    let mut game = Match::new(MatchConfig {
        seed,
        max_players: players,
        duration: Duration::from_secs(24 * 3600),
        ..MatchConfig::new(maps::builtin("oak-city").expect("map"))
    })
    .expect("config");
    for i in 0..players {
        game.add_player(&format!("squirrel{i}"), None)
            .expect("join");
    }
    game
}

/// Inputs of each tick, as the bots sent them.
type Recording = Vec<Vec<(PlayerId, Vec<u8>)>>;

/// Plays a match with bots for `ticks` ticks, recording their inputs.
fn record(players: u16, seed: u64, ticks: usize) -> Recording {
    let mut game = new_match(players, seed);
    let mut bots: Vec<Bot> = (0..players)
        .map(|i| Bot::new(PlayerId(i), seed + i as u64))
        .collect();
    let mut recording = Vec::with_capacity(ticks);
    for _ in 0..ticks {
        let mut inputs = Vec::new();
        for bot in &mut bots {
            if let Some(msg) = bot.think(&game) {
                let _ = game.push_input(bot.player, &msg);
                inputs.push((bot.player, msg));
            }
        }
        game.tick();
        recording.push(inputs);
    }
    recording
}

/// A match replayed through the recording's warm-up (lobby, countdown and
/// the first seconds of play), ready for the timed ticks.
/// `seed` must be the one the recording was made with.
fn warmed_up(players: u16, seed: u64, rec: &Recording) -> Match {
    let mut game = new_match(players, seed);
    for inputs in &rec[..WARMUP] {
        replay(&mut game, inputs);
    }
    game
}

/// A bare reference schedule after as many warm-up ticks.
fn warmed_up_reference(squirrels: usize, pickup: Pickup) -> Reference {
    let mut bare = Reference::new(squirrels, pickup);
    for _ in 0..WARMUP {
        bare.tick();
    }
    bare
}

/// One replayed tick.
#[inline]
fn replay(game: &mut Match, inputs: &[(PlayerId, Vec<u8>)]) {
    for (player, msg) in inputs {
        let _ = black_box(game.push_input(*player, msg));
    }
    black_box(game.tick());
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A clock: thread CPU time, or wall time with `TICK_BENCH_WALL=1`.
fn now(wall: bool, epoch: Instant) -> Duration {
    if wall {
        epoch.elapsed()
    } else {
        thread_cpu_time()
    }
}

/// Time of `iters` calls of `tick`, on the bench's clock.
fn time_ticks<T>(wall: bool, epoch: Instant, iters: u64, mut tick: impl FnMut() -> T) -> Duration {
    let start = now(wall, epoch);
    for _ in 0..iters {
        tick();
    }
    now(wall, epoch).saturating_sub(start)
}

fn print_wire_sizes() {
    println!("wire sizes (Oak City, 20 Hz, bots, 60 s of running play after warm-up):");
    for players in [16u16, 64, 200] {
        let seconds = 60;
        let rec = record(players, 1, WARMUP + seconds * 20);
        let mut game = warmed_up(players, 1, &rec);
        assert_eq!(game.phase(), Phase::Running);
        let (mut delta_bytes, mut changed, mut deltas) = (0usize, 0u64, 0u64);
        let (mut kf_bytes, mut kfs, mut total) = (0usize, 0u64, 0usize);
        for inputs in &rec[WARMUP..] {
            for (player, msg) in inputs {
                let _ = game.push_input(*player, msg);
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
        let inputs: usize = rec[WARMUP..].iter().map(Vec::len).sum();
        println!(
            "  {players:>3} players: {:.2} bytes/changed entity ({:.1} changed entities, {:.0} bytes per delta), \
             keyframe {:.0} bytes, state {:.0} bytes/s per player, {:.1} inputs/tick",
            delta_bytes as f64 / changed.max(1) as f64,
            changed as f64 / deltas.max(1) as f64,
            delta_bytes as f64 / deltas.max(1) as f64,
            kf_bytes as f64 / kfs.max(1) as f64,
            total as f64 / seconds as f64,
            inputs as f64 / (seconds * 20) as f64,
        );
    }
}

fn bench_tick(c: &mut Criterion) {
    let wall = std::env::var_os("TICK_BENCH_WALL").is_some_and(|v| v == "1");
    let epoch = Instant::now();
    let mut group = c.benchmark_group("tick");
    group.measurement_time(Duration::from_secs(6));
    for players in [16u16, 64, 200] {
        let rec = record(players, 2, WARMUP + RECORDED);
        group.bench_function(BenchmarkId::from_parameter(players), |b| {
            let fresh = || warmed_up(players, 2, &rec);
            let mut game = fresh();
            let mut t = WARMUP;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    if t == rec.len() {
                        game = fresh();
                        t = WARMUP;
                    }
                    let batch = left.min(rec.len() - t);
                    let start = now(wall, epoch);
                    for inputs in &rec[t..t + batch] {
                        replay(&mut game, inputs);
                    }
                    total += now(wall, epoch).saturating_sub(start);
                    t += batch;
                    left -= batch;
                }
                total
            });
        });
    }
    // The fixed per-match cost: a 16-player match idling in the lobby runs
    // the input, lifecycle and net systems, the rest is skipped.
    group.bench_function("lobby-16", |b| {
        let mut game = Match::new(MatchConfig {
            auto_start: None,
            ..MatchConfig::new(maps::builtin("oak-city").expect("map"))
        })
        .expect("config");
        for i in 0..16 {
            game.add_player(&format!("squirrel{i}"), None)
                .expect("join");
        }
        b.iter_custom(|iters| time_ticks(wall, epoch, iters, || black_box(game.tick())));
    });
    group.finish();
}

/// The calibration: a bare schedule (`tick/reference.rs`) with as many moving
/// entities, timed with the same clock in the same run.
fn bench_reference(c: &mut Criterion) {
    let wall = std::env::var_os("TICK_BENCH_WALL").is_some_and(|v| v == "1");
    let epoch = Instant::now();
    for (name, pickup) in [
        ("reference", Pickup::Grid),
        ("reference-scan", Pickup::Scan),
    ] {
        let mut group = c.benchmark_group(name);
        group.measurement_time(Duration::from_secs(4));
        for squirrels in [16usize, 64, 200] {
            let mut bare = warmed_up_reference(squirrels, pickup);
            group.bench_function(BenchmarkId::from_parameter(squirrels), |b| {
                b.iter_custom(|iters| time_ticks(wall, epoch, iters, || black_box(bare.tick())));
            });
        }
        group.finish();
    }
}

/// `TICK_BENCH_COUNT=<tick|reference|reference-scan>:<players>`: runs that
/// workload's recorded ticks once, outside criterion, inside
/// [`counted_ticks`], so an instruction counter can count just them
/// (`bench/tick-instructions.sh`: valgrind, since VMs rarely expose hardware
/// counters). Instructions per tick hardly depend on the machine, so they
/// compare builds across machines where times cannot.
fn count_mode(spec: &str) {
    let (what, players) = spec.split_once(':').expect("TICK_BENCH_COUNT=tick:16");
    let players: u16 = players.parse().expect("a number of players");
    match what {
        "tick" => {
            let rec = record(players, 2, WARMUP + RECORDED);
            let mut game = warmed_up(players, 2, &rec);
            counted_ticks(|| {
                for inputs in &rec[WARMUP..] {
                    replay(&mut game, inputs);
                }
            });
        }
        "reference" | "reference-scan" => {
            let pickup = match what {
                "reference" => Pickup::Grid,
                _ => Pickup::Scan,
            };
            let mut bare = warmed_up_reference(players as usize, pickup);
            counted_ticks(|| {
                for _ in 0..RECORDED {
                    black_box(bare.tick());
                }
            });
        }
        other => panic!("unknown workload {other:?}: tick, reference or reference-scan"),
    }
    println!("{RECORDED} ticks");
}

/// The counted region (`--toggle-collect='*counted_ticks*'`).
#[inline(never)]
fn counted_ticks(run: impl FnOnce()) {
    run();
}

fn main() {
    if let Ok(spec) = std::env::var("TICK_BENCH_COUNT") {
        return count_mode(&spec);
    }
    let mut c = Criterion::default().configure_from_args();
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        print_wire_sizes();
    }
    bench_reference(&mut c);
    bench_tick(&mut c);
    c.final_summary();
}
