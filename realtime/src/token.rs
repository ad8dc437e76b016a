//! Scoped tokens (PROTOCOL.md, "Tokens and permissions").
//!
//! A token is an HS256 JWT whose `perms` claim lists role × cache × topic
//! grants. Tokens are checked when they arrive (WebSocket upgrade, `auth`,
//! HTTP publish) and every `sub`/`pub` is checked against the grants, so a
//! token can be, say, subscribe-only on exactly one topic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::names::{is_topic_byte, is_valid_cache, is_valid_topic, MAX_TOPIC_LEN};

/// What a permission lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    PublishSubscribe,
    SubscribeOnly,
    PublishOnly,
}

impl Role {
    pub fn allows(self, action: Action) -> bool {
        matches!(
            (self, action),
            (Role::PublishSubscribe, _)
                | (Role::SubscribeOnly, Action::Subscribe)
                | (Role::PublishOnly, Action::Publish)
        )
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "publishsubscribe" => Ok(Role::PublishSubscribe),
            "subscribeonly" => Ok(Role::SubscribeOnly),
            "publishonly" => Ok(Role::PublishOnly),
            other => Err(format!(
                "unknown role `{other}`: use publishsubscribe, subscribeonly or publishonly"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
}

/// One grant: `{"role": R, "cache": C, "topic": T}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub role: Role,
    pub cache: String,
    pub topic: String,
}

impl Permission {
    /// Checks the selectors: a cache name or `*`; a topic name, `prefix*` or `*`.
    pub fn validate(&self) -> Result<(), String> {
        if self.cache != "*" && !is_valid_cache(&self.cache) {
            return Err(format!(
                "bad cache selector `{}`: a cache name or \"*\"",
                clip(&self.cache)
            ));
        }
        let topic_ok = match self.topic.strip_suffix('*') {
            Some(prefix) => prefix.len() < MAX_TOPIC_LEN && prefix.bytes().all(is_topic_byte),
            None => is_valid_topic(&self.topic),
        };
        if !topic_ok {
            return Err(format!(
                "bad topic selector `{}`: a topic name, a prefix ending in *, or \"*\"",
                clip(&self.topic)
            ));
        }
        Ok(())
    }

    pub fn covers(&self, action: Action, cache: &str, topic: &str) -> bool {
        self.role.allows(action)
            && (self.cache == "*" || self.cache == cache)
            && match self.topic.strip_suffix('*') {
                Some(prefix) => topic.starts_with(prefix),
                None => self.topic == topic,
            }
    }

    /// Parses the CLI form `ROLE:CACHE:TOPIC` (topics may contain `:`).
    pub fn parse_cli(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ':');
        let (Some(role), Some(cache), Some(topic)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("`{s}`: expected ROLE:CACHE:TOPIC"));
        };
        let p = Permission {
            role: role.parse()?,
            cache: cache.into(),
            topic: topic.into(),
        };
        p.validate()?;
        Ok(p)
    }
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The claims of an Acorn token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
    pub perms: Vec<Permission>,
}

impl Claims {
    pub fn allows(&self, action: Action, cache: &str, topic: &str) -> bool {
        self.perms.iter().any(|p| p.covers(action, cache, topic))
    }

    /// When the token stops being valid.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.exp)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token is malformed or badly signed")]
    Invalid,
    #[error("token has a bad permission: {0}")]
    BadPermission(String),
    #[error("{0}")]
    BadRequest(String),
}

/// Longest accepted `sub`, and most permissions per token: bounds on what a
/// token holder can make the server hold per connection.
pub const MAX_SUBJECT_LEN: usize = 256;
pub const MAX_PERMISSIONS: usize = 64;

