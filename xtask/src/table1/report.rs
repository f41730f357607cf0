//! The report of `reproduce-table1`: `table1.md` (laid out like the paper's Table 1, the paper's
//! value beside each cell), `table1.csv`, `table1.json`, and the RQ3 figures of every reward fit.
//!
//! Cells are summarised as mean ± the half-width of a 95% Student-t interval over seeds. Variants
//! are compared **paired by seed** (within a seed they share initial weights, validation users and
//! shuffles): for each backbone the mean paired difference with its 95% interval and the number of
//! seeds where it is positive. The verdict on each of the paper's claims rests on those intervals.

use std::path::{Path, PathBuf};

use anyhow::Result;
use mtrec_data::io::write_atomic;
use serde::Serialize;

use super::config::{Table1Config, Variant};
use super::{paper, Cell, CellKind, CellRecord, Dataset};

/// Mean and 95% interval of a metric over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    pub mean: f64,
    /// Half-width of the 95% t interval (NaN for one value).
    pub ci95: f64,
    pub n: usize,
    pub values: Vec<f64>,
    /// Values above zero (for differences).
    pub positive: usize,
}

impl Stat {
    pub fn of(values: Vec<f64>) -> Option<Stat> {
        let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let ci95 = mtrec_eval::mean_t_interval(&values, 0.95)
            .map(|c| c.half_width)
            .unwrap_or(f64::NAN);
        Some(Stat {
            mean,
            ci95,
            n,
            positive: values.iter().filter(|&&v| v > 0.0).count(),
            values,
        })
    }

    fn show(&self, digits: usize) -> String {
        if self.ci95.is_finite() {
            format!("{:.digits$} ± {:.digits$}", self.mean, self.ci95)
        } else {
            format!("{:.digits$}", self.mean)
        }
    }

    fn show_signed(&self, digits: usize) -> String {
        if self.ci95.is_finite() {
            format!(
                "{:+.digits$} ± {:.digits$} ({}/{})",
                self.mean, self.ci95, self.positive, self.n
            )
        } else {
            format!("{:+.digits$} ({}/{})", self.mean, self.positive, self.n)
        }
    }

    /// What the interval says about "the difference is positive".
    pub fn status(&self) -> Status {
        if self.ci95.is_finite() {
            if self.mean - self.ci95 > 0.0 {
                Status::Holds
            } else if self.mean + self.ci95 < 0.0 {
                Status::Fails
            } else if self.mean > 0.0 {
                Status::LeansYes
            } else {
                Status::LeansNo
            }
        } else if self.mean > 0.0 {
            Status::LeansYes
        } else {
            Status::LeansNo
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The 95% interval of the paired difference is above zero.
    Holds,
    /// Positive on average, the interval includes zero.
    LeansYes,
    /// Not positive on average, the interval includes zero.
    LeansNo,
    /// The interval is below zero.
    Fails,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Holds => "holds",
            Status::LeansYes => "not shown (right direction)",
            Status::LeansNo => "not shown (wrong direction)",
            Status::Fails => "fails",
        }
    }
}

/// One dataset's numbers for a row.
#[derive(Debug, Clone, Serialize)]
pub struct CellStats {
    pub dataset: String,
    pub auc: Option<Stat>,
    pub delta_ncis: Option<Stat>,
    pub auc_all_steps: Option<Stat>,
    pub gauc: Option<Stat>,
    pub logloss: Option<Stat>,
    /// Mean true reward of the top k (simulator data).
    pub true_reward_at_k: Option<Stat>,
    pub ndcg_at_k: Option<Stat>,
    pub oracle_reward_at_k: Option<Stat>,
    pub random_reward: Option<Stat>,
    /// `(reward@k − random)/(oracle@k − random)`: 0 = random, 1 = oracle.
    pub gain_captured: Option<Stat>,
    /// The paper's (AUC, NCIS) on the real dataset of this name.
    pub paper: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: String,
    pub variant: Variant,
    pub cells: Vec<CellStats>,
}

