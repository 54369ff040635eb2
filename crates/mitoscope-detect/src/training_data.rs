//! What the training recipe learns from, read either from the shared data
//! layout ([`TrainingData::shared`]: ICPR 2012, CMC tiles, AMi-Br, AtNorM-Br)
//! or from any datasets the readers understand ([`TrainingData::from_datasets`]:
//! GZMH folders, ICPR pixel lists, COCO / MIDOG JSON, CSV, GeoJSON, ...,
//! plus crop folders labelled by folder name and folders of mitosis-free
//! fields). Every image carries its own mpp; the recipe resamples.
//!
//! Fields and masks read from files stay files ([`Pixels`]): each is decoded
//! once to check it and again at each use, so memory does not grow with the
//! number of fields (GZMH's 1534 HPFs would take ~20 GB decoded). What the
//! recipe keeps for a whole stage is smaller: stage 1's copy of each field at
//! its 0.5 um/px (about a quarter of the pixels) and stage 2's crops.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{GrayImage, RgbImage};
use mitoscope_annotations::{AnnotationSet, ImageAnnotations, ObjectClass};
use mitoscope_formats::{Format, ReadOptions};
use rayon::prelude::*;

use crate::DetectError;

/// ICPR 2012 scanner A resolution.
pub const ICPR_MPP: f64 = 0.2456;
/// AMi-Br, AtNorM-Br and CMC (MIDOG / TUPAC / MITOS_WSI_CMC scans at 40x), assumed.
pub const CROP_SOURCE_MPP: f64 = 0.25;

/// A raster that [`Pixels`] can hold or read from its file.
pub trait Raster: Sized {
    /// Decodes `path`.
    fn read(path: &Path) -> Result<Self, DetectError>;
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
}

impl Raster for RgbImage {
    fn read(path: &Path) -> Result<Self, DetectError> {
        Ok(mitoscope_imaging::read_image(path)?)
    }
    fn size(&self) -> (u32, u32) {
        self.dimensions()
    }
}

impl Raster for GrayImage {
    /// A mask: any encoding [`mitoscope_imaging::read_mask`] understands, non-zero = mitosis.
    fn read(path: &Path) -> Result<Self, DetectError> {
        Ok(mitoscope_imaging::read_mask(path)?)
    }
    fn size(&self) -> (u32, u32) {
        self.dimensions()
    }
}

/// Pixels held in memory, or a file read again at each use.
///
/// Fields from files are not held: the recipe visits each a handful of times
/// (crops, stage-1 tiles, thresholds, mining, out-of-fold scores), a 2084x2084
/// HPF decodes in tens of milliseconds, and holding thousands of them would
/// take tens of GB. [`Pixels::file`] decodes the file once, so a truncated
/// image fails when the data are read, not hours into a run.
#[derive(Debug, Clone)]
pub enum Pixels<P> {
    /// Read from its file at each use.
    File {
        /// The file.
        path: PathBuf,
        /// Width and height when it was checked.
        size: (u32, u32),
    },
    /// Held in memory (generated or small images).
    Held(Arc<P>),
}

/// A field's RGB pixels.
pub type FieldImage = Pixels<RgbImage>;
/// A field's mitosis mask (non-zero = mitosis).
pub type FieldMask = Pixels<GrayImage>;

impl<P: Raster> Pixels<P> {
    /// Holds `raster` in memory.
    pub fn held(raster: P) -> Self {
        Self::Held(Arc::new(raster))
    }

    /// The file at `path`, decoded once now to check that it can be.
    pub fn file(path: &Path) -> Result<Self, DetectError> {
        let size = P::read(path)?.size();
        Ok(Self::File { path: path.to_path_buf(), size })
    }

    /// Width and height in pixels.
    pub fn size(&self) -> (u32, u32) {
        match self {
            Self::File { size, .. } => *size,
            Self::Held(p) => p.size(),
        }
    }

    /// The pixels (decoded now for a file; an error if it changed size since it was checked).
    pub fn load(&self) -> Result<Arc<P>, DetectError> {
        match self {
            Self::Held(p) => Ok(Arc::clone(p)),
            Self::File { path, size } => {
                let raster = P::read(path)?;
                if raster.size() != *size {
                    return Err(DetectError::Input {
                        path: path.clone(),
                        message: format!(
                            "changed during training: was {}x{}, now {}x{}",
                            size.0,
                            size.1,
                            raster.size().0,
                            raster.size().1
                        ),
                    });
                }
                Ok(Arc::new(raster))
            }
        }
    }
}

/// A field whose mitoses are all labelled: everything else in it is negative.
pub struct LabelledField {
    /// Image identifier (file stem).
    pub name: String,
    /// The pixels.
    pub image: FieldImage,
    /// Microns per pixel of `image`.
    pub mpp: f64,
    /// Mitosis centres (x = column, y = row, pixels).
    pub centroids: Vec<(f64, f64)>,
    /// Labelled look-alikes (hard negatives), pixels.
    pub lookalikes: Vec<(f64, f64)>,
    /// Pixel mask of the mitoses (non-zero = mitosis), where the dataset has one:
    /// stage 1 then learns the figures' outlines, not discs around their centres.
    pub mask: Option<FieldMask>,
    /// The dataset's subset (`train`, `test_3_score`, ...), when it has splits.
    pub subset: Option<String>,
    /// The slide it was taken from, as far as names tell (`A04` for `A04_07`):
    /// a validation split keeps a slide's fields together.
    pub slide: String,
}

