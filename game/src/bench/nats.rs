//! The NATS client protocol over WebSocket, by hand: just enough for the
//! fan-out comparison (CONNECT, SUB, PUB, PING/PONG, MSG).
//!
//! NATS treats the WebSocket as a byte stream: a frame may hold several
//! protocol messages or end in the middle of one, so [`NatsParser`] keeps the
//! unfinished tail between frames.

use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::{ws_connect, Endpoint, Ws};

pub const CONNECT: &str = "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":\"acorn-bench\",\"lang\":\"rust\",\"version\":\"0.1.0\"}\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

/// A partial protocol message longer than this is a broken stream.
const MAX_PENDING: usize = 1 << 20;

/// What one call to [`NatsParser::feed`] saw besides messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Events {
    pub msgs: u64,
    pub pings: u32,
    pub pongs: u32,
}

/// Incremental parser of the server → client byte stream.
#[derive(Default)]
pub struct NatsParser {
    pending: Vec<u8>,
}

impl NatsParser {
    /// Parses `data` (one WebSocket frame's payload), calling `on_msg` with each
    /// complete MSG payload and `on_err` with each `-ERR` line.
    pub fn feed(
        &mut self,
        data: &[u8],
        on_msg: &mut impl FnMut(&[u8]),
        on_err: &mut impl FnMut(&[u8]),
    ) -> Events {
        let mut ev = Events::default();
        if self.pending.is_empty() {
            let used = parse(data, &mut ev, on_msg, on_err);
            if used < data.len() {
                self.pending.extend_from_slice(&data[used..]);
            }
        } else {
            self.pending.extend_from_slice(data);
            let used = parse(&self.pending, &mut ev, on_msg, on_err);
            self.pending.drain(..used);
        }
        if self.pending.len() > MAX_PENDING {
            on_err(b"-ERR 'unparseable stream (over 1 MiB without a complete message)'");
            self.pending.clear();
        }
        ev
    }
}

fn find_crlf(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = data[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        if nl > 0 && data[nl - 1] == b'\r' {
            return Some(nl - 1);
        }
        i = nl + 1;
    }
    None
}

/// Parses complete messages from the start of `data`; returns how many bytes
/// were consumed (the rest is an unfinished message).
fn parse(
    data: &[u8],
    ev: &mut Events,
    on_msg: &mut impl FnMut(&[u8]),
    on_err: &mut impl FnMut(&[u8]),
) -> usize {
    let mut pos = 0;
    while pos < data.len() {
        let Some(eol) = find_crlf(data, pos) else {
            break;
        };
        let line = &data[pos..eol];
        let body = eol + 2;
        if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let n = line
                .rsplit(|&b| b == b' ')
                .next()
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| t.parse::<usize>().ok());
            let Some(n) = n else {
                on_err(line);
                pos = body;
                continue;
            };
            if data.len() < body + n + 2 {
                break;
            }
            ev.msgs += 1;
            on_msg(&data[body..body + n]);
            pos = body + n + 2;
        } else {
            if line.eq_ignore_ascii_case(b"PING") {
                ev.pings += 1;
            } else if line.eq_ignore_ascii_case(b"PONG") {
                ev.pongs += 1;
            } else if line.starts_with(b"-ERR") {
                on_err(line);
            }
            // INFO, +OK: nothing to do.
            pos = body;
        }
    }
    pos
}

/// Opens a connection and waits for the server to confirm `extra` (protocol
/// lines sent after CONNECT) with the PONG to a trailing PING.
async fn open(ep: &Endpoint, extra: &str) -> anyhow::Result<Ws> {
    let mut ws = ws_connect(ep, None).await?;
    let hello = format!("{CONNECT}{extra}PING\r\n");
    ws.send(Message::Binary(hello.into_bytes().into())).await?;
    let mut parser = NatsParser::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("NATS did not answer PING within 15 s")?;
        let data = match msg {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Text(t))) => t.as_bytes().to_vec().into(),
            Some(Ok(Message::Close(f))) => bail!("NATS closed the connection: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("reading from NATS"),
            None => bail!("NATS closed the connection"),
        };
        let mut err = None;
        let ev = parser.feed(&data, &mut |_| {}, &mut |line| {
            err = Some(String::from_utf8_lossy(line).into_owned())
        });
        if let Some(e) = err {
            bail!("NATS refused the connection: {e}");
        }
        if ev.pings > 0 {
            ws.send(Message::Binary(PONG.to_vec().into())).await?;
        }
        if ev.pongs > 0 {
            return Ok(ws);
        }
    }
}

pub async fn open_subscriber(ep: &Endpoint, subject: &str) -> anyhow::Result<Ws> {
    open(ep, &format!("SUB {subject} 1\r\n")).await
}

pub async fn open_publisher(ep: &Endpoint) -> anyhow::Result<Ws> {
    open(ep, "").await
}

/// Appends one PUB to a frame being built.
pub fn encode_pub(out: &mut Vec<u8>, subject: &str, value: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    out.extend_from_slice(value.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        p: &mut NatsParser,
        frame: &[u8],
        msgs: &mut Vec<Vec<u8>>,
        errs: &mut Vec<String>,
    ) -> Events {
        p.feed(frame, &mut |m| msgs.push(m.to_vec()), &mut |e| {
            errs.push(String::from_utf8_lossy(e).into())
        })
    }

    #[test]
    fn parses_messages_split_anywhere() {
        let stream = b"INFO {\"server_id\":\"x\"}\r\nMSG a.b 1 5\r\nhe\r\no\r\nPING\r\nMSG a.b 1 r.x 3\r\nxyz\r\n+OK\r\nPONG\r\n-ERR 'Slow Consumer'\r\nMSG a 1 0\r\n\r\n";
        for cut1 in 0..stream.len() {
            for cut2 in cut1..stream.len() {
                let mut p = NatsParser::default();
                let (mut msgs, mut errs) = (Vec::new(), Vec::new());
                let mut total = Events::default();
                for part in [&stream[..cut1], &stream[cut1..cut2], &stream[cut2..]] {
                    let ev = run(&mut p, part, &mut msgs, &mut errs);
                    total.msgs += ev.msgs;
                    total.pings += ev.pings;
                    total.pongs += ev.pongs;
                }
                assert_eq!(
                    msgs,
                    vec![b"he\r\no".to_vec(), b"xyz".to_vec(), Vec::new()],
                    "cuts {cut1} {cut2}"
                );
                assert_eq!(errs, vec!["-ERR 'Slow Consumer'".to_string()]);
                assert_eq!(
                    total,
                    Events {
                        msgs: 3,
                        pings: 1,
                        pongs: 1
                    }
                );
                assert!(p.pending.is_empty());
            }
        }
    }

    #[test]
    fn pub_encoding() {
        let mut out = Vec::new();
        encode_pub(&mut out, "s", b"abc");
        encode_pub(&mut out, "s", b"");
        assert_eq!(out, b"PUB s 3\r\nabc\r\nPUB s 0\r\n\r\n");
    }
}
