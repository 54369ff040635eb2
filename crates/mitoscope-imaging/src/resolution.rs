//! Microns per pixel stated in TIFF metadata (`XResolution` +
//! `ResolutionUnit`), shared by the HPF reader ([`stated_mpp`]) and the slide
//! reader (which passes its own open decoder to [`tiff_decoder_mpp`]).

use std::io::{Read, Seek};
use std::path::Path;

use tiff::decoder::Decoder;
use tiff::decoder::ifd::Value;
use tiff::tags::Tag;

/// Resolutions outside this range (µm/px) are not microscopy but a print or
/// screen density: a TIFF writer's 72 dpi default (353 µm/px), an image
/// editor's 300 dpi (85 µm/px), a flatbed scan at up to 2400 dpi (11 µm/px);
/// the coarsest slide scan (1x) is about 10 µm/px. They are ignored.
pub const PLAUSIBLE_MPP: std::ops::RangeInclusive<f64> = 0.01..=10.0;

/// µm/px of the decoder's current image from `XResolution` and
/// `ResolutionUnit` (2 = inch, the TIFF default; 3 = cm); `None` when absent,
/// in another unit, or implausible (see [`PLAUSIBLE_MPP`]).
pub fn tiff_decoder_mpp<R: Read + Seek>(dec: &mut Decoder<R>) -> Option<f64> {
    let unit = dec.find_tag_unsigned::<u16>(Tag::ResolutionUnit).ok().flatten().unwrap_or(2);
    let res = match dec.find_tag(Tag::XResolution).ok().flatten()? {
        Value::Rational(n, d) if d != 0 => f64::from(n) / f64::from(d),
        Value::Double(v) => v,
        Value::Float(v) => f64::from(v),
        _ => return None,
    };
    let um_per_unit = match unit {
        2 => 25_400.0,
        3 => 10_000.0,
        _ => return None,
    };
    let mpp = um_per_unit / res;
    if mpp.is_finite() && PLAUSIBLE_MPP.contains(&mpp) {
        Some(mpp)
    } else {
        tracing::debug!("ignoring TIFF resolution {res} per unit {unit} ({mpp} µm/px): not a microscope resolution");
        None
    }
}

/// µm/px an image file states about itself: TIFF resolution tags; `None` for
/// other formats (PNG and JPEG density fields are screen dpi in practice), for
/// unreadable files (decoding reports those) and for implausible values.
pub fn stated_mpp(path: &Path) -> Option<f64> {
    let is_tiff = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("tif") || e.eq_ignore_ascii_case("tiff"));
    if !is_tiff {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let mut dec = Decoder::new(std::io::BufReader::new(file)).ok()?;
    tiff_decoder_mpp(&mut dec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiff::encoder::{Rational, TiffEncoder, colortype};

    fn write_tiff(path: &Path, res: Option<(u32, u16)>) {
        let file = std::fs::File::create(path).unwrap();
        let mut enc = TiffEncoder::new(file).unwrap();
        let mut img = enc.new_image::<colortype::RGB8>(4, 4).unwrap();
        if let Some((per_cm, unit)) = res {
            img.resolution(tiff::tags::ResolutionUnit::Centimeter, Rational { n: per_cm, d: 1 });
            if unit == 2 {
                img.resolution_unit(tiff::tags::ResolutionUnit::Inch);
            }
        }
        img.write_data(&[200u8; 48]).unwrap();
    }

    #[test]
    fn reads_centimetre_and_inch_resolutions_and_ignores_screen_dpi() {
        let dir = tempfile::tempdir().unwrap();
        let cm = dir.path().join("cm.tif");
        write_tiff(&cm, Some((40_000, 3))); // 4 px/µm
        assert_eq!(stated_mpp(&cm), Some(0.25));
        let inch = dir.path().join("inch.tiff");
        write_tiff(&inch, Some((101_600, 2))); // 101600 px/inch = 4 px/µm
        assert_eq!(stated_mpp(&inch), Some(0.25));
        let dpi = dir.path().join("dpi.tif");
        write_tiff(&dpi, Some((72, 2)));
        assert_eq!(stated_mpp(&dpi), None, "72 dpi is a screen default, not a microscope");
        let print = dir.path().join("print.tif");
        write_tiff(&print, Some((300, 2)));
        assert_eq!(stated_mpp(&print), None, "300 dpi (85 µm/px) is an image editor's print density");
        let coarse = dir.path().join("coarse.tif");
        write_tiff(&coarse, Some((1_000, 3))); // 10 µm/px: a 1x overview
        assert_eq!(stated_mpp(&coarse), Some(10.0));
        let none = dir.path().join("none.tif");
        write_tiff(&none, None);
        assert_eq!(stated_mpp(&none), None);
        assert_eq!(stated_mpp(&dir.path().join("missing.tif")), None);
        assert_eq!(stated_mpp(&dir.path().join("x.png")), None);
    }
}
