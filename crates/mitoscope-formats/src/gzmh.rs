//! GZMH-like datasets: a folder or `.zip` of H&E images with pixel masks
//! and/or detection labels, in a layout that is detected, not assumed.
//!
//! GZMH (1534 RGB HPFs of 2084x2084 px, 2355 mitoses; V2 adds the test sets
//! `test_1or2_score` and `test_3_score`) ships pixel-level masks plus the
//! minimum bounding rectangle and centroid of each mitosis, in an
//! undocumented layout. What is recognised:
//!
//! - **Images**: png/jpg/jpeg/tif/tiff/bmp files anywhere in the tree.
//! - **Masks**: images in a folder whose name has a mask word (`masks`,
//!   `mask`, `labels`, `gt`, `groundtruth`, `annotations`, `train_masks`,
//!   ...), or with a `_mask`/`_gt`/`_label`/`_seg` stem suffix; paired with the
//!   image of the same stem. 0/1, 0/255, coloured and JPEG-stored masks alike;
//!   objects are the 8-connected components (see
//!   [`mitoscope_annotations::mask::objects_from_mask`], `min_mask_pixels`),
//!   and in an instance map (each figure its own grey level or colour,
//!   stored losslessly; `mitoscope_imaging::instance_labels`) the runs of
//!   one label, so that figures that touch stay apart.
//! - **Label files** (`.csv`/`.tsv`/`.txt`/`.json`/`.xml`) with the image's
//!   stem (optionally `_label`, `_bbox`, `_centroid`, ... appended): tables
//!   with a header naming box and centroid columns in any order
//!   (`xmin,ymin,xmax,ymax`, `x1..y2`, `left,top,right,bottom`, `x,y,w,h`,
//!   `cx,cy`, `centroid_x`, ...) or headerless (2 numbers = centroid, 4 = box,
//!   6 = box and centroid in either order, told apart by which centroids fall
//!   inside their boxes); JSON lists of objects (`bbox`/`box` arrays or
//!   objects, `centroid`/`center`, flat keys, LabelMe `points`); Pascal-VOC XML.
//!   Four numbers by position are a box's corners or, where the file reads
//!   better so (valid boxes, centroids in their middle), `x y w h` as OpenCV's
//!   `boundingRect` and COCO give it. A minimum bounding rectangle may also be
//!   a rotated one, given by its four corners (`x1,y1,...,x4,y4` columns, 8
//!   headerless numbers or 10 with the centroid, a JSON box of 8 numbers or 4
//!   points) or as OpenCV's `minAreaRect` (`cx,cy,w,h,angle` columns; JSON
//!   `[[cx, cy], [w, h], angle]`; 5 headerless numbers are refused, as they
//!   could be a box with a class or score): its axis-aligned hull need only
//!   hold the mask component, whose own rectangle is then kept.
//!   A label file that matches no image but has an image column (e.g.
//!   `labels.csv` with `image,xmin,...`) labels the whole dataset.
//! - **Subsets**: the folders between the root and an image, minus role words
//!   (`images`, `masks`, ...) and an archive's wrapping folder; the innermost
//!   split name among them (`train`, `val`, `test`, `test_3_score`, ...) names
//!   the subset (`test/test_3_score/WSI04/images/x.png` -> `test_3_score`),
//!   else the innermost folder (`WSI04/x.png` -> `WSI04`).
//!
//! Where an image has both a mask and labels, each label is matched to a mask
//! component and one object is kept per mitosis: shape from the mask,
//! centroid and box from the label. Components that one label's box bounds
//! together (the two masses of an anaphase or telophase) are that one mitosis. Disagreements (a centroid off its
//! component, a box that is not the component's minimum bounding rectangle, a
//! component without label or the reverse, a mask whose size is not the
//! image's, an unreadable mask, a bad label line, a mask or label file with no
//! image) are reported in [`AnnotationSet::inconsistencies`] and reading goes
//! on. Only an unreadable root (no images, not a zip) is an error.
//!
//! Masks are decoded in parallel; image sizes come from file headers only.
//! Zip entry names are read as UTF-8, or GBK where a Chinese-locale Windows
//! zip stored them so, as the user's unzip names the extracted files.

