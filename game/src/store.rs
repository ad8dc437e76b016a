//! The game state store: the match registry, snapshots, final results and the
//! all-time leaderboard, behind one trait so a node can keep them in memory
//! (here) or in a shared store for many nodes (a Redis implementation slots in
//! beside this one).

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// What `GET /v1/matches` lists for a match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRecord {
    pub id: String,
    pub map: String,
    /// `lobby`, `countdown`, `running` or `ended`.
    pub state: String,
    pub players: u32,
    pub max_players: u32,
    pub teams: u8,
    /// Seconds until the match ends (the countdown's remainder plus the
    /// duration before it starts, 0 once ended).
    pub time_left: f64,
    pub duration: f64,
    pub tick_hz: u32,
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamResult {
    pub team: u8,
    pub score: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerResult {
    pub player_id: u16,
    pub name: String,
    pub team: u8,
    pub score: u32,
}

/// A finished match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchResults {
    pub id: String,
    pub map: String,
    pub ended_at: u64,
    /// The winning team, `None` on a tie.
    pub winner: Option<u8>,
    pub teams: Vec<TeamResult>,
    pub players: Vec<PlayerResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardEntry {
    pub name: String,
    /// Points scored over all matches.
    pub score: u64,
    pub matches: u32,
    /// Matches this player's team won.
    pub wins: u32,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("game store unavailable: {0}")]
pub struct StoreError(pub String);

#[async_trait]
pub trait GameStore: Send + Sync + 'static {
    async fn put_match(&self, record: &MatchRecord) -> Result<(), StoreError>;
    async fn get_match(&self, id: &str) -> Result<Option<MatchRecord>, StoreError>;
    async fn list_matches(&self) -> Result<Vec<MatchRecord>, StoreError>;
    async fn remove_match(&self, id: &str) -> Result<(), StoreError>;
    /// The latest keyframe of a running match (for recovery and late readers).
    async fn put_snapshot(&self, id: &str, tick: u64, keyframe: Bytes) -> Result<(), StoreError>;
    async fn snapshot(&self, id: &str) -> Result<Option<(u64, Bytes)>, StoreError>;
    /// Records a finished match and adds it to the leaderboard, once per id.
    async fn put_results(&self, results: &MatchResults) -> Result<(), StoreError>;
    async fn results(&self, id: &str) -> Result<Option<MatchResults>, StoreError>;
    /// The best players by total score, best first.
    async fn leaderboard(&self, limit: usize) -> Result<Vec<LeaderboardEntry>, StoreError>;
}

#[derive(Default)]
struct Memory {
    matches: HashMap<String, MatchRecord>,
    snapshots: HashMap<String, (u64, Bytes)>,
    results: HashMap<String, MatchResults>,
    leaderboard: HashMap<String, LeaderboardEntry>,
}

/// Keeps everything in this process.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl GameStore for MemoryStore {
    async fn put_match(&self, record: &MatchRecord) -> Result<(), StoreError> {
        self.inner
            .lock()
            .matches
            .insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn get_match(&self, id: &str) -> Result<Option<MatchRecord>, StoreError> {
        Ok(self.inner.lock().matches.get(id).cloned())
    }

    async fn list_matches(&self) -> Result<Vec<MatchRecord>, StoreError> {
        let mut all: Vec<_> = self.inner.lock().matches.values().cloned().collect();
        all.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(all)
    }

    async fn remove_match(&self, id: &str) -> Result<(), StoreError> {
        let mut m = self.inner.lock();
        m.matches.remove(id);
        m.snapshots.remove(id);
        Ok(())
    }

    async fn put_snapshot(&self, id: &str, tick: u64, keyframe: Bytes) -> Result<(), StoreError> {
        self.inner
            .lock()
            .snapshots
            .insert(id.to_owned(), (tick, keyframe));
        Ok(())
    }

    async fn snapshot(&self, id: &str) -> Result<Option<(u64, Bytes)>, StoreError> {
        Ok(self.inner.lock().snapshots.get(id).cloned())
    }

    async fn put_results(&self, results: &MatchResults) -> Result<(), StoreError> {
        let mut m = self.inner.lock();
        if m.results.contains_key(&results.id) {
            return Ok(());
        }
        for p in &results.players {
            let entry = m
                .leaderboard
                .entry(p.name.clone())
                .or_insert_with(|| LeaderboardEntry {
                    name: p.name.clone(),
                    score: 0,
                    matches: 0,
                    wins: 0,
                });
            entry.score += u64::from(p.score);
            entry.matches += 1;
            if results.winner == Some(p.team) {
                entry.wins += 1;
            }
        }
        m.results.insert(results.id.clone(), results.clone());
        Ok(())
    }

    async fn results(&self, id: &str) -> Result<Option<MatchResults>, StoreError> {
        Ok(self.inner.lock().results.get(id).cloned())
    }

    async fn leaderboard(&self, limit: usize) -> Result<Vec<LeaderboardEntry>, StoreError> {
        let mut all: Vec<_> = self.inner.lock().leaderboard.values().cloned().collect();
        all.sort_by(|a, b| {
            b.score
                .cmp(&a.score)
                .then_with(|| b.wins.cmp(&a.wins))
                .then_with(|| a.name.cmp(&b.name))
        });
        all.truncate(limit);
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(id: &str, winner: Option<u8>, players: &[(&str, u8, u32)]) -> MatchResults {
        MatchResults {
            id: id.into(),
            map: "oak-city".into(),
            ended_at: 0,
            winner,
            teams: vec![],
            players: players
                .iter()
                .enumerate()
                .map(|(i, (name, team, score))| PlayerResult {
                    player_id: i as u16,
                    name: (*name).into(),
                    team: *team,
                    score: *score,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn leaderboard_sums_matches_once_each() {
        let store = MemoryStore::new();
        store
            .put_results(&results("a", Some(0), &[("ann", 0, 5), ("bob", 1, 7)]))
            .await
            .unwrap();
        store
            .put_results(&results("b", Some(1), &[("ann", 1, 4)]))
            .await
            .unwrap();
        // The same match reported twice counts once.
        store
            .put_results(&results("b", Some(1), &[("ann", 1, 4)]))
            .await
            .unwrap();
        let board = store.leaderboard(10).await.unwrap();
        assert_eq!(
            board[0],
            LeaderboardEntry {
                name: "ann".into(),
                score: 9,
                matches: 2,
                wins: 2
            }
        );
        assert_eq!(
            board[1],
            LeaderboardEntry {
                name: "bob".into(),
                score: 7,
                matches: 1,
                wins: 0
            }
        );
        assert_eq!(store.leaderboard(1).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn registry_round_trip() {
        let store = MemoryStore::new();
        let rec = MatchRecord {
            id: "m1".into(),
            map: "oak-city".into(),
            state: "lobby".into(),
            players: 0,
            max_players: 8,
            teams: 2,
            time_left: 180.0,
            duration: 180.0,
            tick_hz: 20,
            created_at: 1,
        };
        store.put_match(&rec).await.unwrap();
        store
            .put_snapshot("m1", 20, Bytes::from_static(b"k"))
            .await
            .unwrap();
        assert_eq!(store.list_matches().await.unwrap(), vec![rec.clone()]);
        assert_eq!(store.snapshot("m1").await.unwrap().unwrap().0, 20);
        store.remove_match("m1").await.unwrap();
        assert!(store.get_match("m1").await.unwrap().is_none());
        assert!(store.snapshot("m1").await.unwrap().is_none());
    }
}
