//! Command-line arguments, as typed. Validation that needs more than clap
//! (e.g. µm radius needs an mpp) happens in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Find, segment, count and score mitotic figures in H&E histopathology.
#[derive(Debug, Parser)]
#[command(name = "mitoscope", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug); MITOSCOPE_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Detect mitotic figures in H&E images (PNG, JPEG, TIFF, BMP) with the two-stage model.
    Detect(DetectArgs),
    /// Run the whole pipeline on a synthetic H&E-like field (no data needed) and write every output.
    Demo(DemoArgs),
    /// Score crops (or the centre crop of larger images) with the stage-2 classifier.
    Classify(ClassifyArgs),
    /// Train a model with a committed recipe, from the shared real data or your own datasets.
    Train(TrainArgs),
    /// Check that a GPU device computes what the CPU computes (forward outputs and the first
    /// training steps' losses, same weights, same batch), and time both.
    CheckDevice(CheckDeviceArgs),
    /// Summarise a dataset or annotation file: images, masks, objects per subset, mpp, inconsistencies.
    Inspect(InspectArgs),
    /// Convert annotations between formats (any reader to any writer).
    Convert(ConvertArgs),
    /// Score detections against ground truth: P/R/F1, threshold sweep, AP, FROC, counts.
    Eval(EvalArgs),
    /// Compare segmentation masks: pixel Dice/IoU and object-level Dice.
    Segeval(SegevalArgs),
    /// Nottingham mitotic score from a count and the area analysed.
    Grade(GradeArgs),
    /// Whole slides (Aperio SVS, pyramidal TIFF, DICOM): detect over tissue, hotspot, mitotic score.
    Slide(SlideArgs),
    /// Score a folder of HPF images per slide from its top-N HPFs (GZMH V2 style), against truth if given.
    Score(ScoreArgs),
    /// Write a self-contained HTML report of detections (with truth: errors, PR and FROC curves).
    Report(ReportArgs),
    /// Review detections on an HPF or slide in the browser: accept, reject, add, export.
    Review(ReviewArgs),
}

/// Input-format options shared by commands that read annotations.
#[derive(Debug, Args, Clone)]
pub struct ReadArgs {
    /// Microns per pixel of the images, where the files do not say.
    #[arg(long, value_name = "M")]
    pub mpp: Option<f64>,
    /// Folder holding the images the annotations refer to (YOLO needs image sizes).
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
}

/// `mitoscope inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Dataset folder, zip, or annotation file.
    pub path: PathBuf,
    /// Input format (default: detected). One of gzmh, csv, icpr, coco, midog, sliderunner, yolo, voc, asap, geojson, tupac, atypia14.
    #[arg(long, short = 'f', value_name = "FORMAT")]
    pub format: Option<String>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Show at most this many inconsistencies (all are counted).
    #[arg(long, default_value_t = 50)]
    pub max_issues: usize,
}

/// `mitoscope convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Input dataset folder, zip, or annotation file.
    pub input: PathBuf,
    /// Output file (or folder for per-image formats: yolo, voc, asap, midog with several images).
    pub output: PathBuf,
    /// Input format (default: detected).
    #[arg(long, value_name = "FORMAT")]
    pub from: Option<String>,
    /// Output format (default: from the output extension: .csv, .geojson, .json = coco, .xml = voc, .txt = yolo).
    #[arg(long, value_name = "FORMAT")]
    pub to: Option<String>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Write outlines as polygons where known (GeoJSON, ASAP).
    #[arg(long)]
    pub polygons: bool,
    /// Keep only mitoses (drop look-alikes / hard negatives).
    #[arg(long)]
    pub mitoses_only: bool,
    /// Replace output files that already exist (refused otherwise, so that no file is lost).
    #[arg(long)]
    pub force: bool,
}

