//! Error codes that leave the connection open: invalid_name, too_large,
//! rate_limited, limit_exceeded over WebSocket; 400/413/429 and bad_request
//! over HTTP.

use std::time::Duration;

use acorn_e2e::*;
use serde_json::json;

const C: &str = "game";

fn bad_caches() -> Vec<String> {
    vec![
        "".into(),
        "c".repeat(65),
        "a.b".into(),
        "a:b".into(),
        "a b".into(),
        "a/b".into(),
        "café".into(),
        "a*".into(),
        "*".into(),
        "new\nline".into(),
    ]
}

fn bad_topics() -> Vec<String> {
    vec![
        "".into(),
        "t".repeat(257),
        "a b".into(),
        "a/b".into(),
        "a*".into(),
        "*".into(),
        "match.42.*".into(),
        "café".into(),
        "a#b".into(),
        "a,b".into(),
        "tab\t".into(),
        "nul\0".into(),
    ]
}

/// The longest valid names, using every allowed character.
fn longest_cache() -> String {
    let alphabet = "ABCXYZabcxyz0189_-";
    alphabet.chars().cycle().take(64).collect()
}

fn longest_topic() -> String {
    let alphabet = "ABCXYZabcxyz0189_-.:";
    alphabet.chars().cycle().take(256).collect()
}

#[tokio::test]
async fn invalid_names_get_invalid_name_over_websocket() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("namer").await;
    let mut ws = srv.ws(&tok).await;
    let mut id = 0;
    let mut cases: Vec<(String, String)> = Vec::new();
    for c in bad_caches() {
        cases.push((c, "fine.topic".into()));
    }
    for t in bad_topics() {
        cases.push((C.into(), t));
    }
    for (cache, topic) in &cases {
        id += 1;
        let r = ws.request(&m_sub(id, cache, topic), id).await;
        assert!(
            r.is("err"),
            "sub {cache:?}/{topic:?} must be refused: {r:?}"
        );
        r.assert_err(Some(id), "invalid_name");
        id += 1;
        let r = ws
            .request(&m_pub(Some(id), cache, topic, text("v")), id)
            .await;
        assert!(
            r.is("err"),
            "pub {cache:?}/{topic:?} must be refused: {r:?}"
        );
        r.assert_err(Some(id), "invalid_name");
    }
    // The connection is still fine, and the longest valid names work.
    let (lc, lt) = (longest_cache(), longest_topic());
    ws.sub(1000, &lc, &lt).await;
    assert_eq!(ws.publish(1001, &lc, &lt, text("edge")).await, 1);
    let it = ws.recv().await;
    assert_eq!(it.assert_item(&lc, &lt), 1);
}

#[tokio::test]
async fn invalid_names_get_400_over_http() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("namer").await;
    // Percent-encoded where a raw character cannot appear in a URL path.
    let bad_caches = [
        "c".repeat(65),
        "a.b".into(),
        "a:b".into(),
        "a%20b".into(),
        "a%2Fb".into(),
        "caf%C3%A9".into(),
        "a*".into(),
        "*".into(),
    ];
    let bad_topics = [
        "t".repeat(257),
        "a%20b".into(),
        "a%2Fb".into(),
        "a*".into(),
        "*".into(),
        "caf%C3%A9".into(),
        "a%23b".into(),
        "a,b".into(),
        "tab%09".into(),
    ];
    for c in &bad_caches {
        let got = srv
            .publish_http(Some(&tok), c, "fine", Some("text/plain"), "v")
            .await;
        assert_eq!(got.0, 400, "cache {c:?}: {:?}", got.1);
        assert_http_error(&got, 400, "invalid_name");
    }
    for t in &bad_topics {
        let got = srv
            .publish_http(Some(&tok), C, t, Some("text/plain"), "v")
            .await;
        assert_eq!(got.0, 400, "topic {t:?}: {:?}", got.1);
        assert_http_error(&got, 400, "invalid_name");
    }
    let (lc, lt) = (longest_cache(), longest_topic());
    let got = srv
        .publish_http(Some(&tok), &lc, &lt, Some("text/plain"), "v")
        .await;
    assert_eq!(got.0, 200, "longest valid names: {:?}", got.1);
    assert_eq!(got.1["seq"], 1);
}

