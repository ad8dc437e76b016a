//! Messages from the server: replies matched to requests, items and gaps
//! routed through each subscription's tracker into its queue.

use tokio_tungstenite::tungstenite::Message;

use super::{Break, Key, Pending, SubOk, Task};
use crate::client::subscription::Event;
use crate::client::tracker::{GapInfo, ItemVerdict};
use crate::client::{ClientError, CloseInfo};
use crate::protocol::{decode_server_frame, RequestId, ServerMessage};

impl Task {
    pub(super) fn on_frame(&mut self, msg: Message) -> Result<(), Break> {
        match msg {
            Message::Binary(frame) => {
                let msgs = decode_server_frame(&frame).map_err(|e| {
                    Break::Protocol(format!("undecodable frame from the server: {e}"))
                })?;
                for m in msgs {
                    self.on_message(m)?;
                }
                Ok(())
            }
            Message::Text(_) => Err(Break::Protocol("text frame from the server".into())),
            Message::Close(frame) => Err(Break::ServerClose(match frame {
                Some(f) => CloseInfo {
                    code: f.code.into(),
                    reason: f.reason.as_str().to_owned(),
                },
                None => CloseInfo {
                    code: 1005,
                    reason: "closed without a status code".into(),
                },
            })),
            // tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
        }
    }

    fn take_pending(&mut self, id: Option<&RequestId>) -> Option<Pending> {
        match id {
            Some(RequestId::Unsigned(n)) => self.pending.remove(n),
            _ => None,
        }
    }

    pub(super) fn on_message(&mut self, m: ServerMessage) -> Result<(), Break> {
        match m {
            ServerMessage::Ok { id, seq, epoch } => match self.take_pending(id.as_ref()) {
                Some(Pending::Publish(r)) => {
                    let _ = r.send(seq.ok_or_else(|| {
                        ClientError::Protocol("`ok` to a `pub` without `seq`".into())
                    }));
                }
                Some(Pending::Ping(r)) => {
                    let _ = r.send(Ok(()));
                }
                Some(Pending::Auth { token, reply }) => {
                    self.token = token;
                    self.token_gen += 1;
                    self.conn_token_gen = self.token_gen;
                    let _ = reply.send(Ok(()));
                }
                Some(Pending::Sub { key, sub_id }) => {
                    self.on_sub_ok(key, sub_id, seq.unwrap_or(0), epoch)
                }
                Some(Pending::Unsub(Some(r))) => {
                    let _ = r.send(Ok(()));
                }
                Some(Pending::Unsub(None)) | None => {}
            },
            ServerMessage::Err { id, code, message } => {
                let err = ClientError::Server { code, message };
                match self.take_pending(id.as_ref()) {
                    None => tracing::warn!(error = %err, "the server refused a request"),
                    Some(Pending::Publish(r)) => {
                        let _ = r.send(Err(err));
                    }
                    Some(Pending::Ping(r)) | Some(Pending::Unsub(Some(r))) => {
                        let _ = r.send(Err(err));
                    }
                    Some(Pending::Auth { reply, .. }) => {
                        let _ = reply.send(Err(err));
                    }
                    Some(Pending::Unsub(None)) => {}
                    Some(Pending::Sub { key, sub_id }) => return self.on_sub_err(key, sub_id, err),
                }
            }
            ServerMessage::Item {
                cache,
                topic,
                seq,
                value,
                from,
            } => {
                if let Some(s) = self.subs.get_mut(&(cache, topic)) {
                    if let ItemVerdict::Deliver(gap) = s.tracker.on_item(seq) {
                        if let Some(g) = gap {
                            s.queue.push(gap_event(g));
                        }
                        s.queue.push(Event::Item { seq, value, from });
                    }
                }
            }
            ServerMessage::Gap {
                cache,
                topic,
                last,
                next,
                epoch,
            } => {
                if let Some(s) = self.subs.get_mut(&(cache, topic)) {
                    if let Some(g) = s.tracker.on_gap(last, next, epoch) {
                        s.queue.push(gap_event(g));
                    }
                }
            }
            ServerMessage::Pong { id } => {
                if let Some(RequestId::Unsigned(n)) = id {
                    if matches!(self.pending.get(&n), Some(Pending::Ping(_))) {
                        if let Some(Pending::Ping(r)) = self.pending.remove(&n) {
                            let _ = r.send(Ok(()));
                        }
                    }
                }
            }
            ServerMessage::Hb => {}
        }
        Ok(())
    }

    fn on_sub_ok(&mut self, key: Key, sub_id: u64, seq: u64, epoch: Option<String>) {
        let Some(s) = self.subs.get_mut(&key).filter(|s| s.sub_id == sub_id) else {
            return; // unsubscribed meanwhile; the `unsub` is on its way
        };
        s.tracker.on_ok(seq, epoch.clone());
        if let Some(reply) = s.reply.take() {
            if reply.send(Ok(SubOk { seq, epoch })).is_err() {
                // The caller stopped waiting: nobody would ever read this.
                self.subs.remove(&key);
                if self.online {
                    self.send_unsub(key, None);
                }
            }
        }
    }

    fn on_sub_err(&mut self, key: Key, sub_id: u64, err: ClientError) -> Result<(), Break> {
        let Some(s) = self.subs.get(&key).filter(|s| s.sub_id == sub_id) else {
            return Ok(());
        };
        let transient = matches!(
            err.code(),
            Some("rate_limited" | "unavailable" | "internal")
        );
        if s.reply.is_none() && transient {
            // A re-subscribe after a reconnect: try again on a new connection
            // rather than ending a stream the consumer relies on.
            return Err(Break::Lost(format!(
                "re-subscribing to {}/{} failed: {err}",
                key.0, key.1
            )));
        }
        if let Some(mut s) = self.subs.remove(&key) {
            match s.reply.take() {
                Some(r) => {
                    let _ = r.send(Err(err));
                }
                None => s.queue.end(Some(err)),
            }
        }
        Ok(())
    }
}

fn gap_event(g: GapInfo) -> Event {
    Event::Gap {
        last: g.last,
        next: g.next,
        epoch: g.epoch,
    }
}
