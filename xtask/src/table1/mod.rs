//! `cargo xtask reproduce-table1`: the paper's Table 1 in one command.
//!
//! For each dataset and backbone it fits the two reward models (IQ-Learn for "-IRL", QR-IQL for
//! "-MTRec", on the backbone's own trunk), patches the rewards, trains the plain, IRL and MTRec
//! recommenders for every seed, evaluates them (AUC, ΔNCIS, GAUC, log loss, and the ground-truth
//! alignment metrics on simulator data), and writes `results/table1.{md,csv,json}` with the paired
//! comparisons and the RQ3 figures.
//!
//! **Cells.** Each reward fit and each recommender run is a cell in its own folder under
//! `runs/table1/<dataset>/<model>/`, keyed by a SHA-256 of everything that defines its result (the
//! dataset's fingerprint, the backbone's settings, the training or reward settings, and for aligned
//! runs the hash of the reward cell they read). A finished cell writes `cell.json` last; a cell whose
//! `cell.json` carries the current hash is never recomputed, an unfinished one resumes from its
//! checkpoint, and a cell whose settings changed is recomputed from scratch. Killing the command
//! therefore loses at most the steps since a cell's last checkpoint.

pub mod config;
pub mod paper;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use mtrec_data::io::write_atomic;
use mtrec_data::PreparedDataset;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use config::{model_settings, reward_settings, train_settings, Table1Config, Variant};

/// Bumped when a change to mtrec alters results, so that old cells are recomputed. 2: seeded
/// dropout and the fused LayerNorm changed SASRec's, LinRec's and SIGMA's results. 3: SASRec's
/// length groups draw other dropout masks, LinRec's fused attention and GELU round differently.
/// 4: LayerNorm's statistics are summed in another order (every model with a LayerNorm), and
/// LinRec's packed projections, fused sublayer tails and the f32 `exp` round differently.
pub const CELL_VERSION: u32 = 4;

/// The most cells `--jobs` runs at a time by default.
const MAX_DEFAULT_JOBS: usize = 8;

/// File a finished cell writes last.
pub const CELL_FILE: &str = "cell.json";

#[derive(clap::Args)]
pub struct Args {
    /// The experiment file.
    #[arg(long, default_value = "experiments/table1.yaml")]
    config: PathBuf,
    /// Budget profile of the file (quick or paper) [default: the file's `profile`].
    #[arg(long)]
    profile: Option<String>,
    /// Recommender seeds, comma-separated [default: the file's `seeds`].
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// A prepared dataset as NAME=FOLDER (repeatable); replaces the file's datasets. A folder made
    /// by `mtrec prepare` from a simulator world gets the ground-truth metrics with
    /// NAME=FOLDER@WORLD.
    #[arg(long = "dataset")]
    datasets: Vec<String>,
    /// Run only the cells of these datasets, models and variants (repeatable; a name is matched
    /// against all three, e.g. `--only din --only mtrec`; several names of one kind are alternatives).
    /// Reward fits that an aligned variant needs run too. The report covers every finished cell.
    #[arg(long)]
    only: Vec<String>,
    /// Folder of the cells.
    #[arg(long, default_value = "runs/table1")]
    runs: PathBuf,
    /// Folder of the report.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// List the cells and their state, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rebuild the report from the finished cells, run nothing.
    #[arg(long)]
    report_only: bool,
    /// cpu, or cuda / cuda:N (build with `--features cuda`). Results on another device may differ
    /// in the last digits; the cell hash does not include the device.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Cells computed at a time, each in its own thread pool [default: the number of cores on the
    /// CPU, at most 8; 1 on a GPU]. A cell's result does not depend on it.
    #[arg(long)]
    jobs: Option<usize>,
}

/// A dataset ready for the grid.
pub struct Dataset {
    pub name: String,
    /// Where the data came from, in words (printed in the table).
    pub source: String,
    /// True for the real Amazon files the paper used.
    pub real_paper_data: bool,
    pub dir: PathBuf,
    pub ds: PreparedDataset,
    pub fingerprint: String,
    /// The simulator folder with the ground truth, if the data is simulated.
    pub world: Option<PathBuf>,
}

/// What a cell computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellKind {
    Reward(mtrec_reward::RewardKind),
    Train(Variant, u64),
}

/// One unit of work of the grid.
pub struct Cell {
    pub dataset: usize,
    pub model: String,
    pub kind: CellKind,
    pub dir: PathBuf,
    pub hash: String,
    /// What the hash covers (written into `cell.json`).
    pub identity: serde_json::Value,
    /// Rough cost, for the ETA only.
    pub units: f64,
    pub model_config: serde_norway::Value,
    pub train: Option<mtrec_train::TrainConfig>,
    pub reward: Option<mtrec_reward::RewardConfig>,
    /// The reward cell an aligned run reads (index into the cell list).
    pub needs: Option<usize>,
    /// Ground-truth ranking of a recommender cell on simulator data.
    pub ranking: Option<config::RankingSpec>,
    /// Seed of the ranking's candidate draws (the grid's `data_seed`).
    pub ranking_seed: u64,
}

