//! Per-subscription sequence tracking in the socket task.
//!
//! The server already promises "each seq once, in order, or a gap", but the
//! client re-subscribes after every reconnect and a bug anywhere (server,
//! proxy, this client) should cost a visible gap, never a silent hole or a
//! duplicate. So every item and gap passes through a [`Tracker`] that:
//! - drops anything at or below the last seq it let through;
//! - turns a jump in seq into a [`GapInfo`] the consumer sees;
//! - remembers the position (`last`, `epoch`) to resume from on reconnect;
//! - notices when a resume landed in a new epoch (the topic's history was
//!   lost, e.g. the server restarted) and reports that as one gap carrying the
//!   new epoch, after which the count starts over.

/// A gap to hand to the consumer: items after `last` and before `next` will not
/// arrive. `epoch` is the new epoch when the topic's sequence restarted (then
/// `last` counts in the old sequence and `next` in the new one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GapInfo {
    pub last: u64,
    pub next: u64,
    pub epoch: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ItemVerdict {
    /// A duplicate, or an item before the subscription was confirmed.
    Drop,
    /// Deliver, after this gap if there is one.
    Deliver(Option<GapInfo>),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Tracker {
    /// Last seq let through (or covered by a gap); `None` until a fresh
    /// subscription's `ok` gives the starting point.
    last: Option<u64>,
    epoch: Option<String>,
    /// Set when a resume landed in a new epoch: the old sequence's last seq,
    /// reported in the gap that precedes the first event of the new epoch.
    reset_from: Option<u64>,
}

impl Tracker {
    /// A subscription that wants only new items: the `ok` sets the start.
    pub(crate) fn fresh() -> Self {
        Self::default()
    }

    /// A subscription that resumes after `after` in `epoch` (the current epoch when `None`).
    pub(crate) fn resuming(after: u64, epoch: Option<String>) -> Self {
        Self {
            last: Some(after),
            epoch,
            reset_from: None,
        }
    }

    /// What to put in `resume_after` / `epoch` of a (re)`sub`; `None` for a
    /// fresh subscription that was never confirmed.
    pub(crate) fn resume_point(&self) -> Option<(u64, Option<String>)> {
        self.last.map(|last| (last, self.epoch.clone()))
    }

    #[cfg(test)]
    pub(crate) fn last(&self) -> Option<u64> {
        self.last
    }

    #[cfg(test)]
    pub(crate) fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The `ok` of a `sub`, with the topic's current seq and epoch.
    pub(crate) fn on_ok(&mut self, seq: u64, epoch: Option<String>) {
        match self.last {
            None => {
                self.last = Some(seq);
                self.epoch = epoch;
            }
            Some(last) => {
                let changed = matches!((&self.epoch, &epoch), (Some(a), Some(b)) if a != b);
                if changed {
                    // Everything retained in the new epoch is new to us; the
                    // server replays it (after a gap) since we resumed.
                    self.reset_from = Some(self.reset_from.unwrap_or(last));
                    self.last = Some(0);
                }
                if epoch.is_some() {
                    self.epoch = epoch;
                }
            }
        }
    }

    pub(crate) fn on_item(&mut self, seq: u64) -> ItemVerdict {
        let Some(last) = self.last else {
            return ItemVerdict::Drop;
        };
        if let Some(old) = self.reset_from.take() {
            self.last = Some(seq);
            return ItemVerdict::Deliver(Some(GapInfo {
                last: old,
                next: seq,
                epoch: self.epoch.clone(),
            }));
        }
        if seq <= last {
            return ItemVerdict::Drop;
        }
        self.last = Some(seq);
        ItemVerdict::Deliver((seq > last + 1).then_some(GapInfo {
            last,
            next: seq,
            epoch: None,
        }))
    }

    /// A `gap` from the server; returns the gap to hand on, if any is left
    /// after what the consumer already has.
    pub(crate) fn on_gap(
        &mut self,
        gap_last: u64,
        next: u64,
        epoch: Option<String>,
    ) -> Option<GapInfo> {
        let last = self.last?;
        if epoch.is_some() && epoch != self.epoch {
            // The server names the new epoch: the sequence restarted.
            self.reset_from = None;
            self.epoch = epoch.clone();
            self.last = Some(next.saturating_sub(1));
            return Some(GapInfo { last, next, epoch });
        }
        if let Some(old) = self.reset_from.take() {
            self.last = Some(next.saturating_sub(1));
            return Some(GapInfo {
                last: old,
                next,
                epoch: self.epoch.clone(),
            });
        }
        if next <= gap_last {
            // The sequence restarted under a live subscription; the server does
            // not say which epoch it is now, so the next resume must not name one.
            self.epoch = None;
            self.last = Some(next.saturating_sub(1));
            return Some(GapInfo {
                last,
                next,
                epoch: None,
            });
        }
        if next <= last.saturating_add(1) {
            return None;
        }
        self.last = Some(next - 1);
        Some(GapInfo {
            last,
            next,
            epoch: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(last: u64, next: u64) -> Option<GapInfo> {
        Some(GapInfo {
            last,
            next,
            epoch: None,
        })
    }

    #[test]
    fn a_gap_naming_a_new_epoch_restarts_the_count() {
        let mut t = Tracker::fresh();
        t.on_ok(40, Some("old".into()));
        // The new sequence is already past the old last seq: only the epoch tells.
        assert_eq!(
            t.on_gap(40, 60, Some("new".into())),
            Some(GapInfo {
                last: 40,
                next: 60,
                epoch: Some("new".into())
            })
        );
        assert_eq!(t.resume_point(), Some((59, Some("new".into()))));
        assert_eq!(t.on_item(60), ItemVerdict::Deliver(None));
    }

    #[test]
    fn fresh_waits_for_ok_then_drops_duplicates() {
        let mut t = Tracker::fresh();
        assert_eq!(t.on_item(1), ItemVerdict::Drop);
        assert_eq!(t.resume_point(), None);
        t.on_ok(5, Some("e".into()));
        assert_eq!(t.on_item(5), ItemVerdict::Drop);
        assert_eq!(t.on_item(6), ItemVerdict::Deliver(None));
        assert_eq!(t.on_item(6), ItemVerdict::Drop);
        assert_eq!(t.on_item(3), ItemVerdict::Drop);
        assert_eq!(t.on_item(9), ItemVerdict::Deliver(gap(6, 9)));
        assert_eq!(t.resume_point(), Some((9, Some("e".into()))));
    }

    #[test]
    fn server_gaps_are_trimmed_to_what_is_missing() {
        let mut t = Tracker::resuming(10, Some("e".into()));
        t.on_ok(20, Some("e".into()));
        assert_eq!(t.on_gap(10, 11, None), None);
        assert_eq!(t.on_gap(8, 15, None), gap(10, 15));
        assert_eq!(t.last(), Some(14));
        assert_eq!(t.on_gap(10, 12, None), None);
        assert_eq!(t.on_item(14), ItemVerdict::Drop);
        assert_eq!(t.on_item(15), ItemVerdict::Deliver(None));
    }

    #[test]
    fn resume_into_a_new_epoch_reports_one_gap_and_restarts_the_count() {
        let mut t = Tracker::resuming(40, Some("old".into()));
        t.on_ok(3, Some("new".into()));
        assert_eq!(t.resume_point(), Some((0, Some("new".into()))));
        // The server's gap: last = what we resumed after, next = first retained.
        assert_eq!(
            t.on_gap(40, 1, None),
            Some(GapInfo {
                last: 40,
                next: 1,
                epoch: Some("new".into())
            })
        );
        assert_eq!(t.on_item(1), ItemVerdict::Deliver(None));
        assert_eq!(t.on_item(2), ItemVerdict::Deliver(None));
    }

    #[test]
    fn new_epoch_without_a_gap_still_reports_the_reset() {
        let mut t = Tracker::resuming(40, Some("old".into()));
        t.on_ok(0, Some("new".into()));
        // Reconnecting again before any event keeps the pending reset.
        t.on_ok(0, Some("new".into()));
        assert_eq!(
            t.on_item(1),
            ItemVerdict::Deliver(Some(GapInfo {
                last: 40,
                next: 1,
                epoch: Some("new".into())
            }))
        );
        assert_eq!(t.on_item(1), ItemVerdict::Drop);
    }

    #[test]
    fn restart_under_a_live_subscription() {
        let mut t = Tracker::resuming(0, Some("e".into()));
        t.on_ok(0, Some("e".into()));
        for s in 1..=5 {
            assert_eq!(t.on_item(s), ItemVerdict::Deliver(None));
        }
        assert_eq!(t.on_gap(5, 1, None), gap(5, 1));
        assert_eq!(t.epoch(), None);
        assert_eq!(t.on_item(1), ItemVerdict::Deliver(None));
        assert_eq!(t.resume_point(), Some((1, None)));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut t = Tracker::resuming(u64::MAX, None);
        t.on_ok(0, None);
        assert_eq!(t.on_item(u64::MAX), ItemVerdict::Drop);
        assert_eq!(t.on_gap(u64::MAX, u64::MAX, None), gap(u64::MAX, u64::MAX));
        let mut t = Tracker::resuming(0, None);
        assert_eq!(t.on_gap(0, 0, None), gap(0, 0));
        assert_eq!(t.on_item(0), ItemVerdict::Drop);
    }
}
