//! Every op and every server message of PROTOCOL.md on the happy path:
//! sub/unsub/pub/ping/auth; ok/err/item/gap/pong/hb; `from`, value types,
//! batching in both directions, per-topic seq, replacement subs, unknown fields.

use std::time::Duration;

use acorn_e2e::*;
use rmpv::Value;

const C: &str = "game";

#[tokio::test]
async fn ping_gets_pong_with_the_same_id() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let mut ws = srv.ws(&tok).await;
    for id in [0u64, 1, 7, 65_535, 4_294_967_296] {
        ws.send(&m_ping(id)).await;
        let m = ws.recv().await;
        assert!(m.is("pong"), "expected pong, got {m:?}");
        assert_eq!(m.id(), Some(id), "pong must echo the id: {m:?}");
    }
}

#[tokio::test]
async fn token_in_query_parameter_is_accepted() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let mut ws = srv.ws_query(&tok).await;
    ws.ping(1).await;
    let ok = ws.sub(2, C, "q").await;
    assert_eq!(ok.u64("seq"), 0);
}

#[tokio::test]
async fn sub_ok_carries_seq_and_epoch() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let mut ws = srv.ws(&tok).await;

    let ok = ws.sub(1, C, "fresh").await;
    assert_eq!(
        ok.u64("seq"),
        0,
        "a topic with no publishes has seq 0: {ok:?}"
    );
    let epoch = ok.str("epoch").to_string();
    assert!(
        !epoch.is_empty(),
        "epoch must be a non-empty string: {ok:?}"
    );

    for i in 1..=3u64 {
        assert_eq!(
            srv.publish_text(&tok, C, "fresh", &format!("v{i}")).await,
            i
        );
    }
    // Drain the three live items on the first connection.
    for i in 1..=3u64 {
        assert_eq!(ws.recv().await.assert_item(C, "fresh"), i);
    }

    let mut ws2 = srv.ws(&tok).await;
    let ok2 = ws2.sub(1, C, "fresh").await;
    assert_eq!(
        ok2.u64("seq"),
        3,
        "ok.seq is the last seq published: {ok2:?}"
    );
    assert_eq!(
        ok2.str("epoch"),
        epoch,
        "epoch is stable while history lives"
    );
}

#[tokio::test]
async fn seq_starts_at_one_and_grows_per_topic_without_subscribers() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let mut ws = srv.ws(&tok).await;

    // Nobody is subscribed to any of these.
    assert_eq!(ws.publish(1, C, "a", text("1")).await, 1);
    assert_eq!(ws.publish(2, C, "a", text("2")).await, 2);
    assert_eq!(
        ws.publish(3, C, "b", text("1")).await,
        1,
        "seq is per topic"
    );
    assert_eq!(
        srv.publish_text(&tok, C, "a", "3").await,
        3,
        "HTTP shares the sequence"
    );
    assert_eq!(ws.publish(4, C, "a", bin(b"4")).await, 4);
    assert_eq!(
        ws.publish(5, "other-cache", "a", text("x")).await,
        1,
        "the same topic name in another cache is another topic"
    );

    // A subscriber now sees the count so far, and the next publish is seq 5.
    let mut sub = srv.ws(&tok).await;
    assert_eq!(sub.sub(1, C, "a").await.u64("seq"), 4);
    assert_eq!(ws.publish(6, C, "a", text("5")).await, 5);
    assert_eq!(sub.recv().await.assert_item(C, "a"), 5);
}

#[tokio::test]
async fn pub_without_id_gets_no_reply_but_is_published() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let mut ws = srv.ws(&tok).await;
    ws.send(&m_pub(None, C, "quiet", text("hello"))).await;
    let before = ws.fence(10).await;
    assert!(
        before.is_empty(),
        "a pub without id must get no reply: {before:?}"
    );
    let ok = ws.sub(11, C, "quiet").await;
    assert_eq!(ok.u64("seq"), 1, "the id-less pub was still published");
}

#[tokio::test]
async fn failing_pub_without_id_gets_err_without_id() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let mut ws = srv.ws(&tok).await;
    ws.send(&m_pub(None, C, "bad/topic", text("x"))).await;
    let m = ws.recv().await;
    m.assert_err(None, "invalid_name");
    assert!(
        m.get("id").is_none_or(|v| v.is_nil()),
        "no id was given, none echoed: {m:?}"
    );
    ws.ping(1).await;
}

