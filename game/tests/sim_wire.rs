//! The wire schema from a client's side: a reference decoder written from
//! docs/GAME.md with an independent MessagePack library (rmpv) applies
//! keyframes and deltas and must reproduce the server's state exactly (in
//! wire units: 1/16 tile), tick after tick, through joins, leaves, dashes,
//! knock-outs, the whole lifecycle and lost messages.

use std::collections::BTreeMap;
use std::time::Duration;

use acorn_game::sim::bot::Bot;
use acorn_game::sim::components::{
    Acorn, Carry, Dash, InputAck, PlayerName, Position, Presence, Score, Squirrel, Stun,
};
use acorn_game::sim::net::wire;
use acorn_game::sim::resources::TeamScores;
use acorn_game::sim::{maps, Match, MatchConfig, Phase};
use rmpv::Value;

/// A squirrel as a client knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sq {
    team: u64,
    name: String,
    x: i64,
    y: i64,
    status: u64,
    score: u64,
    ack: u64,
}

/// A client's picture of the match, built only from state messages.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ClientState {
    tick: u64,
    phase: (u64, u64),
    winner: Option<Option<u64>>,
    squirrels: BTreeMap<u64, Sq>,
    acorns: BTreeMap<u64, (u64, u64, u64)>,
    team_scores: Vec<u64>,
}

#[derive(Debug, PartialEq, Eq)]
enum Applied {
    Keyframe,
    Delta,
    /// Older than (or the same tick as) what the client has: ignored.
    Stale,
    /// A tick is missing: the client drops its state and waits for a keyframe.
    Gap,
}

#[derive(Default)]
struct Client {
    state: Option<ClientState>,
    events: Vec<Vec<u64>>,
    keyframes: usize,
    deltas: usize,
}

fn uint(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected uint, got {v}"))
}

fn int(v: &Value) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("expected int, got {v}"))
}

fn arr(v: &Value) -> &[Value] {
    v.as_array()
        .unwrap_or_else(|| panic!("expected array, got {v}"))
}

fn squirrel<'a>(state: &'a mut ClientState, id: &Value) -> &'a mut Sq {
    state
        .squirrels
        .get_mut(&uint(id))
        .expect("change to a known squirrel")
}

impl Client {
    fn apply(&mut self, bytes: &[u8]) -> Applied {
        let mut rd = bytes;
        let msg = rmpv::decode::read_value(&mut rd).expect("valid MessagePack");
        assert!(rd.is_empty(), "one value per message");
        let entries = msg.as_map().expect("a map");
        let get = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| key.as_str() == Some(k))
                .map(|(_, v)| v)
        };
        for (k, _) in entries {
            let k = k.as_str().expect("string keys");
            assert!(
                ["d", "k", "P", "W", "r", "R", "a", "A", "m", "M", "s", "p", "q", "S", "e"]
                    .contains(&k),
                "unknown key {k}"
            );
        }
        let mut state = if let Some(k) = get("k") {
            self.keyframes += 1;
            ClientState {
                tick: uint(k),
                ..ClientState::default()
            }
        } else {
            let d = uint(get("d").expect("a delta has d"));
            let Some(mut state) = self.state.take() else {
                return Applied::Gap;
            };
            if d <= state.tick {
                self.state = Some(state);
                return Applied::Stale;
            }
            if d != state.tick + 1 {
                return Applied::Gap;
            }
            self.deltas += 1;
            state.tick = d;
            state
        };
        let is_keyframe = get("k").is_some();
        // 1. removals
        if let Some(r) = get("r") {
            for id in arr(r) {
                assert!(
                    state.squirrels.remove(&uint(id)).is_some(),
                    "removed unknown squirrel"
                );
            }
        }
        if let Some(r) = get("R") {
            for id in arr(r) {
                assert!(
                    state.acorns.remove(&uint(id)).is_some(),
                    "removed unknown acorn"
                );
            }
        }
        // 2. additions
        if let Some(a) = get("a") {
            for rec in arr(a) {
                let f = arr(rec);
                assert_eq!(f.len(), 8);
                let sq = Sq {
                    team: uint(&f[1]),
                    name: f[2].as_str().expect("name").to_string(),
                    x: uint(&f[3]) as i64,
                    y: uint(&f[4]) as i64,
                    status: uint(&f[5]),
                    score: uint(&f[6]),
                    ack: uint(&f[7]),
                };
                let replaced = state.squirrels.insert(uint(&f[0]), sq);
                assert!(replaced.is_none(), "added a squirrel twice");
            }
        }
        if let Some(a) = get("A") {
            let f = arr(a);
            assert_eq!(f.len() % 4, 0);
            for c in f.chunks(4) {
                let replaced = state
                    .acorns
                    .insert(uint(&c[0]), (uint(&c[1]), uint(&c[2]), uint(&c[3])));
                assert!(replaced.is_none(), "added an acorn twice");
            }
        }
        // 3. changes
        if let Some(m) = get("m") {
            let f = arr(m);
            assert_eq!(f.len() % 2, 0);
            for c in f.chunks(2) {
                let packed = uint(&c[1]);
                assert!(packed <= 120);
                let (dx, dy) = (packed as i64 / 11 - 5, packed as i64 % 11 - 5);
                assert!(dx != 0 || dy != 0, "a zero move is never sent");
                let s = squirrel(&mut state, &c[0]);
                s.x += dx;
                s.y += dy;
            }
        }
        if let Some(m) = get("M") {
            let f = arr(m);
            assert_eq!(f.len() % 3, 0);
            for c in f.chunks(3) {
                let s = squirrel(&mut state, &c[0]);
                s.x += int(&c[1]);
                s.y += int(&c[2]);
            }
        }
        for (key, field) in [("s", 0), ("p", 1), ("q", 2)] {
            if let Some(v) = get(key) {
                let f = arr(v);
                assert_eq!(f.len() % 2, 0);
                for c in f.chunks(2) {
                    let s = squirrel(&mut state, &c[0]);
                    let v = uint(&c[1]);
                    match field {
                        0 => s.status = v,
                        1 => s.score = v,
                        _ => s.ack = v,
                    }
                }
            }
        }
        if let Some(s) = get("S") {
            state.team_scores = arr(s).iter().map(uint).collect();
        } else {
            assert!(!is_keyframe, "a keyframe has the team scores");
        }
        if let Some(p) = get("P") {
            let f = arr(p);
            state.phase = (uint(&f[0]), uint(&f[1]));
            state.winner = None;
        } else {
            assert!(!is_keyframe, "a keyframe has the phase");
        }
        if let Some(w) = get("W") {
            state.winner = Some(w.as_u64());
        }
        if let Some(e) = get("e") {
            for ev in arr(e) {
                self.events.push(arr(ev).iter().map(uint).collect());
            }
        }
        self.state = Some(state);
        if is_keyframe {
            Applied::Keyframe
        } else {
            Applied::Delta
        }
    }
}

