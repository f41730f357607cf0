//! Figure 2: eCTR training curves of each (algorithm, variant) with 95% confidence bands over
//! seeds, as CSV, JSON, SVG and a Markdown table with the paper's numbers beside ours.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, Rq2Error};

/// One evaluation of one run: the deterministic policy over a fixed number of test episodes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    /// Environment steps (pages) trained on so far.
    pub env_steps: u64,
    /// eCTR as the paper defines it: the mean over episodes of clicks / (10 · pages).
    pub ectr: f64,
    /// eCTR as the simulator's own example computes it: total clicks / (10 · total pages).
    pub ectr_ratio: f64,
}

/// The curve of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// `ppo` or `sac`.
    pub algo: String,
    /// `plain` (env reward) or `mtrec` (env reward + κ·mental reward).
    pub variant: String,
    pub seed: u64,
    pub points: Vec<EvalPoint>,
}

/// Mean and 95% t-interval over seeds at one evaluation point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BandPoint {
    pub env_steps: u64,
    pub mean: f64,
    /// Half width of the 95% t-interval (0 with one seed).
    pub half_width: f64,
    pub ratio_mean: f64,
    pub ratio_half_width: f64,
    pub seeds: usize,
}

/// The band of one (algorithm, variant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub algo: String,
    pub variant: String,
    pub points: Vec<BandPoint>,
}

/// The paper's final eCTR (§5.2): (algorithm, without, with the mental reward).
pub const PAPER: [(&str, f64, f64); 2] = [("ppo", 0.5435, 0.678), ("sac", 0.7055, 0.909)];

fn interval(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    match mtrec_eval::mean_t_interval(v, 0.95) {
        Ok(ci) => (ci.mean, ci.half_width),
        Err(_) => (mean, 0.0),
    }
}

/// Groups the curves by (algorithm, variant) and averages them over seeds point by point (the
/// runs of a group evaluate at the same steps; a point missing in some seed uses the seeds that
/// have it).
pub fn bands(curves: &[Curve]) -> Vec<Band> {
    let mut groups: BTreeMap<(String, String), BTreeMap<u64, Vec<EvalPoint>>> = BTreeMap::new();
    for c in curves {
        let g = groups
            .entry((c.algo.clone(), c.variant.clone()))
            .or_default();
        for p in &c.points {
            g.entry(p.env_steps).or_default().push(*p);
        }
    }
    groups
        .into_iter()
        .map(|((algo, variant), by_step)| Band {
            algo,
            variant,
            points: by_step
                .into_iter()
                .map(|(env_steps, ps)| {
                    let e: Vec<f64> = ps.iter().map(|p| p.ectr).collect();
                    let r: Vec<f64> = ps.iter().map(|p| p.ectr_ratio).collect();
                    let (mean, half_width) = interval(&e);
                    let (ratio_mean, ratio_half_width) = interval(&r);
                    BandPoint {
                        env_steps,
                        mean,
                        half_width,
                        ratio_mean,
                        ratio_half_width,
                        seeds: ps.len(),
                    }
                })
                .collect(),
        })
        .collect()
}

/// Every run's every point as CSV: `algo,variant,seed,env_steps,ectr,ectr_ratio`.
pub fn curves_csv(curves: &[Curve]) -> String {
    let mut s = String::from("algo,variant,seed,env_steps,ectr,ectr_ratio\n");
    for c in curves {
        for p in &c.points {
            let _ = writeln!(
                s,
                "{},{},{},{},{:.6},{:.6}",
                c.algo, c.variant, c.seed, p.env_steps, p.ectr, p.ectr_ratio
            );
        }
    }
    s
}

