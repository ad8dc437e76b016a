//! Tests of the `Match` facade: lifecycle, joining, presence, hostile input,
//! determinism and the delta's size.

use std::time::Duration;

use super::bot::Bot;
use super::components::{Dash, Position, Vec2};
use super::input::{encode, Input};
use super::resources::{GameRng, Roster};
use super::*;

fn config(map: &str) -> MatchConfig {
    MatchConfig {
        seed: 42,
        ..MatchConfig::new(maps::builtin(map).expect("map"))
    }
}

fn short_match(players: usize) -> Match {
    let mut game = Match::new(MatchConfig {
        duration: Duration::from_secs(10),
        countdown: Duration::from_secs(1),
        max_players: 16,
        ..config("oak-city")
    })
    .expect("config");
    for i in 0..players {
        game.add_player(&format!("p{i}"), None).expect("join");
    }
    game
}

fn input(seq: u32, x: f32, y: f32, dash: bool) -> Vec<u8> {
    encode(&Input {
        seq,
        dir: Vec2::new(x, y),
        dash,
    })
}

fn position(game: &Match, p: PlayerId) -> Vec2 {
    let e = game
        .world()
        .resource::<Roster>()
        .entity(p)
        .expect("in roster");
    game.world().get::<Position>(e).expect("position").0
}

fn run_until(game: &mut Match, phase: Phase) -> TickOutput {
    for _ in 0..100_000 {
        let out = game.tick();
        if out.phase == phase {
            return out;
        }
    }
    panic!("never reached {phase:?}");
}

#[test]
fn config_is_validated() {
    let bad = |c: MatchConfig| Match::new(c).expect_err("invalid");
    assert_eq!(
        bad(MatchConfig {
            tick_hz: 0,
            ..config("oak-city")
        }),
        ConfigError::TickRate(0)
    );
    assert_eq!(
        bad(MatchConfig {
            tick_hz: 61,
            ..config("oak-city")
        }),
        ConfigError::TickRate(61)
    );
    assert!(matches!(
        bad(MatchConfig {
            teams: Some(1),
            ..config("oak-city")
        }),
        ConfigError::Teams { .. }
    ));
    assert!(matches!(
        bad(MatchConfig {
            teams: Some(3),
            ..config("pine-grove")
        }),
        ConfigError::Teams { .. }
    ));
    assert_eq!(
        bad(MatchConfig {
            max_players: 0,
            ..config("oak-city")
        }),
        ConfigError::MaxPlayers(0)
    );
    assert_eq!(
        bad(MatchConfig {
            max_players: 257,
            ..config("oak-city")
        }),
        ConfigError::MaxPlayers(257)
    );
    assert_eq!(
        bad(MatchConfig {
            acorn_cap: Some(0),
            ..config("oak-city")
        }),
        ConfigError::AcornCap(0)
    );
    for hz in [1, 60] {
        Match::new(MatchConfig {
            tick_hz: hz,
            ..config("oak-city")
        })
        .expect("valid rate");
    }
}

#[test]
fn full_lifecycle_with_results() {
    let mut game = short_match(2);
    assert_eq!(game.phase(), Phase::Lobby);
    let out = game.tick();
    assert_eq!(
        (out.tick, out.phase),
        (1, Phase::Countdown),
        "two players auto-start"
    );
    assert!(out.phase_changed);
    let summary = game.summary();
    assert_eq!(summary.time_left_ms, 1000);
    let out = run_until(&mut game, Phase::Running);
    assert_eq!(out.tick, 21);
    assert_eq!(game.summary().time_left_ms, 10_000);
    assert!(game.results().is_none());
    let out = run_until(&mut game, Phase::Ended);
    assert_eq!(out.tick, 221);
    let results = game.results().expect("results").clone();
    assert_eq!(results.ended_tick, 221);
    assert_eq!(results.players.len(), 2);
    assert_eq!(results.teams.len(), 4);
    let summary = game.summary();
    assert_eq!(summary.winner, results.winner);
    // Ended is final: no joins, no inputs, no more changes.
    assert_eq!(game.add_player("late", None), Err(JoinError::Ended));
    assert_eq!(
        game.push_input(PlayerId(0), &input(1, 1.0, 0.0, false)),
        Err(InputError::MatchEnded)
    );
    let out = game.tick();
    assert_eq!(out.phase, Phase::Ended);
    assert!(!out.phase_changed);
    assert_eq!(game.results(), Some(&results));
}

