//! The Acorn side: token minting, `sub` handshake, `pub` encoding and a
//! receive path that decodes only what a delivery needs.
//!
//! Requests are encoded with `realtime::protocol::Request::encode_into` and
//! every non-`item` message goes through `realtime::protocol::decode_messages`.
//! `item`s, the hot path, are scanned in place: the scanner reads the map's keys
//! and takes `op` and `value` without allocating (the full decoder would
//! allocate five strings and the value per delivery).

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use realtime::protocol::{
    decode_messages, decode_server_frame, Request, RequestId, ServerMessage, Value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::stats::WorkerStats;
use super::{ws_connect, Endpoint, Ws};

/// Mints a `publishsubscribe` token for `cache` (all topics) with the operator
/// key: `POST /v1/tokens`, a plain HTTP/1.1 request over loopback.
pub async fn mint_token(ep: &Endpoint, operator_key: &str, cache: &str) -> anyhow::Result<String> {
    let body = serde_json::json!({
        "sub": "bench",
        "expires_in": 86_400,
        "perms": [{"role": "publishsubscribe", "cache": cache, "topic": "*"}],
    })
    .to_string();
    let req = format!(
        "POST /v1/tokens HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: Bearer {operator_key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        ep.host,
        ep.port,
        body.len()
    );
    let exchange = async {
        let mut s = TcpStream::connect((ep.host.as_str(), ep.port)).await?;
        s.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await?;
        anyhow::Ok(resp)
    };
    let resp = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("POST /v1/tokens timed out")?
        .context("POST /v1/tokens")?;
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response to POST /v1/tokens"))?;
    let head = String::from_utf8_lossy(&resp[..head_end]);
    let mut body = resp[head_end + 4..].to_vec();
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    if status != "200" {
        bail!(
            "POST /v1/tokens answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).context("token response is not JSON")?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("token response has no `token`: {v}"))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
    out
}

/// Connects with the token and subscribes to `cache`/`topic`, waiting for `ok`.
pub async fn open_subscriber(
    ep: &Endpoint,
    token: &str,
    cache: &str,
    topic: &str,
) -> anyhow::Result<Ws> {
    let mut ws = ws_connect(ep, Some(token)).await?;
    let mut frame = Vec::with_capacity(64);
    Request::Sub {
        id: RequestId::Unsigned(1),
        cache: cache.to_owned(),
        topic: topic.to_owned(),
        resume_after: None,
        epoch: None,
    }
    .encode_into(&mut frame);
    ws.send(Message::Binary(frame.into())).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("no answer to `sub` within 15 s")?;
        let data = match msg {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(f))) => bail!("server closed the connection: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("reading the `sub` answer"),
            None => bail!("server closed the connection"),
        };
        for m in decode_server_frame(&data).context("undecodable server frame")? {
            match m {
                ServerMessage::Ok {
                    id: Some(RequestId::Unsigned(1)),
                    ..
                } => return Ok(ws),
                ServerMessage::Err { code, message, .. } => {
                    bail!("`sub` refused: {code}: {message}")
                }
                _ => {}
            }
        }
    }
}

/// Connects with the token (the publisher sends `pub` without `id`: no replies
/// unless a publish fails).
pub async fn open_publisher(ep: &Endpoint, token: &str) -> anyhow::Result<Ws> {
    ws_connect(ep, Some(token)).await
}

/// Appends one `pub` (no `id`) to a frame being built.
pub fn encode_pub(out: &mut Vec<u8>, cache: &str, topic: &str, value: &[u8]) {
    Request::Pub {
        id: None,
        cache: cache.to_owned(),
        topic: topic.to_owned(),
        value: Value::Binary(Bytes::copy_from_slice(value)),
    }
    .encode_into(out);
}

/// Handles every message of one server frame; returns the number of items.
/// Values of `item`s go to `stats.record`; `gap`s and `err`s are counted.
pub fn feed(frame: &[u8], now_ns: u64, stats: &mut WorkerStats) -> u64 {
    let mut pos = 0;
    let mut items = 0;
    while pos < frame.len() {
        match scan_message(frame, pos) {
            Some(Scanned {
                op: b"item",
                value: Some(v),
                end,
            }) => {
                stats.record(v, now_ns);
                items += 1;
                pos = end;
            }
            Some(Scanned { end, .. }) => {
                other_message(&frame[pos..end], stats);
                pos = end;
            }
            None => {
                // Let the real decoder say what is wrong.
                other_message(&frame[pos..], stats);
                return items;
            }
        }
    }
    items
}

fn other_message(bytes: &[u8], stats: &mut WorkerStats) {
    let Some(decoded) = decode_messages(bytes).next() else {
        return;
    };
    match decoded
        .map_err(|e| e.to_string())
        .and_then(|m| ServerMessage::try_from(m).map_err(|e| e.to_string()))
    {
        Ok(ServerMessage::Gap { last, next, .. }) => {
            stats.gap(next.saturating_sub(last + 1));
        }
        Ok(ServerMessage::Err { code, message, .. }) => {
            stats.error(|| format!("{code}: {message}"))
        }
        Ok(ServerMessage::Item { value, .. }) => stats.record(value.as_bytes(), 0),
        Ok(_) => {}
        Err(e) => stats.error(|| format!("undecodable server message: {e}")),
    }
}

struct Scanned<'a> {
    op: &'a [u8],
    value: Option<&'a [u8]>,
    end: usize,
}

