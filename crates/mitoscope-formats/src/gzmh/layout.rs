//! Layout detection: which files are images, masks and label files, which
//! belong together, and which subset each image is in.
//!
//! Pairing is by file stem (case-insensitive), after removing a mask or label
//! suffix (`_mask`, `_gt`, `_label`, ...). When several images share a stem
//! (e.g. `train/images/001.png` and `test/images/001.png`), the one whose
//! folders, with role words such as `images`/`masks` removed, agree most with
//! the mask's or label file's folders wins.

use std::collections::{BTreeSet, HashMap};

use mitoscope_annotations::Inconsistency;

use super::source::{Tree, extension};
use crate::{FormatError, Result};

/// Label-file extensions.
pub(crate) const LABEL_EXTENSIONS: &[&str] = &["csv", "tsv", "txt", "json", "xml"];

/// Folder words that mark masks (as a whole name or one `_`/`-` separated word).
const MASK_WORDS: &[&str] = &[
    "mask",
    "masks",
    "label",
    "labels",
    "gt",
    "groundtruth",
    "annotation",
    "annotations",
    "segmentation",
    "segmentations",
    "segmentationclass",
    "segmentationobject",
    "seg",
    "anno",
    "annos",
];
/// Folder words that mark the images themselves (not a subset).
const IMAGE_WORDS: &[&str] =
    &["image", "images", "img", "imgs", "hpf", "hpfs", "rgb", "jpegimages", "patches", "tiles", "data"];
/// Stem suffixes that mark a mask beside its image.
const MASK_SUFFIXES: &[&str] =
    &["_mask", "-mask", "_masks", " mask", "_gt", "-gt", "_seg", "_segmentation", "_label", "_labels", "-label"];
/// Stem suffixes a label file may carry after the image stem.
const LABEL_SUFFIXES: &[&str] = &[
    "_label",
    "_labels",
    "-label",
    "_gt",
    "-gt",
    "_bbox",
    "_bboxes",
    "_box",
    "_boxes",
    "_centroid",
    "_centroids",
    "_center",
    "_centers",
    "_centre",
    "_centres",
    "_annotation",
    "_annotations",
    "_anno",
    "_det",
    "_detection",
    "_detections",
    "_rect",
    "_mbr",
    "_points",
];
/// File stems that are documentation, not labels.
const NOT_LABELS: &[&str] = &["readme", "license", "licence", "notes", "changelog", "citation", "classes", "obj"];
/// Header names of an image column in a dataset-level label file.
pub(crate) const IMAGE_COLUMN_NAMES: &[&str] = &[
    "image",
    "imagename",
    "imageid",
    "img",
    "imgname",
    "imgid",
    "filename",
    "file",
    "fname",
    "imagefile",
    "imagepath",
    "path",
    "hpf",
];

/// Lowercase words of a name, split on anything not alphanumeric.
fn words(name: &str) -> Vec<String> {
    name.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

pub(crate) fn is_mask_dir(name: &str) -> bool {
    let w = words(name);
    w.iter().any(|w| MASK_WORDS.contains(&w.as_str())) || MASK_WORDS.contains(&w.concat().as_str())
}

/// A folder name with its role words (`images`, `masks`, ...) removed; `None`
/// when nothing else is left. `train_images` -> `train`, `masks` -> `None`.
fn strip_role(name: &str) -> Option<String> {
    let all = words(name);
    if MASK_WORDS.contains(&all.concat().as_str()) || IMAGE_WORDS.contains(&all.concat().as_str()) {
        return None;
    }
    let kept: Vec<&str> = name
        .split(['_', '-', ' '])
        .filter(|w| !w.is_empty())
        .filter(|w| {
            let l = w.to_lowercase();
            !MASK_WORDS.contains(&l.as_str()) && !IMAGE_WORDS.contains(&l.as_str())
        })
        .collect();
    if kept.is_empty() { None } else { Some(kept.join("_")) }
}

/// The folder a dataset-level label file speaks for: its own, less trailing
/// role folders (`GZMH/test/test_3_score/labels.csv` and
/// `.../test_3_score/annotations/labels.csv` -> `GZMH/test/test_3_score`;
/// `labels/all.csv` -> the root, `""`).
pub(crate) fn label_scope(rel: &str) -> String {
    let mut d = dirs(rel);
    while d.last().is_some_and(|last| strip_role(last).is_none()) {
        d.pop();
    }
    d.join("/")
}

/// Whether `rel` lies under the folder `scope` (`""`: everything).
pub(crate) fn in_scope(rel: &str, scope: &str) -> bool {
    scope.is_empty() || rel.strip_prefix(scope).is_some_and(|r| r.starts_with('/'))
}

/// `train`, `test_3_score`, `validation`, ...: a name that is a split even
/// when it is the only folder level.
fn is_split_name(name: &str) -> bool {
    let l = name.to_lowercase();
    ["train", "training", "test", "testing", "val", "valid", "validation", "dev", "trainval"].contains(&l.as_str())
        || ["train", "test", "val"].iter().any(|p| {
            l.strip_prefix(p).is_some_and(|r| r.starts_with(['_', '-']) || r.starts_with(|c: char| c.is_ascii_digit()))
        })
}

/// Folder components of a relative path.
fn dirs(rel: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = rel.split('/').collect();
    parts.pop();
    parts
}

fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// File stem of a relative path.
pub(crate) fn stem(rel: &str) -> &str {
    let f = file_name(rel);
    match f.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => s,
        _ => f,
    }
}