#[tokio::test]
async fn too_large_value_gets_err_and_the_connection_stays() {
    let srv = TestServer::start(&[("ACORN_MAX_VALUE_BYTES", "1024")]);
    let tok = srv.mint_all("big").await;
    let mut ws = srv.ws(&tok).await;
    ws.sub(1, C, "big").await;

    assert_eq!(
        ws.publish(2, C, "big", bin(&[1u8; 1024])).await,
        1,
        "exactly the limit is fine"
    );
    assert_eq!(ws.recv().await.assert_item(C, "big"), 1);

    for (id, v) in [
        (3, bin(&[1u8; 1025])),
        (4, text(&"x".repeat(1025))),
        (5, text(&"é".repeat(513))), // 1026 bytes in 513 characters
        (6, bin(&vec![0u8; 60_000])),
    ] {
        let r = ws.request(&m_pub(Some(id), C, "big", v), id).await;
        r.assert_err(Some(id), "too_large");
    }
    // Without id, the err comes without id.
    ws.send(&m_pub(None, C, "big", bin(&[9u8; 2000]))).await;
    let m = ws.recv().await;
    m.assert_err(None, "too_large");

    // Still open, and nothing refused was published.
    ws.ping(7).await;
    assert_eq!(ws.publish(8, C, "big", text("small")).await, 2);
    let it = ws.recv().await;
    assert_eq!(it.assert_item(C, "big"), 2);
    assert_eq!(it.value(), &text("small"));
}

#[tokio::test]
async fn too_large_value_gets_413_over_http() {
    let srv = TestServer::start(&[("ACORN_MAX_VALUE_BYTES", "1024")]);
    let tok = srv.mint_all("big").await;
    let got = srv
        .publish_http(
            Some(&tok),
            C,
            "big",
            Some("application/octet-stream"),
            vec![0u8; 1025],
        )
        .await;
    assert_http_error(&got, 413, "too_large");
    let got = srv
        .publish_http(Some(&tok), C, "big", Some("text/plain"), "y".repeat(5000))
        .await;
    assert_http_error(&got, 413, "too_large");
    let got = srv
        .publish_http(
            Some(&tok),
            C,
            "big",
            Some("application/octet-stream"),
            vec![0u8; 1024],
        )
        .await;
    assert_eq!(got.0, 200, "{:?}", got.1);
    assert_eq!(got.1["seq"], 1, "the refused ones were not published");
}

#[tokio::test]
async fn too_many_subscriptions_get_limit_exceeded() {
    let srv = TestServer::start(&[("ACORN_MAX_SUBSCRIPTIONS", "3")]);
    let tok = srv.mint_all("subber").await;
    let mut ws = srv.ws(&tok).await;
    ws.sub(1, C, "s1").await;
    ws.sub(2, C, "s2").await;
    ws.sub(3, C, "s3").await;
    ws.request(&m_sub(4, C, "s4"), 4)
        .await
        .assert_err(Some(4), "limit_exceeded");
    ws.request(&m_sub(5, "other", "s1"), 5)
        .await
        .assert_err(Some(5), "limit_exceeded");
    // Re-subscribing to a topic already held replaces it: not a new subscription.
    ws.sub(6, C, "s1").await;
    // Freeing one makes room for one.
    ws.request(&m_unsub(7, C, "s2"), 7).await.assert_ok(7);
    ws.sub(8, C, "s4").await;
    ws.request(&m_sub(9, C, "s5"), 9)
        .await
        .assert_err(Some(9), "limit_exceeded");
    // The refused sub delivers nothing; the held ones still work.
    srv.publish_text(&tok, C, "s5", "no").await;
    srv.publish_text(&tok, C, "s4", "yes").await;
    let it = ws.recv().await;
    assert_eq!(it.assert_item(C, "s4"), 1);
    assert!(ws.recv_within(Duration::from_millis(300)).await.is_none());
    // The limit is per connection.
    let mut other = srv.ws(&tok).await;
    other.sub(1, C, "s5").await;
}

#[tokio::test]
async fn ws_rate_limit_refuses_with_rate_limited_and_the_connection_stays() {
    let srv = TestServer::start(&[("ACORN_WS_RATE", "5"), ("ACORN_WS_BURST", "10")]);
    let tok = srv.mint_all("fast").await;
    let mut ws = srv.ws(&tok).await;
    // 14 requests at once: the bucket holds 10, so some are refused — but
    // fewer refusals than the burst, so no close.
    let msgs: Vec<_> = (1..=14).map(m_ping).collect();
    ws.send_many(&msgs).await;
    let mut pongs = 0;
    let mut refused = 0;
    for _ in 0..14 {
        let m = ws.recv().await;
        if m.is("pong") {
            pongs += 1;
        } else {
            m.assert_err(None, "rate_limited");
            refused += 1;
        }
    }
    assert!(
        refused >= 1,
        "14 messages at once over a burst of 10: some must be refused"
    );
    assert!(pongs >= 10, "the burst must be allowed: {pongs} pongs");
    // After the bucket refills, the connection works again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.ping(100).await;
}

