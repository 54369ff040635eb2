//! Segmentation agreement: pixel Dice/IoU and the object-level Dice of
//! Sirinukunwattana et al. 2017 (the GlaS challenge).

use std::collections::{HashMap, HashSet};

use image::GrayImage;
use mitoscope_annotations::Shape;
use mitoscope_annotations::mask::objects_from_mask;
use serde::{Deserialize, Serialize};

use crate::EvalError;

/// Pixel-level overlap of two masks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SegScores {
    /// `2|A∩B| / (|A|+|B|)`.
    pub dice: f64,
    /// `|A∩B| / |A∪B|`.
    pub iou: f64,
}

fn same_size(truth: &GrayImage, pred: &GrayImage) -> Result<(), EvalError> {
    if truth.dimensions() == pred.dimensions() {
        Ok(())
    } else {
        Err(EvalError::MaskSizeMismatch {
            truth_width: truth.width(),
            truth_height: truth.height(),
            pred_width: pred.width(),
            pred_height: pred.height(),
        })
    }
}

/// Foreground pixel counts of two masks, which pool over images (sum the
/// counts, then take [`PixelCounts::scores`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelCounts {
    /// Foreground pixels in the truth.
    pub truth: u64,
    /// Foreground pixels in the prediction.
    pub pred: u64,
    /// Pixels foreground in both.
    pub intersection: u64,
}

impl PixelCounts {
    /// Dice and IoU of these counts; nothing on either side is perfect agreement (1, 1).
    pub fn scores(&self) -> SegScores {
        let sum = self.truth + self.pred;
        if sum == 0 {
            return SegScores { dice: 1.0, iou: 1.0 };
        }
        let union = sum - self.intersection;
        SegScores { dice: 2.0 * self.intersection as f64 / sum as f64, iou: self.intersection as f64 / union as f64 }
    }
}

impl std::ops::AddAssign for PixelCounts {
    fn add_assign(&mut self, o: Self) {
        self.truth += o.truth;
        self.pred += o.pred;
        self.intersection += o.intersection;
    }
}

/// Counts foreground (non-zero) pixels of two same-size masks.
pub fn pixel_counts(truth: &GrayImage, pred: &GrayImage) -> Result<PixelCounts, EvalError> {
    same_size(truth, pred)?;
    let mut c = PixelCounts::default();
    for (t, p) in truth.as_raw().iter().zip(pred.as_raw()) {
        let (t, p) = (*t != 0, *p != 0);
        c.truth += t as u64;
        c.pred += p as u64;
        c.intersection += (t && p) as u64;
    }
    Ok(c)
}

/// Pixel Dice and IoU of two masks; foreground = any non-zero pixel.
///
/// Both masks empty: Dice 1 and IoU 1 (nothing to find, nothing found — perfect
/// agreement). Errors when the sizes differ.
pub fn pixel_scores(truth: &GrayImage, pred: &GrayImage) -> Result<SegScores, EvalError> {
    Ok(pixel_counts(truth, pred)?.scores())
}

/// Object-level Dice (Sirinukunwattana et al. 2017, GlaS):
///
/// `0.5 * [ Σ_i w_i Dice(G_i, S*(G_i)) + Σ_j w~_j Dice(G*(S_j), S_j) ]`
///
/// with `w_i = |G_i| / Σ|G|`, `w~_j = |S_j| / Σ|S|`, `S*(G_i)` the predicted
/// object overlapping `G_i` the most (Dice 0 if none overlaps) and `G*(S_j)`
/// likewise. Objects are pixel sets `(x, y)`; repeated pixels within an object
/// count once, empty objects weigh nothing. Equal largest overlaps: the lower
/// index wins.
///
/// Edge cases: no (non-empty) objects on either side = 1; on exactly one side = 0.
pub fn object_dice(truth: &[Vec<(u32, u32)>], pred: &[Vec<(u32, u32)>]) -> f64 {
    let g: Vec<HashSet<(u32, u32)>> = truth.iter().map(|o| o.iter().copied().collect()).collect();
    let s: Vec<HashSet<(u32, u32)>> = pred.iter().map(|o| o.iter().copied().collect()).collect();
    let sum_g: usize = g.iter().map(HashSet::len).sum();
    let sum_s: usize = s.iter().map(HashSet::len).sum();
    match (sum_g, sum_s) {
        (0, 0) => return 1.0,
        (0, _) | (_, 0) => return 0.0,
        _ => {}
    }
    0.5 * (one_side(&g, &s, sum_g) + one_side(&s, &g, sum_s))
}

/// `Σ_i |A_i|/total * Dice(A_i, B*(A_i))`.
fn one_side(a: &[HashSet<(u32, u32)>], b: &[HashSet<(u32, u32)>], total: usize) -> f64 {
    // Which objects of `b` cover each pixel (objects may overlap each other).
    let mut owners: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
    for (j, obj) in b.iter().enumerate() {
        for &px in obj {
            owners.entry(px).or_default().push(j);
        }
    }
    let mut sum = 0.0;
    for obj in a.iter().filter(|o| !o.is_empty()) {
        let mut overlap: HashMap<usize, usize> = HashMap::new();
        for px in obj {
            for &j in owners.get(px).map(Vec::as_slice).unwrap_or(&[]) {
                *overlap.entry(j).or_default() += 1;
            }
        }
        let best = overlap.into_iter().max_by(|x, y| x.1.cmp(&y.1).then(y.0.cmp(&x.0)));
        let dice = best.map_or(0.0, |(j, inter)| 2.0 * inter as f64 / (obj.len() + b[j].len()) as f64);
        sum += obj.len() as f64 / total as f64 * dice;
    }
    sum
}

/// [`object_dice`] of two masks, objects being their 8-connected foreground
/// components (as [`objects_from_mask`] finds them, no minimum size). Errors
/// when the sizes differ.
pub fn object_dice_masks(truth: &GrayImage, pred: &GrayImage) -> Result<f64, EvalError> {
    same_size(truth, pred)?;
    let pixels = |m: &GrayImage| -> Vec<Vec<(u32, u32)>> {
        objects_from_mask(m, 1)
            .into_iter()
            .filter_map(|o| match o.shape {
                Some(Shape::Pixels(px)) => Some(px),
                _ => None,
            })
            .collect()
    };
    Ok(object_dice(&pixels(truth), &pixels(pred)))
}
