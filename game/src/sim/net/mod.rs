//! State on the wire: per-tick deltas built from change detection, keyframes
//! every second, and the static match info. The schema is in docs/GAME.md.
//!
//! The encoders keep, per squirrel, what clients were last sent
//! ([`SentSquirrel`]): positions are delta-coded against it, and a squirrel
//! whose quantised state equals it is not sent at all. Keyframes are written
//! from the same replica, so a keyframe is exactly the state a client has
//! after applying every delta up to the same tick.

pub mod delta;
pub mod info;
pub mod keyframe;
pub mod wire;

use bevy_ecs::prelude::*;
use bytes::{Bytes, BytesMut};

use super::msgpack::{put_array_len, put_map_len, put_str, put_uint};
use super::params::Rules;
use super::resources::{Clock, Phase};
use super::rules::TickSet;

/// Adds the encoders: the delta every tick, then the keyframe when due.
pub fn plugin(schedule: &mut Schedule) {
    schedule.add_systems(
        (
            delta::encode_delta,
            keyframe::encode_keyframe.run_if(keyframe_due),
        )
            .chain()
            .in_set(TickSet::Net),
    );
}

/// Run condition: this tick carries a keyframe (tick 1, then every `hz` ticks).
pub fn keyframe_due(clock: Res<Clock>, rules: Res<Rules>) -> bool {
    clock
        .tick
        .wrapping_sub(1)
        .is_multiple_of(rules.keyframe_every.max(1))
}

/// What clients were last told about a squirrel: the base its next delta is
/// coded against.
#[derive(Component, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentSquirrel {
    /// The squirrel was announced (in an `"a"` record).
    pub sent: bool,
    /// Quantised x (1/16 tile).
    pub x: u16,
    /// Quantised y (1/16 tile).
    pub y: u16,
    /// Status word.
    pub status: u16,
    /// Player score.
    pub score: u32,
    /// Acked input seq.
    pub ack: u32,
}

/// One key of a state message being built: its content and element count.
#[derive(Debug)]
pub(crate) struct Section {
    key: &'static str,
    buf: Vec<u8>,
    n: u32,
    scalar: bool,
}

impl Section {
    fn new(key: &'static str) -> Self {
        Section {
            key,
            buf: Vec::with_capacity(256),
            n: 0,
            scalar: false,
        }
    }
    fn scalar(key: &'static str) -> Self {
        Section {
            scalar: true,
            ..Section::new(key)
        }
    }
    fn clear(&mut self) {
        self.buf.clear();
        self.n = 0;
    }
    fn present(&self) -> bool {
        self.n > 0 || (self.scalar && !self.buf.is_empty())
    }
    /// Appends one uint element.
    #[inline]
    pub(crate) fn uint(&mut self, v: u64) {
        put_uint(&mut self.buf, v);
        self.n += 1;
    }
    /// Appends one signed element.
    #[inline]
    pub(crate) fn int(&mut self, v: i64) {
        super::msgpack::put_int(&mut self.buf, v);
        self.n += 1;
    }
    /// Starts one compound element; the caller writes it into the buffer.
    #[inline]
    pub(crate) fn element(&mut self) -> &mut Vec<u8> {
        self.n += 1;
        &mut self.buf
    }
    /// Sets a scalar section's value.
    pub(crate) fn set_scalar(&mut self) -> &mut Vec<u8> {
        self.buf.clear();
        &mut self.buf
    }
}

/// The sections of a state message, in the order they are written.
#[derive(Debug)]
pub(crate) struct Sections {
    pub phase: Section,
    pub winner: Section,
    pub removed: Section,
    pub acorns_removed: Section,
    pub added: Section,
    pub acorns_added: Section,
    pub moves: Section,
    pub moves_large: Section,
    pub status: Section,
    pub scores: Section,
    pub acks: Section,
    pub team_scores: Section,
    pub events: Section,
}

