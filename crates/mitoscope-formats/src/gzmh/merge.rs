//! One object per mitosis from a mask's components and the detection labels,
//! with a cross-check of the two.
//!
//! A label and a component are the same mitosis when the label's centroid
//! lies on the component, or its box overlaps the component's minimum
//! bounding rectangle, or its position is within a few pixels of that
//! rectangle; pairs are taken greedily, best first, one to one. A pair keeps
//! the mask's pixel set as shape and the label's centroid and box (the
//! detection ground truth), falling back to the mask's where the label lacks one.

use mitoscope_annotations::{Annotation, Shape};
use mitoscope_geom::{BBox, Point};

use super::labels::LabelObject;

/// Box corners may differ by this many pixels and still agree (inclusive vs
/// exclusive right edges, rounding).
const CORNER_TOLERANCE_PX: f64 = 3.0;
/// Below this IoU (and beyond the corner tolerance) a label box disagrees with its component.
const AGREE_IOU: f64 = 0.5;
/// A label centroid this close to a component's box may still be that mitosis.
const NEAR_PX: f64 = 3.0;

/// Objects for one image and what disagreed.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    pub(crate) objects: Vec<Annotation>,
    pub(crate) problems: Vec<String>,
}

pub(crate) fn fmt_point(p: &Point) -> String {
    format!("({}, {})", round1(p.x), round1(p.y))
}

