//! Player inputs: strict decoding, the per-player latest-input buffer and the
//! rejection counters.
//!
//! An input is a MessagePack map (at most [`MAX_INPUT_BYTES`] bytes):
//!
//! | key    | type                          | required | meaning |
//! |--------|-------------------------------|----------|---------|
//! | `seq`  | uint, 1..=2³²-1               | yes      | strictly increasing per player; echoed back in deltas (`"q"`) once applied |
//! | `dir`  | array of exactly 2 numbers    | no (`[0,0]`) | wanted direction `[x, y]` (y down); longer than 1 is scaled to 1, below 0.01 is 0 |
//! | `dash` | bool                          | no (`false`) | start a dash (needs a charge) |
//!
//! Anything else is rejected and counted: unknown keys, duplicate keys, other
//! types, NaN or infinite numbers, trailing bytes, a `seq` not above the last
//! accepted one, more than [`MAX_INPUTS_PER_TICK`] inputs in one tick, and a
//! dash with no charge. A rejected input changes nothing.

use bevy_ecs::prelude::Resource;
use serde::Serialize;

use super::components::{PlayerId, Vec2};
use super::msgpack::{ReadError, Reader};
use super::params::{MAX_INPUTS_PER_TICK, MAX_INPUT_BYTES};

/// A decoded, validated input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Input {
    /// The client's sequence number.
    pub seq: u32,
    /// Wanted direction, length 0..=1.
    pub dir: Vec2,
    /// Start a dash.
    pub dash: bool,
}

/// Why an input was rejected. Every rejection is counted (see [`InputStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum InputError {
    /// Longer than [`MAX_INPUT_BYTES`].
    #[error("input is larger than {MAX_INPUT_BYTES} bytes")]
    TooLarge,
    /// Not a complete MessagePack map, trailing bytes, or a duplicate key.
    #[error("input is not a single well-formed MessagePack map")]
    Malformed,
    /// A key other than `seq`, `dir`, `dash`.
    #[error("input has an unknown field")]
    UnknownField,
    /// A known key with a value of the wrong type (or `dir` not of length 2).
    #[error("input field has the wrong type")]
    WrongType,
    /// NaN or infinite direction, or `seq` outside 1..=2³²-1.
    #[error("input field value is out of range")]
    BadValue,
    /// No `seq`.
    #[error("input has no seq")]
    MissingSeq,
    /// `seq` not greater than the last accepted one.
    #[error("input seq is not greater than the last accepted one")]
    StaleSeq,
    /// More than [`MAX_INPUTS_PER_TICK`] inputs from this player in one tick.
    #[error("too many inputs in one tick")]
    RateLimited,
    /// `dash: true` with no dash charge.
    #[error("dash requested without a charge")]
    NoCharges,
    /// The player is not (or no longer) in the match.
    #[error("no such player in this match")]
    UnknownPlayer,
    /// The match has ended.
    #[error("the match has ended")]
    MatchEnded,
}

impl InputError {
    /// Every reason, in counter order.
    pub const ALL: [InputError; 11] = [
        InputError::TooLarge,
        InputError::Malformed,
        InputError::UnknownField,
        InputError::WrongType,
        InputError::BadValue,
        InputError::MissingSeq,
        InputError::StaleSeq,
        InputError::RateLimited,
        InputError::NoCharges,
        InputError::UnknownPlayer,
        InputError::MatchEnded,
    ];

    /// A short snake_case name, for metrics labels.
    pub fn reason(self) -> &'static str {
        match self {
            InputError::TooLarge => "too_large",
            InputError::Malformed => "malformed",
            InputError::UnknownField => "unknown_field",
            InputError::WrongType => "wrong_type",
            InputError::BadValue => "bad_value",
            InputError::MissingSeq => "missing_seq",
            InputError::StaleSeq => "stale_seq",
            InputError::RateLimited => "rate_limited",
            InputError::NoCharges => "no_charges",
            InputError::UnknownPlayer => "unknown_player",
            InputError::MatchEnded => "match_ended",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<ReadError> for InputError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Malformed => InputError::Malformed,
            ReadError::WrongType => InputError::WrongType,
        }
    }
}

