//! The Rust client against an in-process server.

use std::net::SocketAddr;
use std::time::Duration;

use realtime::client::{Client, ClientError, ClientOptions, Event, Subscription};
use realtime::config::{Limits, ServerConfig};
use realtime::protocol::Value;
use realtime::server::Server;
use realtime::token::{Permission, Role, TokenAuthority};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SECRET: &[u8] = b"client-test-secret";
const WAIT: Duration = Duration::from_secs(10);

struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    async fn start() -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap(), Limits::default()).await
    }

    async fn start_at(listen: SocketAddr, limits: Limits) -> Self {
        let config = ServerConfig {
            listen,
            operator_key: "operator".into(),
            token_secret: SECRET.to_vec(),
            limits,
            shutdown_grace: Duration::from_secs(1),
        };
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            stop: Some(tx),
            task,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(WAIT, &mut self.task).await;
    }
}

fn token_with(sub: &str, ttl: Duration, perms: Vec<Permission>) -> String {
    TokenAuthority::new(SECRET)
        .unwrap()
        .mint(sub, ttl, perms)
        .unwrap()
        .0
}

fn token(sub: &str) -> String {
    token_with(
        sub,
        Duration::from_secs(3600),
        vec![all(Role::PublishSubscribe)],
    )
}

fn all(role: Role) -> Permission {
    Permission {
        role,
        cache: "*".into(),
        topic: "*".into(),
    }
}