/// `mitoscope eval`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("radius").required(true).args(["radius_px", "radius_um"])))]
pub struct EvalArgs {
    /// Ground truth: CSV with a header holding image,x,y, or any readable format.
    #[arg(long, value_name = "T")]
    pub truth: PathBuf,
    /// Predictions: CSV with image,x,y,score, or any readable format.
    #[arg(long, value_name = "P")]
    pub pred: PathBuf,
    #[command(flatten)]
    pub matching: MatchArgs,
    /// Microns per pixel (converts --radius-um; also fills images lacking mpp).
    #[arg(long, value_name = "M")]
    pub mpp: Option<f64>,
    /// Drop predictions scoring below S before matching.
    #[arg(long, value_name = "S")]
    pub threshold: Option<f64>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Format of --truth (default: detected).
    #[arg(long, value_name = "FORMAT")]
    pub truth_format: Option<String>,
    /// Format of --pred (default: detected).
    #[arg(long, value_name = "FORMAT")]
    pub pred_format: Option<String>,
    /// Folder holding the images (for formats that need image sizes).
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Also print the per-image table.
    #[arg(long)]
    pub per_image: bool,
}

/// How detections are matched to the truth: shared by `eval` and `report` so
/// that the two read the same flags the same way.
#[derive(Debug, Args)]
pub struct MatchArgs {
    /// Match radius in pixels.
    #[arg(long, value_name = "R", conflicts_with = "radius_um")]
    pub radius_px: Option<f64>,
    /// Match radius in microns (needs --mpp unless every truth image states its mpp).
    #[arg(long, value_name = "R")]
    pub radius_um: Option<f64>,
    /// Matching rule (greedy, optimal, wang2024).
    #[arg(long = "match", value_name = "RULE", default_value = "greedy")]
    pub rule: String,
}