pub(crate) fn fmt_box(b: &BBox) -> String {
    format!("[{}, {}, {}, {}]", round1(b.x_min), round1(b.y_min), round1(b.x_max), round1(b.y_max))
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn pixels(c: &Annotation) -> &[(u32, u32)] {
    match &c.shape {
        Some(Shape::Pixels(px)) => px,
        _ => &[],
    }
}

/// Whether `p`, rounded to a pixel, is one of the component's pixels.
fn on_component(c: &Annotation, p: &Point) -> bool {
    let (x, y) = (p.x.round(), p.y.round());
    if x < 0.0 || y < 0.0 || !c.bbox.is_some_and(|b| b.contains(&Point::new(x, y))) {
        return false;
    }
    pixels(c).contains(&(x as u32, y as u32))
}

fn boxes_agree(a: &BBox, b: &BBox) -> bool {
    let worst = (a.x_min - b.x_min)
        .abs()
        .max((a.y_min - b.y_min).abs())
        .max((a.x_max - b.x_max).abs())
        .max((a.y_max - b.y_max).abs());
    worst <= CORNER_TOLERANCE_PX || a.iou(b) >= AGREE_IOU
}

/// How well a label fits a component; `None` when they cannot be the same mitosis.
fn affinity(label: &LabelObject, comp: &Annotation) -> Option<f64> {
    let cbox = comp.bbox?;
    let hit = label.centroid.is_some_and(|p| on_component(comp, &p));
    let iou = label.bbox.map_or(0.0, |b| b.iou(&cbox));
    let pos = label.position();
    let near = BBox {
        x_min: cbox.x_min - NEAR_PX,
        y_min: cbox.y_min - NEAR_PX,
        x_max: cbox.x_max + NEAR_PX,
        y_max: cbox.y_max + NEAR_PX,
    }
    .contains(&pos);
    (hit || iou > 0.0 || near).then(|| {
        2.0 * f64::from(u8::from(hit)) + iou + 0.5 * f64::from(u8::from(near)) - pos.distance(&comp.centroid) * 1e-6
    })
}

fn label_only(l: &LabelObject) -> Annotation {
    Annotation { centroid: l.position(), bbox: l.bbox, shape: None, score: None, class: l.class }
}

/// Merges mask components (`None` when the image has no usable mask) with the
/// labels (`has_labels` says whether the image has label files at all; an
/// empty list then means "no mitosis" rather than "not labelled").
pub(crate) fn merge(
    components: Option<Vec<Annotation>>,
    labels: Vec<LabelObject>,
    has_labels: bool,
    mask_name: &str,
) -> Merged {
    let Some(components) = components else {
        return Merged { objects: labels.iter().map(label_only).collect(), problems: Vec::new() };
    };
    if !has_labels {
        return Merged { objects: components, problems: Vec::new() };
    }
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (li, l) in labels.iter().enumerate() {
        for (ci, c) in components.iter().enumerate() {
            if let Some(a) = affinity(l, c) {
                pairs.push((a, li, ci));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut label_of = vec![None; components.len()];
    let mut taken = vec![false; labels.len()];
    for (_, li, ci) in pairs {
        if !taken[li] && label_of[ci].is_none() {
            taken[li] = true;
            label_of[ci] = Some(li);
        }
    }
    let mut out = Merged::default();
    for (comp, li) in components.into_iter().zip(label_of) {
        match li {
            Some(li) => out.objects.push(paired(comp, &labels[li], &mut out.problems)),
            None => {
                out.problems.push(format!(
                    "mask {mask_name} has a component at {} (box {}, {} px) with no label",
                    fmt_point(&comp.centroid),
                    comp.bbox.map_or_else(String::new, |b| fmt_box(&b)),
                    pixels(&comp).len()
                ));
                out.objects.push(comp);
            }
        }
    }
    for (l, _) in labels.iter().zip(&taken).filter(|(_, t)| !**t) {
        out.problems.push(format!(
            "label at {} ({}) has no component in mask {mask_name}",
            fmt_point(&l.position()),
            l.origin
        ));
        out.objects.push(label_only(l));
    }
    out
}

/// The mitosis a label and its component describe, after cross-checking them.
fn paired(comp: Annotation, label: &LabelObject, problems: &mut Vec<String>) -> Annotation {
    let cbox = comp.bbox;
    if let Some(p) = label.centroid
        && !on_component(&comp, &p)
    {
        problems.push(format!(
            "label centroid {} ({}) lies outside its mask component (component centroid {}, box {})",
            fmt_point(&p),
            label.origin,
            fmt_point(&comp.centroid),
            cbox.map_or_else(String::new, |b| fmt_box(&b))
        ));
    }
    if let (Some(lb), Some(cb)) = (label.bbox, cbox)
        && !boxes_agree(&lb, &cb)
    {
        problems.push(format!(
            "label box {} ({}) disagrees with its mask component's minimum bounding rectangle {} (IoU {:.2})",
            fmt_box(&lb),
            label.origin,
            fmt_box(&cb),
            lb.iou(&cb)
        ));
    }
    Annotation {
        centroid: label.centroid.unwrap_or(comp.centroid),
        bbox: label.bbox.or(cbox),
        shape: comp.shape,
        score: None,
        class: label.class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mitoscope_annotations::ObjectClass;

    fn square(x0: u32, y0: u32, n: u32) -> Annotation {
        let px = (y0..y0 + n).flat_map(|y| (x0..x0 + n).map(move |x| (x, y))).collect();
        Annotation::from_shape(Shape::Pixels(px), ObjectClass::Mitosis).unwrap()
    }

    fn label(bbox: Option<[f64; 4]>, c: Option<(f64, f64)>) -> LabelObject {
        LabelObject {
            bbox: bbox.map(|b| BBox::new(b[0], b[1], b[2], b[3]).unwrap()),
            centroid: c.map(|(x, y)| Point::new(x, y)),
            class: ObjectClass::Mitosis,
            origin: "l.csv line 2".into(),
        }
    }

    #[test]
    fn agreeing_pairs_merge_silently() {
        let m = merge(
            Some(vec![square(10, 10, 5), square(40, 40, 5)]),
            vec![label(Some([40.0, 40.0, 44.0, 44.0]), Some((42.0, 42.0))), label(None, Some((12.0, 12.0)))],
            true,
            "m.png",
        );
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        assert_eq!(m.objects.len(), 2);
        assert!(m.objects.iter().all(|o| o.shape.is_some()));
        assert_eq!(m.objects[1].centroid, Point::new(42.0, 42.0));
    }

    #[test]
    fn disagreements_are_reported() {
        // Centroid just off the component, box far larger: both reported on the one pair.
        let m = merge(
            Some(vec![square(10, 10, 5), square(100, 100, 3)]),
            vec![label(Some([5.0, 5.0, 40.0, 40.0]), Some((16.0, 16.0))), label(None, Some((300.0, 300.0)))],
            true,
            "m.png",
        );
        let all = m.problems.join("\n");
        assert!(all.contains("(16, 16)") && all.contains("outside its mask component"), "{all}");
        assert!(all.contains("disagrees") && all.contains("[10, 10, 14, 14]"), "{all}");
        assert!(all.contains("component at (101, 101)") && all.contains("no label"), "{all}");
        assert!(all.contains("label at (300, 300)") && all.contains("no component in mask m.png"), "{all}");
        assert_eq!(m.objects.len(), 3);
    }

    #[test]
    fn no_label_files_means_mask_only_and_no_mask_means_labels_only() {
        assert!(merge(Some(vec![square(1, 1, 2)]), vec![], false, "m").problems.is_empty());
        let m = merge(None, vec![label(Some([1.0, 1.0, 3.0, 5.0]), None)], true, "m");
        assert_eq!(m.objects[0].centroid, Point::new(2.0, 3.0));
    }
}
