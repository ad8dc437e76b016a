//! What a consumer holds: a [`Subscription`] stream of [`Event`]s, fed by the
//! socket task through a bounded, drop-oldest queue.
//!
//! The socket task must never wait for a consumer: one stalled stream would
//! stall every other subscription and the replies on the connection. So each
//! subscription has a bounded queue; when it is full the oldest event is
//! dropped and the consumer gets one `Gap` covering exactly what was dropped,
//! the same contract the server gives a slow connection.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use futures_util::Stream;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::conn::Ctrl;
use super::{Client, ClientError};
use crate::protocol::Value;

/// One thing a subscription yields, in seq order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A published value. `from` is the publisher token's `sub`.
    Item {
        seq: u64,
        value: Value,
        from: String,
    },
    /// Items after `last` and before `next` will never arrive: the topic's
    /// history no longer had them when this client resumed, or a consumer
    /// (this one, or this connection at the server) fell behind.
    ///
    /// `epoch` is set when the topic's sequence restarted (its history was
    /// lost, e.g. a server restart): `last` then counts in the old sequence and
    /// `next` in the new one, so `next` may be ≤ `last`. A restart the server
    /// reports without naming the new epoch shows as `next <= last` with
    /// `epoch: None`.
    Gap {
        last: u64,
        next: u64,
        epoch: Option<String>,
    },
}

impl Event {
    /// The seq after which this event leaves the consumer.
    fn position(&self) -> u64 {
        match self {
            Event::Item { seq, .. } => *seq,
            Event::Gap { next, .. } => next.saturating_sub(1),
        }
    }
}

/// The queue between the socket task (producer) and a [`Subscription`].
pub(crate) struct SubQueue {
    state: Mutex<QueueState>,
    waker: AtomicWaker,
}

struct QueueState {
    events: VecDeque<Event>,
    cap: usize,
    /// Events were dropped before `events.front()`: the consumer gets a gap
    /// from this `last` (and the newest epoch among the dropped) up to the front.
    dropped_before_front: Option<(u64, Option<String>)>,
    dropped_items: u64,
    /// `Some` once no more events will come; the inner value says why, if not
    /// because the consumer unsubscribed.
    end: Option<Option<ClientError>>,
}

impl QueueState {
    fn drop_oldest(&mut self) {
        let Some(ev) = self.events.pop_front() else {
            return;
        };
        let (before, epoch) = match ev {
            Event::Item { seq, .. } => {
                self.dropped_items += 1;
                (seq.saturating_sub(1), None)
            }
            Event::Gap { last, epoch, .. } => (last, epoch),
        };
        let pending = self.dropped_before_front.get_or_insert((before, None));
        if epoch.is_some() {
            pending.1 = epoch;
        }
    }

    fn pop(&mut self) -> Option<Event> {
        let Some((last, epoch)) = self.dropped_before_front.take() else {
            return self.events.pop_front();
        };
        match self.events.front() {
            Some(Event::Item { seq, .. }) => Some(Event::Gap {
                last,
                next: *seq,
                epoch,
            }),
            Some(Event::Gap { .. }) => match self.events.pop_front() {
                Some(Event::Gap {
                    next, epoch: newer, ..
                }) => Some(Event::Gap {
                    last,
                    next,
                    epoch: newer.or(epoch),
                }),
                other => other,
            },
            // Unreachable (a drop is always followed by a push), but harmless.
            None => None,
        }
    }
}

