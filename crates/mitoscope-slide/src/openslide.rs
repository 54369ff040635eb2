//! Vendor formats through OpenSlide (cargo feature `openslide`).
//!
//! With the feature on, [`crate::open_with`] hands OpenSlide every file the
//! built-in reader should not serve: non-TIFF files (MIRAX `.mrxs`,
//! Hamamatsu `.vms`, DICOM where the library reads it, …) and TIFF-based
//! files that OpenSlide identifies as another vendor's (Hamamatsu NDPI, Leica
//! SCN, Ventana BIF, Philips TIFF, Trestle). Aperio SVS and generic TIFF stay
//! with the built-in reader, unless it refuses a file (e.g. JPEG 2000 tiles),
//! in which case OpenSlide gets a try. [`open_with`] in this module always
//! uses OpenSlide, whatever the format. Either way the result is a
//! `Box<dyn` [`Slide`]`>` and the rest of Mitoscope does not know which
//! reader served it.
//!
//! The library is the system one (Debian: `libopenslide-dev`, OpenSlide
//! 3.4.1, which has no DICOM), reached through the `openslide-rs` binding;
//! without the feature nothing here touches it and [`open_with`] returns an
//! error saying how to build with it.
//!
//! Conventions kept from the built-in reader:
//! - [`Slide::read_region`] takes the pixels *of the level it reads* (OpenSlide
//!   itself takes level-0 `x, y`; the conversion is `round(x * downsample)`),
//!   has the same bounds checks and errors, and pads the part outside the
//!   level with white. Where `x * downsample` is not a whole number (levels whose size is not
//!   an exact fraction of level 0), OpenSlide places the region up to half a
//!   level pixel off and interpolates. Transparent pixels inside the level
//!   (areas a scanner skipped) are composited over white too. Large regions
//!   are read in bands, so at most 16 MiB of OpenSlide's ARGB buffer is held
//!   besides the RGB result.
//! - mpp: the override, else `openslide.mpp-x` / `openslide.mpp-y` (their mean
//!   when both are given; [`crate::MppSource::OpenSlide`]), else a guess from
//!   `openslide.objective-power`, else [`crate::DEFAULT_GUESS_MPP`], with the
//!   same plausibility filter and warnings as the built-in reader.
//! - Errors never panic and always name the file: [`SlideError::OpenSlide`]
//!   carries OpenSlide's message (and the level and region for reads). An
//!   OpenSlide handle is unusable after its first error, so a failed read
//!   reopens the slide: one corrupt tile fails alone, as with the built-in
//!   reader.
//!
//! [`OpenOptions::tile_cache_bytes`] is not applied: OpenSlide 3.4 keeps its
//! own decoded-tile cache (the size can only be set from OpenSlide 4.0).

use std::path::Path;

use crate::{OpenOptions, Slide, SlideError};

#[cfg(feature = "openslide")]
pub use imp::{OpenSlideSlide, library_version};

/// Opens `path` with OpenSlide, whatever its format (see the module docs).
/// Without the `openslide` feature this is always an error.
pub fn open_with(path: &Path, options: &OpenOptions) -> Result<Box<dyn Slide>, SlideError> {
    #[cfg(feature = "openslide")]
    {
        Ok(Box::new(OpenSlideSlide::open_with(path, options)?))
    }
    #[cfg(not(feature = "openslide"))]
    {
        let _ = options;
        Err(SlideError::OpenSlide {
            path: path.to_owned(),
            message: "this build has no OpenSlide support; rebuild with --features openslide \
                      (needs the system libopenslide, Debian: libopenslide-dev)"
                .into(),
        })
    }
}

/// Whether OpenSlide rather than the built-in reader should serve this
/// TIFF-based file: OpenSlide identifies it as a vendor format other than
/// Aperio or generic TIFF. False without the feature.
pub(crate) fn serves_tiff(path: &Path) -> bool {
    #[cfg(feature = "openslide")]
    {
        imp::serves_tiff(path)
    }
    #[cfg(not(feature = "openslide"))]
    {
        let _ = path;
        false
    }
}

