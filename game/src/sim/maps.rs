//! The maps built into the binary (from `assets/maps/`).

use super::map::{Map, MapError};

/// `(id, text)` of every built-in map. The id is the file name without `.txt`.
const BUILTIN: &[(&str, &str)] = &[
    (
        "oak-city",
        include_str!("../../../assets/maps/oak-city.txt"),
    ),
    (
        "pine-grove",
        include_str!("../../../assets/maps/pine-grove.txt"),
    ),
];

/// Ids of the built-in maps (`"oak-city"`, `"pine-grove"`).
pub fn list() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(id, _)| *id)
}

/// A built-in map by id (`"oak-city"`) or by display name, case-insensitively
/// (`"Oak City"`). `None` if there is no such map.
pub fn builtin(name: &str) -> Option<Map> {
    let wanted = name.trim();
    BUILTIN.iter().find_map(|(id, text)| {
        let map = Map::parse(text).ok()?;
        (id.eq_ignore_ascii_case(wanted) || map.name().eq_ignore_ascii_case(wanted)).then_some(map)
    })
}

/// A built-in map by id or name, or else a map file at that path.
pub fn load(name_or_path: &str) -> Result<Map, MapError> {
    match builtin(name_or_path) {
        Some(map) => Ok(map),
        None => Map::load(name_or_path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_map_parses() {
        for (id, text) in BUILTIN {
            let map = Map::parse(text).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert!(builtin(id).is_some());
            assert!(builtin(map.name()).is_some());
        }
        assert_eq!(list().count(), 2);
    }

    #[test]
    fn oak_city_is_there() {
        let map = builtin("Oak City").expect("Oak City");
        assert_eq!(map.teams(), 4);
        assert_eq!(builtin("oak-city"), Some(map));
        assert!(builtin("atlantis").is_none());
        assert!(load("/no/such/map.txt").is_err());
    }
}