/// The bands as CSV: `algo,variant,env_steps,seeds,ectr_mean,ectr_ci95,ratio_mean,ratio_ci95`.
pub fn bands_csv(bands: &[Band]) -> String {
    let mut s =
        String::from("algo,variant,env_steps,seeds,ectr_mean,ectr_ci95,ratio_mean,ratio_ci95\n");
    for b in bands {
        for p in &b.points {
            let _ = writeln!(
                s,
                "{},{},{},{},{:.6},{:.6},{:.6},{:.6}",
                b.algo,
                b.variant,
                p.env_steps,
                p.seeds,
                p.mean,
                p.half_width,
                p.ratio_mean,
                p.ratio_half_width
            );
        }
    }
    s
}

/// Final values per run (the last evaluation point) for the paired comparison.
fn finals(curves: &[Curve], algo: &str, variant: &str) -> BTreeMap<u64, EvalPoint> {
    curves
        .iter()
        .filter(|c| c.algo == algo && c.variant == variant)
        .filter_map(|c| c.points.last().map(|p| (c.seed, *p)))
        .collect()
}

/// The Markdown summary: final eCTR per (algorithm, variant) with 95% CIs, the paired
/// with − without difference over seeds, and the paper's values.
pub fn markdown(curves: &[Curve], header: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# RQ2: Virtual Taobao, RL with and without the mental reward\n"
    );
    md.push_str(header);
    md.push_str(
        "\n| algorithm | variant | final eCTR (per-episode mean) | final eCTR (ratio of sums) | seeds | paper |\n\
         |---|---|---|---|---:|---:|\n",
    );
    for (algo, paper_plain, paper_mtrec) in PAPER {
        for (variant, paper) in [("plain", paper_plain), ("mtrec", paper_mtrec)] {
            let f = finals(curves, algo, variant);
            if f.is_empty() {
                continue;
            }
            let e: Vec<f64> = f.values().map(|p| p.ectr).collect();
            let r: Vec<f64> = f.values().map(|p| p.ectr_ratio).collect();
            let (m, h) = interval(&e);
            let (rm, rh) = interval(&r);
            let _ = writeln!(
                md,
                "| {} | {} | {m:.4} ± {h:.4} | {rm:.4} ± {rh:.4} | {} | {paper:.4} |",
                algo.to_uppercase(),
                if variant == "plain" {
                    "without"
                } else {
                    "with mental reward (κ·r_mental)"
                },
                f.len()
            );
        }
    }
    md.push_str(
        "\n| algorithm | with − without, paired by seed (per-episode eCTR) | seeds where with > without | paper |\n\
         |---|---|---:|---:|\n",
    );
    for (algo, paper_plain, paper_mtrec) in PAPER {
        let a = finals(curves, algo, "mtrec");
        let b = finals(curves, algo, "plain");
        let d: Vec<f64> = a
            .iter()
            .filter_map(|(s, p)| b.get(s).map(|q| p.ectr - q.ectr))
            .collect();
        if d.is_empty() {
            continue;
        }
        let (m, h) = interval(&d);
        let _ = writeln!(
            md,
            "| {} | {m:+.4} ± {h:.4} | {}/{} | {:+.4} |",
            algo.to_uppercase(),
            d.iter().filter(|x| **x > 0.0).count(),
            d.len(),
            paper_mtrec - paper_plain
        );
    }
    md
}