/// Folders with role words removed: what must agree between an image and its mask.
fn context(rel: &str) -> Vec<String> {
    dirs(rel).into_iter().filter_map(strip_role).map(|s| s.to_lowercase()).collect()
}

/// `stem` without the first of `suffixes` it ends with (ASCII case-insensitive), and that suffix.
fn strip_suffix<'a>(stem: &'a str, suffixes: &[&'static str]) -> Option<(&'a str, &'static str)> {
    suffixes.iter().copied().find_map(|s| {
        let cut = stem.len().checked_sub(s.len()).filter(|&c| c > 0 && stem.is_char_boundary(c))?;
        stem[cut..].eq_ignore_ascii_case(s).then(|| (&stem[..cut], s))
    })
}

/// What a file in the tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Image,
    Mask,
    Label,
    Other,
}

fn role(rel: &str) -> Role {
    let ext = extension(rel);
    if mitoscope_imaging::IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        let in_mask_dir = dirs(rel).iter().any(|d| is_mask_dir(d));
        if in_mask_dir || strip_suffix(stem(rel), MASK_SUFFIXES).is_some() { Role::Mask } else { Role::Image }
    } else if LABEL_EXTENSIONS.contains(&ext.as_str()) {
        let s = stem(rel).to_lowercase();
        let in_imagesets = dirs(rel).iter().any(|d| d.eq_ignore_ascii_case("imagesets"));
        if NOT_LABELS.contains(&s.as_str()) || s.starts_with("readme") || in_imagesets {
            Role::Other
        } else {
            Role::Label
        }
    } else {
        Role::Other
    }
}

/// One image and the files that belong to it.
#[derive(Debug, Clone)]
pub(crate) struct ImagePlan {
    /// Relative path of the image.
    pub(crate) rel: String,
    /// Identifier: the stem, or the relative path without extension when stems collide.
    pub(crate) id: String,
    pub(crate) subset: Option<String>,
    /// The innermost named folder when it is not a split: the slide's folder.
    pub(crate) slide: Option<String>,
    pub(crate) mask: Option<String>,
    /// Per-image label files.
    pub(crate) labels: Vec<String>,
}

/// Everything found, paired.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub(crate) images: Vec<ImagePlan>,
    /// Label files with an image column covering many images.
    pub(crate) dataset_labels: Vec<String>,
    /// Masks and label files that match no image, and pairing ambiguities.
    pub(crate) problems: Vec<Inconsistency>,
    /// Mask stem suffixes seen (`_mask`, ...), for the layout summary.
    pub(crate) mask_suffixes: BTreeSet<String>,
}

/// Images indexed by lowercase stem, for pairing.
struct ImageIndex<'a> {
    by_stem: HashMap<String, Vec<usize>>,
    rels: &'a [String],
}

impl<'a> ImageIndex<'a> {
    fn new(rels: &'a [String]) -> Self {
        let mut by_stem: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in rels.iter().enumerate() {
            by_stem.entry(stem(r).to_lowercase()).or_default().push(i);
        }
        Self { by_stem, rels }
    }

    /// The image with stem `key` whose folders best agree with `rel`'s.
    /// `Err` lists the tied candidates.
    fn find(&self, key: &str, rel: &str) -> Option<std::result::Result<usize, Vec<usize>>> {
        let cands = self.by_stem.get(&key.to_lowercase())?;
        if cands.len() == 1 {
            return Some(Ok(cands[0]));
        }
        let ctx = context(rel);
        let score = |i: usize| {
            let c = context(&self.rels[i]);
            let prefix = c.iter().zip(&ctx).take_while(|(a, b)| a == b).count();
            prefix * 2 + usize::from(c == ctx)
        };
        let best = cands.iter().map(|&i| score(i)).max()?;
        let tied: Vec<usize> = cands.iter().copied().filter(|&i| score(i) == best).collect();
        Some(if tied.len() == 1 { Ok(tied[0]) } else { Err(tied) })
    }
}

