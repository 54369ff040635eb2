//! Overlapping tiles over a large image and the merge of detections across
//! tile borders.
//!
//! Along each axis tiles start every `tile - overlap` pixels and the last
//! tile is shifted back to end at the image edge (an axis shorter than a tile
//! gets one tile, padded by the caller). Each tile *owns* a core interval: the
//! boundary between neighbours is the middle of their overlap, so the cores
//! partition the image and every owned pixel is at least `overlap / 2` from
//! the inner edge of its tile, where the network's view is cut off. A peak is
//! kept only by the tile that owns it; [`merge_by_distance`] then removes the
//! remaining near-duplicates (one figure peaking on both sides of a boundary).

/// One tile: the pixels it reads and the pixels it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Left column of the tile (may extend past the image: padded).
    pub x: u32,
    /// Top row of the tile.
    pub y: u32,
    /// Side of the square tile.
    pub size: u32,
    /// Owned columns `[core_x0, core_x1)`.
    pub core_x: (u32, u32),
    /// Owned rows `[core_y0, core_y1)`.
    pub core_y: (u32, u32),
}

impl Tile {
    /// Whether the tile owns pixel `(x, y)` (image coordinates).
    pub fn owns(&self, x: u32, y: u32) -> bool {
        (self.core_x.0..self.core_x.1).contains(&x) && (self.core_y.0..self.core_y.1).contains(&y)
    }
}

/// `(start, core)` of each tile along one axis of `len` pixels.
fn axis(len: u32, tile: u32, overlap: u32) -> Vec<(u32, (u32, u32))> {
    if len == 0 {
        return Vec::new();
    }
    if len <= tile {
        return vec![(0, (0, len))];
    }
    let step = tile.saturating_sub(overlap).max(1);
    let mut starts = Vec::new();
    let mut s = 0u32;
    loop {
        if s + tile >= len {
            starts.push(len - tile);
            break;
        }
        starts.push(s);
        s += step;
    }
    starts.dedup();
    let n = starts.len();
    let mut bounds = Vec::with_capacity(n + 1);
    bounds.push(0);
    for i in 0..n - 1 {
        // Middle of the overlap between tile i (ends at starts[i] + tile) and tile i + 1.
        bounds.push((starts[i + 1] + starts[i] + tile) / 2);
    }
    bounds.push(len);
    starts.into_iter().enumerate().map(|(i, s)| (s, (bounds[i], bounds[i + 1]))).collect()
}

/// Tiles of side `tile` (>= 1) overlapping by `overlap` (at most half a tile) over a `width x height` image.
pub fn tile_grid(width: u32, height: u32, tile: u32, overlap: u32) -> Vec<Tile> {
    let tile = tile.max(1);
    // More than half a tile of overlap only multiplies the work.
    let overlap = overlap.min(tile / 2);
    let xs = axis(width, tile, overlap);
    let ys = axis(height, tile, overlap);
    let mut tiles = Vec::with_capacity(xs.len() * ys.len());
    for &(y, core_y) in &ys {
        for &(x, core_x) in &xs {
            tiles.push(Tile { x, y, size: tile, core_x, core_y });
        }
    }
    tiles
}

/// Something with a position and a score, for [`merge_by_distance`].
pub trait Scored {
    /// `(x, y)`.
    fn position(&self) -> (f64, f64);
    /// Higher is better.
    fn score(&self) -> f64;
}

/// Greedy non-maximum suppression by centre distance: strongest first, drop
/// anything closer than `min_distance` to a kept item. Ties keep input order.
pub fn merge_by_distance<T: Scored>(mut items: Vec<T>, min_distance: f64) -> Vec<T> {
    items.sort_by(|a, b| b.score().total_cmp(&a.score()));
    let d2 = min_distance.max(0.0).powi(2);
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        let (x, y) = item.position();
        if kept.iter().all(|k| {
            let (kx, ky) = k.position();
            (kx - x).powi(2) + (ky - y).powi(2) >= d2
        }) {
            kept.push(item);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct P(f64, f64, f64);
    impl Scored for P {
        fn position(&self) -> (f64, f64) {
            (self.0, self.1)
        }
        fn score(&self) -> f64 {
            self.2
        }
    }

    proptest! {
        #[test]
        fn cores_partition_the_image_and_lie_inside_tiles(
            w in 1u32..700, h in 1u32..700, tile in 8u32..200, overlap in 0u32..64,
        ) {
            let tiles = tile_grid(w, h, tile, overlap);
            let ov = overlap.min(tile / 2);
            // Sample pixels on a grid plus the last row / column.
            let xs: Vec<u32> = (0..w).step_by(7).chain([w - 1]).collect();
            let ys: Vec<u32> = (0..h).step_by(7).chain([h - 1]).collect();
            for &y in &ys {
                for &x in &xs {
                    let owners: Vec<&Tile> = tiles.iter().filter(|t| t.owns(x, y)).collect();
                    prop_assert_eq!(owners.len(), 1, "pixel ({}, {})", x, y);
                    let t = owners[0];
                    prop_assert!(x >= t.x && x < t.x + t.size && y >= t.y && y < t.y + t.size);
                    // Away from the inner tile edges by half the overlap (image edges excepted).
                    let margin = ov / 2;
                    if t.x + t.size < w { prop_assert!(x + margin < t.x + t.size); }
                    if t.x > 0 { prop_assert!(x >= t.x + margin); }
                }
            }
            // Tiles start inside the image.
            prop_assert!(tiles.iter().all(|t| t.x < w && t.y < h));
        }

        #[test]
        fn merge_removes_duplicates_across_borders(
            pts in proptest::collection::vec((0.0f64..500.0, 0.0f64..500.0), 0..30),
            jitter in 0.0f64..3.0,
        ) {
            // Every point seen twice (as by two overlapping tiles), slightly moved.
            let min_d = 10.0;
            let base = merge_by_distance(pts.iter().enumerate().map(|(i, &(x, y))| P(x, y, i as f64)).collect(), min_d);
            let doubled: Vec<P> = base.iter().flat_map(|p| [p.clone(), P(p.0 + jitter, p.1 - jitter, p.2 - 0.5)]).collect();
            let merged = merge_by_distance(doubled, min_d);
            prop_assert_eq!(merged.len(), base.len());
            for (i, a) in merged.iter().enumerate() {
                for b in &merged[i + 1..] {
                    prop_assert!((a.0 - b.0).hypot(a.1 - b.1) >= min_d);
                }
            }
        }
    }

    #[test]
    fn hand_worked_axis() {
        // 100 px, tiles of 40 overlapping 10: starts 0, 30, 60; bounds 0, 35, 65, 100.
        assert_eq!(axis(100, 40, 10), vec![(0, (0, 35)), (30, (35, 65)), (60, (65, 100))]);
        assert_eq!(axis(30, 40, 10), vec![(0, (0, 30))]);
        assert_eq!(tile_grid(0, 10, 8, 2).len(), 0);
        // A 7215x5412 tile at 0.5 µm/px is 3608x2706: 512-px tiles, 64 overlap.
        assert_eq!(tile_grid(3608, 2706, 512, 64).len(), 8 * 6);
    }
}
