//! `cargo xtask bench-train`: training throughput (samples/s) of every registered backbone in
//! candle, beside the same architecture in PyTorch (`xtask/bench/train_torch.py`, built from the
//! parity references in `tests/reference/`) on the same batches, in the same run.
//!
//! For each model: Electronics-sized vocabularies ([`ELECTRONICS`]), the model's default (official)
//! configuration, a CTR head, seeded weights, Adam (lr 1e-3), and [`N_BATCHES`] pre-built random
//! batches in the model's own layout (history cap, padding, alignment), with history lengths
//! uniform in `1..=min(--history-cap, layout.max_history)` or (`--lengths amazon`) drawn from the
//! real Amazon Beauty distribution ([`AMAZON_LENGTHS`]). One step = forward (training mode) +
//! BCE (+ the backbone's auxiliary loss) + backward + Adam step, exactly what the trainer does.
//! After `--warmup` steps, `--steps` steps are timed (fewer when a model passes `--max-seconds`;
//! the step count is reported). The torch script reads the very same batches from a safetensors
//! file and times the same loop.
//!
//! Threads: `RAYON_NUM_THREADS` is set in this process before rayon's global pool is first used and
//! the pool is built with `--threads` workers; candle reads the same variable
//! (`candle_core::utils::get_num_threads`) for its gemm and parallel kernels. The torch child gets
//! `torch.set_num_threads(--threads)` and `OMP_NUM_THREADS` / `MKL_NUM_THREADS`. xtask's global
//! allocator is mimalloc, tuned by `mtrec_alloc::tune` (`main.rs`): about 2× for candle
//! (`specs/rust-stack.md` §3), and another 1.2× once freed memory stays committed.
//!
//! Writes `<out>.json` and `<out>.md` (default `results/bench.*`) atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use mtrec_nn::{Align, Batch, HeadKind, HostBatch, Layout, Model, PadPolicy, Vocab};
use mtrec_train::{seeded_var_builder, training_loss, Adam, AdamConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::root;

/// Amazon Electronics (5-core) vocabularies, largest id + 1 (id 0 = padding): 192,403 users,
/// 63,001 items, 801 categories.
pub const ELECTRONICS: Vocab = Vocab {
    users: 192_404,
    items: 63_002,
    categories: 802,
};

/// Batches built per model; the timed loop cycles over them.
pub const N_BATCHES: usize = 8;

/// The torch side, relative to the workspace root.
const TORCH_SCRIPT: &str = "xtask/bench/train_torch.py";

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Comma-separated model names (default: every registered backbone).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Batch size.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Timed steps per model and framework (at most; see --max-seconds).
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Upper bound of the history lengths (each model also applies its own cap).
    #[arg(long, default_value_t = 100)]
    history_cap: usize,
    /// How history lengths are drawn: `uniform` in 1..=cap, or `amazon`, the distribution of the
    /// real Amazon 2014 5-core Beauty training samples (mean 8.7, median 4; capped).
    #[arg(long, value_enum, default_value_t = Lengths::Uniform)]
    lengths: Lengths,
    /// CPU threads for candle (rayon) and torch.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Stop timing a model once its timed steps took this long (at least 2 steps are timed;
    /// 0 = always run --steps).
    #[arg(long, default_value_t = 30.0)]
    max_seconds: f64,
    /// Seed of the weights and the batches.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Skip the PyTorch runs.
    #[arg(long)]
    no_torch: bool,
    /// Python interpreter for the PyTorch runs.
    #[arg(long, default_value = "python3")]
    python: String,
    /// `OMP_WAIT_POLICY` of the torch child (`unset` leaves the environment's). Passive by
    /// default: on a shared, oversubscribed machine OpenMP's spin-waiting made 2-thread torch
    /// steps several times slower (widedeep B=64: 390 vs 85 ms at load 6 on 2 cores).
    #[arg(long, default_value = "PASSIVE")]
    omp_wait_policy: String,
    /// Device of both frameworks: `cpu`, or `cuda` / `cuda:N` (candle needs a build with the
    /// `cuda` feature: `cargo run --release -p xtask --features cuda -- bench --device cuda`).
    /// On a GPU the candle model is also checked against the same weights on the CPU.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Output path without extension: writes `<out>.json` and `<out>.md`.
    #[arg(long, default_value = "results/bench")]
    out: PathBuf,
}

/// How [`random_batch`] draws history lengths.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lengths {
    /// Uniform in `1..=max_len`: a worst case for padding-bound models, mean `max_len / 2`.
    Uniform,
    /// [`AMAZON_LENGTHS`]: what training on real Amazon data sees, capped at `max_len`.
    Amazon,
}

impl Lengths {
    /// The distribution in words, for the report (`cap` = `--history-cap`).
    fn describe(self, cap: usize) -> String {
        match self {
            Lengths::Uniform => format!("uniform in 1..=min({cap}, the model's cap)"),
            Lengths::Amazon => format!(
                "drawn from the Amazon 2014 5-core Beauty training samples' history lengths \
                 (mean 8.7, median 4, 99th percentile 71), capped at min({cap}, the model's cap)"
            ),
        }
    }

    fn draw(self, rng: &mut impl Rng, max_len: usize) -> usize {
        let max_len = max_len.max(1);
        match self {
            Lengths::Uniform => rng.random_range(1..=max_len),
            Lengths::Amazon => {
                AMAZON_LENGTHS[rng.random_range(0..AMAZON_LENGTHS.len())].min(max_len)
            }
        }
    }
}