fn is_archive_name(rel: &str) -> bool {
    let l = rel.to_ascii_lowercase();
    [".zip", ".7z", ".rar", ".tar", ".tar.gz", ".tgz", ".tar.xz", ".gz"].iter().any(|e| l.ends_with(e))
}

/// Classifies and pairs every file of `tree`.
pub(crate) fn plan(tree: &Tree) -> Result<Plan> {
    let (mut images, mut masks, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for f in &tree.files {
        match role(f) {
            Role::Image => images.push(f.clone()),
            Role::Mask => masks.push(f.clone()),
            Role::Label => labels.push(f.clone()),
            Role::Other => {}
        }
    }
    // A mask by its stem's suffix alone (`x_gt.png`) in an images folder,
    // with no image `x`, is an image whose name happens to end so.
    let image_stems: std::collections::HashSet<String> = images.iter().map(|r| stem(r).to_lowercase()).collect();
    let in_image_dir = |rel: &str| {
        let d = dirs(rel);
        !d.iter().any(|d| is_mask_dir(d))
            && d.last().is_some_and(|d| words(d).iter().any(|w| IMAGE_WORDS.contains(&w.as_str())))
    };
    let (suffix_only, kept): (Vec<String>, Vec<String>) = masks.into_iter().partition(|m| {
        in_image_dir(m)
            && strip_suffix(stem(m), MASK_SUFFIXES).is_some_and(|(base, _)| !image_stems.contains(&base.to_lowercase()))
    });
    masks = kept;
    if !suffix_only.is_empty() {
        images.extend(suffix_only);
        images.sort();
    }
    if images.is_empty() {
        let what = if tree.is_zip() { "zip" } else { "folder" };
        let masks_note =
            if masks.is_empty() { String::new() } else { format!("; found {} mask-like images only", masks.len()) };
        // Archives inside are not opened (an archive of archives is unpacked
        // once by the user): name them, since that is where the images are.
        let archives: Vec<&String> = tree.files.iter().filter(|f| is_archive_name(f)).collect();
        let archives_note = match archives.as_slice() {
            [] => String::new(),
            some => format!(
                "; it holds archives, which are not opened here ({}{}): give an inner .zip itself, or extract them",
                some.iter().take(3).map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                if some.len() > 3 { format!(" and {} more", some.len() - 3) } else { String::new() },
            ),
        };
        return Err(FormatError::UnknownFormat {
            path: tree.root().to_owned(),
            hint: format!(
                "no images found in {what} {} (looked for {}){masks_note}{archives_note}",
                tree.root().display(),
                mitoscope_imaging::IMAGE_EXTENSIONS.join("/")
            ),
        });
    }
    let index = ImageIndex::new(&images);
    // The root's own name (`test_3_score` when a split folder is given) can
    // make the folders below it per-slide ones.
    let root_name = if tree.is_zip() { tree.root().file_stem() } else { None }
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| std::fs::canonicalize(tree.root()).ok()?.file_name().map(|n| n.to_string_lossy().into_owned()));
    let mut plan = Plan { images: image_plans(root_name.as_deref(), &images), ..Default::default() };
    for m in &masks {
        pair_mask(&index, m, &mut plan);
    }
    for l in &labels {
        pair_label(tree, &index, l, &mut plan);
    }
    Ok(plan)
}

fn image_plans(root_name: Option<&str>, images: &[String]) -> Vec<ImagePlan> {
    let mut stem_count: HashMap<String, usize> = HashMap::new();
    for r in images {
        *stem_count.entry(stem(r).to_lowercase()).or_default() += 1;
    }
    let wrapper = wrapper_depth(images);
    images
        .iter()
        .map(|r| {
            let unique = stem_count.get(&stem(r).to_lowercase()) == Some(&1);
            let id =
                if unique { stem(r).to_owned() } else { r.rsplit_once('.').map_or(r.as_str(), |(p, _)| p).to_owned() };
            // The innermost split name (`train`, `test_3_score`, ...) names the
            // subset, so per-slide folders below it (`test_3_score/WSI04/`) stay
            // in their split; without one, the innermost folder does.
            let named: Vec<String> = dirs(r).into_iter().skip(wrapper).filter_map(strip_role).collect();
            let subset = named.iter().rev().find(|d| is_split_name(d)).or(named.last()).cloned();
            // The innermost folder below the innermost split (the root's own
            // name counting) is a per-slide folder: `test_3_score/WSI04/`.
            // Without a split, the innermost folder below the wrapper is.
            let full: Vec<String> =
                root_name.and_then(strip_role).into_iter().chain(dirs(r).into_iter().filter_map(strip_role)).collect();
            let slide = match full.iter().rposition(|d| is_split_name(d)) {
                Some(i) => full[i + 1..].last().cloned(),
                None => named.last().cloned(),
            };
            ImagePlan { rel: r.clone(), id, subset, slide, mask: None, labels: Vec::new() }
        })
        .collect()
}

