//! Does a device compute what the CPU backend computes?
//!
//! burn's GPU backends are fast but not always right: on an H200, burn 0.22.1's
//! wgpu backend with kernel fusion and autotune on trained a small conv net
//! 14x faster than with them off, yet its loss on a fixed batch *rose* over 20
//! Adam steps. So a GPU is trusted only after [`check_device`] shows that, from
//! the same initial weights and on the same batch, the candidate network's
//! forward outputs and its first Adam steps' losses agree with the flex CPU
//! backend within a tolerance. The check also times a training step and a
//! 512x512 inference on both, so the fastest configuration that passes can be
//! picked. Run it with `mitoscope check-device --device wgpu`.

use std::time::Instant;

use burn::optim::AdamConfig;
use burn::tensor::{Device, Tensor};
use image::{Rgb, RgbImage};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::candidate::{CandidateNetConfig, ProbabilityMap, disc_target};
use crate::data::images_to_tensor;
use crate::infer::tensor_values;
use crate::training::candidate_step;
use crate::weights::{load_weights_from_bytes, weights_to_bytes};

/// What [`check_device`] runs and how close is close enough.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendCheckConfig {
    /// The network under test (the default candidate net unless changed).
    pub network: CandidateNetConfig,
    /// Adam steps compared (the first one on a GPU includes kernel compilation).
    pub steps: usize,
    /// Tiles per batch.
    pub batch: usize,
    /// Side of each training tile, pixels (a multiple of the net's side multiple).
    pub tile: usize,
    /// Side of the inference image that is timed.
    pub infer_side: usize,
    /// Largest allowed absolute difference of a forward output (a logit).
    pub forward_tolerance: f32,
    /// Largest allowed difference of a step's loss, relative to the CPU loss (at least 1).
    pub loss_tolerance: f32,
    /// Learning rate of the Adam steps.
    pub learning_rate: f64,
    /// Seed of the weights and the batch.
    pub seed: u64,
}

impl Default for BackendCheckConfig {
    fn default() -> Self {
        Self {
            network: CandidateNetConfig::new(),
            steps: 20,
            batch: 16,
            tile: 64,
            infer_side: 512,
            // f32 sums in another order differ by ~1e-6 relative; wrong kernels by far more.
            forward_tolerance: 1e-3,
            loss_tolerance: 1e-2,
            learning_rate: 1e-3,
            seed: 2025,
        }
    }
}

/// What [`check_device`] measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendCheck {
    /// The device checked, as burn names it.
    pub device: String,
    /// Largest |device - CPU| over the forward outputs of the batch, before training.
    pub forward_max_abs_diff: f32,
    /// Loss before each Adam step on the CPU.
    pub cpu_losses: Vec<f32>,
    /// Loss before each Adam step on the device.
    pub device_losses: Vec<f32>,
    /// Milliseconds per training step (mean over all but the first) on the CPU / the device.
    pub cpu_step_ms: f64,
    /// See `cpu_step_ms`.
    pub device_step_ms: f64,
    /// Milliseconds of one forward pass over an `infer_side`² image (best of 3, after a warm-up).
    pub cpu_infer_ms: f64,
    /// See `cpu_infer_ms`.
    pub device_infer_ms: f64,
    /// Whether the device agrees with the CPU.
    pub passed: bool,
    /// Why it does not, when it does not.
    pub failure: Option<String>,
}

/// Runs the same initial candidate net on the same batch on the flex CPU
/// backend and on `device` and compares them (see the module docs).
pub fn check_device(device: &Device, config: &BackendCheckConfig) -> Result<BackendCheck, ModelError> {
    if config.steps == 0 || config.batch == 0 {
        return Err(ModelError::Data("the check needs at least one step and one tile".into()));
    }
    let (tiles, targets) = fixed_batch(config);
    let cpu = Device::flex();
    let cpu_train = cpu.clone().autodiff();
    cpu_train.seed(config.seed);
    let initial = config.network.init(&cpu_train);
    // The same weights on the device: through the saved record, as a shipped model travels.
    let bytes = weights_to_bytes(&initial)?;

    let forward = |device: &Device| -> Result<Vec<f32>, ModelError> {
        let model = load_weights_from_bytes(config.network.init(device), &bytes, "initial weights")?;
        tensor_values(model.forward(images_to_tensor(&tiles, device)?))
    };
    let (cpu_out, device_out) = (forward(&cpu)?, forward(device)?);
    let forward_max_abs_diff = max_abs_diff(&cpu_out, &device_out);

    let train = |device: &Device| -> Result<(Vec<f32>, f64), ModelError> {
        let train_device = device.clone().autodiff();
        let mut model = load_weights_from_bytes(config.network.init(&train_device), &bytes, "initial weights")?;
        let mut optimizer = AdamConfig::new().init();
        let (mut losses, mut seconds) = (Vec::new(), Vec::new());
        for _ in 0..config.steps {
            let start = Instant::now();
            let (next, loss) =
                candidate_step(model, &mut optimizer, &tiles, &targets, config.learning_rate, 1.0, &train_device)?;
            seconds.push(start.elapsed().as_secs_f64());
            model = next;
            losses.push(loss);
        }
        let timed = if seconds.len() > 1 { &seconds[1..] } else { &seconds[..] };
        Ok((losses, 1000.0 * timed.iter().sum::<f64>() / timed.len() as f64))
    };
    let (cpu_losses, cpu_step_ms) = train(&cpu)?;
    // A device whose steps diverge is a failed check, not an error.
    let (device_losses, device_step_ms) = match train(device) {
        Ok(r) => r,
        Err(ModelError::Diverged { .. }) => (vec![f32::NAN], f64::NAN),
        Err(e) => return Err(e),
    };

    let infer = |device: &Device| -> Result<f64, ModelError> {
        let model = load_weights_from_bytes(config.network.init(device), &bytes, "initial weights")?;
        let side = config.infer_side;
        let mut best = f64::INFINITY;
        for run in 0..4 {
            let input = Tensor::<4>::zeros([1, 3, side, side], device);
            let start = Instant::now();
            // Reading the values back waits for the device to finish.
            tensor_values(model.forward(input))?;
            if run > 0 {
                best = best.min(start.elapsed().as_secs_f64());
            }
        }
        Ok(1000.0 * best)
    };
    let (cpu_infer_ms, device_infer_ms) = (infer(&cpu)?, infer(device)?);
    let failure = judge(forward_max_abs_diff, &cpu_losses, &device_losses, config).err();
    Ok(BackendCheck {
        device: format!("{device:?}"),
        forward_max_abs_diff,
        cpu_losses,
        device_losses,
        cpu_step_ms,
        device_step_ms,
        cpu_infer_ms,
        device_infer_ms,
        passed: failure.is_none(),
        failure,
    })
}

