//! Slow consumers: a subscriber that stops reading gets its oldest queued items
//! dropped (a `gap`), and one that stays over the queue cap past the timeout is
//! closed 4503 — while a healthy subscriber on the same topic misses nothing.

use std::time::{Duration, Instant};

use acorn_e2e::*;
use tokio::sync::watch;

const C: &str = "game";
const T: &str = "firehose";
/// Item size and count: well beyond what the kernel buffers of one stalled
/// connection (receive buffer shrunk to 4 KiB) plus the queue cap can hold.
const VALUE: usize = 8 * 1024;
const COUNT: u64 = 1200;

/// Checks that items are in seq order with every jump covered by a `gap`;
/// returns (items seen, gaps seen).
fn check_continuity(msgs: &[Msg], first: u64) -> (u64, u64) {
    let mut expect = first;
    let mut last_seen = first - 1;
    let (mut n_items, mut n_gaps) = (0, 0);
    for m in msgs {
        if m.is("item") {
            let seq = m.assert_item(C, T);
            assert_eq!(
                seq, expect,
                "item seq {seq} where {expect} was due (no gap covers the jump)"
            );
            last_seen = seq;
            expect = seq + 1;
            n_items += 1;
        } else if m.is("gap") {
            assert_eq!(m.str("cache"), C);
            assert_eq!(m.str("topic"), T);
            let (last, next) = (m.u64("last"), m.u64("next"));
            assert_eq!(last, last_seen, "gap.last is the last seq delivered: {m:?}");
            assert!(next > last + 1, "a gap covers at least one seq: {m:?}");
            expect = next;
            n_gaps += 1;
        } else {
            panic!("unexpected message on a subscriber: {m:?}");
        }
    }
    (n_items, n_gaps)
}

/// Publishes COUNT items of VALUE bytes as fast as the server takes them,
/// never more than `window` ahead of what `healthy` (if any) has received;
/// then keeps publishing one item every 50 ms for `trickle`, so a stalled
/// subscriber stays over its queue cap for that long. Returns the last seq.
async fn publish_all(
    pubber: &mut Ws,
    mut healthy: Option<&mut watch::Receiver<u64>>,
    window: u64,
    trickle: Duration,
) -> u64 {
    let value = vec![0xabu8; VALUE];
    let mut seq = 0u64;
    let mut trickle_until = None;
    loop {
        let batch = if seq < COUNT {
            4u64.min(COUNT - seq)
        } else {
            let until = *trickle_until.get_or_insert_with(|| Instant::now() + trickle);
            if Instant::now() >= until {
                return seq;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            1
        };
        if let Some(rx) = healthy.as_deref_mut() {
            let floor = seq.saturating_sub(window);
            tokio::time::timeout(WAIT, rx.wait_for(|&seen| seen >= floor))
                .await
                .unwrap_or_else(|_| panic!("healthy subscriber stuck below seq {floor}"))
                .expect("healthy reader alive");
        }
        let msgs: Vec<_> = (0..batch).map(|_| m_pub(None, C, T, bin(&value))).collect();
        pubber.send_many(&msgs).await;
        seq += batch;
        // Pace on the server: the pong proves the batch was taken in.
        pubber.ping(seq).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_is_closed_4503_and_a_healthy_one_misses_nothing() {
    let srv = TestServer::start(&[
        ("ACORN_OUTBOUND_QUEUE_BYTES", "131072"),
        ("ACORN_SLOW_CONSUMER_TIMEOUT", "1s"),
        ("ACORN_WRITE_TIMEOUT", "60s"),
    ]);
    let tok = srv.mint_all("slow").await;

    let mut stalled = Ws::connect(srv.addr, Some(&tok), TokenIn::Header, Some(4096))
        .await
        .expect("connect");
    stalled.sub(1, C, T).await;

    let mut healthy = srv.ws(&tok).await;
    healthy.sub(1, C, T).await;
    let (seen_tx, mut seen_rx) = watch::channel(0u64);
    let (last_tx, mut last_rx) = watch::channel(u64::MAX);
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        loop {
            let last = *last_rx.borrow_and_update();
            if seqs.last() == Some(&last) {
                break;
            }
            let m = tokio::select! {
                m = healthy.recv() => m,
                _ = last_rx.changed() => continue,
            };
            assert!(
                m.is("item"),
                "the healthy subscriber got {m:?} after {} items",
                seqs.len()
            );
            let seq = m.assert_item(C, T);
            seqs.push(seq);
            let _ = seen_tx.send(seq);
        }
        (seqs, healthy)
    });

    let mut pubber = srv.ws(&tok).await;
    // A window of 6 items (48 KiB) keeps the healthy subscriber far below the
    // cap; the trickle keeps the stalled one over it well past the timeout.
    let last = publish_all(
        &mut pubber,
        Some(&mut seen_rx),
        6,
        Duration::from_millis(2500),
    )
    .await;
    last_tx.send(last).unwrap();

    let (seqs, mut healthy) = reader.await.expect("healthy reader");
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "healthy subscriber: every seq once, in order"
    );

    let closed = stalled.wait_close(Duration::from_secs(30)).await;
    let (n_items, n_gaps) = check_continuity(&closed.before, 1);
    eprintln!(
        "stalled subscriber: {n_items} items, {n_gaps} gaps before close {}",
        closed.code
    );
    assert_eq!(
        closed.code, 4503,
        "a subscriber stalled past the timeout is closed 4503: {:?}",
        closed.reason
    );
    assert!(
        n_items < last,
        "the stalled subscriber cannot have received everything"
    );

    // The others carry on.
    healthy.ping(1).await;
    pubber.ping(2).await;
    srv.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn briefly_stalled_subscriber_gets_a_gap_and_stays_open() {
    let srv = TestServer::start(&[
        ("ACORN_OUTBOUND_QUEUE_BYTES", "131072"),
        ("ACORN_SLOW_CONSUMER_TIMEOUT", "20s"),
        ("ACORN_WRITE_TIMEOUT", "60s"),
    ]);
    let tok = srv.mint_all("slow").await;
    let mut stalled = Ws::connect(srv.addr, Some(&tok), TokenIn::Header, Some(4096))
        .await
        .expect("connect");
    stalled.sub(1, C, T).await;
    let mut pubber = srv.ws(&tok).await;
    let t0 = Instant::now();
    publish_all(&mut pubber, None, 0, Duration::ZERO).await;
    eprintln!("published in {:?}", t0.elapsed());

    // Resume reading well within the timeout: items, at least one gap, no close.
    let mut msgs = Vec::new();
    loop {
        let m = stalled.recv().await;
        let done = m.is("item") && m.u64("seq") == COUNT;
        msgs.push(m);
        if done {
            break;
        }
    }
    eprintln!("read in {:?}", t0.elapsed());
    let (n_items, n_gaps) = check_continuity(&msgs, 1);
    eprintln!("briefly stalled subscriber: {n_items} items, {n_gaps} gaps");
    assert!(
        n_gaps >= 1,
        "items were dropped for the stalled subscriber, so a gap must say so"
    );
    // It is still subscribed and live.
    stalled.ping(5).await;
    assert_eq!(pubber.publish(9, C, T, text("after")).await, COUNT + 1);
    let it = stalled.recv().await;
    assert_eq!(it.assert_item(C, T), COUNT + 1);
}
