//! Maps: the text format, its parser and its validation.
//!
//! ```text
//! # comment lines start with '#'; blank lines are ignored in the header
//! name: Oak City
//! teams: 4          # 2..=4, each team needs burrow tiles in the grid
//! acorns: 40        # optional: acorns on the ground at most (default 30)
//! golden: 10        # optional: percent of spawned acorns that are golden (default 10)
//! ---
//! TTTTTTTTTT
//! T11....22T
//! T..T.....T
//! ...
//! ```
//!
//! Grid characters: `.` grass, `T` tree (an obstacle), `1`-`4` a burrow tile of
//! team 1-4 (walkable). Every row has the same width; the map's outer edge is
//! a wall whether or not the border is drawn with trees. Every burrow must be
//! reachable from every other one (4-neighbour paths over non-tree tiles), and
//! acorns only ever spawn on grass tiles reachable from the burrows.
//!
//! Errors name the line and column of the offending character or line.

use std::fmt;
use std::path::Path;

/// Smallest accepted width and height, in tiles.
pub const MIN_SIZE: usize = 8;
/// Largest accepted width and height, in tiles (positions are sent as u16 in
/// 1/16 tile, and acorn tiles as small integers).
pub const MAX_SIZE: usize = 200;
/// Largest number of teams a map may declare.
pub const MAX_TEAMS: u8 = 4;
/// Default acorn cap when the header has no `acorns:` line.
pub const DEFAULT_ACORNS: u16 = 30;
/// Default golden percentage when the header has no `golden:` line.
pub const DEFAULT_GOLDEN: u8 = 10;

/// The tile index of a coordinate (floor), without a libm call: the rules
/// call this several times per squirrel per tick. NaN gives 0; values beyond
/// the i32 range saturate (and are outside every map anyway).
#[inline(always)]
pub fn tile_coord(v: f32) -> i32 {
    let t = v as i32;
    t - ((v < t as f32) as i32)
}

/// One tile of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tile {
    /// Walkable ground where acorns may spawn.
    Grass,
    /// An obstacle.
    Tree,
    /// Walkable burrow of the team with this 0-based index.
    Burrow(u8),
}

impl Tile {
    /// The character of this tile in the text format.
    pub fn to_char(self) -> char {
        match self {
            Tile::Grass => '.',
            Tile::Tree => 'T',
            Tile::Burrow(t) => (b'1' + t) as char,
        }
    }
}

/// A parse or validation error.
#[derive(Debug)]
pub enum MapError {
    /// The file could not be read.
    Io {
        /// The path that was read.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The text is not a valid map; `line` and `column` are 1-based.
    Invalid {
        /// 1-based line number in the text.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Io { path, source } => write!(f, "{path}: {source}"),
            MapError::Invalid {
                line,
                column,
                message,
            } => write!(f, "line {line}, column {column}: {message}"),
        }
    }
}

impl std::error::Error for MapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MapError::Io { source, .. } => Some(source),
            MapError::Invalid { .. } => None,
        }
    }
}

fn err(line: usize, column: usize, message: impl Into<String>) -> MapError {
    MapError::Invalid {
        line,
        column,
        message: message.into(),
    }
}

/// A parsed, validated map.
#[derive(Debug, Clone, PartialEq)]
pub struct Map {
    name: String,
    width: u16,
    height: u16,
    teams: u8,
    acorn_cap: u16,
    golden_percent: u8,
    tiles: Vec<Tile>,
    /// Trees as a bitmap with a one-tile solid border: `(width + 2) * (height + 2)`.
    solid: Vec<bool>,
    /// Per tile: which of the 3x3 tiles centred on it are solid, bit
    /// `3 * dy + dx` for the tile at `(x - 1 + dx, y - 1 + dy)` (outside the
    /// map counts as solid). Zero means open ground.
    around: Vec<u16>,
    burrows: Vec<Vec<(u16, u16)>>,
    spawnable: Vec<u32>,
}