/// The history length of a random training sample of the Amazon 2014 5-core Beauty data
/// (`../shared/data/amazon2014-5core`, prepared by `mtrec prepare --format s3rec`: 158,556
/// training samples, mean 8.74), as its 200 quantiles at `(i + 0.5) / 200` (nearest rank). Drawing
/// one uniformly reproduces the distribution offline, so the benchmark needs no data files.
pub const AMAZON_LENGTHS: [usize; 200] = [
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10,
    10, 11, 11, 11, 11, 12, 12, 12, 13, 13, 13, 14, 14, 15, 15, 15, 16, 16, 17, 18, 18, 19, 20, 21,
    21, 22, 23, 24, 26, 27, 29, 30, 32, 35, 37, 41, 45, 50, 56, 65, 79, 115,
];

/// Validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub models: Vec<String>,
    pub batch: usize,
    pub steps: usize,
    pub warmup: usize,
    pub history_cap: usize,
    pub lengths: Lengths,
    pub threads: usize,
    pub max_seconds: f64,
    pub seed: u64,
    pub torch: bool,
    pub python: String,
    /// `None` = leave `OMP_WAIT_POLICY` as the environment has it.
    pub omp_wait_policy: Option<String>,
    /// `--device` as given (`cpu`, `cuda`, `cuda:N`).
    pub device: String,
    pub out: PathBuf,
}

impl Args {
    /// Checks the arguments: known model names (deduplicated, in the given order), positive sizes.
    pub fn settings(&self) -> Result<Settings> {
        let models: Vec<String> = if self.models.is_empty() {
            mtrec_models::names()
                .into_iter()
                .map(str::to_owned)
                .collect()
        } else {
            let mut v: Vec<String> = Vec::new();
            for m in self
                .models
                .iter()
                .map(|m| m.trim())
                .filter(|m| !m.is_empty())
            {
                if !mtrec_models::is_known(m) {
                    bail!(
                        "unknown model '{m}' (known models: {})",
                        mtrec_models::names().join(", ")
                    );
                }
                if !v.iter().any(|x| x == m) {
                    v.push(m.to_owned());
                }
            }
            if v.is_empty() {
                bail!("--models names no model");
            }
            v
        };
        for (what, v) in [
            ("--batch", self.batch),
            ("--steps", self.steps),
            ("--history-cap", self.history_cap),
            ("--threads", self.threads),
        ] {
            if v == 0 {
                bail!("{what} must be at least 1");
            }
        }
        if self.max_seconds.is_nan() || self.max_seconds < 0.0 {
            bail!("--max-seconds must be >= 0");
        }
        let device = self.device.trim().to_ascii_lowercase();
        let index_ok = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
        if !(device == "cpu"
            || device == "cuda"
            || device.strip_prefix("cuda:").is_some_and(index_ok))
        {
            bail!("--device {}: expected cpu, cuda or cuda:<N>", self.device);
        }
        Ok(Settings {
            models,
            batch: self.batch,
            steps: self.steps,
            warmup: self.warmup,
            history_cap: self.history_cap,
            lengths: self.lengths,
            threads: self.threads,
            max_seconds: self.max_seconds,
            seed: self.seed,
            torch: !self.no_torch,
            python: self.python.clone(),
            omp_wait_policy: match self.omp_wait_policy.trim() {
                "" | "unset" => None,
                p => Some(p.to_ascii_uppercase()),
            },
            device,
            out: self.out.clone(),
        })
    }
}

/// The largest history length drawn for a model: `min(cap, layout.max_history)`, at least 1.
pub fn max_length(history_cap: usize, layout: Layout) -> usize {
    history_cap.min(layout.max_history).max(1)
}

/// A fixed item → category map (`[items]`, entry 0 = padding 0), so that an item keeps its
/// category across batches as in real data.
pub fn category_map(rng: &mut impl Rng, vocab: Vocab) -> Vec<u32> {
    let mut map = Vec::with_capacity(vocab.items);
    map.push(0);
    for _ in 1..vocab.items {
        map.push(random_id(rng, vocab.categories));
    }
    map
}

/// A uniform id in `1..n` (0 is padding).
fn random_id(rng: &mut impl Rng, n: usize) -> u32 {
    rng.random_range(1..n.max(2)) as u32
}

/// One random batch in `layout`: lengths from `lengths` (at most `max_len`), random users, history items,
/// logged negatives and targets (ids ≥ 1, categories from `cat_of`), labels 0/1. Returns the
/// columns and the padded width (`max_history` for a fixed layout, the longest history
/// otherwise).
pub fn random_batch(
    rng: &mut impl Rng,
    vocab: Vocab,
    cat_of: &[u32],
    batch: usize,
    max_len: usize,
    layout: Layout,
    lengths: Lengths,
) -> (HostBatch, usize) {
    let lengths: Vec<usize> = (0..batch).map(|_| lengths.draw(rng, max_len)).collect();
    let width = match layout.pad {
        PadPolicy::Fixed => layout.max_history,
        PadPolicy::Longest => lengths.iter().copied().max().unwrap_or(1),
    }
    .max(1);
    let mut h = HostBatch::default();
    let n = batch * width;
    h.hist_items.reserve(n);
    h.hist_cats.reserve(n);
    h.hist_neg_items.reserve(n);
    h.hist_neg_cats.reserve(n);
    h.mask.reserve(n);
    for &len in &lengths {
        let len = len.min(width);
        let start = match layout.align {
            Align::Left => 0,
            Align::Right => width - len,
        };
        h.users.push(random_id(rng, vocab.users));
        for t in 0..width {
            let real = t >= start && t < start + len;
            let (pos, neg) = if real {
                (random_id(rng, vocab.items), random_id(rng, vocab.items))
            } else {
                (0, 0)
            };
            h.hist_items.push(pos);
            h.hist_cats.push(cat_of[pos as usize]);
            h.hist_neg_items.push(neg);
            h.hist_neg_cats.push(cat_of[neg as usize]);
            h.mask.push(if real { 1.0 } else { 0.0 });
        }
        h.lengths.push(len as u32);
        let target = random_id(rng, vocab.items);
        h.target_items.push(target);
        h.target_cats.push(cat_of[target as usize]);
        h.labels.push(if rng.random_bool(0.5) { 1.0 } else { 0.0 });
    }
    (h, width)
}