#[test]
fn manual_start_without_auto_start() {
    let mut game = Match::new(MatchConfig {
        auto_start: None,
        countdown: Duration::ZERO,
        ..config("pine-grove")
    })
    .expect("config");
    game.add_player("a", None).expect("join");
    game.add_player("b", None).expect("join");
    assert_eq!(game.tick().phase, Phase::Lobby);
    assert!(game.start());
    assert_eq!(
        game.tick().phase,
        Phase::Running,
        "zero countdown goes straight to running"
    );
    assert!(!game.start());
}

#[test]
fn joining_balances_teams_and_checks_limits() {
    let mut game = Match::new(MatchConfig {
        max_players: 4,
        ..config("pine-grove")
    })
    .expect("config");
    assert_eq!(game.add_player("", None), Err(JoinError::BadName));
    assert_eq!(game.add_player("   ", None), Err(JoinError::BadName));
    assert_eq!(game.add_player("a\nb", None), Err(JoinError::BadName));
    assert_eq!(
        game.add_player(&"x".repeat(17), None),
        Err(JoinError::BadName)
    );
    assert_eq!(
        game.add_player("Hazel", Some(2)),
        Err(JoinError::NoSuchTeam)
    );
    let a = game.add_player("  Hazel ", None).expect("join");
    let b = game.add_player("Bob", None).expect("join");
    assert_eq!((a, b), (PlayerId(0), PlayerId(1)));
    let s = game.summary();
    assert_eq!(s.players[0].name, "Hazel");
    assert_eq!(
        (s.players[0].team, s.players[1].team),
        (0, 1),
        "smallest team first"
    );
    game.add_player("Cy", Some(0)).expect("join team 0");
    assert_eq!(game.add_player("Di", Some(0)), Err(JoinError::TeamFull));
    game.add_player("Di", None).expect("join");
    assert_eq!(game.add_player("Ed", None), Err(JoinError::Full));
    assert_eq!(game.player_count(), 4);
}

#[test]
fn players_can_join_a_running_match() {
    let mut game = short_match(2);
    run_until(&mut game, Phase::Running);
    let late = game.add_player("late", Some(3)).expect("join running");
    let out = game.tick();
    assert!(out.changed >= 1);
    let burrow = maps::builtin("oak-city").expect("map").burrow_tiles(3)[0];
    let p = position(&game, late);
    assert!(
        (p.x - burrow.0 as f32).abs() < 2.0 && (p.y - burrow.1 as f32).abs() < 2.0,
        "starts at home"
    );
}

#[test]
fn disconnect_grace_and_reconnect() {
    let mut game = Match::new(MatchConfig {
        grace: Duration::from_secs(1),
        ..config("pine-grove")
    })
    .expect("config");
    let a = game.add_player("a", None).expect("join");
    let b = game.add_player("b", None).expect("join");
    run_until(&mut game, Phase::Running);
    game.push_input(a, &input(1, 1.0, 0.0, false))
        .expect("input");
    game.tick();
    game.set_connected(a, false).expect("known");
    let p0 = position(&game, a);
    for _ in 0..10 {
        game.tick();
    }
    assert_eq!(
        position(&game, a),
        p0,
        "a disconnected squirrel stands still"
    );
    assert!(!game.summary().players[0].connected);
    game.set_connected(a, true).expect("reconnect within grace");
    for _ in 0..40 {
        game.tick();
    }
    assert_eq!(game.player_count(), 2, "kept after reconnecting");
    game.set_connected(b, false).expect("known");
    for _ in 0..19 {
        game.tick();
    }
    assert_eq!(game.player_count(), 2, "within grace");
    game.tick();
    assert_eq!(game.player_count(), 1, "grace over");
    assert_eq!(game.set_connected(b, true), Err(UnknownPlayer));
    assert_eq!(
        game.push_input(b, &input(5, 1.0, 0.0, false)),
        Err(InputError::UnknownPlayer)
    );
    // The freed id goes to the next player.
    assert_eq!(game.add_player("c", None), Ok(b));
}

#[test]
fn leaving_takes_effect_on_the_next_tick() {
    let mut game = short_match(3);
    game.tick();
    game.remove_player(PlayerId(1)).expect("known");
    assert_eq!(
        game.remove_player(PlayerId(1)),
        Err(UnknownPlayer),
        "already leaving"
    );
    assert_eq!(
        game.push_input(PlayerId(1), &input(1, 1.0, 0.0, false)),
        Err(InputError::UnknownPlayer)
    );
    assert_eq!(game.player_count(), 3);
    game.tick();
    assert_eq!(game.player_count(), 2);
}