mod labels;
mod layout;
mod merge;
mod source;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use mitoscope_annotations::mask::{objects_from_labels, objects_from_mask};
use mitoscope_annotations::{AnnotationSet, ImageAnnotations, Inconsistency};
use rayon::prelude::*;

use self::labels::LabelObject;
use self::layout::{ImagePlan, Plan, stem};
use self::source::{Tree, extension};
use crate::{FormatError, ReadOptions, Result};

/// What [`detect_layout`] found: where images, masks and labels are and how
/// they pair. `Display` gives a one-paragraph summary for `inspect`.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The folder or zip file.
    pub root: PathBuf,
    /// Whether `root` is a zip archive.
    pub archive: bool,
    /// Number of images.
    pub images: usize,
    /// Folders (relative to `root`, `.` for the root itself) holding images.
    pub image_dirs: Vec<String>,
    /// Number of images with a mask.
    pub masks: usize,
    /// Folders holding masks.
    pub mask_dirs: Vec<String>,
    /// Stem suffixes that mark masks (`_mask`, ...); empty when masks share the image's stem.
    pub mask_suffixes: Vec<String>,
    /// Number of per-image label files.
    pub label_files: usize,
    /// Extensions of the per-image label files (`csv`, `xml`, ...).
    pub label_kinds: Vec<String>,
    /// Folders holding per-image label files.
    pub label_dirs: Vec<String>,
    /// Label files covering many images (with an image column).
    pub dataset_label_files: Vec<String>,
    /// Subset names, sorted.
    pub subsets: Vec<String>,
    /// Masks or label files that match no image, and ambiguous pairings.
    pub unmatched: usize,
    plan: Plan,
}

fn dir_of(rel: &str) -> String {
    rel.rsplit_once('/').map_or_else(|| ".".to_owned(), |(d, _)| d.to_owned())
}

impl Layout {
    fn from_plan(tree: &Tree, plan: Plan) -> Self {
        let set =
            |it: &mut dyn Iterator<Item = String>| it.collect::<BTreeSet<String>>().into_iter().collect::<Vec<_>>();
        let imgs = &plan.images;
        Self {
            root: tree.root().to_owned(),
            archive: tree.is_zip(),
            images: imgs.len(),
            image_dirs: set(&mut imgs.iter().map(|i| dir_of(&i.rel))),
            masks: imgs.iter().filter(|i| i.mask.is_some()).count(),
            mask_dirs: set(&mut imgs.iter().filter_map(|i| i.mask.as_deref()).map(dir_of)),
            mask_suffixes: plan.mask_suffixes.iter().cloned().collect(),
            label_files: imgs.iter().map(|i| i.labels.len()).sum(),
            label_kinds: set(&mut imgs.iter().flat_map(|i| i.labels.iter()).map(|l| extension(l))),
            label_dirs: set(&mut imgs.iter().flat_map(|i| i.labels.iter()).map(|l| dir_of(l))),
            dataset_label_files: plan.dataset_labels.clone(),
            subsets: set(&mut imgs.iter().filter_map(|i| i.subset.clone())),
            unmatched: plan.problems.len(),
            plan,
        }
    }
}

/// At most four names, then a count of the rest.
fn list(names: &[String]) -> String {
    let mut s = names.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 4 {
        s.push_str(&format!(" (+{} more)", names.len() - 4));
    }
    s
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.archive { "zip" } else { "folder" };
        write!(f, "{what} {}: {} images in {}", self.root.display(), self.images, list(&self.image_dirs))?;
        if self.masks == 0 {
            write!(f, "; no masks")?;
        } else {
            let suffix = if self.mask_suffixes.is_empty() {
                "same stem".to_owned()
            } else {
                format!("suffix {}", self.mask_suffixes.join("/"))
            };
            write!(f, "; {} masks in {} ({suffix})", self.masks, list(&self.mask_dirs))?;
        }
        if self.label_files > 0 {
            write!(
                f,
                "; labels: {} {} files per image in {}",
                self.label_files,
                self.label_kinds.join("/"),
                list(&self.label_dirs)
            )?;
        }
        if !self.dataset_label_files.is_empty() {
            write!(f, "; dataset labels: {}", list(&self.dataset_label_files))?;
        }
        if self.label_files == 0 && self.dataset_label_files.is_empty() {
            write!(f, "; no label files")?;
        }
        if self.subsets.is_empty() {
            write!(f, "; no subsets")?;
        } else {
            write!(f, "; subsets: {}", self.subsets.join(", "))?;
        }
        if self.unmatched > 0 {
            write!(f, "; {} unmatched or ambiguous files", self.unmatched)?;
        }
        Ok(())
    }
}