#[cfg(feature = "openslide")]
mod imp {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, RwLock};

    use image::RgbImage;
    use openslide_rs::errors::OpenSlideError as OsError;
    use openslide_rs::{Address, OpenSlide, Region, Size};

    use crate::region::check_region;
    use crate::tiff_slide::settle_mpp_from;
    use crate::{Level, MppInfo, MppSource, OpenOptions, Slide, SlideError, Sniffed};

    /// Pixels read from OpenSlide per call (its buffer is 4 bytes a pixel:
    /// 2^22 px = 16 MiB); larger regions are read in bands of rows.
    const BAND_PIXELS: u64 = 1 << 22;

    /// Tile size reported when OpenSlide states none (`openslide.level[N].tile-*`).
    const DEFAULT_TILE: u32 = 256;

    /// The OpenSlide library's version (e.g. `3.4.1`), when it reports one.
    pub fn library_version() -> Option<String> {
        OpenSlide::version().ok()
    }

    pub(super) fn serves_tiff(path: &Path) -> bool {
        match OpenSlide::detect_vendor(path) {
            Ok(vendor) => !matches!(vendor.as_str(), "aperio" | "generic-tiff"),
            Err(_) => false,
        }
    }

    /// A slide read through OpenSlide. Usually used as `Box<dyn Slide>`
    /// from [`crate::open`].
    pub struct OpenSlideSlide {
        path: PathBuf,
        vendor: String,
        levels: Vec<Level>,
        associated: Vec<String>,
        mpp: MppInfo,
        objective_power: Option<f64>,
        properties: BTreeMap<String, String>,
        /// The open handle; replaced by a fresh one after a library error
        /// (OpenSlide refuses every call on a handle once one has failed).
        handle: RwLock<Arc<OpenSlide>>,
    }

    impl std::fmt::Debug for OpenSlideSlide {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("OpenSlideSlide")
                .field("path", &self.path)
                .field("vendor", &self.vendor)
                .field("levels", &self.levels)
                .field("mpp", &self.mpp)
                .finish_non_exhaustive()
        }
    }

    impl OpenSlideSlide {
        /// Opens a slide with OpenSlide and default options.
        pub fn open(path: impl AsRef<Path>) -> Result<Self, SlideError> {
            Self::open_with(path, &OpenOptions::default())
        }

        /// Opens a slide with OpenSlide: levels, properties, associated image
        /// names and the mpp are read now (no pixels).
        pub fn open_with(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Self, SlideError> {
            let path = path.as_ref();
            let err = |e: OsError| open_error(path, &e);
            let handle = OpenSlide::new(path).map_err(err)?;

            let mut properties = BTreeMap::new();
            for name in handle.property_names().map_err(err)? {
                let value = handle.property_value(&name).map_err(err)?;
                properties.insert(name, value);
            }
            let vendor = properties.get("openslide.vendor").cloned().unwrap_or_else(|| "unknown".into());
            properties.insert("mitoscope.vendor".into(), vendor.clone());

            let dims = handle.all_level_dimensions();
            let downsamples = handle.all_level_downsamples();
            if dims.is_empty() || dims[0].w == 0 || dims[0].h == 0 {
                return Err(SlideError::NoLevels { path: path.to_owned() });
            }
            let tile = |level: usize, what: &str| {
                properties
                    .get(&format!("openslide.level[{level}].tile-{what}"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .filter(|&t| t > 0)
                    .unwrap_or(DEFAULT_TILE)
            };
            let levels = dims
                .iter()
                .zip(downsamples)
                .enumerate()
                .map(|(i, (size, &downsample))| Level {
                    width: size.w as u64,
                    height: size.h as u64,
                    downsample,
                    tile_width: tile(i, "width"),
                    tile_height: tile(i, "height"),
                })
                .collect();

            let number = |key: &str| {
                properties.get(key).and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite() && *v > 0.0)
            };
            let objective_power = number("openslide.objective-power");
            let stated = match (number("openslide.mpp-x"), number("openslide.mpp-y")) {
                (Some(x), Some(y)) => {
                    if (x - y).abs() > 0.01 * x.max(y) {
                        tracing::warn!(
                            "{}: pixels are not square (openslide.mpp-x {x}, mpp-y {y}); using their mean",
                            path.display()
                        );
                    }
                    Some((x + y) / 2.0)
                }
                (x, y) => x.or(y),
            };
            let mpp = settle_mpp_from(path, options.mpp_override, &[(MppSource::OpenSlide, stated)], objective_power);
            let associated = handle.associated_image_names().map_err(err)?;

            Ok(Self {
                path: path.to_owned(),
                vendor,
                levels,
                associated,
                mpp,
                objective_power,
                properties,
                handle: RwLock::new(Arc::new(handle)),
            })
        }

        /// Runs `f` on the current handle; after a library error, replaces
        /// the handle (now unusable) with a freshly opened one.
        fn call<T>(&self, f: impl FnOnce(&OpenSlide) -> Result<T, OsError>) -> Result<T, OsError> {
            let handle = Arc::clone(&self.handle.read().unwrap_or_else(|e| e.into_inner()));
            let result = f(&handle);
            if let Err(OsError::LibraryError(_)) = &result {
                let mut current = self.handle.write().unwrap_or_else(|e| e.into_inner());
                // Another thread may have reopened it already.
                if Arc::ptr_eq(&current, &handle) {
                    match OpenSlide::new(&self.path) {
                        Ok(fresh) => *current = Arc::new(fresh),
                        Err(e) => tracing::warn!("{}: cannot reopen after an error: {e}", self.path.display()),
                    }
                }
            }
            result
        }

        fn error(&self, what: String, e: &OsError) -> SlideError {
            SlideError::OpenSlide { path: self.path.clone(), message: format!("{what}: {}", os_message(e)) }
        }
    }

    impl Slide for OpenSlideSlide {
        fn path(&self) -> &Path {
            &self.path
        }
        fn vendor(&self) -> &str {
            &self.vendor
        }
        fn levels(&self) -> &[Level] {
            &self.levels
        }
        fn mpp(&self) -> MppInfo {
            self.mpp
        }
        fn objective_power(&self) -> Option<f64> {
            self.objective_power
        }
        fn properties(&self) -> &BTreeMap<String, String> {
            &self.properties
        }
        fn associated_names(&self) -> Vec<String> {
            self.associated.clone()
        }

        fn read_associated(&self, name: &str) -> Result<RgbImage, SlideError> {
            if !self.associated.iter().any(|n| n == name) {
                return Err(SlideError::NoSuchAssociated {
                    path: self.path.clone(),
                    name: name.to_owned(),
                    available: self.associated.join(", "),
                });
            }
            let what = || format!("associated image '{name}'");
            let size = self.call(|h| h.associated_image_dimensions(name)).map_err(|e| self.error(what(), &e))?;
            let pixels = size.w as u64 * size.h as u64;
            crate::check_associated_size(&self.path, name, pixels)?;
            let (size, argb) = self.call(|h| h.read_associated_buffer(name)).map_err(|e| self.error(what(), &e))?;
            let mut rgb = vec![0u8; size.w as usize * size.h as usize * 3];
            argb_over_white(&argb, &mut rgb).map_err(|e| self.error(what(), &e))?;
            RgbImage::from_raw(size.w, size.h, rgb).ok_or_else(|| {
                self.error(what(), &OsError::ImageBufferTooSmall { expected: pixels as usize * 3, actual: 0 })
            })
        }

        fn read_region(&self, level: usize, x: i64, y: i64, width: u32, height: u32) -> Result<RgbImage, SlideError> {
            let (l, clip) = check_region(&self.path, &self.levels, level, x, y, width, height)?;
            let what = || format!("level {level} region {width}x{height} at ({x}, {y})");
            let mut out = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
            let clip_w = clip.x1 - clip.x0;
            let band_rows = (BAND_PIXELS / clip_w).max(1);
            let out_stride = width as usize * 3;
            let level0 = |v: u64| {
                let v0 = (v as f64 * l.downsample).round();
                u32::try_from(v0 as u64).map_err(|e| self.error(what(), &OsError::ValueOutOfRange(e)))
            };
            let mut band_y = clip.y0;
            while band_y < clip.y1 {
                let rows = band_rows.min(clip.y1 - band_y);
                let region = Region {
                    size: Size { w: clip_w as u32, h: rows as u32 },
                    level: level as u32,
                    address: Address { x: level0(clip.x0)?, y: level0(band_y)? },
                };
                let argb = self.call(|h| h.read_region(&region)).map_err(|e| self.error(what(), &e))?;
                let n = clip_w as usize * 3;
                let buf: &mut [u8] = &mut out;
                for r in 0..rows as usize {
                    let src = argb.get(r * clip_w as usize * 4..(r + 1) * clip_w as usize * 4).unwrap_or_default();
                    let dst_row = (band_y - clip.y0) as usize + r + clip.out_y as usize;
                    let dst = dst_row * out_stride + clip.out_x as usize * 3;
                    argb_over_white(src, &mut buf[dst..dst + n]).map_err(|e| self.error(what(), &e))?;
                }
                band_y += rows;
            }
            Ok(out)
        }
    }

    /// OpenSlide's buffers are premultiplied ARGB, one native-endian `u32`
    /// a pixel; composited over white, a channel is `c + 255 - alpha`.
    fn argb_over_white(argb: &[u8], rgb: &mut [u8]) -> Result<(), OsError> {
        // Equal only when argb holds whole 4-byte pixels, as many as rgb's 3-byte ones.
        if argb.len() * 3 != rgb.len() * 4 {
            return Err(OsError::ImageBufferTooSmall { expected: rgb.len() / 3 * 4, actual: argb.len() });
        }
        for (p, out) in argb.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
            let v = u32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
            let [a, r, g, b] = v.to_be_bytes();
            let white = 255 - a;
            out.copy_from_slice(&[r.saturating_add(white), g.saturating_add(white), b.saturating_add(white)]);
        }
        Ok(())
    }

    fn os_message(e: &OsError) -> String {
        match e {
            OsError::UnsupportedFile(_) => {
                let version = library_version().unwrap_or_else(|| "?".into());
                format!("not a slide format OpenSlide {version} recognises")
            }
            OsError::MissingFile(_) => "file not found".into(),
            OsError::LibraryError(m) => m.clone(),
            other => other.to_string(),
        }
    }

    /// The error for a failed open, with a hint for DICOM on OpenSlide 3.
    fn open_error(path: &Path, e: &OsError) -> SlideError {
        let mut message = os_message(e);
        let is_dicom = crate::read_head(path).is_ok_and(|h| crate::sniff(&h) == Sniffed::Dicom);
        if matches!(e, OsError::UnsupportedFile(_)) && is_dicom {
            message.push_str(" (DICOM whole-slide images need OpenSlide 4.0 or newer)");
        }
        SlideError::OpenSlide { path: path.to_owned(), message }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::testutil::{TestLevel, write_planar_tiff, write_tiled_tiff, write_tiled_tiff_with_tags};

        #[test]
        fn premultiplied_argb_over_white() {
            let px = |a: u8, r: u8, g: u8, b: u8| u32::from_be_bytes([a, r, g, b]).to_ne_bytes();
            let argb: Vec<u8> = [px(255, 10, 20, 30), px(0, 0, 0, 0), px(128, 64, 0, 128)].concat();
            let mut rgb = vec![0; 9];
            argb_over_white(&argb, &mut rgb).unwrap();
            assert_eq!(rgb, [10, 20, 30, 255, 255, 255, 191, 127, 255]);
            assert!(argb_over_white(&argb, &mut [0; 6]).is_err());
        }

        /// Value of pixel (x, y) at `level` in the synthetic pyramid (as in `tiff_slide`).
        fn px(level: usize, x: u32, y: u32) -> [u8; 3] {
            [(x % 251) as u8, (y % 241) as u8, (level * 40 + (x / 7 + y / 5) as usize % 40) as u8]
        }

        #[test]
        fn synthetic_tiled_pyramid_through_openslide() {
            let dir = tempfile::tempdir().unwrap();
            let levels: Vec<TestLevel> = [(320u32, 192u32), (160, 96), (80, 48)]
                .iter()
                .enumerate()
                .map(|(i, &(w, h))| TestLevel::from_fn(w, h, Some((64, 48)), |x, y| px(i, x, y)))
                .collect();
            let path = dir.path().join("pyramid.tiff");
            write_tiled_tiff(&path, &levels, Some(4.0)).unwrap();

            let s = OpenSlideSlide::open(&path).unwrap();
            assert_eq!(s.vendor(), "generic-tiff");
            assert_eq!(s.properties()["openslide.vendor"], "generic-tiff");
            let dims: Vec<_> = (0..s.level_count()).map(|l| s.dimensions(l).unwrap()).collect();
            assert_eq!(dims, [(320, 192), (160, 96), (80, 48)]);
            assert_eq!(s.downsample(2), Some(4.0));
            assert_eq!((s.levels()[0].tile_width, s.levels()[0].tile_height), (64, 48));
            for level in 0..3 {
                let (lw, lh) = s.dimensions(level).unwrap();
                // Straddles tiles and runs over the bottom-right edge; the
                // level pixels equal what was written (uncompressed).
                let (x, y) = (lw as i64 - 50, lh as i64 - 30);
                let r = s.read_region(level, x, y, 70, 41).unwrap();
                for (i, j, p) in r.enumerate_pixels() {
                    let (gx, gy) = (x + i as i64, y + j as i64);
                    let want =
                        if gx < lw as i64 && gy < lh as i64 { px(level, gx as u32, gy as u32) } else { [255; 3] };
                    assert_eq!(p.0, want, "level {level} at ({gx}, {gy})");
                }
                // Negative origin: the part left and above is white.
                let r = s.read_region(level, -3, -2, 5, 4).unwrap();
                assert_eq!(r.get_pixel(0, 0).0, [255; 3]);
                assert_eq!(r.get_pixel(3, 2).0, px(level, 0, 0));
            }
            assert!(matches!(s.read_region(0, 320, 0, 5, 5), Err(SlideError::RegionOutside { .. })));
            assert!(matches!(s.read_region(0, 0, 0, 5, 0), Err(SlideError::EmptyRegion { .. })));
            assert!(matches!(s.read_region(3, 0, 0, 1, 1), Err(SlideError::NoSuchLevel { count: 3, .. })));
            assert!(matches!(s.read_region(0, 0, 0, 1 << 20, 1 << 20), Err(SlideError::TooLarge { .. })));
            assert!(matches!(s.read_associated("label"), Err(SlideError::NoSuchAssociated { .. })));
        }

        #[test]
        fn bands_stitch_back_exactly() {
            let dir = tempfile::tempdir().unwrap();
            let level = TestLevel::from_fn(2100, 2100, Some((256, 256)), |x, y| px(0, x, y));
            let path = dir.path().join("big.tiff");
            write_tiled_tiff(&path, &[level], None).unwrap();
            let s = OpenSlideSlide::open(&path).unwrap();
            // 2100 x 2100 > BAND_PIXELS: read in two bands.
            let r = s.read_region(0, 0, 0, 2100, 2100).unwrap();
            for (x, y, p) in r.enumerate_pixels() {
                assert_eq!(p.0, px(0, x, y), "at ({x}, {y})");
            }
            // No resolution stated: guessed, as with the built-in reader.
            assert!(s.mpp().mpp_guessed);
        }

        #[test]
        fn vendor_tiffs_are_routed_to_openslide() {
            let dir = tempfile::tempdir().unwrap();
            let level = || TestLevel::from_fn(128, 96, Some((64, 48)), |x, y| px(0, x, y));
            let plain = dir.path().join("plain.tiff");
            write_tiled_tiff(&plain, &[level()], None).unwrap();
            assert!(!serves_tiff(&plain));
            let s = crate::open(&plain).unwrap();
            assert!(!s.properties().contains_key("openslide.vendor"), "the built-in reader serves generic TIFF");

            // Tag 65420 marks a Hamamatsu NDPI file: OpenSlide gets it. This
            // fake lacks NDPI's other tags, so OpenSlide then refuses it,
            // naming the file (the built-in reader would have read it as a
            // generic TIFF, wrongly for a real NDPI).
            let ndpi = dir.path().join("fake.ndpi");
            write_tiled_tiff_with_tags(&ndpi, &[level()], None, &[(65420, 1)]).unwrap();
            assert!(serves_tiff(&ndpi));
            let err = crate::open(&ndpi).map(|_| ()).unwrap_err();
            assert!(matches!(err, SlideError::OpenSlide { .. }), "{err:?}");
            assert!(err.to_string().contains("fake.ndpi"), "{err}");
        }

        #[test]
        fn tiffs_the_builtin_reader_refuses_fall_back_to_openslide() {
            let dir = tempfile::tempdir().unwrap();
            let level = TestLevel::from_fn(100, 70, None, |x, y| px(0, x, y));
            let path = dir.path().join("planar.tiff");
            write_planar_tiff(&path, &level, (32, 32)).unwrap();
            let builtin = crate::TiffSlide::open(&path).unwrap_err();
            assert!(matches!(builtin, SlideError::Unsupported { .. }), "{builtin:?}");
            let s = crate::open(&path).unwrap();
            assert_eq!(s.properties()["openslide.vendor"], "generic-tiff");
            let r = s.read_region(0, 20, 30, 50, 40).unwrap();
            for (x, y, p) in r.enumerate_pixels() {
                assert_eq!(p.0, px(0, x + 20, y + 30), "at ({}, {})", x + 20, y + 30);
            }
        }

        #[test]
        fn garbage_and_missing_files_are_errors() {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("noise.mrxs");
            std::fs::write(&p, b"not a slide").unwrap();
            let err = OpenSlideSlide::open(&p).unwrap_err();
            assert!(matches!(err, SlideError::OpenSlide { .. }), "{err:?}");
            assert!(err.to_string().contains("noise.mrxs") && err.to_string().contains("recognises"), "{err}");
            let err = OpenSlideSlide::open(dir.path().join("gone.ndpi")).unwrap_err().to_string();
            assert!(err.contains("gone.ndpi") && err.contains("not found"), "{err}");
        }
    }
}