/// Decodes and validates one input message (stateless checks only: the
/// per-player checks are in [`InputBuffer::accept`]).
pub fn decode(bytes: &[u8]) -> Result<Input, InputError> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(InputError::TooLarge);
    }
    let mut r = Reader::new(bytes);
    let entries = r.map_len().map_err(|e| match e {
        ReadError::WrongType => InputError::Malformed,
        e => e.into(),
    })?;
    let mut seq: Option<u32> = None;
    let mut dir: Option<Vec2> = None;
    let mut dash: Option<bool> = None;
    for _ in 0..entries {
        let key = r.str(8).map_err(|e| match e {
            ReadError::WrongType => InputError::UnknownField,
            e => e.into(),
        })?;
        match key {
            "seq" => {
                if seq.is_some() {
                    return Err(InputError::Malformed);
                }
                let v = r.int()?;
                if !(1..=u32::MAX as i128).contains(&v) {
                    return Err(InputError::BadValue);
                }
                seq = Some(v as u32);
            }
            "dir" => {
                if dir.is_some() {
                    return Err(InputError::Malformed);
                }
                if r.array_len()? != 2 {
                    return Err(InputError::WrongType);
                }
                let x = r.number()?;
                let y = r.number()?;
                dir = Some(normalise(x, y)?);
            }
            "dash" => {
                if dash.is_some() {
                    return Err(InputError::Malformed);
                }
                dash = Some(r.bool()?);
            }
            _ => return Err(InputError::UnknownField),
        }
    }
    if !r.is_empty() {
        return Err(InputError::Malformed);
    }
    Ok(Input {
        seq: seq.ok_or(InputError::MissingSeq)?,
        dir: dir.unwrap_or(Vec2::ZERO),
        dash: dash.unwrap_or(false),
    })
}

/// Encodes an input message (what a client sends): `{"seq", "dir", "dash"}`,
/// with `dir` as two float32 and `dash` only when true.
pub fn encode(input: &Input) -> Vec<u8> {
    use super::msgpack::{put_array_len, put_bool, put_f32, put_map_len, put_str, put_uint};
    let mut out = Vec::with_capacity(32);
    put_map_len(&mut out, 2 + input.dash as u32);
    put_str(&mut out, "seq");
    put_uint(&mut out, input.seq as u64);
    put_str(&mut out, "dir");
    put_array_len(&mut out, 2);
    put_f32(&mut out, input.dir.x);
    put_f32(&mut out, input.dir.y);
    if input.dash {
        put_str(&mut out, "dash");
        put_bool(&mut out, true);
    }
    out
}

/// Clamps a direction to length ≤ 1; tiny ones become zero; NaN/inf are rejected.
fn normalise(x: f64, y: f64) -> Result<Vec2, InputError> {
    if !x.is_finite() || !y.is_finite() {
        return Err(InputError::BadValue);
    }
    let len = x.hypot(y);
    if len < 0.01 {
        return Ok(Vec2::ZERO);
    }
    let k = if len > 1.0 { 1.0 / len } else { 1.0 };
    Ok(Vec2::new((x * k) as f32, (y * k) as f32))
}

/// One player's slot in the input buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct InputSlot {
    /// Highest seq accepted so far.
    pub last_seq: u32,
    /// Inputs (valid or not) received this tick.
    pub this_tick: u8,
    /// An accepted input waits to be applied.
    pub fresh: bool,
    /// The latest accepted direction.
    pub dir: Vec2,
    /// A dash was requested by any input accepted this tick.
    pub dash: bool,
    /// Inputs rejected for this player, in total.
    pub rejected: u32,
    /// Set while the slot is on the dirty list.
    listed: bool,
}

/// The latest input of each player, waiting for the next tick.
#[derive(Resource, Debug, Default)]
pub struct InputBuffer {
    slots: Vec<InputSlot>,
    dirty: Vec<PlayerId>,
}

impl InputBuffer {
    /// A buffer for player ids `0..max_players`.
    pub fn new(max_players: u16) -> Self {
        InputBuffer {
            slots: vec![InputSlot::default(); max_players as usize],
            dirty: Vec::with_capacity(max_players as usize),
        }
    }

    /// The slot of a player.
    pub fn slot(&self, player: PlayerId) -> Option<&InputSlot> {
        self.slots.get(player.0 as usize)
    }

    /// Counts an arriving message against the per-tick limit; `Err` once over it.
    pub fn admit(&mut self, player: PlayerId) -> Result<(), InputError> {
        let slot = self
            .slots
            .get_mut(player.0 as usize)
            .ok_or(InputError::UnknownPlayer)?;
        if !slot.listed {
            slot.listed = true;
            self.dirty.push(player);
        }
        if slot.this_tick >= MAX_INPUTS_PER_TICK {
            return Err(InputError::RateLimited);
        }
        slot.this_tick += 1;
        Ok(())
    }

    /// Applies the per-player checks (seq order, dash charges) and stores the
    /// input as this player's latest. `charges` is the squirrel's dash charges.
    pub fn accept(
        &mut self,
        player: PlayerId,
        input: Input,
        charges: u8,
    ) -> Result<(), InputError> {
        let slot = self
            .slots
            .get_mut(player.0 as usize)
            .ok_or(InputError::UnknownPlayer)?;
        if input.seq <= slot.last_seq {
            return Err(InputError::StaleSeq);
        }
        if input.dash && charges == 0 {
            return Err(InputError::NoCharges);
        }
        slot.last_seq = input.seq;
        slot.dir = input.dir;
        slot.dash |= input.dash;
        slot.fresh = true;
        Ok(())
    }