/// Whether a folder name says it holds masks or labels (`masks`,
/// `train_gt`, `SegmentationClass`, ...), as the layout detection reads it.
pub fn is_mask_folder(name: &str) -> bool {
    layout::is_mask_dir(name)
}

/// Detects the layout of a GZMH-like folder or zip without reading any
/// image, mask or label content (dataset-level label files' first lines aside).
pub fn detect_layout(path: &Path) -> Result<Layout> {
    let tree = Tree::open(path)?;
    let plan = layout::plan(&tree)?;
    Ok(Layout::from_plan(&tree, plan))
}

/// Reads a GZMH-like dataset folder or `.zip` (see the module docs).
pub fn read(path: &Path, opts: &ReadOptions) -> Result<AnnotationSet> {
    let tree = Tree::open(path)?;
    let layout = Layout::from_plan(&tree, layout::plan(&tree)?);
    tracing::debug!(%layout, "GZMH layout detected");
    // Images with neither masks nor labels would read as fields free of
    // mitoses: as truth every detection would count false, as training data
    // every figure a negative. Say so instead of guessing.
    if layout.masks == 0 && layout.label_files == 0 && layout.dataset_label_files.is_empty() {
        return Err(FormatError::UnknownFormat {
            path: path.to_owned(),
            hint: format!(
                "{} images but no masks and no label files, so nothing says where the mitoses are ({layout}); \
                 a GZMH-like dataset has a mask or a label file per image; annotations in another format: give \
                 that file (with --images for the image folder)",
                layout.images
            ),
        });
    }
    let plan = &layout.plan;
    let mut inconsistencies = plan.problems.clone();
    let (mut dataset_labels, covered) = dataset_level_labels(&tree, plan, &mut inconsistencies);
    let jobs: Vec<(&ImagePlan, Vec<LabelObject>, bool)> = plan
        .images
        .iter()
        .enumerate()
        .map(|(i, p)| (p, dataset_labels.remove(&i).unwrap_or_default(), covered[i]))
        .collect();
    let results: Vec<(ImageAnnotations, Vec<Inconsistency>)> =
        jobs.into_par_iter().map(|(p, extra, covered)| read_image(&tree, p, extra, covered, opts)).collect();
    let mut images = Vec::with_capacity(results.len());
    for (img, problems) in results {
        images.push(img);
        inconsistencies.extend(problems);
    }
    mark_unannotated_subsets(plan, &covered, &mut images, &mut inconsistencies);
    if !inconsistencies.is_empty() {
        // Named, the first few: a count alone sends the user looking.
        let first: Vec<String> = inconsistencies.iter().take(3).map(|i| i.to_string()).collect();
        let more = inconsistencies.len().saturating_sub(first.len());
        tracing::warn!(
            "{}: {} inconsistencies (`mitoscope inspect` lists them all): {}{}",
            path.display(),
            inconsistencies.len(),
            first.join("; "),
            if more > 0 { format!("; and {more} more") } else { String::new() }
        );
    }
    Ok(AnnotationSet { images, inconsistencies })
}

/// A subset none of whose images has a mask or a label file, in a dataset
/// where others do, is not a set of fields free of mitoses but one without
/// its annotations (a test set released without them, a folder left out of
/// the archive): its images are marked unusable, so `eval` and `train` leave
/// them out, and the subset is reported once. (Within an annotated subset an
/// image without mask or label file stays mitosis-free: datasets often omit
/// the files of empty fields.)
fn mark_unannotated_subsets(
    plan: &Plan,
    covered: &[bool],
    images: &mut [ImageAnnotations],
    problems: &mut Vec<Inconsistency>,
) {
    let mut annotated: HashMap<Option<&str>, (bool, usize)> = HashMap::new();
    for (p, covered) in plan.images.iter().zip(covered) {
        let entry = annotated.entry(p.subset.as_deref()).or_default();
        entry.0 |= p.mask.is_some() || !p.labels.is_empty() || *covered;
        entry.1 += 1;
    }
    let mut bare: Vec<(Option<&str>, usize)> =
        annotated.iter().filter(|(_, (any, _))| !any).map(|(subset, (_, n))| (*subset, *n)).collect();
    bare.sort();
    for (subset, n) in bare {
        let name = subset.map_or_else(|| "(no subset)".to_owned(), |s| format!("subset {s}"));
        let why = format!("{name} has no masks and no label files: nothing says where its mitoses are");
        for (img, p) in images.iter_mut().zip(&plan.images) {
            if p.subset.as_deref() == subset {
                img.unusable = Some(why.clone());
            }
        }
        problems.push(Inconsistency {
            image: name,
            message: format!("none of its {n} images has a mask or a label file; left out of eval and train"),
        });
    }
}

