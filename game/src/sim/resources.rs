//! Resources: the match-wide state the rules share.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Deref;
use std::sync::Arc;

use bevy_ecs::entity::EntityHashMap;
use bevy_ecs::prelude::*;
use serde::Serialize;

use super::components::{AcornKind, PlayerId};
use super::map::Map;

/// The map of this match.
#[derive(Resource, Debug, Clone)]
pub struct GameMap(pub Arc<Map>);

impl Deref for GameMap {
    type Target = Map;
    fn deref(&self) -> &Map {
        &self.0
    }
}

/// The phases of a match, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Players gather; nothing moves.
    Lobby = 0,
    /// Counting down to the start; nothing moves.
    Countdown = 1,
    /// The match is on.
    Running = 2,
    /// Time is up; scores are final.
    Ended = 3,
}

/// Match time: the tick counter and the phase.
#[derive(Resource, Debug, Clone)]
pub struct Clock {
    /// Number of the current (last run) tick; the first tick is 1.
    pub tick: u32,
    /// Current phase.
    pub phase: Phase,
    /// Tick at which the current phase ends (countdown and running), else 0.
    pub phase_end: u32,
    /// Set by [`Match::start`](super::Match::start): leave the lobby on the next tick.
    pub start_requested: bool,
    /// Set by [`Match::end_now`](super::Match::end_now): end on the next tick,
    /// whatever the phase.
    pub end_requested: bool,
    /// Winning team once ended (`None` on a draw or before the end).
    pub winner: Option<u8>,
    /// Next tick at which an acorn may spawn.
    pub next_spawn: u32,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            tick: 0,
            phase: Phase::Lobby,
            phase_end: 0,
            start_requested: false,
            end_requested: false,
            winner: None,
            next_spawn: 0,
        }
    }
}

/// Team scores (index = team).
#[derive(Resource, Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamScores(pub Vec<u32>);

/// Which entity plays each player id, and team sizes.
#[derive(Resource, Debug, Default)]
pub struct Roster {
    /// Index = player id.
    pub slots: Vec<Option<Entity>>,
    /// Squirrels per team (index = team).
    pub team_sizes: Vec<u16>,
    /// Player id of each squirrel entity, kept until the removal was encoded.
    pub ids: EntityHashMap<PlayerId>,
}

impl Roster {
    /// The squirrel entity of `player`, if the player is in the match.
    pub fn entity(&self, player: PlayerId) -> Option<Entity> {
        self.slots.get(player.0 as usize).copied().flatten()
    }
    /// Frees the slot of a squirrel that is being despawned.
    pub fn free(&mut self, player: PlayerId, team: u8) {
        if let Some(slot) = self.slots.get_mut(player.0 as usize) {
            *slot = None;
        }
        if let Some(n) = self.team_sizes.get_mut(team as usize) {
            *n = n.saturating_sub(1);
        }
    }
    /// Players in the match.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
    /// True with no players.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An acorn on the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcornCell {
    /// The acorn's entity.
    pub entity: Entity,
    /// Its kind.
    pub kind: AcornKind,
    /// Its wire id.
    pub id: u16,
}

/// Acorn bookkeeping: which tile holds which acorn, and the id pool.
#[derive(Resource, Debug)]
pub struct Acorns {
    width: u16,
    /// Per tile: 0 for none, else the acorn's id + 1 (small, so the grid stays in cache).
    cells: Vec<u32>,
    /// Per tile: acorns on it and its 8 neighbours. Pickup asks this one
    /// cell first: most squirrels have no acorn within reach.
    near: Vec<u8>,
    /// Per id: the acorn on the grid with that id.
    by_id: Vec<Option<(Entity, AcornKind)>>,
    count: u16,
    free_ids: BinaryHeap<Reverse<u16>>,
    next_id: u16,
    /// Wire id of each acorn entity, kept until the removal was encoded.
    pub ids: EntityHashMap<u16>,
}

impl Acorns {
    /// Empty bookkeeping for a map.
    pub fn new(map: &Map) -> Self {
        Acorns {
            width: map.width(),
            cells: vec![0; map.width() as usize * map.height() as usize],
            near: vec![0; map.width() as usize * map.height() as usize],
            by_id: Vec::new(),
            count: 0,
            free_ids: BinaryHeap::new(),
            next_id: 0,
            ids: EntityHashMap::default(),
        }
    }

    #[inline]
    fn index(&self, x: i32, y: i32) -> Option<usize> {
        if x < 0 || y < 0 || x >= self.width as i32 {
            return None;
        }
        let i = y as usize * self.width as usize + x as usize;
        (i < self.cells.len()).then_some(i)
    }

    /// The acorn on tile `(x, y)`, if any.
    #[inline]
    pub fn at(&self, x: i32, y: i32) -> Option<AcornCell> {
        let cell = *self.cells.get(self.index(x, y)?)?;
        let id = cell.checked_sub(1)? as u16;
        let (entity, kind) = (*self.by_id.get(id as usize)?)?;
        Some(AcornCell { entity, kind, id })
    }