/// A paired comparison of two variants of one backbone on one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct Paired {
    pub dataset: String,
    pub model: String,
    /// e.g. "mtrec - plain".
    pub comparison: String,
    pub auc: Option<Stat>,
    pub delta_ncis: Option<Stat>,
    pub true_reward_at_k: Option<Stat>,
}

/// A reward fit's diagnostics.
#[derive(Debug, Clone, Serialize)]
pub struct RewardRow {
    pub dataset: String,
    pub model: String,
    pub kind: String,
    pub q_test_auc: f64,
    pub train_positive_misorder: f64,
    pub step_trend: f64,
    pub spearman_true: Option<f64>,
    pub satisfied_auc: Option<f64>,
    pub calibration_error: Option<f64>,
    pub figure3: PathBuf,
}

/// One of the paper's claims for one backbone on one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub dataset: String,
    pub model: String,
    pub claim: String,
    pub status: Status,
    pub difference: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetInfo {
    pub name: String,
    pub source: String,
    pub real_paper_data: bool,
    pub ground_truth: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub profile: String,
    pub seeds: Vec<u64>,
    pub kappa: f64,
    pub mtrec_version: String,
    pub datasets: Vec<DatasetInfo>,
    pub rows: Vec<Row>,
    pub paired: Vec<Paired>,
    pub verdicts: Vec<Verdict>,
    pub rewards: Vec<RewardRow>,
    pub cells_finished: usize,
    pub cells_total: usize,
    /// Compute time of the finished cells (their own timers).
    pub cell_seconds: f64,
    /// Wall time of this invocation.
    pub wall_seconds: f64,
}

fn num(v: &Option<serde_json::Value>, key: &str) -> Option<f64> {
    v.as_ref()?.get(key)?.as_f64()
}

/// The records of one (dataset, model, variant) by seed.
fn by_seed<'a>(
    cells: &'a [Cell],
    records: &'a [Option<CellRecord>],
    dataset: usize,
    model: &str,
    variant: Variant,
) -> Vec<(u64, &'a CellRecord)> {
    cells
        .iter()
        .zip(records)
        .filter_map(|(c, r)| match (c.kind, r) {
            (CellKind::Train(v, s), Some(r))
                if c.dataset == dataset && c.model == model && v == variant =>
            {
                Some((s, r))
            }
            _ => None,
        })
        .collect()
}

type Metric = fn(&CellRecord) -> Option<f64>;

const AUC: Metric = |r| r.train.as_ref().map(|t| t.auc);
const NCIS: Metric = |r| r.train.as_ref().map(|t| t.delta_ncis);
const TRUE_AT_K: Metric = |r| num(&r.ranking, "mean_reward_at_k");

fn stat(recs: &[(u64, &CellRecord)], f: Metric) -> Option<Stat> {
    Stat::of(recs.iter().filter_map(|(_, r)| f(r)).collect())
}

fn paired(a: &[(u64, &CellRecord)], b: &[(u64, &CellRecord)], f: Metric) -> Option<Stat> {
    let d: Vec<f64> = a
        .iter()
        .filter_map(|(s, ra)| {
            let (_, rb) = b.iter().find(|(sb, _)| sb == s)?;
            Some(f(ra)? - f(rb)?)
        })
        .collect();
    Stat::of(d)
}

