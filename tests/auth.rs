//! Tokens: minting, refusal of missing/bad/expired tokens over HTTP and on the
//! WebSocket upgrade, `auth` refresh and replacement, close 4401 at expiry.

use std::time::Duration;

use acorn_e2e::*;
use serde_json::json;

const C: &str = "game";

/// Tokens that must all be refused.
fn bad_tokens() -> Vec<(&'static str, String)> {
    let now = unix_now() as i64;
    vec![
        ("garbage", "not-a-jwt".to_string()),
        ("three garbage parts", "aaa.bbb.ccc".to_string()),
        (
            "signed with another secret",
            sign_token("some-other-secret-entirely", "eve", now + 3600, all_perms()),
        ),
        (
            "expired 30 s ago",
            sign_token(TOKEN_SECRET, "late", now - 30, all_perms()),
        ),
        (
            "alg none",
            raw_jwt(
                &json!({"alg": "none", "typ": "JWT"}),
                &json!({"sub": "eve", "exp": now + 3600, "iat": now, "jti": "x", "perms": all_perms()}),
                "",
            ),
        ),
        ("signature stripped", {
            let t = sign_token(TOKEN_SECRET, "eve", now + 3600, all_perms());
            let (head, _) = t.rsplit_once('.').unwrap();
            format!("{head}.")
        }),
        ("payload swapped under a valid signature", {
            let t = sign_token(TOKEN_SECRET, "eve", now + 3600, json!([]));
            let parts: Vec<&str> = t.split('.').collect();
            let forged = b64url(
                    json!({"sub": "eve", "exp": now + 3600, "iat": now, "jti": "x", "perms": all_perms()})
                        .to_string()
                        .as_bytes(),
                );
            format!("{}.{}.{}", parts[0], forged, parts[2])
        }),
        ("the operator key", OPERATOR_KEY.to_string()),
    ]
}

#[tokio::test]
async fn minted_token_is_an_hs256_jwt_with_the_documented_claims() {
    let srv = TestServer::start(&[]);
    let before = unix_now();
    let (token, expires_at) = srv
        .mint_full(
            "mallory",
            &[
                ("subscribeonly", "websocket", "mychannel"),
                ("publishonly", "*", "match.42.*"),
            ],
            3600,
        )
        .await;
    let after = unix_now();
    assert!(
        expires_at >= before + 3600 && expires_at <= after + 3601,
        "expires_at should be now + expires_in: {expires_at} vs {before}"
    );

    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(TOKEN_SECRET.as_bytes()).expect("key"),
        &validation,
    )
    .unwrap_or_else(|e| panic!("token is not an HS256 JWT signed by the server secret: {e}"));
    let c = data.claims;
    assert_eq!(c["sub"], "mallory", "{c}");
    assert_eq!(
        c["exp"].as_u64(),
        Some(expires_at),
        "exp == expires_at: {c}"
    );
    let iat = c["iat"].as_u64().expect("iat");
    assert!(
        iat >= before.saturating_sub(1) && iat <= after + 1,
        "iat is now: {c}"
    );
    assert!(
        c["jti"].is_string() && !c["jti"].as_str().unwrap().is_empty(),
        "jti: {c}"
    );
    let perms = c["perms"].as_array().expect("perms is a list");
    assert_eq!(perms.len(), 2, "{c}");
    assert_eq!(perms[0]["role"], "subscribeonly");
    assert_eq!(perms[0]["cache"], "websocket");
    assert_eq!(perms[0]["topic"], "mychannel");
    assert_eq!(perms[1]["role"], "publishonly");
    assert_eq!(perms[1]["cache"], "*");
    assert_eq!(perms[1]["topic"], "match.42.*");

    // Two mints differ in jti.
    let t2 = srv
        .mint(
            "mallory",
            &[("subscribeonly", "websocket", "mychannel")],
            3600,
        )
        .await;
    let jti = |t: &str| {
        let payload = t.split('.').nth(1).unwrap();
        serde_json::from_slice::<serde_json::Value>(&b64url_decode(payload)).unwrap()["jti"].clone()
    };
    assert_ne!(jti(&token), jti(&t2), "jti must be unique per token");
}

