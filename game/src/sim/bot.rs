//! Scripted players for tests, benchmarks and load generation. A bot heads for
//! the nearest acorn (home once it carries three or more), wanders off in a
//! random direction for a second when stuck on a tree, and now and then
//! dashes when it has a charge. It re-decides every 5 to 14 ticks and only
//! sends an input when its choice changed, like a real client holding keys.

use super::components::{Acorn, Carry, Dash, PlayerId, Position, Squirrel, Vec2};
use super::facade::Match;
use super::input::{encode, Input};
use super::resources::{GameMap, GameRng, Roster};

/// A scripted player.
#[derive(Debug, Clone)]
pub struct Bot {
    /// The player this bot drives.
    pub player: PlayerId,
    seq: u32,
    rng: GameRng,
    next_think: u32,
    wander_until: u32,
    dir: Vec2,
    last_pos: Vec2,
}

impl Bot {
    /// A bot for `player`, with its own random seed.
    pub fn new(player: PlayerId, seed: u64) -> Self {
        Bot {
            player,
            seq: 0,
            rng: GameRng::new(seed ^ (player.0 as u64).wrapping_mul(0x9E37_79B9)),
            next_think: 0,
            wander_until: 0,
            dir: Vec2::ZERO,
            last_pos: Vec2::new(-1.0, -1.0),
        }
    }

    /// Seq of the last input this bot produced.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// Decides what to do now; returns the input message to push, if any.
    pub fn think(&mut self, game: &Match) -> Option<Vec<u8>> {
        let tick = game.tick_count();
        if tick < self.next_think {
            return None;
        }
        self.next_think = tick + 5 + self.rng.below(10);
        let world = game.world();
        let entity = world.resource::<Roster>().entity(self.player)?;
        let pos = world.get::<Position>(entity)?.0;
        let carry = *world.get::<Carry>(entity)?;
        let dash = *world.get::<Dash>(entity)?;
        let team = world.get::<Squirrel>(entity)?.team;
        let stuck = !self.dir.is_zero() && (pos - self.last_pos).length_squared() < 0.01;
        self.last_pos = pos;

        let dir = if stuck || tick < self.wander_until {
            if stuck {
                self.wander_until = tick + 20;
                let a = self.rng.below(360) as f32 * std::f32::consts::PI / 180.0;
                Vec2::new(a.cos(), a.sin())
            } else {
                self.dir
            }
        } else {
            let target = if carry.count() >= 3 {
                let map = world.resource::<GameMap>();
                map.burrow_tiles(team)
                    .iter()
                    .map(|&(x, y)| Vec2::new(x as f32 + 0.5, y as f32 + 0.5))
                    .min_by(|a, b| {
                        (*a - pos)
                            .length_squared()
                            .total_cmp(&(*b - pos).length_squared())
                    })
            } else {
                world.try_query::<&Acorn>().and_then(|mut q| {
                    q.iter(world)
                        .map(|a| Vec2::new(a.tile.0 as f32 + 0.5, a.tile.1 as f32 + 0.5))
                        .min_by(|a, b| {
                            (*a - pos)
                                .length_squared()
                                .total_cmp(&(*b - pos).length_squared())
                        })
                })
            };
            match target {
                Some(t) if (t - pos).length() > 0.05 => {
                    let d = t - pos;
                    d * (1.0 / d.length())
                }
                _ => Vec2::ZERO,
            }
        };
        let want_dash = dash.charges > 0 && !dash.active() && self.rng.chance(4);
        if (dir - self.dir).length_squared() < 0.01 && !want_dash {
            return None;
        }
        self.dir = dir;
        self.seq += 1;
        Some(encode(&Input {
            seq: self.seq,
            dir,
            dash: want_dash,
        }))
    }
}
