//! Close codes 4400 (protocol violations), 4413 (frame too big) and 4429
//! (too many refused requests). 4401 is in auth.rs, 4503 in slow_consumer.rs,
//! 1001 in shutdown.rs. Every close must carry a reason.

use acorn_e2e::*;
use rmpv::Value;

const C: &str = "game";

/// A map with arbitrary (possibly non-string) keys.
fn raw_map(pairs: Vec<(Value, Value)>) -> Value {
    Value::Map(pairs)
}

/// `m` with field `key` set to `v` (added if missing).
fn with(m: Value, key: &str, v: Value) -> Value {
    let Value::Map(mut e) = m else { unreachable!() };
    if let Some(slot) = e.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
        slot.1 = v;
    } else {
        e.push((text(key), v));
    }
    Value::Map(e)
}

/// `m` without field `key`.
fn without(m: Value, key: &str) -> Value {
    let Value::Map(mut e) = m else { unreachable!() };
    e.retain(|(k, _)| k.as_str() != Some(key));
    Value::Map(e)
}

pub fn violations() -> Vec<(&'static str, Vec<u8>)> {
    let ping = encode(&m_ping(1));
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        ("undecodable byte 0xc1", vec![0xc1]),
        ("undecodable bytes", vec![0xc1, 0xff, 0x00]),
        ("truncated message", ping[..ping.len() - 1].to_vec()),
        (
            "map header promising more entries",
            vec![0x83, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g'],
        ),
        (
            "str8 promising more bytes",
            vec![0x81, 0xa2, b'o', b'p', 0xd9, 200, b'p', b'u', b'b'],
        ),
        (
            "bin32 claiming 4 GiB",
            vec![
                0x81, 0xa5, b'v', b'a', b'l', b'u', b'e', 0xc6, 0xff, 0xff, 0xff, 0xff, 1,
            ],
        ),
        ("valid ping then a truncated one", {
            let mut f = ping.clone();
            f.extend_from_slice(&ping[..3]);
            f
        }),
        ("valid ping then garbage", {
            let mut f = ping.clone();
            f.push(0xc1);
            f
        }),
    ];
    let msgs: Vec<(&'static str, Value)> = vec![
        // Not a map.
        (
            "top-level array",
            Value::Array(vec![text("op"), text("ping")]),
        ),
        ("top-level integer", Value::from(5)),
        ("top-level string", text("ping")),
        ("top-level nil", Value::Nil),
        (
            "map with integer keys",
            raw_map(vec![
                (Value::from(0), text("ping")),
                (Value::from(1), Value::from(5)),
            ]),
        ),
        // Unknown ops.
        (
            "unknown op",
            map(&[("op", text("frobnicate")), ("id", 1.into())]),
        ),
        ("empty op", map(&[("op", text("")), ("id", 1.into())])),
        (
            "op in the wrong case",
            map(&[("op", text("PING")), ("id", 1.into())]),
        ),
        (
            "server-only op item",
            map(&[
                ("op", text("item")),
                ("cache", text(C)),
                ("topic", text("t")),
                ("seq", 1.into()),
                ("value", text("v")),
                ("from", text("me")),
            ]),
        ),
        (
            "server-only op ok",
            map(&[("op", text("ok")), ("id", 1.into())]),
        ),
        ("server-only op hb", map(&[("op", text("hb"))])),
        // Missing fields.
        (
            "no op",
            map(&[("id", 1.into()), ("cache", text(C)), ("topic", text("t"))]),
        ),
        ("sub without id", without(m_sub(1, C, "t"), "id")),
        ("sub without cache", without(m_sub(1, C, "t"), "cache")),
        ("sub without topic", without(m_sub(1, C, "t"), "topic")),
        ("unsub without id", without(m_unsub(1, C, "t"), "id")),
        ("unsub without topic", without(m_unsub(1, C, "t"), "topic")),
        (
            "pub without cache",
            without(m_pub(Some(1), C, "t", text("v")), "cache"),
        ),
        (
            "pub without topic",
            without(m_pub(Some(1), C, "t", text("v")), "topic"),
        ),
        (
            "pub without value",
            without(m_pub(Some(1), C, "t", text("v")), "value"),
        ),
        ("ping without id", map(&[("op", text("ping"))])),
        (
            "auth without token",
            map(&[("op", text("auth")), ("id", 1.into())]),
        ),
        (
            "auth without id",
            map(&[("op", text("auth")), ("token", text("x"))]),
        ),
        // Mistyped fields.
        ("op as integer", with(m_ping(1), "op", Value::from(3))),
        ("op as nil", with(m_ping(1), "op", Value::Nil)),
        (
            "topic as integer",
            with(m_sub(1, C, "t"), "topic", Value::from(42)),
        ),
        (
            "cache as array",
            with(m_sub(1, C, "t"), "cache", Value::Array(vec![text(C)])),
        ),
        (
            "cache as map",
            with(m_sub(1, C, "t"), "cache", map(&[("a", 1.into())])),
        ),
        (
            "topic as bool",
            with(
                m_pub(Some(1), C, "t", text("v")),
                "topic",
                Value::from(true),
            ),
        ),
        (
            "value as integer",
            with(m_pub(Some(1), C, "t", text("v")), "value", Value::from(7)),
        ),
        (
            "value as map",
            with(
                m_pub(Some(1), C, "t", text("v")),
                "value",
                map(&[("a", 1.into())]),
            ),
        ),
        (
            "value as array",
            with(
                m_pub(Some(1), C, "t", text("v")),
                "value",
                Value::Array(vec![Value::from(1)]),
            ),
        ),
        (
            "value as nil",
            with(m_pub(Some(1), C, "t", text("v")), "value", Value::Nil),
        ),
        (
            "value as float",
            with(m_pub(Some(1), C, "t", text("v")), "value", Value::F64(1.5)),
        ),
        (
            "resume_after as string",
            m_sub_resume_with(Value::from("5")),
        ),
        ("resume_after negative", m_sub_resume_with(Value::from(-1))),
        ("resume_after float", m_sub_resume_with(Value::F64(1.5))),
        (
            "resume_after array",
            m_sub_resume_with(Value::Array(vec![Value::from(1)])),
        ),
        (
            "epoch as integer",
            with(m_sub_resume(1, C, "t", 0, None), "epoch", Value::from(5)),
        ),
        (
            "token as integer",
            with(m_auth(1, "x"), "token", Value::from(5)),
        ),
        (
            "token as map",
            with(m_auth(1, "x"), "token", map(&[("jwt", text("x"))])),
        ),
    ];
    for (what, m) in msgs {
        v.push((what, encode(&m)));
    }
    v
}