/// The [`N_BATCHES`] batches of one model, from `seed`.
pub fn build_batches(
    vocab: Vocab,
    layout: Layout,
    batch: usize,
    history_cap: usize,
    lengths: Lengths,
    seed: u64,
) -> Vec<(HostBatch, usize)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cat_of = category_map(&mut rng, vocab);
    let max_len = max_length(history_cap, layout);
    (0..N_BATCHES)
        .map(|_| random_batch(&mut rng, vocab, &cat_of, batch, max_len, layout, lengths))
        .collect()
}

/// Timing of one model in one framework.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Timed steps.
    pub steps: usize,
    /// Their total wall time.
    pub seconds: f64,
    /// Median step time (ms).
    pub median_ms: f64,
    /// The loss of the last step (a sanity check that training runs).
    pub last_loss: f64,
}

impl Timing {
    pub fn ms_per_step(&self) -> f64 {
        1e3 * self.seconds / self.steps.max(1) as f64
    }

    pub fn samples_per_s(&self, batch: usize) -> f64 {
        (batch * self.steps) as f64 / self.seconds.max(1e-12)
    }
}

/// Runs `warmup` untimed steps, then times up to `steps` steps, stopping early once `max_seconds`
/// (> 0) have passed and at least `min(steps, 2)` steps were timed. `step(i)` trains on batch
/// `i % n_batches` (step indices continue after the warm-up) and returns the loss.
pub fn time_loop(
    warmup: usize,
    steps: usize,
    max_seconds: f64,
    mut step: impl FnMut(usize) -> Result<f64>,
) -> Result<Timing> {
    for i in 0..warmup {
        step(i)?;
    }
    let mut times = Vec::with_capacity(steps);
    let mut last_loss = f64::NAN;
    let start = Instant::now();
    for i in 0..steps {
        let t = Instant::now();
        last_loss = step(warmup + i)?;
        times.push(t.elapsed().as_secs_f64());
        if !last_loss.is_finite() {
            bail!("non-finite loss {last_loss} at step {}", warmup + i);
        }
        if max_seconds > 0.0
            && times.len() >= steps.min(2)
            && start.elapsed().as_secs_f64() >= max_seconds
        {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median_ms = 1e3 * sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    Ok(Timing {
        steps: times.len(),
        seconds,
        median_ms,
        last_loss,
    })
}

/// Sets the candle / rayon thread count; returns how, for the report.
fn set_threads(n: usize, omp_wait_policy: Option<&str>) -> Result<String> {
    // Before any rayon use in this process: the variable is read when the global pool starts, and
    // by candle on every parallel kernel.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        tracing::warn!("rayon's global pool was already built: {e}");
    }
    let (rayon_n, candle_n) = (
        rayon::current_num_threads(),
        candle_core::utils::get_num_threads(),
    );
    if rayon_n != n || candle_n != n {
        bail!("asked for {n} threads, got rayon {rayon_n}, candle {candle_n}");
    }
    Ok(format!(
        "candle: RAYON_NUM_THREADS={n} set in-process before rayon's global pool is built \
         (rayon::current_num_threads() = {rayon_n}, candle_core::utils::get_num_threads() = \
         {candle_n}), mimalloc allocator (purge_delay -1, eager arena commit); torch: torch.set_num_threads({n}), \
         OMP_NUM_THREADS=MKL_NUM_THREADS={n}, OMP_WAIT_POLICY={}",
        omp_wait_policy.map(str::to_owned).unwrap_or_else(|| {
            std::env::var("OMP_WAIT_POLICY").unwrap_or_else(|_| "unset".into())
        })
    ))
}

/// Candle's result for one model.
struct CandleRun {
    params: usize,
    layout: Layout,
    widths: Vec<usize>,
    timing: Timing,
    /// On a GPU: the same model and batch on the CPU against the GPU ([`cpu_parity`]).
    parity: Option<Parity>,
}

fn layout_json(l: Layout) -> Value {
    json!({
        "max_history": l.max_history,
        "pad": match l.pad { PadPolicy::Fixed => "fixed", PadPolicy::Longest => "longest" },
        "align": match l.align { Align::Left => "left", Align::Right => "right" },
    })
}

/// A model with its CTR head, seeded weights (drawn on the host, so equal on every device) and
/// its parameter count.
fn build_model(name: &str, seed: u64, dev: &Device) -> Result<(VarMap, Model, usize)> {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, dev);
    let backbone = mtrec_models::build(name, None, ELECTRONICS, vb.clone())?;
    let model = Model::new(backbone, HeadKind::Ctr, vb)?;
    let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    Ok((varmap, model, params))
}

/// How far a GPU model is from the same weights on the CPU, on one batch in evaluation mode (no
/// dropout): the logits, and every parameter's gradient of the training loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parity {
    /// `max |logit_gpu − logit_cpu|`.
    pub logits: f64,
    /// `max |g_gpu − g_cpu| / max(1, max |g_cpu|)` over every parameter, each taken per tensor.
    pub grads: f64,
    /// Parameters compared.
    pub tensors: usize,
}

/// A parameter's name and gradient, flattened.
type NamedGrad = (String, Vec<f32>);