pub fn build(
    cfg: &Table1Config,
    datasets: &[Dataset],
    cells: &[Cell],
    records: &[Option<CellRecord>],
    wall_seconds: f64,
) -> Result<Report> {
    let mut rows = Vec::new();
    for model in &cfg.models {
        for &variant in &cfg.variants {
            let mut cs = Vec::new();
            for (di, d) in datasets.iter().enumerate() {
                let recs = by_seed(cells, records, di, model, variant);
                cs.push(CellStats {
                    dataset: d.name.clone(),
                    auc: stat(&recs, AUC),
                    delta_ncis: stat(&recs, NCIS),
                    auc_all_steps: stat(&recs, |r| r.train.as_ref().map(|t| t.auc_all_steps)),
                    gauc: stat(&recs, |r| r.train.as_ref().map(|t| t.gauc)),
                    logloss: stat(&recs, |r| r.train.as_ref().map(|t| t.logloss)),
                    true_reward_at_k: stat(&recs, TRUE_AT_K),
                    ndcg_at_k: stat(&recs, |r| num(&r.ranking, "ndcg_at_k")),
                    oracle_reward_at_k: stat(&recs, |r| num(&r.ranking, "oracle_mean_reward_at_k")),
                    random_reward: stat(&recs, |r| num(&r.ranking, "random_mean_reward")),
                    gain_captured: stat(&recs, |r| num(&r.ranking, "gain_captured_at_k")),
                    paper: paper::value(&d.name, model, variant),
                });
            }
            rows.push(Row {
                model: model.clone(),
                variant,
                cells: cs,
            });
        }
    }
    let mut pairs = Vec::new();
    let mut verdicts = Vec::new();
    let comparisons = [
        (Variant::Irl, Variant::Plain),
        (Variant::Mtrec, Variant::Plain),
        (Variant::Mtrec, Variant::Irl),
    ];
    for (di, d) in datasets.iter().enumerate() {
        for model in &cfg.models {
            for (a, b) in comparisons {
                if !cfg.variants.contains(&a) || !cfg.variants.contains(&b) {
                    continue;
                }
                let ra = by_seed(cells, records, di, model, a);
                let rb = by_seed(cells, records, di, model, b);
                let p = Paired {
                    dataset: d.name.clone(),
                    model: model.clone(),
                    comparison: format!("{} - {}", a.as_str(), b.as_str()),
                    auc: paired(&ra, &rb, AUC),
                    delta_ncis: paired(&ra, &rb, NCIS),
                    true_reward_at_k: paired(&ra, &rb, TRUE_AT_K),
                };
                if a == Variant::Mtrec {
                    let vs = if b == Variant::Plain { "plain" } else { "IRL" };
                    for (metric, s) in [("NCIS", &p.delta_ncis), ("AUC", &p.auc)] {
                        if let Some(s) = s {
                            verdicts.push(Verdict {
                                dataset: d.name.clone(),
                                model: model.clone(),
                                claim: format!("MTRec raises {metric} over {vs}"),
                                status: s.status(),
                                difference: s.show_signed(4),
                            });
                        }
                    }
                }
                pairs.push(p);
            }
        }
    }
    let mut rewards = Vec::new();
    for (c, r) in cells.iter().zip(records) {
        if let (CellKind::Reward(k), Some(r)) = (c.kind, r) {
            if let Some(rr) = &r.reward {
                let cal = r
                    .recovery
                    .as_ref()
                    .and_then(|v| v.get("calibration"))
                    .and_then(|c| c.get("mean_abs_error"))
                    .and_then(|x| x.as_f64());
                rewards.push(RewardRow {
                    dataset: datasets[c.dataset].name.clone(),
                    model: c.model.clone(),
                    kind: k.as_str().to_owned(),
                    q_test_auc: rr.q_test_auc,
                    train_positive_misorder: rr.train_positive_misorder,
                    step_trend: rr.step_trend,
                    spearman_true: num(&r.recovery, "spearman_true"),
                    satisfied_auc: num(&r.recovery, "satisfied_auc"),
                    calibration_error: cal,
                    figure3: rr.figure3.clone(),
                });
            }
        }
    }
    Ok(Report {
        profile: cfg.profile.clone(),
        seeds: cfg.seeds.clone(),
        kappa: cfg.kappa,
        mtrec_version: env!("CARGO_PKG_VERSION").to_owned(),
        datasets: datasets
            .iter()
            .map(|d| DatasetInfo {
                name: d.name.clone(),
                source: d.source.clone(),
                real_paper_data: d.real_paper_data,
                ground_truth: d.world.is_some(),
            })
            .collect(),
        rows,
        paired: pairs,
        verdicts,
        rewards,
        cells_finished: records.iter().filter(|r| r.is_some()).count(),
        cells_total: cells.len(),
        cell_seconds: records.iter().flatten().map(|r| r.seconds).sum(),
        wall_seconds,
    })
}

fn opt(s: &Option<Stat>, digits: usize) -> String {
    s.as_ref()
        .map(|s| s.show(digits))
        .unwrap_or_else(|| "—".into())
}

