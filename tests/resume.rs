//! Resume: `sub` with `resume_after` (and `epoch`) replays retained items, then
//! goes live with no seq missing or repeated; gaps where history is gone.

use std::time::Duration;

use acorn_e2e::*;

const C: &str = "game";

/// Reads `n` items on cache/topic and returns (seq, value) pairs.
async fn items(ws: &mut Ws, topic: &str, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        let m = ws.recv().await;
        assert!(m.is("item"), "expected an item, got {m:?} (after {out:?})");
        let seq = m.assert_item(C, topic);
        assert_eq!(m.value(), &text(&format!("v{seq}")), "value of seq {seq}");
        out.push(seq);
    }
    out
}

fn assert_gap(m: &Msg, topic: &str, last: u64, next: Option<u64>) {
    assert!(m.is("gap"), "expected gap(last {last}), got {m:?}");
    assert_eq!(m.str("cache"), C, "{m:?}");
    assert_eq!(m.str("topic"), topic, "{m:?}");
    assert_eq!(m.u64("last"), last, "gap.last: {m:?}");
    let n = m.u64("next");
    if let Some(next) = next {
        assert_eq!(n, next, "gap.next: {m:?}");
    }
}

async fn publish_n(srv: &TestServer, tok: &str, topic: &str, from: u64, to: u64) {
    for i in from..=to {
        assert_eq!(srv.publish_text(tok, C, topic, &format!("v{i}")).await, i);
    }
}

#[tokio::test]
async fn resume_replays_retained_items_then_goes_live() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("r").await;
    publish_n(&srv, &tok, "r", 1, 10).await;

    let mut ws = srv.ws(&tok).await;
    ws.send(&m_sub_resume(1, C, "r", 4, None)).await;
    let ok = ws.recv().await;
    ok.assert_ok(1); // the ok comes first, then the replay
    assert_eq!(ok.u64("seq"), 10);
    let epoch = ok.str("epoch").to_string();
    assert_eq!(items(&mut ws, "r", 6).await, (5..=10).collect::<Vec<_>>());
    publish_n(&srv, &tok, "r", 11, 12).await;
    assert_eq!(items(&mut ws, "r", 2).await, vec![11, 12]);

    // resume_after 0 replays everything; with the right epoch there is no gap.
    let mut ws2 = srv.ws(&tok).await;
    ws2.send(&m_sub_resume(1, C, "r", 0, Some(&epoch))).await;
    ws2.reply(1).await.assert_ok(1);
    assert_eq!(items(&mut ws2, "r", 12).await, (1..=12).collect::<Vec<_>>());

    // resume_after the last seq: nothing until the next publish.
    let mut ws3 = srv.ws(&tok).await;
    ws3.send(&m_sub_resume(1, C, "r", 12, Some(&epoch))).await;
    ws3.reply(1).await.assert_ok(1);
    assert!(
        ws3.fence(2).await.is_empty(),
        "nothing to replay after the last seq"
    );
    publish_n(&srv, &tok, "r", 13, 13).await;
    assert_eq!(items(&mut ws3, "r", 1).await, vec![13]);

    // Without resume_after only new items arrive.
    let mut ws4 = srv.ws(&tok).await;
    assert_eq!(ws4.sub(1, C, "r").await.u64("seq"), 13);
    assert!(
        ws4.fence(2).await.is_empty(),
        "no replay without resume_after"
    );
    publish_n(&srv, &tok, "r", 14, 14).await;
    assert_eq!(items(&mut ws4, "r", 1).await, vec![14]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_seam_under_concurrent_publishing_has_no_missing_or_repeated_seq() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("seam").await;
    let total = 250u64;
    let mut pubber = srv.ws(&tok).await;
    for i in 1..=40u64 {
        pubber.publish(i, C, "seam", text(&format!("v{i}"))).await;
    }
    // Keep publishing in the background while the resume happens.
    let publisher = tokio::spawn(async move {
        let mut i = 41u64;
        while i <= total {
            let batch: Vec<_> = (i..(i + 5).min(total + 1))
                .map(|s| m_pub(None, C, "seam", text(&format!("v{s}"))))
                .collect();
            i += batch.len() as u64;
            pubber.send_many(&batch).await;
            pubber.ping(1_000_000 + i).await; // pace a little
        }
        pubber
    });
    let mut ws = srv.ws(&tok).await;
    ws.send(&m_sub_resume(7, C, "seam", 20, None)).await;
    ws.reply(7).await.assert_ok(7);
    let got = items(&mut ws, "seam", (total - 20) as usize).await;
    assert_eq!(
        got,
        (21..=total).collect::<Vec<_>>(),
        "seam must be seamless"
    );
    let _pubber = publisher.await.unwrap();
    assert!(
        ws.recv_within(Duration::from_millis(200)).await.is_none(),
        "nothing repeated"
    );
}

