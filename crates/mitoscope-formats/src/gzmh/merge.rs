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

/// Whether `inner` lies within `outer` grown by the corner tolerance.
fn box_within(inner: &BBox, outer: &BBox) -> bool {
    inner.x_min >= outer.x_min - CORNER_TOLERANCE_PX
        && inner.y_min >= outer.y_min - CORNER_TOLERANCE_PX
        && inner.x_max <= outer.x_max + CORNER_TOLERANCE_PX
        && inner.y_max <= outer.y_max + CORNER_TOLERANCE_PX
}

/// Whether a label other than `except` points at this component: its centroid
/// lies on it, or its box is the component's own.
fn claimed_by_other(labels: &[LabelObject], except: usize, comp: &Annotation) -> bool {
    labels.iter().enumerate().any(|(i, l)| {
        i != except
            && (l.centroid.is_some_and(|p| on_component(comp, &p))
                || matches!((l.bbox, comp.bbox), (Some(lb), Some(cb)) if boxes_agree(&lb, &cb)))
    })
}

/// Joins the components that form one labelled mitosis of several masses (see
/// the module docs). Returns the components, each with its number of parts.
fn join_parts(components: Vec<Annotation>, labels: &[LabelObject]) -> Vec<(Annotation, usize)> {
    let mut joined_into: Vec<Option<usize>> = vec![None; components.len()];
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (li, label) in labels.iter().enumerate() {
        let Some(lbox) = label.bbox else { continue };
        let inside: Vec<usize> = components
            .iter()
            .enumerate()
            .filter(|(ci, c)| {
                joined_into[*ci].is_none()
                    && c.bbox.is_some_and(|cb| box_within(&cb, &lbox))
                    && !claimed_by_other(labels, li, c)
            })
            .map(|(ci, _)| ci)
            .collect();
        if inside.len() < 2 {
            continue;
        }
        let union = inside.iter().filter_map(|&ci| components[ci].bbox).reduce(|a, b| BBox {
            x_min: a.x_min.min(b.x_min),
            y_min: a.y_min.min(b.y_min),
            x_max: a.x_max.max(b.x_max),
            y_max: a.y_max.max(b.y_max),
        });
        // The label's box must be the whole figure's rectangle, not one mass's
        // drawn loosely: then each mass stays its own object.
        if union.is_some_and(|u| boxes_agree(&lbox, &u)) {
            for &ci in &inside {
                joined_into[ci] = Some(groups.len());
            }
            groups.push(inside);
        }
    }
    // A label given by its centroid alone, between two masses and on neither:
    // the two nearest free masses are one figure when the label sits at their
    // joint centre of mass and each lies within its own size of the label.
    for (li, label) in labels.iter().enumerate() {
        let (None, Some(c)) = (label.bbox, label.centroid) else { continue };
        if components.iter().any(|comp| on_component(comp, &c)) {
            continue;
        }
        let mut near: Vec<(f64, usize)> = components
            .iter()
            .enumerate()
            .filter(|(ci, comp)| joined_into[*ci].is_none() && !claimed_by_other(labels, li, comp))
            .filter_map(|(ci, comp)| {
                let b = comp.bbox?;
                let gap =
                    ((b.x_min - c.x).max(c.x - b.x_max).max(0.0)).hypot((b.y_min - c.y).max(c.y - b.y_max).max(0.0));
                (gap <= b.width().hypot(b.height())).then_some((gap, ci))
            })
            .collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        let [(_, a), (_, b), ..] = near[..] else { continue };
        let pair = [a, b];
        let mass = |ci: usize| pixels(&components[ci]).len() as f64;
        let total = mass(a) + mass(b);
        let joint = Point::new(
            pair.iter().map(|&ci| components[ci].centroid.x * mass(ci)).sum::<f64>() / total,
            pair.iter().map(|&ci| components[ci].centroid.y * mass(ci)).sum::<f64>() / total,
        );
        let span = components[a].centroid.distance(&components[b].centroid);
        if total > 0.0 && joint.distance(&c) <= 0.25 * span {
            for &ci in &pair {
                joined_into[ci] = Some(groups.len());
            }
            groups.push(pair.to_vec());
        }
    }
    // Each group becomes one object where its first component stood.
    let mut out = Vec::with_capacity(components.len());
    for (ci, comp) in components.iter().enumerate() {
        match joined_into[ci] {
            None => out.push((comp.clone(), 1)),
            Some(g) if groups[g][0] == ci => {
                let px: Vec<(u32, u32)> =
                    groups[g].iter().flat_map(|&m| pixels(&components[m]).iter().copied()).collect();
                if let Some(whole) = Annotation::from_shape(Shape::Pixels(px), comp.class) {
                    out.push((whole, groups[g].len()));
                }
            }
            Some(_) => {} // joined into its group's object
        }
    }
    out
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
    let components = join_parts(components, &labels);
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (li, l) in labels.iter().enumerate() {
        for (ci, (c, _)) in components.iter().enumerate() {
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
    for ((comp, parts), li) in components.into_iter().zip(label_of) {
        match li {
            Some(li) => out.objects.push(paired(comp, parts, &labels[li], &mut out.problems)),
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

/// The mitosis a label and its component (of `parts` masses) describe, after
/// cross-checking them.
fn paired(comp: Annotation, parts: usize, label: &LabelObject, problems: &mut Vec<String>) -> Annotation {
    let cbox = comp.bbox;
    // A figure of several masses has its centre of mass between them, off its pixels.
    let centroid_fits = |p: &Point| on_component(&comp, p) || (parts > 1 && cbox.is_some_and(|b| b.contains(p)));
    if let Some(p) = label.centroid
        && !centroid_fits(&p)
    {
        problems.push(format!(
            "label centroid {} ({}) lies outside its mask component (component centroid {}, box {})",
            fmt_point(&p),
            label.origin,
            fmt_point(&comp.centroid),
            cbox.map_or_else(String::new, |b| fmt_box(&b))
        ));
    }
    // A rotated rectangle's axis-aligned hull is wider than the figure's own
    // rectangle; it need only hold it.
    let box_fits = |lb: &BBox, cb: &BBox| boxes_agree(lb, cb) || (label.rotated && box_within(cb, lb));
    if let (Some(lb), Some(cb)) = (label.bbox, cbox)
        && !box_fits(&lb, &cb)
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
        // Boxes here are axis-aligned minimum bounding rectangles: the mask's,
        // where the label's is a rotated one's hull.
        bbox: if label.rotated { cbox.or(label.bbox) } else { label.bbox.or(cbox) },
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
            rotated: false,
            subset: None,
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
    fn two_masses_inside_one_label_box_are_one_mitosis() {
        // Telophase: masses at x 10-14 and 22-26, one box around both and the
        // centre of mass in the gap; a separate mitosis far off has its own label.
        let m = merge(
            Some(vec![square(10, 10, 5), square(22, 11, 5), square(60, 60, 4)]),
            vec![
                label(Some([10.0, 10.0, 26.0, 15.0]), Some((18.0, 12.5))),
                label(Some([60.0, 60.0, 63.0, 63.0]), Some((61.5, 61.5))),
            ],
            true,
            "m.png",
        );
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        assert_eq!(m.objects.len(), 2, "{:?}", m.objects);
        let fig = &m.objects[0];
        assert_eq!(fig.centroid, Point::new(18.0, 12.5));
        assert_eq!(pixels(fig).len(), 50, "both masses are the one figure's shape");
    }

    #[test]
    fn a_centroid_label_between_two_masses_joins_them() {
        // Telophase labelled by its centre of mass only (no box).
        let m = merge(
            Some(vec![square(10, 10, 5), square(22, 10, 5), square(60, 60, 4)]),
            vec![label(None, Some((18.0, 12.0))), label(None, Some((61.5, 61.5)))],
            true,
            "m.png",
        );
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        assert_eq!(m.objects.len(), 2, "{:?}", m.objects);
        assert_eq!(pixels(&m.objects[0]).len(), 50);
        // A click just off one figure, beside an unlabelled neighbour, does not join them.
        let m = merge(
            Some(vec![square(10, 10, 5), square(22, 10, 5)]),
            vec![label(None, Some((15.5, 12.0)))],
            true,
            "m.png",
        );
        assert_eq!(m.objects.len(), 2, "{:?}", m.objects);
    }

    #[test]
    fn masses_stay_apart_when_the_box_is_one_mass_or_another_label_claims_one() {
        // The box bounds the first mass only (loosely): the second mass is not part of it.
        let loose = merge(
            Some(vec![square(10, 10, 5), square(22, 11, 5)]),
            vec![label(Some([9.0, 9.0, 27.0, 30.0]), Some((12.0, 12.0)))],
            true,
            "m.png",
        );
        assert_eq!(loose.objects.len(), 2);
        assert!(loose.problems.iter().any(|p| p.contains("no label")), "{:?}", loose.problems);
        // Two labelled neighbours inside one (wrong) big box stay two mitoses.
        let claimed = merge(
            Some(vec![square(10, 10, 5), square(22, 11, 5)]),
            vec![label(Some([10.0, 10.0, 26.0, 15.0]), Some((12.0, 12.0))), label(None, Some((24.0, 13.0)))],
            true,
            "m.png",
        );
        assert_eq!(claimed.objects.len(), 2);
        assert!(claimed.objects.iter().all(|o| o.shape.is_some()));
    }

    #[test]
    fn a_rotated_rectangle_need_only_hold_its_component() {
        // The diamond's hull [4, 4, 16, 16] is far wider than the 5x5 square at 8..12.
        let mut l = label(Some([4.0, 4.0, 16.0, 16.0]), Some((10.0, 10.0)));
        l.rotated = true;
        let m = merge(Some(vec![square(8, 8, 5)]), vec![l.clone()], true, "m.png");
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        assert_eq!(m.objects[0].bbox, Some(BBox::new(8.0, 8.0, 12.0, 12.0).unwrap()), "the mask's upright box");
        l.rotated = false;
        let m = merge(Some(vec![square(8, 8, 5)]), vec![l], true, "m.png");
        assert!(m.problems.iter().any(|p| p.contains("disagrees")), "an upright box must agree: {:?}", m.problems);
    }

    #[test]
    fn no_label_files_means_mask_only_and_no_mask_means_labels_only() {
        assert!(merge(Some(vec![square(1, 1, 2)]), vec![], false, "m").problems.is_empty());
        let m = merge(None, vec![label(Some([1.0, 1.0, 3.0, 5.0]), None)], true, "m");
        assert_eq!(m.objects[0].centroid, Point::new(2.0, 3.0));
    }
}