/// How many leading folders every image shares and that are not splits (an
/// archive's wrapping folder such as `GZMH/`): they are no subset.
fn wrapper_depth(images: &[String]) -> usize {
    let first = dirs(&images[0]);
    let mut depth = first.len();
    for r in &images[1..] {
        let d = dirs(r);
        depth = depth.min(first.iter().zip(&d).take_while(|(a, b)| a == b).count());
    }
    first[..depth].iter().take_while(|d| !is_split_name(d)).count()
}

fn pair_mask(index: &ImageIndex, mask: &str, plan: &mut Plan) {
    let s = stem(mask);
    let found = index.find(s, mask).or_else(|| {
        let (base, suffix) = strip_suffix(s, MASK_SUFFIXES)?;
        let hit = index.find(base, mask)?;
        plan.mask_suffixes.insert(suffix.to_owned());
        Some(hit)
    });
    match found {
        None => plan.problems.push(Inconsistency {
            image: s.to_owned(),
            message: format!("mask {mask} matches no image (by file stem)"),
        }),
        Some(Err(tied)) => plan.problems.push(ambiguous("mask", mask, &tied, &plan.images)),
        Some(Ok(i)) => match &plan.images[i].mask {
            Some(first) => plan.problems.push(Inconsistency {
                image: plan.images[i].id.clone(),
                message: format!("two masks for image {}: {first} (used) and {mask} (ignored)", plan.images[i].rel),
            }),
            None => plan.images[i].mask = Some(mask.to_owned()),
        },
    }
}

fn pair_label(tree: &Tree, index: &ImageIndex, label: &str, plan: &mut Plan) {
    let s = stem(label);
    let found = index.find(s, label).or_else(|| index.find(strip_suffix(s, LABEL_SUFFIXES)?.0, label));
    match found {
        Some(Ok(i)) => plan.images[i].labels.push(label.to_owned()),
        Some(Err(tied)) => plan.problems.push(ambiguous("label file", label, &tied, &plan.images)),
        None if is_dataset_level(tree, label) => plan.dataset_labels.push(label.to_owned()),
        None => plan.problems.push(Inconsistency {
            image: s.to_owned(),
            message: format!("label file {label} matches no image (by file stem) and has no image column"),
        }),
    }
}

fn ambiguous(what: &str, rel: &str, tied: &[usize], images: &[ImagePlan]) -> Inconsistency {
    let names: Vec<&str> = tied.iter().map(|&i| images[i].rel.as_str()).collect();
    Inconsistency {
        image: stem(rel).to_owned(),
        message: format!("{what} {rel} could belong to any of {} (ignored)", names.join(", ")),
    }
}

/// Whether a label file names its images itself: a CSV/TXT whose header has
/// an image column or whose first field is an image file name, or JSON that
/// mentions an image key or is keyed by image file names.
fn is_dataset_level(tree: &Tree, rel: &str) -> bool {
    let Ok(head) = tree.read_bytes(rel, Some(8192)) else {
        return false;
    };
    let text = String::from_utf8_lossy(&head);
    let text = text.trim_start_matches('\u{feff}');
    match extension(rel).as_str() {
        "json" => {
            let lower = text.to_lowercase();
            IMAGE_COLUMN_NAMES.iter().any(|k| lower.contains(&format!("\"{k}"))) || keyed_by_image_name(&lower)
        }
        "xml" => false,
        _ => text.lines().find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).is_some_and(|l| {
            let fields: Vec<&str> = l.split([',', '\t', ';', ' ']).collect();
            fields.iter().any(|f| IMAGE_COLUMN_NAMES.contains(&normalise_name(f).as_str()))
                || fields
                    .first()
                    .is_some_and(|f| mitoscope_imaging::is_image_path(std::path::Path::new(f.trim().trim_matches('"'))))
        }),
    }
}