/// A field with no mitotic figure (e.g. the CMC tiles), maybe with look-alikes.
pub struct NegativeField {
    /// Image identifier (file stem).
    pub name: String,
    /// The pixels.
    pub image: FieldImage,
    /// Microns per pixel of `image`.
    pub mpp: f64,
    /// Labelled look-alikes (hard negatives), pixels.
    pub lookalikes: Vec<(f64, f64)>,
}

/// A small patch with a pixel mask of its mitosis (empty mask: no mitosis).
pub struct MaskPatch {
    /// Image identifier (file stem).
    pub name: String,
    /// The pixels.
    pub image: RgbImage,
    /// Non-zero = mitosis; same size as `image`.
    pub mask: GrayImage,
    /// Microns per pixel of `image`.
    pub mpp: f64,
    /// Centre of the mask, when it holds a figure.
    pub centroid: Option<(f64, f64)>,
}

/// A folder of crops labelled by subfolder name
/// ([`mitoscope_model::data::folder_label`]: `mitosis/`, `normal/`,
/// `atypical/`, `negative/`, `imposter/`, ...), each crop centred on its object.
#[derive(Debug, Clone)]
pub struct CropFolder {
    /// The folder holding the labelled subfolders.
    pub path: PathBuf,
    /// Microns per pixel of its crops.
    pub mpp: f64,
}

/// Everything one recipe run trains and validates on.
pub struct TrainingData {
    /// Fully labelled fields (the recipe's split decides training and validation).
    pub fields: Vec<LabelledField>,
    /// Mitosis-free fields.
    pub negative_fields: Vec<NegativeField>,
    /// Mask patches (stage 1's mask target; stage-2 crops too).
    pub mask_patches: Vec<MaskPatch>,
    /// ICPR contest overlays (negatives only, clear of the paint).
    pub painted: Vec<PaintedField>,
    /// Labelled crop folders (stage-2 positives and negatives; positives also
    /// train stage 1 with a disc at their centre).
    pub crop_folders: Vec<CropFolder>,
    /// AMi-Br's `AMI-BR.csv`, for the figure selections that need each crop's slide or scanner.
    pub amibr_table: Option<PathBuf>,
    /// One line for the model card: where the data came from.
    pub source: String,
}

impl TrainingData {
    /// The shared data layout (`../shared/data`, see its README): the ICPR 2012
    /// HPFs and mask patches, the CMC tiles, the AMi-Br and AtNorM-Br crops and,
    /// with `painted`, the ICPR contest overlays.
    pub fn shared(root: &Path, painted: bool) -> Result<Self, DetectError> {
        Ok(Self {
            fields: load_icpr(root)?,
            negative_fields: load_cmc(root)?,
            mask_patches: load_mask_patches(root)?,
            painted: if painted { load_painted_hpfs(root)? } else { Vec::new() },
            crop_folders: vec![
                CropFolder { path: root.join("amibr/patches"), mpp: CROP_SOURCE_MPP },
                CropFolder { path: root.join("atnorm-br"), mpp: CROP_SOURCE_MPP },
            ],
            amibr_table: Some(root.join("amibr/AMI-BR.csv")),
            source: "shared".into(),
        })
    }