/// The server's state in wire units, read straight from the ECS world.
fn server_state(game: &Match) -> ClientState {
    let world = game.world();
    let mut q = world
        .try_query::<(
            &Squirrel,
            &PlayerName,
            &Position,
            &Carry,
            &Dash,
            &Stun,
            &Presence,
            &Score,
            &InputAck,
        )>()
        .expect("squirrel components registered");
    let squirrels = q
        .iter(world)
        .map(|(sq, name, pos, carry, dash, stun, presence, score, ack)| {
            (
                sq.id.0 as u64,
                Sq {
                    team: sq.team as u64,
                    name: name.0.to_string(),
                    x: wire::quantise(pos.0.x) as i64,
                    y: wire::quantise(pos.0.y) as i64,
                    status: wire::status(carry, dash, stun, presence) as u64,
                    score: score.0 as u64,
                    ack: ack.0 as u64,
                },
            )
        })
        .collect();
    let acorns = world
        .try_query::<&Acorn>()
        .map(|mut q| {
            q.iter(world)
                .map(|a| {
                    (
                        a.id as u64,
                        (a.tile.0 as u64, a.tile.1 as u64, a.kind as u64),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let summary = game.summary();
    let phase = summary.phase as u64;
    ClientState {
        tick: summary.tick as u64,
        phase: (phase, 0), // end tick compared separately
        winner: (summary.phase == Phase::Ended).then_some(summary.winner.map(u64::from)),
        squirrels,
        acorns,
        team_scores: world
            .resource::<TeamScores>()
            .0
            .iter()
            .map(|&s| s as u64)
            .collect(),
    }
}

fn assert_in_sync(client: &Client, game: &Match, who: &str) {
    let mine = client
        .state
        .as_ref()
        .unwrap_or_else(|| panic!("{who} has no state"));
    let mut server = server_state(game);
    server.phase.1 = mine.phase.1;
    assert_eq!(
        *mine,
        server,
        "{who} diverged at tick {}",
        game.tick_count()
    );
}

fn game(players: u16, seed: u64) -> (Match, Vec<Bot>) {
    let mut game = Match::new(MatchConfig {
        seed,
        max_players: players + 4,
        duration: Duration::from_secs(30),
        countdown: Duration::from_secs(2),
        grace: Duration::from_secs(2),
        ..MatchConfig::new(maps::builtin("oak-city").expect("map"))
    })
    .expect("config");
    let bots = (0..players)
        .map(|i| {
            Bot::new(
                game.add_player(&format!("bot{i}"), None).expect("join"),
                seed + i as u64,
            )
        })
        .collect();
    (game, bots)
}

#[test]
fn reference_client_reproduces_the_server_state() {
    let (mut game, mut bots) = game(12, 3);
    // A: receives the one message per tick (keyframe instead of delta).
    // B: receives both the delta and the keyframe on keyframe ticks.
    // C: loses messages now and then, recovering at the next keyframe.
    // D: joins late, from an on-demand keyframe.
    let (mut a, mut b, mut c, mut d) = (
        Client::default(),
        Client::default(),
        Client::default(),
        None::<Client>,
    );
    let mut rng = acorn_game::sim::resources::GameRng::new(11);
    let mut saw = BTreeMap::<&str, u32>::new();
    let mut gaps = 0;
    let mut ended_at = None;
    for tick in 1..=720u32 {
        for bot in &mut bots {
            if let Some(msg) = bot.think(&game) {
                let r = game.push_input(bot.player, &msg);
                assert!(r.is_ok() || game.phase() == Phase::Ended, "{r:?}");
            }
        }
        // Churn: a player joins, one leaves, one drops and comes back, one times out.
        match tick {
            100 => {
                let p = game.add_player("late", None).expect("join");
                bots.push(Bot::new(p, 99));
            }
            150 => game.remove_player(bots.remove(2).player).expect("leave"),
            200 => game.set_connected(bots[3].player, false).expect("drop"),
            220 => game.set_connected(bots[3].player, true).expect("back"),
            260 => {
                let gone = bots.remove(4);
                game.set_connected(gone.player, false)
                    .expect("drop for good");
            }
            _ => {}
        }
        let out = game.tick();
        assert_eq!(out.tick, tick);

        let applied = a.apply(out.message());
        assert!(
            matches!(applied, Applied::Keyframe | Applied::Delta),
            "{applied:?}"
        );
        assert_in_sync(&a, &game, "A");

        assert_eq!(
            b.apply(&out.delta),
            if tick == 1 {
                Applied::Gap
            } else {
                Applied::Delta
            }
        );
        if let Some(kf) = &out.keyframe {
            assert_eq!(b.apply(kf), Applied::Keyframe);
            // A delta of an already-applied tick is stale.
            assert_eq!(b.apply(&out.delta), Applied::Stale);
        }
        assert_in_sync(&b, &game, "B");

        let dropped = rng.below(40) == 0;
        if dropped {
            gaps += 1;
        } else if c.apply(out.message()) == Applied::Gap {
            assert!(c.state.is_none());
        }
        if !dropped && c.state.is_some() {
            assert_in_sync(&c, &game, "C");
        }

        if tick == 333 {
            let mut late = Client::default();
            assert_eq!(late.apply(&game.keyframe()), Applied::Keyframe);
            d = Some(late);
        }
        if let Some(late) = d.as_mut() {
            if tick > 333 {
                assert_eq!(
                    late.apply(out.message()),
                    if out.keyframe.is_some() {
                        Applied::Keyframe
                    } else {
                        Applied::Delta
                    }
                );
            }
            assert_in_sync(late, &game, "D");
        }

        for key in [
            "m", "M", "s", "p", "q", "r", "R", "a", "A", "S", "P", "W", "e",
        ] {
            if contains_key(out.message(), key) {
                *saw.entry(key).or_default() += 1;
            }
        }
        if out.phase == Phase::Ended && ended_at.is_none() {
            ended_at = Some(tick);
        }
    }
    assert!(
        gaps > 10 && c.state.is_some(),
        "C lost messages and recovered"
    );
    assert!(ended_at.is_some(), "the match ended");
    let results = game.results().expect("results");
    let total: u32 = results.teams.iter().map(|t| t.score).sum();
    assert!(total > 0, "bots scored: {results:?}");
    // Every section and event kind was exercised.
    for key in [
        "m", "M", "s", "p", "q", "r", "R", "a", "A", "S", "P", "W", "e",
    ] {
        assert!(
            saw.get(key).copied().unwrap_or(0) > 0,
            "section {key} never sent: {saw:?}"
        );
    }
    for code in 0..=3u64 {
        assert!(
            a.events.iter().any(|e| e[0] == code),
            "event {code} never sent"
        );
    }
    assert!(a.events.iter().any(|e| e[0] == 2), "a knock-out happened");
    let state = a.state.as_ref().expect("state");
    assert_eq!(state.phase.0, Phase::Ended as u64);
    assert_eq!(state.winner, Some(results.winner.map(u64::from)));
}

/// True if a state message's top-level map has `key` (via rmpv).
fn contains_key(bytes: &[u8], key: &str) -> bool {
    let mut rd = bytes;
    let v = rmpv::decode::read_value(&mut rd).expect("valid");
    v.as_map()
        .is_some_and(|m| m.iter().any(|(k, _)| k.as_str() == Some(key)))
}

#[test]
fn info_message_describes_the_map() {
    let (game, _) = game(2, 1);
    let info = game.info();
    let mut rd = &info[..];
    let v = rmpv::decode::read_value(&mut rd).expect("valid");
    let m = v.as_map().expect("map");
    let get = |k: &str| {
        m.iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|(_, v)| v.clone())
            .expect(k)
    };
    assert_eq!(get("map").as_str(), Some("Oak City"));
    assert_eq!(get("v").as_u64(), Some(1));
    assert_eq!(get("hz").as_u64(), Some(20));
    assert_eq!(get("q").as_u64(), Some(16));
    let grid = get("grid");
    let rows = grid.as_array().expect("rows");
    assert_eq!(rows.len() as u64, get("h").as_u64().expect("h"));
    assert!(rows
        .iter()
        .all(|r| r.as_str().map(str::len) == get("w").as_u64().map(|w| w as usize)));
    assert_eq!(get("speed").as_f64(), Some(4.0));
}
