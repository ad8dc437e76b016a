//! One client's protocol session: its token, subscriptions, rate limit, and
//! the handling of each request. Knows nothing of sockets; replies go to the
//! connection's [`Outbox`], a reason to close comes back as a [`CloseRequest`].

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::error::{close, ErrorCode};
use crate::hub::{next_conn_id, ConnId, Hub, Resume};
use crate::names::TopicKey;
use crate::outbox::{CloseRequest, Outbox};
use crate::protocol::{encode_err, encode_ok, encode_pong, Request, RequestId};
use crate::server::App;
use crate::token::{Action, Claims};

pub struct Session {
    id: ConnId,
    app: Arc<App>,
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    claims: Claims,
    /// Shares the hub's key for each topic: no per-connection copies.
    subscriptions: HashSet<Arc<TopicKey>>,
    rate: DefaultDirectRateLimiter,
    refusals: u32,
    refusal_window: Instant,
}

pub fn quota(per_sec: u32, burst: u32) -> Quota {
    let per_sec = NonZeroU32::new(per_sec.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_sec).allow_burst(burst)
}

impl Session {
    pub fn new(app: Arc<App>, outbox: Arc<Outbox>, mut claims: Claims) -> Self {
        // Held for the connection's life; the token id is never needed again.
        claims.jti = String::new();
        let limits = &app.config.limits;
        Self {
            id: next_conn_id(),
            hub: app.hub.clone(),
            rate: RateLimiter::direct(quota(limits.ws_rate_per_sec, limits.ws_rate_burst)),
            app,
            outbox,
            claims,
            subscriptions: HashSet::new(),
            refusals: 0,
            refusal_window: Instant::now(),
        }
    }

    pub fn id(&self) -> ConnId {
        self.id
    }

    pub fn subject(&self) -> &str {
        &self.claims.sub
    }

    /// When the current token expires (as a timer deadline).
    pub fn expires_at(&self) -> Instant {
        let left = self
            .claims
            .expires_at()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Instant::now() + left
    }

    pub fn expired(&self) -> bool {
        self.claims.expires_at() <= SystemTime::now()
    }

    fn reply_err(&self, id: Option<&RequestId>, code: ErrorCode, message: &str) {
        self.outbox.push_control(encode_err(id, code, message));
    }

    /// Handles one request. `Err` means: close the connection this way.
    pub async fn handle(&mut self, req: Request) -> Result<(), CloseRequest> {
        if self.rate.check().is_err() {
            return self.refuse_for_rate(&req);
        }
        match req {
            Request::Sub {
                id,
                cache,
                topic,
                resume_after,
                epoch,
            } => {
                self.subscribe(id, &cache, &topic, resume_after, epoch)
                    .await
            }
            Request::Unsub { id, cache, topic } => {
                match TopicKey::new(&cache, &topic) {
                    Ok(key) => {
                        self.unsubscribe(&key);
                        self.outbox.push_control(encode_ok(Some(&id), None, None));
                    }
                    Err(e) => self.reply_err(Some(&id), ErrorCode::InvalidName, &e.to_string()),
                }
                Ok(())
            }
            Request::Pub {
                id,
                cache,
                topic,
                value,
            } => {
                self.publish(id, &cache, &topic, value).await;
                Ok(())
            }
            Request::Ping { id } => {
                self.outbox.push_control(encode_pong(&id));
                Ok(())
            }
            Request::Auth { id, token } => {
                match self.app.tokens.verify(&token) {
                    Ok(mut claims) => {
                        claims.jti = String::new();
                        self.claims = claims;
                        self.outbox.push_control(encode_ok(Some(&id), None, None));
                    }
                    Err(e) => self.reply_err(Some(&id), ErrorCode::Unauthenticated, &e.to_string()),
                }
                Ok(())
            }
        }
    }

    fn refuse_for_rate(&mut self, req: &Request) -> Result<(), CloseRequest> {
        self.app.metrics.rate_limited.inc();
        let now = Instant::now();
        if now.duration_since(self.refusal_window) >= Duration::from_secs(1) {
            self.refusal_window = now;
            self.refusals = 0;
        }
        self.refusals += 1;
        if self.refusals >= self.app.config.limits.ws_rate_burst.max(1) {
            return Err(CloseRequest {
                code: close::TOO_MANY_REQUESTS,
                reason: "too many requests".into(),
            });
        }
        let id = req.id();
        self.reply_err(id, ErrorCode::RateLimited, "rate limited: slow down");
        Ok(())
    }

    async fn subscribe(
        &mut self,
        id: RequestId,
        cache: &str,
        topic: &str,
        resume_after: Option<u64>,
        epoch: Option<String>,
    ) -> Result<(), CloseRequest> {
        let key = match TopicKey::new(cache, topic) {
            Ok(k) => k,
            Err(e) => {
                self.reply_err(Some(&id), ErrorCode::InvalidName, &e.to_string());
                return Ok(());
            }
        };
        if !self.claims.allows(Action::Subscribe, cache, topic) {
            self.reply_err(
                Some(&id),
                ErrorCode::PermissionDenied,
                &format!("token may not subscribe to {key}"),
            );
            return Ok(());
        }
        // A second `sub` replaces the first: no double delivery.
        let replacing = self.subscriptions.contains(&key);
        if replacing {
            self.unsubscribe(&key);
        } else if self.subscriptions.len() >= self.app.config.limits.max_subscriptions {
            self.reply_err(
                Some(&id),
                ErrorCode::LimitExceeded,
                &format!(
                    "at most {} subscriptions per connection",
                    self.app.config.limits.max_subscriptions
                ),
            );
            return Ok(());
        }
        let resume = resume_after.map(|after| Resume { after, epoch });
        match self
            .hub
            .subscribe(self.id, &self.outbox, key, &id, resume)
            .await
        {
            Ok(shared) => {
                self.subscriptions.insert(shared);
            }
            Err(e) => self.reply_err(Some(&id), ErrorCode::Unavailable, &e.to_string()),
        }
        Ok(())
    }

    fn unsubscribe(&mut self, key: &TopicKey) {
        if self.subscriptions.remove(key) {
            self.hub.unsubscribe(self.id, key);
            self.outbox.purge_topic(key);
        }
    }

    async fn publish(
        &mut self,
        id: Option<RequestId>,
        cache: &str,
        topic: &str,
        value: crate::protocol::Value,
    ) {
        let key = match TopicKey::new(cache, topic) {
            Ok(k) => k,
            Err(e) => return self.reply_err(id.as_ref(), ErrorCode::InvalidName, &e.to_string()),
        };
        if !self.claims.allows(Action::Publish, cache, topic) {
            return self.reply_err(
                id.as_ref(),
                ErrorCode::PermissionDenied,
                &format!("token may not publish to {key}"),
            );
        }
        let max = self.app.config.limits.max_value_bytes;
        if value.len() > max {
            return self.reply_err(
                id.as_ref(),
                ErrorCode::TooLarge,
                &format!("value is {} bytes; the limit is {max}", value.len()),
            );
        }
        match self.hub.publish(&key, &value, &self.claims.sub).await {
            Ok(position) => {
                self.app.metrics.publish("ws");
                if let Some(id) = id {
                    self.outbox
                        .push_control(encode_ok(Some(&id), Some(position.seq), None));
                }
            }
            Err(e) => self.reply_err(id.as_ref(), ErrorCode::Unavailable, &e.to_string()),
        }
    }

    /// Leaves every subscription (the connection is going away).
    pub fn finish(&mut self) {
        for key in std::mem::take(&mut self.subscriptions) {
            self.hub.unsubscribe(self.id, &key);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.finish();
    }
}
