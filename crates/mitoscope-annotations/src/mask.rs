//! Binary masks <-> objects.
//!
//! A mask is an 8-bit grayscale image where any non-zero pixel is foreground
//! (readers normalise 0/1, 0/255 and coloured masks to that before calling
//! here). Objects are the 8-connected components of the foreground, as the
//! GZMH and ICPR 2012 masks are drawn.

use image::{GrayImage, ImageBuffer, Luma};
use imageproc::region_labelling::{Connectivity, connected_components};

use crate::{Annotation, ObjectClass, Shape};

/// Foreground value written by [`rasterise`].
pub const FOREGROUND: u8 = 255;

/// Every 8-connected foreground component of `mask` as a mitosis with its
/// pixel set, centroid and minimum bounding rectangle, in raster order of each
/// component's first pixel. Components smaller than `min_pixels` are dropped
/// (JPEG-stored masks carry speckle).
pub fn objects_from_mask(mask: &GrayImage, min_pixels: usize) -> Vec<Annotation> {
    // imageproc labels runs of *equal* values; binarise so that a mask whose
    // foreground holds several grey levels still forms one component.
    let raw: Vec<u8> = mask.as_raw().iter().map(|&v| if v > 0 { FOREGROUND } else { 0 }).collect();
    let binary = GrayImage::from_raw(mask.width(), mask.height(), raw).unwrap_or_else(|| GrayImage::new(0, 0));
    if !binary.as_raw().contains(&FOREGROUND) {
        return Vec::new(); // most HPFs hold no mitosis: skip the labelling pass
    }
    components_as_objects(&connected_components(&binary, Connectivity::Eight, Luma([0u8])), min_pixels)
}

/// Every 8-connected run of one non-zero label of an instance map (see
/// `mitoscope_imaging::instance_labels`) as a mitosis, as
/// [`objects_from_mask`] does for a binary mask: figures that touch but
/// carry different labels stay apart.
pub fn objects_from_labels(labels: &ImageBuffer<Luma<u32>, Vec<u32>>, min_pixels: usize) -> Vec<Annotation> {
    if !labels.as_raw().iter().any(|&v| v != 0) {
        return Vec::new();
    }
    components_as_objects(&connected_components(labels, Connectivity::Eight, Luma([0u32])), min_pixels)
}

fn components_as_objects(labels: &ImageBuffer<Luma<u32>, Vec<u32>>, min_pixels: usize) -> Vec<Annotation> {
    let mut components: Vec<Vec<(u32, u32)>> = Vec::new();
    let width = labels.width() as usize;
    for (i, &label) in labels.as_raw().iter().enumerate() {
        let l = label as usize;
        if l == 0 {
            continue;
        }
        let (x, y) = ((i % width) as u32, (i / width) as u32);
        if components.len() < l {
            components.resize_with(l, Vec::new);
        }
        components[l - 1].push((x, y));
    }
    // Labels are assigned in raster order of first pixel, so this order is stable.
    components
        .into_iter()
        .filter(|c| !c.is_empty() && c.len() >= min_pixels)
        .filter_map(|c| Annotation::from_shape(Shape::Pixels(c), ObjectClass::Mitosis))
        .collect()
}