    /// Fields and crops from the datasets `sources` name (see [`DatasetSources`]).
    pub fn from_datasets(sources: &DatasetSources) -> Result<Self, DetectError> {
        let mut fields = Vec::new();
        // The readers' image ids, beside `fields`.
        let mut ids: Vec<String> = Vec::new();
        let mut described = Vec::new();
        let formats: Vec<Option<Format>> = match sources.formats.as_slice() {
            [] => vec![None; sources.datasets.len()],
            [one] => vec![Some(*one); sources.datasets.len()],
            many if many.len() == sources.datasets.len() => many.iter().copied().map(Some).collect(),
            many => {
                return Err(DetectError::Config(format!(
                    "{} formats for {} datasets: give one format for all, or one per dataset in order",
                    many.len(),
                    sources.datasets.len()
                )));
            }
        };
        for (path, format) in sources.datasets.iter().zip(formats) {
            let mut set = read_dataset(path, format, sources)?;
            // Taken as fully labelled, such an image would teach its mitoses
            // are background: it is left out, and said so.
            let unusable: Vec<(String, String)> =
                set.images.iter().filter_map(|i| i.unusable.clone().map(|why| (i.image.clone(), why))).collect();
            if !unusable.is_empty() {
                if unusable.len() == set.images.len() {
                    return Err(DetectError::Input {
                        path: path.clone(),
                        message: format!("no image can be used: {} (image {})", unusable[0].1, unusable[0].0),
                    });
                }
                tracing::warn!(
                    "{}: {} of {} images left out of training: {} (image {}){}",
                    path.display(),
                    unusable.len(),
                    set.images.len(),
                    unusable[0].1,
                    unusable[0].0,
                    if unusable.len() > 1 { "; `mitoscope inspect` lists the others" } else { "" }
                );
                set.images.retain(|i| i.unusable.is_none());
            }
            let before = fields.len();
            // Each image is decoded here to check it: in parallel, in the dataset's order.
            let loaded: Vec<LabelledField> =
                in_order(set.images.par_iter().map(|img| load_field(path, img, sources)).collect())?;
            fields.extend(loaded);
            ids.extend(set.images.iter().map(|i| i.image.clone()));
            let mitoses: usize = fields[before..].iter().map(|f| f.centroids.len()).sum();
            let lookalikes: usize = fields[before..].iter().map(|f| f.lookalikes.len()).sum();
            let masks = fields[before..].iter().filter(|f| f.mask.is_some()).count();
            described.push(format!(
                "{}: {} fields, {mitoses} mitoses, {lookalikes} look-alikes, {masks} masks",
                path.display(),
                fields.len() - before
            ));
        }
        // Subsets may repeat stems (GZMH V2's `train/001.png`, `test_3_score/001.png`):
        // such fields are named `<subset>/<stem>`. Folders may too (TUPAC16's
        // `<case>/01.tif`): those take the reader's id (`<case>_01`), which also
        // groups them by case.
        let mut count = std::collections::BTreeMap::new();
        for f in &fields {
            *count.entry(f.name.clone()).or_insert(0usize) += 1;
        }
        for (f, id) in fields.iter_mut().zip(&ids) {
            if count[&f.name] < 2 {
                continue;
            }
            if let Some(subset) = &f.subset {
                f.name = format!("{subset}/{}", f.name);
            } else if !id.is_empty() && *id != f.name {
                f.slide = slide_of(id, None);
                f.name = id.clone();
            }
        }
        let mut seen = BTreeSet::new();
        for f in &fields {
            if !seen.insert(f.name.as_str()) {
                return Err(DetectError::Config(format!(
                    "two training fields are both called '{}': give each dataset distinct image names",
                    f.name
                )));
            }
        }
        let mut negative_fields = Vec::new();
        for dir in &sources.negative_folders {
            let files = image_files(dir)?;
            let mpp = sources
                .mpp
                .ok_or_else(|| DetectError::Config(format!("{}: mitosis-free fields need --mpp", dir.display())))?;
            let loaded = files
                .par_iter()
                .map(|file| {
                    Ok(NegativeField {
                        name: crate::batch::image_id(file),
                        image: FieldImage::file(file)?,
                        mpp,
                        lookalikes: Vec::new(),
                    })
                })
                .collect::<Vec<Result<_, DetectError>>>();
            negative_fields.extend(in_order(loaded)?);
            described.push(format!("{}: {} mitosis-free fields", dir.display(), files.len()));
        }
        let mut crop_folders = Vec::new();
        for dir in &sources.crop_folders {
            let labelled = std::fs::read_dir(dir)
                .map_err(|e| DetectError::io(dir, e))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter(|e| e.file_name().to_str().and_then(mitoscope_model::data::folder_label).is_some())
                .count();
            if labelled == 0 {
                return Err(DetectError::Input {
                    path: dir.clone(),
                    message: "no labelled subfolder (mitosis/, normal/, atypical/, positive/, negative/,                               imposter/, ...): crops are labelled by the name of their folder"
                        .into(),
                });
            }
            crop_folders.push(CropFolder { path: dir.clone(), mpp: sources.crops_mpp });
            described.push(format!("{}: crops at {} um/px", dir.display(), sources.crops_mpp));
        }
        if fields.is_empty() {
            return Err(DetectError::Config(
                "no labelled fields: the recipe needs at least two fully labelled images (--dataset)                  to train stage 1 and choose the operating threshold"
                    .into(),
            ));
        }
        Ok(Self {
            fields,
            negative_fields,
            mask_patches: Vec::new(),
            painted: Vec::new(),
            crop_folders,
            amibr_table: None,
            source: described.join("; "),
        })
    }
}

/// Datasets to train from ([`TrainingData::from_datasets`]).
#[derive(Debug, Clone, Default)]
pub struct DatasetSources {
    /// Annotation files or dataset folders with complete labels per image.
    pub datasets: Vec<PathBuf>,
    /// Their formats, when detection should not decide: none (each detected),
    /// one (all of them), or one per dataset in the same order.
    pub formats: Vec<Format>,
    /// Folder of the images an annotation file refers to (default: beside it).
    pub images_dir: Option<PathBuf>,
    /// Microns per pixel where a dataset does not say.
    pub mpp: Option<f64>,
    /// Crop folders labelled by subfolder name.
    pub crop_folders: Vec<PathBuf>,
    /// Microns per pixel of the crops.
    pub crops_mpp: f64,
    /// Folders of mitosis-free fields.
    pub negative_folders: Vec<PathBuf>,
}

