//! Why an evaluation was refused.

/// Everything that can make an evaluation refuse its input. Nothing in this
/// crate panics on input; it returns one of these instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A coordinate or score was NaN or infinite.
    #[error("{what} is not a finite number ({value})")]
    NotFinite {
        /// Which value, e.g. `prediction 3 of image "A00_00": score`.
        what: String,
        /// The offending value.
        value: f64,
    },
    /// The match radius must be a positive finite number of pixels.
    #[error("match radius must be positive and finite, got {0} px")]
    BadRadius(f64),
    /// The score threshold was NaN.
    #[error("score threshold must be a number, got {0}")]
    BadThreshold(f64),
    /// Two masks compared pixel by pixel have different sizes.
    #[error("truth mask is {truth_width}x{truth_height}, prediction {pred_width}x{pred_height}")]
    MaskSizeMismatch {
        /// Width of the truth mask.
        truth_width: u32,
        /// Height of the truth mask.
        truth_height: u32,
        /// Width of the predicted mask.
        pred_width: u32,
        /// Height of the predicted mask.
        pred_height: u32,
    },
    /// An analysed area (mm²) must be positive and finite.
    #[error("analysed area must be positive and finite, got {0} mm²")]
    BadArea(f64),
    /// A field size outside the Nottingham table.
    #[error(
        "field diameter {diameter_mm:.4} mm is outside the Nottingham table ({min_mm:.2} to {max_mm:.2} mm, \
         i.e. field areas {min_area_mm2:.4} to {max_area_mm2:.4} mm²)"
    )]
    FieldOutOfRange {
        /// The requested (or derived) field diameter.
        diameter_mm: f64,
        /// Smallest diameter in the table.
        min_mm: f64,
        /// Largest diameter in the table.
        max_mm: f64,
        /// Smallest field area in the table.
        min_area_mm2: f64,
        /// Largest field area in the table.
        max_area_mm2: f64,
    },
    /// Two rating lists of different lengths.
    #[error("rating lists differ in length: {a} vs {b}")]
    LengthMismatch {
        /// Length of the first list.
        a: usize,
        /// Length of the second list.
        b: usize,
    },
    /// An input that must not be empty was.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// A rating not among the declared categories.
    #[error("rating {0} is not one of the declared categories")]
    UnknownCategory(u8),
    /// A category declared twice.
    #[error("category {0} is declared more than once")]
    DuplicateCategory(u8),
    /// A matching rule name that is not `greedy`, `optimal` or `wang2024`.
    #[error("unknown matching rule {0:?} (expected greedy, optimal or wang2024)")]
    UnknownRule(String),
    /// The embedded field-diameter table could not be parsed (a build defect).
    #[error("embedded field diameter table is malformed: {0}")]
    Table(String),
}