#[tokio::test]
async fn items_carry_cache_topic_seq_value_and_from_for_ws_and_http_publishes() {
    let srv = TestServer::start(&[]);
    let alice = srv.mint_all("alice").await;
    let bob = srv.mint_all("bob").await;
    let svc = srv
        .mint("svc-http", &[("publishonly", C, "room.1")], 600)
        .await;

    let mut sub = srv.ws(&alice).await;
    sub.sub(1, C, "room.1").await;

    let mut pubber = srv.ws(&bob).await;
    assert_eq!(pubber.publish(1, C, "room.1", text("from bob")).await, 1);
    let it = sub.recv().await;
    assert_eq!(it.assert_item(C, "room.1"), 1);
    assert_eq!(
        it.str("from"),
        "bob",
        "from is the publisher token's sub: {it:?}"
    );
    assert_eq!(it.value(), &text("from bob"));

    assert_eq!(srv.publish_text(&svc, C, "room.1", "from http").await, 2);
    let it = sub.recv().await;
    assert_eq!(it.assert_item(C, "room.1"), 2);
    assert_eq!(
        it.str("from"),
        "svc-http",
        "HTTP publishes carry from too: {it:?}"
    );
    assert_eq!(it.value(), &text("from http"));

    // A subscriber also receives its own publishes, from = its own sub.
    assert_eq!(sub.publish(2, C, "room.1", bin(&[1, 2, 3])).await, 3);
    let it = sub.recv().await;
    assert_eq!(it.assert_item(C, "room.1"), 3);
    assert_eq!(it.str("from"), "alice");
}

#[tokio::test]
async fn text_and_binary_values_are_delivered_as_published() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let mut ws = srv.ws(&tok).await;
    ws.sub(1, C, "vals").await;

    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let cases: Vec<Value> = vec![
        text("plain ascii"),
        text("ünïcødé ✓ 🌰"),
        text("{\"looks\":\"like json\"}"),
        bin(b"plain ascii"),
        bin(&[0xff, 0xfe, 0x00, 0xc1]),
        bin(&all_bytes),
        text(&"x".repeat(10_000)),
        bin(&vec![7u8; 10_000]),
    ];
    for (i, v) in cases.iter().enumerate() {
        ws.publish(100 + i as u64, C, "vals", v.clone()).await;
        let it = ws.recv().await;
        it.assert_item(C, "vals");
        assert_eq!(it.value(), v, "value #{i} changed type or content");
    }

    // HTTP: text/* is a text value, anything else is bytes.
    let http_cases: [(Option<&str>, bool); 7] = [
        (Some("text/plain"), true),
        (Some("text/plain; charset=utf-8"), true),
        (Some("text/html"), true),
        (Some("application/octet-stream"), false),
        (Some("application/json"), false),
        (Some("image/png"), false),
        (None, false),
    ];
    for (ct, is_text) in http_cases {
        let body = "héllo body".to_string();
        let (status, json) = srv
            .publish_http(Some(&tok), C, "vals", ct, body.clone())
            .await;
        assert_eq!(status, 200, "HTTP publish with {ct:?}: {json}");
        let it = ws.recv().await;
        it.assert_item(C, "vals");
        let want = if is_text {
            text(&body)
        } else {
            bin(body.as_bytes())
        };
        assert_eq!(
            it.value(),
            &want,
            "content-type {ct:?} decides text vs bytes: {it:?}"
        );
    }
}

#[tokio::test]
async fn several_messages_in_one_client_frame() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let mut ws = srv.ws(&tok).await;
    ws.send_many(&[
        m_sub(1, C, "batch"),
        m_pub(Some(2), C, "batch", text("one")),
        m_ping(3),
        m_pub(None, C, "batch", text("two")),
        m_ping(4),
    ])
    .await;

    let mut got = Vec::new();
    while got.len() < 6 {
        got.push(ws.recv().await);
    }
    let pos = |pred: &dyn Fn(&Msg) -> bool| {
        got.iter()
            .position(pred)
            .unwrap_or_else(|| panic!("missing a reply in {got:?}"))
    };
    let ok_sub = pos(&|m| m.is("ok") && m.id() == Some(1));
    let ok_pub = pos(&|m| m.is("ok") && m.id() == Some(2));
    let pong3 = pos(&|m| m.is("pong") && m.id() == Some(3));
    let pong4 = pos(&|m| m.is("pong") && m.id() == Some(4));
    let items: Vec<(usize, u64)> = got
        .iter()
        .enumerate()
        .filter(|(_, m)| m.is("item"))
        .map(|(i, m)| (i, m.assert_item(C, "batch")))
        .collect();
    assert_eq!(got[ok_pub].u64("seq"), 1);
    assert_eq!(
        items.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![1, 2],
        "{got:?}"
    );
    assert!(
        ok_sub < items[0].0,
        "the sub's ok comes before its first item: {got:?}"
    );
    let _ = (pong3, pong4);
}