/// `Ok` when the forward outputs and every step's loss agree within the
/// tolerances of `config`; else what disagreed, first.
pub fn judge(
    forward_diff: f32,
    cpu_losses: &[f32],
    device_losses: &[f32],
    config: &BackendCheckConfig,
) -> Result<(), String> {
    if !forward_diff.is_finite() || forward_diff > config.forward_tolerance {
        return Err(format!(
            "forward outputs differ by up to {forward_diff:e} (tolerance {:e})",
            config.forward_tolerance
        ));
    }
    if device_losses.len() != cpu_losses.len() {
        return Err(format!(
            "the device stopped after {} of {} steps (non-finite loss)",
            device_losses.iter().filter(|l| l.is_finite()).count(),
            cpu_losses.len()
        ));
    }
    for (step, (&c, &d)) in cpu_losses.iter().zip(device_losses).enumerate() {
        let allowed = config.loss_tolerance * c.abs().max(1.0);
        if !d.is_finite() || (d - c).abs() > allowed {
            return Err(format!("step {}: loss {d} on the device, {c} on the CPU (tolerance {allowed:e})", step + 1));
        }
    }
    Ok(())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) })
}

/// Seeded tiles: pink background, a few dark blobs, one of them labelled (disc target).
fn fixed_batch(config: &BackendCheckConfig) -> (Vec<RgbImage>, Vec<ProbabilityMap>) {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let side = config.tile as u32;
    let mut tiles = Vec::new();
    let mut targets = Vec::new();
    for _ in 0..config.batch {
        let mut tile = RgbImage::from_fn(side, side, |_, _| {
            Rgb([rng.random_range(200..240u8), rng.random_range(140..180u8), rng.random_range(180..220u8)])
        });
        let blobs: Vec<(f64, f64)> = (0..3)
            .map(|_| (rng.random_range(4.0..f64::from(side) - 4.0), rng.random_range(4.0..f64::from(side) - 4.0)))
            .collect();
        for (x, y, p) in tile.enumerate_pixels_mut() {
            if blobs.iter().any(|&(bx, by)| (f64::from(x) - bx).hypot(f64::from(y) - by) < 4.0) {
                *p = Rgb([60, 30, 90]);
            }
        }
        targets.push(disc_target(config.tile, config.tile, &blobs[..1], 4.0));
        tiles.push(tile);
    }
    (tiles, targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> BackendCheckConfig {
        BackendCheckConfig {
            network: CandidateNetConfig::new().with_base_channels(4),
            steps: 3,
            batch: 4,
            tile: 32,
            infer_side: 64,
            ..BackendCheckConfig::default()
        }
    }

    #[test]
    fn the_cpu_agrees_with_itself_and_its_loss_falls() {
        let check = check_device(&Device::flex(), &small()).unwrap();
        assert!(check.passed, "{check:?}");
        assert!(check.forward_max_abs_diff <= 1e-5, "{check:?}");
        assert_eq!(check.cpu_losses.len(), 3);
        assert_eq!(check.cpu_losses, check.device_losses, "the same backend, the same numbers");
        assert!(
            check.cpu_losses[2] < check.cpu_losses[0],
            "Adam on a fixed batch lowers its loss: {:?}",
            check.cpu_losses
        );
        assert!(check.cpu_step_ms > 0.0 && check.device_infer_ms > 0.0);
    }

    #[test]
    fn disagreement_is_reported_with_what_disagreed() {
        let config = small();
        let cpu = [0.7, 0.6, 0.5];
        assert!(judge(1e-5, &cpu, &[0.7, 0.6, 0.5001], &config).is_ok());
        let err = judge(0.5, &cpu, &cpu, &config).unwrap_err();
        assert!(err.contains("forward"), "{err}");
        assert!(judge(f32::NAN, &cpu, &cpu, &config).is_err());
        // The fused-kernel failure: losses rising where the CPU's fall.
        let err = judge(1e-5, &cpu, &[0.7, 0.9, 1.8], &config).unwrap_err();
        assert!(err.starts_with("step 2"), "{err}");
        let err = judge(1e-5, &cpu, &[f32::NAN], &config).unwrap_err();
        assert!(err.contains("stopped after 0 of 3"), "{err}");
        let err = judge(1e-5, &cpu, &[0.7, f32::INFINITY, 0.5], &config).unwrap_err();
        assert!(err.starts_with("step 2"), "{err}");
    }
}