/// The fields that validate (by name): those of `subset` when given, else
/// about `fraction` of them, whole slides at a time where the names say which
/// slide a field is from (`<slide>_<n>`, as GZMH and ICPR name HPFs), so no
/// slide is on both sides. Chosen by `seed`, the same on every run. At least
/// one field trains and one validates.
pub fn validation_split(
    fields: &[LabelledField],
    subset: Option<&str>,
    fraction: f64,
    seed: u64,
) -> Result<Vec<String>, DetectError> {
    if let Some(subset) = subset {
        let val: Vec<String> =
            fields.iter().filter(|f| f.subset.as_deref() == Some(subset)).map(|f| f.name.clone()).collect();
        let known: BTreeSet<&str> = fields.iter().filter_map(|f| f.subset.as_deref()).collect();
        if val.is_empty() || val.len() == fields.len() {
            return Err(DetectError::Config(format!(
                "--val-subset {subset}: {} of {} fields are in it (subsets: {known:?}); it must leave some to train",
                val.len(),
                fields.len()
            )));
        }
        return Ok(val);
    }
    if fields.len() < 2 {
        return Err(DetectError::Config(format!(
            "{} labelled field(s): at least one must train and one validate",
            fields.len()
        )));
    }
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(DetectError::Config(format!("--val-fraction {fraction}: must be between 0 and 1")));
    }
    // A stable order that does not follow the names (FNV-1a of seed and key).
    let order = |key: &str| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let mut slides: Vec<(u64, String, Vec<&str>)> = Vec::new();
    for f in fields {
        match slides.iter_mut().find(|s| s.1 == f.slide) {
            Some(s) => s.2.push(&f.name),
            None => slides.push((order(&f.slide), f.slide.clone(), vec![&f.name])),
        }
    }
    // One slide only: split its fields instead.
    if slides.len() == 1 {
        slides = fields.iter().map(|f| (order(&f.name), f.name.clone(), vec![f.name.as_str()])).collect();
    }
    slides.sort();
    let want = ((fraction * fields.len() as f64).round() as usize).max(1);
    let mut val = Vec::new();
    for (_, _, names) in &slides[..slides.len() - 1] {
        if val.len() >= want {
            break;
        }
        val.extend(names.iter().map(|n| n.to_string()));
    }
    Ok(val)
}

fn read_dataset(path: &Path, format: Option<Format>, sources: &DatasetSources) -> Result<AnnotationSet, DetectError> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) {
        return Err(DetectError::Input {
            path: path.to_path_buf(),
            message: "training reads image files: extract the archive and pass its folder \
                      (`mitoscope inspect` reads the zip as it is)"
                .into(),
        });
    }
    let mpp = sources
        .mpp
        .map(mitoscope_geom::Mpp::new)
        .transpose()
        .map_err(|e| DetectError::Config(format!("--mpp: {e}")))?;
    let opts = ReadOptions { mpp, images_dir: sources.images_dir.clone(), ..ReadOptions::default() };
    let set = mitoscope_formats::read(path, format, &opts)
        .map_err(|e| DetectError::Input { path: path.to_path_buf(), message: e.to_string() })?;
    if set.images.is_empty() {
        return Err(DetectError::Input { path: path.to_path_buf(), message: "holds no labelled image".into() });
    }
    for issue in &set.inconsistencies {
        tracing::warn!(dataset = %path.display(), "{issue}");
    }
    Ok(set)
}

