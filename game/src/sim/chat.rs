//! Chat messages (topic `match.{id}.chat`): a MessagePack map with exactly the
//! keys `"name"` (the sender's display name, 1-16 characters) and `"text"`
//! (1-200 characters, no control characters). The server is expected to check
//! incoming chat with [`decode`] and may re-stamp the name from the sender's
//! identity with [`encode`].

use bytes::Bytes;

use super::msgpack::{put_map_len, put_str, ReadError, Reader};
use super::params::NAME_MAX_CHARS;

/// Longest chat text, in characters.
pub const TEXT_MAX_CHARS: usize = 200;
/// Longest chat message, in bytes.
pub const MAX_CHAT_BYTES: usize = 1024;

/// A chat line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Sender's display name.
    pub name: String,
    /// The text.
    pub text: String,
}

/// Why a chat message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// Longer than [`MAX_CHAT_BYTES`].
    #[error("chat message is too large")]
    TooLarge,
    /// Not a single well-formed MessagePack map with both keys once.
    #[error("chat message is not a MessagePack map with \"name\" and \"text\"")]
    Malformed,
    /// A key other than `name` and `text`, or a value that is not a string.
    #[error("chat message has an unknown field or a field of the wrong type")]
    BadField,
    /// Empty, too long, or with control characters.
    #[error("chat name or text is empty, too long or has control characters")]
    BadText,
}

fn text_ok(s: &str, max: usize) -> bool {
    let n = s.chars().count();
    n > 0 && n <= max && !s.chars().any(char::is_control) && !s.trim().is_empty()
}

/// Checks and decodes a chat message.
pub fn decode(bytes: &[u8]) -> Result<ChatMessage, ChatError> {
    if bytes.len() > MAX_CHAT_BYTES {
        return Err(ChatError::TooLarge);
    }
    let mut r = Reader::new(bytes);
    let n = r.map_len().map_err(|_| ChatError::Malformed)?;
    if n != 2 {
        return Err(ChatError::Malformed);
    }
    let (mut name, mut text) = (None, None);
    for _ in 0..2 {
        let key = r.str(8).map_err(|_| ChatError::BadField)?;
        let value = r.str(MAX_CHAT_BYTES).map_err(|e| match e {
            ReadError::Malformed => ChatError::Malformed,
            ReadError::WrongType => ChatError::BadField,
        })?;
        let slot = match key {
            "name" => &mut name,
            "text" => &mut text,
            _ => return Err(ChatError::BadField),
        };
        if slot.replace(value).is_some() {
            return Err(ChatError::Malformed);
        }
    }
    if !r.is_empty() {
        return Err(ChatError::Malformed);
    }
    let (Some(name), Some(text)) = (name, text) else {
        return Err(ChatError::Malformed);
    };
    if !text_ok(name, NAME_MAX_CHARS) || !text_ok(text, TEXT_MAX_CHARS) {
        return Err(ChatError::BadText);
    }
    Ok(ChatMessage {
        name: name.to_string(),
        text: text.to_string(),
    })
}

/// Encodes a chat message (no checks; use [`decode`] on what clients send).
pub fn encode(name: &str, text: &str) -> Bytes {
    let mut out = Vec::with_capacity(16 + name.len() + text.len());
    put_map_len(&mut out, 2);
    put_str(&mut out, "name");
    put_str(&mut out, name);
    put_str(&mut out, "text");
    put_str(&mut out, text);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let m = encode("Hazel", "nice dash!");
        assert_eq!(
            decode(&m),
            Ok(ChatMessage {
                name: "Hazel".into(),
                text: "nice dash!".into()
            })
        );
        assert_eq!(decode(&encode("Hazel", "")), Err(ChatError::BadText));
        assert_eq!(decode(&encode("Hazel", "a\u{7}b")), Err(ChatError::BadText));
        assert_eq!(decode(&encode("", "hi")), Err(ChatError::BadText));
        assert_eq!(
            decode(&encode("Hazel", &"x".repeat(201))),
            Err(ChatError::BadText)
        );
        assert_eq!(decode(&[0x92, 1, 2]), Err(ChatError::Malformed));
        assert_eq!(decode(&[0x82, 0xa4, b'n']), Err(ChatError::Malformed));
        let mut who = Vec::new();
        put_map_len(&mut who, 2);
        for s in ["who", "x", "text", "y"] {
            put_str(&mut who, s);
        }
        assert_eq!(decode(&who), Err(ChatError::BadField));
        let mut extra = encode("a", "b").to_vec();
        extra.push(0);
        assert_eq!(decode(&extra), Err(ChatError::Malformed));
        assert_eq!(decode(&vec![0; 2000]), Err(ChatError::TooLarge));
    }
}