fn opt_signed(s: &Option<Stat>, digits: usize) -> String {
    s.as_ref()
        .map(|s| s.show_signed(digits))
        .unwrap_or_else(|| "—".into())
}

fn row_name(model: &str, v: Variant) -> String {
    format!("{}{}", paper::display_name(model), v.suffix())
}

impl Report {
    /// The verdict, counted over backbones, per dataset and claim.
    pub fn verdict_text(&self) -> String {
        let mut out = String::new();
        for d in &self.datasets {
            // Each claim once, in the order first met.
            let mut claims: Vec<&str> = Vec::new();
            for v in self.verdicts.iter().filter(|v| v.dataset == d.name) {
                if !claims.contains(&v.claim.as_str()) {
                    claims.push(&v.claim);
                }
            }
            for claim in claims {
                let vs: Vec<&Verdict> = self
                    .verdicts
                    .iter()
                    .filter(|v| v.dataset == d.name && v.claim == claim)
                    .collect();
                let count = |s: Status| vs.iter().filter(|v| v.status == s).count();
                out.push_str(&format!(
                    "{}: \"{claim}\": holds for {} of {} backbones, right direction but not shown for {}, wrong direction for {}, fails for {}\n",
                    d.name,
                    count(Status::Holds),
                    vs.len(),
                    count(Status::LeansYes),
                    count(Status::LeansNo),
                    count(Status::Fails)
                ));
            }
        }
        if out.is_empty() {
            out.push_str(
                "no paired comparisons yet (run at least plain and one aligned variant)\n",
            );
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("# Table 1, reproduced by mtrec\n\n");
        s.push_str(&format!(
            "`cargo xtask reproduce-table1` (profile `{}`, seeds {:?}, κ = {}, mtrec {}): {} of {} cells finished, {:.1} min of compute in the cells.\n\n",
            self.profile,
            self.seeds,
            self.kappa,
            self.mtrec_version,
            self.cells_finished,
            self.cells_total,
            self.cell_seconds / 60.0
        ));
        s.push_str("Data:\n\n");
        for d in &self.datasets {
            s.push_str(&format!("- **{}**: {}\n", d.name, d.source));
        }
        let any_stand_in = self
            .datasets
            .iter()
            .any(|d| !d.real_paper_data && paper::value(&d.name, "din", Variant::Plain).is_some());
        s.push_str("\nEach cell: mean ± half-width of the 95% t interval over seeds; AUC is the last-pair test AUC (DIN/DIEN protocol), NCIS is ΔNCIS (trained minus untrained, as in the paper). In brackets, the paper's value");
        if any_stand_in {
            s.push_str(
                " on the real Amazon data (our column may be a simulated stand-in: see Data)",
            );
        }
        s.push_str(".\n\n");
        // Main table.
        s.push_str("| Model |");
        for d in &self.datasets {
            s.push_str(&format!(" {} AUC | {} NCIS |", d.name, d.name));
        }
        s.push_str("\n|---|");
        for _ in &self.datasets {
            s.push_str("---|---|");
        }
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("| {} |", row_name(&r.model, r.variant)));
            for c in &r.cells {
                let (pa, pn) = match c.paper {
                    Some((a, n)) => (format!(" ({a:.4})"), format!(" ({n:.4})")),
                    None => (String::new(), String::new()),
                };
                s.push_str(&format!(
                    " {}{pa} | {}{pn} |",
                    opt(&c.auc, 4),
                    opt(&c.delta_ncis, 3)
                ));
            }
            s.push('\n');
        }
        // Paired.
        s.push_str("\n## Paired differences (same seed)\n\nMean difference ± 95% interval over seeds, and in brackets the seeds where it is positive.\n\n");
        s.push_str("| Dataset | Model | Comparison | AUC | NCIS |");
        let truth = self.datasets.iter().any(|d| d.ground_truth);
        if truth {
            s.push_str(" true reward of top k |");
        }
        s.push_str("\n|---|---|---|---|---|");
        if truth {
            s.push_str("---|");
        }
        s.push('\n');
        for p in &self.paired {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |",
                p.dataset,
                paper::display_name(&p.model),
                p.comparison,
                opt_signed(&p.auc, 4),
                opt_signed(&p.delta_ncis, 3)
            ));
            if truth {
                s.push_str(&format!(" {} |", opt_signed(&p.true_reward_at_k, 4)));
            }
            s.push('\n');
        }
        // Verdict.
        s.push_str("\n## Verdict on the paper's claims\n\nA claim *holds* for a backbone when the 95% interval of its paired difference is above zero, *fails* when it is below, and is *not shown* otherwise.\n\n");
        for line in self.verdict_text().lines() {
            s.push_str(&format!("- {line}\n"));
        }
        s.push_str("\n| Dataset | Model | Claim | Verdict | Difference |\n|---|---|---|---|---|\n");
        for v in &self.verdicts {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                v.dataset,
                paper::display_name(&v.model),
                v.claim,
                v.status.word(),
                v.difference
            ));
        }
        // Other metrics.
        s.push_str("\n## Other test metrics\n\n| Model | Dataset | all-steps AUC | GAUC | log loss |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            for c in &r.cells {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    row_name(&r.model, r.variant),
                    c.dataset,
                    opt(&c.auc_all_steps, 4),
                    opt(&c.gauc, 4),
                    opt(&c.logloss, 4)
                ));
            }
        }
        if truth {
            s.push_str("\n## Ground-truth alignment (simulator data)\n\nEach test step's candidates ranked by the recommender; the gain is the user's true expected mental reward (`mtrec-truth`).\n\n| Model | Dataset | true reward of top k | NDCG@k | gain captured | oracle top k | random |\n|---|---|---|---|---|---|---|\n");
            for r in &self.rows {
                for c in &r.cells {
                    if c.true_reward_at_k.is_none() {
                        continue;
                    }
                    s.push_str(&format!(
                        "| {} | {} | {} | {} | {} | {} | {} |\n",
                        row_name(&r.model, r.variant),
                        c.dataset,
                        opt(&c.true_reward_at_k, 4),
                        opt(&c.ndcg_at_k, 4),
                        opt(&c.gain_captured, 3),
                        opt(&c.oracle_reward_at_k, 4),
                        opt(&c.random_reward, 4)
                    ));
                }
            }
        }
        if !self.rewards.is_empty() {
            s.push_str("\n## Reward models (RQ3)\n\nQ-net test AUC: the learned user policy as a click predictor on test users. Misordered: training positives with r*(s,P) < r*(s,N). Fig. 3a trend: Spearman of the mean reward of the real action against the step (negative = falls with the step, as the paper's Figure 3a).");
            if truth {
                s.push_str(" On simulator data: Spearman of r*(s,P) with the true reward of held-out engagements, the AUC of r*(s,P) for satisfied against disappointed engagements, and (QR-IQL) the mean |coverage − τ| of the quantiles after an affine fit.");
            }
            s.push_str("\n\n| Dataset | Model | Reward | Q-net test AUC | misordered | Fig. 3a trend | Spearman with truth | satisfied AUC | calibration error | Figure 3 |\n|---|---|---|---|---|---|---|---|---|---|\n");
            let f = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "—".into());
            for r in &self.rewards {
                s.push_str(&format!(
                    "| {} | {} | {} | {:.4} | {:.1}% | {:+.2} | {} | {} | {} | `{}` |\n",
                    r.dataset,
                    paper::display_name(&r.model),
                    r.kind,
                    r.q_test_auc,
                    100.0 * r.train_positive_misorder,
                    r.step_trend,
                    f(r.spearman_true),
                    f(r.satisfied_auc),
                    f(r.calibration_error),
                    r.figure3.display()
                ));
            }
        }
        s
    }

    pub fn csv(&self) -> String {
        let mut s = String::from("dataset,model,variant,metric,mean,ci95,n,values,paper\n");
        for r in &self.rows {
            for c in &r.cells {
                let metrics = [
                    ("auc", &c.auc, c.paper.map(|p| p.0)),
                    ("delta_ncis", &c.delta_ncis, c.paper.map(|p| p.1)),
                    ("auc_all_steps", &c.auc_all_steps, None),
                    ("gauc", &c.gauc, None),
                    ("logloss", &c.logloss, None),
                    ("true_reward_at_k", &c.true_reward_at_k, None),
                    ("ndcg_at_k", &c.ndcg_at_k, None),
                    ("gain_captured_at_k", &c.gain_captured, None),
                ];
                for (name, st, p) in metrics {
                    if let Some(st) = st {
                        let key = [c.dataset.as_str(), &r.model, r.variant.as_str(), name];
                        s.push_str(&csv_row(&key, st, p));
                    }
                }
            }
        }
        for p in &self.paired {
            for (name, st) in [
                ("auc", &p.auc),
                ("delta_ncis", &p.delta_ncis),
                ("true_reward_at_k", &p.true_reward_at_k),
            ] {
                if let Some(st) = st {
                    let metric = format!("{name}_paired_difference");
                    let comparison = p.comparison.replace(' ', "");
                    let key = [p.dataset.as_str(), &p.model, &comparison, &metric];
                    s.push_str(&csv_row(&key, st, None));
                }
            }
        }
        s
    }
}