/// The image file of `img`: the path the reader recorded, else `<stem>.<ext>`
/// in the images folder, else beside the annotation file.
fn image_file(dataset: &Path, img: &ImageAnnotations, sources: &DatasetSources) -> Result<PathBuf, DetectError> {
    if let Some(p) = img.path.as_ref().filter(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let beside =
        if dataset.is_dir() { dataset.to_path_buf() } else { dataset.parent().unwrap_or(Path::new(".")).to_path_buf() };
    let stem = Path::new(&img.image);
    let stem = if mitoscope_imaging::is_image_path(stem) { stem.with_extension("") } else { stem.to_path_buf() };
    for dir in sources.images_dir.iter().chain(std::iter::once(&beside)) {
        for ext in mitoscope_imaging::IMAGE_EXTENSIONS {
            let candidate = dir.join(stem.with_extension(ext));
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(DetectError::Input {
        path: dataset.to_path_buf(),
        message: format!(
            "image '{}' not found{} (pass --images DIR)",
            img.image,
            sources.images_dir.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default()
        ),
    })
}

/// The results of a parallel pass, or the first failure in input order.
/// (`collect::<Result<..>>` on a parallel iterator returns whichever failure
/// finished first, so the same bad dataset could name a different file each run.)
fn in_order<T>(results: Vec<Result<T, DetectError>>) -> Result<Vec<T>, DetectError> {
    results.into_iter().collect()
}

fn load_field(dataset: &Path, img: &ImageAnnotations, sources: &DatasetSources) -> Result<LabelledField, DetectError> {
    let file = image_file(dataset, img, sources)?;
    let image = FieldImage::file(&file)?;
    let (width, height) = image.size();
    let stem = crate::batch::image_id(&file);
    let mpp = img.mpp.map(|m| m.get()).or(sources.mpp).ok_or_else(|| DetectError::Input {
        path: file.clone(),
        message: "microns per pixel unknown: the dataset does not say, pass --mpp".into(),
    })?;
    // A label outside the image (another image's, or x and y swapped) is no
    // figure of this one: left out, with a warning, not counted as missed.
    let inside = |x: f64, y: f64| (0.0..f64::from(width)).contains(&x) && (0.0..f64::from(height)).contains(&y);
    for o in img.objects.iter().filter(|o| !inside(o.centroid.x, o.centroid.y)) {
        tracing::warn!(
            "{}: label at ({}, {}) lies outside the image ({width} x {height} px); left out",
            file.display(),
            o.centroid.x,
            o.centroid.y
        );
    }
    let points = |class: ObjectClass| -> Vec<(f64, f64)> {
        img.objects
            .iter()
            .filter(|o| o.class == class && inside(o.centroid.x, o.centroid.y))
            .map(|o| (o.centroid.x, o.centroid.y))
            .collect()
    };
    let mask = match &img.mask_path {
        Some(path) => {
            let mask = FieldMask::file(path)?;
            if mask.size() != (width, height) {
                return Err(DetectError::Input {
                    path: path.clone(),
                    message: format!(
                        "mask is {}x{}, its image {} is {width}x{height}",
                        mask.size().0,
                        mask.size().1,
                        file.display(),
                    ),
                });
            }
            Some(mask)
        }
        // Pixel sets or polygons (ICPR pixel lists, GeoJSON outlines) make a mask too.
        // Only when every figure has one: a figure left out of the mask would teach stage 1 it is background.
        None if img.objects.iter().any(|o| o.class == ObjectClass::Mitosis)
            && img.objects.iter().all(|o| o.class != ObjectClass::Mitosis || o.shape.is_some()) =>
        {
            let figures = img.objects.iter().filter(|o| o.class == ObjectClass::Mitosis && o.shape.is_some());
            Some(FieldMask::held(mitoscope_annotations::mask::rasterise(figures, width, height).0))
        }
        None => None,
    };
    Ok(LabelledField {
        image,
        mpp,
        centroids: points(ObjectClass::Mitosis),
        lookalikes: points(ObjectClass::NonMitosis),
        mask,
        slide: slide_of(&stem, img.subset.as_deref()),
        subset: img.subset.clone(),
        name: stem,
    })
}

/// The slide of a field named `stem`: see [`crate::hpf_set::group_key`]; within its subset.
fn slide_of(stem: &str, subset: Option<&str>) -> String {
    let slide = crate::hpf_set::group_key(stem, None).unwrap_or_else(|| stem.to_owned());
    match subset {
        Some(s) => format!("{s}/{slide}"),
        None => slide,
    }
}

fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DetectError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DetectError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && mitoscope_imaging::is_image_path(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DetectError::Input { path: dir.to_path_buf(), message: "no image files".into() });
    }
    Ok(files)
}

fn read_text(path: &Path) -> Result<String, DetectError> {
    std::fs::read_to_string(path).map_err(|e| DetectError::io(path, e))
}

fn sorted_files(dir: &Path, ext: &[&str]) -> Result<Vec<PathBuf>, DetectError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DetectError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| ext.iter().any(|x| x.eq_ignore_ascii_case(e)))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn load_icpr(root: &Path) -> Result<Vec<LabelledField>, DetectError> {
    let csv_path = root.join("icpr2012/centroids.csv");
    let text = read_text(&csv_path)?;
    let mut out = Vec::new();
    for file in sorted_files(&root.join("icpr2012/hpf"), &["jpg", "png", "bmp", "tif"])? {
        let name = crate::batch::image_id(&file);
        let mut centroids = Vec::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.first().map(|s| s.trim_end_matches(".jpg")) != Some(name.as_str()) {
                continue;
            }
            if f.get(3).is_some_and(|c| !c.eq_ignore_ascii_case("mitosis")) {
                continue;
            }
            let parse = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite());
            match (parse(1), parse(2)) {
                (Some(x), Some(y)) => centroids.push((x, y)),
                _ => {
                    return Err(DetectError::Input {
                        path: csv_path.clone(),
                        message: format!("line {}: expected image,x,y,class with numeric x,y, found '{line}'", i + 1),
                    });
                }
            }
        }
        out.push(LabelledField {
            image: FieldImage::file(&file)?,
            mpp: ICPR_MPP,
            centroids,
            lookalikes: Vec::new(),
            mask: None,
            subset: None,
            slide: slide_of(&name, None),
            name,
        });
    }
    Ok(out)
}

fn load_cmc(root: &Path) -> Result<Vec<NegativeField>, DetectError> {
    let mut out = Vec::new();
    for file in sorted_files(&root.join("cmc-negatives"), &["jpg"])? {
        let image = FieldImage::file(&file)?;
        let (w, h) = (f64::from(image.size().0), f64::from(image.size().1));
        let labels = file.with_extension("txt");
        let mut lookalikes = Vec::new();
        if labels.is_file() {
            for line in read_text(&labels)?.lines() {
                let f: Vec<f64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
                // Class 1 = mitosis look-alike (hard negative); boxes are normalised centres.
                if f.len() == 5 && f[0] == 1.0 {
                    lookalikes.push((f[1] * w, f[2] * h));
                }
            }
        }
        out.push(NegativeField { name: crate::batch::image_id(&file), image, mpp: CROP_SOURCE_MPP, lookalikes });
    }
    Ok(out)
}

/// An ICPR contest overlay: real scanner-A tissue whose mitoses are painted
/// over, so it can give negatives only, and only clear of the paint.
pub struct PaintedField {
    pub(crate) name: String,
    pub(crate) image: RgbImage,
    pub(crate) mpp: f64,
    /// Centre and radius (half the box diagonal, px) of each painted figure.
    pub(crate) figures: Vec<((f64, f64), f64)>,
}

impl PaintedField {
    /// Figure centres, and the distance from them that keeps a crop whose
    /// half-diagonal is `crop_half_diagonal` px (of this image) clear of every painted pixel.
    pub(crate) fn exclusion(&self, crop_half_diagonal: f64) -> (Vec<(f64, f64)>, f64) {
        let widest = self.figures.iter().map(|f| f.1).fold(0.0, f64::max);
        (self.figures.iter().map(|f| f.0).collect(), widest + crop_half_diagonal + 2.0)
    }
}