#[tokio::test]
async fn a_jwt_signed_elsewhere_with_the_server_secret_is_accepted() {
    // The token format is public: any HS256 signer holding the secret can mint.
    let srv = TestServer::start(&[]);
    let now = unix_now() as i64;
    let tok = sign_token(
        TOKEN_SECRET,
        "external-signer",
        now + 600,
        json!([{"role": "publishsubscribe", "cache": C, "topic": "ext.*"}]),
    );
    let mut ws = srv.ws(&tok).await;
    ws.sub(1, C, "ext.1").await;
    assert_eq!(srv.publish_text(&tok, C, "ext.1", "hi").await, 1);
    let it = ws.recv().await;
    it.assert_item(C, "ext.1");
    assert_eq!(it.str("from"), "external-signer");
}

#[tokio::test]
async fn minting_needs_the_operator_key() {
    let srv = TestServer::start(&[]);
    let body = json!({"sub": "x", "expires_in": 60,
        "perms": [{"role": "subscribeonly", "cache": "c", "topic": "t"}]});
    let user = srv.mint_all("user").await;
    for (what, bearer) in [
        ("no key", None),
        ("wrong key", Some("not-the-operator-key")),
        ("the key with a suffix", Some(&*format!("{OPERATOR_KEY}x"))),
        ("a user token", Some(user.as_str())),
        ("empty", Some("")),
    ] {
        let got = srv.mint_raw(bearer, body.clone()).await;
        assert_eq!(
            got.0, 401,
            "minting with {what} must be refused: {:?}",
            got.1
        );
        assert_http_error(&got, 401, "unauthenticated");
    }
    // A non-Bearer scheme with the right key is refused too.
    let resp = srv
        .http()
        .post(format!("{}/v1/tokens", srv.http_url()))
        .header("authorization", format!("Basic {OPERATOR_KEY}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let got = json_response(resp).await;
    assert_http_error(&got, 401, "unauthenticated");
}

#[tokio::test]
async fn http_publish_refuses_missing_bad_and_expired_tokens_with_401() {
    let srv = TestServer::start(&[]);
    let got = srv
        .publish_http(None, C, "t", Some("text/plain"), "x")
        .await;
    assert_http_error(&got, 401, "unauthenticated");
    for (what, tok) in bad_tokens() {
        let got = srv
            .publish_http(Some(&tok), C, "t", Some("text/plain"), "x")
            .await;
        assert_eq!(got.0, 401, "HTTP publish with {what} token: {:?}", got.1);
        assert_http_error(&got, 401, "unauthenticated");
    }
    // None of them published anything.
    let tok = srv.mint_all("checker").await;
    assert_eq!(srv.publish_text(&tok, C, "t", "first").await, 1);
}

#[tokio::test]
async fn ws_upgrade_without_or_with_bad_token_is_refused_with_401() {
    let srv = TestServer::start(&[]);
    let (status, body) = srv.ws_refused(None, TokenIn::Header).await;
    assert_eq!(status, 401, "no token");
    let body: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("401 body is not JSON ({e}): {body:?}"));
    assert_http_error(&(status, body), 401, "unauthenticated");
    for (what, tok) in bad_tokens() {
        for how in [TokenIn::Header, TokenIn::Query] {
            let s = srv.ws_refused_status(Some(&tok), how).await;
            assert_eq!(s, 401, "upgrade with {what} token in {how:?}");
        }
    }
    srv.assert_serving().await;
}

#[tokio::test]
async fn auth_with_bad_token_gets_unauthenticated_and_keeps_the_current_token() {
    let srv = TestServer::start(&[]);
    let tok = srv
        .mint("keeper", &[("publishsubscribe", C, "k")], 600)
        .await;
    let mut ws = srv.ws(&tok).await;
    ws.sub(1, C, "k").await;
    for (i, (what, bad)) in bad_tokens().into_iter().enumerate() {
        let id = 100 + i as u64;
        let r = ws.request(&m_auth(id, &bad), id).await;
        assert!(r.is("err"), "auth with {what} token must fail: {r:?}");
        r.assert_err(Some(id), "unauthenticated");
    }
    // The original token still works, with its own identity and permissions.
    assert_eq!(ws.publish(2, C, "k", text("still me")).await, 1);
    let it = ws.recv().await;
    it.assert_item(C, "k");
    assert_eq!(it.str("from"), "keeper");
    let r = ws.request(&m_pub(Some(3), C, "other", text("x")), 3).await;
    r.assert_err(Some(3), "permission_denied");
}

#[tokio::test]
async fn auth_replaces_the_connection_token() {
    let srv = TestServer::start(&[]);
    let first = srv.mint("p", &[("publishonly", C, "one")], 600).await;
    let second = srv.mint("p", &[("publishonly", C, "two")], 600).await;
    let mut ws = srv.ws(&first).await;
    assert_eq!(ws.publish(1, C, "one", text("a")).await, 1);
    ws.request(&m_pub(Some(2), C, "two", text("a")), 2)
        .await
        .assert_err(Some(2), "permission_denied");
    ws.request(&m_auth(3, &second), 3).await.assert_ok(3);
    assert_eq!(ws.publish(4, C, "two", text("b")).await, 1);
    ws.request(&m_pub(Some(5), C, "one", text("b")), 5)
        .await
        .assert_err(Some(5), "permission_denied");
}

#[tokio::test]
async fn expired_token_closes_4401_unless_refreshed_with_auth() {
    let srv = TestServer::start(&[]);
    let perms = [("publishsubscribe", "*", "*")];
    let (short, exp) = srv.mint_full("shorty", &perms, 2).await;
    let fresh = srv.mint("shorty", &perms, 3600).await;

    let mut stale = srv.ws(&short).await;
    stale.sub(1, C, "exp").await;
    let mut refreshed = srv.ws(&short).await;
    refreshed.sub(1, C, "exp").await;
    refreshed.request(&m_auth(2, &fresh), 2).await.assert_ok(2);

    let exp = exp as f64;
    let watch_stale = async {
        let c = stale.wait_close(Duration::from_secs(10)).await;
        (c, unix_now_f64())
    };
    let watch_fresh = async {
        // Stay past the old expiry (plus slack), then prove the connection works.
        let wait = (exp + 2.6 - unix_now_f64()).max(0.0);
        match refreshed.next_event(Duration::from_secs_f64(wait)).await {
            Event::Timeout => {}
            Event::Msg(m) if m.is("hb") => {}
            other => panic!("the refreshed connection got {other:?} before the old exp"),
        }
        refreshed.ping(3).await;
        assert_eq!(refreshed.publish(4, C, "exp", text("alive")).await, 1);
    };
    let ((closed, at), ()) = tokio::join!(watch_stale, watch_fresh);
    assert_eq!(
        closed.code, 4401,
        "expired token: close 4401, got {closed:?}"
    );
    assert!(
        at >= exp - 0.5 && at <= exp + 2.5,
        "close 4401 should come within about a second of exp ({exp}); came at {at} ({:+.2} s)",
        at - exp
    );

    // A new upgrade with the expired token is refused; auth with it fails.
    assert_eq!(
        srv.ws_refused_status(Some(&short), TokenIn::Header).await,
        401
    );
    let r = refreshed.request(&m_auth(5, &short), 5).await;
    r.assert_err(Some(5), "unauthenticated");
    refreshed.ping(6).await;
}

#[tokio::test]
async fn cli_minted_token_is_accepted_by_the_server() {
    let srv = TestServer::start(&[]);
    let out = std::process::Command::new(acorn_binary())
        .args([
            "token",
            "mint",
            "--sub",
            "cli-user",
            "--perm",
            "publishsubscribe:game:cli.*",
            "--ttl",
            "1h",
        ])
        .env("ACORN_TOKEN_SECRET", TOKEN_SECRET)
        .output()
        .expect("run acorn token mint");
    assert!(
        out.status.success(),
        "acorn token mint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let tok = stdout.trim();
    assert_eq!(tok.lines().count(), 1, "only the JWT on stdout: {stdout:?}");
    let mut ws = srv.ws(tok).await;
    ws.sub(1, C, "cli.x").await;
    assert_eq!(ws.publish(2, C, "cli.x", text("hi")).await, 1);
    assert_eq!(ws.recv().await.str("from"), "cli-user");
    ws.request(&m_pub(Some(3), C, "nope", text("x")), 3)
        .await
        .assert_err(Some(3), "permission_denied");
}

#[tokio::test]
async fn without_a_configured_operator_key_one_is_generated_and_printed() {
    let srv = TestServer::start_with(StartOptions {
        env: vec![],
        no_operator_key: true,
    });
    assert_ne!(srv.operator_key, OPERATOR_KEY);
    assert!(!srv.operator_key.is_empty());
    let tok = srv.mint_all("gen").await; // uses the printed key
    let mut ws = srv.ws(&tok).await;
    ws.ping(1).await;
    let body = json!({"sub": "x", "expires_in": 60,
        "perms": [{"role": "subscribeonly", "cache": "c", "topic": "t"}]});
    let got = srv.mint_raw(Some(OPERATOR_KEY), body).await;
    assert_http_error(&got, 401, "unauthenticated");
}
