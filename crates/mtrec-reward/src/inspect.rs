//! The paper's Figure 3 on our data, from a rewards file (paper §5.3, method §5.4):
//!
//! * (a) the mean mental reward of the real action, `r*(s, a_real)`, by step (history length)
//!   1..=10, over all samples and over the logged positives;
//! * (b–e) the distributions of the expected and the counterfactual rewards given the real action:
//!   `r*(s,P | P)`, `r*(s,N | P)`, `r*(s,P | N)`, `r*(s,N | N)`.
//!
//! Each plot is an SVG with the CSV behind it; `figure3.json` holds the summary numbers (among
//! them the share of samples whose real action has the lower reward, which the paper reads as a
//! mismatch between behaviour and preference).

use std::path::{Path, PathBuf};

use mtrec_data::io::write_atomic;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RewardError};
use crate::rewards_file::RewardsFile;

/// The columns of a rewards file that Figure 3 needs.
#[derive(Debug, Clone, Default)]
pub struct RewardTable {
    pub step: Vec<u32>,
    pub positive: Vec<bool>,
    pub r_pos: Vec<f32>,
    pub r_neg: Vec<f32>,
}

/// Reads `step`, `positive`, `r_pos`, `r_neg` of a parquet rewards file.
pub fn read_reward_table(path: &Path) -> Result<RewardTable> {
    let f = RewardsFile::open(path)?;
    let t = RewardTable {
        step: f.u32s("step")?,
        positive: f.bools("positive")?,
        r_pos: f.f32s("r_pos")?,
        r_neg: f.f32s("r_neg")?,
    };
    if t.step.is_empty() {
        return Err(f.bad("no rows".into()));
    }
    Ok(t)
}

/// Mean reward of the real action at one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMean {
    pub step: u32,
    pub samples: usize,
    /// Mean `r*(s, a_real)` over the step's samples (positives and negatives).
    pub mean_real: f64,
    /// Mean `r*(s, P)` over the step's logged positives.
    pub mean_positive: f64,
}

/// One histogram of Figure 3 (b–e).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub name: String,
    pub title: String,
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<usize>,
    pub mean: f64,
    pub samples: usize,
}

/// `figure3.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure3 {
    pub rewards_file: PathBuf,
    pub by_step: Vec<StepMean>,
    pub histograms: Vec<Histogram>,
    /// Share of real positives with `r*(s,P) < r*(s,N)`.
    pub positives_preferring_n: f64,
    /// Share of real negatives with `r*(s,N) < r*(s,P)`.
    pub negatives_preferring_p: f64,
    /// Spearman correlation between step (1..=10) and `mean_real`: negative = rewards fall with
    /// the step, as the paper's Figure 3(a) shows on Books.
    pub step_trend: f64,
    /// Files written.
    pub files: Vec<String>,
}