/// Scans the MessagePack map at `pos`: returns its `op` (when a string), its
/// `value` (bin or str) and where it ends. `None` when it is not a well-formed map.
fn scan_message(buf: &[u8], pos: usize) -> Option<Scanned<'_>> {
    let (entries, mut p) = map_header(buf, pos)?;
    let mut op: &[u8] = b"";
    let mut value = None;
    for _ in 0..entries {
        let (key, after_key) = str_at(buf, p)?;
        match key {
            b"op" => {
                let (s, after) = str_at(buf, after_key)?;
                op = s;
                p = after;
            }
            b"value" => {
                let (v, after) = bin_or_str_at(buf, after_key)?;
                value = Some(v);
                p = after;
            }
            _ => p = skip(buf, after_key)?,
        }
    }
    Some(Scanned { op, value, end: p })
}

fn be(buf: &[u8], at: usize, n: usize) -> Option<usize> {
    let b = buf.get(at..at.checked_add(n)?)?;
    Some(b.iter().fold(0usize, |acc, &x| (acc << 8) | x as usize))
}

fn map_header(buf: &[u8], p: usize) -> Option<(usize, usize)> {
    match *buf.get(p)? {
        b @ 0x80..=0x8f => Some(((b & 0x0f) as usize, p + 1)),
        0xde => Some((be(buf, p + 1, 2)?, p + 3)),
        0xdf => Some((be(buf, p + 1, 4)?, p + 5)),
        _ => None,
    }
}

fn slice(buf: &[u8], start: usize, len: usize) -> Option<(&[u8], usize)> {
    let end = start.checked_add(len)?;
    Some((buf.get(start..end)?, end))
}

fn str_at(buf: &[u8], p: usize) -> Option<(&[u8], usize)> {
    match *buf.get(p)? {
        b @ 0xa0..=0xbf => slice(buf, p + 1, (b & 0x1f) as usize),
        0xd9 => slice(buf, p + 2, be(buf, p + 1, 1)?),
        0xda => slice(buf, p + 3, be(buf, p + 1, 2)?),
        0xdb => slice(buf, p + 5, be(buf, p + 1, 4)?),
        _ => None,
    }
}

fn bin_or_str_at(buf: &[u8], p: usize) -> Option<(&[u8], usize)> {
    match *buf.get(p)? {
        0xc4 => slice(buf, p + 2, be(buf, p + 1, 1)?),
        0xc5 => slice(buf, p + 3, be(buf, p + 1, 2)?),
        0xc6 => slice(buf, p + 5, be(buf, p + 1, 4)?),
        _ => str_at(buf, p),
    }
}

