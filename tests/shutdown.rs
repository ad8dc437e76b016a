//! SIGTERM/SIGINT: every WebSocket is closed 1001 with a reason, and the
//! process exits 0.

use std::time::Duration;

use acorn_e2e::*;

const C: &str = "game";

async fn check_graceful_stop(signal: libc::c_int) {
    let mut srv = TestServer::start(&[("ACORN_SHUTDOWN_GRACE", "3s")]);
    let tok = srv.mint_all("s").await;
    let mut idle = srv.ws(&tok).await;
    let mut subscriber = srv.ws(&tok).await;
    subscriber.sub(1, C, "live").await;
    let mut busy = srv.ws(&tok).await;
    for i in 1..=20u64 {
        busy.send(&m_pub(None, C, "live", text(&format!("{i}"))))
            .await;
    }
    busy.ping(99).await;
    let addr = srv.addr;

    let (status, c1, c2, c3) = tokio::join!(
        srv.stop_with(signal),
        idle.wait_close(Duration::from_secs(15)),
        subscriber.wait_close(Duration::from_secs(15)),
        busy.wait_close(Duration::from_secs(15)),
    );
    for (name, c) in [("idle", &c1), ("subscriber", &c2), ("publisher", &c3)] {
        assert_eq!(
            c.code, 1001,
            "{name} connection: close 1001 on shutdown, got {c:?}"
        );
    }
    assert!(
        status.success(),
        "acorn must exit 0 after signal {signal}, got {status:?}"
    );
    // The subscriber's items before the close were in order.
    let seqs: Vec<u64> = c2
        .before
        .iter()
        .filter(|m| m.is("item"))
        .map(|m| m.u64("seq"))
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // Nothing listens any more.
    let refused =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "the port should be closed after exit: {refused:?}"
    );
}

#[tokio::test]
async fn sigterm_closes_websockets_1001_and_exits_0() {
    check_graceful_stop(libc::SIGTERM).await;
}

#[tokio::test]
async fn sigint_closes_websockets_1001_and_exits_0() {
    check_graceful_stop(libc::SIGINT).await;
}

#[tokio::test]
async fn sigterm_with_no_clients_exits_0() {
    let mut srv = TestServer::start(&[]);
    // SIGTERM right after the `listening on` line: the handler must already be in place.
    let status = srv.terminate().await;
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success(),
        "exit status {status:?}{}",
        if status.signal().is_some() {
            " (killed by the signal itself: no handler was installed yet)"
        } else {
            ""
        }
    );
}