/// Labels from dataset-level files, by image index, and which images such a
/// file speaks for (so that an image it lists no row for is free of
/// mitoses): those under its folder (see [`layout::label_scope`]) when that
/// is not the root, and those in a subset it names an image of. A name is
/// looked up within the file's folder only, so `test_3_score/labels.csv`
/// naming `001.jpg` means that split's `001.jpg` even where every split has one.
fn dataset_level_labels(
    tree: &Tree,
    plan: &Plan,
    problems: &mut Vec<Inconsistency>,
) -> (HashMap<usize, Vec<LabelObject>>, Vec<bool>) {
    let mut covered = vec![false; plan.images.len()];
    let mut by_stem: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in plan.images.iter().enumerate() {
        by_stem.entry(p.id.to_lowercase()).or_default().push(i);
        if p.id != stem(&p.rel) {
            by_stem.entry(stem(&p.rel).to_lowercase()).or_default().push(i);
        }
    }
    let mut out: HashMap<usize, Vec<LabelObject>> = HashMap::new();
    for rel in &plan.dataset_labels {
        let shown = tree.display_path(rel);
        let parsed = match tree.read_bytes(rel, None) {
            Ok(bytes) => labels::parse(&bytes, &shown, &extension(rel)),
            Err(e) => {
                problems.push(Inconsistency { image: stem(rel).to_owned(), message: format!("{e} (file skipped)") });
                continue;
            }
        };
        problems.extend(parsed.problems.into_iter().map(|m| Inconsistency { image: stem(rel).to_owned(), message: m }));
        let scope = layout::label_scope(rel);
        let mut named_subsets: BTreeSet<Option<&str>> = BTreeSet::new();
        let mut unknown = BTreeSet::new();
        for (name, obj) in parsed.objects {
            let Some(name) = name.filter(|n| !n.is_empty()) else {
                problems.push(Inconsistency {
                    image: stem(rel).to_owned(),
                    message: format!("{}: names no image (skipped)", obj.origin),
                });
                continue;
            };
            match find_image(&name, obj.subset.as_deref(), plan, &by_stem, &scope) {
                Some(i) => {
                    named_subsets.insert(plan.images[i].subset.as_deref());
                    out.entry(i).or_default().push(obj);
                }
                None => {
                    unknown.insert(name);
                }
            }
        }
        for (c, p) in covered.iter_mut().zip(&plan.images) {
            // A file in a split's folder speaks for that split; one at the
            // root, for the subsets it names an image of (a root file listing
            // only train's mitoses says nothing of a test set's).
            *c |=
                (!scope.is_empty() && layout::in_scope(&p.rel, &scope)) || named_subsets.contains(&p.subset.as_deref());
        }
        for name in unknown {
            problems.push(Inconsistency {
                image: name.clone(),
                message: format!(
                    "{} labels image '{name}', which is not in the dataset{} (or is ambiguous)",
                    shown.display(),
                    if scope.is_empty() { String::new() } else { format!(" under {scope}/") }
                ),
            });
        }
    }
    (out, covered)
}