/// Whether JSON text has a key that is an image file name (`"a.png": [...]`).
fn keyed_by_image_name(lower_json: &str) -> bool {
    mitoscope_imaging::IMAGE_EXTENSIONS.iter().any(|ext| {
        let needle = format!(".{ext}\"");
        lower_json.match_indices(&needle).any(|(at, _)| lower_json[at + needle.len()..].trim_start().starts_with(':'))
    })
}

/// A header or key name reduced to lowercase alphanumerics (`X_min` -> `xmin`).
pub(crate) fn normalise_name(name: &str) -> String {
    name.trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_subsets() {
        assert!(
            is_mask_dir("Masks")
                && is_mask_dir("train_masks")
                && is_mask_dir("ground_truth")
                && is_mask_dir("SegmentationClass")
        );
        assert!(!is_mask_dir("images") && !is_mask_dir("test_3_score"));
        assert_eq!(strip_role("train_images").as_deref(), Some("train"));
        assert_eq!(strip_role("JPEGImages"), None);
        assert_eq!(strip_role("test_1or2_score").as_deref(), Some("test_1or2_score"));
        assert!(
            is_split_name("test_3_score")
                && is_split_name("train")
                && !is_split_name("GZMH")
                && !is_split_name("testament")
        );
        assert_eq!(role("a/masks/x.png"), Role::Mask);
        assert_eq!(role("a/x_mask.png"), Role::Mask);
        assert_eq!(role("a/x.png"), Role::Image);
        assert_eq!(role("README.txt"), Role::Other);
        assert_eq!(stem("a/b.c.png"), "b.c");
        assert_eq!(label_scope("GZMH/test/test_3_score/labels.csv"), "GZMH/test/test_3_score");
        assert_eq!(label_scope("GZMH/test/test_3_score/annotations/labels.csv"), "GZMH/test/test_3_score");
        assert_eq!(label_scope("labels/all.csv"), "");
        assert!(in_scope("GZMH/test/x.png", "GZMH/test") && !in_scope("GZMH/testing/x.png", "GZMH/test"));
    }

    #[test]
    fn wrapper_folder_is_not_a_subset_but_a_lone_split_is() {
        let imgs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(wrapper_depth(&imgs(&["GZMH/train/images/a.png", "GZMH/test/images/b.png"])), 1);
        assert_eq!(wrapper_depth(&imgs(&["train/images/a.png", "train/images/b.png"])), 0);
        let plans = image_plans(None, &imgs(&["GZMH/images/a.png", "GZMH/images/b.png"]));
        assert_eq!(plans[0].subset, None);
        let plans = image_plans(None, &imgs(&["test/test_3_score/images/a.png", "train/images/a.png"]));
        assert_eq!(plans[0].subset.as_deref(), Some("test_3_score"));
        assert_eq!(plans[0].id, "test/test_3_score/images/a", "colliding stems get the path");
        // Per-slide folders inside a split: the split is the subset.
        let plans = image_plans(
            None,
            &imgs(&["GZMH/train/WSI01/images/a.png", "GZMH/test/test_3_score/WSI04/b.png", "GZMH/WSI09/c.png"]),
        );
        let subsets: Vec<_> = plans.iter().map(|p| p.subset.as_deref()).collect();
        assert_eq!(subsets, [Some("train"), Some("test_3_score"), Some("WSI09")]);
        // ... and the folder below the split is the slide; a split or a
        // wrapper names none.
        let slides: Vec<_> = plans.iter().map(|p| p.slide.as_deref()).collect();
        assert_eq!(slides, [Some("WSI01"), Some("WSI04"), Some("WSI09")]);
        let plans = image_plans(None, &imgs(&["GZMH/train/images/a.png", "GZMH/images/b.png"]));
        assert_eq!(plans.iter().map(|p| p.slide.as_deref()).collect::<Vec<_>>(), [None, None]);
    }

    #[test]
    fn a_split_folder_given_as_root_makes_its_lone_subfolder_a_slide() {
        let imgs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // `test_3_score/` with one slide folder: the folder is a wrapper for
        // subsets, but below a split (the root's own name) it is the slide.
        let files = imgs(&["WSI04/images/a.png", "WSI04/images/b.png"]);
        let plans = image_plans(Some("test_3_score"), &files);
        assert_eq!(plans[0].slide.as_deref(), Some("WSI04"));
        assert_eq!(image_plans(Some("mydata"), &files)[0].slide, None, "a lone folder under no split is a wrapper");
        assert_eq!(image_plans(Some("test_3_score"), &imgs(&["images/a.png"]))[0].slide, None);
    }
}