/// `dataset,model,variant,metric,mean,ci95,n,values,paper` (empty fields where undefined).
fn csv_row(key: &[&str; 4], st: &Stat, paper: Option<f64>) -> String {
    let ci = if st.ci95.is_finite() {
        st.ci95.to_string()
    } else {
        String::new()
    };
    let values: Vec<String> = st.values.iter().map(|v| v.to_string()).collect();
    let paper = paper.map(|x| x.to_string()).unwrap_or_default();
    format!(
        "{},{},{ci},{},{},{paper}\n",
        key.join(","),
        st.mean,
        st.n,
        values.join(";")
    )
}

/// Writes `table1.{md,csv,json}` into `out` and copies each reward fit's Figure 3 into
/// `out/table1-rq3/<dataset>/<model>-<kind>/`.
pub fn write(rep: &Report, out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for (name, bytes) in [
        ("table1.md", rep.markdown().into_bytes()),
        ("table1.csv", rep.csv().into_bytes()),
        ("table1.json", serde_json::to_vec_pretty(rep)?),
    ] {
        let p = out.join(name);
        write_atomic(&p, &bytes)?;
        files.push(p);
    }
    let rq3 = out.join("table1-rq3");
    for r in &rep.rewards {
        let Ok(entries) = std::fs::read_dir(&r.figure3) else {
            continue;
        };
        let dir = rq3.join(&r.dataset).join(format!("{}-{}", r.model, r.kind));
        for e in entries.flatten() {
            let p = e.path();
            if p.is_file() {
                let bytes = std::fs::read(&p)?;
                write_atomic(&dir.join(e.file_name()), &bytes)?;
            }
        }
    }
    if rq3.exists() {
        files.push(rq3);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_matches_hand_values() {
        let s = Stat::of(vec![0.1, 0.2, 0.3]).unwrap();
        assert!((s.mean - 0.2).abs() < 1e-12);
        // t_{0.975, 2} = 4.302653, sd = 0.1.
        assert!((s.ci95 - 4.302653 * 0.1 / 3f64.sqrt()).abs() < 1e-6);
        assert_eq!(s.positive, 3);
        assert_eq!(s.status(), Status::LeansYes); // 0.2 ± 0.248 includes zero
        assert_eq!(
            Stat::of(vec![0.19, 0.2, 0.21]).unwrap().status(),
            Status::Holds
        );
        let s = Stat::of(vec![0.1, -0.2, 0.3]).unwrap();
        assert_eq!(s.status(), Status::LeansYes);
        let s = Stat::of(vec![-0.1, -0.12, -0.11]).unwrap();
        assert_eq!(s.status(), Status::Fails);
        let one = Stat::of(vec![-0.5, f64::NAN]).unwrap();
        assert_eq!((one.n, one.status()), (1, Status::LeansNo));
        assert!(one.ci95.is_nan());
        assert!(Stat::of(vec![]).is_none());
    }
}