    /// Counts a rejection against a player.
    pub fn note_rejection(&mut self, player: PlayerId) {
        if let Some(slot) = self.slots.get_mut(player.0 as usize) {
            slot.rejected = slot.rejected.saturating_add(1);
        }
    }

    /// Clears a slot for a new player.
    pub fn reset(&mut self, player: PlayerId) {
        if let Some(slot) = self.slots.get_mut(player.0 as usize) {
            let listed = slot.listed;
            *slot = InputSlot {
                listed,
                ..InputSlot::default()
            };
        }
    }

    /// Calls `f` for each player whose slot saw traffic since the last call,
    /// with the slot if it holds a fresh input; resets the per-tick counters.
    pub fn drain(&mut self, mut f: impl FnMut(PlayerId, Option<(Vec2, bool, u32)>)) {
        for player in self.dirty.drain(..) {
            let Some(slot) = self.slots.get_mut(player.0 as usize) else {
                continue;
            };
            slot.listed = false;
            slot.this_tick = 0;
            if slot.fresh {
                slot.fresh = false;
                let dash = std::mem::take(&mut slot.dash);
                f(player, Some((slot.dir, dash, slot.last_seq)));
            } else {
                f(player, None);
            }
        }
    }
}

/// Input counters of a match.
#[derive(Resource, Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InputStats {
    /// Inputs accepted.
    pub accepted: u64,
    /// Inputs rejected, indexed like [`InputError::ALL`].
    pub rejected: [u64; 11],
}

