//! The calibration tick: a bare bevy_ecs schedule with movement, pickup and a
//! compact encode, run in the same process as the real tick.
//!
//! The targets (16 players ≤ 5 µs, 200 ≤ 50 µs) were set against a
//! bare schedule that ran in about 1.7 µs and 13 µs on the machine they were
//! set on; CPUs differ a lot between machines (and a shared VM between
//! hours), so the bench measures this reference side by side with the real
//! tick and BENCHMARKS.md reports both and their ratio.
//!
//! What it does per tick, and nothing more: every squirrel moves by its
//! velocity and bounces off the map's border (no trees), a squirrel that
//! finds an acorn picks it up (the acorn is despawned and a new one spawned on
//! another tile, so the workload stays steady), and the entities whose
//! position changed are written as 3 bytes each (id, quantised x, y) into a
//! MessagePack bin. Change detection is reset every tick.
//!
//! Two ways to find the acorn, as the issue does not say which its reference
//! used: [`Pickup::Grid`] (one lookup of the squirrel's tile) and
//! [`Pickup::Scan`] (every acorn's distance, per squirrel).

use bevy_ecs::prelude::*;

/// Map size in tiles (Oak City's).
const WIDTH: usize = 40;
const HEIGHT: usize = 26;
/// Acorns on the map at any time (Oak City's cap).
const ACORNS: usize = 40;
const DT: f32 = 1.0 / 20.0;

#[derive(Component, Clone, Copy)]
struct Position {
    x: f32,
    y: f32,
}

#[derive(Component, Clone, Copy)]
struct Velocity {
    x: f32,
    y: f32,
}

#[derive(Component)]
struct Carry(u8);

#[derive(Component)]
struct Acorn;

/// Acorn entity per tile.
#[derive(Resource)]
struct Grid(Vec<Option<Entity>>);

/// A xorshift generator for acorn spots.
#[derive(Resource)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn tile(&mut self) -> usize {
        (self.next() % (WIDTH * HEIGHT) as u64) as usize
    }
}

/// The encoded state of the last tick.
#[derive(Resource, Default)]
struct Out(Vec<u8>);

fn movement(mut q: Query<(&mut Position, &mut Velocity)>) {
    for (mut p, mut v) in &mut q {
        let (mut x, mut y) = (p.x + v.x * DT, p.y + v.y * DT);
        if !(0.5..WIDTH as f32 - 0.5).contains(&x) {
            v.x = -v.x;
            x = p.x;
        }
        if !(0.5..HEIGHT as f32 - 0.5).contains(&y) {
            v.y = -v.y;
            y = p.y;
        }
        p.x = x;
        p.y = y;
    }
}

/// Pickup by looking up the squirrel's tile in the acorn grid.
fn pickup_grid(
    mut commands: Commands,
    mut grid: ResMut<Grid>,
    mut rng: ResMut<Rng>,
    mut squirrels: Query<(&Position, &mut Carry)>,
) {
    for (p, mut carry) in &mut squirrels {
        let tile = p.y as usize * WIDTH + p.x as usize;
        if grid.0[tile].is_some() {
            take(&mut commands, &mut grid, &mut rng, tile);
            carry.0 = (carry.0 + 1) % 6;
        }
    }
}

/// Pickup by scanning every acorn for one within 0.6 tiles.
fn pickup_scan(
    mut commands: Commands,
    mut grid: ResMut<Grid>,
    mut rng: ResMut<Rng>,
    mut squirrels: Query<(&Position, &mut Carry), Without<Acorn>>,
    acorns: Query<(Entity, &Position), With<Acorn>>,
) {
    for (p, mut carry) in &mut squirrels {
        let found = acorns.iter().find_map(|(e, a)| {
            let (dx, dy) = (a.x - p.x, a.y - p.y);
            let tile = a.y as usize * WIDTH + a.x as usize;
            // Taken earlier this tick (the despawn is still queued)?
            (dx * dx + dy * dy < 0.36 && grid.0[tile] == Some(e)).then_some(tile)
        });
        if let Some(tile) = found {
            take(&mut commands, &mut grid, &mut rng, tile);
            carry.0 = (carry.0 + 1) % 6;
        }
    }
}

/// Despawns the acorn on `tile` and spawns one on a free tile elsewhere.
fn take(commands: &mut Commands, grid: &mut Grid, rng: &mut Rng, tile: usize) {
    if let Some(acorn) = grid.0[tile].take() {
        commands.entity(acorn).despawn();
    }
    let mut spot = rng.tile();
    while grid.0[spot].is_some() || spot == tile {
        spot = rng.tile();
    }
    let (x, y) = ((spot % WIDTH) as f32 + 0.5, (spot / WIDTH) as f32 + 0.5);
    grid.0[spot] = Some(commands.spawn((Acorn, Position { x, y })).id());
}

fn encode(mut out: ResMut<Out>, changed: Query<(Entity, &Position), Changed<Position>>) {
    let out = &mut out.0;
    out.clear();
    let n = changed.iter().count();
    // MessagePack bin 16 header.
    out.push(0xc5);
    out.extend_from_slice(&((n * 3) as u16).to_be_bytes());
    for (e, p) in &changed {
        out.extend_from_slice(&[e.index_u32() as u8, (p.x * 4.0) as u8, (p.y * 4.0) as u8]);
    }
}

/// How the reference finds acorns to pick up.
#[derive(Clone, Copy, Debug)]
pub enum Pickup {
    /// One lookup of the squirrel's tile in a grid.
    Grid,
    /// A scan of every acorn (40) per squirrel.
    Scan,
}

/// A bare match: `squirrels` moving entities and [`ACORNS`] acorns.
pub struct Reference {
    world: World,
    schedule: Schedule,
}

impl Reference {
    pub fn new(squirrels: usize, pickup: Pickup) -> Self {
        let mut world = World::new();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut grid = vec![None; WIDTH * HEIGHT];
        for i in 0..squirrels {
            let angle = i as f32 * 2.399;
            world.spawn((
                Position {
                    x: 1.0 + rng.tile() as f32 % (WIDTH as f32 - 2.0),
                    y: 1.0 + rng.tile() as f32 % (HEIGHT as f32 - 2.0),
                },
                Velocity {
                    x: 4.0 * angle.cos(),
                    y: 4.0 * angle.sin(),
                },
                Carry(0),
            ));
        }
        for _ in 0..ACORNS {
            let mut spot = rng.tile();
            while grid[spot].is_some() {
                spot = rng.tile();
            }
            let (x, y) = ((spot % WIDTH) as f32 + 0.5, (spot / WIDTH) as f32 + 0.5);
            grid[spot] = Some(world.spawn((Acorn, Position { x, y })).id());
        }
        world.insert_resource(Grid(grid));
        world.insert_resource(rng);
        world.insert_resource(Out::default());
        let mut schedule = Schedule::default();
        match pickup {
            Pickup::Grid => schedule.add_systems((movement, pickup_grid, encode).chain()),
            Pickup::Scan => schedule.add_systems((movement, pickup_scan, encode).chain()),
        };
        Reference { world, schedule }
    }

    /// One tick; returns the encoded state's length.
    pub fn tick(&mut self) -> usize {
        self.schedule.run(&mut self.world);
        self.world.clear_trackers();
        self.world.resource::<Out>().0.len()
    }
}
