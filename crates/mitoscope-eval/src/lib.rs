//! Evaluation of mitosis detection and segmentation, without I/O.
//!
//! - [`match_image`]: pairs predicted with ground-truth mitoses of one image
//!   under a [`MatchRule`]: `greedy` (the evalutils/MIDOG rule), `optimal`
//!   (maximum matching, then least total distance) or `wang2024` (the GZMH
//!   papers' nearest-prediction rule).
//! - [`evaluate`]: pooled, per-image and per-subset precision/recall/F1, a
//!   sweep over every score threshold with the best F1, average precision,
//!   FROC and count agreement, as one serialisable [`EvalReport`].
//! - [`segmentation`]: pixel Dice/IoU and the GlaS object-level Dice.
//! - [`score`]: the Nottingham mitotic count score from a count and an area,
//!   and Cohen's kappa.
//!
//! ```
//! use mitoscope_eval::{EvalConfig, ImageInput, MatchRule, Prediction, evaluate};
//! use mitoscope_geom::Point;
//! let images = vec![ImageInput {
//!     image: "A00_00".into(),
//!     subset: Some("test".into()),
//!     truth: vec![Point::new(100.0, 100.0), Point::new(300.0, 300.0)],
//!     pred: vec![
//!         Prediction { point: Point::new(104.0, 97.0), score: 0.9 }, // 5 px away: hit
//!         Prediction { point: Point::new(600.0, 50.0), score: 0.4 }, // nowhere near: false positive
//!     ],
//! }];
//! let cfg = EvalConfig { radius_px: 30.0, rule: MatchRule::Greedy, threshold: None };
//! let report = evaluate(&images, &cfg).unwrap();
//! assert_eq!((report.pooled.tp, report.pooled.fp, report.pooled.fn_), (1, 1, 1));
//! assert_eq!(report.pooled.f1, 0.5);
//! // Dropping the 0.4 prediction is best: precision 1, recall 1/2.
//! assert_eq!(report.sweep.best_threshold, Some(0.9));
//! assert!((report.sweep.best_f1 - 2.0 / 3.0).abs() < 1e-12);
//! assert_eq!(report.average_precision, 0.5);
//! ```
#![deny(missing_docs)]

mod error;
mod evaluate;
mod matching;
mod metrics;
pub mod score;
pub mod segmentation;

pub use error::EvalError;
pub use evaluate::{EvalConfig, EvalReport, ImageInput, Prediction, evaluate, inputs_from_sets};
pub use matching::{ImageMatch, MatchRule, match_image};
pub use metrics::{
    CountStats, FROC_RATES, Froc, FrocPoint, FrocRate, ImageMetrics, MAX_REPORTED_POINTS, Metrics, SweepPoint,
    ThresholdSweep, average_precision, froc_at_rates,
};