/// Mints and verifies tokens with the server's secret.
#[derive(Clone)]
pub struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenAuthority {
    /// Fails only for an empty secret.
    pub fn new(secret: &[u8]) -> Result<Self, TokenError> {
        let bad = |_| TokenError::BadRequest("the token secret must not be empty".into());
        let encoding = EncodingKey::from_secret(secret).map_err(bad)?;
        let decoding = DecodingKey::from_secret(secret).map_err(bad)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            encoding,
            decoding,
            validation,
        })
    }

    /// Mints a token valid for `ttl`. Refuses empty grants, bad selectors and a zero ttl.
    pub fn mint(
        &self,
        sub: &str,
        ttl: Duration,
        perms: Vec<Permission>,
    ) -> Result<(String, Claims), TokenError> {
        if sub.is_empty() || sub.len() > MAX_SUBJECT_LEN {
            return Err(TokenError::BadRequest(format!(
                "`sub` must be 1-{MAX_SUBJECT_LEN} bytes"
            )));
        }
        if ttl.as_secs() == 0 {
            return Err(TokenError::BadRequest(
                "`expires_in` must be a positive number of seconds".into(),
            ));
        }
        if perms.len() > MAX_PERMISSIONS {
            return Err(TokenError::BadRequest(format!(
                "at most {MAX_PERMISSIONS} permissions per token"
            )));
        }
        for p in &perms {
            p.validate().map_err(TokenError::BadRequest)?;
        }
        let iat = unix_now();
        let claims = Claims {
            sub: sub.to_owned(),
            exp: iat.saturating_add(ttl.as_secs()),
            iat,
            jti: format!("{:032x}", rand::random::<u128>()),
            perms,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::BadRequest(e.to_string()))?;
        Ok((token, claims))
    }

    /// Verifies signature, algorithm, expiry and the shape of every permission.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > 16 * 1024 {
            return Err(TokenError::Invalid);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let claims = data.claims;
        // jsonwebtoken accepts exp == now; the contract is "expired at exp".
        if claims.exp <= unix_now() {
            return Err(TokenError::Expired);
        }
        if claims.sub.len() > MAX_SUBJECT_LEN || claims.perms.len() > MAX_PERMISSIONS {
            return Err(TokenError::Invalid);
        }
        for p in &claims.perms {
            p.validate().map_err(TokenError::BadPermission)?;
        }
        Ok(claims)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Compares two secrets in constant time (operator key checks).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(role: Role, cache: &str, topic: &str) -> Permission {
        Permission {
            role,
            cache: cache.into(),
            topic: topic.into(),
        }
    }

    #[test]
    fn permission_matrix() {
        use Action::*;
        let cases = [
            (
                perm(Role::SubscribeOnly, "c", "t"),
                Subscribe,
                "c",
                "t",
                true,
            ),
            (
                perm(Role::SubscribeOnly, "c", "t"),
                Publish,
                "c",
                "t",
                false,
            ),
            (perm(Role::PublishOnly, "c", "t"), Publish, "c", "t", true),
            (
                perm(Role::PublishOnly, "c", "t"),
                Subscribe,
                "c",
                "t",
                false,
            ),
            (
                perm(Role::PublishSubscribe, "c", "t"),
                Publish,
                "c",
                "t",
                true,
            ),
            (
                perm(Role::PublishSubscribe, "c", "t"),
                Subscribe,
                "c",
                "t",
                true,
            ),
            (
                perm(Role::PublishSubscribe, "c", "t"),
                Subscribe,
                "c",
                "t2",
                false,
            ),
            (
                perm(Role::PublishSubscribe, "c", "t"),
                Subscribe,
                "d",
                "t",
                false,
            ),
            (
                perm(Role::PublishSubscribe, "*", "t"),
                Subscribe,
                "d",
                "t",
                true,
            ),
            (
                perm(Role::PublishSubscribe, "c", "match.42.*"),
                Subscribe,
                "c",
                "match.42.state",
                true,
            ),
            (
                perm(Role::PublishSubscribe, "c", "match.42.*"),
                Subscribe,
                "c",
                "match.421",
                false,
            ),
            (
                perm(Role::PublishSubscribe, "c", "*"),
                Publish,
                "c",
                "anything",
                true,
            ),
        ];
        for (p, action, cache, topic, want) in cases {
            assert_eq!(
                p.covers(action, cache, topic),
                want,
                "{p:?} {action:?} {cache}/{topic}"
            );
        }
    }

    #[test]
    fn selectors_are_validated() {
        assert!(perm(Role::SubscribeOnly, "*", "*").validate().is_ok());
        assert!(perm(Role::SubscribeOnly, "c", "a.b*").validate().is_ok());
        for (c, t) in [
            ("c*", "t"),
            ("", "t"),
            ("c", ""),
            ("c", "a*b"),
            ("c", "a b*"),
            ("c", "**"),
        ] {
            assert!(
                perm(Role::SubscribeOnly, c, t).validate().is_err(),
                "{c} {t}"
            );
        }
    }

    #[test]
    fn mint_then_verify() {
        let auth = TokenAuthority::new(b"secret").unwrap();
        let (tok, claims) = auth
            .mint(
                "alice",
                Duration::from_secs(60),
                vec![perm(Role::PublishOnly, "c", "t")],
            )
            .unwrap();
        assert_eq!(auth.verify(&tok).unwrap(), claims);
        assert_eq!(claims.jti.len(), 32);
    }

    #[test]
    fn refuses_bad_tokens() {
        let auth = TokenAuthority::new(b"secret").unwrap();
        let other = TokenAuthority::new(b"other").unwrap();
        let (tok, _) = other.mint("eve", Duration::from_secs(60), vec![]).unwrap();
        assert_eq!(auth.verify(&tok), Err(TokenError::Invalid));
        for junk in [
            "",
            "a.b.c",
            "....",
            "eyJhbGciOiJub25lIn0.e30.",
            &"x".repeat(20000),
        ] {
            assert!(auth.verify(junk).is_err());
        }
        // alg=none with the right claims is refused.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJldmUiLCJleHAiOjk5OTk5OTk5OTksImlhdCI6MCwianRpIjoiMCIsInBlcm1zIjpbXX0.";
        assert!(auth.verify(none).is_err());
    }

    #[test]
    fn refuses_expired_tokens() {
        let auth = TokenAuthority::new(b"secret").unwrap();
        let claims = Claims {
            sub: "a".into(),
            exp: unix_now() - 1,
            iat: 0,
            jti: "j".into(),
            perms: vec![],
        };
        let tok = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"secret").unwrap(),
        )
        .unwrap();
        assert_eq!(auth.verify(&tok), Err(TokenError::Expired));
    }

    #[test]
    fn refuses_a_signed_token_with_a_bad_selector() {
        let auth = TokenAuthority::new(b"secret").unwrap();
        let claims = Claims {
            sub: "a".into(),
            exp: unix_now() + 60,
            iat: 0,
            jti: "j".into(),
            perms: vec![perm(Role::SubscribeOnly, "c", "a b")],
        };
        let tok = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"secret").unwrap(),
        )
        .unwrap();
        assert!(matches!(
            auth.verify(&tok),
            Err(TokenError::BadPermission(_))
        ));
    }

    #[test]
    fn mint_refuses_bad_requests() {
        let auth = TokenAuthority::new(b"secret").unwrap();
        assert!(auth.mint("a", Duration::ZERO, vec![]).is_err());
        assert!(auth.mint("", Duration::from_secs(1), vec![]).is_err());
        assert!(auth
            .mint(
                "a",
                Duration::from_secs(1),
                vec![perm(Role::SubscribeOnly, "c", "bad topic")]
            )
            .is_err());
    }

    #[test]
    fn cli_permission_form() {
        assert_eq!(
            Permission::parse_cli("subscribeonly:c:match.1:x").unwrap(),
            perm(Role::SubscribeOnly, "c", "match.1:x")
        );
        assert!(Permission::parse_cli("admin:c:t").is_err());
        assert!(Permission::parse_cli("subscribeonly:c").is_err());
    }

    #[test]
    fn constant_time_compare() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
    }
}
