//! Per-worker measurement state and the process / server resource readings.
//!
//! Every worker task owns its own [`PhaseStats`] per phase (no lock, no shared
//! histogram); they are merged once the run is over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Bytes at the start of every published value: send time (ns since the run's
/// origin), sequence number, phase index. The rest is padding.
pub const STAMP_LEN: usize = 17;

/// Writes the stamp into the first [`STAMP_LEN`] bytes of `value`.
pub fn stamp(value: &mut [u8], origin: Instant, seq: u64, phase: u8) {
    let ns = origin.elapsed().as_nanos() as u64;
    value[0..8].copy_from_slice(&ns.to_le_bytes());
    value[8..16].copy_from_slice(&seq.to_le_bytes());
    value[16] = phase;
}

/// What one worker measured during one phase.
pub struct PhaseStats {
    /// publish → receive latency, nanoseconds.
    pub latency_ns: Histogram<u64>,
    pub deliveries: u64,
}

impl PhaseStats {
    pub fn new() -> Self {
        Self {
            // 1 ns .. 100 s at 3 significant digits.
            latency_ns: Histogram::new_with_bounds(1, 100_000_000_000, 3)
                .expect("valid histogram bounds"),
            deliveries: 0,
        }
    }

    pub fn merge(&mut self, other: &PhaseStats) {
        self.latency_ns
            .add(&other.latency_ns)
            .expect("histograms with the same bounds");
        self.deliveries += other.deliveries;
    }
}

/// Rare events, counted per phase (the phase going on when they happened).
#[derive(Default, Clone, Copy)]
pub struct PhaseEvents {
    pub gaps: u64,
    pub gap_missed: u64,
    pub errors: u64,
    pub closed: u64,
}

/// Everything one worker saw; returned when it stops.
pub struct WorkerStats {
    pub phases: Vec<PhaseStats>,
    /// Per phase: gaps, errors and closes seen while that phase was going on.
    pub events: Vec<PhaseEvents>,
    /// The phase going on now (set by the worker from the coordinator's clock).
    pub now_phase: usize,
    /// Deliveries whose stamp was unreadable (too short, unknown phase).
    pub malformed: u64,
    /// Items reported missing by the server (`gap`: next - last - 1 summed).
    pub gap_missed: u64,
    pub gaps: u64,
    /// `err` messages (Acorn) or `-ERR` lines (NATS).
    pub errors: u64,
    pub first_error: Option<String>,
    /// Connections that closed or failed while the run was going on.
    pub closed: u64,
    pub first_close: Option<String>,
}

impl WorkerStats {
    pub fn new(phases: usize) -> Self {
        Self {
            phases: (0..phases).map(|_| PhaseStats::new()).collect(),
            events: vec![PhaseEvents::default(); phases],
            now_phase: 0,
            malformed: 0,
            gap_missed: 0,
            gaps: 0,
            errors: 0,
            first_error: None,
            closed: 0,
            first_close: None,
        }
    }

    /// Records one delivered value (its stamp) received at `now_ns`.
    #[inline]
    pub fn record(&mut self, value: &[u8], now_ns: u64) {
        if value.len() < STAMP_LEN {
            self.malformed += 1;
            return;
        }
        let sent = u64::from_le_bytes(value[0..8].try_into().expect("8 bytes"));
        let phase = value[16] as usize;
        match self.phases.get_mut(phase) {
            Some(p) => {
                p.deliveries += 1;
                p.latency_ns
                    .saturating_record(now_ns.saturating_sub(sent).max(1));
            }
            None => self.malformed += 1,
        }
    }

    fn event(&mut self) -> Option<&mut PhaseEvents> {
        self.events.get_mut(self.now_phase)
    }

    pub fn gap(&mut self, missed: u64) {
        self.gaps += 1;
        self.gap_missed += missed;
        if let Some(e) = self.event() {
            e.gaps += 1;
            e.gap_missed += missed;
        }
    }

    pub fn error(&mut self, msg: impl FnOnce() -> String) {
        self.errors += 1;
        if let Some(e) = self.event() {
            e.errors += 1;
        }
        if self.first_error.is_none() {
            self.first_error = Some(msg());
        }
    }

    pub fn close(&mut self, why: impl FnOnce() -> String) {
        self.closed += 1;
        if let Some(e) = self.event() {
            e.closed += 1;
        }
        if self.first_close.is_none() {
            self.first_close = Some(why());
        }
    }

    pub fn merge(&mut self, other: &WorkerStats) {
        for (a, b) in self.phases.iter_mut().zip(&other.phases) {
            a.merge(b);
        }
        for (a, b) in self.events.iter_mut().zip(&other.events) {
            a.gaps += b.gaps;
            a.gap_missed += b.gap_missed;
            a.errors += b.errors;
            a.closed += b.closed;
        }
        self.malformed += other.malformed;
        self.gap_missed += other.gap_missed;
        self.gaps += other.gaps;
        self.errors += other.errors;
        self.closed += other.closed;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        if self.first_close.is_none() {
            self.first_close.clone_from(&other.first_close);
        }
    }
}

/// A counter a worker bumps once per frame (its own cache line, so workers
/// never contend); the coordinator sums them to see when a phase has drained.
#[repr(align(128))]
#[derive(Default)]
pub struct Progress(AtomicU64);

impl Progress {
    #[inline]
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// CPU seconds the whole machine has spent busy (everything but idle and iowait), from /proc/stat.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Resident set size in KiB (VmRSS from /proc/PID/status).
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; failure leaves the old limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_phase_and_rejects_short_values() {
        let origin = Instant::now();
        let mut w = WorkerStats::new(2);
        let mut v = [0u8; 64];
        stamp(&mut v, origin, 7, 1);
        w.record(&v, u64::MAX / 2);
        w.record(&v[..10], 0);
        v[16] = 9;
        w.record(&v, 0);
        assert_eq!(w.phases[1].deliveries, 1);
        assert_eq!(w.phases[0].deliveries, 0);
        assert_eq!(w.malformed, 2);
    }

    #[test]
    fn reads_own_process() {
        assert!(cpu_seconds("self").is_some());
        assert!(rss_kib("self").unwrap() > 0);
        assert!(machine_busy_seconds().unwrap() > 0.0);
    }
}