/// The image a dataset-level label names: by stem, or where stems collide by
/// the subset the row names, within the label file's folder `scope`, or by
/// path suffix, in that order.
fn find_image(
    name: &str,
    subset: Option<&str>,
    plan: &Plan,
    by_stem: &HashMap<String, Vec<usize>>,
    scope: &str,
) -> Option<usize> {
    let norm = name.replace('\\', "/");
    let key = if mitoscope_imaging::is_image_path(Path::new(&norm)) {
        stem(&norm)
    } else {
        norm.rsplit('/').next().unwrap_or(&norm)
    };
    let cands = by_stem.get(&key.to_lowercase()).or_else(|| by_stem.get(&norm.to_lowercase()))?;
    // A file inside a folder speaks for that folder only.
    let cands: Vec<usize> = cands.iter().copied().filter(|&i| layout::in_scope(&plan.images[i].rel, scope)).collect();
    let one = |hits: Vec<usize>| (hits.len() == 1).then(|| hits[0]);
    match cands.as_slice() {
        [i] => Some(*i),
        _ => {
            // The row's subset: the image's own, or a folder on its path.
            let in_subset = |i: usize, s: &str| {
                let p = &plan.images[i];
                p.subset.as_deref().is_some_and(|own| own.eq_ignore_ascii_case(s))
                    || p.rel.split('/').any(|d| d.eq_ignore_ascii_case(s))
            };
            subset
                .and_then(|s| one(cands.iter().copied().filter(|&i| in_subset(i, s)).collect()))
                .or_else(|| one(cands.iter().copied().filter(|&i| plan.images[i].rel.ends_with(&norm)).collect()))
        }
    }
}

/// Reads one image's size, mask and label files and merges them. Every
/// problem becomes an inconsistency; nothing here fails the whole read.
fn read_image(
    tree: &Tree,
    plan: &ImagePlan,
    mut label_objects: Vec<LabelObject>,
    covered_by_dataset_labels: bool,
    opts: &ReadOptions,
) -> (ImageAnnotations, Vec<Inconsistency>) {
    let mut problems = Vec::new();
    let report = |message: String| Inconsistency { image: plan.id.clone(), message };
    let mut img = ImageAnnotations::new(plan.id.clone());
    img.path = Some(tree.display_path(&plan.rel));
    img.subset = plan.subset.clone();
    img.slide = plan.slide.clone();
    img.mask_path = plan.mask.as_deref().map(|m| tree.display_path(m));
    let size = match tree.image_size(&plan.rel) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(report(format!("{e}")));
            None
        }
    };
    for rel in &plan.labels {
        let shown = tree.display_path(rel);
        match tree.read_bytes(rel, None) {
            Ok(bytes) => {
                let parsed = if extension(rel) == "txt" && labels::looks_like_yolo(&bytes) {
                    yolo_labels(tree, rel, &bytes, size, opts)
                } else {
                    labels::parse(&bytes, &shown, &extension(rel))
                };
                problems.extend(parsed.problems.into_iter().map(&report));
                label_objects.extend(parsed.objects.into_iter().map(|(_, o)| o));
            }
            Err(e) => problems.push(report(format!("{e} (file skipped)"))),
        }
    }
    let label_objects = labels::combine(label_objects);
    if let Some((w, h)) = size {
        for l in &label_objects {
            // Only the position counts: fixed-size boxes around mitoses near
            // the border legitimately overhang it.
            let outside = l.position().x > f64::from(w) || l.position().y > f64::from(h);
            if outside {
                problems.push(report(format!(
                    "label at {} ({}) lies outside the {w}x{h} image",
                    merge::fmt_point(&l.position()),
                    l.origin
                )));
            }
        }
    }
    let from_mask =
        plan.mask.as_deref().and_then(|m| mask_components(tree, &plan.rel, m, size, opts, &mut problems, &report));
    // When the image header is unreadable, a usable mask still tells the size.
    if let Some((w, h)) = size.or(from_mask.as_ref().map(|(_, d)| *d)) {
        (img.width, img.height) = (Some(w), Some(h));
    }
    let mask_failed = plan.mask.is_some() && from_mask.is_none();
    let components = from_mask.map(|(c, _)| c);
    let has_labels = !plan.labels.is_empty() || covered_by_dataset_labels;
    let mask_name = plan.mask.as_deref().map(|m| tree.display_path(m).display().to_string()).unwrap_or_default();
    if mask_failed && !has_labels {
        img.unusable = Some(format!("its mask {mask_name} could not be used and no label file lists its mitoses"));
    }
    let merged = merge::merge(components, label_objects, has_labels, &mask_name);
    problems.extend(merged.problems.into_iter().map(&report));
    img.objects = merged.objects;
    (img, problems)
}

