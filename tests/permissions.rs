//! The permission matrix: role × cache selector × topic selector, for `sub` and
//! `pub` over WebSocket and for HTTP publishes.

use std::time::Duration;

use acorn_e2e::*;

const ROLES: [&str; 3] = ["publishsubscribe", "subscribeonly", "publishonly"];
const CACHE_SELS: [&str; 2] = ["arena", "*"];
const TOPIC_SELS: [&str; 3] = ["lobby", "match.42.*", "*"];
const TARGETS: [(&str, &str); 9] = [
    ("arena", "lobby"),
    ("arena", "lobbyx"),
    ("arena", "match.42.7"),
    ("arena", "match.42.a.b"),
    ("arena", "match.420"),
    ("arena", "match.42"),
    ("arena", "other"),
    ("plaza", "lobby"),
    ("plaza", "match.42.7"),
];

fn covers(cache_sel: &str, topic_sel: &str, cache: &str, topic: &str) -> bool {
    let cache_ok = cache_sel == "*" || cache_sel == cache;
    let topic_ok = if topic_sel == "*" {
        true
    } else if let Some(prefix) = topic_sel.strip_suffix('*') {
        topic.starts_with(prefix)
    } else {
        topic_sel == topic
    };
    cache_ok && topic_ok
}

fn may_sub(role: &str) -> bool {
    role != "publishonly"
}

fn may_pub(role: &str) -> bool {
    role != "subscribeonly"
}

#[tokio::test]
async fn permission_matrix_over_websocket() {
    let srv = TestServer::start(&[]);
    let mut failures = Vec::new();
    let mut id = 0u64;
    for role in ROLES {
        for cs in CACHE_SELS {
            for ts in TOPIC_SELS {
                let tok = srv.mint("matrix", &[(role, cs, ts)], 600).await;
                let mut ws = srv.ws(&tok).await;
                for (cache, topic) in TARGETS {
                    let covered = covers(cs, ts, cache, topic);
                    for (action, allowed) in [
                        ("sub", covered && may_sub(role)),
                        ("pub", covered && may_pub(role)),
                    ] {
                        id += 1;
                        let msg = if action == "sub" {
                            m_sub(id, cache, topic)
                        } else {
                            m_pub(Some(id), cache, topic, text("v"))
                        };
                        let r = ws.request(&msg, id).await;
                        let ok = r.is("ok");
                        if ok != allowed {
                            failures.push(format!(
                                "{role} {cs}/{ts}: {action} {cache}/{topic}: expected {}, got {r:?}",
                                if allowed { "ok" } else { "permission_denied" }
                            ));
                        } else if !allowed {
                            r.assert_err(Some(id), "permission_denied");
                        }
                    }
                }
                ws.close().await;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn permission_matrix_over_http() {
    let srv = TestServer::start(&[]);
    let mut failures = Vec::new();
    for role in ROLES {
        for cs in CACHE_SELS {
            for ts in TOPIC_SELS {
                let tok = srv.mint("matrix", &[(role, cs, ts)], 600).await;
                for (cache, topic) in TARGETS {
                    let allowed = covers(cs, ts, cache, topic) && may_pub(role);
                    let got = srv
                        .publish_http(Some(&tok), cache, topic, Some("text/plain"), "v")
                        .await;
                    let want = if allowed { 200 } else { 403 };
                    if got.0 != want {
                        failures.push(format!(
                            "{role} {cs}/{ts}: POST {cache}/{topic}: expected {want}, got {got:?}"
                        ));
                    } else if !allowed {
                        assert_http_error(&got, 403, "permission_denied");
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn any_one_permission_is_enough_and_denied_subs_deliver_nothing() {
    let srv = TestServer::start(&[]);
    let tok = srv
        .mint(
            "union",
            &[
                ("subscribeonly", "arena", "lobby"),
                ("publishonly", "plaza", "*"),
                ("subscribeonly", "*", "news.*"),
            ],
            600,
        )
        .await;
    let admin = srv.mint_all("admin").await;
    let mut ws = srv.ws(&tok).await;
    ws.sub(1, "arena", "lobby").await;
    ws.sub(2, "anycache", "news.today").await;
    ws.request(&m_pub(Some(3), "arena", "lobby", text("x")), 3)
        .await
        .assert_err(Some(3), "permission_denied");
    assert_eq!(ws.publish(4, "plaza", "square", text("x")).await, 1);
    ws.request(&m_sub(5, "plaza", "square"), 5)
        .await
        .assert_err(Some(5), "permission_denied");

    // The refused sub delivers nothing; the allowed ones do.
    srv.publish_text(&admin, "plaza", "square", "no").await;
    srv.publish_text(&admin, "arena", "lobby", "yes").await;
    srv.publish_text(&admin, "anycache", "news.today", "yes")
        .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = ws.recv().await;
        assert!(m.is("item"), "{m:?}");
        got.push(format!("{}/{}", m.str("cache"), m.str("topic")));
    }
    got.sort();
    assert_eq!(got, vec!["anycache/news.today", "arena/lobby"]);
    let more = ws.recv_within(Duration::from_millis(300)).await;
    assert!(more.is_none(), "item from a refused sub: {more:?}");
}