fn m_sub_resume_with(after: Value) -> Value {
    with(m_sub(1, C, "t"), "resume_after", after)
}

#[tokio::test]
async fn every_protocol_violation_closes_4400_with_a_reason() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("violator").await;
    let mut bystander = srv.ws(&tok).await;
    bystander.sub(1, C, "t").await;
    let mut failures = Vec::new();
    for (what, frame) in violations() {
        let mut ws = srv.ws(&tok).await;
        let c = ws.wait_close_after_send(frame).await;
        match c {
            Ok(c) if c.code == 4400 && !c.reason.trim().is_empty() => {}
            Ok(c) => failures.push(format!(
                "{what}: closed {} {:?} (before: {:?})",
                c.code, c.reason, c.before
            )),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} violations not closed 4400:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Other clients were not affected.
    bystander.ping(2).await;
    srv.assert_serving().await;
}

#[tokio::test]
async fn text_frames_close_4400() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("texter").await;
    for body in ["hello", r#"{"op":"ping","id":1}"#] {
        let mut ws = srv.ws(&tok).await;
        ws.send_text(body).await;
        let c = ws.expect_close(4400).await;
        assert!(
            c.before.iter().all(|m| !m.is("pong")),
            "a text frame is not a request: {c:?}"
        );
    }
    srv.assert_serving().await;
}

#[tokio::test]
async fn frame_over_the_frame_limit_closes_4413() {
    let srv = TestServer::start(&[("ACORN_MAX_FRAME_BYTES", "65536")]);
    let tok = srv.mint_all("framer").await;

    // Many valid pubs in one frame just under the limit are fine.
    let mut ws = srv.ws(&tok).await;
    let msgs: Vec<_> = (0..10)
        .map(|i| m_pub(Some(i), C, "f", bin(&[i as u8; 6000])))
        .collect();
    let frame = encode_many(&msgs);
    assert!(frame.len() < 65536);
    ws.send_raw(frame).await;
    for i in 0..10 {
        ws.reply(i).await.assert_ok(i);
    }

    // One byte-valid pub in a frame over the limit: 4413, not too_large.
    let mut ws = srv.ws(&tok).await;
    let frame = encode(&m_pub(Some(1), C, "f", bin(&vec![1u8; 70_000])));
    let c = ws.send_expect_close(frame, 4413).await;
    assert!(c.before.iter().all(|m| !m.is("ok")), "{c:?}");

    // Garbage over the limit: the size is what counts.
    let mut ws = srv.ws(&tok).await;
    ws.send_expect_close(vec![0xc1; 200_000], 4413).await;

    // Nothing from the big frame was published.
    let mut check = srv.ws(&tok).await;
    assert_eq!(check.sub(1, C, "f").await.u64("seq"), 10);
    srv.assert_serving().await;
}

#[tokio::test]
async fn flooding_past_the_rate_limit_closes_4429() {
    let srv = TestServer::start(&[("ACORN_WS_RATE", "5"), ("ACORN_WS_BURST", "10")]);
    let tok = srv.mint_all("flooder").await;
    let mut calm = srv.ws(&tok).await;
    let mut ws = srv.ws(&tok).await;
    for i in 0..200u64 {
        if ws.try_send_raw(encode(&m_ping(i))).await.is_err() {
            break;
        }
    }
    let c = ws.expect_close(4429).await;
    assert!(
        c.before
            .iter()
            .any(|m| m.is("err") && m.get("code").and_then(|v| v.as_str()) == Some("rate_limited")),
        "refusals come as err rate_limited before the close: {:?}",
        c.before
    );
    // Other connections are unaffected (their own bucket).
    calm.ping(1).await;
}
