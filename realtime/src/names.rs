//! Cache and topic names (PROTOCOL.md, "Names").
//!
//! Names are checked once, where they enter the server (a `sub`, a `pub`, an HTTP
//! path, a token's permissions); everything past that point holds a [`TopicKey`]
//! and can trust it.

use std::fmt;

/// Longest cache name, in bytes (all allowed characters are ASCII).
pub const MAX_CACHE_LEN: usize = 64;
/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// `A-Z a-z 0-9 _ -`, 1–64 characters.
pub fn is_valid_cache(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CACHE_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `A-Z a-z 0-9 _ - . :`, 1–256 characters.
pub fn is_valid_topic(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_TOPIC_LEN && name.bytes().all(is_topic_byte)
}

pub(crate) fn is_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
}

/// A checked (cache, topic) pair: the identity of one message stream.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicKey {
    cache: Box<str>,
    topic: Box<str>,
}

/// Why a name was refused; the message is what clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid cache name: use 1-64 characters of A-Z a-z 0-9 _ -")]
    Cache,
    #[error("invalid topic name: use 1-256 characters of A-Z a-z 0-9 _ - . :")]
    Topic,
}

impl TopicKey {
    pub fn new(cache: &str, topic: &str) -> Result<Self, NameError> {
        if !is_valid_cache(cache) {
            return Err(NameError::Cache);
        }
        if !is_valid_topic(topic) {
            return Err(NameError::Topic);
        }
        Ok(Self {
            cache: cache.into(),
            topic: topic.into(),
        })
    }

    pub fn cache(&self) -> &str {
        &self.cache
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl fmt::Debug for TopicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cache, self.topic)
    }
}

impl fmt::Display for TopicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cache, self.topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabets() {
        assert!(is_valid_cache("Abc_09-z"));
        assert!(is_valid_topic("match.42:input_7-x"));
        assert!(is_valid_cache(&"a".repeat(64)));
        assert!(is_valid_topic(&"t".repeat(256)));
    }

    #[test]
    fn refuses_hostile_names() {
        for bad in [
            "",
            " ",
            "a b",
            "a/b",
            "a.b",
            "é",
            "a\0",
            "*",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_cache(bad), "cache {bad:?}");
        }
        for bad in ["", "a b", "a/b", "é", "a\n", "*", "x*", &"t".repeat(257)] {
            assert!(!is_valid_topic(bad), "topic {bad:?}");
        }
        assert_eq!(TopicKey::new("ok", "a b"), Err(NameError::Topic));
        assert_eq!(TopicKey::new("a.b", "ok"), Err(NameError::Cache));
    }

    #[test]
    fn every_byte_is_classified_without_panicking() {
        for b in 0..=255u8 {
            let s = [b];
            if let Ok(s) = std::str::from_utf8(&s) {
                let _ = TopicKey::new(s, s);
            }
        }
    }
}