/// The logits and the gradients (sorted by parameter name) of one evaluation-mode step.
fn logits_and_grads(
    varmap: &VarMap,
    model: &Model,
    b: &Batch,
) -> Result<(Vec<f32>, Vec<NamedGrad>)> {
    let out = model.forward(b, false)?;
    let terms = training_loss(&out.logits, &b.labels, None, 0.0, out.aux_loss.as_ref())?;
    let grads = terms.total.backward()?;
    let logits = out.logits.flatten_all()?.to_vec1::<f32>()?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("the VarMap lock is poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<Vec<_>>();
    let mut g = Vec::with_capacity(vars.len());
    for (k, v) in vars {
        if let Some(t) = grads.get(v.as_tensor()) {
            g.push((k, t.flatten_all()?.to_vec1::<f32>()?));
        }
    }
    g.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((logits, g))
}

/// [`Parity`] of `name` on `dev` against the CPU, on the host batch `h` (padded to `width`).
fn cpu_parity(name: &str, seed: u64, h: &HostBatch, width: usize, dev: &Device) -> Result<Parity> {
    let max_abs = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from((x - y).abs()))
            .fold(0.0, f64::max)
    };
    let mut sides = Vec::with_capacity(2);
    for d in [&Device::Cpu, dev] {
        let (varmap, model, _) = build_model(name, seed, d)?;
        let layout = model.layout();
        let b = h.clone().to_device(width, layout.align, d)?;
        sides.push(logits_and_grads(&varmap, &model, &b)?);
    }
    let (cpu, gpu) = (&sides[0], &sides[1]);
    if cpu.1.len() != gpu.1.len() || cpu.1.iter().zip(&gpu.1).any(|(a, b)| a.0 != b.0) {
        bail!("{name}: the CPU and GPU models have different parameters with gradients");
    }
    let grads = cpu
        .1
        .iter()
        .zip(&gpu.1)
        .map(|((_, c), (_, g))| {
            let scale = c.iter().map(|x| f64::from(x.abs())).fold(1.0, f64::max);
            max_abs(c, g) / scale
        })
        .fold(0.0, f64::max);
    Ok(Parity {
        logits: max_abs(&cpu.0, &gpu.0),
        grads,
        tensors: cpu.1.len(),
    })
}

/// Builds the model, its batches (written to `batch_file` for torch when given) and times it.
fn run_candle(
    name: &str,
    s: &Settings,
    dev: &Device,
    batch_file: Option<&Path>,
) -> Result<CandleRun> {
    let (varmap, model, params) = build_model(name, s.seed, dev)?;
    let layout = model.layout();
    let host = build_batches(
        ELECTRONICS,
        layout,
        s.batch,
        s.history_cap,
        s.lengths,
        s.seed ^ 0x5eed,
    );
    let widths: Vec<usize> = host.iter().map(|(_, w)| *w).collect();
    let parity = match host.first() {
        Some((h, w)) if !dev.is_cpu() => match cpu_parity(name, s.seed, h, *w, dev) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("{name}: the check against the CPU failed: {e:#}");
                None
            }
        },
        _ => None,
    };
    let batches: Vec<Batch> = host
        .into_iter()
        .map(|(h, w)| h.to_device(w, layout.align, dev))
        .collect::<candle_core::Result<_>>()?;
    if let Some(path) = batch_file {
        write_batches(&batches, path)?;
    }
    let mut opt = Adam::new(
        &varmap,
        AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        },
    )?;
    // `to_scalar` copies the loss to the host: on a GPU it waits for the step to finish.
    let timing = time_loop(s.warmup, s.steps, s.max_seconds, |i| {
        let b = &batches[i % batches.len()];
        let out = model.forward(b, true)?;
        let terms = training_loss(&out.logits, &b.labels, None, 0.0, out.aux_loss.as_ref())?;
        opt.backward_step(&terms.total)?;
        Ok(f64::from(terms.total.to_scalar::<f32>()?))
    })?;
    Ok(CandleRun {
        params,
        layout,
        widths,
        timing,
        parity,
    })
}

/// The batches as `"<i>.<column>"` tensors (u32 ids, f32 mask and labels) for the torch script.
fn write_batches(batches: &[Batch], path: &Path) -> Result<()> {
    let mut t: HashMap<String, Tensor> = HashMap::new();
    for (i, b) in batches.iter().enumerate() {
        for (k, v) in [
            ("users", &b.users),
            ("hist_items", &b.hist_items),
            ("hist_cats", &b.hist_cats),
            ("hist_neg_items", &b.hist_neg_items),
            ("hist_neg_cats", &b.hist_neg_cats),
            ("mask", &b.mask),
            ("lengths", &b.lengths),
            ("target_items", &b.target_items),
            ("target_cats", &b.target_cats),
            ("labels", &b.labels),
        ] {
            t.insert(format!("{i}.{k}"), v.to_device(&Device::Cpu)?);
        }
    }
    candle_core::safetensors::save(&t, path).with_context(|| format!("writing {}", path.display()))
}