/// Steps shown in panel (a), as in the paper.
pub const STEPS: u32 = 10;
/// Bins of panels (b–e).
pub const BINS: usize = 40;

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut r = vec![0.0; xs.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && xs[idx[j + 1]] == xs[idx[i]] {
            j += 1;
        }
        for k in i..=j {
            r[idx[k]] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (NaN when undefined).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    let (rx, ry) = (ranks(x), ranks(y));
    let (mx, my) = (mean(&rx), mean(&ry));
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

/// Computes Figure 3's numbers.
pub fn figure3(t: &RewardTable, rewards_file: &Path) -> Figure3 {
    let mut by_step = Vec::new();
    for s in 1..=STEPS {
        let mut real = Vec::new();
        let mut pos = Vec::new();
        for i in 0..t.step.len() {
            if t.step[i] != s {
                continue;
            }
            if t.positive[i] {
                real.push(t.r_pos[i] as f64);
                pos.push(t.r_pos[i] as f64);
            } else {
                real.push(t.r_neg[i] as f64);
            }
        }
        if !real.is_empty() {
            by_step.push(StepMean {
                step: s,
                samples: real.len(),
                mean_real: mean(&real),
                mean_positive: mean(&pos),
            });
        }
    }
    let pick = |real_p: bool, reward_p: bool| -> Vec<f64> {
        (0..t.step.len())
            .filter(|&i| t.positive[i] == real_p)
            .map(|i| if reward_p { t.r_pos[i] } else { t.r_neg[i] } as f64)
            .filter(|x| x.is_finite())
            .collect()
    };
    let panels = [
        ("b_rP_given_P", "r*(s,P) | real P (expected)", true, true),
        (
            "c_rN_given_P",
            "r*(s,N) | real P (counterfactual)",
            true,
            false,
        ),
        (
            "d_rP_given_N",
            "r*(s,P) | real N (counterfactual)",
            false,
            true,
        ),
        ("e_rN_given_N", "r*(s,N) | real N (expected)", false, false),
    ];
    let values: Vec<Vec<f64>> = panels.iter().map(|p| pick(p.2, p.3)).collect();
    // One range for all four panels so they can be compared by eye.
    let lo = values
        .iter()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let hi = values
        .iter()
        .flatten()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (lo.min(0.0) - 0.5, lo.max(0.0) + 0.5)
    };
    let histograms = panels
        .iter()
        .zip(&values)
        .map(|(p, v)| {
            let mut counts = vec![0usize; BINS];
            for &x in v {
                let k = (((x - lo) / (hi - lo)) * BINS as f64).floor() as isize;
                counts[k.clamp(0, BINS as isize - 1) as usize] += 1;
            }
            Histogram {
                name: p.0.to_owned(),
                title: p.1.to_owned(),
                lo,
                hi,
                counts,
                mean: mean(v),
                samples: v.len(),
            }
        })
        .collect();
    let share = |real_p: bool| {
        let idx: Vec<usize> = (0..t.step.len())
            .filter(|&i| t.positive[i] == real_p)
            .collect();
        let lower = idx
            .iter()
            .filter(|&&i| {
                if real_p {
                    t.r_pos[i] < t.r_neg[i]
                } else {
                    t.r_neg[i] < t.r_pos[i]
                }
            })
            .count();
        lower as f64 / idx.len().max(1) as f64
    };
    let xs: Vec<f64> = by_step.iter().map(|s| s.step as f64).collect();
    let ys: Vec<f64> = by_step.iter().map(|s| s.mean_real).collect();
    Figure3 {
        rewards_file: rewards_file.to_path_buf(),
        by_step,
        histograms,
        positives_preferring_n: share(true),
        negatives_preferring_p: share(false),
        step_trend: spearman(&xs, &ys),
        files: Vec::new(),
    }
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> RewardError {
    RewardError::Rewards {
        path: path.to_path_buf(),
        message: format!("drawing failed: {e}"),
    }
}

fn svg_step_plot(f: &Figure3, path: &Path) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let ys: Vec<f64> = f
            .by_step
            .iter()
            .flat_map(|s| [s.mean_real, s.mean_positive])
            .filter(|y| y.is_finite())
            .collect();
        let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo).abs() * 0.1).max(1e-3);
        let (lo, hi) = if lo.is_finite() {
            (lo - pad, hi + pad)
        } else {
            (-1.0, 1.0)
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "(a) mean mental reward of the real action by step",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.5f64..(STEPS as f64 + 0.5), lo..hi)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("step (history length)")
            .y_desc("mean r*")
            .draw()
            .map_err(|e| plot_err(path, e))?;
        let real: Vec<(f64, f64)> = f
            .by_step
            .iter()
            .map(|s| (s.step as f64, s.mean_real))
            .collect();
        let pos: Vec<(f64, f64)> = f
            .by_step
            .iter()
            .filter(|s| s.mean_positive.is_finite())
            .map(|s| (s.step as f64, s.mean_positive))
            .collect();
        chart
            .draw_series(LineSeries::new(real.clone(), BLUE.stroke_width(2)))
            .map_err(|e| plot_err(path, e))?
            .label("r*(s, a_real), all samples")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(real.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(LineSeries::new(pos, RED.stroke_width(2)))
            .map_err(|e| plot_err(path, e))?
            .label("r*(s, P), logged positives")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    Ok(svg)
}

