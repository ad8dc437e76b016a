//! Wire messages (PROTOCOL.md, "WebSocket").
//!
//! A WebSocket binary frame carries one or more MessagePack maps back to back.
//! Both directions share one flat [`WireMessage`] shape: every field optional,
//! unknown fields ignored. Decoding into it and then checking per `op` keeps the
//! decoder small, fast (no buffering of internally tagged enums) and gives
//! precise errors for missing or mistyped fields.
//!
//! Server messages are encoded with rmp-serde's named-map shape. An `item` is
//! encoded once per publish ([`encode_item`]) and the bytes are shared by every
//! subscriber.

use std::fmt;
use std::io::Cursor;

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::ErrorCode;
use crate::names::TopicKey;

/// A published value: bytes or text, delivered as it was published.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Binary(Bytes),
    Text(String),
}

impl Value {
    pub fn len(&self) -> usize {
        match self {
            Value::Binary(b) => b.len(),
            Value::Text(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Binary(b) => b,
            Value::Text(s) => s.as_bytes(),
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            Value::Binary(_) => None,
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Binary(b) => write!(f, "Binary({} bytes)", b.len()),
            Value::Text(s) if s.len() <= 64 => write!(f, "Text({s:?})"),
            Value::Text(s) => write!(f, "Text({} bytes)", s.len()),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Binary(b.into())
    }
}

impl From<Bytes> for Value {
    fn from(b: Bytes) -> Self {
        Value::Binary(b)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Binary(b) => s.serialize_bytes(b),
            Value::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a binary or string value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
                Ok(Value::Text(v))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
                Ok(Value::Binary(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
                Ok(Value::Binary(v.into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A request id: chosen by the client (an integer or a string), echoed verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestId {
    Unsigned(u64),
    Signed(i64),
    Text(String),
}

impl From<u64> for RequestId {
    fn from(v: u64) -> Self {
        RequestId::Unsigned(v)
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestId::Unsigned(v) => s.serialize_u64(*v),
            RequestId::Signed(v) => s.serialize_i64(*v),
            RequestId::Text(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RequestId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or string id")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RequestId, E> {
                Ok(RequestId::Unsigned(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RequestId, E> {
                Ok(if v >= 0 {
                    RequestId::Unsigned(v as u64)
                } else {
                    RequestId::Signed(v)
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RequestId, E> {
                Ok(RequestId::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<RequestId, E> {
                Ok(RequestId::Text(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// The flat shape shared by every message in both directions.
///
/// Unknown fields are ignored (room for later protocol versions); a known field
/// of the wrong type, a key that is not a string, or a repeated key fails
/// decoding.
#[derive(Debug, Default, Clone, Serialize)]
pub struct WireMessage {
    pub op: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// The known field names, in bit order for duplicate detection.
const FIELDS: [&str; 14] = [
    "op",
    "id",
    "cache",
    "topic",
    "resume_after",
    "epoch",
    "value",
    "token",
    "seq",
    "code",
    "message",
    "from",
    "last",
    "next",
];

/// A map key: only strings are keys (serde's derive would also take an
/// integer as a field index).
struct Key(Option<usize>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(FIELDS.iter().position(|f| *f == v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for WireMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireMessage;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map with string keys")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<WireMessage, A::Error> {
                let mut m = WireMessage::default();
                let mut seen = 0u32;
                while let Some(Key(field)) = map.next_key()? {
                    let Some(i) = field else {
                        map.next_value::<de::IgnoredAny>()?;
                        continue;
                    };
                    if seen & (1 << i) != 0 {
                        return Err(de::Error::custom(format_args!(
                            "duplicate field `{}`",
                            FIELDS[i]
                        )));
                    }
                    seen |= 1 << i;
                    match i {
                        0 => m.op = map.next_value()?,
                        1 => m.id = map.next_value()?,
                        2 => m.cache = map.next_value()?,
                        3 => m.topic = map.next_value()?,
                        4 => m.resume_after = map.next_value()?,
                        5 => m.epoch = map.next_value()?,
                        6 => m.value = map.next_value()?,
                        7 => m.token = map.next_value()?,
                        8 => m.seq = map.next_value()?,
                        9 => m.code = map.next_value()?,
                        10 => m.message = map.next_value()?,
                        11 => m.from = map.next_value()?,
                        12 => m.last = map.next_value()?,
                        _ => m.next = map.next_value()?,
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

/// How deeply a message may nest (in unknown fields): deep enough for any
/// future extension, shallow enough that a hostile frame can't exhaust the stack.
pub const MAX_DEPTH: usize = 32;

/// Why a frame could not be decoded: the connection is closed with 4400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Iterates over the messages in one frame. Stops at the first error.
pub fn decode_messages(
    frame: &[u8],
) -> impl Iterator<Item = Result<WireMessage, ProtocolError>> + '_ {
    let mut de = rmp_serde::Deserializer::new(Cursor::new(frame));
    de.set_max_depth(MAX_DEPTH);
    let mut failed = false;
    std::iter::from_fn(move || {
        let pos = de.position() as usize;
        if failed || pos >= frame.len() {
            return None;
        }
        // Only maps are messages; rmp-serde would also accept an array as a struct.
        if !matches!(frame[pos], 0x80..=0x8f | 0xde | 0xdf) {
            failed = true;
            return Some(Err(ProtocolError::new(format!(
                "message at byte {pos} is not a MessagePack map"
            ))));
        }
        match WireMessage::deserialize(&mut de) {
            Ok(m) => Some(Ok(m)),
            Err(e) => {
                failed = true;
                Some(Err(ProtocolError::new(format!(
                    "undecodable message at byte {pos}: {e}"
                ))))
            }
        }
    })
}

/// A client request, checked for its op's required fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Sub {
        id: RequestId,
        cache: String,
        topic: String,
        resume_after: Option<u64>,
        epoch: Option<String>,
    },
    Unsub {
        id: RequestId,
        cache: String,
        topic: String,
    },
    Pub {
        id: Option<RequestId>,
        cache: String,
        topic: String,
        value: Value,
    },
    Ping {
        id: RequestId,
    },
    Auth {
        id: RequestId,
        token: String,
    },
}

fn required<T>(field: Option<T>, op: &str, name: &str) -> Result<T, ProtocolError> {
    field.ok_or_else(|| ProtocolError::new(format!("`{op}` needs the field `{name}`")))
}

impl TryFrom<WireMessage> for Request {
    type Error = ProtocolError;

    fn try_from(m: WireMessage) -> Result<Self, ProtocolError> {
        let op = m.op.as_str();
        Ok(match op {
            "sub" => Request::Sub {
                id: required(m.id, op, "id")?,
                cache: required(m.cache, op, "cache")?,
                topic: required(m.topic, op, "topic")?,
                resume_after: m.resume_after,
                epoch: m.epoch,
            },
            "unsub" => Request::Unsub {
                id: required(m.id, op, "id")?,
                cache: required(m.cache, op, "cache")?,
                topic: required(m.topic, op, "topic")?,
            },
            "pub" => Request::Pub {
                id: m.id,
                cache: required(m.cache, op, "cache")?,
                topic: required(m.topic, op, "topic")?,
                value: required(m.value, op, "value")?,
            },
            "ping" => Request::Ping {
                id: required(m.id, op, "id")?,
            },
            "auth" => Request::Auth {
                id: required(m.id, op, "id")?,
                token: required(m.token, op, "token")?,
            },
            "" => return Err(ProtocolError::new("message has no `op`")),
            other => {
                return Err(ProtocolError::new(format!(
                    "unknown op `{}`",
                    truncate(other, 32)
                )))
            }
        })
    }
}

impl Request {
    /// The request's id, when it has one (`pub` may not).
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            Request::Sub { id, .. }
            | Request::Unsub { id, .. }
            | Request::Ping { id }
            | Request::Auth { id, .. } => Some(id),
            Request::Pub { id, .. } => id.as_ref(),
        }
    }

    /// Encodes the request as one message (clients append several to one frame).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut m = WireMessage::default();
        match self {
            Request::Sub {
                id,
                cache,
                topic,
                resume_after,
                epoch,
            } => {
                m.op = "sub".into();
                m.id = Some(id.clone());
                m.cache = Some(cache.clone());
                m.topic = Some(topic.clone());
                m.resume_after = *resume_after;
                m.epoch = epoch.clone();
            }
            Request::Unsub { id, cache, topic } => {
                m.op = "unsub".into();
                m.id = Some(id.clone());
                m.cache = Some(cache.clone());
                m.topic = Some(topic.clone());
            }
            Request::Pub {
                id,
                cache,
                topic,
                value,
            } => {
                m.op = "pub".into();
                m.id = id.clone();
                m.cache = Some(cache.clone());
                m.topic = Some(topic.clone());
                m.value = Some(value.clone());
            }
            Request::Ping { id } => {
                m.op = "ping".into();
                m.id = Some(id.clone());
            }
            Request::Auth { id, token } => {
                m.op = "auth".into();
                m.id = Some(id.clone());
                m.token = Some(token.clone());
            }
        }
        write_named(out, &m);
    }
}

/// A message from the server, as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    Ok {
        id: Option<RequestId>,
        seq: Option<u64>,
        epoch: Option<String>,
    },
    Err {
        id: Option<RequestId>,
        code: String,
        message: String,
    },
    Item {
        cache: String,
        topic: String,
        seq: u64,
        value: Value,
        from: String,
    },
    Gap {
        cache: String,
        topic: String,
        last: u64,
        next: u64,
        /// Set when the topic's sequence restarted: the new epoch.
        epoch: Option<String>,
    },
    Pong {
        id: Option<RequestId>,
    },
    Hb,
}

impl TryFrom<WireMessage> for ServerMessage {
    type Error = ProtocolError;

    fn try_from(m: WireMessage) -> Result<Self, ProtocolError> {
        let op = m.op.as_str();
        Ok(match op {
            "ok" => ServerMessage::Ok {
                id: m.id,
                seq: m.seq,
                epoch: m.epoch,
            },
            "err" => ServerMessage::Err {
                id: m.id,
                code: required(m.code, op, "code")?,
                message: m.message.unwrap_or_default(),
            },
            "item" => ServerMessage::Item {
                cache: required(m.cache, op, "cache")?,
                topic: required(m.topic, op, "topic")?,
                seq: required(m.seq, op, "seq")?,
                value: required(m.value, op, "value")?,
                from: m.from.unwrap_or_default(),
            },
            "gap" => ServerMessage::Gap {
                cache: required(m.cache, op, "cache")?,
                topic: required(m.topic, op, "topic")?,
                last: required(m.last, op, "last")?,
                next: required(m.next, op, "next")?,
                epoch: m.epoch,
            },
            "pong" => ServerMessage::Pong { id: m.id },
            "hb" => ServerMessage::Hb,
            other => {
                return Err(ProtocolError::new(format!(
                    "unknown op `{}`",
                    truncate(other, 32)
                )))
            }
        })
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn write_named<T: Serialize>(out: &mut Vec<u8>, msg: &T) {
    // Writing to a Vec cannot fail, and every message type here serializes.
    rmp_serde::encode::write_named(out, msg).expect("encoding a wire message into a Vec");
}

fn encoded<T: Serialize>(msg: &T) -> Bytes {
    let mut out = Vec::with_capacity(64);
    write_named(&mut out, msg);
    out.into()
}

#[derive(Serialize)]
struct ItemOut<'a> {
    op: &'static str,
    cache: &'a str,
    topic: &'a str,
    seq: u64,
    value: &'a Value,
    from: &'a str,
}

/// Encodes an `item` once; the bytes are shared by every subscriber.
pub fn encode_item(topic: &TopicKey, seq: u64, value: &Value, from: &str) -> Bytes {
    let mut out = Vec::with_capacity(
        48 + topic.cache().len() + topic.topic().len() + value.len() + from.len(),
    );
    write_named(
        &mut out,
        &ItemOut {
            op: "item",
            cache: topic.cache(),
            topic: topic.topic(),
            seq,
            value,
            from,
        },
    );
    out.into()
}

#[derive(Serialize)]
struct GapOut<'a> {
    op: &'static str,
    cache: &'a str,
    topic: &'a str,
    last: u64,
    next: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
}

/// Encodes a `gap`. `epoch` (an extra field, which older clients ignore) names
/// the current epoch when the gap is because the topic's sequence restarted.
pub fn encode_gap(topic: &TopicKey, last: u64, next: u64, epoch: Option<&str>) -> Bytes {
    encoded(&GapOut {
        op: "gap",
        cache: topic.cache(),
        topic: topic.topic(),
        last,
        next,
        epoch,
    })
}

#[derive(Serialize)]
struct OkOut<'a> {
    op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RequestId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
}

pub fn encode_ok(id: Option<&RequestId>, seq: Option<u64>, epoch: Option<&str>) -> Bytes {
    encoded(&OkOut {
        op: "ok",
        id,
        seq,
        epoch,
    })
}

#[derive(Serialize)]
struct ErrOut<'a> {
    op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RequestId>,
    code: &'static str,
    message: &'a str,
}

pub fn encode_err(id: Option<&RequestId>, code: ErrorCode, message: &str) -> Bytes {
    encoded(&ErrOut {
        op: "err",
        id,
        code: code.as_str(),
        message,
    })
}

#[derive(Serialize)]
struct PongOut<'a> {
    op: &'static str,
    id: &'a RequestId,
}

pub fn encode_pong(id: &RequestId) -> Bytes {
    encoded(&PongOut { op: "pong", id })
}

#[derive(Serialize)]
struct HbOut {
    op: &'static str,
}

pub fn encode_hb() -> Bytes {
    encoded(&HbOut { op: "hb" })
}

/// Decodes every server message in a frame (for clients).
pub fn decode_server_frame(frame: &[u8]) -> Result<Vec<ServerMessage>, ProtocolError> {
    decode_messages(frame)
        .map(|m| m.and_then(ServerMessage::try_from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(msgs: &[rmpv::Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            rmpv::encode::write_value(&mut out, m).unwrap();
        }
        out
    }

    fn map(pairs: &[(&str, rmpv::Value)]) -> rmpv::Value {
        rmpv::Value::Map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), v.clone()))
                .collect(),
        )
    }

    fn requests(f: &[u8]) -> Vec<Result<Request, ProtocolError>> {
        decode_messages(f)
            .map(|m| m.and_then(Request::try_from))
            .collect()
    }

    #[test]
    fn decodes_several_messages_in_one_frame() {
        let f = frame(&[
            map(&[("op", "ping".into()), ("id", 1.into())]),
            map(&[
                ("op", "pub".into()),
                ("cache", "c".into()),
                ("topic", "t".into()),
                ("value", rmpv::Value::Binary(vec![1, 2])),
                ("future_field", map(&[("x", 1.into())])),
            ]),
            map(&[
                ("op", "sub".into()),
                ("id", "a".into()),
                ("cache", "c".into()),
                ("topic", "t".into()),
                ("resume_after", 7.into()),
                ("epoch", "e".into()),
            ]),
        ]);
        let r: Vec<_> = requests(&f).into_iter().map(Result::unwrap).collect();
        assert_eq!(r[0], Request::Ping { id: 1u64.into() });
        assert_eq!(
            r[1],
            Request::Pub {
                id: None,
                cache: "c".into(),
                topic: "t".into(),
                value: Value::Binary(vec![1, 2].into())
            }
        );
        assert_eq!(
            r[2],
            Request::Sub {
                id: RequestId::Text("a".into()),
                cache: "c".into(),
                topic: "t".into(),
                resume_after: Some(7),
                epoch: Some("e".into())
            }
        );
    }

    #[test]
    fn text_values_stay_text() {
        let f = frame(&[map(&[
            ("op", "pub".into()),
            ("cache", "c".into()),
            ("topic", "t".into()),
            ("value", "hi".into()),
        ])]);
        match requests(&f).remove(0).unwrap() {
            Request::Pub { value, .. } => assert_eq!(value, Value::Text("hi".into())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_missing_mistyped_and_unknown() {
        let cases = [
            map(&[
                ("op", "sub".into()),
                ("id", 1.into()),
                ("cache", "c".into()),
            ]),
            map(&[
                ("op", "sub".into()),
                ("id", 1.into()),
                ("cache", 5.into()),
                ("topic", "t".into()),
            ]),
            map(&[
                ("op", "sub".into()),
                ("id", 1.into()),
                ("cache", "c".into()),
                ("topic", "t".into()),
                ("resume_after", "x".into()),
            ]),
            map(&[("op", "fly".into()), ("id", 1.into())]),
            map(&[("id", 1.into())]),
            map(&[("op", 3.into())]),
            map(&[("op", "ping".into()), ("id", map(&[]))]),
            rmpv::Value::Array(vec!["ping".into(), 1.into()]),
            rmpv::Value::Map(vec![(0.into(), "ping".into()), (1.into(), 5.into())]),
            rmpv::Value::Map(vec![
                ("op".into(), "ping".into()),
                ("op".into(), "ping".into()),
                ("id".into(), 1.into()),
            ]),
            rmpv::Value::from(42),
        ];
        for c in cases {
            let r = requests(&frame(std::slice::from_ref(&c)));
            assert!(r.iter().any(Result::is_err), "{c} was accepted");
        }
    }

    #[test]
    fn truncated_message_is_an_error_not_a_hang() {
        let mut f = frame(&[map(&[("op", "ping".into()), ("id", 1.into())])]);
        f.pop();
        assert!(requests(&f).iter().any(Result::is_err));
        // A bin header claiming 4 GiB in a tiny frame.
        let f = [
            0x81, 0xa5, b'v', b'a', b'l', b'u', b'e', 0xc6, 0xff, 0xff, 0xff, 0xff, 1,
        ];
        assert!(requests(&f).iter().any(Result::is_err));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // {"op":"ping","id":1,"x":[[[…nil…]]]} 100,000 deep, written by hand.
        let mut f = Vec::new();
        f.extend_from_slice(&[
            0x83, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g', 0xa2, b'i', b'd', 0x01, 0xa1,
            b'x',
        ]);
        f.extend(std::iter::repeat_n(0x91u8, 100_000));
        f.push(0xc0);
        assert!(requests(&f).iter().any(Result::is_err));
        // Shallow unknown fields are fine.
        let mut ok = vec![
            0x83, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g', 0xa2, b'i', b'd', 0x01, 0xa1,
            b'x',
        ];
        ok.extend(std::iter::repeat_n(0x91u8, 20));
        ok.push(0xc0);
        assert!(requests(&ok).iter().all(Result::is_ok));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x2545F4914F6CDD1Du64;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            let _ = requests(&bytes);
            let _ = decode_server_frame(&bytes);
        }
    }

    #[test]
    fn server_messages_round_trip() {
        let key = TopicKey::new("c", "t").unwrap();
        let mut f = Vec::new();
        f.extend_from_slice(&encode_ok(Some(&1u64.into()), Some(3), Some("ep")));
        f.extend_from_slice(&encode_item(&key, 4, &Value::Text("v".into()), "alice"));
        f.extend_from_slice(&encode_gap(&key, 4, 9, None));
        f.extend_from_slice(&encode_gap(&key, 9, 1, Some("e2")));
        f.extend_from_slice(&encode_err(None, ErrorCode::TooLarge, "big"));
        f.extend_from_slice(&encode_pong(&RequestId::Text("p".into())));
        f.extend_from_slice(&encode_hb());
        let msgs = decode_server_frame(&f).unwrap();
        assert_eq!(
            msgs,
            vec![
                ServerMessage::Ok {
                    id: Some(1u64.into()),
                    seq: Some(3),
                    epoch: Some("ep".into())
                },
                ServerMessage::Item {
                    cache: "c".into(),
                    topic: "t".into(),
                    seq: 4,
                    value: Value::Text("v".into()),
                    from: "alice".into()
                },
                ServerMessage::Gap {
                    cache: "c".into(),
                    topic: "t".into(),
                    last: 4,
                    next: 9,
                    epoch: None
                },
                ServerMessage::Gap {
                    cache: "c".into(),
                    topic: "t".into(),
                    last: 9,
                    next: 1,
                    epoch: Some("e2".into())
                },
                ServerMessage::Err {
                    id: None,
                    code: "too_large".into(),
                    message: "big".into()
                },
                ServerMessage::Pong {
                    id: Some(RequestId::Text("p".into()))
                },
                ServerMessage::Hb,
            ]
        );
    }

    #[test]
    fn item_is_a_named_map() {
        let key = TopicKey::new("c", "t").unwrap();
        let bytes = encode_item(&key, 1, &Value::Binary(vec![0u8; 3].into()), "s");
        let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let keys: Vec<_> = v
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(keys, ["op", "cache", "topic", "seq", "value", "from"]);
    }
}