/// `mitoscope segeval`.
#[derive(Debug, Args)]
pub struct SegevalArgs {
    /// Ground-truth mask image, or folder of masks.
    #[arg(long, value_name = "MASKS")]
    pub truth: PathBuf,
    /// Predicted mask image, or folder of masks (paired by file stem).
    #[arg(long, value_name = "MASKS")]
    pub pred: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mitoscope grade`.
#[derive(Debug, Args)]
pub struct GradeArgs {
    /// Number of mitoses counted.
    #[arg(long)]
    pub count: usize,
    /// Area actually analysed, mm².
    #[arg(long, value_name = "MM2", allow_negative_numbers = true)]
    pub area_mm2: f64,
    /// Microscope field diameter in mm (selects the table row).
    #[arg(long, value_name = "D", conflicts_with = "hpf_area_mm2", allow_negative_numbers = true)]
    pub field_diameter_mm: Option<f64>,
    /// Area of one high-power field in mm² (selects the table row).
    #[arg(long, value_name = "A", allow_negative_numbers = true)]
    pub hpf_area_mm2: Option<f64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Field size of the mitotic score, shared by `slide` and `score`.
#[derive(Debug, Args, Clone)]
pub struct FieldArgs {
    /// Area of one high-power field in mm² (default for `slide`: 10 HPF = 2 mm²).
    #[arg(long, value_name = "A", conflicts_with = "field_diameter_mm")]
    pub hpf_area_mm2: Option<f64>,
    /// Microscope field diameter in mm.
    #[arg(long, value_name = "D")]
    pub field_diameter_mm: Option<f64>,
    /// Number of HPFs in the hotspot / counted per slide.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub hpfs: usize,
}

/// `mitoscope slide`.
#[derive(Debug, Args)]
pub struct SlideArgs {
    /// Slide files (Aperio .svs, pyramidal .tif/.tiff, a DICOM series: any of its .dcm files, or its folder), or folders of slide files.
    #[arg(required = true, value_name = "SLIDE")]
    pub slides: Vec<PathBuf>,
    /// Output folder; each slide's results go to DIR/<slide stem>/ (replaced on a re-run).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Level-0 microns per pixel, overriding what the slide says.
    #[arg(long, value_name = "M")]
    pub mpp: Option<f64>,
    /// Operating threshold on the stage-2 score (default: the model's).
    #[arg(long, value_name = "S")]
    pub threshold: Option<f64>,
    /// Ground-truth CSV with columns slide,score (score 1-3, slide = the file stem): adds a truth
    /// column to DIR/slides.csv and prints agreement and kappa.
    #[arg(long, value_name = "T.csv")]
    pub truth: Option<PathBuf>,
    #[command(flatten)]
    pub field: FieldArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `mitoscope score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Folder of HPF images.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Regex on the file stem whose first capture group names the slide (default: the stem up to its last '_').
    #[arg(long, value_name = "REGEX")]
    pub group: Option<String>,
    /// Ground-truth CSV with columns slide,score (score 1-3): prints agreement and kappa.
    #[arg(long, value_name = "T.csv")]
    pub truth: Option<PathBuf>,
    /// Write scores.csv, scores.json and detections.csv here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Microns per pixel of the images (default: 0.25).
    #[arg(long, value_name = "M")]
    pub mpp: Option<f64>,
    /// Operating threshold on the stage-2 score (default: the model's).
    #[arg(long, value_name = "S")]
    pub threshold: Option<f64>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub field: FieldArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Model and device options shared by commands that run the detector.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Model bundle file (or folder holding model.bundle); default: the embedded model.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Compute device: cpu; wgpu[:N] in builds with the `wgpu` feature (run `mitoscope
    /// check-device` there first); cuda[:N] in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `mitoscope detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Image files or folders of images.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Output folder (detections.csv and the other formats go here).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Microns per pixel of the inputs (default: 0.25, a 40x scan).
    #[arg(long, value_name = "M")]
    pub mpp: Option<f64>,
    /// Operating threshold on the stage-2 score (default: the model's, chosen on validation data).
    #[arg(long, value_name = "S")]
    pub threshold: Option<f64>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Outputs besides detections.csv: any of csv,geojson,midog,asap,overlay,masks (or all).
    #[arg(long, value_name = "LIST", default_value = "csv")]
    pub format: String,
    /// Also write candidates.csv: every stage-1 candidate with its stage-2 score (for AP and FROC).
    #[arg(long)]
    pub all_candidates: bool,
}

/// `mitoscope demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, value_name = "DIR", default_value = "mitoscope-demo")]
    pub out: PathBuf,
    /// Seed of the synthetic field.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Side of the synthetic field in pixels (64 to 8192).
    #[arg(long, default_value_t = 2084, value_parser = clap::value_parser!(u32).range(64..=8192))]
    pub size: u32,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `mitoscope classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Crop images (or larger images: their centre crop is scored).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Microns per pixel of the images (default: 0.25).
    #[arg(long, value_name = "M")]
    pub mpp: Option<f64>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mitoscope train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Recipe: `default` (the embedded model's recipe) or `quick` (minutes, for smoke tests).
    #[arg(long, default_value = "default")]
    pub recipe: String,
    /// Root of the shared data (default: $MITOSCOPE_DATA, else ../shared/data).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["datasets", "crops", "negatives"])]
    pub data: Option<PathBuf>,
    /// Output folder: model.bundle, MODEL.md, checkpoints, metrics logs. Re-running resumes.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Recipe settings as JSON (overrides --recipe).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Train on this dataset instead of the shared data (repeatable): a dataset folder or
    /// annotation file any reader understands (GZMH, ICPR pixel lists, COCO/MIDOG JSON, CSV,
    /// GeoJSON, SlideRunner, YOLO, VOC, ASAP, TUPAC16, MITOS-ATYPIA-14) whose images have every
    /// mitosis labelled.
    #[arg(long = "dataset", value_name = "PATH")]
    pub datasets: Vec<PathBuf>,
    /// Format of the --dataset files (default: detected): once for all of them, or once per
    /// --dataset, in the same order.
    #[arg(long = "format", value_name = "F")]
    pub formats: Vec<String>,
    /// Folder of the images the --dataset annotation files name (default: beside them).
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Microns per pixel of dataset images that do not state it (and of --negatives).
    #[arg(long, value_name = "M")]
    pub mpp: Option<f64>,
    /// Crop folder labelled by subfolder name (repeatable): `mitosis/`, `normal/`, `atypical/`,
    /// `positive/` are figures, `negative/`, `non-mitosis/`, `imposter/` look-alikes.
    #[arg(long = "crops", value_name = "DIR")]
    pub crops: Vec<PathBuf>,
    /// Microns per pixel of the --crops images.
    #[arg(long, value_name = "M", default_value_t = 0.25)]
    pub crops_mpp: f64,
    /// Folder of mitosis-free fields (repeatable): random and mined negatives.
    #[arg(long = "negatives", value_name = "DIR")]
    pub negatives: Vec<PathBuf>,
    /// Validate on this subset of the datasets (e.g. GZMH's `test_3_score`).
    #[arg(long, value_name = "NAME", conflicts_with = "val_fraction")]
    pub val_subset: Option<String>,
    /// Else validate on about this fraction of the fields, whole slides at a time
    /// (fields named `<slide>_<n>`).
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f64>,
    /// Which stages to train: both (and the mask head), candidate (stage 1; keeps
    /// --base-model's stage 2), classifier (stage 2, on --base-model's stage-1 candidates) or
    /// mask (only a mask head, added to --base-model, its Dice measured out of fold).
    #[arg(long, value_name = "S", default_value = "both")]
    pub stage: String,
    /// The model whose other stage a one-stage run keeps, or that --stage mask adds a head to
    /// (default: the embedded model).
    #[arg(long, value_name = "PATH")]
    pub base_model: Option<PathBuf>,
    /// Device to train on: cpu, wgpu[:N] (build with --features wgpu; run `mitoscope
    /// check-device` there first) or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `mitoscope check-device`.