fn torch_available(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import torch, numpy, safetensors"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs the torch script on one model's batches; its last stdout line is a JSON object.
fn run_torch(name: &str, s: &Settings, batch_file: &Path) -> Result<Value> {
    let script = root().join(TORCH_SCRIPT);
    let threads = s.threads.to_string();
    let mut cmd = Command::new(&s.python);
    if let Some(p) = &s.omp_wait_policy {
        cmd.env("OMP_WAIT_POLICY", p);
    }
    let out = cmd
        .arg(&script)
        .args(["--model", name, "--batches"])
        .arg(batch_file)
        .args(["--steps", &s.steps.to_string()])
        .args(["--warmup", &s.warmup.to_string()])
        .args(["--max-seconds", &s.max_seconds.to_string()])
        .args(["--threads", &threads])
        .args(["--seed", &s.seed.to_string()])
        .args(["--device", &s.device])
        .env("OMP_NUM_THREADS", &threads)
        .env("MKL_NUM_THREADS", &threads)
        .output()
        .with_context(|| format!("running {} {}", s.python, script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "torch run failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("torch output is not JSON: {last}"))
}

/// `version = "..."` of package `name` in a Cargo.lock text.
pub fn lock_version(lock: &str, name: &str) -> Option<String> {
    let needle = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == needle {
            let v = lines.next()?.trim();
            return v
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned);
        }
    }
    None
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (proleptic Gregorian, UTC).
pub fn utc_timestamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn load_average() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn cpu_model() -> Option<String> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    s.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

/// The GPU's name (`nvidia-smi`), for the report; `None` on the CPU or without `nvidia-smi`.
fn gpu_name(device: &str) -> Option<String> {
    let index = match device {
        "cpu" => return None,
        d => d.strip_prefix("cuda:").unwrap_or("0"),
    };
    command_line(
        "nvidia-smi",
        &["--query-gpu=name", "--format=csv,noheader", "-i", index],
    )
}

pub fn run(args: Args) -> Result<()> {
    let s = args.settings()?;
    let threads_how = set_threads(s.threads, s.omp_wait_policy.as_deref())?;
    let dev = mtrec_train::parse_device(&s.device)?;
    let torch = if !s.torch {
        None
    } else if torch_available(&s.python) {
        Some(())
    } else {
        tracing::warn!(
            "PyTorch is not importable by `{}`: skipping the torch runs. Install it with \
             `{} -m pip install torch numpy safetensors` (a CPU-only wheel: add \
             `--index-url https://download.pytorch.org/whl/cpu`), or pass --python / --no-torch",
            s.python,
            s.python
        );
        None
    };
    let tmp = tempfile::Builder::new().prefix("bench-train").tempdir()?;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let load_start = load_average();
    println!(
        "bench-train: batch {}, {} warm-up + up to {} timed steps (at most {} s each), \
         {} threads, history lengths {}\n{threads_how}",
        s.batch,
        s.warmup,
        s.steps,
        s.max_seconds,
        s.threads,
        s.lengths.describe(s.history_cap)
    );

    let mut rows = Vec::new();
    let mut torch_version: Option<String> = None;
    for name in &s.models {
        let load = load_average();
        let file = tmp.path().join(format!("{name}.safetensors"));
        let started = Instant::now();
        let candle = run_candle(name, &s, &dev, torch.map(|_| file.as_path()));
        let candle_wall = started.elapsed().as_secs_f64();
        let (candle_json, candle_sps) = match &candle {
            Ok(c) => {
                let t = &c.timing;
                println!(
                    "{name:<9} candle {:>9.1} samples/s {:>9.1} ms/step ({} steps, median {:.1} ms, \
                     loss {:.4}, {} params, T {}..{})",
                    t.samples_per_s(s.batch),
                    t.ms_per_step(),
                    t.steps,
                    t.median_ms,
                    t.last_loss,
                    c.params,
                    c.widths.iter().min().unwrap_or(&0),
                    c.widths.iter().max().unwrap_or(&0),
                );
                if let Some(p) = c.parity {
                    println!(
                        "{name:<9} {} vs cpu: max |Δlogit| {:.2e}, max relative |Δgrad| {:.2e} \
                         ({} parameters)",
                        s.device, p.logits, p.grads, p.tensors
                    );
                }
                (
                    json!({
                        "params": c.params,
                        "layout": layout_json(c.layout),
                        "max_length": max_length(s.history_cap, c.layout),
                        "widths": c.widths,
                        "steps": t.steps,
                        "seconds": t.seconds,
                        "samples_per_s": t.samples_per_s(s.batch),
                        "ms_per_step": t.ms_per_step(),
                        "median_ms": t.median_ms,
                        "last_loss": t.last_loss,
                        "wall_s": candle_wall,
                        "parity_vs_cpu": c.parity.map(|p| json!({
                            "max_abs_logit_diff": p.logits,
                            "max_rel_grad_diff": p.grads,
                            "parameters": p.tensors,
                        })),
                    }),
                    Some(t.samples_per_s(s.batch)),
                )
            }
            Err(e) => {
                println!("{name:<9} candle failed: {e:#}");
                (json!({ "error": format!("{e:#}") }), None)
            }
        };
        let (torch_json, torch_sps) = match (&candle, torch) {
            (Ok(_), Some(())) => match run_torch(name, &s, &file) {
                Ok(v) => {
                    let sps = v["samples_per_s"].as_f64();
                    if torch_version.is_none() {
                        torch_version = v["torch"].as_str().map(str::to_owned);
                    }
                    println!(
                        "{name:<9} torch  {:>9} samples/s {:>9} ms/step ({} steps, {} params)",
                        fmt_opt(sps, 1),
                        fmt_opt(v["ms_per_step"].as_f64(), 1),
                        v["steps"],
                        v["params"]
                    );
                    (v, sps)
                }
                Err(e) => {
                    println!("{name:<9} torch failed: {e:#}");
                    (json!({ "error": format!("{e:#}") }), None)
                }
            },
            _ => (Value::Null, None),
        };
        let _ = std::fs::remove_file(&file);
        if let (Ok(c), Some(tp)) = (&candle, torch_json["params"].as_u64()) {
            if tp as usize != c.params {
                tracing::warn!(
                    "{name}: parameter counts differ (candle {}, torch {tp})",
                    c.params
                );
            }
        }
        let ratio = candle_sps.zip(torch_sps).map(|(c, t)| c / t);
        rows.push(json!({
            "model": name,
            "load_average": load,
            "candle": candle_json,
            "torch": torch_json,
            "ratio_candle_over_torch": ratio,
        }));
    }

    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap_or_default();
    let candle_version = lock_version(&lock, "candle-core");
    let nproc = command_line("nproc", &[])
        .and_then(|s| s.parse::<usize>().ok())
        .or_else(|| std::thread::available_parallelism().map(|n| n.get()).ok());
    let report = json!({
        "date": utc_timestamp(started),
        "machine": {
            "nproc": nproc,
            "cpu": cpu_model(),
            "load_average_start": load_start,
            "load_average_end": load_average(),
            "gpu": gpu_name(&s.device),
        },
        "versions": {
            "candle": candle_version,
            "torch": torch_version,
            "rustc": command_line("rustc", &["--version"]),
        },
        "settings": {
            "models": s.models,
            "batch": s.batch,
            "steps": s.steps,
            "warmup": s.warmup,
            "history_cap": s.history_cap,
            "history_lengths": s.lengths.describe(s.history_cap),
            "lengths": format!("{:?}", s.lengths).to_lowercase(),
            "threads": s.threads,
            "threads_how": threads_how,
            "max_seconds": s.max_seconds,
            "omp_wait_policy": s.omp_wait_policy,
            "seed": s.seed,
            "device": s.device,
            "vocab": ELECTRONICS,
            "optimizer": "Adam lr 1e-3, betas 0.9/0.999, eps 1e-8, no weight decay (dense updates)",
            "batches": N_BATCHES,
        },
        "results": rows,
    });
    let md = markdown(&report);
    let out = if s.out.is_absolute() {
        s.out.clone()
    } else {
        root().join(&s.out)
    };
    let with_ext = |ext: &str| {
        let mut p = out.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    mtrec_data::io::write_atomic(&with_ext(".md"), md.as_bytes())?;
    mtrec_data::io::write_atomic(
        &with_ext(".json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    print!("\n{md}");
    println!(
        "written to {} and {}",
        with_ext(".md").display(),
        with_ext(".json").display()
    );
    Ok(())
}

/// The report as Markdown (from its JSON form, so both files say the same).
pub fn markdown(r: &Value) -> String {
    let st = &r["settings"];
    let m = &r["machine"];
    let v = &r["versions"];
    let text = |x: &Value| match x {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        x => x.to_string(),
    };
    let device = st["device"].as_str().unwrap_or("cpu");
    let device_flag = if device == "cpu" {
        String::new()
    } else {
        format!(" --device {device}")
    };
    let device_text = match m["gpu"].as_str() {
        Some(gpu) => format!("{device} ({gpu}); both frameworks train on it"),
        None => device.to_owned(),
    };
    let mut md = format!(
        "# Training throughput: candle vs PyTorch\n\n\
         Command: `cargo xtask bench-train --models {} --batch {} --steps {} --warmup {} \
         --history-cap {} --lengths {} --threads {} --max-seconds {} --omp-wait-policy {}{}`\n\n\
         - date: {}\n- device: {}\n- machine: {} cores (nproc), {}; load average (1/5/15 min) {} at the start, \
         {} at the end (a load above the thread count means other jobs competed for the cores)\n\
         - versions: candle {}, torch {}, {}\n\
         - threads: {}\n\
         - data: Electronics-sized vocabularies ({} users, {} items, {} categories, ids + padding 0), \
         {} random batches per model in the model's layout, history lengths {} \
         (T = padded width); the same batches feed both frameworks\n\
         - step: forward (training mode) + BCE with logits (+ DIEN's auxiliary loss) + backward + \
         {}; each model at its default (official) configuration with a CTR head; {} warm-up steps, \
         then up to {} timed steps (fewer once {} s are spent)\n\n\
         | model | params | T | candle samples/s | candle ms/step | steps | torch samples/s | \
         torch ms/step | steps | candle/torch | load (1 min) |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        st["models"]
            .as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        st["batch"],
        st["steps"],
        st["warmup"],
        st["history_cap"],
        st["lengths"].as_str().unwrap_or("uniform"),
        st["threads"],
        st["max_seconds"],
        st["omp_wait_policy"].as_str().unwrap_or("unset"),
        device_flag,
        text(&r["date"]),
        device_text,
        text(&m["nproc"]),
        text(&m["cpu"]),
        text(&m["load_average_start"]),
        text(&m["load_average_end"]),
        text(&v["candle"]),
        text(&v["torch"]),
        text(&v["rustc"]),
        text(&st["threads_how"]),
        st["vocab"]["users"],
        st["vocab"]["items"],
        st["vocab"]["categories"],
        st["batches"],
        text(&st["history_lengths"]),
        text(&st["optimizer"]),
        st["warmup"],
        st["steps"],
        st["max_seconds"],
    );
    let empty = Vec::new();
    for row in r["results"].as_array().unwrap_or(&empty) {
        let c = &row["candle"];
        let t = &row["torch"];
        let params = match (c["params"].as_u64(), t["params"].as_u64()) {
            (Some(a), Some(b)) if a != b => format!("{a} (torch {b})"),
            (Some(a), _) => a.to_string(),
            _ => "—".into(),
        };
        let widths = c["widths"].as_array().map(|w| {
            let w: Vec<u64> = w.iter().filter_map(Value::as_u64).collect();
            let (lo, hi) = (w.iter().min(), w.iter().max());
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
                (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
                _ => "—".into(),
            }
        });
        let side = |x: &Value| -> [String; 3] {
            if let Some(e) = x["error"].as_str() {
                let short: String = e.chars().take(60).collect();
                return [format!("failed: {short}"), "—".into(), "—".into()];
            }
            [
                fmt_opt(x["samples_per_s"].as_f64(), 0),
                fmt_opt(x["ms_per_step"].as_f64(), 1),
                x["steps"]
                    .as_u64()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "—".into()),
            ]
        };
        let [cs, cm, cn] = side(c);
        let [ts, tm, tn] = if t.is_null() {
            ["not run".into(), "—".into(), "—".into()]
        } else {
            side(t)
        };
        let load = row["load_average"]
            .as_str()
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("—");
        md.push_str(&format!(
            "| {} | {params} | {} | {cs} | {cm} | {cn} | {ts} | {tm} | {tn} | {} | {load} |\n",
            text(&row["model"]),
            widths.unwrap_or_else(|| "—".into()),
            fmt_opt(row["ratio_candle_over_torch"].as_f64(), 2),
        ));
    }
    md.push_str(
        "\nsamples/s = batch × timed steps / their wall time; ms/step is the mean. The torch models \
         are the parity references of `tests/reference/` at the default sizes \
         (`xtask/bench/train_torch.py` lists where they differ from the Rust models).\n",
    );
    let parity: Vec<String> = r["results"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|row| {
            let p = &row["candle"]["parity_vs_cpu"];
            Some(format!(
                "| {} | {:.2e} | {:.2e} | {} |\n",
                text(&row["model"]),
                p["max_abs_logit_diff"].as_f64()?,
                p["max_rel_grad_diff"].as_f64()?,
                p["parameters"]
            ))
        })
        .collect();
    if !parity.is_empty() {
        md.push_str(&format!(
            "\nThe candle model on {device} against the same weights on the CPU, on the first batch in \
             evaluation mode: the largest logit difference, and the largest gradient difference of \
             any parameter relative to max(1, its largest CPU gradient).\n\n\
             | model | max abs Δlogit | max rel Δgrad | parameters |\n|---|---:|---:|---:|\n"
        ));
        for line in parity {
            md.push_str(&line);
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Settings> {
        let cli = Cli::try_parse_from(std::iter::once("bench-train").chain(argv.iter().copied()))?;
        cli.args.settings()
    }

    #[test]
    fn defaults_and_model_list() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.models, mtrec_models::names());
        assert_eq!(
            (s.batch, s.warmup, s.history_cap, s.threads),
            (1024, 2, 100, 2)
        );
        assert!(s.torch);
        assert_eq!(s.out, PathBuf::from("results/bench"));
        assert_eq!(s.omp_wait_policy.as_deref(), Some("PASSIVE"));
        let s = parse(&["--omp-wait-policy", "unset"]).unwrap();
        assert_eq!(s.omp_wait_policy, None);

        let s = parse(&["--models", "din, sasrec,din", "--batch", "8", "--no-torch"]).unwrap();
        assert_eq!(s.models, ["din", "sasrec"]);
        assert_eq!(s.batch, 8);
        assert!(!s.torch);

        let e = parse(&["--models", "din,nope"]).unwrap_err().to_string();
        assert!(e.contains("unknown model 'nope'"), "{e}");
        assert!(parse(&["--batch", "0"]).is_err());
        assert!(parse(&["--threads", "0"]).is_err());
        assert!(parse(&["--max-seconds", "-1"]).is_err());

        assert_eq!(s.device, "cpu");
        assert_eq!(parse(&["--device", "CUDA:1"]).unwrap().device, "cuda:1");
        assert_eq!(parse(&["--device", "cuda"]).unwrap().device, "cuda");
        for bad in ["gpu", "cuda:", "cuda:x"] {
            let e = parse(&["--device", bad]).unwrap_err().to_string();
            assert!(e.contains("expected cpu, cuda or cuda:<N>"), "{bad}: {e}");
        }
    }

    #[test]
    fn gpu_report_names_the_device_and_lists_the_cpu_check() {
        let r = json!({
            "date": "2025-01-01T00:00:00Z",
            "machine": {"nproc": 16, "cpu": "x", "gpu": "NVIDIA H100"},
            "versions": {},
            "settings": {"models": ["din"], "batch": 4, "steps": 3, "warmup": 1,
                "history_cap": 100, "threads": 4, "max_seconds": 0.0, "device": "cuda",
                "vocab": ELECTRONICS, "batches": 8},
            "results": [
                {"model": "din", "load_average": null,
                 "candle": {"params": 10, "widths": [5], "samples_per_s": 100.0, "ms_per_step": 40.0,
                    "steps": 3, "parity_vs_cpu": {"max_abs_logit_diff": 4.05e-8,
                    "max_rel_grad_diff": 2.33e-9, "parameters": 19}},
                 "torch": null, "ratio_candle_over_torch": null}
            ]
        });
        let md = markdown(&r);
        assert!(md.contains("--device cuda`"), "{md}");
        assert!(md.contains("- device: cuda (NVIDIA H100)"), "{md}");
        assert!(md.contains("| din | 4.05e-8 | 2.33e-9 | 19 |"), "{md}");
        // A CPU report has neither.
        let mut cpu = r.clone();
        cpu["settings"]["device"] = json!("cpu");
        cpu["results"][0]["candle"]["parity_vs_cpu"] = Value::Null;
        let md = markdown(&cpu);
        assert!(
            !md.contains("--device") && !md.contains("max abs Δlogit"),
            "{md}"
        );
    }

    fn check_batch(h: &HostBatch, width: usize, batch: usize, max_len: usize, layout: Layout) {
        let vocab = ELECTRONICS;
        assert_eq!(h.users.len(), batch);
        for col in [
            &h.hist_items,
            &h.hist_cats,
            &h.hist_neg_items,
            &h.hist_neg_cats,
        ] {
            assert_eq!(col.len(), batch * width);
        }
        assert_eq!(h.mask.len(), batch * width);
        for row in 0..batch {
            let len = h.lengths[row] as usize;
            assert!((1..=max_len).contains(&len), "length {len}");
            let mask = &h.mask[row * width..(row + 1) * width];
            let items = &h.hist_items[row * width..(row + 1) * width];
            let cats = &h.hist_cats[row * width..(row + 1) * width];
            let real: Vec<usize> = (0..width).filter(|&t| mask[t] == 1.0).collect();
            assert_eq!(real.len(), len);
            let expect_start = match layout.align {
                Align::Left => 0,
                Align::Right => width - len,
            };
            assert_eq!(real[0], expect_start);
            assert_eq!(*real.last().unwrap(), expect_start + len - 1);
            for t in 0..width {
                if mask[t] == 1.0 {
                    assert!((1..vocab.items as u32).contains(&items[t]));
                    assert!((1..vocab.categories as u32).contains(&cats[t]));
                } else {
                    assert_eq!((items[t], cats[t]), (0, 0));
                }
            }
            assert!((1..vocab.users as u32).contains(&h.users[row]));
            assert!((1..vocab.items as u32).contains(&h.target_items[row]));
            assert!(h.labels[row] == 0.0 || h.labels[row] == 1.0);
        }
    }

    #[test]
    fn batches_follow_each_layout() {
        let cases = [
            (Layout::default(), 100, 100),
            (
                Layout {
                    max_history: 50,
                    pad: PadPolicy::Fixed,
                    align: Align::Right,
                },
                100,
                50,
            ),
            (
                Layout {
                    max_history: 50,
                    pad: PadPolicy::Fixed,
                    align: Align::Left,
                },
                20,
                20,
            ),
        ];
        for (layout, cap, max_len) in cases {
            assert_eq!(max_length(cap, layout), max_len);
            let batches = build_batches(ELECTRONICS, layout, 64, cap, Lengths::Uniform, 3);
            assert_eq!(batches.len(), N_BATCHES);
            for (h, width) in &batches {
                match layout.pad {
                    PadPolicy::Fixed => assert_eq!(*width, layout.max_history),
                    PadPolicy::Longest => {
                        assert_eq!(*width, *h.lengths.iter().max().unwrap() as usize)
                    }
                }
                check_batch(h, *width, 64, max_len, layout);
                // The columns fit a device batch.
                h.clone()
                    .to_device(*width, layout.align, &Device::Cpu)
                    .unwrap();
            }
            // Deterministic in the seed; another seed differs.
            assert_eq!(
                batches,
                build_batches(ELECTRONICS, layout, 64, cap, Lengths::Uniform, 3)
            );
            assert_ne!(
                batches,
                build_batches(ELECTRONICS, layout, 64, cap, Lengths::Uniform, 4)
            );
        }
    }

    #[test]
    fn amazon_lengths_follow_the_beauty_distribution_under_the_cap() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let draws: Vec<usize> = (0..20_000)
            .map(|_| Lengths::Amazon.draw(&mut rng, 100))
            .collect();
        let mean = draws.iter().sum::<usize>() as f64 / draws.len() as f64;
        assert!((7.5..10.0).contains(&mean), "mean {mean}");
        assert!(draws.iter().all(|&l| (1..=100).contains(&l)));
        let capped = (0..1000).map(|_| Lengths::Amazon.draw(&mut rng, 20));
        assert!(capped.into_iter().all(|l| (1..=20).contains(&l)));
        assert!(AMAZON_LENGTHS.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn categories_are_a_function_of_the_item() {
        let layout = Layout::default();
        let mut seen: HashMap<u32, u32> = HashMap::new();
        for (h, _) in build_batches(ELECTRONICS, layout, 256, 100, Lengths::Amazon, 9) {
            let pairs = h.hist_items.iter().zip(&h.hist_cats);
            for (&i, &c) in pairs.chain(h.hist_neg_items.iter().zip(&h.hist_neg_cats)) {
                assert_eq!(*seen.entry(i).or_insert(c), c, "item {i}");
            }
        }
        assert_eq!(seen.get(&0), Some(&0));
    }

    #[test]
    fn time_loop_counts_steps_and_cycles_batches() {
        let mut seen = Vec::new();
        let t = time_loop(2, 5, 0.0, |i| {
            seen.push(i % N_BATCHES);
            Ok(1.0 / (i + 1) as f64)
        })
        .unwrap();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(t.steps, 5);
        assert_eq!(t.last_loss, 1.0 / 7.0);
        // A tiny time budget stops after the minimum of two timed steps.
        let mut n = 0;
        let t = time_loop(0, 100, 1e-9, |_| {
            n += 1;
            std::thread::sleep(std::time::Duration::from_millis(1));
            Ok(0.5)
        })
        .unwrap();
        assert_eq!((t.steps, n), (2, 2));
        assert!(t.samples_per_s(10) > 0.0 && t.ms_per_step() > 0.0);
        assert!(time_loop(0, 3, 0.0, |_| Ok(f64::NAN)).is_err());
    }

    #[test]
    fn helpers() {
        let lock = "[[package]]\nname = \"candle-core\"\nversion = \"0.11.1\"\nsource = \"x\"\n";
        assert_eq!(lock_version(lock, "candle-core").as_deref(), Some("0.11.1"));
        assert_eq!(lock_version(lock, "candle-nn"), None);
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(utc_timestamp(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn markdown_table_has_a_row_per_model() {
        let r = json!({
            "date": "2025-01-01T00:00:00Z",
            "machine": {"nproc": 2, "cpu": "x", "load_average_start": "1 1 1", "load_average_end": "2 2 2"},
            "versions": {"candle": "0.11.1", "torch": "2.15.0", "rustc": "rustc 1.95"},
            "settings": {"models": ["din", "dien"], "batch": 4, "steps": 3, "warmup": 1,
                "history_cap": 100, "threads": 2, "threads_how": "t", "max_seconds": 0.0,
                "vocab": ELECTRONICS, "batches": 8, "optimizer": "Adam"},
            "results": [
                {"model": "din", "load_average": "1.5 1 1",
                 "candle": {"params": 10, "widths": [99, 100], "samples_per_s": 100.0, "ms_per_step": 40.0, "steps": 3},
                 "torch": {"params": 10, "samples_per_s": 400.0, "ms_per_step": 10.0, "steps": 3},
                 "ratio_candle_over_torch": 0.25},
                {"model": "dien", "load_average": null,
                 "candle": {"error": "boom"}, "torch": null, "ratio_candle_over_torch": null}
            ]
        });
        let md = markdown(&r);
        assert!(
            md.contains("| din | 10 | 99–100 | 100 | 40.0 | 3 | 400 | 10.0 | 3 | 0.25 | 1.5 |"),
            "{md}"
        );
        assert!(md.contains("| dien | — | — | failed: boom |"), "{md}");
        assert!(md.contains("--models din,dien"));
    }
}