#[tokio::test]
async fn resume_with_another_epoch_gets_a_gap_then_the_current_items() {
    let srv = TestServer::start(&[]);
    let tok = srv.mint_all("e").await;
    publish_n(&srv, &tok, "e", 1, 5).await;
    let mut probe = srv.ws(&tok).await;
    let epoch = probe.sub(1, C, "e").await.str("epoch").to_string();
    let wrong = format!("{epoch}-not");

    let mut ws = srv.ws(&tok).await;
    ws.send(&m_sub_resume(1, C, "e", 2, Some(&wrong))).await;
    let ok = ws.recv().await;
    ok.assert_ok(1);
    assert_eq!(ok.str("epoch"), epoch, "ok carries the current epoch");
    assert_eq!(ok.u64("seq"), 5);
    let gap = ws.recv().await;
    assert_gap(&gap, "e", 2, None);
    assert_eq!(
        items(&mut ws, "e", 5).await,
        vec![1, 2, 3, 4, 5],
        "after the gap: the current epoch's retained items"
    );
    publish_n(&srv, &tok, "e", 6, 6).await;
    assert_eq!(items(&mut ws, "e", 1).await, vec![6]);

    // The right epoch: no gap.
    let mut ok_ws = srv.ws(&tok).await;
    ok_ws.send(&m_sub_resume(1, C, "e", 4, Some(&epoch))).await;
    ok_ws.reply(1).await.assert_ok(1);
    assert_eq!(items(&mut ok_ws, "e", 2).await, vec![5, 6]);
}

#[tokio::test]
async fn resume_past_the_history_size_gets_a_gap_to_the_first_retained_item() {
    let srv = TestServer::start(&[("ACORN_HISTORY_SIZE", "5")]);
    let tok = srv.mint_all("h").await;
    publish_n(&srv, &tok, "h", 1, 12).await; // retained: 8..=12

    let mut ws = srv.ws(&tok).await;
    ws.send(&m_sub_resume(1, C, "h", 2, None)).await;
    let ok = ws.recv().await;
    ok.assert_ok(1);
    assert_eq!(ok.u64("seq"), 12);
    assert_gap(&ws.recv().await, "h", 2, Some(8));
    assert_eq!(items(&mut ws, "h", 5).await, vec![8, 9, 10, 11, 12]);
    publish_n(&srv, &tok, "h", 13, 13).await;
    assert_eq!(items(&mut ws, "h", 1).await, vec![13]); // retained now: 9..=13

    let mut edge = srv.ws(&tok).await;
    edge.send(&m_sub_resume(1, C, "h", 8, None)).await;
    edge.reply(1).await.assert_ok(1);
    assert_eq!(
        items(&mut edge, "h", 5).await,
        vec![9, 10, 11, 12, 13],
        "no gap at the edge"
    );

    let mut just_out = srv.ws(&tok).await;
    just_out.send(&m_sub_resume(1, C, "h", 7, None)).await;
    just_out.reply(1).await.assert_ok(1);
    assert_gap(&just_out.recv().await, "h", 7, Some(9));
    assert_eq!(items(&mut just_out, "h", 5).await, vec![9, 10, 11, 12, 13]);
}

#[tokio::test]
async fn resume_after_history_expiry_gets_a_gap() {
    let srv = TestServer::start(&[("ACORN_HISTORY_TTL", "1s")]);
    let tok = srv.mint_all("x").await;
    publish_n(&srv, &tok, "x", 1, 3).await;
    let epoch = {
        let mut probe = srv.ws(&tok).await;
        let ok = probe.sub(1, C, "x").await;
        assert_eq!(ok.u64("seq"), 3);
        ok.str("epoch").to_string()
    };
    // Well past the TTL since the last publish.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let mut ws = srv.ws(&tok).await;
    ws.send(&m_sub_resume(1, C, "x", 1, Some(&epoch))).await;
    let ok = ws.reply(1).await;
    ok.assert_ok(1);
    if ok.u64("seq") < 3 {
        assert_ne!(
            ok.str("epoch"),
            epoch,
            "the sequence restarted ({ok:?}), so the epoch must change"
        );
    }
    let first = ws.recv().await;
    assert_gap(&first, "x", 1, None);
    assert!(
        ws.fence(2).await.iter().all(|m| !m.is("item")),
        "expired history replays nothing"
    );
    // Live items continue from what ok said.
    let next = srv.publish_text(&tok, C, "x", "after").await;
    assert_eq!(next, ok.u64("seq") + 1, "publish after ok {ok:?}");
    let it = ws.recv().await;
    assert_eq!(it.assert_item(C, "x"), next);
}