    /// True if an acorn lies on `(x, y)` or one of its 8 neighbours.
    #[inline]
    pub fn any_near(&self, x: i32, y: i32) -> bool {
        self.index(x, y).is_some_and(|i| self.near[i] > 0)
    }

    /// Counts an acorn on `(x, y)` in the [`Acorns::any_near`] grid, or
    /// (`added` false) stops counting it.
    fn count_near(&mut self, x: i32, y: i32, added: bool) {
        for ny in y - 1..=y + 1 {
            for nx in x - 1..=x + 1 {
                if let Some(i) = self.index(nx, ny) {
                    let n = &mut self.near[i];
                    *n = if added { *n + 1 } else { *n - 1 };
                }
            }
        }
    }

    /// True if no acorn lies on `(x, y)`.
    #[inline]
    pub fn is_free(&self, x: i32, y: i32) -> bool {
        self.index(x, y).is_some_and(|i| self.cells[i] == 0)
    }

    /// Acorns on the ground.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Takes the smallest free wire id.
    pub fn alloc_id(&mut self) -> u16 {
        match self.free_ids.pop() {
            Some(Reverse(id)) => id,
            None => {
                let id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1);
                id
            }
        }
    }

    /// Records a new acorn entity on a free tile.
    pub fn place(&mut self, x: i32, y: i32, entity: Entity, id: u16, kind: AcornKind) {
        if let Some(i) = self.index(x, y) {
            debug_assert!(self.cells[i] == 0);
            self.cells[i] = id as u32 + 1;
            self.count_near(x, y, true);
            if self.by_id.len() <= id as usize {
                self.by_id.resize(id as usize + 1, None);
            }
            self.by_id[id as usize] = Some((entity, kind));
            self.count += 1;
            self.ids.insert(entity, id);
        }
    }

    /// Removes the acorn on `(x, y)` from the grid (its id stays taken until
    /// [`Acorns::release`]); returns it.
    pub fn take(&mut self, x: i32, y: i32) -> Option<AcornCell> {
        let taken = self.at(x, y)?;
        let i = self.index(x, y)?;
        self.cells[i] = 0;
        self.count_near(x, y, false);
        self.by_id[taken.id as usize] = None;
        self.count -= 1;
        Some(taken)
    }

    /// Forgets a despawned acorn entity and frees its id; returns the id.
    pub fn release(&mut self, entity: Entity) -> Option<u16> {
        let id = self.ids.remove(&entity)?;
        self.free_ids.push(Reverse(id));
        Some(id)
    }
}

/// The match's seeded random number generator (SplitMix64): the same seed and
/// the same inputs give the same match.
#[derive(Resource, Debug, Clone)]
pub struct GameRng(u64);

impl GameRng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        GameRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u8) -> bool {
        self.below(100) < percent as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = GameRng::new(7);
        let mut b = GameRng::new(7);
        for _ in 0..1000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
        let hits = (0..10_000).filter(|_| a.chance(10)).count();
        assert!((800..1200).contains(&hits), "{hits}");
    }

    #[test]
    fn acorn_ids_are_reused_smallest_first() {
        let map = crate::sim::maps::builtin("pine-grove").expect("map");
        let mut acorns = Acorns::new(&map);
        let mut world = World::new();
        let e: Vec<Entity> = (0..3).map(|_| world.spawn_empty().id()).collect();
        let ids: Vec<u16> = (0..3).map(|_| acorns.alloc_id()).collect();
        assert_eq!(ids, [0, 1, 2]);
        for (i, (&e, &id)) in e.iter().zip(&ids).enumerate() {
            acorns.place(3 + i as i32, 2, e, id, AcornKind::Plain);
        }
        assert_eq!(acorns.count(), 3);
        assert!(acorns.any_near(2, 1) && acorns.any_near(6, 3) && acorns.any_near(4, 2));
        assert!(!acorns.any_near(1, 2) && !acorns.any_near(7, 2) && !acorns.any_near(4, 4));
        assert!(!acorns.any_near(-1, 2) && !acorns.any_near(4, 1000));
        assert_eq!(acorns.take(4, 2).map(|t| (t.entity, t.id)), Some((e[1], 1)));
        assert!(acorns.is_free(4, 2) && !acorns.is_free(3, 2) && !acorns.is_free(-1, 0));
        assert_eq!(acorns.count(), 2);
        assert!(acorns.any_near(4, 2) && acorns.any_near(6, 3));
        assert!(acorns.take(3, 2).is_some() && acorns.take(5, 2).is_some());
        assert!(!acorns.any_near(4, 2) && !acorns.any_near(6, 3) && !acorns.any_near(2, 1));
        assert_eq!(acorns.release(e[1]), Some(1));
        assert_eq!(acorns.alloc_id(), 1);
        assert_eq!(acorns.alloc_id(), 3);
        assert_eq!(acorns.at(-1, 0), None);
        assert_eq!(acorns.at(1000, 0), None);
    }
}