impl SubQueue {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(QueueState {
                events: VecDeque::new(),
                cap: cap.max(1),
                dropped_before_front: None,
                dropped_items: 0,
                end: None,
            }),
            waker: AtomicWaker::new(),
        }
    }

    /// Queues an event without ever waiting: a full queue drops its oldest.
    pub(crate) fn push(&self, ev: Event) {
        {
            let mut s = self.state.lock();
            if s.end.is_some() {
                return;
            }
            if s.events.len() >= s.cap {
                s.drop_oldest();
            }
            s.events.push_back(ev);
        }
        self.waker.wake();
    }

    /// No more events: the stream ends once the consumer has taken what is queued.
    pub(crate) fn end(&self, reason: Option<ClientError>) {
        {
            let mut s = self.state.lock();
            if s.end.is_none() {
                s.end = Some(reason);
            }
        }
        self.waker.wake();
    }

    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        for attempt in 0..2 {
            {
                let mut s = self.state.lock();
                if let Some(ev) = s.pop() {
                    return Poll::Ready(Some(ev));
                }
                if s.end.is_some() {
                    return Poll::Ready(None);
                }
            }
            if attempt == 0 {
                // Register, then look again: a push between the check and the
                // registration would otherwise be missed.
                self.waker.register(cx.waker());
            }
        }
        Poll::Pending
    }

    fn end_reason(&self) -> Option<ClientError> {
        self.state.lock().end.clone().flatten()
    }

    fn dropped_items(&self) -> u64 {
        self.state.lock().dropped_items
    }

    #[cfg(test)]
    pub(crate) fn try_pop(&self) -> Option<Event> {
        self.state.lock().pop()
    }
}

/// A live subscription to one topic: a [`Stream`] of [`Event`]s.
///
/// Survives reconnects: the client re-subscribes from the last seq it saw, so
/// the stream shows every seq once, in order, or a `Gap` where some are gone.
/// The stream ends when the client is closed or gives up (see
/// [`Subscription::end_reason`]), or if a re-subscribe is refused for good.
/// Dropping it unsubscribes.
pub struct Subscription {
    client: Client,
    sub_id: u64,
    cache: String,
    topic: String,
    queue: Arc<SubQueue>,
    last: u64,
    epoch: Option<String>,
    unsubscribed: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("cache", &self.cache)
            .field("topic", &self.topic)
            .field("last", &self.last)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        client: Client,
        sub_id: u64,
        cache: String,
        topic: String,
        queue: Arc<SubQueue>,
        last: u64,
        epoch: Option<String>,
    ) -> Self {
        Self {
            client,
            sub_id,
            cache,
            topic,
            queue,
            last,
            epoch,
            unsubscribed: false,
        }
    }

    pub fn cache(&self) -> &str {
        &self.cache
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The last seq this consumer has taken (or skipped past with a gap). With
    /// [`Subscription::epoch`], what to pass to
    /// [`Client::subscribe_from`] to carry on later, e.g. in another process.
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// The epoch [`Subscription::last_seq`] counts in, when known.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// Items this client dropped because the consumer fell behind (each
    /// covered by a `Gap`).
    pub fn dropped_items(&self) -> u64 {
        self.queue.dropped_items()
    }

    /// Why the stream ended, once it has: `Closed` (the client was closed, or
    /// the server closed for good, e.g. 4401 without a refreshed token),
    /// `Unauthenticated`, or the `Server` error refusing a re-subscribe.
    pub fn end_reason(&self) -> Option<ClientError> {
        self.queue.end_reason()
    }

    /// The next event; `None` once the stream has ended. (The same as
    /// `StreamExt::next`, without the import.)
    pub async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Unsubscribes and waits for the server's `ok`. Dropping the subscription
    /// does the same without waiting.
    pub async fn unsubscribe(mut self) -> Result<(), ClientError> {
        self.unsubscribed = true;
        let (tx, rx) = oneshot::channel();
        let sent = self.client.send_ctrl(Ctrl::Unsubscribe {
            sub_id: self.sub_id,
            key: (self.cache.clone(), self.topic.clone()),
            reply: Some(tx),
        });
        if sent.is_err() {
            // The client is gone, and with it the subscription.
            return Ok(());
        }
        match self.client.wait(rx).await {
            Err(ClientError::Closed { .. } | ClientError::Unauthenticated) => Ok(()),
            other => other,
        }
    }
}