#[test]
fn inputs_move_squirrels_and_are_acked() {
    let mut game = short_match(2);
    run_until(&mut game, Phase::Running);
    let a = PlayerId(0);
    let p0 = position(&game, a);
    game.push_input(a, &input(7, 1.0, 0.0, false))
        .expect("input");
    game.tick();
    let p1 = position(&game, a);
    assert!((p1.x - p0.x - 0.2).abs() < 1e-4, "{p0:?} -> {p1:?}");
    let e = game.world().resource::<Roster>().entity(a).expect("entity");
    assert_eq!(
        game.world()
            .get::<super::components::InputAck>(e)
            .map(|a| a.0),
        Some(7)
    );
    // The direction is held until the next input.
    game.tick();
    assert!((position(&game, a).x - p1.x - 0.2).abs() < 1e-4);
    game.push_input(a, &input(8, 0.0, 0.0, false))
        .expect("input");
    game.tick();
    let p3 = position(&game, a);
    game.tick();
    assert_eq!(position(&game, a), p3);
}

#[test]
fn hostile_inputs_are_rejected_counted_and_isolated() {
    let mut game = short_match(2);
    run_until(&mut game, Phase::Running);
    let (evil, good) = (PlayerId(0), PlayerId(1));
    let mut rng = GameRng::new(99);
    let mut rejected = 0u64;
    for round in 0..200u32 {
        // The good player sends one valid input per tick.
        game.push_input(
            good,
            &input(round + 1, 0.0, 1.0 - 2.0 * (round % 2) as f32, false),
        )
        .expect("good input");
        // The evil player floods garbage, replays and malformed messages.
        for _ in 0..50 {
            let len = rng.below(80) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if game.push_input(evil, &bytes).is_err() {
                rejected += 1;
            }
        }
        let before = game.tick_count();
        let out = game.tick();
        assert_eq!(out.tick, before + 1);
        let e = game
            .world()
            .resource::<Roster>()
            .entity(good)
            .expect("good");
        assert_eq!(
            game.world()
                .get::<super::components::InputAck>(e)
                .map(|a| a.0),
            Some(round + 1),
            "the good player's inputs are all applied"
        );
    }
    let stats = game.input_stats();
    assert_eq!(stats.accepted, 200 + (200 * 50 - rejected));
    assert_eq!(stats.rejected_total(), rejected);
    assert!(
        stats.rejected_for(InputError::RateLimited) >= 200 * 46,
        "{stats:?}"
    );
    assert_eq!(game.summary().players[1].rejected_inputs, 0);
    assert_eq!(game.summary().players[0].rejected_inputs as u64, rejected);
}

#[test]
fn specific_hostile_inputs() {
    let mut game = short_match(2);
    run_until(&mut game, Phase::Running);
    let p = PlayerId(0);
    let e = game.world().resource::<Roster>().entity(p).expect("entity");
    // Use up the starting charge.
    game.push_input(p, &input(1, 1.0, 0.0, true))
        .expect("dash with a charge");
    game.tick();
    assert_eq!(game.world().get::<Dash>(e).map(|d| d.charges), Some(0));
    assert_eq!(
        game.push_input(p, &input(2, 1.0, 0.0, true)),
        Err(InputError::NoCharges)
    );
    assert_eq!(game.push_input(p, &input(2, 1.0, 0.0, false)), Ok(()));
    assert_eq!(
        game.push_input(p, &input(2, 1.0, 0.0, false)),
        Err(InputError::StaleSeq)
    );
    assert_eq!(
        game.push_input(p, &input(1, 1.0, 0.0, false)),
        Err(InputError::StaleSeq)
    );
    assert_eq!(
        game.push_input(p, &input(3, 1.0, 0.0, false)),
        Err(InputError::RateLimited),
        "4 per tick"
    );
    game.tick();
    let nan = [
        0x82, 0xa3, b's', b'e', b'q', 0x09, 0xa3, b'd', b'i', b'r', 0x92, 0xca, 0x7f, 0xc0, 0, 0,
        0x00,
    ];
    assert_eq!(game.push_input(p, &nan), Err(InputError::BadValue));
    let unknown = [
        0x82, 0xa3, b's', b'e', b'q', 0x09, 0xa3, b'h', b'p', b'!', 0x01,
    ];
    assert_eq!(game.push_input(p, &unknown), Err(InputError::UnknownField));
    let huge_array = [
        0x82, 0xa3, b's', b'e', b'q', 0x09, 0xa3, b'd', b'i', b'r', 0xdd, 0xff, 0xff, 0xff, 0xff,
    ];
    assert_eq!(game.push_input(p, &huge_array), Err(InputError::Malformed));
    assert_eq!(game.push_input(p, &[0xc1; 200]), Err(InputError::TooLarge));
    assert_eq!(
        game.push_input(p, &input(10, 0.0, 0.0, false)),
        Err(InputError::RateLimited)
    );
    game.tick();
    assert_eq!(
        game.push_input(PlayerId(77), &input(1, 0.0, 0.0, false)),
        Err(InputError::UnknownPlayer)
    );
    assert_eq!(
        game.push_input(PlayerId(u16::MAX), &input(1, 0.0, 0.0, false)),
        Err(InputError::UnknownPlayer)
    );
    let stats = game.input_stats();
    for (reason, n) in [
        (InputError::NoCharges, 1),
        (InputError::StaleSeq, 2),
        (InputError::RateLimited, 2),
        (InputError::BadValue, 1),
        (InputError::UnknownField, 1),
        (InputError::Malformed, 1),
        (InputError::TooLarge, 1),
        (InputError::UnknownPlayer, 2),
    ] {
        assert_eq!(stats.rejected_for(reason), n, "{}", reason.reason());
    }
    assert!(stats.by_reason().any(|(r, n)| r == "no_charges" && n == 1));
}