/// `cell.json`: the result of a finished cell, what the report reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellRecord {
    pub hash: String,
    pub dataset: String,
    pub model: String,
    /// `plain`, `irl`, `mtrec`, or `reward-qr-iql` / `reward-iq-learn`.
    pub cell: String,
    pub seed: u64,
    pub seconds: f64,
    pub identity: serde_json::Value,
    #[serde(default)]
    pub train: Option<TrainRecord>,
    #[serde(default)]
    pub reward: Option<RewardRecord>,
    /// `mtrec_truth::RankingMetrics` (train cells on simulator data).
    #[serde(default)]
    pub ranking: Option<serde_json::Value>,
    /// `mtrec_truth::RecoveryMetrics` (reward cells on simulator data).
    #[serde(default)]
    pub recovery: Option<serde_json::Value>,
}

/// The headline metrics of a recommender cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainRecord {
    pub auc: f64,
    pub auc_all_steps: f64,
    pub gauc: f64,
    pub logloss: f64,
    pub ncis: f64,
    pub ncis_init: f64,
    pub delta_ncis: f64,
    pub ess: f64,
    pub steps: u64,
    pub samples_per_s: f64,
}

/// The headline metrics of a reward cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewardRecord {
    pub q_test_auc: f64,
    pub train_positive_misorder: f64,
    pub final_loss: f64,
    pub steps: u64,
    /// Spearman of the mean reward of the real action against the step (Fig. 3a).
    pub step_trend: f64,
    /// Figure 3's folder.
    pub figure3: PathBuf,
}

impl Cell {
    pub fn label(&self, datasets: &[Dataset]) -> String {
        format!(
            "{} {} {}",
            datasets[self.dataset].name,
            self.model,
            self.cell_name()
        )
    }

    pub fn cell_name(&self) -> String {
        match self.kind {
            CellKind::Reward(k) => format!("reward-{}", k.as_str()),
            CellKind::Train(v, s) => format!("{}-s{s}", v.as_str()),
        }
    }

    /// The finished record, if `cell.json` holds the current hash.
    pub fn finished(&self) -> Option<CellRecord> {
        let text = std::fs::read_to_string(self.dir.join(CELL_FILE)).ok()?;
        let r: CellRecord = serde_json::from_str(&text).ok()?;
        (r.hash == self.hash).then_some(r)
    }
}