/// Figure 2 as SVG: one panel per algorithm, the mean per-episode eCTR of each variant over
/// environment steps with its 95% band.
pub fn svg(bands: &[Band]) -> Result<String> {
    let err = |e: &dyn std::fmt::Display| Rq2Error::Data(format!("drawing Figure 2 failed: {e}"));
    let algos: Vec<&str> = PAPER
        .iter()
        .map(|p| p.0)
        .filter(|a| bands.iter().any(|b| b.algo == *a))
        .collect();
    let mut out = String::new();
    {
        let width = 560 * algos.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut out, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let panels = root.split_evenly((1, algos.len().max(1)));
        for (panel, algo) in panels.iter().zip(&algos) {
            let mine: Vec<&Band> = bands.iter().filter(|b| b.algo == *algo).collect();
            let max_x = mine
                .iter()
                .flat_map(|b| b.points.iter().map(|p| p.env_steps))
                .max()
                .unwrap_or(1)
                .max(1) as f64;
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    format!("{}: eCTR during training", algo.to_uppercase()),
                    ("sans-serif", 18),
                )
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(48)
                .build_cartesian_2d(0f64..max_x, 0f64..1f64)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc("environment steps")
                .y_desc("eCTR (per-episode mean)")
                .draw()
                .map_err(|e| err(&e))?;
            for b in mine {
                let colour = if b.variant == "mtrec" { RED } else { BLUE };
                let upper: Vec<(f64, f64)> = b
                    .points
                    .iter()
                    .map(|p| (p.env_steps as f64, (p.mean + p.half_width).min(1.0)))
                    .collect();
                let lower: Vec<(f64, f64)> = b
                    .points
                    .iter()
                    .rev()
                    .map(|p| (p.env_steps as f64, (p.mean - p.half_width).max(0.0)))
                    .collect();
                let polygon: Vec<(f64, f64)> = upper.into_iter().chain(lower).collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(polygon, colour.mix(0.2))))
                    .map_err(|e| err(&e))?;
                let label = if b.variant == "mtrec" {
                    "with mental reward"
                } else {
                    "without"
                };
                chart
                    .draw_series(LineSeries::new(
                        b.points.iter().map(|p| (p.env_steps as f64, p.mean)),
                        colour.stroke_width(2),
                    ))
                    .map_err(|e| err(&e))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(algo: &str, variant: &str, seed: u64, ys: &[f64]) -> Curve {
        Curve {
            algo: algo.into(),
            variant: variant.into(),
            seed,
            points: ys
                .iter()
                .enumerate()
                .map(|(i, &y)| EvalPoint {
                    env_steps: 100 * i as u64,
                    ectr: y,
                    ectr_ratio: y / 2.0,
                })
                .collect(),
        }
    }

    #[test]
    fn bands_average_over_seeds_with_t_intervals() {
        let cs = [
            curve("ppo", "plain", 1, &[0.1, 0.2]),
            curve("ppo", "plain", 2, &[0.3, 0.4]),
            curve("ppo", "mtrec", 1, &[0.5, 0.6]),
        ];
        let b = bands(&cs);
        assert_eq!(b.len(), 2);
        let plain = b.iter().find(|b| b.variant == "plain").unwrap();
        assert_eq!(plain.points.len(), 2);
        assert!((plain.points[1].mean - 0.3).abs() < 1e-12);
        // two values 0.2, 0.4: s = 0.1414, t(0.975, 1) = 12.706
        let expect = 12.706_204_736 * (0.02f64).sqrt() / 2f64.sqrt();
        assert!((plain.points[1].half_width - expect).abs() < 1e-6);
        assert!((plain.points[1].ratio_mean - 0.15).abs() < 1e-12);
        let mtrec = b.iter().find(|b| b.variant == "mtrec").unwrap();
        assert_eq!(mtrec.points[0].half_width, 0.0);
        assert_eq!(mtrec.points[0].seeds, 1);
    }

    #[test]
    fn markdown_pairs_by_seed_and_quotes_the_paper() {
        let cs = [
            curve("sac", "plain", 1, &[0.1, 0.5]),
            curve("sac", "plain", 2, &[0.1, 0.6]),
            curve("sac", "mtrec", 1, &[0.1, 0.7]),
            curve("sac", "mtrec", 2, &[0.1, 0.7]),
        ];
        let md = markdown(&cs, "");
        assert!(md.contains("0.7055"), "{md}");
        assert!(md.contains("0.9090"), "{md}");
        // differences 0.2 and 0.1: mean +0.15, both positive
        assert!(md.contains("+0.1500"), "{md}");
        assert!(md.contains("| 2/2 |"), "{md}");
        assert!(!md.contains("PPO"), "no PPO runs, no PPO rows: {md}");
        let csv = curves_csv(&cs);
        assert_eq!(csv.lines().count(), 1 + 8);
        let svg = svg(&bands(&cs)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("SAC"));
    }
}