/// A YOLO label file (normalised `class cx cy w h`) through [`crate::yolo`],
/// which needs the image size. Zip entries go through a temporary file.
fn yolo_labels(tree: &Tree, rel: &str, bytes: &[u8], size: Option<(u32, u32)>, opts: &ReadOptions) -> labels::Parsed {
    let shown = tree.display_path(rel);
    let mut parsed = labels::Parsed::default();
    let Some((w, h)) = size else {
        parsed.problems.push(format!(
            "{}: YOLO labels need the image size, which could not be read (file skipped)",
            shown.display()
        ));
        return parsed;
    };
    let result = if tree.is_zip() {
        let tmp = tempfile::NamedTempFile::new().and_then(|mut f| std::io::Write::write_all(&mut f, bytes).map(|()| f));
        match tmp {
            Ok(f) => crate::yolo::read_txt(f.path(), w, h, &opts.yolo_classes)
                .map_err(|e| e.to_string().replace(&f.path().display().to_string(), &shown.display().to_string())),
            Err(e) => Err(format!("{}: {e}", shown.display())),
        }
    } else {
        crate::yolo::read_txt(&shown, w, h, &opts.yolo_classes).map_err(|e| e.to_string())
    };
    match result {
        Ok(img) => {
            for (i, o) in img.objects.into_iter().enumerate() {
                // A YOLO box centre is no centroid label.
                let origin = format!("{} object {}", shown.display(), i + 1);
                parsed.objects.push((
                    None,
                    LabelObject { bbox: o.bbox, centroid: None, class: o.class, origin, rotated: false, subset: None },
                ));
            }
        }
        Err(e) => parsed.problems.push(format!("{e} (file skipped)")),
    }
    parsed
}

/// The mask's components and size, or `None` (reported) when it cannot be used.
fn mask_components(
    tree: &Tree,
    image_rel: &str,
    mask_rel: &str,
    size: Option<(u32, u32)>,
    opts: &ReadOptions,
    problems: &mut Vec<Inconsistency>,
    report: &impl Fn(String) -> Inconsistency,
) -> Option<(Vec<mitoscope_annotations::Annotation>, (u32, u32))> {
    let (mask, instances) = match tree.read_mask(mask_rel) {
        Ok(m) => m,
        Err(e) => {
            problems.push(report(format!("{e} (mask ignored)")));
            return None;
        }
    };
    if let Some((w, h)) = size
        && mask.dimensions() != (w, h)
    {
        let err = FormatError::MaskSize {
            mask: tree.display_path(mask_rel),
            mask_w: mask.width(),
            mask_h: mask.height(),
            image: tree.display_path(image_rel),
            image_w: w,
            image_h: h,
        };
        problems.push(report(format!("{err} (mask ignored)")));
        return None;
    }
    // An instance map keeps figures that touch apart; a binary mask cannot.
    let components = match &instances {
        Some(labels) => objects_from_labels(labels, 1),
        None => objects_from_mask(&mask, 1),
    };
    let (objects, specks): (Vec<_>, Vec<_>) = components
        .into_iter()
        .partition(|o| o.shape.as_ref().is_some_and(|s| s.area_px() >= opts.min_mask_pixels.max(1) as f64));
    if let Some(first) = specks.first() {
        problems.push(report(format!(
            "{}: {} component{} under {} px left out as specks, not mitoses (e.g. at {})",
            tree.display_path(mask_rel).display(),
            specks.len(),
            if specks.len() == 1 { "" } else { "s" },
            opts.min_mask_pixels.max(1),
            merge::fmt_point(&first.centroid)
        )));
    }
    // No mitosis fills half a field: such a "component" is the background of an
    // inverted mask (figures black on white) or of a white or transparent RGBA one.
    let area = u64::from(mask.width()) * u64::from(mask.height());
    let largest = objects
        .iter()
        .filter_map(|o| match &o.shape {
            Some(mitoscope_annotations::Shape::Pixels(px)) => Some(px.len() as u64),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    if area > 0 && largest * 2 > area {
        problems.push(report(format!(
            "{}: one component covers {:.0}% of the mask; an inverted mask (figures dark on a light \
             background) or a white or transparent background? (mask ignored)",
            tree.display_path(mask_rel).display(),
            100.0 * largest as f64 / area as f64
        )));
        return None;
    }
    Some((objects, mask.dimensions()))
}