impl Stream for Subscription {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        let polled = this.queue.poll_pop(cx);
        if let Poll::Ready(Some(ev)) = &polled {
            if let Event::Gap { last, next, epoch } = ev {
                match epoch {
                    Some(e) => this.epoch = Some(e.clone()),
                    None if next <= last => this.epoch = None,
                    None => {}
                }
            }
            this.last = ev.position();
        }
        polled
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.unsubscribed {
            let _ = self.client.send_ctrl(Ctrl::Unsubscribe {
                sub_id: self.sub_id,
                key: (
                    std::mem::take(&mut self.cache),
                    std::mem::take(&mut self.topic),
                ),
                reply: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64) -> Event {
        Event::Item {
            seq,
            value: Value::Text(format!("v{seq}")),
            from: "p".into(),
        }
    }

    fn gap(last: u64, next: u64) -> Event {
        Event::Gap {
            last,
            next,
            epoch: None,
        }
    }

    fn drain(q: &SubQueue) -> Vec<Event> {
        std::iter::from_fn(|| q.try_pop()).collect()
    }

    #[test]
    fn keeps_order_when_there_is_room() {
        let q = SubQueue::new(4);
        for s in 1..=4 {
            q.push(item(s));
        }
        assert_eq!(drain(&q), (1..=4).map(item).collect::<Vec<_>>());
        assert_eq!(q.dropped_items(), 0);
    }

    #[test]
    fn a_slow_consumer_loses_the_oldest_and_gets_an_exact_gap() {
        let q = SubQueue::new(3);
        for s in 1..=10 {
            q.push(item(s));
        }
        // Items 1..=7 were dropped; 8, 9, 10 remain.
        assert_eq!(drain(&q), vec![gap(0, 8), item(8), item(9), item(10)]);
        assert_eq!(q.dropped_items(), 7);
        // After catching up, no stale gap lingers.
        q.push(item(11));
        assert_eq!(drain(&q), vec![item(11)]);
    }

    #[test]
    fn dropped_gaps_merge_into_one() {
        let q = SubQueue::new(2);
        q.push(item(5));
        q.push(gap(5, 9));
        q.push(item(9));
        q.push(item(10)); // drops item 5 and gap(5, 9)
        assert_eq!(drain(&q), vec![gap(4, 9), item(9), item(10)]);

        let q = SubQueue::new(2);
        q.push(item(1));
        q.push(gap(1, 4));
        q.push(gap(4, 8)); // drops item 1: the front is now a gap, merged with it
        assert_eq!(drain(&q), vec![gap(0, 4), gap(4, 8)]);
    }

    #[test]
    fn a_dropped_epoch_change_is_not_lost() {
        let q = SubQueue::new(2);
        q.push(item(7));
        q.push(Event::Gap {
            last: 7,
            next: 1,
            epoch: Some("new".into()),
        });
        q.push(item(1));
        q.push(item(2)); // drops item 7 and the epoch gap
        assert_eq!(
            drain(&q),
            vec![
                Event::Gap {
                    last: 6,
                    next: 1,
                    epoch: Some("new".into())
                },
                item(1),
                item(2)
            ]
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let q = SubQueue::new(16);
        for s in 1..=100_000 {
            q.push(item(s));
        }
        assert_eq!(q.state.lock().events.len(), 16);
        let got = drain(&q);
        assert_eq!(got[0], gap(0, 99_985));
        assert_eq!(got.len(), 17);
    }

    #[test]
    fn ends_after_the_queued_events() {
        let q = SubQueue::new(4);
        q.push(item(1));
        q.end(Some(ClientError::Closed {
            code: 1000,
            reason: "bye".into(),
        }));
        q.push(item(2));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(q.poll_pop(&mut cx), Poll::Ready(Some(item(1))));
        assert_eq!(q.poll_pop(&mut cx), Poll::Ready(None));
        assert!(matches!(
            q.end_reason(),
            Some(ClientError::Closed { code: 1000, .. })
        ));
    }
}
