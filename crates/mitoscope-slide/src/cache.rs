//! A small LRU cache of decoded tiles.
//!
//! Hand-written rather than a crate: it is a few lines, and the eviction is by
//! bytes (tiles differ in size at the slide edges), which the common LRU
//! crates count by entries. Eviction scans for the oldest entry: with a
//! 64 MiB budget and ~170 KiB tiles that is a few hundred entries, far
//! cheaper than the JPEG decode it saves.

use std::collections::HashMap;
use std::sync::Arc;

/// Key: (level, tile index).
pub(crate) type TileKey = (usize, u32);

/// Decoded RGB8 tile data, row-major, `width * height * 3` bytes.
pub(crate) type TileData = Arc<Vec<u8>>;

pub(crate) struct TileCache {
    cap_bytes: usize,
    used_bytes: usize,
    tick: u64,
    map: HashMap<TileKey, (u64, TileData)>,
}

impl TileCache {
    pub(crate) fn new(cap_bytes: usize) -> Self {
        Self { cap_bytes, used_bytes: 0, tick: 0, map: HashMap::new() }
    }

    pub(crate) fn get(&mut self, key: TileKey) -> Option<TileData> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(&key).map(|(t, d)| {
            *t = tick;
            Arc::clone(d)
        })
    }

    pub(crate) fn insert(&mut self, key: TileKey, data: TileData) {
        if data.len() > self.cap_bytes {
            return;
        }
        self.tick += 1;
        if let Some((_, old)) = self.map.insert(key, (self.tick, Arc::clone(&data))) {
            self.used_bytes -= old.len();
        }
        self.used_bytes += data.len();
        while self.used_bytes > self.cap_bytes {
            let Some((&oldest, _)) = self.map.iter().min_by_key(|(_, (t, _))| *t) else { break };
            if let Some((_, d)) = self.map.remove(&oldest) {
                self.used_bytes -= d.len();
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let mut c = TileCache::new(10);
        c.insert((0, 0), Arc::new(vec![0; 4]));
        c.insert((0, 1), Arc::new(vec![0; 4]));
        assert!(c.get((0, 0)).is_some()); // (0, 1) is now the oldest
        c.insert((0, 2), Arc::new(vec![0; 4]));
        assert!(c.get((0, 1)).is_none());
        assert!(c.get((0, 0)).is_some() && c.get((0, 2)).is_some());
        c.insert((1, 0), Arc::new(vec![0; 11])); // over budget: not kept
        assert_eq!(c.len(), 2);
    }
}
