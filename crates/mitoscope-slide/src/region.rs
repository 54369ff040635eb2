//! Region bounds checks and tile assembly shared by the readers.

use std::path::Path;

use image::RgbImage;

use crate::cache::TileData;
use crate::{Level, MAX_REGION_PIXELS, SlideError};

/// The part of a requested region that lies inside the level, in level
/// pixels (`x0..x1`, `y0..y1`), and where it lands in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Clip {
    pub x0: u64,
    pub y0: u64,
    pub x1: u64,
    pub y1: u64,
    /// Output column of `x0`.
    pub out_x: u32,
    /// Output row of `y0`.
    pub out_y: u32,
}

/// Validates a region request and clips it to the level.
pub(crate) fn check_region(
    path: &Path,
    levels: &[Level],
    level: usize,
    x: i64,
    y: i64,
    width: u32,
    height: u32,
) -> Result<(Level, Clip), SlideError> {
    let l = *levels.get(level).ok_or_else(|| SlideError::NoSuchLevel {
        path: path.to_owned(),
        level,
        count: levels.len(),
    })?;
    if width == 0 || height == 0 {
        return Err(SlideError::EmptyRegion { path: path.to_owned(), width, height });
    }
    let pixels = width as u64 * height as u64;
    if pixels > MAX_REGION_PIXELS {
        return Err(SlideError::TooLarge {
            path: path.to_owned(),
            what: format!("region {width}x{height}"),
            pixels,
            limit: MAX_REGION_PIXELS,
        });
    }
    // i128: x + width cannot overflow whatever the caller passes.
    let (rx0, ry0) = (x as i128, y as i128);
    let (rx1, ry1) = (rx0 + width as i128, ry0 + height as i128);
    let (lw, lh) = (l.width as i128, l.height as i128);
    let (x0, y0, x1, y1) = (rx0.max(0), ry0.max(0), rx1.min(lw), ry1.min(lh));
    if x0 >= x1 || y0 >= y1 {
        return Err(SlideError::RegionOutside {
            path: path.to_owned(),
            level,
            x,
            y,
            width,
            height,
            level_width: l.width,
            level_height: l.height,
        });
    }
    Ok((
        l,
        Clip {
            x0: x0 as u64,
            y0: y0 as u64,
            x1: x1 as u64,
            y1: y1 as u64,
            out_x: (x0 - rx0) as u32,
            out_y: (y0 - ry0) as u32,
        },
    ))
}

/// Builds the output image from the tiles the clip touches. `tile(col, row)`
/// returns the decoded RGB8 data of one tile, `tile_data_width(col)` wide
/// (edge tiles are cropped to the level).
pub(crate) fn assemble(
    level: &Level,
    clip: Clip,
    width: u32,
    height: u32,
    mut tile: impl FnMut(u32, u32) -> Result<TileData, SlideError>,
) -> Result<RgbImage, SlideError> {
    let mut out = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let (tw, th) = (level.tile_width as u64, level.tile_height as u64);
    let out_stride = width as usize * 3;
    let buf: &mut [u8] = &mut out;
    for row in clip.y0 / th..=(clip.y1 - 1) / th {
        for col in clip.x0 / tw..=(clip.x1 - 1) / tw {
            let data = tile(col as u32, row as u32)?;
            let (tx, ty) = (col * tw, row * th);
            let data_w = tw.min(level.width - tx) as usize;
            // Overlap of this tile with the clip, in level pixels.
            let (ox0, ox1) = (clip.x0.max(tx), clip.x1.min(tx + tw));
            let (oy0, oy1) = (clip.y0.max(ty), clip.y1.min(ty + th));
            let n = (ox1 - ox0) as usize * 3;
            for yy in oy0..oy1 {
                let src = ((yy - ty) as usize * data_w + (ox0 - tx) as usize) * 3;
                let dst_row = (yy - clip.y0) as usize + clip.out_y as usize;
                let dst = dst_row * out_stride + ((ox0 - clip.x0) as usize + clip.out_x as usize) * 3;
                buf[dst..dst + n].copy_from_slice(&data[src..src + n]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn level() -> Level {
        Level { width: 5, height: 3, downsample: 1.0, tile_width: 2, tile_height: 2 }
    }

    #[test]
    fn clip_and_errors() {
        let p = Path::new("x.svs");
        let ls = [level()];
        let (_, c) = check_region(p, &ls, 0, -2, 1, 4, 4).unwrap();
        assert_eq!(c, Clip { x0: 0, y0: 1, x1: 2, y1: 3, out_x: 2, out_y: 0 });
        assert!(matches!(check_region(p, &ls, 0, 5, 0, 1, 1), Err(SlideError::RegionOutside { .. })));
        assert!(matches!(check_region(p, &ls, 0, -1, 0, 1, 1), Err(SlideError::RegionOutside { .. })));
        assert!(matches!(check_region(p, &ls, 0, 0, 0, 0, 1), Err(SlideError::EmptyRegion { .. })));
        assert!(matches!(check_region(p, &ls, 1, 0, 0, 1, 1), Err(SlideError::NoSuchLevel { .. })));
        assert!(matches!(check_region(p, &ls, 0, i64::MAX, 0, 1, 1), Err(SlideError::RegionOutside { .. })));
        assert!(matches!(check_region(p, &ls, 0, 0, 0, u32::MAX, u32::MAX), Err(SlideError::TooLarge { .. })));
    }

    #[test]
    fn assembles_tiles_and_pads_white() {
        // Pixel value = 10 * x + y in the red channel.
        let l = level();
        let tile = |col: u32, row: u32| {
            let (tx, ty) = (col as u64 * 2, row as u64 * 2);
            let (w, h) = (2.min(5 - tx), 2.min(3 - ty));
            let mut v = Vec::new();
            for y in ty..ty + h {
                for x in tx..tx + w {
                    v.extend([(10 * x + y) as u8, 0, 0]);
                }
            }
            Ok(Arc::new(v))
        };
        let (_, c) = check_region(Path::new("x"), &[l], 0, 3, 1, 4, 3).unwrap();
        let img = assemble(&l, c, 4, 3, tile).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [31, 0, 0]);
        assert_eq!(img.get_pixel(1, 1).0, [42, 0, 0]);
        assert_eq!(img.get_pixel(2, 0).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(0, 2).0, [255, 255, 255]);
    }
}