#[tokio::test]
async fn http_rate_limit_gets_429() {
    let srv = TestServer::start(&[("ACORN_HTTP_RATE", "2"), ("ACORN_HTTP_BURST", "3")]);
    let tok = srv.mint_all("http-spammer").await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let got = srv
            .publish_http(Some(&tok), C, "spam", Some("text/plain"), "x")
            .await;
        if got.0 == 429 {
            assert_http_error(&got, 429, "rate_limited");
        } else {
            assert_eq!(got.0, 200, "{:?}", got.1);
        }
        statuses.push(got.0);
    }
    assert_eq!(
        statuses[0], 200,
        "the first publish is within the burst: {statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "12 quick publishes over a burst of 3: {statuses:?}"
    );
    // The limit is per token subject: another subject is not affected.
    let other = srv.mint_all("someone-else").await;
    let got = srv
        .publish_http(Some(&other), C, "spam", Some("text/plain"), "x")
        .await;
    assert_eq!(got.0, 200, "{:?}", got.1);
}

#[tokio::test]
async fn minting_with_bad_input_is_bad_request() {
    let srv = TestServer::start(&[]);
    let key = Some(OPERATOR_KEY);
    let perm = |role: &str, cache: &str, topic: &str| json!({"sub": "x", "expires_in": 60, "perms": [{"role": role, "cache": cache, "topic": topic}]});
    let cases = vec![
        ("unknown role", perm("admin", "c", "t")),
        ("role in another case", perm("PublishSubscribe", "c", "t")),
        ("cache with a dot", perm("subscribeonly", "bad.cache", "t")),
        ("cache prefix", perm("subscribeonly", "ca*", "t")),
        ("empty cache", perm("subscribeonly", "", "t")),
        ("star inside topic", perm("subscribeonly", "c", "a*b")),
        ("two stars", perm("subscribeonly", "c", "**")),
        (
            "star in the middle",
            perm("subscribeonly", "c", "match.*.x"),
        ),
        (
            "bad char in topic prefix",
            perm("subscribeonly", "c", "a b*"),
        ),
        ("empty topic", perm("subscribeonly", "c", "")),
        (
            "topic too long",
            perm("subscribeonly", "c", &"t".repeat(257)),
        ),
        (
            "zero expires_in",
            json!({"sub": "x", "expires_in": 0, "perms": [{"role": "subscribeonly", "cache": "c", "topic": "t"}]}),
        ),
        (
            "negative expires_in",
            json!({"sub": "x", "expires_in": -5, "perms": [{"role": "subscribeonly", "cache": "c", "topic": "t"}]}),
        ),
        (
            "expires_in as a string",
            json!({"sub": "x", "expires_in": "60", "perms": [{"role": "subscribeonly", "cache": "c", "topic": "t"}]}),
        ),
        (
            "perms not a list",
            json!({"sub": "x", "expires_in": 60, "perms": "everything"}),
        ),
    ];
    for (what, body) in cases {
        let got = srv.mint_raw(key, body).await;
        assert_eq!(got.0, 400, "{what}: {:?}", got.1);
        assert_http_error(&got, 400, "bad_request");
    }
    for raw in ["{not json", "", "[]", "null"] {
        let resp = srv
            .http()
            .post(format!("{}/v1/tokens", srv.http_url()))
            .bearer_auth(OPERATOR_KEY)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let got = json_response(resp).await;
        assert_eq!(got.0, 400, "body {raw:?}: {:?}", got.1);
        assert_http_error(&got, 400, "bad_request");
    }
    // And a good one still works: prefix selectors and `*` are fine.
    srv.mint(
        "x",
        &[("subscribeonly", "*", "ab*"), ("publishonly", "c", "*")],
        60,
    )
    .await;
}

#[tokio::test]
async fn connection_limit_refuses_further_upgrades_with_503_unavailable() {
    let srv = TestServer::start(&[("ACORN_MAX_CONNECTIONS", "2")]);
    let tok = srv.mint_all("crowd").await;
    let mut a = srv.ws(&tok).await;
    let b = srv.ws(&tok).await;
    let (status, body) = srv.ws_refused(Some(&tok), TokenIn::Header).await;
    let body: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("503 body is not JSON ({e}): {body:?}"));
    assert_http_error(&(status, body), 503, "unavailable");
    // HTTP publishing is not a connection: it still works.
    assert_eq!(srv.publish_text(&tok, C, "crowd", "x").await, 1);
    a.ping(1).await;
    // Closing one makes room again (allow the server a moment to notice).
    b.close().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match Ws::connect(srv.addr, Some(&tok), TokenIn::Header, None).await {
            Ok(mut c) => {
                c.ping(2).await;
                break;
            }
            Err(ConnectError::Status(503, _)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("after a close, a new connection should be accepted: {e}"),
        }
    }
}
