//! The HTTP surface: publish, tokens, health and metrics.

use acorn_e2e::*;
use serde_json::json;

const C: &str = "game";

#[tokio::test]
async fn health_is_200() {
    let srv = TestServer::start(&[]);
    let (status, _) = srv.get("/v1/health").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn publish_returns_200_with_seq_and_delivers() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("svc").await;
    let mut ws = srv.ws(&tok).await;
    ws.sub(1, C, "h.t").await;
    for want in 1..=3u64 {
        let got = srv
            .publish_http(
                Some(&tok),
                C,
                "h.t",
                Some("application/octet-stream"),
                vec![want as u8; 3],
            )
            .await;
        assert_eq!(got.0, 200, "{:?}", got.1);
        assert_eq!(
            got.1,
            json!({"seq": want}),
            "body is exactly {{\"seq\": N}}"
        );
        let it = ws.recv().await;
        assert_eq!(it.assert_item(C, "h.t"), want);
        assert_eq!(it.value(), &bin(&[want as u8; 3]));
        assert_eq!(it.str("from"), "svc");
    }
}

#[tokio::test]
async fn token_endpoint_returns_token_and_expires_at() {
    let srv = TestServer::start(&[]);
    let body = json!({"sub": "mallory", "expires_in": 3600,
        "perms": [{"role": "subscribeonly", "cache": "websocket", "topic": "mychannel"}]});
    let now = unix_now();
    let (status, json) = srv.mint_raw(Some(OPERATOR_KEY), body).await;
    assert_eq!(status, 200, "{json}");
    let tok = json["token"].as_str().expect("token");
    assert_eq!(tok.split('.').count(), 3, "a JWT: {tok}");
    let exp = json["expires_at"].as_u64().expect("expires_at");
    assert!(
        exp >= now + 3599 && exp <= now + 3602,
        "expires_at = now + expires_in: {exp} vs {now}"
    );
    // The token works for exactly what it says.
    let mut ws = srv.ws(tok).await;
    ws.sub(1, "websocket", "mychannel").await;
    let got = srv
        .publish_http(Some(tok), "websocket", "mychannel", Some("text/plain"), "x")
        .await;
    assert_http_error(&got, 403, "permission_denied");
}

/// Metric samples whose name starts with `acorn_`: (name with labels, value).
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with("acorn_"))
        .filter_map(|l| {
            let (name, rest) = match l.find('}') {
                Some(i) => (&l[..=i], &l[i + 1..]),
                None => {
                    let i = l.find(' ')?;
                    (&l[..i], &l[i..])
                }
            };
            let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
            Some((name.to_string(), value))
        })
        .collect()
}

fn sum_matching(s: &[(String, f64)], words: &[&str]) -> f64 {
    s.iter()
        .filter(|(n, _)| {
            let base = n.split('{').next().unwrap().to_ascii_lowercase();
            words.iter().all(|w| base.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn metrics(srv: &TestServer) -> Vec<(String, f64)> {
    let (status, body) = srv.get("/metrics").await;
    assert_eq!(status, 200, "GET /metrics: {body}");
    let s = samples(&body);
    assert!(!s.is_empty(), "no acorn_ metrics in:\n{body}");
    s
}

#[tokio::test]
async fn metrics_expose_the_main_counters_and_they_move() {
    let srv = TestServer::start(&[]);
    let before = metrics(&srv).await;
    let names: Vec<String> = before
        .iter()
        .map(|(n, _)| n.split('{').next().unwrap().to_ascii_lowercase())
        .collect();
    for word in [
        "connection",
        "subscription",
        "topic",
        "publish",
        "deliver",
        "gap",
        "slow",
        "bytes",
    ] {
        assert!(
            names.iter().any(|n| n.contains(word)),
            "no acorn_ metric mentions {word:?}; names: {names:?}"
        );
    }

    let tok = srv.mint_all("m").await;
    let mut a = srv.ws(&tok).await;
    let mut b = srv.ws(&tok).await;
    a.sub(1, C, "m1").await;
    b.sub(1, C, "m1").await;
    b.sub(2, C, "m2").await;
    for _ in 0..3 {
        srv.publish_text(&tok, C, "m1", "hello").await;
    }
    a.publish(3, C, "m2", text("hi")).await;
    for _ in 0..3 {
        a.recv().await;
    }
    for _ in 0..4 {
        b.recv().await;
    }
    let after = metrics(&srv).await;

    let pubs = (
        sum_matching(&before, &["publish"]),
        sum_matching(&after, &["publish"]),
    );
    assert!(
        pubs.1 >= pubs.0 + 4.0,
        "publish counters should grow by >= 4: {pubs:?}"
    );
    let del = (
        sum_matching(&before, &["deliver"]),
        sum_matching(&after, &["deliver"]),
    );
    assert!(
        del.1 >= del.0 + 7.0,
        "delivery counters should grow by >= 7: {del:?}"
    );
    let bytes = (
        sum_matching(&before, &["bytes"]),
        sum_matching(&after, &["bytes"]),
    );
    assert!(bytes.1 > bytes.0, "byte counters should grow: {bytes:?}");
    let conns = sum_matching(&after, &["connection"]);
    assert!(conns >= 2.0, "two WebSocket connections are open: {conns}");
    let subs = sum_matching(&after, &["subscription"]);
    assert!(subs >= 3.0, "three subscriptions are held: {subs}");
}

#[tokio::test]
async fn error_bodies_are_json_with_code_and_message() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint("limited", &[("subscribeonly", C, "t")], 600).await;
    let all = srv.mint_all("all").await;
    let cases = [
        (
            srv.publish_http(None, C, "t", None, "x").await,
            401,
            "unauthenticated",
        ),
        (
            srv.publish_http(Some(&tok), C, "t", None, "x").await,
            403,
            "permission_denied",
        ),
        (
            srv.publish_http(Some(&all), C, "bad*", None, "x").await,
            400,
            "invalid_name",
        ),
        (srv.mint_raw(None, json!({})).await, 401, "unauthenticated"),
        (
            srv.mint_raw(
                Some(OPERATOR_KEY),
                json!({"sub": "x", "expires_in": -1, "perms": []}),
            )
            .await,
            400,
            "bad_request",
        ),
    ];
    for (got, status, code) in &cases {
        assert_http_error(got, *status, code);
    }
}