impl InputStats {
    /// Counts one rejection.
    pub fn reject(&mut self, e: InputError) {
        self.rejected[e.index()] += 1;
    }
    /// Rejections for one reason.
    pub fn rejected_for(&self, e: InputError) -> u64 {
        self.rejected[e.index()]
    }
    /// All rejections.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
    /// `(reason, count)` for every reason.
    pub fn by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        InputError::ALL
            .iter()
            .map(|e| (e.reason(), self.rejected[e.index()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::msgpack::*;

    type Field<'a> = (&'a str, &'a dyn Fn(&mut Vec<u8>));

    fn enc(fields: &[Field]) -> Vec<u8> {
        let mut v = Vec::new();
        put_map_len(&mut v, fields.len() as u32);
        for (k, f) in fields {
            put_str(&mut v, k);
            f(&mut v);
        }
        v
    }

    fn dir(x: f64, y: f64) -> impl Fn(&mut Vec<u8>) {
        move |v: &mut Vec<u8>| {
            put_array_len(v, 2);
            v.push(0xcb);
            v.extend_from_slice(&x.to_be_bytes());
            v.push(0xcb);
            v.extend_from_slice(&y.to_be_bytes());
        }
    }

    #[test]
    fn decodes_a_full_input() {
        let m = enc(&[
            ("seq", &|v| put_uint(v, 42)),
            ("dir", &dir(3.0, 4.0)),
            ("dash", &|v| put_bool(v, true)),
        ]);
        let i = decode(&m).expect("valid");
        assert_eq!(i.seq, 42);
        assert!((i.dir.x - 0.6).abs() < 1e-6 && (i.dir.y - 0.8).abs() < 1e-6);
        assert!(i.dash);
        // Integers and float32 are numbers too; short vectors keep their length.
        let m = enc(&[
            ("dir", &|v| {
                put_array_len(v, 2);
                put_int(v, 0);
                put_f32(v, -0.5);
            }),
            ("seq", &|v| put_uint(v, 1)),
        ]);
        let i = decode(&m).expect("valid");
        assert_eq!(i.dir, Vec2::new(0.0, -0.5));
        assert!(!i.dash);
    }

    #[test]
    fn rejects_hostile_shapes() {
        let seq = |v: &mut Vec<u8>| put_uint(v, 1);
        let cases: Vec<(Vec<u8>, InputError)> = vec![
            (vec![], InputError::Malformed),
            (vec![0xc1], InputError::Malformed),
            (vec![0x93, 1, 2, 3], InputError::Malformed),
            (vec![0x81, 0xa3, b's', b'e'], InputError::Malformed),
            (vec![0u8; 65], InputError::TooLarge),
            (enc(&[("seq", &seq), ("x", &seq)]), InputError::UnknownField),
            (enc(&[("sequence", &seq)]), InputError::UnknownField),
            (vec![0x81, 0x01, 0x01], InputError::UnknownField),
            (enc(&[("seq", &seq), ("seq", &seq)]), InputError::Malformed),
            (enc(&[("seq", &|v| put_str(v, "1"))]), InputError::WrongType),
            (enc(&[("seq", &|v| put_f32(v, 1.0))]), InputError::WrongType),
            (enc(&[("seq", &|v| put_int(v, -1))]), InputError::BadValue),
            (enc(&[("seq", &|v| put_uint(v, 0))]), InputError::BadValue),
            (
                enc(&[("seq", &|v| put_uint(v, 1 << 40))]),
                InputError::BadValue,
            ),
            (
                enc(&[("dash", &|v| put_bool(v, true))]),
                InputError::MissingSeq,
            ),
            (
                enc(&[("seq", &seq), ("dash", &|v| put_uint(v, 1))]),
                InputError::WrongType,
            ),
            (
                enc(&[("seq", &seq), ("dir", &dir(f64::NAN, 0.0))]),
                InputError::BadValue,
            ),
            (
                enc(&[("seq", &seq), ("dir", &dir(0.0, f64::INFINITY))]),
                InputError::BadValue,
            ),
            (
                enc(&[("seq", &seq), ("dir", &dir(f64::NEG_INFINITY, 1.0))]),
                InputError::BadValue,
            ),
            (
                enc(&[
                    ("seq", &seq),
                    ("dir", &|v| {
                        put_array_len(v, 3);
                        put_uint(v, 0);
                        put_uint(v, 0);
                        put_uint(v, 0);
                    }),
                ]),
                InputError::WrongType,
            ),
            (
                enc(&[
                    ("seq", &seq),
                    ("dir", &|v| {
                        v.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff])
                    }),
                ]),
                InputError::Malformed,
            ),
            (
                enc(&[
                    ("seq", &seq),
                    ("dir", &|v| {
                        put_array_len(v, 2);
                        put_str(v, "x");
                        put_uint(v, 0);
                    }),
                ]),
                InputError::WrongType,
            ),
            (
                {
                    let mut m = enc(&[("seq", &seq)]);
                    m.push(0xc0);
                    m
                },
                InputError::Malformed,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(&bytes), Err(want), "{bytes:02x?}");
        }
    }

    #[test]
    fn encode_round_trips() {
        for input in [
            Input {
                seq: 1,
                dir: Vec2::new(0.6, -0.8),
                dash: true,
            },
            Input {
                seq: u32::MAX,
                dir: Vec2::ZERO,
                dash: false,
            },
        ] {
            let bytes = encode(&input);
            assert!(bytes.len() <= MAX_INPUT_BYTES);
            assert_eq!(decode(&bytes), Ok(input));
        }
    }

    #[test]
    fn huge_finite_directions_are_clamped() {
        let m = enc(&[("seq", &|v| put_uint(v, 9)), ("dir", &dir(1e300, -1e300))]);
        let i = decode(&m).expect("valid");
        assert!((i.dir.length() - 1.0).abs() < 1e-5, "{:?}", i.dir);
        let m = enc(&[("seq", &|v| put_uint(v, 9)), ("dir", &dir(1e-9, 0.0))]);
        assert_eq!(decode(&m).expect("valid").dir, Vec2::ZERO);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::sim::resources::GameRng::new(1);
        for _ in 0..20_000 {
            let len = rng.below(70) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn buffer_enforces_order_rate_and_charges() {
        let mut b = InputBuffer::new(4);
        let p = PlayerId(2);
        let input = |seq, dash| Input {
            seq,
            dir: Vec2::new(1.0, 0.0),
            dash,
        };
        assert_eq!(b.admit(PlayerId(9)), Err(InputError::UnknownPlayer));
        b.admit(p).expect("first");
        b.accept(p, input(5, false), 0).expect("accepted");
        b.admit(p).expect("second");
        assert_eq!(b.accept(p, input(5, false), 0), Err(InputError::StaleSeq));
        b.admit(p).expect("third");
        assert_eq!(b.accept(p, input(6, true), 0), Err(InputError::NoCharges));
        b.admit(p).expect("fourth");
        b.accept(p, input(7, true), 1).expect("dash with a charge");
        assert_eq!(b.admit(p), Err(InputError::RateLimited));
        let mut seen = Vec::new();
        b.drain(|who, fresh| seen.push((who, fresh)));
        assert_eq!(seen, vec![(p, Some((Vec2::new(1.0, 0.0), true, 7)))]);
        // The next tick starts a fresh allowance; nothing fresh is pending.
        b.admit(p).expect("new tick");
        let mut seen = Vec::new();
        b.drain(|who, fresh| seen.push((who, fresh)));
        assert_eq!(seen, vec![(p, None)]);
    }
}