fn sha256_json(v: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(v.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Relative cost of one training step of 128 samples (milliseconds measured in the quick grid on
/// the electronics-small world, one thread): used only to weigh the progress bar's ETA.
fn step_cost(model: &str) -> f64 {
    match model {
        "widedeep" => 2.3,
        "pnn" => 2.9,
        "deepfm" => 3.8,
        "din" => 7.8,
        "dien" => 50.0,
        "sasrec" => 44.0,
        "linrec" => 170.0,
        "sigma" => 510.0,
        _ => 50.0,
    }
}

/// Resolves `--dataset` flags or the file's datasets into prepared datasets (preparing or
/// simulating them under `<runs>/data` when needed).
fn resolve_datasets(cfg: &Table1Config, flags: &[String], runs: &Path) -> Result<Vec<Dataset>> {
    let mut specs = cfg.datasets.clone();
    if !flags.is_empty() {
        specs = flags
            .iter()
            .map(|f| {
                let (name, rest) = f
                    .split_once('=')
                    .with_context(|| format!("--dataset {f}: expected NAME=FOLDER[@WORLD]"))?;
                let (dir, world) = match rest.split_once('@') {
                    Some((d, w)) => (d, Some(PathBuf::from(w))),
                    None => (rest, None),
                };
                Ok(config::DatasetSpec {
                    name: name.to_owned(),
                    amazon: None,
                    synth: None,
                    prepared: Some(PathBuf::from(dir)),
                    world,
                })
            })
            .collect::<Result<_>>()?;
        let mut check = cfg.clone();
        check.datasets = specs.clone();
        check.validate(Path::new("--dataset"))?;
    }
    specs.iter().map(|s| resolve_one(s, cfg, runs)).collect()
}

fn resolve_one(spec: &config::DatasetSpec, cfg: &Table1Config, runs: &Path) -> Result<Dataset> {
    let base = runs.join("data").join(&spec.name);
    if let Some(dir) = &spec.prepared {
        let ds = PreparedDataset::load(dir)
            .with_context(|| format!("dataset '{}': {}", spec.name, dir.display()))?;
        if let Some(w) = &spec.world {
            if !w.join("world.json").exists() {
                bail!(
                    "dataset '{}': {} is not a simulator folder (no world.json)",
                    spec.name,
                    w.display()
                );
            }
        }
        return Ok(Dataset {
            name: spec.name.clone(),
            source: format!("prepared dataset {}", dir.display()),
            real_paper_data: false,
            dir: dir.clone(),
            fingerprint: mtrec_train::dataset_fingerprint(&ds),
            ds,
            world: spec.world.clone(),
        });
    }
    if let Some(a) = &spec.amazon {
        let cat = if a.eq_ignore_ascii_case("electronics") {
            "Electronics"
        } else {
            "Books"
        };
        let cache = PathBuf::from("data/cache/amazon2014");
        let inputs = vec![
            cache.join(format!("reviews_{cat}_5.json.gz")),
            cache.join(format!("meta_{cat}.json.gz")),
        ];
        if inputs.iter().all(|p| p.is_file()) {
            let dir = base.join(format!("amazon-{}", a.to_ascii_lowercase()));
            let sizes: Vec<u64> = inputs
                .iter()
                .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
                .collect();
            let ds = match PreparedDataset::load(&dir) {
                Ok(ds)
                    if ds.manifest.rules.prepare.seed == cfg.data_seed
                        && ds
                            .manifest
                            .inputs
                            .iter()
                            .map(|i| i.bytes)
                            .collect::<Vec<_>>()
                            == sizes =>
                {
                    ds
                }
                _ => {
                    eprintln!("preparing {} from {}", spec.name, cache.display());
                    let rule = if cat == "Books" {
                        mtrec_data::CategoryRule::LastOfFirst
                    } else {
                        mtrec_data::CategoryRule::LastOfLast
                    };
                    crate::prepare_amazon(&inputs, &dir, cfg.data_seed, rule)?
                }
            };
            return Ok(Dataset {
                name: spec.name.clone(),
                source: format!("Amazon 2014 5-core {cat} (the paper's data)"),
                real_paper_data: true,
                dir,
                fingerprint: mtrec_train::dataset_fingerprint(&ds),
                ds,
                world: None,
            });
        }
    }
    let preset = spec.synth.as_deref().with_context(|| {
        format!(
            "dataset '{}': the Amazon files are not in data/cache/amazon2014 (`mtrec download --dataset {}`) and no `synth` fallback is set",
            spec.name,
            spec.amazon.as_deref().unwrap_or("?")
        )
    })?;
    let world = base.join(format!("world-{preset}-s{}", cfg.data_seed));
    let dir = base.join(format!("prepared-{preset}-s{}", cfg.data_seed));
    let ds = match (
        world.join("world.json").exists(),
        PreparedDataset::load(&dir),
    ) {
        (true, Ok(ds)) => ds,
        _ => crate::synthesize_and_prepare(preset, cfg.data_seed, &world, &dir)?.1,
    };
    let c = &ds.manifest.counts;
    Ok(Dataset {
        name: spec.name.clone(),
        source: format!(
            "simulator preset {preset} (seed {}; {} users, {} items, {} engagements){}",
            cfg.data_seed,
            c.users,
            c.items,
            c.interactions,
            if spec.amazon.is_some() {
                " standing in for the Amazon files, which are not downloaded"
            } else {
                ""
            }
        ),
        real_paper_data: false,
        dir,
        fingerprint: mtrec_train::dataset_fingerprint(&ds),
        ds,
        world: Some(world),
    })
}

/// `--only` filters: each name is a dataset, a model or a variant.
struct Only {
    datasets: Vec<String>,
    models: Vec<String>,
    variants: Vec<Variant>,
}

impl Only {
    fn parse(only: &[String], datasets: &[Dataset], cfg: &Table1Config) -> Result<Only> {
        let mut o = Only {
            datasets: vec![],
            models: vec![],
            variants: vec![],
        };
        for raw in only.iter().flat_map(|s| s.split(',')) {
            let name = raw.trim();
            if name.is_empty() {
                continue;
            }
            if let Some(d) = datasets.iter().find(|d| d.name.eq_ignore_ascii_case(name)) {
                o.datasets.push(d.name.clone());
            } else if cfg.models.iter().any(|m| m == name) {
                o.models.push(name.to_owned());
            } else if let Some(v) = Variant::parse(name) {
                o.variants.push(v);
            } else {
                bail!(
                    "--only {name}: not a dataset ({}), model ({}) or variant (plain, irl, mtrec) of this grid",
                    datasets.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", "),
                    cfg.models.join(", ")
                );
            }
        }
        Ok(o)
    }

    fn admits(&self, dataset: &str, model: &str, variant: Variant) -> bool {
        (self.datasets.is_empty() || self.datasets.iter().any(|d| d == dataset))
            && (self.models.is_empty() || self.models.iter().any(|m| m == model))
            && (self.variants.is_empty() || self.variants.contains(&variant))
    }
}

/// Every cell of the grid (reward fits before the runs that read them), and for each whether
/// `--only` selects it.
fn plan(
    cfg: &Table1Config,
    models_dir: &Path,
    datasets: &[Dataset],
    runs: &Path,
    only: &Only,
) -> Result<(Vec<Cell>, Vec<bool>)> {
    let p = cfg.active_profile();
    let mut cells = Vec::new();
    let mut selected = Vec::new();
    for (di, d) in datasets.iter().enumerate() {
        let train_samples = d.ds.manifest.counts.train_samples as f64;
        let test_samples = d.ds.manifest.counts.test_samples as f64;
        let test_users = d.ds.manifest.counts.test_users as f64;
        for model in &cfg.models {
            let mc = model_settings(p, &cfg.profile, model, models_dir)?;
            let mc_json = serde_json::to_value(&mc)?;
            let w = step_cost(model);
            let dir = runs.join(&d.name).join(model);
            let mut reward_cell = std::collections::HashMap::new();
            for kind in [
                mtrec_reward::RewardKind::IqLearn,
                mtrec_reward::RewardKind::QrIql,
            ] {
                let users: Vec<Variant> = cfg
                    .variants
                    .iter()
                    .copied()
                    .filter(|v| v.reward_kind() == Some(kind))
                    .collect();
                if users.is_empty() {
                    continue;
                }
                let mut rc = reward_settings(p, &cfg.profile, model)?;
                rc.kind = kind;
                rc.seed = cfg.reward_seed;
                let identity = serde_json::json!({
                    "cell_version": CELL_VERSION,
                    "cell": "reward",
                    "dataset": d.fingerprint,
                    "model": model,
                    "model_config": mc_json,
                    "reward": serde_json::to_value(&rc)?,
                });
                // Training steps (a transition is two forward-backward passes, s and s'), then
                // scoring every distinct training state (about half the samples) and the test
                // samples; a forward pass costs about a third of a training step.
                let units = w
                    * (rc.steps as f64 * rc.batch_size as f64 / 128.0 * 3.0
                        + (train_samples / 2.0 + test_samples) / 128.0 / 3.0);
                reward_cell.insert(kind, cells.len());
                selected.push(users.iter().any(|&v| only.admits(&d.name, model, v)));
                cells.push(Cell {
                    dataset: di,
                    model: model.clone(),
                    kind: CellKind::Reward(kind),
                    dir: dir.join(format!("reward-{}", kind.as_str())),
                    hash: sha256_json(&identity),
                    identity,
                    units,
                    model_config: mc.clone(),
                    train: None,
                    reward: Some(rc),
                    needs: None,
                    ranking: None,
                    ranking_seed: cfg.data_seed,
                });
            }
            let base = train_settings(p, &cfg.profile, model)?;
            for &v in &cfg.variants {
                for &seed in &cfg.seeds {
                    let mut t = base.clone();
                    t.seed = seed;
                    t.kappa = if v == Variant::Plain { 0.0 } else { cfg.kappa };
                    let needs = v.reward_kind().map(|k| reward_cell[&k]);
                    let ranking = d.world.as_ref().map(|_| p.ranking.clone());
                    let identity = serde_json::json!({
                        "cell_version": CELL_VERSION,
                        "cell": "train",
                        "dataset": d.fingerprint,
                        "model": model,
                        "model_config": mc_json,
                        "train": serde_json::to_value(&t)?,
                        "rewards": needs.map(|i: usize| cells[i].hash.clone()),
                        "ranking": ranking.as_ref().map(|r| serde_json::json!({
                            "spec": r, "seed": cfg.data_seed,
                        })),
                    });
                    let steps = match t.max_steps {
                        Some(s) => s as f64,
                        None => t.epochs as f64 * train_samples / t.batch_size as f64,
                    };
                    // Training steps, then scoring the test samples (trained model; the
                    // untrained one once per seed), the validation users and the ranking's
                    // candidates.
                    let ranked = ranking.as_ref().map_or(0.0, |r| {
                        test_users
                            * r.steps_per_user.map_or(4.0, |k| k as f64)
                            * r.candidates as f64
                    });
                    let units = w
                        * (steps.min(t.epochs as f64 * train_samples / t.batch_size as f64)
                            * t.batch_size as f64
                            / 128.0
                            + (1.4 * test_samples
                                + t.validation_fraction * train_samples
                                + ranked)
                                / 128.0
                                / 3.0);
                    selected.push(only.admits(&d.name, model, v));
                    cells.push(Cell {
                        dataset: di,
                        model: model.clone(),
                        kind: CellKind::Train(v, seed),
                        dir: dir.join(format!("{}-s{seed}", v.as_str())),
                        hash: sha256_json(&identity),
                        identity,
                        units,
                        model_config: mc.clone(),
                        train: Some(t),
                        reward: None,
                        needs,
                        ranking,
                        ranking_seed: cfg.data_seed,
                    });
                }
            }
        }
    }
    // A selected aligned run selects its reward fit.
    for i in 0..cells.len() {
        if selected[i] {
            if let Some(n) = cells[i].needs {
                selected[n] = true;
            }
        }
    }
    Ok((cells, selected))
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let cfg_path = if args.config.exists() {
        args.config.clone()
    } else {
        crate::root().join(&args.config)
    };
    let mut cfg = Table1Config::read(&cfg_path)?;
    if let Some(p) = &args.profile {
        cfg.profile = p.clone();
    }
    if let Some(s) = &args.seeds {
        cfg.seeds = s.clone();
    }
    cfg.validate(&cfg_path)?;
    if args.jobs == Some(0) {
        bail!("--jobs must be at least 1");
    }
    let device = mtrec_train::parse_device(&args.device)?;
    let jobs = match args.jobs {
        Some(j) => j,
        // One cell per core, at most MAX_DEFAULT_JOBS: a sequence model's cell can hold a
        // gigabyte while it scores, and beyond that many cells the cores are better shared out
        // inside each cell.
        None if device.is_cpu() => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_DEFAULT_JOBS),
        None => 1,
    };
    // The cores are shared out evenly between the cells that run at once.
    let threads_per_cell =
        (std::thread::available_parallelism().map_or(1, |n| n.get()) / jobs).max(1);
    if jobs > 1 {
        single_threaded_candle(threads_per_cell);
    }
    let datasets = resolve_datasets(&cfg, &args.datasets, &args.runs)?;
    let only = Only::parse(&args.only, &datasets, &cfg)?;
    // Backbone settings live beside the experiment file: experiments/models/<name>.yaml.
    let models_dir = cfg_path
        .parent()
        .map(|p| p.join("models"))
        .unwrap_or_else(|| PathBuf::from("models"));
    let (cells, selected) = plan(&cfg, &models_dir, &datasets, &args.runs, &only)?;
    for d in &datasets {
        eprintln!("{}: {}", d.name, d.source);
    }

    let todo: Vec<usize> = (0..cells.len())
        .filter(|&i| selected[i] && cells[i].finished().is_none())
        .collect();
    let total: f64 = (0..cells.len())
        .filter(|&i| selected[i])
        .map(|i| cells[i].units)
        .sum();
    let left: f64 = todo.iter().map(|&i| cells[i].units).sum();
    eprintln!(
        "profile {}: {} cells selected of {}, {} finished, {} to run",
        cfg.profile,
        selected.iter().filter(|&&s| s).count(),
        cells.len(),
        selected.iter().filter(|&&s| s).count() - todo.len(),
        todo.len()
    );
    if args.dry_run {
        for (i, c) in cells.iter().enumerate() {
            let state = if c.finished().is_some() {
                "finished"
            } else if c.dir.exists() {
                "started"
            } else {
                "new"
            };
            println!(
                "{:<40} {:<9} {:<8} {}",
                c.label(&datasets),
                state,
                if selected[i] { "selected" } else { "" },
                c.dir.display()
            );
        }
        return Ok(());
    }
    if !args.report_only && !todo.is_empty() {
        let parallel = Parallel {
            jobs,
            threads_per_cell,
        };
        run_cells(
            &cells,
            &todo,
            &datasets,
            total,
            total - left,
            &device,
            parallel,
        )?;
    }
    let records: Vec<Option<CellRecord>> = cells.iter().map(Cell::finished).collect();
    let rep = report::build(
        &cfg,
        &datasets,
        &cells,
        &records,
        started.elapsed().as_secs_f64(),
    )?;
    let files = report::write(&rep, &args.out)?;
    println!("{}", rep.verdict_text());
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn run_cells(
    cells: &[Cell],
    todo: &[usize],
    datasets: &[Dataset],
    total: f64,
    done: f64,
    device: &Device,
    parallel: Parallel,
) -> Result<()> {
    let Parallel {
        jobs,
        threads_per_cell,
    } = parallel;
    let scale = 1000.0;
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new((total * scale) as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {percent:>3}% eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_position((done * scale) as u64);
    pb.reset_eta();
    // Each world's truth is read and checked against its dataset once, for all its cells.
    let truths = datasets
        .iter()
        .map(|d| {
            d.world
                .as_ref()
                .map(|w| -> Result<_> {
                    let t = mtrec_truth::GroundTruth::load(w)?;
                    t.check_dataset(&d.ds)?;
                    Ok(t)
                })
                .transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    let grid_start = Instant::now();
    let remaining: f64 = todo.iter().map(|&i| cells[i].units).sum();
    let workers = jobs.clamp(1, todo.len().max(1));
    let queue = std::sync::Mutex::new(Queue {
        waiting: todo.to_vec(),
        running: Vec::new(),
        finished: 0,
        spent_units: 0.0,
        failed: None,
    });
    let wake = std::sync::Condvar::new();
    if workers > 1 {
        let msg = format!("{workers} cells at a time, {threads_per_cell} thread(s) each");
        if pb.is_hidden() {
            eprintln!("{msg}");
        } else {
            pb.println(msg);
        }
    }
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                // Each worker computes its cells in its own rayon pool, so that the workers'
                // matrix products do not queue behind each other in the global pool.
                let pool = match rayon::ThreadPoolBuilder::new()
                    .num_threads(threads_per_cell)
                    .build()
                {
                    Ok(p) => p,
                    Err(e) => {
                        queue_fail(&queue, &wake, anyhow::anyhow!("thread pool: {e}"));
                        return;
                    }
                };
                while let Some(i) = next_cell(&queue, &wake, cells) {
                    let c = &cells[i];
                    let t0 = Instant::now();
                    let out = pool.install(|| run_cell(c, cells, datasets, &truths, device));
                    let rec = match out {
                        Ok(r) => r,
                        Err(e) => {
                            let e = e.context(format!(
                                "cell {} ({})",
                                c.label(datasets),
                                c.dir.display()
                            ));
                            queue_fail(&queue, &wake, e);
                            return;
                        }
                    };
                    let (k, eta) = {
                        let mut q = match queue.lock() {
                            Ok(q) => q,
                            Err(p) => p.into_inner(),
                        };
                        q.running.retain(|&r| r != i);
                        q.finished += 1;
                        q.spent_units += c.units;
                        let elapsed = grid_start.elapsed().as_secs_f64();
                        (
                            q.finished,
                            elapsed / q.spent_units * (remaining - q.spent_units),
                        )
                    };
                    wake.notify_all();
                    let line = match (&rec.train, &rec.reward) {
                        (Some(t), _) => format!(
                            "AUC {:.4}  ΔNCIS {:+.3}  ({:.0} samples/s)",
                            t.auc, t.delta_ncis, t.samples_per_s
                        ),
                        (_, Some(r)) => format!(
                            "Q-net test AUC {:.4}  Fig. 3a trend {:+.2}",
                            r.q_test_auc, r.step_trend
                        ),
                        _ => String::new(),
                    };
                    let msg = format!(
                        "[{}/{}] {:<36} {line}  {:.0}s (grid eta {:.0} min)",
                        k,
                        todo.len(),
                        c.label(datasets),
                        t0.elapsed().as_secs_f64(),
                        eta / 60.0
                    );
                    if pb.is_hidden() {
                        eprintln!("{msg}");
                    } else {
                        pb.println(msg);
                    }
                    pb.inc((c.units * scale) as u64);
                }
            });
        }
    });
    let failed = match queue.into_inner() {
        Ok(q) => q.failed,
        Err(p) => p.into_inner().failed,
    };
    if let Some(e) = failed {
        pb.abandon();
        return Err(e);
    }
    pb.finish_and_clear();
    Ok(())
}