impl Map {
    /// Reads and parses a map file.
    pub fn load(path: impl AsRef<Path>) -> Result<Map, MapError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| MapError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Map::parse(&text)
    }

    /// Parses and validates the text format described in the module docs.
    pub fn parse(text: &str) -> Result<Map, MapError> {
        let mut name: Option<String> = None;
        let mut teams: Option<u8> = None;
        let mut acorns: Option<u16> = None;
        let mut golden: Option<u8> = None;
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let mut separator_line = None;

        for (no, raw) in lines.by_ref() {
            let line = raw.trim_end();
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if trimmed == "---" {
                separator_line = Some(no);
                break;
            }
            let indent = line.len() - trimmed.len();
            let Some((key, value)) = trimmed.split_once(':') else {
                return Err(err(
                    no,
                    indent + 1,
                    "expected a header line \"key: value\" or the \"---\" line before the grid",
                ));
            };
            let key_raw = key;
            let key = key.trim();
            // Strip a trailing comment from the value.
            let value = value.split('#').next().unwrap_or("").trim();
            let after_colon = &trimmed[key_raw.len() + 1..];
            let value_col = indent
                + key_raw.chars().count()
                + 1
                + (after_colon.chars().count() - after_colon.trim_start().chars().count())
                + 1;
            let dup = || err(no, indent + 1, format!("duplicate header key \"{key}\""));
            match key {
                "name" => {
                    if name.is_some() {
                        return Err(dup());
                    }
                    let n = value.chars().count();
                    if n == 0 || n > 40 {
                        return Err(err(no, value_col, "name must be 1 to 40 characters"));
                    }
                    name = Some(value.to_string());
                }
                "teams" => {
                    if teams.is_some() {
                        return Err(dup());
                    }
                    match value.parse::<u8>() {
                        Ok(t) if (2..=MAX_TEAMS).contains(&t) => teams = Some(t),
                        _ => {
                            return Err(err(
                                no,
                                value_col,
                                format!("teams must be a number from 2 to {MAX_TEAMS}"),
                            ))
                        }
                    }
                }
                "acorns" => {
                    if acorns.is_some() {
                        return Err(dup());
                    }
                    match value.parse::<u16>() {
                        Ok(a) if (1..=1000).contains(&a) => acorns = Some(a),
                        _ => {
                            return Err(err(
                                no,
                                value_col,
                                "acorns must be a number from 1 to 1000",
                            ))
                        }
                    }
                }
                "golden" => {
                    if golden.is_some() {
                        return Err(dup());
                    }
                    match value.parse::<u8>() {
                        Ok(g) if g <= 100 => golden = Some(g),
                        _ => {
                            return Err(err(
                                no,
                                value_col,
                                "golden must be a percentage from 0 to 100",
                            ))
                        }
                    }
                }
                other => {
                    return Err(err(
                        no,
                        indent + 1,
                        format!(
                            "unknown header key \"{other}\" (known: name, teams, acorns, golden)"
                        ),
                    ))
                }
            }
        }

        let Some(sep) = separator_line else {
            let last = text.lines().count().max(1);
            return Err(err(
                last,
                1,
                "missing the \"---\" line that starts the grid",
            ));
        };
        let name = name.ok_or_else(|| err(sep, 1, "missing header key \"name\""))?;
        let teams = teams.ok_or_else(|| err(sep, 1, "missing header key \"teams\""))?;

        // Grid rows: every line after the separator; trailing blank lines are ignored.
        let rows: Vec<(usize, &str)> = lines.map(|(no, l)| (no, l.trim_end())).collect();
        let last_content = rows.iter().rposition(|(_, l)| !l.is_empty());
        let rows = match last_content {
            Some(i) => &rows[..=i],
            None => return Err(err(sep + 1, 1, "the grid is empty")),
        };
        let first_no = rows[0].0;
        let width = rows[0].1.chars().count();
        let height = rows.len();
        if !(MIN_SIZE..=MAX_SIZE).contains(&width) {
            return Err(err(
                first_no,
                1,
                format!("the grid is {width} tiles wide; it must be {MIN_SIZE} to {MAX_SIZE}"),
            ));
        }
        if !(MIN_SIZE..=MAX_SIZE).contains(&height) {
            return Err(err(
                first_no,
                1,
                format!("the grid is {height} rows tall; it must be {MIN_SIZE} to {MAX_SIZE}"),
            ));
        }

        let mut tiles = Vec::with_capacity(width * height);
        let mut burrows: Vec<Vec<(u16, u16)>> = vec![Vec::new(); teams as usize];
        for (y, (no, row)) in rows.iter().enumerate() {
            let mut x = 0;
            for (col, c) in row.chars().enumerate() {
                if col >= width {
                    return Err(err(
                        *no,
                        col + 1,
                        format!("row is longer than the first row ({width} tiles)"),
                    ));
                }
                let tile = match c {
                    '.' => Tile::Grass,
                    'T' => Tile::Tree,
                    '1'..='4' => {
                        let t = c as u8 - b'1';
                        if t >= teams {
                            return Err(err(
                                *no,
                                col + 1,
                                format!("burrow of team {c} but the map has {teams} teams"),
                            ));
                        }
                        burrows[t as usize].push((col as u16, y as u16));
                        Tile::Burrow(t)
                    }
                    other => {
                        return Err(err(
                            *no,
                            col + 1,
                            format!("unknown tile {other:?} (expected '.', 'T' or a team digit)"),
                        ))
                    }
                };
                tiles.push(tile);
                x = col + 1;
            }
            if x < width {
                return Err(err(
                    *no,
                    x + 1,
                    format!("row is {x} tiles wide but the first row is {width}"),
                ));
            }
        }
        for (t, b) in burrows.iter().enumerate() {
            if b.is_empty() {
                return Err(err(
                    sep,
                    1,
                    format!("team {} has no burrow tile in the grid", t + 1),
                ));
            }
        }

        // Reachability: flood-fill over non-tree tiles from team 1's burrow.
        let mut reach = vec![false; tiles.len()];
        let mut stack = vec![burrows[0][0]];
        reach[burrows[0][0].1 as usize * width + burrows[0][0].0 as usize] = true;
        while let Some((x, y)) = stack.pop() {
            let (x, y) = (x as i32, y as i32);
            for (nx, ny) in [(x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)] {
                if nx < 0 || ny < 0 || nx >= width as i32 || ny >= height as i32 {
                    continue;
                }
                let i = ny as usize * width + nx as usize;
                if !reach[i] && tiles[i] != Tile::Tree {
                    reach[i] = true;
                    stack.push((nx as u16, ny as u16));
                }
            }
        }
        for (t, b) in burrows.iter().enumerate() {
            for &(x, y) in b {
                if !reach[y as usize * width + x as usize] {
                    return Err(err(
                        rows[y as usize].0,
                        x as usize + 1,
                        format!(
                            "this burrow tile of team {} cannot be reached from team 1's burrow",
                            t + 1
                        ),
                    ));
                }
            }
        }
        let spawnable: Vec<u32> = (0..tiles.len())
            .filter(|&i| reach[i] && tiles[i] == Tile::Grass)
            .map(|i| i as u32)
            .collect();
        let acorn_cap = acorns.unwrap_or(DEFAULT_ACORNS);
        if spawnable.len() < acorn_cap as usize * 2 {
            return Err(err(
                sep,
                1,
                format!(
                    "only {} reachable grass tiles for an acorn cap of {acorn_cap}; \
                     the map needs at least twice the cap",
                    spawnable.len()
                ),
            ));
        }

        let (pw, ph) = (width + 2, height + 2);
        let mut solid = vec![true; pw * ph];
        for y in 0..height {
            for x in 0..width {
                solid[(y + 1) * pw + x + 1] = tiles[y * width + x] == Tile::Tree;
            }
        }

        let mut around = vec![0u16; width * height];
        for y in 0..height {
            for x in 0..width {
                for dy in 0..3 {
                    for dx in 0..3 {
                        if solid[(y + dy) * pw + x + dx] {
                            around[y * width + x] |= 1 << (3 * dy + dx);
                        }
                    }
                }
            }
        }

        Ok(Map {
            solid,
            around,
            name,
            width: width as u16,
            height: height as u16,
            teams,
            acorn_cap,
            golden_percent: golden.unwrap_or(DEFAULT_GOLDEN),
            tiles,
            burrows,
            spawnable,
        })
    }

    /// The display name from the header.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Width in tiles.
    pub fn width(&self) -> u16 {
        self.width
    }
    /// Height in tiles.
    pub fn height(&self) -> u16 {
        self.height
    }
    /// Number of teams the map has burrows for.
    pub fn teams(&self) -> u8 {
        self.teams
    }
    /// Most acorns on the ground at once (from the header).
    pub fn acorn_cap(&self) -> u16 {
        self.acorn_cap
    }
    /// Percent of spawned acorns that are golden.
    pub fn golden_percent(&self) -> u8 {
        self.golden_percent
    }

    /// The tile at `(x, y)`, or `None` outside the map.
    #[inline]
    pub fn tile(&self, x: i32, y: i32) -> Option<Tile> {
        if x < 0 || y < 0 || x >= self.width as i32 || y >= self.height as i32 {
            return None;
        }
        Some(self.tiles[y as usize * self.width as usize + x as usize])
    }

    /// True for trees and for everything outside the map.
    #[inline]
    pub fn is_solid(&self, x: i32, y: i32) -> bool {
        let pw = self.width as usize + 2;
        let (px, py) = (
            x.wrapping_add(1) as u32 as usize,
            y.wrapping_add(1) as u32 as usize,
        );
        if px >= pw {
            return true;
        }
        *self
            .solid
            .get(py.wrapping_mul(pw).wrapping_add(px))
            .unwrap_or(&true)
    }

    /// True if tile `(x, y)` and its 8 neighbours are all walkable (a box
    /// centred in it can move up to 0.7 tiles any way without touching a tree).
    #[inline]
    pub fn is_open(&self, x: i32, y: i32) -> bool {
        self.around(x, y) == Some(0)
    }

    /// True if no tile in columns `x0..=x1` and rows `y0..=y1` is solid. A
    /// block of at most 3x3 inside the map's border is one lookup in the
    /// per-tile neighbourhood bits (the case of every short move); anything
    /// else is checked tile by tile.
    #[inline]
    pub fn is_clear(&self, x0: i32, x1: i32, y0: i32, y1: i32) -> bool {
        /// Row bits for 1, 2 and 3 rows of one bit each.
        const ROWS: [u16; 3] = [0b1, 0b1001, 0b1001001];
        let (w, h) = (x1.wrapping_sub(x0), y1.wrapping_sub(y0));
        if (0..3).contains(&w) && (0..3).contains(&h) {
            if let Some(bits) = self.around(x0.wrapping_add(1), y0.wrapping_add(1)) {
                let cols = (1u16 << (w + 1)) - 1;
                return bits & (cols * ROWS[h as usize]) == 0;
            }
        }
        (y0..=y1).all(|y| (x0..=x1).all(|x| !self.is_solid(x, y)))
    }

    /// The solid bits of the 3x3 block centred on `(x, y)`, if it is on the map.
    #[inline]
    fn around(&self, x: i32, y: i32) -> Option<u16> {
        if x < 0 || y < 0 || x >= self.width as i32 {
            return None;
        }
        self.around
            .get(y as usize * self.width as usize + x as usize)
            .copied()
    }

    /// The team whose burrow covers `(x, y)`, if any.
    #[inline]
    pub fn burrow_team(&self, x: i32, y: i32) -> Option<u8> {
        match self.tile(x, y) {
            Some(Tile::Burrow(t)) => Some(t),
            _ => None,
        }
    }

    /// The burrow tiles of a team (0-based), in reading order.
    pub fn burrow_tiles(&self, team: u8) -> &[(u16, u16)] {
        self.burrows
            .get(team as usize)
            .map_or(&[], |b| b.as_slice())
    }

    /// Tile indices (`y * width + x`) of the reachable grass tiles where acorns may spawn.
    pub fn spawnable(&self) -> &[u32] {
        &self.spawnable
    }

    /// True if acorns may spawn on `(x, y)`.
    pub fn is_spawnable(&self, x: i32, y: i32) -> bool {
        self.tile(x, y) == Some(Tile::Grass)
            && self
                .spawnable
                .binary_search(&(y as u32 * self.width as u32 + x as u32))
                .is_ok()
    }

    /// The grid rows as text, one `String` per row.
    pub fn rows(&self) -> impl Iterator<Item = String> + '_ {
        self.tiles
            .chunks(self.width as usize)
            .map(|row| row.iter().map(|t| t.to_char()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "name: Test\nteams: 2\nacorns: 4\n---\n\
        TTTTTTTTTT\n\
        T11....22T\n\
        T........T\n\
        T...TT...T\n\
        T........T\n\
        T........T\n\
        T........T\n\
        TTTTTTTTTT\n";

    fn invalid(text: &str) -> (usize, usize, String) {
        match Map::parse(text) {
            Err(MapError::Invalid {
                line,
                column,
                message,
            }) => (line, column, message),
            other => panic!("expected an invalid-map error, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_small_map() {
        let m = Map::parse(SMALL).expect("valid");
        assert_eq!(m.name(), "Test");
        assert_eq!((m.width(), m.height(), m.teams()), (10, 8, 2));
        assert_eq!(m.acorn_cap(), 4);
        assert_eq!(m.golden_percent(), DEFAULT_GOLDEN);
        assert_eq!(m.burrow_tiles(0), &[(1, 1), (2, 1)]);
        assert_eq!(m.burrow_tiles(1), &[(7, 1), (8, 1)]);
        assert_eq!(m.tile(4, 3), Some(Tile::Tree));
        assert!(m.is_solid(-1, 3) && m.is_solid(10, 3) && m.is_solid(0, 0));
        assert!(
            m.is_solid(3, -1)
                && m.is_solid(3, 8)
                && m.is_solid(i32::MIN, 2)
                && m.is_solid(2, i32::MAX)
        );
        assert!(m.is_open(2, 2) && !m.is_open(1, 1) && !m.is_open(4, 2) && !m.is_open(-1, 3));
        // is_clear agrees with a tile-by-tile check on every block up to
        // 4x4 anchored anywhere on and around the map.
        for y0 in -3..m.height() as i32 + 3 {
            for x0 in -3..m.width() as i32 + 3 {
                for (w, h) in (0..4).flat_map(|w| (0..4).map(move |h| (w, h))) {
                    let (x1, y1) = (x0 + w, y0 + h);
                    let slow = (y0..=y1).all(|y| (x0..=x1).all(|x| !m.is_solid(x, y)));
                    assert_eq!(m.is_clear(x0, x1, y0, y1), slow, "{x0},{y0} {w}x{h}");
                }
            }
        }
        assert!(
            !m.is_clear(i32::MIN, i32::MIN + 1, 0, 1) && !m.is_clear(0, 1, i32::MAX - 1, i32::MAX)
        );
        assert!(m.is_clear(3, 2, 3, 3), "an empty block is clear");
        assert!(m.is_solid(-2, -2) && m.is_solid(11, 9) && m.is_solid(4, 3) && !m.is_solid(3, 3));
        assert!(!m.is_solid(1, 1));
        assert_eq!(m.burrow_team(8, 1), Some(1));
        assert!(m.is_spawnable(3, 2) && !m.is_spawnable(1, 1) && !m.is_spawnable(4, 3));
        let rows: Vec<String> = m.rows().collect();
        assert_eq!(rows[1], "T11....22T");
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let bad_char = SMALL.replace("T...TT...T", "T...TX...T");
        let (l, c, msg) = invalid(&bad_char);
        assert_eq!((l, c), (8, 6), "{msg}");
        assert!(msg.contains("unknown tile"), "{msg}");

        let short_row = SMALL.replace("T...TT...T", "T...TT..T");
        let (l, c, _) = invalid(&short_row);
        assert_eq!((l, c), (8, 10));

        let long_row = SMALL.replace("T...TT...T", "T...TT....T");
        let (l, c, _) = invalid(&long_row);
        assert_eq!((l, c), (8, 11));

        let bad_team = SMALL.replace("T...TT...T", "T...TT.3.T");
        let (l, c, msg) = invalid(&bad_team);
        assert_eq!((l, c), (8, 8));
        assert!(msg.contains("2 teams"), "{msg}");

        let (l, c, msg) = invalid(&SMALL.replace("teams: 2", "teams: 7"));
        assert_eq!((l, c), (2, 8), "{msg}");

        let (l, _, msg) = invalid(&SMALL.replace("acorns: 4", "colour: red"));
        assert_eq!(l, 3);
        assert!(msg.contains("unknown header key"), "{msg}");

        let (l, _, msg) = invalid(&SMALL.replace("name: Test\n", ""));
        assert_eq!(l, 3);
        assert!(msg.contains("name"), "{msg}");

        let (_, _, msg) = invalid(&SMALL.replace("---\n", ""));
        assert!(msg.contains("---"), "{msg}");

        let (_, _, msg) = invalid(&SMALL.replace("22", ".."));
        assert!(msg.contains("team 2 has no burrow"), "{msg}");

        let (_, _, msg) = invalid(&SMALL.replace("acorns: 4", "acorns: 30"));
        assert!(msg.contains("acorn cap"), "{msg}");

        let (l, _, msg) = invalid("name: X\nteams: 2\n---\nT11..22T\n");
        assert_eq!(l, 4);
        assert!(msg.contains("rows tall"), "{msg}");
    }

    #[test]
    fn unreachable_burrow_is_rejected() {
        let walled = SMALL
            .replace("T11....22T", "T11...T22T")
            .replace("T........T\nT...TT", "T.....TTTT\nT...TT");
        let (l, c, msg) = invalid(&walled);
        assert!(msg.contains("cannot be reached"), "{msg}");
        assert_eq!((l, c), (6, 8));
    }

    #[test]
    fn comments_and_blank_lines() {
        let text = format!(
            "# a map\n\n{}\n\n\n",
            SMALL.replace("teams: 2", "teams: 2  # two")
        );
        let m = Map::parse(&text).expect("valid");
        assert_eq!(m.teams(), 2);
    }

    #[test]
    fn tile_coord_is_floor() {
        for v in [-2.5f32, -1.0, -0.3, 0.0, 0.3, 0.999_999, 1.0, 7.5, 199.99] {
            assert_eq!(tile_coord(v), v.floor() as i32, "{v}");
        }
        assert_eq!(tile_coord(f32::NAN), 0);
    }

    #[test]
    fn io_error_names_the_path() {
        let e = Map::load("/nonexistent/map.txt").expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/map.txt"));
    }
}