#[tokio::test]
async fn server_frames_with_several_messages_are_decoded_in_order() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let mut sub = srv.ws(&tok).await;
    sub.sub(1, C, "burst").await;
    let mut pubber = srv.ws(&tok).await;
    let n = 300u64;
    let msgs: Vec<Value> = (1..=n)
        .map(|i| m_pub(None, C, "burst", text(&format!("m{i}"))))
        .collect();
    // A few big frames of id-less publishes: the server is free to batch the items.
    for chunk in msgs.chunks(100) {
        pubber.send_many(chunk).await;
    }
    for want in 1..=n {
        let it = sub.recv().await;
        assert_eq!(
            it.assert_item(C, "burst"),
            want,
            "items in seq order, each once"
        );
        assert_eq!(it.value(), &text(&format!("m{want}")));
    }
    eprintln!(
        "received {n} items in {} frames (at most {} messages in one)",
        sub.frames, sub.max_msgs_per_frame
    );
}

#[tokio::test]
async fn second_sub_replaces_the_first_without_double_delivery() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let mut ws = srv.ws(&tok).await;
    ws.sub(1, C, "dup").await;
    ws.sub(2, C, "dup").await;
    ws.sub(3, C, "dup").await;
    for i in 1..=3u64 {
        ws.publish(10 + i, C, "dup", text("x")).await;
    }
    let mut seqs = Vec::new();
    while seqs.last() != Some(&3) {
        let m = ws.recv().await;
        seqs.push(m.assert_item(C, "dup"));
    }
    assert_eq!(seqs, vec![1, 2, 3], "each seq exactly once");
    // Nothing more may trickle in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let extra = ws.fence(99).await;
    assert!(
        extra.is_empty(),
        "duplicate deliveries after replacement: {extra:?}"
    );
}

#[tokio::test]
async fn unsub_stops_delivery_and_unsub_of_unknown_topic_is_ok() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let mut ws = srv.ws(&tok).await;

    let r = ws.request(&m_unsub(1, C, "never-subscribed"), 1).await;
    r.assert_ok(1);
    let r = ws.request(&m_unsub(2, "nocache", "nothing.here"), 2).await;
    r.assert_ok(2);

    ws.sub(3, C, "u").await;
    assert_eq!(srv.publish_text(&tok, C, "u", "before").await, 1);
    assert_eq!(ws.recv().await.assert_item(C, "u"), 1);
    ws.request(&m_unsub(4, C, "u"), 4).await.assert_ok(4);
    assert_eq!(srv.publish_text(&tok, C, "u", "after").await, 2);
    assert_eq!(srv.publish_text(&tok, C, "u", "after").await, 3);
    let late = ws.recv_within(Duration::from_millis(500)).await;
    assert!(late.is_none(), "item delivered after unsub: {late:?}");
    // Unsubscribing twice is fine too.
    ws.request(&m_unsub(5, C, "u"), 5).await.assert_ok(5);
    // And subscribing again works.
    assert_eq!(ws.sub(6, C, "u").await.u64("seq"), 3);
}

