//! `MODEL.md`, the card written beside a trained model: what trained it,
//! with which command and data, and what it measured.

use super::{CrossValidation, RecipeConfig, RecipeReport};
use crate::mask_training::MaskHeadRecipe;
use crate::{ModelCard, ScoreFusion};

pub(super) fn model_md(card: &ModelCard, r: &RecipeReport, config: &RecipeConfig) -> String {
    let t = &card.training;
    format!(
        "# Mitoscope model `{version}`\n\n\
         Two-stage detector (candidate heat-map net at {mpp} um/px + {crop}x{crop} patch classifier at {cls_mpp} um/px ({nets}; each crop scored in {views} orientation(s), averaged); final score: {fusion}), trained on CPU by\n\n\
         ```\n{command}\n```\n\n\
         - seed: {seed}\n- data: {data}\n- training images: {train}\n- validation images (held out): {val}\n\
         - recipe settings: `recipe.json` beside this file (also below)\n\n\
         ## Numbers (held-out images; this machine)\n\n\
         | what | value |\n|---|---|\n\
         | candidate threshold (stage 1); hard negatives mined above | {ct:.2}; {mt:.2} |\n\
         | candidate recall, training HPFs | {trc:.3} |\n\
         | candidate recall, {scored} | {vrc:.3} |\n\
         | candidates per HPF, {scored} | {cph:.1} |\n\
         | operating threshold (stage 2, best pooled F1) | {ot:.3} |\n\
         | precision / recall / F1, {scored} | {p:.3} / {rc:.3} / {f1:.3} |\n\
         | mitoses, TP, FP, {scored} (FP on the held-out mitosis-free fields) | {m}, {tp}, {fp} ({cfp}) |\n\
         | stage-2 crops: positive / negative (hard) | {np} / {nn} ({nh}) |\n\
         | seconds per 2084x2084 HPF (detect_image scoring all candidates, CPU) | {sph:.1} |\n\n\
         {cv}{mask}\
         Phase wall-clock seconds: {secs}\n\n\
         **Caveats.** {notes}. The validation set is tiny ({m} mitoses), so these numbers are noisy.\n\
         Not a validated medical device.\n\n\
         ## Recipe settings\n\n```json\n{json}\n```\n",
        version = card.version,
        mpp = card.model_mpp,
        crop = config.classifier_crop_px,
        cls_mpp = config.classifier_mpp,
        nets = match config.classifier_ensemble.max(1) {
            1 => "one network".to_owned(),
            n => format!(
                "{n} networks, seeds {}, probabilities averaged",
                (0..n)
                    .map(|k| config.stage2_seed().wrapping_add(1000 * k as u64).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        views = card.classifier_views,
        fusion = match card.score_fusion {
            ScoreFusion::Classifier => "the classifier's probability",
            ScoreFusion::GeometricMean => "sqrt(stage-1 peak x classifier probability)",
        },
        command = t.command,
        seed = match config.classifier_seed {
            Some(s2) if s2 != t.seed => format!("{} (stage 2: {s2})", t.seed),
            _ => t.seed.to_string(),
        },
        data = t.data,
        train = t.train_images.join(", "),
        val = t.val_images.join(", "),
        ct = r.candidate_threshold,
        mt = r.mining_threshold.unwrap_or(r.candidate_threshold),
        trc = r.train_candidate_recall,
        // Cross-validated runs report every labelled HPF, each scored by a fold that never saw it.
        scored = if r.cross_validation.is_some() { "out-of-fold HPFs" } else { "validation HPFs" },
        vrc = r.val_candidate_recall,
        cph = r.val_candidates_per_hpf,
        ot = r.operating_threshold,
        p = r.val_precision,
        rc = r.val_recall,
        f1 = r.val_f1,
        m = r.val_mitoses,
        tp = r.val_tp,
        fp = r.val_fp,
        cfp = r.val_cmc_fp,
        np = r.classifier_crops.0,
        nn = r.classifier_crops.1,
        nh = r.classifier_crops.2,
        sph = r.seconds_per_hpf,
        secs = r.seconds.iter().map(|(n, s)| format!("{n} {s:.0}")).collect::<Vec<_>>().join(", "),
        notes = t.notes,
        cv = r.cross_validation.as_ref().map(|cv| cross_validation_md(cv, config.cv_stage1)).unwrap_or_default(),
        mask = mask_head_md(card, r.mask_head.as_ref(), &config.mask_head),
        json = serde_json::to_string_pretty(config).unwrap_or_default(),
    )
}

/// Where outlines come from, and the mask head's out-of-fold Dice.
pub(super) fn mask_head_md(
    card: &ModelCard,
    report: Option<&crate::mask_training::MaskHeadReport>,
    recipe: &MaskHeadRecipe,
) -> String {
    if recipe.epochs == 0 {
        return format!(
            "## Outlines\n\nThe stage-1 map's blobs at {} um/px, along their pixels' edges (no mask head).\n\n",
            card.model_mpp
        );
    }
    let mut md = format!(
        "## Mask head\n\nOutlines come from a mask head: a {c}-channel encoder-decoder on a {px}x{px} crop at {mpp} um/px \
         around each detection, trained on the pixel masks alone ({e} epochs of {t} tiles); a pixel is the figure's at \
         probability {th} or more, and the blobs within {reach} um of the centre make the figure.\n\n",
        c = recipe.channels,
        px = recipe.crop_px,
        mpp = recipe.mpp,
        e = recipe.epochs,
        t = recipe.tiles_per_epoch,
        th = recipe.threshold,
        reach = recipe.reach_um,
    );
    if let Some(r) = report {
        md += &format!(
            "| Dice against the truth masks, detections at the operating threshold ({n} mask images, {f} with a figure; \
             {k}-fold, each image outlined by a head trained without it) | pooled | mean per image |\n|---|---|---|\n\
             | mask head (out of fold) | {hp:.3} | {hm:.3} |\n\
             | stage-1 map outlines (stage 1 trained on these masks) | {mp:.3} | {mm:.3} |\n\n",
            n = r.images,
            f = r.images_with_figures,
            k = r.folds,
            hp = r.head_dice_pooled,
            hm = r.head_dice_mean,
            mp = r.map_dice_pooled,
            mm = r.map_dice_mean,
        );
    }
    md
}

/// The per-HPF table of a cross-validated run (validation rows above are its pooled sums).
fn cross_validation_md(cv: &CrossValidation, both_stages: bool) -> String {
    let networks = if both_stages { "both stages" } else { "a stage-2 network" };
    let mut md = format!(
        "## Cross-validation (each HPF scored by {networks} trained without it)\n\n\
         | HPF | mitoses | TP / FP at the operating threshold | threshold chosen without it | TP / FP there |\n\
         |---|---|---|---|---|\n",
    );
    for f in &cv.folds {
        md += &format!(
            "| {} | {} | {} / {} | {:.3} | {} / {} |\n",
            f.hpf, f.mitoses, f.tp, f.fp, f.threshold_without, f.nested_tp, f.nested_fp
        );
    }
    md += &format!(
        "\nNested estimate for unseen HPFs (each judged at the threshold the others chose): \
         F1 {:.3} ({} TP, {} FP).\n\n",
        cv.nested_f1, cv.nested_tp, cv.nested_fp
    );
    md
}