fn play(seed: u64, ticks: u32) -> Vec<Vec<u8>> {
    let mut game = Match::new(MatchConfig {
        seed,
        max_players: 8,
        ..config("oak-city")
    })
    .expect("config");
    let mut bots: Vec<Bot> = (0..8)
        .map(|i| Bot::new(game.add_player(&format!("b{i}"), None).expect("join"), i))
        .collect();
    let mut out = Vec::new();
    for _ in 0..ticks {
        for bot in &mut bots {
            if let Some(msg) = bot.think(&game) {
                game.push_input(bot.player, &msg)
                    .expect("bot input is valid");
            }
        }
        out.push(game.tick().message().to_vec());
    }
    out
}

#[test]
fn same_seed_same_match() {
    let a = play(5, 400);
    assert_eq!(a, play(5, 400));
    assert_ne!(a, play(6, 400));
}

#[test]
fn idle_ticks_send_almost_nothing() {
    let mut game = short_match(4);
    run_until(&mut game, Phase::Running);
    for _ in 0..30 {
        game.tick();
    }
    let out = game.tick();
    assert!(out.keyframe.is_none());
    assert_eq!(out.changed, 0, "nobody moved");
    assert!(out.delta.len() <= 6, "{:02x?}", out.delta);
}

#[test]
fn time_left_and_summary_serialise() {
    let game = short_match(2);
    let json = serde_json::to_value(game.summary()).expect("json");
    assert_eq!(json["phase"], "lobby");
    assert_eq!(json["players"][0]["name"], "p0");
    assert_eq!(json["max_players"], 16);
}

#[test]
fn match_is_send() {
    fn send<T: Send>() {}
    send::<Match>();
}

/// Measures a 16-player match of bots on Oak City: bytes per changed entity
/// in deltas, and state bytes per player per second (what one client
/// receives: `TickOutput::message()` each tick). Prints the figures and
/// checks the targets.
#[test]
fn delta_size_targets() {
    let (per_entity, per_second) = measure_state_bytes(16, 60);
    println!("16 players: {per_entity:.2} bytes per changed entity, {per_second:.0} state bytes/s per player");
    assert!(per_entity <= 4.0, "{per_entity}");
    assert!(per_second <= 3000.0, "{per_second}");
}

/// `(bytes per changed entity in deltas, bytes per second on the state topic)`
/// over `seconds` of running play with `players` bots on Oak City.
pub(crate) fn measure_state_bytes(players: u16, seconds: u32) -> (f64, f64) {
    let mut game = Match::new(MatchConfig {
        max_players: players,
        duration: Duration::from_secs(seconds as u64 + 10),
        ..config("oak-city")
    })
    .expect("config");
    let mut bots: Vec<Bot> = (0..players)
        .map(|i| {
            Bot::new(
                game.add_player(&format!("squirrel{i}"), None)
                    .expect("join"),
                i as u64,
            )
        })
        .collect();
    run_until(&mut game, Phase::Running);
    for _ in 0..40 {
        game.tick();
    }
    let (mut delta_bytes, mut changed, mut total) = (0usize, 0u64, 0usize);
    let hz = game.tick_hz();
    for _ in 0..seconds * hz {
        for bot in &mut bots {
            if let Some(msg) = bot.think(&game) {
                let _ = game.push_input(bot.player, &msg);
            }
        }
        let out = game.tick();
        if out.keyframe.is_none() {
            delta_bytes += out.delta.len();
            changed += out.changed as u64;
        }
        total += out.message().len();
    }
    (
        delta_bytes as f64 / changed.max(1) as f64,
        total as f64 / seconds as f64,
    )
}