#[tokio::test]
async fn unknown_fields_are_ignored_on_every_op() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let fresh = srv.mint_all("alice").await;
    let mut ws = srv.ws(&tok).await;
    let extra = |mut v: Value| {
        if let Value::Map(ref mut e) = v {
            e.push((text("x_future"), Value::from(42)));
            e.push((
                text("x_nested"),
                map(&[(
                    "a",
                    Value::Array(vec![Value::Nil, Value::from(true), bin(b"z")]),
                )]),
            ));
            e.push((text("flags"), Value::F64(1.5)));
        }
        v
    };
    ws.send(&extra(m_sub(1, C, "ext"))).await;
    ws.reply(1).await.assert_ok(1);
    ws.send(&extra(m_pub(Some(2), C, "ext", text("v")))).await;
    let ok = ws.reply(2).await;
    ok.assert_ok(2);
    assert_eq!(ok.u64("seq"), 1);
    assert_eq!(ws.recv().await.assert_item(C, "ext"), 1);
    ws.send(&extra(m_ping(3))).await;
    assert!(ws.reply(3).await.is("pong"));
    ws.send(&extra(m_auth(4, &fresh))).await;
    ws.reply(4).await.assert_ok(4);
    ws.send(&extra(m_unsub(5, C, "ext"))).await;
    ws.reply(5).await.assert_ok(5);
    ws.send(&extra(m_sub_resume(6, C, "ext", 0, None))).await;
    ws.reply(6).await.assert_ok(6);
    assert_eq!(
        ws.recv().await.assert_item(C, "ext"),
        1,
        "resume_after 0 replays seq 1"
    );
}

#[tokio::test]
async fn several_topics_on_one_connection_are_kept_apart() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("alice").await;
    let mut ws = srv.ws(&tok).await;
    let topics = ["t.a", "t.b", "t:c", "T_d-1", "t.e"];
    for (i, t) in topics.iter().enumerate() {
        ws.sub(i as u64, C, t).await;
    }
    ws.sub(50, "other", "t.a").await;
    for round in 1..=2u64 {
        for t in topics {
            srv.publish_text(&tok, C, t, &format!("{t}#{round}")).await;
        }
    }
    let mut got: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for _ in 0..topics.len() * 2 {
        let m = ws.recv().await;
        assert!(m.is("item"), "{m:?}");
        assert_eq!(
            m.str("cache"),
            C,
            "nothing was published to cache `other`: {m:?}"
        );
        let t = m.str("topic").to_string();
        let seq = m.u64("seq");
        assert_eq!(
            m.value(),
            &text(&format!("{t}#{seq}")),
            "value belongs to its topic"
        );
        got.entry(t).or_default().push(seq);
    }
    for t in topics {
        assert_eq!(got.get(t), Some(&vec![1, 2]), "topic {t}: {got:?}");
    }
}

#[tokio::test]
async fn heartbeat_is_sent_on_an_idle_connection() {
    let srv = TestServer::start(&[("ACORN_HEARTBEAT", "1s")]);
    let tok = srv.mint_all("alice").await;
    let mut ws = srv.ws(&tok).await;
    let start = std::time::Instant::now();
    let m = match ws.next_event(Duration::from_secs(5)).await {
        Event::Msg(m) => m,
        other => panic!("expected hb on an idle connection, got {other:?}"),
    };
    assert!(
        m.is("hb"),
        "the only thing an idle connection gets is hb: {m:?}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "hb came too early"
    );
    // And again, while still idle.
    let m = ws.recv_with_hb().await;
    assert!(m.is("hb"), "{m:?}");
    // The connection is still usable.
    ws.ping(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_give_every_subscriber_the_same_single_order() {
    let srv = std::sync::Arc::new(TestServer::start(&[]));
    let tok = srv.mint_all("conc").await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut s = srv.ws(&tok).await;
        s.sub(1, C, "conc").await;
        subs.push(s);
    }
    let per = 50u64;
    let mut tasks = Vec::new();
    for p in 0..2u64 {
        let mut ws = srv.ws(&tok).await;
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..per {
                let v = format!("ws{p}-{i}");
                let seq = ws.publish(i, C, "conc", text(&v)).await;
                acks.push((seq, v));
            }
            acks
        }));
    }
    for p in 0..2u64 {
        let srv = srv.clone();
        let tok = tok.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..per {
                let v = format!("http{p}-{i}");
                acks.push((srv.publish_text(&tok, C, "conc", &v).await, v));
            }
            acks
        }));
    }
    let mut acked = std::collections::BTreeMap::new();
    for t in tasks {
        for (seq, v) in t.await.unwrap() {
            assert!(
                acked.insert(seq, v).is_none(),
                "seq {seq} acknowledged twice"
            );
        }
    }
    let total = 4 * per;
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    for (n, s) in subs.iter_mut().enumerate() {
        for want in 1..=total {
            let it = s.recv().await;
            assert_eq!(it.assert_item(C, "conc"), want, "subscriber {n}: seq order");
            assert_eq!(
                it.value(),
                &text(&acked[&want]),
                "subscriber {n}: seq {want} carries the value acknowledged with it"
            );
        }
    }
}