/// Skips one MessagePack value (nested ones included) starting at `p`.
fn skip(buf: &[u8], mut p: usize) -> Option<usize> {
    let mut remaining: usize = 1;
    while remaining > 0 {
        remaining -= 1;
        let b = *buf.get(p)?;
        let (header, body, children) = match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
            0x80..=0x8f => (1, 0, 2 * (b & 0x0f) as usize),
            0x90..=0x9f => (1, 0, (b & 0x0f) as usize),
            0xa0..=0xbf => (1, (b & 0x1f) as usize, 0),
            0xc4 | 0xd9 => (2, be(buf, p + 1, 1)?, 0),
            0xc5 | 0xda => (3, be(buf, p + 1, 2)?, 0),
            0xc6 | 0xdb => (5, be(buf, p + 1, 4)?, 0),
            0xc7 => (3, be(buf, p + 1, 1)?, 0),
            0xc8 => (4, be(buf, p + 1, 2)?, 0),
            0xc9 => (6, be(buf, p + 1, 4)?, 0),
            0xca => (5, 0, 0),
            0xcb => (9, 0, 0),
            0xcc | 0xd0 => (2, 0, 0),
            0xcd | 0xd1 => (3, 0, 0),
            0xce | 0xd2 => (5, 0, 0),
            0xcf | 0xd3 => (9, 0, 0),
            0xd4 => (3, 0, 0),
            0xd5 => (4, 0, 0),
            0xd6 => (6, 0, 0),
            0xd7 => (10, 0, 0),
            0xd8 => (18, 0, 0),
            0xdc => (3, 0, be(buf, p + 1, 2)?),
            0xdd => (5, 0, be(buf, p + 1, 4)?),
            0xde => (3, 0, 2 * be(buf, p + 1, 2)?),
            0xdf => (5, 0, 2 * be(buf, p + 1, 4)?),
            0xc1 => return None,
        };
        p = p.checked_add(header)?.checked_add(body)?;
        if p > buf.len() {
            return None;
        }
        // Every child takes at least one byte: refuse counts the buffer cannot hold.
        if children > buf.len() - p {
            return None;
        }
        remaining += children;
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use realtime::names::TopicKey;
    use realtime::protocol::{encode_gap, encode_hb, encode_item, encode_ok};

    #[test]
    fn scans_items_and_counts_the_rest() {
        let key = TopicKey::new("bench", "fanout").unwrap();
        let origin = std::time::Instant::now();
        let mut v = vec![0u8; 64];
        super::super::stats::stamp(&mut v, origin, 1, 0);
        let mut frame = Vec::new();
        frame.extend_from_slice(&encode_ok(
            Some(&RequestId::Unsigned(1)),
            Some(0),
            Some("e"),
        ));
        frame.extend_from_slice(&encode_item(
            &key,
            1,
            &Value::Binary(v.clone().into()),
            "bench",
        ));
        frame.extend_from_slice(&encode_gap(&key, 1, 5, None));
        frame.extend_from_slice(&encode_hb());
        frame.extend_from_slice(&encode_item(&key, 6, &Value::Binary(v.into()), "x"));
        let mut stats = WorkerStats::new(1);
        assert_eq!(feed(&frame, u64::MAX / 2, &mut stats), 2);
        assert_eq!(stats.phases[0].deliveries, 2);
        assert_eq!(
            (stats.gaps, stats.gap_missed, stats.errors, stats.malformed),
            (1, 3, 0, 0)
        );

        // Truncated: the items before the cut count, the rest is an error.
        let mut stats = WorkerStats::new(1);
        assert_eq!(feed(&frame[..frame.len() - 3], u64::MAX / 2, &mut stats), 1);
        assert_eq!(stats.errors, 1);
    }

    #[test]
    fn skip_handles_nesting_and_refuses_garbage() {
        let mut out = Vec::new();
        let v = rmpv::Value::Map(vec![
            (
                "a".into(),
                rmpv::Value::Array(vec![
                    1.into(),
                    (-300).into(),
                    1.5f64.into(),
                    rmpv::Value::Nil,
                ]),
            ),
            ("b".into(), rmpv::Value::Binary(vec![0; 300])),
            ("c".into(), rmpv::Value::Ext(3, vec![1, 2, 3, 4])),
        ]);
        rmpv::encode::write_value(&mut out, &v).unwrap();
        out.push(0x01);
        assert_eq!(skip(&out, 0), Some(out.len() - 1));
        assert_eq!(skip(&[0xdd, 0xff, 0xff, 0xff, 0xff], 0), None);
        assert_eq!(skip(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0], 0), None);
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