/// Draws the shapes of `objects` into a `width` x `height` mask (255 = object).
/// Returns the mask and how many objects had no shape (point- or box-only
/// objects are not guessed at) and so were not drawn.
pub fn rasterise<'a>(objects: impl IntoIterator<Item = &'a Annotation>, width: u32, height: u32) -> (GrayImage, usize) {
    let mut mask = GrayImage::new(width, height);
    let mut skipped = 0;
    for obj in objects {
        match &obj.shape {
            Some(Shape::Pixels(px)) => {
                for &(x, y) in px {
                    if x < width && y < height {
                        mask.put_pixel(x, y, Luma([FOREGROUND]));
                    }
                }
            }
            Some(shape @ (Shape::Polygon(_) | Shape::MultiPolygon(_))) => {
                let mut drawn = false;
                for poly in shape.polygons() {
                    let pts: Vec<imageproc::point::Point<i32>> = poly
                        .vertices
                        .iter()
                        .map(|p| imageproc::point::Point::new(p.x.round() as i32, p.y.round() as i32))
                        .collect();
                    // draw_polygon_mut refuses a closed ring; Polygon::new already opened it,
                    // but rounding can make the ends meet again.
                    let pts = if pts.len() > 1 && pts.first() == pts.last() { &pts[..pts.len() - 1] } else { &pts[..] };
                    if pts.len() >= 3 {
                        imageproc::drawing::draw_polygon_mut(&mut mask, pts, Luma([FOREGROUND]));
                        drawn = true;
                    }
                }
                if !drawn {
                    skipped += 1;
                }
            }
            _ => skipped += 1,
        }
    }
    (mask, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mitoscope_geom::{BBox, Point};
    use proptest::prelude::*;

    fn mask_from(rows: &[&str]) -> GrayImage {
        GrayImage::from_fn(rows[0].len() as u32, rows.len() as u32, |x, y| {
            Luma([if rows[y as usize].as_bytes()[x as usize] == b'#' { 1 } else { 0 }])
        })
    }

    #[test]
    fn diagonal_pixels_join_under_8_connectivity() {
        let m = mask_from(&["#....", ".#...", "....#", "...##"]);
        let objs = objects_from_mask(&m, 1);
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].centroid, Point::new(0.5, 0.5));
        assert_eq!(objs[0].bbox, Some(BBox { x_min: 0.0, y_min: 0.0, x_max: 1.0, y_max: 1.0 }));
        assert_eq!(objs[1].bbox, Some(BBox { x_min: 3.0, y_min: 2.0, x_max: 4.0, y_max: 3.0 }));
        assert_eq!(objects_from_mask(&m, 3).len(), 1, "min_pixels drops the 2-pixel blob");
    }

    #[test]
    fn touching_labels_stay_apart() {
        // Labels 1 and 2 share an edge (and 3 a corner with 2); a binary
        // reading would see one figure.
        let rows = ["11220", "11223", "00003"];
        let labels =
            ImageBuffer::from_fn(5, 3, |x, y| Luma([u32::from(rows[y as usize].as_bytes()[x as usize] - b'0')]));
        let objs = objects_from_labels(&labels, 1);
        assert_eq!(objs.iter().map(|o| o.shape.as_ref().unwrap().area_px()).collect::<Vec<_>>(), [4.0, 4.0, 2.0]);
        assert_eq!(objs[0].centroid, Point::new(0.5, 0.5));
        assert_eq!(objects_from_labels(&labels, 3).len(), 2);
        assert!(objects_from_labels(&ImageBuffer::new(3, 3), 1).is_empty());
    }

    #[test]
    fn grey_levels_form_one_component() {
        let mut m = GrayImage::new(4, 1);
        m.put_pixel(1, 0, Luma([200]));
        m.put_pixel(2, 0, Luma([255]));
        assert_eq!(objects_from_mask(&m, 1).len(), 1);
    }

    #[test]
    fn polygon_rasterises_inside_its_box() {
        let poly = mitoscope_geom::Polygon::new(vec![
            Point::new(2.0, 2.0),
            Point::new(8.0, 2.0),
            Point::new(8.0, 6.0),
            Point::new(2.0, 6.0),
        ]);
        let obj = Annotation::from_shape(Shape::Polygon(poly), ObjectClass::Mitosis).unwrap();
        let point_only = Annotation::point(Point::new(1.0, 1.0), ObjectClass::Mitosis);
        let (m, skipped) = rasterise([&obj, &point_only], 10, 10);
        assert_eq!(skipped, 1);
        let back = objects_from_mask(&m, 1);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].bbox, Some(BBox { x_min: 2.0, y_min: 2.0, x_max: 8.0, y_max: 6.0 }));
    }

    #[test]
    fn a_multipolygon_rasterises_every_part_and_nothing_between() {
        let square = |x0: f64, y0: f64, side: f64| {
            mitoscope_geom::Polygon::new(vec![
                Point::new(x0, y0),
                Point::new(x0 + side, y0),
                Point::new(x0 + side, y0 + side),
                Point::new(x0, y0 + side),
            ])
        };
        // Two masses of an anaphase figure, 4x4 and 2x2 squares, 6 px apart.
        let shape = Shape::MultiPolygon(vec![square(2.0, 2.0, 4.0), square(12.0, 2.0, 2.0)]);
        assert_eq!(shape.area_px(), 20.0);
        // Area-weighted: (16 * 4 + 4 * 13) / 20 = 5.8 across, (16 * 4 + 4 * 3) / 20 = 3.8 down.
        let c = shape.centroid().unwrap();
        assert!((c.x - 5.8).abs() < 1e-12 && (c.y - 3.8).abs() < 1e-12, "{c:?}");
        assert_eq!(shape.bbox(), Some(BBox { x_min: 2.0, y_min: 2.0, x_max: 14.0, y_max: 6.0 }));
        let obj = Annotation::from_shape(shape, ObjectClass::Mitosis).unwrap();
        let (m, skipped) = rasterise([&obj], 20, 10);
        assert_eq!(skipped, 0);
        let back = objects_from_mask(&m, 1);
        assert_eq!(back.len(), 2, "two parts, not their hull");
        assert_eq!(back[0].bbox, Some(BBox { x_min: 2.0, y_min: 2.0, x_max: 6.0, y_max: 6.0 }));
        assert_eq!(back[1].bbox, Some(BBox { x_min: 12.0, y_min: 2.0, x_max: 14.0, y_max: 4.0 }));
        assert!((7..12).all(|x| m.get_pixel(x, 3).0[0] == 0), "the gap stays empty");
    }

    proptest! {
        // mask -> objects -> mask is the identity on the foreground.
        #[test]
        fn mask_round_trip(bits in proptest::collection::vec(any::<bool>(), 12 * 9)) {
            let m = GrayImage::from_fn(12, 9, |x, y| Luma([if bits[(y * 12 + x) as usize] { 255 } else { 0 }]));
            let objs = objects_from_mask(&m, 1);
            let (back, skipped) = rasterise(&objs, 12, 9);
            prop_assert_eq!(skipped, 0);
            prop_assert_eq!(back, m);
        }
    }
}