/// `<id>_overlay.jpg` with its pixel lists `<id>.csv` in `icpr2012/pixel-masks/`
/// (none when the folder is absent: the data README lists it as optional extra).
pub(crate) fn load_painted_hpfs(root: &Path) -> Result<Vec<PaintedField>, DetectError> {
    let dir = root.join("icpr2012/pixel-masks");
    if !dir.is_dir() {
        tracing::warn!(dir = %dir.display(), "no ICPR overlays: stage 2 gets no painted-HPF negatives");
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for csv in sorted_files(&dir, &["csv"])? {
        let name = crate::batch::image_id(&csv);
        let overlay = dir.join(format!("{name}_overlay.jpg"));
        if !overlay.is_file() {
            continue;
        }
        let set = mitoscope_formats::icpr::read_pixel_lists(&csv, &mitoscope_formats::ReadOptions::default())?;
        let figures = set
            .images
            .iter()
            .flat_map(|i| &i.objects)
            .map(|o| {
                let radius =
                    o.bbox.map(|b| 0.5 * (b.x_max - b.x_min + 1.0).hypot(b.y_max - b.y_min + 1.0)).unwrap_or(0.0);
                ((o.centroid.x, o.centroid.y), radius)
            })
            .collect();
        out.push(PaintedField { image: mitoscope_imaging::read_image(&overlay)?, name, mpp: ICPR_MPP, figures });
    }
    Ok(out)
}

fn load_mask_patches(root: &Path) -> Result<Vec<MaskPatch>, DetectError> {
    let dir = root.join("icpr2012/mask-patches");
    let mut out = Vec::new();
    for file in sorted_files(&dir.join("images"), &["jpg", "png"])? {
        let mask_path = dir.join("masks").join(file.file_name().unwrap_or_default());
        let image = mitoscope_imaging::read_image(&file)?;
        let mask = mitoscope_imaging::read_mask(&mask_path)?;
        if mask.dimensions() != image.dimensions() {
            return Err(DetectError::Input {
                path: mask_path,
                message: format!(
                    "mask is {}x{}, image is {}x{}",
                    mask.width(),
                    mask.height(),
                    image.width(),
                    image.height()
                ),
            });
        }
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0usize);
        for (x, y, p) in mask.enumerate_pixels() {
            if p.0[0] > 0 {
                sx += f64::from(x);
                sy += f64::from(y);
                n += 1;
            }
        }
        // Tiny blobs are JPEG noise, not a figure.
        let centroid = (n >= 20).then(|| (sx / n as f64, sy / n as f64));
        out.push(MaskPatch { name: crate::batch::image_id(&file), image, mask, mpp: ICPR_MPP, centroid });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, subset: Option<&str>) -> LabelledField {
        LabelledField {
            name: name.into(),
            image: FieldImage::held(RgbImage::new(2, 2)),
            mpp: 0.25,
            centroids: Vec::new(),
            lookalikes: Vec::new(),
            mask: None,
            subset: subset.map(String::from),
            slide: slide_of(name, subset),
        }
    }

    #[test]
    fn validation_split_keeps_slides_together_and_honours_subsets() {
        // Three slides of 3, 2 and 1 fields.
        let fields: Vec<LabelledField> =
            ["a_1", "a_2", "a_3", "b_1", "b_2", "c_1"].iter().map(|n| field(n, None)).collect();
        for seed in 0..20 {
            let val = validation_split(&fields, None, 0.3, seed).unwrap();
            assert!(!val.is_empty() && val.len() < fields.len(), "{val:?}");
            let slides: BTreeSet<&str> = val.iter().map(|n| &n[..1]).collect();
            for slide in &slides {
                let all = fields.iter().filter(|f| f.name.starts_with(slide)).count();
                assert_eq!(val.iter().filter(|n| n.starts_with(slide)).count(), all, "{val:?} splits slide {slide}");
            }
            assert_eq!(val, validation_split(&fields, None, 0.3, seed).unwrap(), "not deterministic");
        }
        // Different seeds choose different slides.
        let chosen: BTreeSet<Vec<String>> = (0..20).map(|s| validation_split(&fields, None, 0.3, s).unwrap()).collect();
        assert!(chosen.len() > 1);
        // One slide only: its fields are split.
        let one: Vec<LabelledField> = ["x_1", "x_2", "x_3", "x_4"].iter().map(|n| field(n, None)).collect();
        assert_eq!(validation_split(&one, None, 0.25, 1).unwrap().len(), 1);
        // A named subset.
        let sub = vec![field("p_1", Some("train")), field("p_2", Some("train")), field("q_1", Some("test_3_score"))];
        assert_eq!(validation_split(&sub, Some("test_3_score"), 0.2, 0).unwrap(), ["q_1"]);
        let err = validation_split(&sub, Some("test_1or2_score"), 0.2, 0).unwrap_err().to_string();
        assert!(err.contains("test_3_score") && err.contains("0 of 3"), "{err}");
        let err = validation_split(&sub, Some("train"), 0.2, 0);
        assert!(err.is_ok());
        assert!(validation_split(&sub[..1], None, 0.2, 0).is_err());
        assert!(validation_split(&sub, None, 1.0, 0).is_err());
        assert!(validation_split(&sub, None, f64::NAN, 0).is_err());
    }

    fn write_png(path: &Path, img: &RgbImage) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save(path).unwrap();
    }

    #[test]
    fn reads_a_csv_dataset_with_its_images_and_refuses_what_it_cannot_use() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in ["s1_1", "s1_2", "s2_1"] {
            write_png(
                &root.join(format!("images/{name}.png")),
                &RgbImage::from_pixel(40, 30, image::Rgb([200, 150, 190])),
            );
        }
        std::fs::write(
            root.join("labels.csv"),
            "image,x,y,class\ns1_1,10,12,mitosis\ns1_1,30,5,mitosis\ns1_2,7,7,mitosis\ns2_1,20,20,non-mitosis\n",
        )
        .unwrap();
        let mut sources = DatasetSources {
            datasets: vec![root.join("labels.csv")],
            images_dir: Some(root.join("images")),
            crops_mpp: 0.25,
            ..DatasetSources::default()
        };
        // No mpp anywhere: the image is named.
        let err = TrainingData::from_datasets(&sources).err().unwrap().to_string();
        assert!(err.contains("s1_1.png") && err.contains("--mpp"), "{err}");
        sources.mpp = Some(0.25);
        let data = TrainingData::from_datasets(&sources).unwrap();
        let got: Vec<(&str, usize, usize, &str)> = data
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.centroids.len(), f.lookalikes.len(), f.slide.as_str()))
            .collect();
        assert_eq!(got, [("s1_1", 2, 0, "s1"), ("s1_2", 1, 0, "s1"), ("s2_1", 0, 1, "s2")]);
        assert_eq!(data.fields[0].centroids[1], (30.0, 5.0));
        assert!(data.fields.iter().all(|f| f.mpp == 0.25 && f.image.size() == (40, 30) && f.mask.is_none()));
        assert!(data.source.contains("labels.csv: 3 fields, 3 mitoses, 1 look-alikes, 0 masks"), "{}", data.source);
        // Formats: one for all datasets, one per dataset, or a clear refusal.
        let csv2 = root.join("labels2.csv");
        std::fs::write(&csv2, "image,x,y\ns1_1,10,12\n").unwrap();
        let two = |formats: Vec<Format>| DatasetSources {
            datasets: vec![root.join("labels.csv"), csv2.clone()],
            formats,
            ..sources.clone()
        };
        let err = TrainingData::from_datasets(&two(vec![Format::Csv, Format::Csv])).err().unwrap().to_string();
        assert!(err.contains("both called 's1_1'"), "read both as CSV: {err}");
        let err = TrainingData::from_datasets(&two(vec![Format::Csv, Format::Coco])).err().unwrap().to_string();
        assert!(err.contains("labels2.csv"), "the second read as COCO: {err}");
        let err = TrainingData::from_datasets(&two(vec![Format::Csv; 3])).err().unwrap().to_string();
        assert!(err.contains("3 formats for 2 datasets"), "{err}");
        // Fields stay files: read at each use, and refused if they changed under the run.
        assert_eq!(data.fields[0].image.load().unwrap().get_pixel(3, 3).0, [200, 150, 190]);
        write_png(&root.join("images/s1_1.png"), &RgbImage::new(20, 20));
        let err = data.fields[0].image.load().err().unwrap().to_string();
        assert!(err.contains("s1_1.png") && err.contains("changed"), "{err}");
        write_png(&root.join("images/s1_1.png"), &RgbImage::from_pixel(40, 30, image::Rgb([200, 150, 190])));

        // An image the labels name but nobody has.
        std::fs::write(root.join("more.csv"), "image,x,y\nghost,1,1\n").unwrap();
        let missing = DatasetSources { datasets: vec![root.join("more.csv")], ..sources.clone() };
        let err = TrainingData::from_datasets(&missing).err().unwrap().to_string();
        assert!(err.contains("ghost") && err.contains("not found"), "{err}");
        // A crop folder without labelled subfolders.
        std::fs::create_dir_all(root.join("crops/unsorted")).unwrap();
        let crops = DatasetSources { crop_folders: vec![root.join("crops")], ..sources.clone() };
        let err = TrainingData::from_datasets(&crops).err().unwrap().to_string();
        assert!(err.contains("no labelled subfolder"), "{err}");
        std::fs::create_dir_all(root.join("crops/mitosis")).unwrap();
        assert_eq!(TrainingData::from_datasets(&crops).unwrap().crop_folders.len(), 1);
        // A zip, a truncated image, an empty negatives folder.
        std::fs::write(root.join("gzmh.zip"), b"PK").unwrap();
        let zip = DatasetSources { datasets: vec![root.join("gzmh.zip")], ..sources.clone() };
        let err = TrainingData::from_datasets(&zip).err().unwrap().to_string();
        assert!(err.contains("extract"), "{err}");
        std::fs::write(root.join("images/s2_1.png"), b"\x89PNG\r\n").unwrap();
        let err = TrainingData::from_datasets(&sources).err().unwrap().to_string();
        assert!(err.contains("s2_1.png"), "{err}");
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let empty = DatasetSources { datasets: Vec::new(), negative_folders: vec![root.join("empty")], ..sources };
        let err = TrainingData::from_datasets(&empty).err().unwrap().to_string();
        assert!(err.contains("no image files"), "{err}");
    }

    #[test]
    fn tupac_cases_with_the_same_file_names_are_told_apart_by_case() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let tissue = RgbImage::from_pixel(48, 40, image::Rgb([200, 150, 190]));
        for case in ["01", "02"] {
            write_png(&root.join(format!("mitoses_image_data/{case}/01.png")), &tissue);
            std::fs::create_dir_all(root.join(format!("mitoses_ground_truth/{case}"))).unwrap();
            std::fs::write(root.join(format!("mitoses_ground_truth/{case}/01.csv")), "11,22\n").unwrap();
        }
        let sources = DatasetSources {
            datasets: vec![root.join("mitoses_ground_truth")],
            mpp: Some(0.25),
            crops_mpp: 0.25,
            ..Default::default()
        };
        let data = TrainingData::from_datasets(&sources).unwrap();
        let names: Vec<(&str, &str)> = data.fields.iter().map(|f| (f.name.as_str(), f.slide.as_str())).collect();
        assert_eq!(names, [("01_01", "01"), ("02_01", "02")]);
        // Row 11, column 22: x = 22, y = 11.
        assert!(data.fields.iter().all(|f| f.centroids == [(22.0, 11.0)]));
    }

    #[test]
    fn a_gzmh_folder_gives_stage_1_its_masks_and_keeps_subsets_apart() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("GZMH_V2");
        let tissue = RgbImage::from_pixel(48, 40, image::Rgb([200, 150, 190]));
        let mut mask = GrayImage::new(48, 40);
        for y in 10..14 {
            for x in 20..25 {
                mask.put_pixel(x, y, image::Luma([255]));
            }
        }
        write_png(&root.join("train/images/001.png"), &tissue);
        std::fs::create_dir_all(root.join("train/masks")).unwrap();
        mask.save(root.join("train/masks/001.png")).unwrap();
        write_png(&root.join("test/test_3_score/images/001.png"), &tissue);
        std::fs::create_dir_all(root.join("test/test_3_score/masks")).unwrap();
        GrayImage::new(48, 40).save(root.join("test/test_3_score/masks/001.png")).unwrap();
        let sources =
            DatasetSources { datasets: vec![root.clone()], mpp: Some(0.25), crops_mpp: 0.25, ..Default::default() };
        let data = TrainingData::from_datasets(&sources).unwrap();
        let mut names: Vec<&str> = data.fields.iter().map(|f| f.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["test_3_score/001", "train/001"]);
        let train = data.fields.iter().find(|f| f.name == "train/001").unwrap();
        assert_eq!(train.centroids, [(22.0, 11.5)]);
        let m = train.mask.as_ref().expect("the mask is kept for stage 1");
        // Both stay files, read again at each use.
        assert!(matches!(m, Pixels::File { .. }) && matches!(train.image, Pixels::File { .. }));
        assert_eq!(m.load().unwrap().pixels().filter(|p| p.0[0] > 0).count(), 20);
        assert_eq!(validation_split(&data.fields, Some("test_3_score"), 0.2, 0).unwrap(), ["test_3_score/001"]);
        // A mask of the wrong size leaves its image out (not trained as
        // mitosis-free); with every image unusable, training is refused.
        GrayImage::new(20, 20).save(root.join("train/masks/001.png")).unwrap();
        let data = TrainingData::from_datasets(&sources).unwrap();
        let kept: Vec<&[(f64, f64)]> = data.fields.iter().map(|f| f.centroids.as_slice()).collect();
        assert_eq!(kept, [&[] as &[(f64, f64)]], "only the empty test field is left");
        // A split without masks or labels is unannotated, not mitosis-free: left out too.
        mask.save(root.join("train/masks/001.png")).unwrap();
        std::fs::remove_dir_all(root.join("test/test_3_score/masks")).unwrap();
        let data = TrainingData::from_datasets(&sources).unwrap();
        let kept: Vec<&[(f64, f64)]> = data.fields.iter().map(|f| f.centroids.as_slice()).collect();
        assert_eq!(kept, [&[(22.0, 11.5)] as &[(f64, f64)]], "only the train field is left");
        GrayImage::new(20, 20).save(root.join("train/masks/001.png")).unwrap();
        let err = TrainingData::from_datasets(&sources).err().expect("nothing usable is an error");
        assert!(err.to_string().contains("no image can be used"), "{err}");
    }

    #[test]
    fn reads_the_icpr_contest_overlays() {
        let dir = mitoscope_testdata::require_data!("icpr2012/pixel-masks");
        let painted = load_painted_hpfs(dir.parent().and_then(Path::parent).unwrap()).unwrap();
        let counts: Vec<(&str, usize)> = painted.iter().map(|p| (p.name.as_str(), p.figures.len())).collect();
        assert_eq!(counts, [("A00_01", 5), ("A00_02", 2)]);
        for p in &painted {
            assert_eq!(p.image.dimensions(), (2084, 2084));
            // The contest paints each figure yellow: its centre pixel is yellow.
            for &((x, y), r) in &p.figures {
                assert!((5.0..60.0).contains(&r), "{} radius {r}", p.name);
                let px = p.image.get_pixel(x.round() as u32, y.round() as u32).0;
                assert!(px[0] > 200 && px[1] > 200 && px[2] < 90, "{} at {x},{y}: {px:?}", p.name);
            }
        }
    }
}
