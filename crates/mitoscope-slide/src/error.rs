//! Errors of slide reading ([`SlideError`], always naming the file) and of
//! the pure hotspot logic ([`HotspotError`]).

use std::path::PathBuf;

/// A slide could not be opened or read. Every variant names the file; tile
/// errors also name the level and the tile.
#[derive(Debug, thiserror::Error)]
pub enum SlideError {
    /// Opening or reading the file failed.
    #[error("cannot read slide {path}: {source}")]
    Io {
        /// The slide file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not in a format this build reads.
    #[error("slide {path}: unsupported format ({format}){hint}")]
    UnsupportedFormat {
        /// The slide file.
        path: PathBuf,
        /// What the file looks like (e.g. `DICOM`, `unknown`).
        format: String,
        /// Extra advice, starting with `; ` (empty when none).
        hint: String,
    },
    /// The TIFF structure (header, IFD, tags) is invalid, or a whole-image
    /// (associated image) decode failed.
    #[error("slide {path}: TIFF error in IFD {ifd}: {source}")]
    Tiff {
        /// The slide file.
        path: PathBuf,
        /// Index of the image file directory.
        ifd: usize,
        /// Cause.
        #[source]
        source: tiff::TiffError,
    },
    /// A TIFF feature this reader does not handle (compression, sample layout).
    #[error("slide {path}: IFD {ifd} is not supported: {what}")]
    Unsupported {
        /// The slide file.
        path: PathBuf,
        /// Index of the image file directory.
        ifd: usize,
        /// What is unsupported, with the value found.
        what: String,
    },
    /// A tile (or strip) could not be decoded.
    #[error("slide {path}: cannot decode level {level} tile {tile} (column {col}, row {row}): {source}")]
    Tile {
        /// The slide file.
        path: PathBuf,
        /// Pyramid level.
        level: usize,
        /// Tile (or strip) index in the TIFF.
        tile: u32,
        /// Tile column.
        col: u32,
        /// Tile row.
        row: u32,
        /// Cause.
        #[source]
        source: tiff::TiffError,
    },
    /// A DICOM file that is not a readable whole-slide image, or a series
    /// this reader cannot decode (transfer syntax, layout).
    #[error("slide {path}: DICOM: {what}")]
    Dicom {
        /// The DICOM file.
        path: PathBuf,
        /// What is wrong or unsupported, with the value found.
        what: String,
    },
    /// A decoded tile has an unexpected size or sample layout.
    #[error("slide {path}: level {level} tile {tile} is malformed: {what}")]
    BadTile {
        /// The slide file.
        path: PathBuf,
        /// Pyramid level.
        level: usize,
        /// Tile (or strip) index.
        tile: u32,
        /// Expected vs found.
        what: String,
    },
    /// No pyramid level was found.
    #[error("slide {path} has no readable image level")]
    NoLevels {
        /// The slide file.
        path: PathBuf,
    },
    /// A level index past the last level.
    #[error("slide {path}: level {level} requested, the slide has {count} levels")]
    NoSuchLevel {
        /// The slide file.
        path: PathBuf,
        /// Requested level.
        level: usize,
        /// Number of levels.
        count: usize,
    },
    /// A region of zero width or height.
    #[error("slide {path}: region {width}x{height} is empty")]
    EmptyRegion {
        /// The slide file.
        path: PathBuf,
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// A region with no pixel inside the level.
    #[error(
        "slide {path}: region {width}x{height} at ({x}, {y}) lies wholly outside level {level} ({level_width}x{level_height})"
    )]
    RegionOutside {
        /// The slide file.
        path: PathBuf,
        /// Level.
        level: usize,
        /// Left, level pixels.
        x: i64,
        /// Top, level pixels.
        y: i64,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Level width.
        level_width: u64,
        /// Level height.
        level_height: u64,
    },
    /// A region (or a strip, or an associated image) larger than the memory bound.
    #[error("slide {path}: {what} of {pixels} pixels exceeds the limit of {limit} pixels")]
    TooLarge {
        /// The slide file.
        path: PathBuf,
        /// What was too large.
        what: String,
        /// Its size in pixels.
        pixels: u64,
        /// The limit.
        limit: u64,
    },
    /// The slide has no associated image of that name.
    #[error("slide {path} has no associated image '{name}' (it has: {available})")]
    NoSuchAssociated {
        /// The slide file.
        path: PathBuf,
        /// Requested name.
        name: String,
        /// Names present, comma-separated.
        available: String,
    },
    /// An error reported by OpenSlide (feature `openslide`).
    #[error("slide {path}: openslide: {message}")]
    OpenSlide {
        /// The slide file.
        path: PathBuf,
        /// OpenSlide's message.
        message: String,
    },
}

/// Invalid input to the hotspot / HPF logic.
#[derive(Debug, thiserror::Error)]
pub enum HotspotError {
    /// A parameter out of its domain (field size, N, aspect ratio, extent).
    #[error("invalid hotspot parameter {name}: {why}")]
    BadParameter {
        /// Parameter name.
        name: &'static str,
        /// Why, with the value found.
        why: String,
    },
    /// A detection with a NaN or infinite coordinate.
    #[error("detection {index} has a non-finite coordinate ({x}, {y})")]
    NonFinitePoint {
        /// Index in the input.
        index: usize,
        /// x.
        x: f64,
        /// y.
        y: f64,
    },
    /// The mitotic score could not be computed (e.g. field size outside the table).
    #[error("mitotic score: {0}")]
    Score(#[from] mitoscope_eval::EvalError),
}
