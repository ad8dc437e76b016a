//! Hostile input: random frames, huge frames, deep nesting, wrong types for
//! every field, floods, abandoned connections. The server must answer each
//! with the documented close (or reply) and keep serving everyone else.

use std::time::Duration;

use acorn_e2e::*;
use futures_util::stream::{self, StreamExt};
use rmpv::Value;
use tokio::io::AsyncWriteExt;

const C: &str = "game";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frames_each_close_4400_and_the_server_keeps_serving() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("fuzz").await;
    let mut bystander = srv.ws(&tok).await;
    bystander.sub(1, C, "calm").await;

    let mut rng = Prng::new(SEED);
    let frames: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            let len = 1 + rng.below(if i % 10 == 0 { 4096 } else { 256 }) as usize;
            let mut f = rng.bytes(len);
            // A third start like a map, to get past the first byte of the decoder.
            if i % 3 == 0 {
                f[0] = 0x80 | (rng.below(16) as u8);
            }
            f
        })
        .collect();

    let results: Vec<(usize, Result<Closed, String>)> =
        stream::iter(frames.into_iter().enumerate())
            .map(|(i, frame)| {
                let tok = tok.clone();
                let addr = srv.addr;
                async move {
                    let mut ws = match Ws::connect(addr, Some(&tok), TokenIn::Header, None).await {
                        Ok(ws) => ws,
                        Err(e) => return (i, Err(format!("connect failed: {e}"))),
                    };
                    (i, ws.wait_close_after_send(frame).await)
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;

    let mut failures = Vec::new();
    for (i, r) in results {
        match r {
            Ok(c) if c.code == 4400 && !c.reason.trim().is_empty() => {}
            Ok(c) => failures.push(format!("frame #{i}: close {} {:?}", c.code, c.reason)),
            Err(e) => failures.push(format!("frame #{i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 300 random frames were not closed 4400:\n{}",
        failures.len(),
        failures.join("\n")
    );
    bystander.ping(2).await;
    assert_eq!(srv.publish_text(&tok, C, "calm", "still here").await, 1);
    assert_eq!(bystander.recv().await.assert_item(C, "calm"), 1);
    srv.assert_serving().await;
}

/// Fixed, so a failure is reproducible.
const SEED: u64 = 0x5eed_ac02;

#[tokio::test]
async fn frame_over_the_default_limit_closes_4413() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("huge").await;
    let mut ws = srv.ws(&tok).await;
    // 2 MiB: twice the default 1 MiB frame limit.
    let frame = encode(&m_pub(Some(1), C, "huge", bin(&vec![0x55; 2 << 20])));
    ws.send_expect_close(frame, 4413).await;
    srv.assert_serving().await;
}

/// `levels` nested one-element arrays around nil.
fn nested_arrays(levels: usize) -> Vec<u8> {
    let mut v = vec![0x91u8; levels];
    v.push(0xc0);
    v
}

/// `levels` nested one-entry maps {"a": {"a": ... nil}}.
fn nested_maps(levels: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(levels * 3 + 1);
    for _ in 0..levels {
        v.extend_from_slice(&[0x81, 0xa1, b'a']);
    }
    v.push(0xc0);
    v
}

/// A ping whose unknown field `x` holds `nested`.
fn ping_with(nested: &[u8]) -> Vec<u8> {
    // {"op": "ping", "id": 1, "x": <nested>}
    let mut f = vec![
        0x83, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g', 0xa2, b'i', b'd', 0x01, 0xa1, b'x',
    ];
    f.extend_from_slice(nested);
    f
}

#[tokio::test]
async fn deeply_nested_values_do_not_crash_the_server() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("deep").await;
    let mut bystander = srv.ws(&tok).await;
    for (what, frame) in [
        ("arrays 100k deep", ping_with(&nested_arrays(100_000))),
        ("maps 100k deep", ping_with(&nested_maps(100_000))),
        ("arrays 300k deep", ping_with(&nested_arrays(300_000))),
        ("top-level arrays 100k deep", nested_arrays(100_000)),
    ] {
        let mut ws = srv.ws(&tok).await;
        ws.send_raw(frame).await;
        // An unknown field may be ignored (pong) or refused as a violation (4400).
        match ws.next_event(WAIT).await {
            Event::Msg(m) if m.is("pong") => {
                assert!(
                    !what.starts_with("top-level"),
                    "{what}: a non-map message got a pong"
                );
            }
            Event::Closed(Some(4400), reason) => {
                assert!(!reason.is_empty(), "{what}: close without reason")
            }
            other => panic!("{what}: expected pong or close 4400, got {other:?}"),
        }
        bystander.ping(1).await;
    }
    // A pub whose value is deeply nested is mistyped: 4400.
    let mut ws = srv.ws(&tok).await;
    let mut f = vec![
        0x84, 0xa2, b'o', b'p', 0xa3, b'p', b'u', b'b', 0xa5, b'c', b'a', b'c', b'h', b'e', 0xa1,
        b'c', 0xa5, b't', b'o', b'p', b'i', b'c', 0xa1, b't', 0xa5, b'v', b'a', b'l', b'u', b'e',
    ];
    f.extend_from_slice(&nested_arrays(100_000));
    ws.send_expect_close(f, 4400).await;
    srv.assert_serving().await;
}

/// Values of the wrong type for a string field.
fn not_strings(required: bool) -> Vec<(&'static str, Value)> {
    let mut v = vec![
        ("int", Value::from(1)),
        ("negative int", Value::from(-1)),
        ("float", Value::F64(2.5)),
        ("bool", Value::from(false)),
        ("array", Value::Array(vec![text("x")])),
        ("map", map(&[("x", text("y"))])),
        ("ext", Value::Ext(5, vec![1, 2, 3])),
    ];
    if required {
        v.push(("nil", Value::Nil));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_for_every_field_close_4400() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("types").await;
    let set = |m: Value, key: &str, v: Value| {
        let Value::Map(mut e) = m else { unreachable!() };
        for slot in e.iter_mut() {
            if slot.0.as_str() == Some(key) {
                slot.1 = v.clone();
            }
        }
        Value::Map(e)
    };
    let mut cases: Vec<(String, Value)> = Vec::new();
    let bases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "sub",
            m_sub_resume(1, C, "t", 0, Some("e")),
            vec!["op", "cache", "topic"],
        ),
        ("unsub", m_unsub(1, C, "t"), vec!["op", "cache", "topic"]),
        (
            "pub",
            m_pub(Some(1), C, "t", text("v")),
            vec!["op", "cache", "topic"],
        ),
        ("ping", m_ping(1), vec!["op"]),
        ("auth", m_auth(1, "tok"), vec!["op", "token"]),
    ];
    for (op, base, string_fields) in &bases {
        for field in string_fields {
            for (what, v) in not_strings(true) {
                cases.push((
                    format!("{op}.{field} as {what}"),
                    set(base.clone(), field, v),
                ));
            }
        }
    }
    // Optional string: epoch (nil may mean absent, so not nil).
    for (what, v) in not_strings(false) {
        cases.push((
            format!("sub.epoch as {what}"),
            set(bases[0].1.clone(), "epoch", v),
        ));
    }
    // Optional u64: resume_after.
    for (what, v) in [
        ("string", text("5")),
        ("negative", Value::from(-5)),
        ("float", Value::F64(3.0)),
        ("bool", Value::from(true)),
        ("array", Value::Array(vec![Value::from(1)])),
        ("map", map(&[("n", Value::from(1))])),
        ("bin", bin(&[5])),
    ] {
        cases.push((
            format!("sub.resume_after as {what}"),
            set(bases[0].1.clone(), "resume_after", v),
        ));
    }
    // Required bin-or-str: value.
    for (what, v) in [
        ("int", Value::from(1)),
        ("float", Value::F64(1.0)),
        ("bool", Value::from(true)),
        ("nil", Value::Nil),
        ("array", Value::Array(vec![bin(b"x")])),
        ("map", map(&[("bytes", bin(b"x"))])),
        ("ext", Value::Ext(1, vec![0])),
    ] {
        cases.push((
            format!("pub.value as {what}"),
            set(bases[2].1.clone(), "value", v),
        ));
    }

    let n = cases.len();
    let results: Vec<(String, Result<Closed, String>)> = stream::iter(cases)
        .map(|(what, msg)| {
            let tok = tok.clone();
            let addr = srv.addr;
            async move {
                let mut ws = Ws::connect(addr, Some(&tok), TokenIn::Header, None)
                    .await
                    .expect("connect");
                (what, ws.wait_close_after_send(encode(&msg)).await)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut failures = Vec::new();
    for (what, r) in results {
        match r {
            Ok(c) if c.code == 4400 && !c.reason.trim().is_empty() => {}
            Ok(c) => failures.push(format!(
                "{what}: close {} {:?}, before: {:?}",
                c.code, c.reason, c.before
            )),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} mistyped messages were not closed 4400:\n{}",
        failures.len(),
        failures.join("\n")
    );
    srv.assert_serving().await;
}

#[tokio::test]
async fn invalid_utf8_in_a_name_is_refused() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("utf").await;
    let mut ws = srv.ws(&tok).await;
    // {"op":"sub","id":1,"cache":"game","topic":<str8 with bytes ff fe>}
    let mut f = vec![
        0x84, 0xa2, b'o', b'p', 0xa3, b's', b'u', b'b', 0xa2, b'i', b'd', 0x01,
    ];
    f.extend_from_slice(&[
        0xa5, b'c', b'a', b'c', b'h', b'e', 0xa4, b'g', b'a', b'm', b'e',
    ]);
    f.extend_from_slice(&[0xa5, b't', b'o', b'p', b'i', b'c', 0xa2, 0xff, 0xfe]);
    ws.send_raw(f).await;
    match ws.next_event(WAIT).await {
        Event::Msg(m) => m.assert_err(Some(1), "invalid_name"),
        Event::Closed(Some(4400), _) => {}
        other => {
            panic!("invalid UTF-8 topic: expected err invalid_name or close 4400, got {other:?}")
        }
    }
    srv.assert_serving().await;
}

#[tokio::test]
async fn a_flood_of_unknown_fields_is_ignored() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("fields").await;
    let mut ws = srv.ws(&tok).await;
    let mut pairs = vec![
        (text("op"), text("pub")),
        (text("id"), Value::from(1)),
        (text("cache"), text(C)),
        (text("topic"), text("many")),
        (text("value"), text("v")),
    ];
    for i in 0..10_000 {
        pairs.push((text(&format!("f{i}")), Value::from(i)));
    }
    ws.send(&Value::Map(pairs)).await;
    let r = ws.reply(1).await;
    r.assert_ok(1);
    assert_eq!(r.u64("seq"), 1);
}

#[tokio::test]
async fn thousands_of_messages_in_one_frame_are_all_answered() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("batch").await;
    let mut ws = srv.ws(&tok).await;
    let n = 5000u64;
    let msgs: Vec<_> = (0..n).map(m_ping).collect();
    ws.send_many(&msgs).await;
    let mut ids = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let m = ws.recv().await;
        assert!(m.is("pong"), "{m:?}");
        ids.push(m.id().unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..n).collect::<Vec<_>>(), "every ping answered once");
}

#[tokio::test]
async fn abandoned_and_half_open_connections_do_not_hurt_others() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("churn").await;
    let mut keeper = srv.ws(&tok).await;
    keeper.sub(1, C, "k").await;

    // Connections dropped without a close handshake, some mid-subscription.
    for i in 0..40u64 {
        let mut ws = srv.ws(&tok).await;
        if i % 2 == 0 {
            ws.sub(1, C, "k").await;
        }
        drop(ws);
    }
    // A half-sent HTTP request and a half-sent WebSocket frame, left hanging.
    let mut half_http = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    half_http
        .write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websoc")
        .await
        .unwrap();
    // A raw TCP connection that sends a frame header and nothing more.
    let mut half_frame = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    half_frame.write_all(&[0x82, 0xfe]).await.unwrap();

    // Publishing to a topic that dead subscribers held still works and reaches the live one.
    for i in 1..=5u64 {
        assert_eq!(srv.publish_text(&tok, C, "k", "x").await, i);
    }
    for i in 1..=5u64 {
        assert_eq!(keeper.recv().await.assert_item(C, "k"), i);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    srv.assert_serving().await;
    drop((half_http, half_frame));
}