fn fast_reconnect() -> ClientOptions {
    ClientOptions::default()
        .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

async fn next(sub: &mut Subscription) -> Event {
    tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("an event in time")
        .expect("the stream is still open")
}

fn item(ev: &Event) -> (u64, &Value, &str) {
    match ev {
        Event::Item { seq, value, from } => (*seq, value, from),
        other => panic!("expected an item, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribe_publish_round_trip() {
    let server = TestServer::start().await;
    let client = Client::connect(&server.url(), token("alice"))
        .await
        .unwrap();
    let mut sub = client.subscribe("game", "match.1").await.unwrap();
    assert_eq!(sub.last_seq(), 0);
    assert!(sub.epoch().is_some());

    assert_eq!(client.publish("game", "match.1", "hello").await.unwrap(), 1);
    assert_eq!(
        client
            .publish("game", "match.1", vec![1u8, 2, 3])
            .await
            .unwrap(),
        2
    );

    let ev = next(&mut sub).await;
    assert_eq!(item(&ev), (1, &Value::Text("hello".into()), "alice"));
    let ev = next(&mut sub).await;
    assert_eq!(
        item(&ev),
        (2, &Value::Binary(vec![1, 2, 3].into()), "alice")
    );
    assert_eq!(sub.last_seq(), 2);

    let rtt = client.ping().await.unwrap();
    assert!(rtt < WAIT);
    assert!(client.is_connected());
    assert_eq!(client.connection_count(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn several_subscriptions_and_batched_publishes() {
    let server = TestServer::start().await;
    let client = Client::connect(&server.url(), token("bot")).await.unwrap();
    let mut subs = Vec::new();
    for t in ["a", "b", "c"] {
        subs.push(client.subscribe("game", t).await.unwrap());
    }
    // A second subscription to the same topic on one client is refused...
    let dup = client.subscribe("game", "a").await.unwrap_err();
    assert!(
        matches!(dup, ClientError::AlreadySubscribed { .. }),
        "{dup:?}"
    );

    // ...and many fire-and-forget publishes queued at once go out in order.
    for i in 0..300u64 {
        let topic = ["a", "b", "c"][(i % 3) as usize];
        client
            .publish_nowait("game", topic, format!("{i}"))
            .await
            .unwrap();
    }
    for (n, sub) in subs.iter_mut().enumerate() {
        for k in 0..100u64 {
            let ev = next(sub).await;
            let (seq, value, _) = item(&ev);
            assert_eq!(seq, k + 1);
            assert_eq!(value.as_text().unwrap(), format!("{}", k * 3 + n as u64));
        }
    }

    // Unsubscribing frees the topic for a new subscription; so does dropping.
    let a = subs.remove(0);
    a.unsubscribe().await.unwrap();
    let b = subs.remove(0);
    drop(b);
    let mut a2 = client.subscribe("game", "a").await.unwrap();
    let _b2 = client.subscribe("game", "b").await.unwrap();
    client.publish("game", "a", "again").await.unwrap();
    assert_eq!(item(&next(&mut a2).await).0, 101);
    server.shutdown().await;
}

#[tokio::test]
async fn refusals_map_to_errors() {
    let server = TestServer::start().await;
    // A bad token refuses the upgrade: a hard error, not a retry loop.
    let err = Client::connect(&server.url(), "not-a-token")
        .await
        .unwrap_err();
    assert_eq!(err, ClientError::Unauthenticated);
    let other = TokenAuthority::new(b"another secret").unwrap();
    let forged = other
        .mint(
            "eve",
            Duration::from_secs(60),
            vec![all(Role::PublishSubscribe)],
        )
        .unwrap()
        .0;
    assert_eq!(
        Client::connect(&server.url(), forged).await.unwrap_err(),
        ClientError::Unauthenticated
    );

    let reader = token_with(
        "reader",
        Duration::from_secs(3600),
        vec![Permission {
            role: Role::SubscribeOnly,
            cache: "game".into(),
            topic: "public.*".into(),
        }],
    );
    let client = Client::connect(&server.url(), reader).await.unwrap();
    let err = client.subscribe("game", "private").await.unwrap_err();
    assert_eq!(err.code(), Some("permission_denied"), "{err:?}");
    let err = client
        .publish("game", "public.news", "x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("permission_denied"), "{err:?}");
    client.subscribe("game", "public.news").await.unwrap();

    // Local checks: names and the frame limit.
    assert!(matches!(
        client.subscribe("bad cache", "t").await,
        Err(ClientError::InvalidArgument(_))
    ));
    let writer = Client::connect(&server.url(), token("w")).await.unwrap();
    let err = writer
        .publish("game", "t", vec![0u8; 2 * 1024 * 1024])
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidArgument(_)), "{err:?}");
    // Over the server's value limit: `too_large`, and the connection stays.
    let err = writer
        .publish("game", "t", vec![0u8; 100 * 1024])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("too_large"), "{err:?}");
    assert_eq!(writer.publish("game", "t", "fine").await.unwrap(), 1);
    assert_eq!(writer.connection_count(), 1);
    // A bad refresh token is refused and the old one stays.
    let err = writer.set_token("garbage").await.unwrap_err();
    assert_eq!(err.code(), Some("unauthenticated"), "{err:?}");
    assert_eq!(writer.publish("game", "t", "still fine").await.unwrap(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn set_token_keeps_the_connection_past_the_old_expiry() {
    let server = TestServer::start().await;
    let short = token_with(
        "svc",
        Duration::from_secs(2),
        vec![all(Role::PublishSubscribe)],
    );
    let client = Client::connect(&server.url(), short).await.unwrap();
    let mut sub = client.subscribe("game", "t").await.unwrap();
    client.set_token(token("svc")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        client.publish("game", "t", "after expiry").await.unwrap(),
        1
    );
    assert_eq!(item(&next(&mut sub).await).0, 1);
    assert_eq!(client.connection_count(), 1, "no reconnect was needed");
    assert_eq!(client.last_close(), None);
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_ends_the_client_with_4401() {
    let server = TestServer::start().await;
    let short = token_with(
        "svc",
        Duration::from_secs(2),
        vec![all(Role::PublishSubscribe)],
    );
    let client = Client::connect_with(&server.url(), short, fast_reconnect())
        .await
        .unwrap();
    let mut sub = client.subscribe("game", "t").await.unwrap();
    let end = tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("the stream ends");
    assert_eq!(end, None);
    let reason = sub.end_reason().expect("a reason");
    assert!(
        matches!(reason, ClientError::Closed { code: 4401, .. }),
        "{reason:?}"
    );
    assert_eq!(client.last_close().map(|c| c.code), Some(4401));
    let err = client.publish("game", "t", "x").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Closed { code: 4401, .. }),
        "{err:?}"
    );
    assert_eq!(
        client.connection_count(),
        1,
        "no reconnect with a dead token"
    );
    server.shutdown().await;
}

/// Reads until `want` items were seen, checking: seq strictly increasing, no
/// duplicates, and every hole covered by a gap.
async fn collect_checked(sub: &mut Subscription, want: u64) -> (Vec<u64>, Vec<(u64, u64)>) {
    let mut seqs = Vec::new();
    let mut gaps = Vec::new();
    let mut last = sub.last_seq();
    while seqs.len() < want as usize {
        match next(sub).await {
            Event::Item { seq, .. } => {
                assert_eq!(seq, last + 1, "seq {seq} after {last} without a gap");
                last = seq;
                seqs.push(seq);
            }
            Event::Gap { last: l, next, .. } => {
                assert_eq!(l, last, "gap starts where the stream was");
                gaps.push((l, next));
                last = next - 1;
            }
        }
    }
    (seqs, gaps)
}

#[tokio::test]
async fn reconnects_and_resumes_without_duplicates_or_holes() {
    let server = TestServer::start().await;
    let reader = Client::connect_with(&server.url(), token("reader"), fast_reconnect())
        .await
        .unwrap();
    let writer = Client::connect(&server.url(), token("writer"))
        .await
        .unwrap();
    let mut sub = reader.subscribe("game", "stream").await.unwrap();

    let publishing = {
        let writer = writer.clone();
        let reader = reader.clone();
        tokio::spawn(async move {
            for i in 1..=200u64 {
                writer
                    .publish("game", "stream", format!("{i}"))
                    .await
                    .unwrap();
                if i % 40 == 0 {
                    // (A drop while already reconnecting would be a no-op.)
                    while !reader.is_connected() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    reader.drop_connection_for_test();
                }
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let (seqs, gaps) = collect_checked(&mut sub, 200).await;
    publishing.await.unwrap();
    // History (256 items) covers every outage: nothing may be missing.
    assert!(gaps.is_empty(), "unexpected gaps {gaps:?}");
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    // Requests work on the new connection (the ping is queued behind the
    // last drop), and live items keep coming.
    reader.ping().await.unwrap();
    assert_eq!(reader.connection_count(), 6, "one per drop, plus the first");
    assert_eq!(reader.last_close().map(|c| c.code), Some(1006));
    writer.publish("game", "stream", "live").await.unwrap();
    assert_eq!(item(&next(&mut sub).await).0, 201);
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_restart_shows_as_a_gap_with_the_new_epoch() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let client = Client::connect_with(&server.url(), token("reader"), fast_reconnect())
        .await
        .unwrap();
    let mut sub = client.subscribe("game", "t").await.unwrap();
    let old_epoch = sub.epoch().unwrap().to_owned();
    for i in 1..=3u64 {
        assert_eq!(client.publish("game", "t", "x").await.unwrap(), i);
        assert_eq!(item(&next(&mut sub).await).0, i);
    }

    server.shutdown().await;
    while client.is_connected() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Queued while offline: goes out after the re-subscribe on the new connection.
    client
        .publish_nowait("game", "t", "queued offline")
        .await
        .unwrap();
    let server = TestServer::start_at(addr, Limits::default()).await;
    // The client comes back by itself and re-subscribes in the new epoch.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if client.is_connected() && client.ping().await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.last_close().map(|c| c.code), Some(1001));
    let seq = client.publish("game", "t", "new life").await.unwrap();
    assert_eq!(seq, 2);

    match next(&mut sub).await {
        Event::Gap { last, next, epoch } => {
            assert_eq!(last, 3);
            assert_eq!(next, 1);
            let epoch = epoch.expect("the new epoch");
            assert_ne!(epoch, old_epoch);
            assert_eq!(sub.epoch(), Some(epoch.as_str()));
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    let ev = next(&mut sub).await;
    assert_eq!(item(&ev), (1, &Value::from("queued offline"), "reader"));
    let ev = next(&mut sub).await;
    assert_eq!(item(&ev), (2, &Value::from("new life"), "reader"));
    assert_eq!(sub.last_seq(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn subscribe_from_replays_and_detects_another_epoch() {
    let server = TestServer::start().await;
    let client = Client::connect(&server.url(), token("a")).await.unwrap();
    let first = client.subscribe("game", "h").await.unwrap();
    let epoch = first.epoch().unwrap().to_owned();
    drop(first);
    for _ in 0..10 {
        client.publish("game", "h", "v").await.unwrap();
    }
    let other = Client::connect(&server.url(), token("b")).await.unwrap();
    let mut sub = other
        .subscribe_from("game", "h", 5, Some(&epoch))
        .await
        .unwrap();
    let (seqs, gaps) = collect_checked(&mut sub, 5).await;
    assert_eq!(seqs, vec![6, 7, 8, 9, 10]);
    assert!(gaps.is_empty());
    client.publish("game", "h", "live").await.unwrap();
    assert_eq!(item(&next(&mut sub).await).0, 11);

    // Naming an epoch that no longer exists: a gap with the real one, then
    // every retained item.
    let third = Client::connect(&server.url(), token("c")).await.unwrap();
    let mut sub = third
        .subscribe_from("game", "h", 5, Some("gone"))
        .await
        .unwrap();
    match next(&mut sub).await {
        Event::Gap {
            last: 5,
            next: 1,
            epoch: Some(e),
        } => assert_eq!(e, epoch),
        other => panic!("expected a gap into the current epoch, got {other:?}"),
    }
    let (seqs, _) = collect_checked(&mut sub, 11).await;
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>());
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_consumer_gets_an_exact_gap() {
    let server = TestServer::start().await;
    let opts = ClientOptions::default().with_subscription_buffer(8);
    let reader = Client::connect_with(&server.url(), token("slow"), opts)
        .await
        .unwrap();
    let writer = Client::connect(&server.url(), token("fast")).await.unwrap();
    let mut sub = reader.subscribe("game", "firehose").await.unwrap();
    for _ in 0..100 {
        writer
            .publish_nowait("game", "firehose", "x")
            .await
            .unwrap();
    }
    assert_eq!(
        writer.publish("game", "firehose", "last").await.unwrap(),
        101
    );
    // Let everything reach the reader's socket task without consuming it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while sub.dropped_items() < 93 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "items did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match next(&mut sub).await {
        Event::Gap {
            last: 0,
            next: 94,
            epoch: None,
        } => {}
        other => panic!("expected gap 0..94, got {other:?}"),
    }
    let (seqs, gaps) = collect_checked(&mut sub, 8).await;
    assert_eq!(seqs, (94..=101).collect::<Vec<_>>());
    assert!(gaps.is_empty());
    assert_eq!(sub.dropped_items(), 93);
    assert_eq!(reader.connection_count(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn close_ends_everything_gracefully() {
    let server = TestServer::start().await;
    let client = Client::connect(&server.url(), token("a")).await.unwrap();
    let mut sub = client.subscribe("game", "t").await.unwrap();
    client
        .publish_nowait("game", "t", "queued before close")
        .await
        .unwrap();
    client.close().await.unwrap();
    // What was queued went out before the close, and arrived before the end.
    let checker = Client::connect(&server.url(), token("b")).await.unwrap();
    let mut check = checker.subscribe_from("game", "t", 0, None).await.unwrap();
    assert_eq!(item(&next(&mut check).await).0, 1);

    while let Some(ev) = tokio::time::timeout(WAIT, sub.recv()).await.unwrap() {
        assert_eq!(item(&ev).0, 1);
    }
    let closed = ClientError::Closed {
        code: 1000,
        reason: "closed by the client".into(),
    };
    assert_eq!(sub.end_reason(), Some(closed.clone()));
    assert_eq!(client.publish("game", "t", "x").await.unwrap_err(), closed);
    assert_eq!(client.ping().await.unwrap_err(), closed);
    assert!(!client.is_connected());
    client.close().await.unwrap();
    server.shutdown().await;
}