#[derive(Debug, Args)]
pub struct CheckDeviceArgs {
    /// Device to compare with the CPU: wgpu[:N] or cuda[:N] (cpu checks the check).
    #[arg(long, default_value = "wgpu")]
    pub device: String,
    /// Adam steps to compare.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mitoscope report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Predictions: CSV with image,x,y,score (e.g. detections.csv), or any readable format.
    #[arg(long, value_name = "P")]
    pub pred: PathBuf,
    /// Ground truth (adds precision, recall, F1, AP, FROC, TP/FP/FN colours and error galleries).
    #[arg(long, value_name = "T")]
    pub truth: Option<PathBuf>,
    /// Folder holding the images (<image id>.<ext>) for thumbnails and crops.
    #[arg(long, value_name = "DIR", conflicts_with = "slide")]
    pub images: Option<PathBuf>,
    /// Whole slide the predictions were made on (thumbnail and crops from it).
    #[arg(long, value_name = "S")]
    pub slide: Option<PathBuf>,
    /// Output HTML file (self-contained: images embedded).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    // Without --truth the radius defaults to 8 µm where --mpp is given (for the error galleries' scale).
    #[command(flatten)]
    pub matching: MatchArgs,
    /// Microns per pixel of the images (radius in µm, density and score).
    #[arg(long, value_name = "M")]
    pub mpp: Option<f64>,
    /// Leave out predictions scoring below S (the curves still use all).
    #[arg(long, value_name = "S")]
    pub threshold: Option<f64>,
    /// Name of the model that made the predictions, recorded in the report.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
}

/// `mitoscope review`.
#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// The HPF image or whole slide to review.
    pub path: PathBuf,
    /// Detections to review (CSV image,x,y,score, or any readable format).
    #[arg(long, value_name = "P")]
    pub pred: Option<PathBuf>,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Address to listen on; anything but loopback exposes the tool to the network.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Decisions file, saved on every change and resumed on restart (default: ./<stem>.review.json).
    #[arg(long, value_name = "FILE")]
    pub decisions: Option<PathBuf>,
    /// Microns per pixel of the image (density, score, MIDOG export).
    #[arg(long, value_name = "M")]
    pub mpp: Option<f64>,
    /// Write the corrected set to FILE (.csv, .geojson, .json = MIDOG, or .xml = ASAP) and exit instead of serving.
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
}