impl Sections {
    fn new() -> Self {
        use wire::*;
        Sections {
            phase: Section::new(KEY_PHASE),
            winner: Section::scalar(KEY_WINNER),
            removed: Section::new(KEY_REMOVED),
            acorns_removed: Section::new(KEY_ACORNS_REMOVED),
            added: Section::new(KEY_ADDED),
            acorns_added: Section::new(KEY_ACORNS_ADDED),
            moves: Section::new(KEY_MOVES),
            moves_large: Section::new(KEY_MOVES_LARGE),
            status: Section::new(KEY_STATUS),
            scores: Section::new(KEY_SCORES),
            acks: Section::new(KEY_ACKS),
            team_scores: Section::new(KEY_TEAM_SCORES),
            events: Section::new(KEY_EVENTS),
        }
    }

    fn all(&self) -> [&Section; 13] {
        [
            &self.phase,
            &self.winner,
            &self.removed,
            &self.acorns_removed,
            &self.added,
            &self.acorns_added,
            &self.moves,
            &self.moves_large,
            &self.status,
            &self.scores,
            &self.acks,
            &self.team_scores,
            &self.events,
        ]
    }

    /// Clears every section but the events (which a keyframe of the same tick reuses).
    fn clear_state(&mut self) {
        for s in [
            &mut self.phase,
            &mut self.winner,
            &mut self.removed,
            &mut self.acorns_removed,
            &mut self.added,
            &mut self.acorns_added,
            &mut self.moves,
            &mut self.moves_large,
            &mut self.status,
            &mut self.scores,
            &mut self.acks,
            &mut self.team_scores,
        ] {
            s.clear();
        }
    }
}

/// Size of the chunks the encoded messages are cut from.
const ARENA_CHUNK: usize = 64 * 1024;

/// Encoder state: the replica of match-wide values, scratch buffers and the
/// messages of the last tick.
#[derive(Resource, Debug)]
pub struct NetState {
    arena: BytesMut,
    body: Vec<u8>,
    pub(crate) sections: Sections,
    /// Player ids announced to clients.
    sent_players: Vec<bool>,
    /// Acorn ids announced to clients.
    sent_acorns: Vec<bool>,
    pub(crate) sent_phase: (Phase, u32),
    pub(crate) sent_scores: Vec<u32>,
    /// The delta of the last tick.
    pub delta: Option<Bytes>,
    /// The keyframe of the last tick, if it had one.
    pub keyframe: Option<Bytes>,
    /// Entities in the last delta.
    pub changed: u32,
}

impl NetState {
    /// Encoder state for a match.
    pub fn new(teams: usize, max_players: u16) -> Self {
        NetState {
            arena: BytesMut::with_capacity(ARENA_CHUNK),
            body: Vec::with_capacity(4096),
            sections: Sections::new(),
            sent_players: vec![false; max_players as usize],
            sent_acorns: Vec::new(),
            sent_phase: (Phase::Lobby, 0),
            sent_scores: vec![0; teams],
            delta: None,
            keyframe: None,
            changed: 0,
        }
    }

    pub(crate) fn set_player_sent(&mut self, id: u16, sent: bool) -> bool {
        match self.sent_players.get_mut(id as usize) {
            Some(s) => std::mem::replace(s, sent),
            None => false,
        }
    }

    pub(crate) fn set_acorn_sent(&mut self, id: u16, sent: bool) -> bool {
        let i = id as usize;
        if i >= self.sent_acorns.len() {
            if !sent {
                return false;
            }
            self.sent_acorns.resize(i + 1, false);
        }
        std::mem::replace(&mut self.sent_acorns[i], sent)
    }

    pub(crate) fn acorn_sent(&self, id: u16) -> bool {
        self.sent_acorns.get(id as usize).copied().unwrap_or(false)
    }

    /// Writes `{head: tick, <present sections>}` and cuts it from the arena.
    pub(crate) fn assemble(&mut self, head: &'static str, tick: u32) -> Bytes {
        let body = &mut self.body;
        body.clear();
        let sections = self.sections.all();
        let present = sections.iter().filter(|s| s.present()).count() as u32;
        put_map_len(body, present + 1);
        put_str(body, head);
        put_uint(body, tick as u64);
        for s in sections.iter().filter(|s| s.present()) {
            put_str(body, s.key);
            if !s.scalar {
                put_array_len(body, s.n);
            }
            body.extend_from_slice(&s.buf);
        }
        if self.arena.capacity() - self.arena.len() < body.len() {
            self.arena.reserve(body.len().max(ARENA_CHUNK));
        }
        self.arena.extend_from_slice(body);
        self.arena.split().freeze()
    }
}