fn svg_histograms(f: &Figure3, path: &Path) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let areas = root.split_evenly((2, 2));
        for (area, h) in areas.iter().zip(&f.histograms) {
            let width = (h.hi - h.lo) / BINS as f64;
            let top = h.counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("({}) {}  mean {:.3}", &h.name[..1], h.title, h.mean),
                    ("sans-serif", 15),
                )
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(h.lo..h.hi, 0f64..top)
                .map_err(|e| plot_err(path, e))?;
            chart
                .configure_mesh()
                .x_desc("reward")
                .y_desc("samples")
                .draw()
                .map_err(|e| plot_err(path, e))?;
            chart
                .draw_series(h.counts.iter().enumerate().map(|(k, &c)| {
                    let x0 = h.lo + k as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BLUE.mix(0.6).filled())
                }))
                .map_err(|e| plot_err(path, e))?;
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    Ok(svg)
}

/// Reads a rewards file, computes Figure 3 and writes its SVGs, CSVs and `figure3.json` into `out`.
pub fn inspect_rewards(rewards: &Path, out: &Path) -> Result<Figure3> {
    let table = read_reward_table(rewards)?;
    let mut f = figure3(&table, rewards);
    let write = |name: &str, bytes: &[u8]| -> Result<String> {
        write_atomic(&out.join(name), bytes)?;
        Ok(name.to_owned())
    };
    let mut files = Vec::new();
    let mut csv = String::from("step,samples,mean_real,mean_positive\n");
    for s in &f.by_step {
        csv.push_str(&format!(
            "{},{},{},{}\n",
            s.step, s.samples, s.mean_real, s.mean_positive
        ));
    }
    files.push(write("fig3a_reward_by_step.csv", csv.as_bytes())?);
    files.push(write(
        "fig3a_reward_by_step.svg",
        svg_step_plot(&f, &out.join("fig3a_reward_by_step.svg"))?.as_bytes(),
    )?);
    let mut csv = String::from("panel,bin,lo,hi,count\n");
    for h in &f.histograms {
        let width = (h.hi - h.lo) / BINS as f64;
        for (k, c) in h.counts.iter().enumerate() {
            csv.push_str(&format!(
                "{},{},{},{},{}\n",
                h.name,
                k,
                h.lo + k as f64 * width,
                h.lo + (k + 1) as f64 * width,
                c
            ));
        }
    }
    files.push(write("fig3b-e_reward_histograms.csv", csv.as_bytes())?);
    files.push(write(
        "fig3b-e_reward_histograms.svg",
        svg_histograms(&f, &out.join("fig3b-e_reward_histograms.svg"))?.as_bytes(),
    )?);
    files.push("figure3.json".to_owned());
    f.files = files;
    let json = serde_json::to_vec_pretty(&f).map_err(|e| RewardError::Rewards {
        path: rewards.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(&out.join("figure3.json"), &json)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure3_numbers_by_hand() {
        let t = RewardTable {
            step: vec![1, 1, 2, 2, 11],
            positive: vec![true, false, true, false, true],
            r_pos: vec![1.0, 0.5, -1.0, 2.0, 9.0],
            r_neg: vec![0.0, 0.25, 0.0, 1.0, 0.0],
        };
        let f = figure3(&t, Path::new("x"));
        assert_eq!(f.by_step.len(), 2, "step 11 is outside the first ten");
        assert_eq!(f.by_step[0].mean_real, (1.0 + 0.25) / 2.0);
        assert_eq!(f.by_step[0].mean_positive, 1.0);
        assert_eq!(f.by_step[1].mean_real, (-1.0 + 1.0) / 2.0);
        // Positives: (1 vs 0) ok, (−1 vs 0) prefers N, (9 vs 0) ok → 1/3.
        assert!((f.positives_preferring_n - 1.0 / 3.0).abs() < 1e-12);
        // Negatives: (0.25 < 0.5) and (1 < 2) both prefer P.
        assert_eq!(f.negatives_preferring_p, 1.0);
        assert_eq!(f.histograms.len(), 4);
        assert_eq!(f.histograms[0].samples, 3);
        assert_eq!(f.histograms[0].counts.iter().sum::<usize>(), 3);
        assert_eq!(f.step_trend, -1.0);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 5.0, 9.0]) - 1.0).abs() < 1e-12);
    }
}
