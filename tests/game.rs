//! The game server end to end: matches created over the HTTP API, players
//! joining with their tokens, and a small steering client written from
//! docs/GAME.md (state from keyframes + deltas, inputs, acks) playing real
//! matches against the real binary.
//!
//! The client here is deliberately independent of `acorn_game`: it decodes the
//! MessagePack state messages with `rmpv` exactly as the doc describes, checks
//! every delta for internal consistency and every keyframe against the state
//! it tracked from the deltas before it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acorn_e2e::*;
use rmpv::Value;
use serde_json::json;
use tokio::sync::watch;

// ---------------------------------------------------------------------------
// Maps
// ---------------------------------------------------------------------------

/// 10 x 8, two teams in opposite corners, an open field of 40 grass tiles.
const TINY_MAP: &str = "\
# e2e: a tiny open field
name: Tiny Field
teams: 2
acorns: 6
golden: 25
---
TTTTTTTTTT
T11......T
T11......T
T........T
T........T
T......22T
T......22T
TTTTTTTTTT
";

/// Like [`TINY_MAP`] but without golden acorns, so dash charges never come back.
fn plain_map() -> String {
    TINY_MAP.replace("golden: 25", "golden: 0")
}

fn tiny_grid() -> Vec<String> {
    TINY_MAP
        .split("---\n")
        .nth(1)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------

async fn post_json(
    srv: &TestServer,
    path: &str,
    bearer: Option<&str>,
    body: String,
) -> (u16, serde_json::Value) {
    let mut req = srv
        .http()
        .post(format!("{}{path}", srv.http_url()))
        .header("content-type", "application/json")
        .body(body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    json_response(
        req.send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}")),
    )
    .await
}

async fn get_json(srv: &TestServer, path: &str) -> (u16, serde_json::Value) {
    let resp = srv
        .http()
        .get(format!("{}{path}", srv.http_url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    json_response(resp).await
}

async fn delete(srv: &TestServer, path: &str, bearer: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = srv.http().delete(format!("{}{path}", srv.http_url()));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    json_response(
        req.send()
            .await
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}")),
    )
    .await
}

async fn create_raw(srv: &TestServer, body: serde_json::Value) -> (u16, serde_json::Value) {
    post_json(
        srv,
        "/v1/matches",
        Some(&srv.operator_key),
        body.to_string(),
    )
    .await
}

/// Creates a match (asserting 201) and returns its id.
async fn create_match(srv: &TestServer, body: serde_json::Value) -> String {
    let (status, rec) = create_raw(srv, body.clone()).await;
    assert_eq!(status, 201, "POST /v1/matches {body} failed: {rec}");
    assert_eq!(rec["state"], "lobby", "a new match is in the lobby: {rec}");
    rec["id"]
        .as_str()
        .unwrap_or_else(|| panic!("create reply has no string `id`: {rec}"))
        .to_owned()
}

/// A match on [`TINY_MAP`] (or `map_text`) with this duration.
async fn create_tiny(srv: &TestServer, map_text: &str, duration: f64, max_players: u32) -> String {
    create_match(
        srv,
        json!({
            "map": "tiny-e2e",
            "map_text": map_text,
            "teams": 2,
            "max_players": max_players,
            "duration": duration,
            "tick_hz": 20,
        }),
    )
    .await
}

async fn join_raw(srv: &TestServer, id: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    post_json(
        srv,
        &format!("/v1/matches/{id}/join"),
        None,
        body.to_string(),
    )
    .await
}

#[derive(Clone, Debug)]
struct Joined {
    player_id: u64,
    name: String,
    token: String,
    cache: String,
    state_topic: String,
    input_topic: String,
    chat_topic: String,
}

async fn join(srv: &TestServer, id: &str, name: &str, team: Option<u8>) -> Joined {
    let mut body = json!({ "name": name });
    if let Some(t) = team {
        body["team"] = json!(t);
    }
    let (status, r) = join_raw(srv, id, body).await;
    assert_eq!(status, 200, "join {id} as {name:?} failed: {r}");
    let s = |k: &str| {
        r[k].as_str()
            .unwrap_or_else(|| panic!("join reply has no string `{k}`: {r}"))
            .to_owned()
    };
    let j = Joined {
        player_id: r["player_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("join reply has no integer `player_id`: {r}")),
        name: name.to_owned(),
        token: s("token"),
        cache: s("cache"),
        state_topic: s("state_topic"),
        input_topic: s("input_topic"),
        chat_topic: s("chat_topic"),
    };
    // The topic names of GAME.md, "Topics".
    assert_eq!(j.state_topic, format!("match.{id}.state"), "{r}");
    assert_eq!(j.chat_topic, format!("match.{id}.chat"), "{r}");
    assert_eq!(
        j.input_topic,
        format!("match.{id}.input.{}", j.player_id),
        "{r}"
    );
    assert_eq!(r["match"]["id"], id, "join reply names the match: {r}");
    j
}

async fn details(srv: &TestServer, id: &str) -> serde_json::Value {
    let (status, d) = get_json(srv, &format!("/v1/matches/{id}")).await;
    assert_eq!(status, 200, "GET /v1/matches/{id}: {d}");
    d
}

/// Polls the match details until `pred` holds (or fails after `timeout`).
async fn wait_details(
    srv: &TestServer,
    id: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let d = details(srv, id).await;
        if pred(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last details: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The player `id` in a details' `summary.players`.
fn summary_player(d: &serde_json::Value, id: u64) -> serde_json::Value {
    d["summary"]["players"]
        .as_array()
        .unwrap_or_else(|| panic!("details have no summary.players array: {d}"))
        .iter()
        .find(|p| p["id"].as_u64() == Some(id))
        .unwrap_or_else(|| panic!("player {id} not in summary.players: {d}"))
        .clone()
}

/// The JWT's `sub` claim.
fn token_sub(token: &str) -> String {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let claims: serde_json::Value =
        serde_json::from_slice(&b64url_decode(payload)).expect("JWT payload is JSON");
    claims["sub"].as_str().expect("JWT has a sub").to_owned()
}

// ---------------------------------------------------------------------------
// MessagePack reading (strict, GAME.md "MessagePack conventions")
// ---------------------------------------------------------------------------

type Res<T> = Result<T, String>;

fn decode_one(bytes: &[u8]) -> Res<Value> {
    let mut cur = std::io::Cursor::new(bytes);
    let v = rmpv::decode::read_value(&mut cur).map_err(|e| format!("undecodable: {e}"))?;
    if cur.position() as usize != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the message",
            bytes.len() - cur.position() as usize
        ));
    }
    Ok(v)
}

fn str_map(v: &Value) -> Res<Vec<(&str, &Value)>> {
    let Value::Map(entries) = v else {
        return Err(format!("not a map: {v}"));
    };
    let mut out: Vec<(&str, &Value)> = Vec::new();
    for (k, val) in entries {
        let k = k.as_str().ok_or_else(|| format!("non-string key {k}"))?;
        if out.iter().any(|(kk, _)| *kk == k) {
            return Err(format!("repeated key {k:?}"));
        }
        out.push((k, val));
    }
    Ok(out)
}

fn field<'a>(m: &[(&str, &'a Value)], key: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn uint(v: &Value, what: &str) -> Res<u64> {
    v.as_u64()
        .ok_or_else(|| format!("{what} is not an unsigned integer: {v}"))
}

fn sint(v: &Value, what: &str) -> Res<i64> {
    v.as_i64()
        .ok_or_else(|| format!("{what} is not an integer: {v}"))
}

fn arr<'a>(v: &'a Value, what: &str) -> Res<&'a [Value]> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("{what} is not an array: {v}"))
}

fn uints(v: &Value, what: &str) -> Res<Vec<u64>> {
    arr(v, what)?
        .iter()
        .map(|x| uint(x, &format!("an element of {what}")))
        .collect()
}

fn num(v: &Value, what: &str) -> Res<f64> {
    match v {
        Value::F32(f) => Ok(f64::from(*f)),
        Value::F64(f) => Ok(*f),
        Value::Integer(i) => i.as_f64().ok_or_else(|| format!("{what}: odd integer {i}")),
        _ => Err(format!("{what} is not a number: {v}")),
    }
}

// ---------------------------------------------------------------------------
// Match info
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Info {
    w: u64,
    h: u64,
    grid: Vec<String>,
    teams: u64,
    max: u64,
    hz: u64,
    q: u64,
    kf: u64,
    countdown: u64,
    duration: u64,
    carry: u64,
    charges: u64,
    speed: f64,
    slow: f64,
    dash: f64,
    half: f64,
}

impl Info {
    fn decode(bytes: &[u8]) -> Res<Info> {
        let v = decode_one(bytes)?;
        let m = str_map(&v)?;
        let u = |k: &str| -> Res<u64> {
            uint(
                field(&m, k).ok_or_else(|| format!("match info has no `{k}`"))?,
                k,
            )
        };
        let f = |k: &str| -> Res<f64> {
            num(
                field(&m, k).ok_or_else(|| format!("match info has no `{k}`"))?,
                k,
            )
        };
        if u("v")? != 1 {
            return Err(format!("match info version {} (want 1)", u("v")?));
        }
        field(&m, "map")
            .and_then(Value::as_str)
            .ok_or("match info has no string `map`")?;
        let grid = arr(field(&m, "grid").ok_or("match info has no `grid`")?, "grid")?
            .iter()
            .map(|r| r.as_str().map(str::to_owned).ok_or("grid row is not a str"))
            .collect::<Result<Vec<_>, _>>()?;
        let info = Info {
            w: u("w")?,
            h: u("h")?,
            grid,
            teams: u("teams")?,
            max: u("max")?,
            hz: u("hz")?,
            q: u("q")?,
            kf: u("kf")?,
            countdown: u("countdown")?,
            duration: u("duration")?,
            carry: u("carry")?,
            charges: u("charges")?,
            speed: f("speed")?,
            slow: f("slow")?,
            dash: f("dash")?,
            half: f("half")?,
        };
        if info.grid.len() as u64 != info.h || info.grid.iter().any(|r| r.len() as u64 != info.w) {
            return Err(format!(
                "grid is not h={} rows of w={}: {:?}",
                info.h, info.w, info.grid
            ));
        }
        Ok(info)
    }

    /// Centres (in tiles) of the burrow tiles of `team`.
    fn burrows(&self, team: u64) -> Vec<(f64, f64)> {
        let c = (b'1' + team as u8) as char;
        let mut out = Vec::new();
        for (y, row) in self.grid.iter().enumerate() {
            for (x, ch) in row.chars().enumerate() {
                if ch == c {
                    out.push((x as f64 + 0.5, y as f64 + 0.5));
                }
            }
        }
        out
    }

    fn tile(&self, x: f64, y: f64) -> Option<char> {
        if x < 0.0 || y < 0.0 {
            return None;
        }
        self.grid
            .get(y as usize)
            .and_then(|r| r.chars().nth(x as usize))
    }

    /// Most 1/16 units a squirrel may move in one tick at `speed` tiles/s
    /// (plus one for rounding).
    fn step_units(&self, speed: f64) -> i64 {
        (speed / self.hz as f64 * self.q as f64).ceil() as i64 + 1
    }
}

async fn fetch_info(srv: &TestServer, id: &str) -> Info {
    let resp = srv
        .http()
        .get(format!("{}/v1/matches/{id}/info", srv.http_url()))
        .send()
        .await
        .expect("GET info");
    assert_eq!(resp.status().as_u16(), 200, "GET /v1/matches/{id}/info");
    let bytes = resp.bytes().await.expect("info body");
    Info::decode(&bytes).unwrap_or_else(|e| panic!("match info does not follow GAME.md: {e}"))
}

// ---------------------------------------------------------------------------
// The state of a match, as a client tracks it (GAME.md "State messages")
// ---------------------------------------------------------------------------

const LOBBY: u64 = 0;
const COUNTDOWN: u64 = 1;
const RUNNING: u64 = 2;
const ENDED: u64 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Squirrel {
    team: u64,
    name: String,
    x: i64,
    y: i64,
    status: u64,
    score: u64,
    ack: u64,
}