/// Thread settings for cells in parallel (variables the user set are kept). candle sizes one
/// process-wide pool for elementwise ops, once, from `CANDLE_NUM_THREADS` (else
/// `RAYON_NUM_THREADS`, else the cores) and lets one caller in at a time: parallel cells would
/// queue behind each other there while its threads spin, so those ops run on the cell's own
/// thread. Matrix products split into `RAYON_NUM_THREADS` tasks in the worker's own rayon pool:
/// that many as the pool has threads. Called before any candle op and any other thread.
fn single_threaded_candle(per_cell: usize) {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", per_cell.to_string());
    }
}

/// How many cells run at once, and the threads of each one's pool.
#[derive(Debug, Clone, Copy)]
struct Parallel {
    jobs: usize,
    threads_per_cell: usize,
}

/// The cells left to run, shared by the workers of [`run_cells`].
struct Queue {
    /// Not started, in plan order.
    waiting: Vec<usize>,
    /// Started, not finished.
    running: Vec<usize>,
    finished: usize,
    spent_units: f64,
    /// The first error: no new cell starts after it.
    failed: Option<anyhow::Error>,
}

/// The first waiting cell whose reward fit is not still waiting or running, waiting for one while
/// other cells run; `None` when nothing is left or a cell failed.
fn next_cell(
    queue: &std::sync::Mutex<Queue>,
    wake: &std::sync::Condvar,
    cells: &[Cell],
) -> Option<usize> {
    let mut q = match queue.lock() {
        Ok(q) => q,
        Err(p) => p.into_inner(),
    };
    loop {
        if q.failed.is_some() || q.waiting.is_empty() {
            return None;
        }
        let blocked = |n: usize| q.waiting.contains(&n) || q.running.contains(&n);
        if let Some(pos) = q
            .waiting
            .iter()
            .position(|&i| cells[i].needs.is_none_or(|n| !blocked(n)))
        {
            let i = q.waiting.remove(pos);
            q.running.push(i);
            return Some(i);
        }
        // Every waiting cell reads a reward fit that another worker is computing.
        q = match wake.wait(q) {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
    }
}

/// Records a worker's error (the first one wins) and stops the others from starting cells.
fn queue_fail(queue: &std::sync::Mutex<Queue>, wake: &std::sync::Condvar, e: anyhow::Error) {
    let mut q = match queue.lock() {
        Ok(q) => q,
        Err(p) => p.into_inner(),
    };
    if q.failed.is_none() {
        q.failed = Some(e);
    }
    drop(q);
    wake.notify_all();
}

fn run_cell(
    c: &Cell,
    cells: &[Cell],
    datasets: &[Dataset],
    truths: &[Option<mtrec_truth::GroundTruth>],
    device: &Device,
) -> Result<CellRecord> {
    let d = &datasets[c.dataset];
    let t0 = Instant::now();
    let build = mtrec_models::builder(c.model.clone(), c.model_config.clone());
    // A stale result must not survive a recomputation.
    let _ = std::fs::remove_file(c.dir.join(CELL_FILE));
    let truth = truths[c.dataset].as_ref();
    let mut rec = CellRecord {
        hash: c.hash.clone(),
        dataset: d.name.clone(),
        model: c.model.clone(),
        cell: match c.kind {
            CellKind::Reward(k) => format!("reward-{}", k.as_str()),
            CellKind::Train(v, _) => v.as_str().to_owned(),
        },
        seed: 0,
        seconds: 0.0,
        identity: c.identity.clone(),
        train: None,
        reward: None,
        ranking: None,
        recovery: None,
    };
    match c.kind {
        CellKind::Reward(_) => {
            let rc = c.reward.as_ref().context("reward cell without settings")?;
            rec.seed = rc.seed;
            let resume = match mtrec_reward::RewardRunConfig::read(&c.dir) {
                Ok(old) => old.model == c.model && old.reward == *rc,
                Err(_) => false,
            };
            let out = mtrec_reward::fit_reward(
                &c.dir,
                &c.model,
                c.model_config.clone(),
                &build,
                &d.ds,
                &d.dir,
                rc,
                &mtrec_reward::FitOptions {
                    device: device.clone(),
                    progress: false,
                    resume,
                    force: !resume,
                    stop_after: None,
                },
            )?;
            let m = out
                .metrics
                .context("the reward fit stopped before writing its rewards")?;
            let fig_dir = c.dir.join("figure3");
            let fig = mtrec_reward::inspect_rewards(
                &c.dir.join(mtrec_reward::fit::files::REWARDS),
                &fig_dir,
            )?;
            rec.reward = Some(RewardRecord {
                q_test_auc: m.q_test_auc,
                train_positive_misorder: m.train_positive_misorder,
                final_loss: m.final_loss,
                steps: m.steps,
                step_trend: fig.step_trend,
                figure3: fig_dir,
            });
            if let Some(t) = &truth {
                let r = mtrec_truth::evaluate_reward_run(&c.dir, &d.ds, &build, t, device)?;
                rec.recovery = Some(serde_json::to_value(&r)?);
            }
        }
        CellKind::Train(_, seed) => {
            let t = c.train.clone().context("train cell without settings")?;
            rec.seed = seed;
            let rewards = c
                .needs
                .map(|n| cells[n].dir.join(mtrec_reward::fit::files::REWARDS));
            let rcfg = mtrec_train::RunConfig {
                model: c.model.clone(),
                model_config: c.model_config.clone(),
                data: d.dir.clone(),
                rewards,
                train: t,
            };
            let resume = match mtrec_train::RunConfig::read(&c.dir) {
                Ok(old) => {
                    old.model == rcfg.model
                        && old.model_config == rcfg.model_config
                        && old.train == rcfg.train
                        && old.rewards.is_some() == rcfg.rewards.is_some()
                        && c.dir.join(mtrec_train::run::files::CHECKPOINT).exists()
                }
                Err(_) => false,
            };
            let m = mtrec_train::train_run(
                &c.dir,
                &rcfg,
                &d.ds,
                &build,
                &mtrec_train::RunOptions {
                    resume,
                    force: !resume,
                    progress: mtrec_train::Progress::Hidden,
                    device: device.clone(),
                    ncis: Default::default(),
                },
            )?;
            rec.train = Some(TrainRecord {
                auc: m.test.auc,
                auc_all_steps: m.test.auc_all_steps,
                gauc: m.test.gauc,
                logloss: m.test.logloss,
                ncis: m.test.ncis,
                ncis_init: m.test.ncis_init,
                delta_ncis: m.test.delta_ncis,
                ess: m.test.ess,
                steps: m.training.steps,
                samples_per_s: m.training.samples_per_s,
            });
            if let (Some(truth), Some(spec)) = (&truth, &c.ranking) {
                let rk = mtrec_truth::RankingConfig {
                    candidates: spec.candidates,
                    k: spec.top_k,
                    seed: c.ranking_seed,
                    max_steps_per_user: spec.steps_per_user,
                };
                let r = mtrec_truth::evaluate_train_run(&c.dir, &d.ds, &build, truth, &rk, device)?;
                rec.ranking = Some(serde_json::to_value(&r)?);
            }
        }
    }
    rec.seconds = t0.elapsed().as_secs_f64();
    let json = serde_json::to_vec_pretty(&rec)?;
    write_atomic(&c.dir.join(CELL_FILE), &json)?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grid small enough for the test suite: the `tiny` world, one backbone, two seeds, a few
    /// steps per cell.
    fn tiny_config(dir: &Path) -> PathBuf {
        let text = r#"
profile: smoke
datasets:
  - name: Tiny
    synth: tiny
models: [widedeep]
variants: [plain, irl, mtrec]
seeds: [1, 2]
kappa: 0.2
data_seed: 7
reward_seed: 7
profiles:
  smoke:
    train: {epochs: 1, max_steps: 4, batch_size: 32, eval_batch_size: 256}
    reward: {base: smoke, steps: 4, batch_size: 32, eval_batch_size: 256}
    models:
      widedeep: {embedding_dim: 4, hidden: [8]}
    ranking: {candidates: 5, top_k: 2, steps_per_user: 1}
"#;
        let p = dir.join("table1.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn args(dir: &Path, only: &[&str]) -> Args {
        Args {
            config: tiny_config(dir),
            profile: None,
            seeds: None,
            datasets: vec![],
            only: only.iter().map(|s| s.to_string()).collect(),
            runs: dir.join("runs"),
            out: dir.join("results"),
            dry_run: false,
            report_only: false,
            device: "cpu".into(),
            jobs: None,
        }
    }

    fn stamps(runs: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
        let mut v = Vec::new();
        for m in [
            "reward-iq-learn",
            "reward-qr-iql",
            "plain-s1",
            "plain-s2",
            "irl-s1",
            "irl-s2",
            "mtrec-s1",
            "mtrec-s2",
        ] {
            let p = runs.join("Tiny/widedeep").join(m).join(CELL_FILE);
            if let Ok(meta) = std::fs::metadata(&p) {
                v.push((p, meta.modified().unwrap()));
            }
        }
        v
    }

    #[test]
    fn grid_runs_resumes_and_reports() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // Only the plain runs: no reward fit is needed.
        run(args(dir, &["plain"])).unwrap();
        let first = stamps(&dir.join("runs"));
        assert_eq!(first.len(), 2, "{first:?}");
        // The whole grid: the finished plain cells are kept, the rest runs.
        run(args(dir, &[])).unwrap();
        let second = stamps(&dir.join("runs"));
        assert_eq!(second.len(), 8);
        for (p, t) in &first {
            assert!(
                second.contains(&(p.clone(), *t)),
                "{} was recomputed",
                p.display()
            );
        }
        // Nothing left to do: nothing is rewritten.
        run(args(dir, &[])).unwrap();
        assert_eq!(stamps(&dir.join("runs")), second);

        let md = std::fs::read_to_string(dir.join("results/table1.md")).unwrap();
        assert!(md.contains("| Wide&Deep-MTRec |"), "{md}");
        assert!(md.contains("simulator preset tiny"), "{md}");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("results/table1.json")).unwrap())
                .unwrap();
        assert_eq!(json["cells_finished"], 8);
        let rows = json["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        for r in rows {
            let c = &r["cells"][0];
            assert_eq!(c["auc"]["n"], 2, "{c}");
            let auc = c["auc"]["mean"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&auc));
            assert!(c["true_reward_at_k"]["mean"].as_f64().unwrap().is_finite());
        }
        let paired = json["paired"].as_array().unwrap();
        assert_eq!(paired.len(), 3);
        assert!(json["rewards"].as_array().unwrap().len() == 2);
        let csv = std::fs::read_to_string(dir.join("results/table1.csv")).unwrap();
        assert!(
            csv.lines()
                .any(|l| l.starts_with("Tiny,widedeep,mtrec,auc,")),
            "{csv}"
        );
        assert!(dir.join("results/table1-rq3/Tiny/widedeep-qr-iql").is_dir());

        // A cell killed after its checkpoint but before `cell.json` resumes from the checkpoint
        // and ends where the uninterrupted cell did.
        let killed = dir.join("runs/Tiny/widedeep/mtrec-s1");
        let old: CellRecord =
            serde_json::from_slice(&std::fs::read(killed.join(CELL_FILE)).unwrap()).unwrap();
        std::fs::remove_file(killed.join(CELL_FILE)).unwrap();
        std::fs::remove_file(killed.join("metrics.json")).unwrap();
        run(args(dir, &["mtrec"])).unwrap();
        let new: CellRecord =
            serde_json::from_slice(&std::fs::read(killed.join(CELL_FILE)).unwrap()).unwrap();
        let (a, b) = (old.train.unwrap(), new.train.unwrap());
        assert_eq!(
            (a.auc, a.delta_ncis, a.steps),
            (b.auc, b.delta_ncis, b.steps)
        );
        assert_eq!(old.ranking, new.ranking);

        // A changed setting recomputes exactly the cells it defines: kappa leaves plain alone.
        let before = stamps(&dir.join("runs"));
        let a = args(dir, &[]);
        let text = std::fs::read_to_string(&a.config)
            .unwrap()
            .replace("kappa: 0.2", "kappa: 0.5");
        let a2 = Args {
            config: dir.join("edited.yaml"),
            ..a
        };
        std::fs::write(&a2.config, text).unwrap();
        run(a2).unwrap();
        let after = stamps(&dir.join("runs"));
        for ((p, t0), (_, t1)) in before.iter().zip(&after) {
            let name = p
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let kept = t0 == t1;
            let should_keep = name.starts_with("plain") || name.starts_with("reward");
            assert_eq!(kept, should_keep, "{name}");
        }
    }

    /// Every cell's record, by its folder under `runs`, without the timings.
    fn results(runs: &Path) -> Vec<(PathBuf, serde_json::Value)> {
        let mut v: Vec<_> = stamps(runs)
            .into_iter()
            .map(|(p, _)| {
                let mut j: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                j["seconds"] = serde_json::Value::Null;
                if let Some(t) = j.get_mut("train").filter(|t| t.is_object()) {
                    t["samples_per_s"] = serde_json::Value::Null;
                }
                (p.strip_prefix(runs).unwrap().to_path_buf(), j)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn cells_in_parallel_give_the_results_of_one_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let one = tmp.path().join("one");
        let two = tmp.path().join("two");
        std::fs::create_dir_all(&one).unwrap();
        std::fs::create_dir_all(&two).unwrap();
        run(Args {
            jobs: Some(1),
            ..args(&one, &[])
        })
        .unwrap();
        run(Args {
            jobs: Some(3),
            ..args(&two, &[])
        })
        .unwrap();
        let (a, b) = (results(&one.join("runs")), results(&two.join("runs")));
        assert_eq!(a.len(), 8);
        for ((pa, ja), (pb, jb)) in a.iter().zip(&b) {
            assert_eq!(pa, pb);
            // Records name their own run folders (the RQ3 figures): compare the rest.
            let strip = |j: &serde_json::Value| {
                let mut j = j.clone();
                if let Some(r) = j.get_mut("reward").filter(|r| r.is_object()) {
                    r["figure3"] = serde_json::Value::Null;
                }
                j
            };
            assert_eq!(strip(ja), strip(jb), "{}", pa.display());
        }
        let e = run(Args {
            jobs: Some(0),
            ..args(&one, &[])
        })
        .unwrap_err();
        assert!(e.to_string().contains("--jobs"), "{e}");
    }

    #[test]
    fn only_names_must_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let e = run(args(tmp.path(), &["gpt"])).unwrap_err();
        assert!(e.to_string().contains("--only gpt"), "{e}");
    }
}