impl Squirrel {
    fn carried(&self) -> u64 {
        self.status & 7
    }
    fn golden(&self) -> u64 {
        (self.status >> 3) & 7
    }
    fn charges(&self) -> u64 {
        (self.status >> 6) & 7
    }
    fn dashing(&self) -> bool {
        self.status & (1 << 9) != 0
    }
    fn stunned(&self) -> bool {
        self.status & (1 << 10) != 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Acorn {
    x: u64,
    y: u64,
    kind: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct GameState {
    tick: u64,
    squirrels: BTreeMap<u64, Squirrel>,
    acorns: BTreeMap<u64, Acorn>,
    phase: u64,
    end_tick: u64,
    /// `W` once seen: `Some(None)` is a draw.
    winner: Option<Option<u64>>,
    team_scores: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum GameEvent {
    Pickup {
        player: u64,
        acorn: u64,
        kind: u64,
    },
    Delivery {
        player: u64,
        acorns: u64,
        points: u64,
    },
    KnockOut {
        attacker: u64,
        victim: u64,
        acorns: u64,
    },
    Dash {
        player: u64,
    },
}

fn parse_events(v: &Value) -> Res<Vec<GameEvent>> {
    let mut out = Vec::new();
    for e in arr(v, "e")? {
        let e = uints(e, "an event")?;
        let ev = match e.as_slice() {
            [0, player, acorn, kind] => GameEvent::Pickup {
                player: *player,
                acorn: *acorn,
                kind: *kind,
            },
            [1, player, acorns, points] => GameEvent::Delivery {
                player: *player,
                acorns: *acorns,
                points: *points,
            },
            [2, attacker, victim, acorns] => GameEvent::KnockOut {
                attacker: *attacker,
                victim: *victim,
                acorns: *acorns,
            },
            [3, player] => GameEvent::Dash { player: *player },
            other => return Err(format!("unknown event {other:?}")),
        };
        out.push(ev);
    }
    Ok(out)
}

const STATE_KEYS: [&str; 15] = [
    "d", "k", "P", "W", "r", "R", "a", "A", "m", "M", "s", "p", "q", "S", "e",
];

/// A decoded state message.
struct StateMsg {
    keyframe: bool,
    tick: u64,
    value: Value,
}

fn parse_state(bytes: &[u8]) -> Res<StateMsg> {
    let value = decode_one(bytes)?;
    let m = str_map(&value)?;
    for (k, _) in &m {
        if !STATE_KEYS.contains(k) {
            return Err(format!("unknown key {k:?} in a state message"));
        }
    }
    let (keyframe, tick) = match (field(&m, "k"), field(&m, "d")) {
        (Some(k), None) => (true, uint(k, "k")?),
        (None, Some(d)) => (false, uint(d, "d")?),
        _ => return Err("a state message needs exactly one of `k` and `d`".into()),
    };
    Ok(StateMsg {
        keyframe,
        tick,
        value,
    })
}

/// What one applied message did besides changing the state.
#[derive(Default)]
struct Applied {
    events: Vec<GameEvent>,
    removed_acorns: BTreeMap<u64, Acorn>,
    /// Squirrel ids with a `q` entry.
    acked: Vec<u64>,
    added_squirrels: Vec<u64>,
}

impl GameState {
    /// Applies a delta (or, to an empty state, a keyframe) in the order of
    /// GAME.md "Applying a delta".
    fn apply(&mut self, value: &Value, n_teams: u64) -> Res<Applied> {
        let m = str_map(value)?;
        let mut out = Applied::default();
        // r, R
        if let Some(r) = field(&m, "r") {
            for id in uints(r, "r")? {
                self.squirrels
                    .remove(&id)
                    .ok_or_else(|| format!("`r` removes squirrel {id} that is not there"))?;
            }
        }
        if let Some(r) = field(&m, "R") {
            for id in uints(r, "R")? {
                let a = self
                    .acorns
                    .remove(&id)
                    .ok_or_else(|| format!("`R` removes acorn {id} that is not there"))?;
                out.removed_acorns.insert(id, a);
            }
        }
        // a, A
        if let Some(a) = field(&m, "a") {
            for rec in arr(a, "a")? {
                let rec = arr(rec, "a squirrel record")?;
                let [id, team, name, x, y, status, score, ack] = rec else {
                    return Err(format!(
                        "a squirrel record has {} values, not 8: {rec:?}",
                        rec.len()
                    ));
                };
                let id = uint(id, "squirrel id")?;
                let name = name
                    .as_str()
                    .ok_or_else(|| format!("squirrel name is not a str: {name}"))?
                    .to_owned();
                if !(1..=16).contains(&name.chars().count()) {
                    return Err(format!("squirrel name {name:?} is not 1-16 characters"));
                }
                let sq = Squirrel {
                    team: uint(team, "team")?,
                    name,
                    x: uint(x, "x")? as i64,
                    y: uint(y, "y")? as i64,
                    status: uint(status, "status")?,
                    score: uint(score, "score")?,
                    ack: uint(ack, "ack")?,
                };
                if sq.team >= n_teams {
                    return Err(format!("squirrel {id} has team {} of {n_teams}", sq.team));
                }
                if self.squirrels.insert(id, sq).is_some() {
                    return Err(format!("`a` adds squirrel {id} that is already there"));
                }
                out.added_squirrels.push(id);
            }
        }
        if let Some(a) = field(&m, "A") {
            let flat = uints(a, "A")?;
            if flat.len() % 4 != 0 {
                return Err(format!("`A` has {} values, not 4 per acorn", flat.len()));
            }
            for c in flat.chunks(4) {
                if c[3] > 1 {
                    return Err(format!("acorn {} has kind {}", c[0], c[3]));
                }
                let acorn = Acorn {
                    x: c[1],
                    y: c[2],
                    kind: c[3],
                };
                if self.acorns.insert(c[0], acorn).is_some() {
                    return Err(format!("`A` adds acorn {} that is already there", c[0]));
                }
            }
        }
        // m, M, s, p, q
        let added = out.added_squirrels.clone();
        if let Some(v) = field(&m, "m") {
            let flat = uints(v, "m")?;
            if flat.len() % 2 != 0 {
                return Err(format!("`m` has {} values, not 2 per squirrel", flat.len()));
            }
            for c in flat.chunks(2) {
                if c[1] > 120 {
                    return Err(format!("`m` packed value {} is over 120", c[1]));
                }
                let sq = squirrel_mut(&mut self.squirrels, &added, c[0], "m")?;
                sq.x += (c[1] / 11) as i64 - 5;
                sq.y += (c[1] % 11) as i64 - 5;
            }
        }
        if let Some(v) = field(&m, "M") {
            let vals = arr(v, "M")?;
            if vals.len() % 3 != 0 {
                return Err(format!("`M` has {} values, not 3 per squirrel", vals.len()));
            }
            for c in vals.chunks(3) {
                let id = uint(&c[0], "M id")?;
                let (dx, dy) = (sint(&c[1], "M dx")?, sint(&c[2], "M dy")?);
                let sq = squirrel_mut(&mut self.squirrels, &added, id, "M")?;
                sq.x += dx;
                sq.y += dy;
            }
        }
        for key in ["s", "p", "q"] {
            let Some(v) = field(&m, key) else { continue };
            let flat = uints(v, key)?;
            if flat.len() % 2 != 0 {
                return Err(format!(
                    "`{key}` has {} values, not 2 per squirrel",
                    flat.len()
                ));
            }
            for c in flat.chunks(2) {
                let sq = squirrel_mut(&mut self.squirrels, &added, c[0], key)?;
                match key {
                    "s" => sq.status = c[1],
                    "p" => sq.score = c[1],
                    _ => {
                        sq.ack = c[1];
                        out.acked.push(c[0]);
                    }
                }
            }
        }
        // S, P, W
        if let Some(v) = field(&m, "S") {
            let s = uints(v, "S")?;
            if s.len() as u64 != n_teams {
                return Err(format!("`S` has {} scores for {n_teams} teams", s.len()));
            }
            self.team_scores = s;
        }
        if let Some(v) = field(&m, "P") {
            let p = uints(v, "P")?;
            let [phase, end_tick] = p.as_slice() else {
                return Err(format!("`P` is not [phase, end_tick]: {p:?}"));
            };
            if *phase > ENDED {
                return Err(format!("unknown phase {phase}"));
            }
            if (*phase == LOBBY || *phase == ENDED) && *end_tick != 0 {
                return Err(format!("phase {phase} with end_tick {end_tick} (want 0)"));
            }
            self.phase = *phase;
            self.end_tick = *end_tick;
        }
        match (field(&m, "W"), field(&m, "P")) {
            (Some(w), Some(_)) if self.phase == ENDED => {
                let w = if w.is_nil() {
                    None
                } else {
                    Some(uint(w, "W")?)
                };
                self.winner = Some(w);
            }
            (Some(w), _) => return Err(format!("`W` {w} without `P` of phase 3")),
            (None, Some(_)) if self.phase == ENDED => {
                return Err("`P` of phase 3 without `W`".into())
            }
            _ => {}
        }
        if let Some(e) = field(&m, "e") {
            out.events = parse_events(e)?;
        }
        Ok(out)
    }

    fn delivered_points(events: &[GameEvent], player: u64) -> u64 {
        events
            .iter()
            .map(|e| match e {
                GameEvent::Delivery {
                    player: p, points, ..
                } if *p == player => *points,
                _ => 0,
            })
            .sum()
    }
}

/// The squirrel a delta's update record names: it must exist and must not
/// have been added by the same delta.
fn squirrel_mut<'a>(
    squirrels: &'a mut BTreeMap<u64, Squirrel>,
    added: &[u64],
    id: u64,
    key: &str,
) -> Res<&'a mut Squirrel> {
    if added.contains(&id) {
        return Err(format!(
            "squirrel {id} is added in this delta and also has a `{key}` record"
        ));
    }
    squirrels
        .get_mut(&id)
        .ok_or_else(|| format!("`{key}` names squirrel {id} that is not there"))
}

/// Consistency of one delta with the state before it: events agree with the
/// keys that carry their effects.
fn check_delta(
    before: &GameState,
    after: &GameState,
    applied: &Applied,
    info: &Info,
) -> Vec<String> {
    let mut problems = Vec::new();
    let tick = after.tick;
    problems.extend(check_rules(before, after, &applied.events, info));
    for e in &applied.events {
        if let GameEvent::Pickup {
            player,
            acorn,
            kind,
        } = e
        {
            match applied.removed_acorns.get(acorn) {
                None => problems.push(format!(
                    "tick {tick}: pickup event of acorn {acorn} but `R` does not remove it"
                )),
                Some(a) if a.kind != *kind => problems.push(format!(
                    "tick {tick}: pickup event says kind {kind}, the acorn was kind {}",
                    a.kind
                )),
                _ => {}
            }
            if !after.squirrels.contains_key(player) {
                problems.push(format!("tick {tick}: pickup by unknown squirrel {player}"));
            }
        }
    }
    let picked: BTreeSet<u64> = applied
        .events
        .iter()
        .filter_map(|e| match e {
            GameEvent::Pickup { acorn, .. } => Some(*acorn),
            _ => None,
        })
        .collect();
    for id in applied.removed_acorns.keys() {
        if !picked.contains(id) {
            problems.push(format!(
                "tick {tick}: acorn {id} removed without a pickup event"
            ));
        }
    }
    for (id, sq) in &after.squirrels {
        let Some(old) = before.squirrels.get(id) else {
            continue;
        };
        let points = GameState::delivered_points(&applied.events, *id);
        if sq.score != old.score + points {
            problems.push(format!(
                "tick {tick}: squirrel {id} score {} -> {} with {points} delivered points",
                old.score, sq.score
            ));
        }
        if sq.ack < old.ack {
            problems.push(format!(
                "tick {tick}: squirrel {id} ack went back {} -> {}",
                old.ack, sq.ack
            ));
        }
    }
    if !before.team_scores.is_empty() {
        for (t, score) in after.team_scores.iter().enumerate() {
            let points: u64 = after
                .squirrels
                .iter()
                .filter(|(_, s)| s.team == t as u64)
                .map(|(id, _)| GameState::delivered_points(&applied.events, *id))
                .sum();
            if *score != before.team_scores[t] + points {
                problems.push(format!(
                    "tick {tick}: team {t} score {} -> {score} with {points} delivered points",
                    before.team_scores[t]
                ));
            }
        }
    }
    problems
}

/// The rules of GAME.md that one tick (`before` -> `after`, with the events of
/// the tick) must follow: walking and dash speed, pickups within reach,
/// deliveries on an own burrow, acorns on free grass, bodies clear of trees.
fn check_rules(
    before: &GameState,
    after: &GameState,
    events: &[GameEvent],
    info: &Info,
) -> Vec<String> {
    let mut problems = Vec::new();
    let tick = after.tick;
    let q = info.q as f64;
    let moving = before.phase == RUNNING || after.phase == RUNNING;
    for (id, new) in &after.squirrels {
        // The 0.6 x 0.6 box stays off trees and inside the map (1/32 of
        // quantisation slack).
        let eps = 0.04;
        let (x, y) = (new.x as f64 / q, new.y as f64 / q);
        let h = info.half - eps;
        for (cx, cy) in [
            (x - h, y - h),
            (x + h, y - h),
            (x - h, y + h),
            (x + h, y + h),
        ] {
            match info.tile(cx, cy) {
                Some('T') | None => problems.push(format!(
                    "tick {tick}: squirrel {id} at ({x:.3}, {y:.3}) overlaps a tree or the border"
                )),
                _ => {}
            }
        }
        let Some(old) = before.squirrels.get(id) else {
            continue;
        };
        let dashed = events
            .iter()
            .any(|e| matches!(e, GameEvent::Dash { player } if player == id));
        let tol = if !moving {
            0
        } else if dashed || old.dashing() || new.dashing() {
            info.step_units(info.dash)
        } else {
            info.step_units(info.speed)
        };
        if (new.x - old.x).abs() > tol || (new.y - old.y).abs() > tol {
            problems.push(format!(
                "tick {tick}: squirrel {id} moved ({}, {})/16 in one tick (at most {tol})",
                new.x - old.x,
                new.y - old.y
            ));
        }
        let picked: Vec<&GameEvent> = events
            .iter()
            .filter(|e| matches!(e, GameEvent::Pickup { player, .. } if player == id))
            .collect();
        for e in events {
            match e {
                GameEvent::Pickup { player, acorn, .. } if player == id => {
                    let Some(a) = before.acorns.get(acorn) else {
                        continue; // reported by the caller
                    };
                    let (ax, ay) = (a.x as f64 + 0.5, a.y as f64 + 0.5);
                    let dist = |s: &Squirrel| {
                        ((s.x as f64 / q - ax).powi(2) + (s.y as f64 / q - ay).powi(2)).sqrt()
                    };
                    let d = dist(old).min(dist(new));
                    if d >= 0.6 + 0.05 {
                        problems.push(format!(
                            "tick {tick}: squirrel {id} picked up acorn {acorn} at ({}, {}) from {d:.3} tiles away",
                            a.x, a.y
                        ));
                    }
                    if old.stunned() || old.carried() >= info.carry {
                        problems.push(format!(
                            "tick {tick}: squirrel {id} picked up while stunned or full: {old:?}"
                        ));
                    }
                }
                GameEvent::Delivery {
                    player,
                    acorns,
                    points,
                } if player == id => {
                    let own = Some((b'1' + new.team as u8) as char);
                    // Positions are rounded to 1/16: the true centre is within 1/32.
                    let on = |s: &Squirrel| {
                        let (x, y) = (s.x as f64 / q, s.y as f64 / q);
                        [-0.04, 0.0, 0.04].iter().any(|dx| {
                            [-0.04, 0.0, 0.04]
                                .iter()
                                .any(|dy| info.tile(x + dx, y + dy) == own)
                        })
                    };
                    if !on(old) && !on(new) {
                        problems.push(format!(
                            "tick {tick}: squirrel {id} delivered off its burrows at ({}, {})/16",
                            new.x, new.y
                        ));
                    }
                    if picked.is_empty() {
                        let want = old.carried() + 2 * old.golden();
                        if *acorns != old.carried() || *points != want {
                            problems.push(format!(
                                "tick {tick}: squirrel {id} carrying {} ({} golden) delivered {acorns} for {points} points (want {} for {want})",
                                old.carried(),
                                old.golden(),
                                old.carried()
                            ));
                        }
                        if new.carried() != 0 || new.golden() != 0 {
                            problems.push(format!(
                                "tick {tick}: squirrel {id} still carries after delivering: {new:?}"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // Acorns lie on grass, one per tile at most.
    let mut tiles = BTreeSet::new();
    for (id, a) in &after.acorns {
        if info.tile(a.x as f64, a.y as f64) != Some('.') {
            problems.push(format!(
                "tick {tick}: acorn {id} on tile ({}, {}) which is not grass",
                a.x, a.y
            ));
        }
        if !tiles.insert((a.x, a.y)) {
            problems.push(format!(
                "tick {tick}: two acorns on tile ({}, {})",
                a.x, a.y
            ));
        }
    }
    problems
}

/// A keyframe at tick k against the state tracked from deltas up to k-1: the
/// difference must be explained by one tick of the rules and the keyframe's
/// events. With no phase change outside *running*, it must be exact (acks
/// and the disconnected bit aside, which change with inputs and connections).
fn check_keyframe(
    prev: &GameState,
    kf: &GameState,
    events: &[GameEvent],
    info: &Info,
) -> Vec<String> {
    let mut problems = Vec::new();
    let k = kf.tick;
    let mut p = |s: String| problems.push(format!("keyframe {k} vs tracked state: {s}"));
    if prev.phase == kf.phase {
        if kf.end_tick != prev.end_tick {
            p(format!(
                "end_tick {} vs tracked {}",
                kf.end_tick, prev.end_tick
            ));
        }
        if kf.winner != prev.winner {
            p(format!(
                "winner {:?} vs tracked {:?}",
                kf.winner, prev.winner
            ));
        }
    } else if kf.phase < prev.phase {
        p(format!("phase went back {} -> {}", prev.phase, kf.phase));
    }
    let moving = prev.phase == RUNNING || kf.phase == RUNNING;
    let count = |f: &dyn Fn(&GameEvent) -> bool| events.iter().filter(|e| f(e)).count() as u64;
    for (id, old) in &prev.squirrels {
        let Some(new) = kf.squirrels.get(id) else {
            continue; // removed this tick
        };
        if new.team != old.team || new.name != old.name {
            p(format!("squirrel {id} is {new:?}, tracked {old:?}"));
        }
        let dashed = count(&|e| matches!(e, GameEvent::Dash { player } if player == id)) > 0;
        let tol = if !moving {
            0
        } else if dashed || old.dashing() || new.dashing() {
            info.step_units(info.dash)
        } else {
            info.step_units(info.speed)
        };
        if (new.x - old.x).abs() > tol || (new.y - old.y).abs() > tol {
            p(format!(
                "squirrel {id} at ({}, {}), tracked ({}, {}): more than {tol}/16 in one tick",
                new.x, new.y, old.x, old.y
            ));
        }
        let points = GameState::delivered_points(events, *id);
        if new.score != old.score + points {
            p(format!(
                "squirrel {id} score {} , tracked {} + {points} delivered",
                new.score, old.score
            ));
        }
        if new.ack < old.ack {
            p(format!(
                "squirrel {id} ack {} < tracked {}",
                new.ack, old.ack
            ));
        }
        let pickups = count(&|e| matches!(e, GameEvent::Pickup { player, .. } if player == id));
        let golden =
            count(&|e| matches!(e, GameEvent::Pickup { player, kind: 1, .. } if player == id));
        let lost = count(&|e| {
            matches!(e, GameEvent::Delivery { player, .. } if player == id)
                || matches!(e, GameEvent::KnockOut { victim, .. } if victim == id)
        });
        if lost == 0
            && (new.carried() != old.carried() + pickups || new.golden() != old.golden() + golden)
        {
            p(format!(
                "squirrel {id} carries {} ({} golden), tracked {} ({}) + {pickups} picked up ({golden} golden)",
                new.carried(),
                new.golden(),
                old.carried(),
                old.golden()
            ));
        }
        if !dashed && golden == 0 && new.charges() != old.charges() {
            p(format!(
                "squirrel {id} has {} charges, tracked {}",
                new.charges(),
                old.charges()
            ));
        }
        if new.dashing() && !old.dashing() && !dashed {
            p(format!("squirrel {id} dashes without a dash event"));
        }
        let knocked = count(&|e| matches!(e, GameEvent::KnockOut { victim, .. } if victim == id));
        if new.stunned() && !old.stunned() && knocked == 0 {
            p(format!("squirrel {id} stunned without a knock-out event"));
        }
        if new.carried() > info.carry || new.charges() > info.charges {
            p(format!(
                "squirrel {id} status {:#x} over the caps",
                new.status
            ));
        }
    }
    let picked: BTreeSet<u64> = events
        .iter()
        .filter_map(|e| match e {
            GameEvent::Pickup { acorn, .. } => Some(*acorn),
            _ => None,
        })
        .collect();
    for (id, a) in &prev.acorns {
        if picked.contains(id) {
            continue;
        }
        match kf.acorns.get(id) {
            Some(b) if b == a => {}
            other => p(format!(
                "acorn {id} is {other:?}, tracked {a:?} (no pickup event)"
            )),
        }
    }
    let new_acorns = kf
        .acorns
        .keys()
        .filter(|id| !prev.acorns.contains_key(id) || picked.contains(id))
        .count() as u64;
    let scattered: u64 = events
        .iter()
        .map(|e| match e {
            GameEvent::KnockOut { acorns, .. } => *acorns,
            _ => 0,
        })
        .sum();
    let filling = prev.phase != RUNNING && kf.phase == RUNNING;
    let allowed = if filling {
        u64::MAX
    } else if prev.phase == RUNNING {
        1 + scattered
    } else {
        0
    };
    if new_acorns > allowed {
        p(format!(
            "{new_acorns} acorns appeared in one tick (at most {allowed} may spawn or scatter)"
        ));
    }
    if kf.team_scores.len() != prev.team_scores.len() {
        p(format!(
            "team scores {:?}, tracked {:?}",
            kf.team_scores, prev.team_scores
        ));
    } else {
        for (t, score) in kf.team_scores.iter().enumerate() {
            let points: u64 = kf
                .squirrels
                .iter()
                .filter(|(_, s)| s.team == t as u64)
                .map(|(id, _)| GameState::delivered_points(events, *id))
                .sum();
            if *score != prev.team_scores[t] + points {
                p(format!(
                    "team {t} score {score}, tracked {} + {points} delivered",
                    prev.team_scores[t]
                ));
            }
        }
    }
    // Outside running, with no phase change, nothing may differ but acks
    // and the disconnected bit.
    if prev.phase == kf.phase && !moving {
        let norm = |s: &GameState| {
            let mut s = s.clone();
            s.tick = 0;
            for sq in s.squirrels.values_mut() {
                sq.ack = 0;
                sq.status &= !(1 << 11);
            }
            s
        };
        if norm(prev) != norm(kf) {
            p(format!(
                "phase {} keyframe differs from the tracked state:\n  keyframe {:?}\n  tracked  {:?}",
                kf.phase,
                norm(kf),
                norm(prev)
            ));
        }
    }
    problems
}

/// The client algorithm of GAME.md plus bookkeeping and checks.
struct Tracker {
    info: Info,
    state: Option<GameState>,
    /// Tick of the last state message received (applied or not).
    last_tick: Option<u64>,
    problems: Vec<String>,
    keyframes: u64,
    deltas_applied: u64,
    ignored: u64,
    resets: u64,
    /// Keyframes checked against a tracked state: all, and exact ones (no
    /// movement possible: lobby, countdown, ended).
    kf_checked: u64,
    kf_checked_exact: u64,
    /// Exact checks in the ended phase (they cover the last deltas of the match).
    kf_checked_ended: u64,
}

impl Tracker {
    fn new(info: Info) -> Self {
        Tracker {
            info,
            state: None,
            last_tick: None,
            problems: Vec::new(),
            keyframes: 0,
            deltas_applied: 0,
            ignored: 0,
            resets: 0,
            kf_checked: 0,
            kf_checked_exact: 0,
            kf_checked_ended: 0,
        }
    }

    /// Handles one state message; returns what it applied (`None` if ignored).
    fn on_message(&mut self, bytes: &[u8]) -> Option<Applied> {
        let msg = match parse_state(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.problems.push(format!("bad state message: {e}"));
                return None;
            }
        };
        if let Some(last) = self.last_tick {
            if msg.tick != last + 1 {
                self.problems.push(format!(
                    "state message for tick {} after tick {last} (one per tick, in order)",
                    msg.tick
                ));
            }
        }
        self.last_tick = Some(msg.tick);
        let teams = self.info.teams;
        if msg.keyframe {
            let mut fresh = GameState::default();
            let applied = match fresh.apply(&msg.value, teams) {
                Ok(a) => a,
                Err(e) => {
                    self.problems.push(format!("keyframe {}: {e}", msg.tick));
                    self.state = None;
                    return None;
                }
            };
            fresh.tick = msg.tick;
            let m = str_map(&msg.value).unwrap();
            if field(&m, "P").is_none() || field(&m, "S").is_none() {
                self.problems
                    .push(format!("keyframe {} lacks `P` or `S`", msg.tick));
            }
            if let Some(prev) = &self.state {
                if prev.tick + 1 == msg.tick {
                    let mut problems = check_keyframe(prev, &fresh, &applied.events, &self.info);
                    problems.extend(check_rules(prev, &fresh, &applied.events, &self.info));
                    self.kf_checked += 1;
                    if prev.phase == fresh.phase && prev.phase != RUNNING && fresh.phase != RUNNING
                    {
                        self.kf_checked_exact += 1;
                        if fresh.phase == ENDED {
                            self.kf_checked_ended += 1;
                        }
                    }
                    self.problems.extend(problems);
                }
            }
            self.keyframes += 1;
            self.state = Some(fresh);
            return Some(applied);
        }
        let Some(state) = &mut self.state else {
            self.ignored += 1;
            return None;
        };
        if msg.tick <= state.tick {
            self.ignored += 1;
            return None;
        }
        if msg.tick != state.tick + 1 {
            self.state = None;
            self.resets += 1;
            return None;
        }
        let before = state.clone();
        match state.apply(&msg.value, teams) {
            Ok(applied) => {
                state.tick = msg.tick;
                self.problems
                    .extend(check_delta(&before, state, &applied, &self.info));
                self.deltas_applied += 1;
                Some(applied)
            }
            Err(e) => {
                self.problems.push(format!("delta {}: {e}", msg.tick));
                self.state = None;
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Inputs (GAME.md "Input")
// ---------------------------------------------------------------------------

fn input(seq: u64, dir: Option<(f32, f32)>, dash: bool) -> Vec<u8> {
    let mut pairs = vec![("seq", Value::from(seq))];
    if let Some((x, y)) = dir {
        pairs.push(("dir", Value::Array(vec![Value::F32(x), Value::F32(y)])));
    }
    if dash {
        pairs.push(("dash", Value::Boolean(true)));
    }
    let bytes = encode(&map(&pairs));
    assert!(bytes.len() <= 64, "an input is at most 64 bytes");
    bytes
}

fn input_msg(j: &Joined, bytes: &[u8]) -> Value {
    m_pub(None, &j.cache, &j.input_topic, bin(bytes))
}

// ---------------------------------------------------------------------------
// The bot: a player connection running the client algorithm and steering
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Fetch the nearest acorn, bring it home, repeat.
    Harvest,
    /// Walk back and forth along the field (keeps moving, never stops).
    Patrol,
}

struct BotCfg {
    player: Joined,
    info: Info,
    mode: Mode,
    /// Return once the match has ended and a keyframe of the ended phase
    /// was checked (or 3 s after the end).
    until_ended: bool,
    deadline: Duration,
}

#[derive(Default)]
struct BotReport {
    name: String,
    player_id: u64,
    state: Option<GameState>,
    /// Tracked state after every applied message, by tick.
    history: BTreeMap<u64, GameState>,
    /// (when, tick) of every state message received.
    received: Vec<(Instant, u64)>,
    /// (tick, event) of every applied message.
    events: Vec<(u64, GameEvent)>,
    /// (when, seq) of every input sent.
    sent: Vec<(Instant, u64)>,
    /// (when, tick, ack) of this player's ack after every applied message.
    acks: Vec<(Instant, u64, u64)>,
    /// `q` entries naming this player.
    own_q: u64,
    /// Wall time the ended phase was first seen.
    ended_at: Option<Instant>,
    /// `W` of the delta (or keyframe) that ended the match.
    winner_seen: Option<Option<u64>>,
    phases: Vec<u64>,
    problems: Vec<String>,
    errors: Vec<String>,
    keyframes: u64,
    deltas: u64,
    resets: u64,
    kf_checked: u64,
    kf_checked_exact: u64,
    kf_checked_ended: u64,
    /// The squirrel ids added by `a` in deltas (joins seen live).
    added_live: Vec<u64>,
}

impl BotReport {
    fn own<'a>(&self, s: &'a GameState) -> Option<&'a Squirrel> {
        s.squirrels.get(&self.player_id)
    }

    fn assert_clean(&self) {
        assert!(
            self.problems.is_empty(),
            "{}: the state messages disagree with GAME.md ({} problems):\n{}",
            self.name,
            self.problems.len(),
            self.problems
                .iter()
                .take(40)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            self.errors.is_empty(),
            "{}: errors on the connection: {:?}",
            self.name,
            self.errors
        );
    }
}

fn steer(info: &Info, state: &GameState, me: u64, mode: Mode, t: f64) -> (f32, f32) {
    let Some(sq) = state.squirrels.get(&me) else {
        return (0.0, 0.0);
    };
    let q = info.q as f64;
    let (x, y) = (sq.x as f64 / q, sq.y as f64 / q);
    let target = match mode {
        Mode::Patrol => {
            // Between the columns 3.5 and w-3.5 on the middle row, turning every 1.5 s.
            let left = (t / 1.5) as u64 & 1 == 0;
            let tx = if left { 3.5 } else { info.w as f64 - 3.5 };
            Some((tx, info.h as f64 / 2.0))
        }
        Mode::Harvest => {
            let nearest = |pts: &mut dyn Iterator<Item = (f64, f64)>| {
                pts.min_by(|a, b| {
                    let da = (a.0 - x).powi(2) + (a.1 - y).powi(2);
                    let db = (b.0 - x).powi(2) + (b.1 - y).powi(2);
                    da.total_cmp(&db)
                })
            };
            if sq.carried() > 0 {
                nearest(&mut info.burrows(sq.team).into_iter())
            } else {
                nearest(
                    &mut state
                        .acorns
                        .values()
                        .map(|a| (a.x as f64 + 0.5, a.y as f64 + 0.5)),
                )
            }
        }
    };
    let Some((tx, ty)) = target else {
        return (0.0, 0.0);
    };
    let (dx, dy) = (tx - x, ty - y);
    let len = (dx * dx + dy * dy).sqrt();
    if len < 0.05 {
        (0.0, 0.0)
    } else {
        ((dx / len) as f32, (dy / len) as f32)
    }
}

async fn run_bot(
    mut ws: Ws,
    cfg: BotCfg,
    stop: Arc<AtomicBool>,
    live: watch::Sender<Option<GameState>>,
) -> BotReport {
    let me = cfg.player.player_id;
    let mut report = BotReport {
        name: cfg.player.name.clone(),
        player_id: me,
        ..Default::default()
    };
    let mut tracker = Tracker::new(cfg.info.clone());
    let started = Instant::now();
    let deadline = started + cfg.deadline;
    let mut seq = 0u64;
    let mut last_sent: Option<(Instant, (f32, f32))> = None;
    let j = cfg.player.clone();
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if Instant::now() > deadline {
            report
                .errors
                .push(format!("bot deadline ({:?}) reached", cfg.deadline));
            break;
        }
        if let Some(at) = report.ended_at {
            // An exact keyframe check in the ended phase covers every delta
            // since the last keyframe of the running phase.
            if cfg.until_ended
                && (tracker.kf_checked_ended > 0 || at.elapsed() > Duration::from_secs(3))
            {
                break;
            }
        }
        match ws.next_event(Duration::from_millis(20)).await {
            Event::Timeout => {}
            Event::Msg(m) => {
                if m.is("item") && m.get("topic").and_then(Value::as_str) == Some(&j.state_topic) {
                    let Some(Value::Binary(bytes)) = m.get("value") else {
                        report
                            .problems
                            .push(format!("state item value is not bin: {m:?}"));
                        continue;
                    };
                    let now = Instant::now();
                    let keyframe = tracker_is_keyframe(bytes);
                    if let Ok(sm) = parse_state(bytes) {
                        report.received.push((now, sm.tick));
                    }
                    if let Some(applied) = tracker.on_message(bytes) {
                        let s = tracker.state.clone().expect("state after apply");
                        if applied.acked.contains(&me) {
                            report.own_q += 1;
                        }
                        if report.phases.last() != Some(&s.phase) {
                            report.phases.push(s.phase);
                        }
                        for e in &applied.events {
                            report.events.push((s.tick, e.clone()));
                        }
                        if !keyframe {
                            report
                                .added_live
                                .extend(applied.added_squirrels.iter().copied());
                        }
                        if s.phase == ENDED && report.ended_at.is_none() {
                            report.ended_at = Some(now);
                            report.winner_seen = s.winner;
                        }
                        if let Some(sq) = s.squirrels.get(&me) {
                            // Acks must be seqs this player sent, never going back.
                            if sq.ack > seq {
                                report.problems.push(format!(
                                    "tick {}: ack {} but the last seq sent is {seq}",
                                    s.tick, sq.ack
                                ));
                            }
                            report.acks.push((now, s.tick, sq.ack));
                        }
                        report.history.insert(s.tick, s.clone());
                        let _ = live.send(Some(s));
                    }
                } else if m.is("err") {
                    report.errors.push(format!("{m:?}"));
                } else if m.is("gap") {
                    report.errors.push(format!("unexpected gap: {m:?}"));
                }
            }
            other => {
                report.errors.push(format!("connection: {other:?}"));
                break;
            }
        }
        // Inputs: keep sending (at least every 250 ms), and whenever the
        // wanted direction changes, at most one per 50 ms. None after the end.
        let ended = report.ended_at.is_some();
        if !ended {
            let t = started.elapsed().as_secs_f64();
            let dir = match &tracker.state {
                Some(s) if s.phase == RUNNING => steer(&cfg.info, s, me, cfg.mode, t),
                _ => last_sent.map_or((0.0, 0.0), |(_, d)| d),
            };
            let now = Instant::now();
            let due = match last_sent {
                None => true,
                Some((at, d)) => {
                    let since = now.duration_since(at);
                    since >= Duration::from_millis(250)
                        || (since >= Duration::from_millis(50)
                            && ((d.0 - dir.0).abs() > 0.05 || (d.1 - dir.1).abs() > 0.05))
                }
            };
            if due {
                seq += 1;
                ws.send(&input_msg(&j, &input(seq, Some(dir), false))).await;
                report.sent.push((now, seq));
                last_sent = Some((now, dir));
            }
        }
    }
    report.state = tracker.state.clone();
    report.problems.extend(tracker.problems);
    report.keyframes = tracker.keyframes;
    report.deltas = tracker.deltas_applied;
    report.resets = tracker.resets;
    report.kf_checked = tracker.kf_checked;
    report.kf_checked_exact = tracker.kf_checked_exact;
    report.kf_checked_ended = tracker.kf_checked_ended;
    ws.close().await;
    report
}

fn tracker_is_keyframe(bytes: &[u8]) -> bool {
    parse_state(bytes).is_ok_and(|m| m.keyframe)
}

struct BotHandle {
    task: tokio::task::JoinHandle<BotReport>,
    stop: Arc<AtomicBool>,
    live: watch::Receiver<Option<GameState>>,
}

impl BotHandle {
    async fn start(srv: &TestServer, cfg: BotCfg) -> BotHandle {
        let mut ws = srv.ws(&cfg.player.token).await;
        let ok = ws.sub(1, &cfg.player.cache, &cfg.player.state_topic).await;
        assert!(ok.get("seq").is_some(), "sub ok carries seq: {ok:?}");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(run_bot(ws, cfg, stop.clone(), tx));
        BotHandle {
            task,
            stop,
            live: rx,
        }
    }

    /// Waits until the tracked state satisfies `pred`; returns it.
    async fn wait_state(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&GameState) -> bool,
    ) -> GameState {
        let found = {
            let r = tokio::time::timeout(
                timeout,
                self.live.wait_for(|s| s.as_ref().is_some_and(&pred)),
            )
            .await;
            match r {
                Ok(Ok(s)) => s.clone(),
                Ok(Err(_)) => panic!("the bot stopped before {what}"),
                Err(_) => None,
            }
        };
        found.unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {what}; last state: {:?}",
                self.live.borrow()
            )
        })
    }

    fn current(&self) -> Option<GameState> {
        self.live.borrow().clone()
    }

    /// Stops the bot (if it has not stopped by itself) and returns its report.
    async fn finish(self) -> BotReport {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the bot did not stop within 15 s")
            .expect("the bot task panicked")
    }

    /// Waits for the bot to return by itself (it was started `until_ended`).
    async fn join(self, timeout: Duration) -> BotReport {
        match tokio::time::timeout(timeout, self.task).await {
            Ok(r) => r.expect("the bot task panicked"),
            Err(_) => panic!("the bot did not finish within {timeout:?}"),
        }
    }
}

fn bot_cfg(player: &Joined, info: &Info, mode: Mode, until_ended: bool, deadline_s: u64) -> BotCfg {
    BotCfg {
        player: player.clone(),
        info: info.clone(),
        mode,
        until_ended,
        deadline: Duration::from_secs(deadline_s),
    }
}

/// The winner implied by team scores: the unique best team, `None` on a tie.
fn winner_of(scores: &[u64]) -> Option<u64> {
    let best = *scores.iter().max()?;
    let mut at = scores.iter().enumerate().filter(|(_, s)| **s == best);
    let first = at.next()?.0 as u64;
    if at.next().is_some() {
        None
    } else {
        Some(first)
    }
}

// ---------------------------------------------------------------------------
// 1. A full match
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_match_two_bots_harvest_score_and_the_results_agree() {
    let srv = TestServer::start(&[]);
    let duration = 12.0;
    let id = create_tiny(&srv, TINY_MAP, duration, 4).await;

    // The static info follows GAME.md "Match info".
    let info = fetch_info(&srv, &id).await;
    assert_eq!((info.w, info.h), (10, 8));
    assert_eq!(info.grid, tiny_grid(), "info grid is the map's grid");
    assert_eq!(info.teams, 2);
    assert_eq!(info.max, 4);
    assert_eq!(info.hz, 20);
    assert_eq!(info.q, 16, "positions are in 1/16 tile");
    assert_eq!(info.kf, info.hz, "a keyframe once a second");
    assert_eq!(info.countdown, 3 * info.hz, "countdown is 3 s by default");
    assert_eq!(info.duration, (duration * 20.0) as u64, "duration in ticks");
    assert_eq!((info.carry, info.charges), (5, 5));
    assert!((info.speed - 4.0).abs() < 1e-6, "speed {}", info.speed);
    assert!((info.slow - 0.2).abs() < 1e-6, "slow {}", info.slow);
    assert!((info.dash - 12.0).abs() < 1e-6, "dash {}", info.dash);
    assert!((info.half - 0.3).abs() < 1e-6, "half {}", info.half);

    let alice = join(&srv, &id, "alice", None).await;
    let bob = join(&srv, &id, "bob", None).await;
    assert_ne!(alice.player_id, bob.player_id);

    let total = 3 + duration as u64 + 45;
    let mut a = BotHandle::start(&srv, bot_cfg(&alice, &info, Mode::Harvest, true, total)).await;
    let b = BotHandle::start(&srv, bot_cfg(&bob, &info, Mode::Harvest, true, total)).await;

    // Players join the smallest team: one each; they start on their burrows.
    let s = a
        .wait_state(
            "both squirrels in the state",
            Duration::from_secs(10),
            |s| s.squirrels.len() == 2,
        )
        .await;
    let (sa, sb) = (&s.squirrels[&alice.player_id], &s.squirrels[&bob.player_id]);
    assert_eq!(sa.name, "alice");
    assert_eq!(sb.name, "bob");
    assert_ne!(sa.team, sb.team, "two players on two teams: {s:?}");
    for sq in [sa, sb] {
        let tile = info.tile(sq.x as f64 / 16.0, sq.y as f64 / 16.0);
        assert_eq!(
            tile,
            Some((b'1' + sq.team as u8) as char),
            "a new squirrel starts on a burrow of its team: {sq:?}"
        );
        assert_eq!(
            sq.charges(),
            1,
            "a squirrel starts with 1 dash charge: {sq:?}"
        );
        assert_eq!((sq.score, sq.carried()), (0, 0));
    }

    let ra = a.join(Duration::from_secs(total + 10)).await;
    let rb = b.join(Duration::from_secs(10)).await;
    for r in [&ra, &rb] {
        eprintln!(
            "{}: {} keyframes, {} deltas, {} keyframes checked ({} exact, {} in the ended phase), \
             {} inputs sent, {} own acks in `q`, events {:?}",
            r.name,
            r.keyframes,
            r.deltas,
            r.kf_checked,
            r.kf_checked_exact,
            r.kf_checked_ended,
            r.sent.len(),
            r.own_q,
            r.events
        );
        r.assert_clean();
        assert_eq!(r.resets, 0, "{}: no tick was missed", r.name);
        assert!(
            r.phases.ends_with(&[COUNTDOWN, RUNNING, ENDED]),
            "{}: phases seen {:?}",
            r.name,
            r.phases
        );
        assert!(
            r.keyframes >= duration as u64,
            "{}: {} keyframes",
            r.name,
            r.keyframes
        );
        assert!(
            r.deltas > 10 * r.keyframes,
            "{}: {} deltas",
            r.name,
            r.deltas
        );
        assert!(
            r.kf_checked >= duration as u64,
            "{}: only {} keyframes were checked against the tracked state",
            r.name,
            r.kf_checked
        );
        assert!(
            r.kf_checked_exact >= 1,
            "{}: no keyframe outside the running phase was checked exactly",
            r.name
        );
        assert!(
            r.kf_checked_ended >= 1,
            "{}: no keyframe of the ended phase was checked exactly",
            r.name
        );
    }

    // Phases and their lengths (GAME.md "lifecycle"; `P` = [phase, end_tick]):
    // the first tick of each phase, where alice's client saw the change.
    let first_in = |phase: u64| {
        ra.history
            .values()
            .find(|s| {
                s.phase == phase
                    && ra
                        .history
                        .get(&(s.tick - 1))
                        .is_some_and(|p| p.phase == phase - 1)
            })
            .cloned()
    };
    if let Some(countdown) = first_in(COUNTDOWN) {
        assert!(
            countdown.end_tick.abs_diff(countdown.tick + info.countdown) <= 1,
            "countdown from tick {} ends at {} ({} ticks)",
            countdown.tick,
            countdown.end_tick,
            info.countdown
        );
    }
    let running = first_in(RUNNING).expect("alice saw the match start");
    let ended = first_in(ENDED).expect("alice saw the match end");
    let last_countdown = &ra.history[&(running.tick - 1)];
    assert!(
        running.tick.abs_diff(last_countdown.end_tick) <= 1,
        "running at tick {}, the countdown was to end at {}",
        running.tick,
        last_countdown.end_tick
    );
    assert!(
        running.end_tick.abs_diff(running.tick + info.duration) <= 1,
        "running from tick {} ends at {} ({} ticks)",
        running.tick,
        running.end_tick,
        info.duration
    );
    assert!(
        ended.tick.abs_diff(running.end_tick) <= 1,
        "ended at tick {}, running should end at {}",
        ended.tick,
        running.end_tick
    );
    assert_eq!(ended.end_tick, 0);
    // The field fills up to the cap (6) when the match starts, never beyond it.
    assert_eq!(
        running.acorns.len(),
        6,
        "the field fills up to the cap at the start: {running:?}"
    );
    assert!(ra.history.values().all(|s| s.acorns.len() <= 6));
    assert!(ra
        .history
        .values()
        .filter(|s| s.phase != RUNNING && s.phase != ENDED)
        .all(|s| s.acorns.is_empty()));

    // Both clients saw the same match.
    let fa = ra.state.clone().expect("alice has a state at the end");
    let fb = rb.state.clone().expect("bob has a state at the end");
    let common: Vec<u64> = ra
        .history
        .keys()
        .filter(|t| rb.history.contains_key(t))
        .copied()
        .collect();
    assert!(
        common.len() > 100,
        "the two clients share {} ticks",
        common.len()
    );
    for t in &common {
        assert_eq!(
            ra.history[t], rb.history[t],
            "alice's and bob's tracked states differ at tick {t}"
        );
    }

    let mut team_of = BTreeMap::new();
    for (r, f) in [(&ra, &fa), (&rb, &fb)] {
        let me = r.own(f).expect("own squirrel at the end");
        team_of.insert(r.player_id, me.team);
        let pickups = r
            .events
            .iter()
            .filter(
                |(_, e)| matches!(e, GameEvent::Pickup { player, .. } if *player == r.player_id),
            )
            .count();
        let delivered: u64 = r
            .events
            .iter()
            .map(|(_, e)| match e {
                GameEvent::Delivery {
                    player,
                    points,
                    acorns,
                } if *player == r.player_id => {
                    assert!(*acorns >= 1 && *points >= *acorns, "delivery event {e:?}");
                    *points
                }
                _ => 0,
            })
            .sum();
        assert!(
            pickups > 0,
            "{} picked up no acorn: events {:?}",
            r.name,
            r.events
        );
        assert!(
            delivered > 0,
            "{} delivered nothing: events {:?}",
            r.name,
            r.events
        );
        assert_eq!(
            me.score, delivered,
            "{}: the score in the state is the sum of its delivery events",
            r.name
        );
        assert!(f.team_scores[me.team as usize] >= me.score);

        // Acks: caught up with the latest seq at least once while running,
        // and at the end reached every seq sent a second before it.
        let ended_at = r.ended_at.expect("ended");
        assert!(
            r.own_q > 10,
            "{}: only {} `q` entries for itself",
            r.name,
            r.own_q
        );
        let caught_up = r.acks.iter().any(|(at, _, ack)| {
            *ack > 0
                && r.sent
                    .iter()
                    .rev()
                    .find(|(t, _)| t <= at)
                    .is_some_and(|(_, s)| s == ack)
        });
        assert!(
            caught_up,
            "{}: its ack never reached the latest seq sent",
            r.name
        );
        let before_end = r
            .sent
            .iter()
            .filter(|(t, _)| *t + Duration::from_secs(1) < ended_at)
            .map(|(_, s)| *s)
            .max()
            .unwrap();
        assert!(
            me.ack >= before_end,
            "{}: final ack {} < seq {before_end} sent more than 1 s before the end",
            r.name,
            me.ack
        );
    }
    assert_eq!(fa.squirrels, fb.squirrels);
    assert_eq!(fa.team_scores, fb.team_scores);
    let team_scores = fa.team_scores.clone();
    for (t, score) in team_scores.iter().enumerate() {
        let sum: u64 = fa
            .squirrels
            .values()
            .filter(|s| s.team == t as u64)
            .map(|s| s.score)
            .sum();
        assert_eq!(*score, sum, "team {t} score is its players' points");
    }
    assert_eq!(fa.phase, ENDED);
    let winner = winner_of(&team_scores);
    assert_eq!(
        ra.winner_seen,
        Some(winner),
        "`W` of the ending delta vs team scores {team_scores:?}"
    );
    assert_eq!(fa.winner, Some(winner));

    // The HTTP view agrees.
    let d = wait_details(&srv, &id, "state ended with results", WAIT, |d| {
        d["state"] == "ended" && !d["results"].is_null()
    })
    .await;
    assert_eq!(d["summary"]["phase"], "ended", "{d}");
    assert_eq!(d["time_left"].as_f64(), Some(0.0), "{d}");
    assert_eq!(d["summary"]["winner"], json!(winner), "{d}");
    for (i, score) in team_scores.iter().enumerate() {
        let t = &d["summary"]["teams"][i];
        assert_eq!(t["team"], json!(i), "{d}");
        assert_eq!(t["score"].as_u64(), Some(*score), "team {i}: {d}");
    }
    for (pid, sq) in &fa.squirrels {
        let p = summary_player(&d, *pid);
        assert_eq!(p["name"], sq.name.as_str(), "{d}");
        assert_eq!(p["team"].as_u64(), Some(sq.team), "{d}");
        assert_eq!(p["score"].as_u64(), Some(sq.score), "{d}");
        assert!(sq.score > 0);
    }
    let res = &d["results"];
    assert_eq!(res["id"], id.as_str(), "{res}");
    assert_eq!(res["winner"], json!(winner), "{res}");
    for (i, score) in team_scores.iter().enumerate() {
        let t = res["teams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["team"] == json!(i))
            .unwrap_or_else(|| panic!("team {i} not in the results: {res}"));
        assert_eq!(t["score"].as_u64(), Some(*score), "{res}");
    }
    for (pid, sq) in &fa.squirrels {
        let p = res["players"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["player_id"].as_u64() == Some(*pid))
            .unwrap_or_else(|| panic!("player {pid} not in the results: {res}"));
        assert_eq!(p["name"], sq.name.as_str(), "{res}");
        assert_eq!(p["score"].as_u64(), Some(sq.score), "{res}");
        assert_eq!(p["team"].as_u64(), Some(sq.team), "{res}");
    }

    let (status, list) = get_json(&srv, "/v1/matches").await;
    assert_eq!(status, 200);
    let rec = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap_or_else(|| panic!("match {id} not listed: {list}"));
    assert_eq!(rec["state"], "ended", "{rec}");

    // The leaderboard (a fresh server: this match only).
    let (status, board) = get_json(&srv, "/v1/leaderboard?limit=10").await;
    assert_eq!(status, 200, "{board}");
    let board = board.as_array().expect("leaderboard is an array").clone();
    for sq in fa.squirrels.values() {
        let e = board
            .iter()
            .find(|e| e["name"] == sq.name.as_str())
            .unwrap_or_else(|| panic!("{} not on the leaderboard: {board:?}", sq.name));
        assert_eq!(e["score"].as_u64(), Some(sq.score), "{e}");
        assert_eq!(e["matches"].as_u64(), Some(1), "{e}");
        let won = winner == Some(sq.team);
        assert_eq!(e["wins"].as_u64(), Some(u64::from(won)), "{e}");
    }
    let scores: Vec<u64> = board.iter().map(|e| e["score"].as_u64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "leaderboard is best first: {board:?}"
    );

    // Joining an ended match is refused.
    let r = join_raw(&srv, &id, json!({"name": "late"})).await;
    assert_http_error(&r, 409, "conflict");
}

// ---------------------------------------------------------------------------
// 2. Permissions
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_tokens_allow_only_their_own_input_the_state_and_chat() {
    let srv = TestServer::start(&[]);
    let id = create_tiny(&srv, TINY_MAP, 60.0, 4).await;
    let other = create_tiny(&srv, TINY_MAP, 60.0, 4).await;
    let alice = join(&srv, &id, "alice", None).await;
    let bob = join(&srv, &id, "bob", None).await;
    let carol = join(&srv, &other, "carol", None).await;
    let c = alice.cache.clone();

    let mut wa = srv.ws(&alice.token).await;
    let mut wb = srv.ws(&bob.token).await;

    // Publishing to another player's input topic, or to the state topic.
    let r = wa
        .request(
            &m_pub(Some(1), &c, &bob.input_topic, bin(&input(1, None, false))),
            1,
        )
        .await;
    r.assert_err(Some(1), "permission_denied");
    let r = wa
        .request(
            &m_pub(Some(2), &c, &alice.state_topic, bin(b"\x81\xa1d\x01")),
            2,
        )
        .await;
    r.assert_err(Some(2), "permission_denied");
    // The own input topic is publish-only: no subscribing to it (nor to others').
    wa.request(&m_sub(3, &c, &alice.input_topic), 3)
        .await
        .assert_err(Some(3), "permission_denied");
    wa.request(&m_sub(4, &c, &bob.input_topic), 4)
        .await
        .assert_err(Some(4), "permission_denied");
    // Another match's state topic, and its input topic.
    wa.request(&m_sub(5, &c, &carol.state_topic), 5)
        .await
        .assert_err(Some(5), "permission_denied");
    wa.request(
        &m_pub(Some(6), &c, &carol.input_topic, bin(&input(1, None, false))),
        6,
    )
    .await
    .assert_err(Some(6), "permission_denied");
    // Same rules over HTTP.
    let (status, body) = srv
        .publish_http(
            Some(&alice.token),
            &c,
            &alice.state_topic,
            Some("application/octet-stream"),
            b"\x81\xa1d\x01".to_vec(),
        )
        .await;
    assert_eq!(status, 403, "HTTP publish to the state topic: {body}");
    assert_eq!(body["code"], "permission_denied", "{body}");
    let (status, body) = srv
        .publish_http(
            Some(&alice.token),
            &c,
            &bob.input_topic,
            Some("application/octet-stream"),
            input(1, None, false),
        )
        .await;
    assert_eq!(
        status, 403,
        "HTTP publish to another player's input: {body}"
    );

    // What is allowed: own input (the connection stays), state, chat.
    wa.publish(
        7,
        &c,
        &alice.input_topic,
        bin(&input(1, Some((0.0, 0.0)), false)),
    )
    .await;
    wa.sub(8, &c, &alice.state_topic).await;
    wa.sub(9, &c, &alice.chat_topic).await;
    wb.sub(1, &c, &bob.chat_topic).await;
    let chat = encode(&map(&[
        ("name", text("alice")),
        ("text", text("hello, bob")),
    ]));
    let seq = wa.publish(10, &c, &alice.chat_topic, bin(&chat)).await;

    let got = wb
        .wait_for("alice's chat message", |m| {
            m.is("item") && m.get("topic").and_then(Value::as_str) == Some(&bob.chat_topic)
        })
        .await;
    assert_eq!(got.assert_item(&c, &bob.chat_topic), seq);
    assert_eq!(
        got.str("from"),
        token_sub(&alice.token),
        "`from` is the sender's token subject"
    );
    let v = match got.value() {
        Value::Binary(b) => decode_one(b).expect("chat value is one MessagePack map"),
        other => panic!("chat value should be the bytes sent: {other}"),
    };
    let m = str_map(&v).expect("chat is a map with string keys");
    assert_eq!(
        field(&m, "text").and_then(Value::as_str),
        Some("hello, bob")
    );
    assert_eq!(field(&m, "name").and_then(Value::as_str), Some("alice"));
    // The sender, subscribed too, gets it as well.
    let own = wa
        .wait_for("alice's own chat message", |m| {
            m.is("item") && m.get("topic").and_then(Value::as_str) == Some(&alice.chat_topic)
        })
        .await;
    assert_eq!(own.u64("seq"), seq);

    // Bob cannot speak as Alice on her input, and his own works.
    wb.publish(
        2,
        &c,
        &bob.input_topic,
        bin(&input(1, Some((0.0, 0.0)), false)),
    )
    .await;
    wb.ping(3).await;
    wa.ping(11).await;
}

// ---------------------------------------------------------------------------
// 3. Hostile inputs over the real path
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_are_rejected_and_counted_and_the_match_keeps_ticking() {
    let srv = TestServer::start(&[]);
    let id = create_tiny(&srv, &plain_map(), 60.0, 4).await;
    let info = fetch_info(&srv, &id).await;
    let good = join(&srv, &id, "goodie", None).await;
    let evil = join(&srv, &id, "mallory", None).await;
    let c = evil.cache.clone();
    let (me, gid) = (evil.player_id, good.player_id);

    let mut g = BotHandle::start(&srv, bot_cfg(&good, &info, Mode::Patrol, false, 50)).await;
    let mut ws = srv.ws(&evil.token).await;
    let mut seq = 0u64;
    let mut rid = 100u64;

    // Keep mallory connected (valid, standing still) until the match runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        seq += 1;
        ws.send(&input_msg(&evil, &input(seq, Some((0.0, 0.0)), false)))
            .await;
        if g.current().is_some_and(|s| s.phase == RUNNING) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the match did not start: {:?}",
            g.current()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = g
        .wait_state("mallory's last input acked", Duration::from_secs(5), |s| {
            s.squirrels.get(&me).is_some_and(|sq| sq.ack == seq)
        })
        .await;
    let start_pos = (s.squirrels[&me].x, s.squirrels[&me].y);
    let base_ack = seq;

    // Hostile inputs, each in its own pub (accepted by the topic layer: the
    // game rejects them). Paced so that the per-tick limit is not what rejects them.
    let mut rng = Prng::new(0xac0e_e2e0);
    let mut hostile: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..10 {
        let len = 1 + rng.below(64) as usize;
        let b = rng.bytes(len);
        // Random bytes that happened to decode to a map with a valid seq would be fine,
        // but they never do: skip any that decode to a map at all.
        if decode_one(&b).is_ok_and(|v| v.is_map()) {
            continue;
        }
        hostile.push((format!("random bytes #{i}"), b));
    }
    let s1 = seq + 1;
    let v = |pairs: &[(&str, Value)]| encode(&map(pairs));
    let dir = |x: Value, y: Value| Value::Array(vec![x, y]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // wrong types
        ("seq as a string", v(&[("seq", text("7"))])),
        ("seq as a float", v(&[("seq", Value::F64(s1 as f64))])),
        ("seq negative", v(&[("seq", Value::from(-3i64))])),
        (
            "dir as a string",
            v(&[("seq", s1.into()), ("dir", text("up"))]),
        ),
        (
            "dir with 1 number",
            v(&[
                ("seq", s1.into()),
                ("dir", Value::Array(vec![Value::from(1)])),
            ]),
        ),
        (
            "dir with 3 numbers",
            v(&[
                ("seq", s1.into()),
                ("dir", Value::Array(vec![1.into(), 0.into(), 0.into()])),
            ]),
        ),
        (
            "dir of strings",
            v(&[("seq", s1.into()), ("dir", dir(text("1"), text("0")))]),
        ),
        (
            "dir as a map",
            v(&[("seq", s1.into()), ("dir", map(&[("x", 1.into())]))]),
        ),
        (
            "dash as an int",
            v(&[("seq", s1.into()), ("dash", 1.into())]),
        ),
        (
            "an array, not a map",
            encode(&Value::Array(vec![s1.into(), 1.into(), 0.into()])),
        ),
        ("a string, not a map", encode(&text("seq=5"))),
        (
            "a non-string key",
            encode(&Value::Map(vec![(Value::from(1), Value::from(s1))])),
        ),
        // NaN / infinite directions
        (
            "NaN direction",
            v(&[
                ("seq", s1.into()),
                ("dir", dir(Value::F32(f32::NAN), Value::F32(0.0))),
            ]),
        ),
        (
            "NaN direction (f64)",
            v(&[
                ("seq", s1.into()),
                ("dir", dir(Value::F64(0.0), Value::F64(f64::NAN))),
            ]),
        ),
        (
            "infinite direction",
            v(&[
                ("seq", s1.into()),
                ("dir", dir(Value::F64(f64::INFINITY), Value::F64(0.0))),
            ]),
        ),
        // oversized values / messages
        ("seq 0", v(&[("seq", 0.into())])),
        ("seq over u32", v(&[("seq", Value::from(1u64 << 32))])),
        ("seq u64::MAX", v(&[("seq", Value::from(u64::MAX))])),
        (
            "over 64 bytes",
            v(&[
                ("seq", s1.into()),
                ("dir", dir(Value::F64(1.0), Value::F64(0.0))),
                ("dash", Value::Boolean(false)),
            ])
            .into_iter()
            .chain(std::iter::repeat_n(0xc0, 50))
            .collect(),
        ),
        // unknown fields, repeated keys, trailing bytes, missing seq, stale seq
        (
            "an unknown field",
            v(&[
                ("seq", s1.into()),
                ("dir", dir(0.into(), 0.into())),
                ("fly", Value::Boolean(true)),
            ]),
        ),
        (
            "a repeated key",
            encode(&Value::Map(vec![
                (text("seq"), Value::from(s1)),
                (text("seq"), Value::from(s1 + 1)),
            ])),
        ),
        ("trailing bytes", {
            let mut b = input(s1, Some((0.0, 0.0)), false);
            b.push(0xc0);
            b
        }),
        ("no seq", v(&[("dir", dir(1.into(), 0.into()))])),
        ("a stale seq", input(base_ack, Some((1.0, 0.0)), false)),
        ("an empty value", Vec::new()),
        (
            "50 inputs in one value",
            (0..50)
                .flat_map(|i| input(s1 + i, Some((1.0, 0.0)), false))
                .collect(),
        ),
    ];
    hostile.extend(cases.into_iter().map(|(l, b)| (l.to_owned(), b)));
    let n_hostile = hostile.len() as u64;

    let barrage_start = Instant::now();
    for (label, bytes) in &hostile {
        rid += 1;
        let r = ws
            .request(&m_pub(Some(rid), &c, &evil.input_topic, bin(bytes)), rid)
            .await;
        assert!(
            r.is("ok"),
            "the topic layer should accept any value on the own input topic ({label}): {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // Mallory is still connected and nothing moved her.
    ws.ping(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = g.current().expect("goodie has a state");
    let sq = &s.squirrels[&me];
    assert_eq!(
        (sq.x, sq.y),
        start_pos,
        "rejected inputs must change nothing (mallory moved)"
    );
    assert_eq!(sq.ack, base_ack, "no hostile input was applied (ack)");
    let d = wait_details(&srv, &id, "mallory's rejections counted", WAIT, |d| {
        summary_player(d, me)["rejected_inputs"].as_u64() >= Some(n_hostile)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d2 = details(&srv, &id).await;
    assert_eq!(
        summary_player(&d2, me)["rejected_inputs"].as_u64(),
        Some(n_hostile),
        "every hostile input is counted once ({n_hostile}): {d}"
    );
    assert_eq!(
        summary_player(&d2, gid)["rejected_inputs"].as_u64(),
        Some(0),
        "{d2}"
    );

    // 50 valid inputs in one frame: at most 4 per tick are taken, the rest
    // are rate limited.
    let batch_from = seq + 1;
    let frame: Vec<Value> = (0..50)
        .map(|i| input_msg(&evil, &input(batch_from + i, Some((0.0, 0.0)), false)))
        .collect();
    ws.send_many(&frame).await;
    seq = batch_from + 49;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = g.current().unwrap();
    let ack = s.squirrels[&me].ack;
    assert!(
        (batch_from..=seq).contains(&ack),
        "an input of the batch was applied: ack {ack}, batch {batch_from}..={seq}"
    );
    wait_details(&srv, &id, "the batch's rejections counted", WAIT, |d| {
        summary_player(d, me)["rejected_inputs"].as_u64() >= Some(n_hostile + 30)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = details(&srv, &id).await;
    let after_batch = summary_player(&d, me)["rejected_inputs"].as_u64().unwrap();
    assert!(
        after_batch <= n_hostile + 49,
        "at least one input of the batch is taken: {after_batch} rejected"
    );

    // Dash without charges: the first dash spends the only charge (no golden
    // acorns on this map), the second is rejected whole.
    tokio::time::sleep(Duration::from_millis(300)).await;
    seq += 1;
    let dash1 = seq;
    ws.send(&input_msg(&evil, &input(dash1, Some((0.0, 1.0)), true)))
        .await;
    let s = g
        .wait_state("mallory's dash", Duration::from_secs(5), |s| {
            s.squirrels.get(&me).is_some_and(|sq| sq.ack >= dash1)
        })
        .await;
    assert_eq!(s.squirrels[&me].ack, dash1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = g.current().unwrap();
    assert_eq!(
        s.squirrels[&me].charges(),
        0,
        "the dash spent the charge: {s:?}"
    );
    let y_after_dash = s.squirrels[&me].y;
    seq += 1;
    ws.send(&input_msg(&evil, &input(seq, Some((0.0, -1.0)), true)))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = g.current().unwrap();
    assert!(
        s.squirrels[&me].y >= y_after_dash && s.squirrels[&me].ack == dash1,
        "the dash without charges is rejected whole: its direction (up) was not taken: {:?}",
        s.squirrels[&me]
    );
    // A rejected input changes nothing, not even the last seq: a valid stop
    // with the same seq is taken.
    ws.send(&input_msg(&evil, &input(seq, Some((0.0, 0.0)), false)))
        .await;
    let last = seq;
    g.wait_state("mallory's stop", Duration::from_secs(5), |s| {
        s.squirrels.get(&me).is_some_and(|sq| sq.ack == last)
    })
    .await;
    let d = wait_details(&srv, &id, "the dash rejection counted", WAIT, |d| {
        summary_player(d, me)["rejected_inputs"].as_u64() > Some(after_batch)
    })
    .await;
    assert_eq!(
        summary_player(&d, me)["rejected_inputs"].as_u64(),
        Some(after_batch + 1),
        "the dash without charges is rejected once: {d}"
    );
    assert_eq!(
        summary_player(&d, gid)["rejected_inputs"].as_u64(),
        Some(0),
        "{d}"
    );

    // A huge (finite) direction is valid: scaled to length 1, walking speed
    // (every tick's move is checked against it by goodie's client).
    let x0 = g.current().unwrap().squirrels[&me].x;
    seq += 1;
    let huge = seq;
    let bytes = encode(&map(&[
        ("seq", huge.into()),
        (
            "dir",
            Value::Array(vec![Value::F64(-1e300), Value::F64(0.0)]),
        ),
    ]));
    ws.send(&input_msg(&evil, &bytes)).await;
    g.wait_state("the huge direction taken", Duration::from_secs(5), |s| {
        s.squirrels.get(&me).is_some_and(|sq| sq.ack == huge)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    seq += 1;
    ws.send(&input_msg(&evil, &input(seq, Some((0.0, 0.0)), false)))
        .await;
    let s = g.current().unwrap();
    assert!(
        s.squirrels[&me].x < x0,
        "mallory walks left with dir [-1e300, 0]: x {} -> {}",
        x0,
        s.squirrels[&me].x
    );
    let barrage_end = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = details(&srv, &id).await;
    assert_eq!(
        summary_player(&d, me)["rejected_inputs"].as_u64(),
        Some(after_batch + 1),
        "valid inputs are not counted as rejected: {d}"
    );

    let report = g.finish().await;
    report.assert_clean();
    assert_eq!(report.resets, 0);
    let dashes: Vec<_> = report
        .events
        .iter()
        .filter(|(_, e)| *e == GameEvent::Dash { player: me })
        .collect();
    assert_eq!(dashes.len(), 1, "exactly one dash started: {dashes:?}");
    // The good player's state kept updating all along: one state message per
    // tick, no tick missing, and its squirrel moved and its acks advanced.
    let during: Vec<u64> = report
        .received
        .iter()
        .filter(|(t, _)| *t >= barrage_start && *t <= barrage_end)
        .map(|(_, tick)| *tick)
        .collect();
    let secs = (barrage_end - barrage_start).as_secs_f64();
    assert!(
        during.len() as f64 >= secs * info.hz as f64 * 0.2,
        "only {} state messages in {secs:.1} s of hostile input",
        during.len()
    );
    assert!(during.windows(2).all(|w| w[1] == w[0] + 1), "ticks skipped");
    let in_window = |at: &Instant| *at >= barrage_start && *at <= barrage_end;
    let positions: BTreeSet<(i64, i64)> = report
        .history
        .values()
        .filter(|s| s.tick >= *during.first().unwrap() && s.tick <= *during.last().unwrap())
        .filter_map(|s| s.squirrels.get(&gid).map(|sq| (sq.x, sq.y)))
        .collect();
    assert!(positions.len() > 10, "goodie barely moved: {positions:?}");
    let acks: BTreeSet<u64> = report
        .acks
        .iter()
        .filter(|(at, _, _)| in_window(at))
        .map(|(_, _, a)| *a)
        .collect();
    assert!(acks.len() > 3, "goodie's acks stalled: {acks:?}");
    srv.assert_serving().await;
}

// ---------------------------------------------------------------------------
// 4. HTTP API errors and operator actions
// ---------------------------------------------------------------------------

/// Keeps a player connected (valid idle inputs every 200 ms) until dropped.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl KeepAlive {
    async fn start(srv: &TestServer, p: &Joined) -> KeepAlive {
        let mut ws = srv.ws(&p.token).await;
        let p = p.clone();
        KeepAlive(tokio::spawn(async move {
            for seq in 1.. {
                if ws
                    .try_send_raw(encode(&input_msg(&p, &input(seq, None, false))))
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = ws.next_event(Duration::from_millis(200)).await;
            }
        }))
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_errors_and_operator_end() {
    let srv = TestServer::start(&[]);
    let key = srv.operator_key.clone();

    // Unknown matches.
    assert_http_error(
        &join_raw(&srv, "nosuchmatch", json!({"name": "x"})).await,
        404,
        "not_found",
    );
    assert_http_error(
        &get_json(&srv, "/v1/matches/nosuchmatch").await,
        404,
        "not_found",
    );
    assert_http_error(
        &delete(&srv, "/v1/matches/nosuchmatch", Some(&key)).await,
        404,
        "not_found",
    );
    let resp = srv
        .http()
        .get(format!("{}/v1/matches/nosuchmatch/info", srv.http_url()))
        .send()
        .await
        .unwrap();
    assert_http_error(&json_response(resp).await, 404, "not_found");

    // Creating needs the operator key.
    let body = json!({"map_text": TINY_MAP, "teams": 2, "duration": 10.0});
    assert_http_error(
        &post_json(&srv, "/v1/matches", None, body.to_string()).await,
        401,
        "unauthenticated",
    );
    assert_http_error(
        &post_json(&srv, "/v1/matches", Some("not-the-key"), body.to_string()).await,
        401,
        "unauthenticated",
    );
    // A player's token is not the operator key either.
    let id = create_tiny(&srv, TINY_MAP, 30.0, 2).await;
    let p1 = join(&srv, &id, "p1", None).await;
    assert_http_error(
        &post_json(&srv, "/v1/matches", Some(&p1.token), body.to_string()).await,
        401,
        "unauthenticated",
    );
    assert_http_error(
        &delete(&srv, &format!("/v1/matches/{id}"), None).await,
        401,
        "unauthenticated",
    );

    // Bad maps: 400 naming the line and column of the problem.
    let ragged = TINY_MAP.replace("T11......T\nT11......T", "T11......T\nT11.....T");
    let no_burrow = TINY_MAP.replace("22", "..");
    let walled = TINY_MAP.replace("T........T\nT........T", "TTTTTTTTTT\nT........T");
    let small =
        "name: Small\nteams: 2\n---\nTTTTTTT\nT11...T\nT.....T\nT.....T\nT...22T\nTTTTTTT\n";
    let greedy = TINY_MAP.replace("acorns: 6", "acorns: 30");
    let bad_header = TINY_MAP.replace("acorns: 6", "acorns: many");
    let bad_char = TINY_MAP.replace("T........T\nT......22T", "T...X....T\nT......22T");
    for (what, text, line) in [
        ("a ragged row", ragged.as_str(), Some(9)),
        ("team 2 without a burrow", no_burrow.as_str(), None),
        ("burrows cut off from each other", walled.as_str(), None),
        ("a 7x6 grid", small, None),
        ("too little grass for the cap", greedy.as_str(), None),
        ("a bad header value", bad_header.as_str(), Some(4)),
        ("an unknown tile", bad_char.as_str(), Some(11)),
    ] {
        let r = create_raw(&srv, json!({"map_text": text, "teams": 2})).await;
        assert_http_error(&r, 400, "bad_request");
        let msg = r.1["message"].as_str().unwrap().to_lowercase();
        assert!(
            msg.contains("line") && msg.contains("column"),
            "{what}: the message should name the line and column: {msg:?}"
        );
        if let Some(line) = line {
            assert!(
                msg.contains(&format!("line {line}")),
                "{what}: the problem is on line {line}: {msg:?}"
            );
        }
    }
    // Bad numbers.
    for (what, body) in [
        ("tick_hz 0", json!({"map_text": TINY_MAP, "tick_hz": 0})),
        ("tick_hz 61", json!({"map_text": TINY_MAP, "tick_hz": 61})),
        (
            "tick_hz negative",
            json!({"map_text": TINY_MAP, "tick_hz": -20}),
        ),
        (
            "tick_hz a string",
            json!({"map_text": TINY_MAP, "tick_hz": "fast"}),
        ),
        ("duration 0", json!({"map_text": TINY_MAP, "duration": 0.0})),
        ("unknown builtin map", json!({"map": "atlantis"})),
        (
            "teams over the map's",
            json!({"map_text": TINY_MAP, "teams": 3}),
        ),
    ] {
        let r = create_raw(&srv, body).await;
        assert_eq!(r.0, 400, "{what}: {}", r.1);
        assert_http_error(&r, 400, "bad_request");
    }
    // Not JSON at all.
    let r = post_json(&srv, "/v1/matches", Some(&key), "{not json".into()).await;
    assert_http_error(&r, 400, "bad_request");

    // Bad names.
    for (what, body) in [
        ("empty", json!({"name": ""})),
        ("blank", json!({"name": "   "})),
        ("17 characters", json!({"name": "abcdefghijklmnopq"})),
        ("a control character", json!({"name": "bad\u{7}name"})),
        ("not a string", json!({"name": 5})),
        ("missing", json!({})),
    ] {
        let r = join_raw(&srv, &id, body).await;
        assert_eq!(r.0, 400, "join with a name that is {what}: {}", r.1);
        assert_http_error(&r, 400, "bad_request");
    }
    let r = join_raw(&srv, &id, json!({"name": "x", "team": 5})).await;
    assert_http_error(&r, 400, "bad_request");

    // A full match (max_players 2).
    let p2 = join(&srv, &id, "p2", None).await;
    let r = join_raw(&srv, &id, json!({"name": "p3"})).await;
    assert_http_error(&r, 409, "conflict");

    // The list shows the created matches.
    let other = create_tiny(&srv, TINY_MAP, 30.0, 8).await;
    let (status, list) = get_json(&srv, "/v1/matches").await;
    assert_eq!(status, 200);
    for m in [&id, &other] {
        let rec = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == m.as_str())
            .unwrap_or_else(|| panic!("{m} not listed: {list}"));
        assert_eq!(rec["map"], "tiny-e2e", "{rec}");
        assert_eq!(rec["tick_hz"], 20, "{rec}");
        assert_eq!(rec["teams"], 2, "{rec}");
    }
    let rec = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(rec["players"], 2, "{rec}");
    assert_eq!(rec["max_players"], 2, "{rec}");

    // DELETE ends a running match early.
    let _k1 = KeepAlive::start(&srv, &p1).await;
    let _k2 = KeepAlive::start(&srv, &p2).await;
    let mut watcher = srv.ws(&p1.token).await;
    watcher.sub(1, &p1.cache, &p1.state_topic).await;
    wait_details(
        &srv,
        &id,
        "the match running",
        Duration::from_secs(15),
        |d| d["state"] == "running",
    )
    .await;
    let r = delete(&srv, &format!("/v1/matches/{id}"), Some(&key)).await;
    assert_eq!(r.0, 200, "DELETE: {}", r.1);
    assert_eq!(r.1["id"], id.as_str());
    assert_eq!(
        r.1["state"], "ended",
        "DELETE returns the ended record: {}",
        r.1
    );
    let d = details(&srv, &id).await;
    assert_eq!(d["state"], "ended", "{d}");
    assert_eq!(d["summary"]["phase"], "ended", "{d}");
    let res = &d["results"];
    assert_eq!(res["id"], id.as_str(), "results stored: {d}");
    assert_eq!(res["players"].as_array().map(Vec::len), Some(2), "{res}");
    let scores: Vec<u64> = res["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["score"].as_u64().unwrap())
        .collect();
    assert_eq!(res["winner"], json!(winner_of(&scores)), "{res}");
    // The state topic says so too: `P` of phase 3 with `W`.
    let ended = watcher
        .wait_for("the ending state message", |m| {
            m.is("item")
                && state_field(m, "P")
                    .is_some_and(|p| p.as_array().and_then(|a| a.first()?.as_u64()) == Some(ENDED))
        })
        .await;
    let w = state_field(&ended, "W").expect("`P` of phase 3 comes with `W`");
    assert_eq!(w, json_to_mp(&res["winner"]), "`W` vs the stored winner");
    // Ending again is harmless; joining an ended match is refused.
    let r = delete(&srv, &format!("/v1/matches/{id}"), Some(&key)).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["state"], "ended");
    assert_http_error(
        &join_raw(&srv, &id, json!({"name": "late"})).await,
        409,
        "conflict",
    );
    // The other match is untouched.
    assert_eq!(details(&srv, &other).await["state"], "lobby");
    // The leaderboard's limit is checked.
    let (status, _) = get_json(&srv, "/v1/leaderboard?limit=abc").await;
    assert_eq!(status, 400);
}

/// A key of the state message in a state `item`.
fn state_field(m: &Msg, key: &str) -> Option<Value> {
    let Some(Value::Binary(b)) = m.get("value") else {
        return None;
    };
    let v = decode_one(b).ok()?;
    let map = str_map(&v).ok()?;
    field(&map, key).cloned()
}

fn json_to_mp(v: &serde_json::Value) -> Value {
    match v.as_u64() {
        Some(n) => Value::from(n),
        None => Value::Nil,
    }
}

// ---------------------------------------------------------------------------
// 5. A late joiner
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_is_whole_at_the_next_keyframe() {
    let srv = TestServer::start(&[]);
    let id = create_tiny(&srv, TINY_MAP, 30.0, 4).await;
    let info = fetch_info(&srv, &id).await;
    let alice = join(&srv, &id, "alice", None).await;
    let bob = join(&srv, &id, "bob", None).await;
    let mut a = BotHandle::start(&srv, bot_cfg(&alice, &info, Mode::Harvest, false, 60)).await;
    let b = BotHandle::start(&srv, bot_cfg(&bob, &info, Mode::Patrol, false, 60)).await;
    let running = a
        .wait_state("the match running", Duration::from_secs(15), |s| {
            s.phase == RUNNING
        })
        .await;
    // Somewhere between two keyframes, well into the match.
    a.wait_state("1.3 s of running", Duration::from_secs(10), |s| {
        s.tick >= running.tick + info.hz + info.hz / 3
    })
    .await;

    let carol = join(&srv, &id, "carol", None).await;
    let mut ws = srv.ws(&carol.token).await;
    let ok = ws.sub(1, &carol.cache, &carol.state_topic).await;
    let subscribed = Instant::now();
    assert!(ok.u64("seq") > 0, "the state topic has items: {ok:?}");

    let mut tracker = Tracker::new(info.clone());
    let mut whole_at = None;
    let mut mine: BTreeMap<u64, GameState> = BTreeMap::new();
    let mut seq = 0;
    let mut last_input = Instant::now() - Duration::from_secs(1);
    while mine.len() < 3 * info.hz as usize {
        assert!(
            subscribed.elapsed() < Duration::from_secs(15),
            "carol's client did not track 3 s of state within 15 s"
        );
        if last_input.elapsed() > Duration::from_millis(250) {
            seq += 1;
            ws.send(&input_msg(&carol, &input(seq, Some((0.0, 0.0)), false)))
                .await;
            last_input = Instant::now();
        }
        let m = match ws.next_event(Duration::from_millis(50)).await {
            Event::Msg(m) => m,
            Event::Timeout => continue,
            other => panic!("carol's connection: {other:?}"),
        };
        if !m.is("item") {
            assert!(!m.is("err") && !m.is("gap"), "carol got {m:?}");
            continue;
        }
        let Value::Binary(bytes) = m.value() else {
            panic!("state value is not bin: {m:?}")
        };
        if tracker.on_message(bytes).is_some() {
            let s = tracker.state.clone().unwrap();
            if whole_at.is_none() {
                whole_at = Some((subscribed.elapsed(), s.tick, tracker.ignored));
                assert!(
                    tracker_is_keyframe(bytes),
                    "the first message carol's client applies is a keyframe"
                );
            }
            mine.insert(s.tick, s);
        }
    }
    let (after, first_tick, ignored_before) = whole_at.unwrap();
    assert!(
        after < Duration::from_secs(5),
        "carol's client was whole only {after:?} after subscribing (a keyframe comes once a second)"
    );
    assert!(
        ignored_before < info.kf + 5,
        "carol's client ignored {ignored_before} deltas before the first keyframe (at most a second's worth)"
    );
    assert!(tracker.problems.is_empty(), "carol: {:?}", tracker.problems);
    assert_eq!(tracker.resets, 0);

    let first = &mine[&first_tick];
    let me = &first.squirrels[&carol.player_id];
    assert_eq!(me.name, "carol");
    assert_eq!(first.squirrels.len(), 3, "all three squirrels: {first:?}");
    assert_eq!(first.phase, RUNNING);

    // GAME.md "disconnect": carol goes quiet; after ~3 s without input her
    // squirrel is marked disconnected (status bit 11) and stays; an input
    // brings her back as she was.
    let cid = carol.player_id;
    let quiet = a
        .wait_state("carol marked disconnected", Duration::from_secs(15), |s| {
            s.squirrels
                .get(&cid)
                .is_some_and(|sq| sq.status & (1 << 11) != 0)
        })
        .await;
    let before = quiet.squirrels[&cid].clone();
    assert_eq!(before.ack, seq, "carol's inputs were all applied");
    seq += 1;
    ws.send(&input_msg(&carol, &input(seq, Some((0.0, 0.0)), false)))
        .await;
    let back = a
        .wait_state("carol back", Duration::from_secs(10), |s| {
            s.squirrels
                .get(&cid)
                .is_some_and(|sq| sq.status & (1 << 11) == 0 && sq.ack == seq)
        })
        .await;
    let after = &back.squirrels[&cid];
    assert_eq!(
        (after.x, after.y, after.score, after.status, after.team),
        (
            before.x,
            before.y,
            before.score,
            before.status & !(1 << 11),
            before.team
        ),
        "carol's squirrel is given back as it was"
    );

    let ra = a.finish().await;
    let rb = b.finish().await;
    ra.assert_clean();
    rb.assert_clean();
    // Alice's client saw carol join live (`a` in a delta) unless she joined on
    // a keyframe tick; either way carol is in alice's state.
    let fa = ra.state.clone().unwrap();
    assert!(fa.squirrels.contains_key(&carol.player_id));
    let carol_from = ra
        .history
        .values()
        .find(|s| s.squirrels.contains_key(&carol.player_id))
        .map(|s| s.tick)
        .expect("carol appears in alice's history");
    assert!(
        ra.added_live.contains(&carol.player_id) || (carol_from - 1) % info.kf == 0,
        "carol appeared at tick {carol_from}, not a keyframe tick, yet no delta added her (`a`)"
    );
    // Carol's state equals alice's at every tick both tracked.
    let mut compared = 0;
    for (t, s) in &mine {
        if let Some(other) = ra.history.get(t) {
            assert_eq!(s, other, "carol's and alice's states differ at tick {t}");
            compared += 1;
        }
    }
    assert!(compared > info.hz, "only {compared} ticks compared");
    ws.close().await;
}
