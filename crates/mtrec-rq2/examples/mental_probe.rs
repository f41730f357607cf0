//! What a fitted RQ2 mental reward pays, by click count, under a few fixed recommender policies:
//! the expert's constant action with noise, uniform random actions and the all-zero action.
//!
//! ```sh
//! cargo run -p mtrec-rq2 --example mental_probe -- runs/fig2/full/mental-<fp>.safetensors \
//!     [../shared/data/virtualtaobao/virtualtb_v0.safetensors]
//! ```
//!
//! The weights must have been fitted with `MentalConfig::default()`'s network and γ (the `full`
//! profile of `experiments/fig2.yaml`). For each policy it prints the pages' mean clicks, the mean
//! `κ·r_mental` (κ = 0.2), and the mean `κ·r_mental` given the page's click count.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use mtrec_rl::Env;
use mtrec_rq2::hook::clicks_of;
use mtrec_rq2::{MentalConfig, MentalReward, VtbEnv};
use mtrec_vtaobao::VirtualTb;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KAPPA: f32 = 0.2;

/// A fixed recommender policy: one 27-dim action per page.
type PolicyFn<'a> = dyn Fn(&mut ChaCha8Rng) -> Vec<f32> + 'a;
const USERS: usize = 64;
const STEPS: usize = 400;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(weights) = args.first() else {
        bail!("usage: mental_probe MENTAL.safetensors [VIRTUALTB.safetensors]");
    };
    let sim = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "../shared/data/virtualtaobao/virtualtb_v0.safetensors".into());
    let meta = std::path::Path::new(weights).with_extension("json");
    let text =
        std::fs::read_to_string(&meta).with_context(|| format!("reading {}", meta.display()))?;
    let saved: serde_json::Value = serde_json::from_str(&text)?;
    let constant: Vec<f32> = serde_json::from_value(saved[0]["constant"]["action"].clone())
        .context("the saved expert summary has no constant action")?;

    let device = Device::Cpu;
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let model = MentalReward::new(MentalConfig::default(), vb)?;
    varmap.load(weights)?;
    let sim = Arc::new(VirtualTb::load(std::path::Path::new(&sim), &device)?);

    let policies: [(&str, Box<PolicyFn>); 4] = [
        ("expert constant", Box::new(|_| constant.clone())),
        (
            "constant + N(0, 0.3)",
            Box::new(|rng| {
                constant
                    .iter()
                    .map(|&a| (a + 0.3 * gauss(rng)).clamp(-1.0, 1.0))
                    .collect()
            }),
        ),
        (
            "uniform random",
            Box::new(|rng| (0..27).map(|_| rng.random_range(-1.0..1.0)).collect()),
        ),
        ("all zero", Box::new(|_| vec![0.0; 27])),
    ];
    println!(
        "| policy | clicks per page | mean κ·r_mental | κ·r_mental given clicks 0, 1, …, 10 (pages) |"
    );
    println!("|---|---:|---:|---|");
    for (name, policy) in &policies {
        let mut env = VtbEnv::new(sim.clone(), USERS, 11)?;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut by_clicks = [(0.0f64, 0u64); 11];
        let (mut clicks_sum, mut extra_sum, mut pages) = (0.0f64, 0.0f64, 0u64);
        for _ in 0..STEPS {
            let obs = env.obs().to_vec();
            let actions: Vec<f32> = (0..USERS).flat_map(|_| policy(&mut rng)).collect();
            let step = env.step(&actions).map_err(|e| anyhow::anyhow!("{e}"))?;
            let clicks = step
                .rewards
                .iter()
                .map(|&r| clicks_of(r).map_err(|e| anyhow::anyhow!("{e}")))
                .collect::<Result<Vec<_>>>()?;
            let done: Vec<f32> = step.dones.iter().map(|&d| f32::from(u8::from(d))).collect();
            let r = model.rewards(&obs, &actions, &clicks, &step.next_obs, &actions, &done)?;
            for (&c, &x) in clicks.iter().zip(&r) {
                let e = f64::from(KAPPA * x);
                by_clicks[c as usize].0 += e;
                by_clicks[c as usize].1 += 1;
                clicks_sum += f64::from(c);
                extra_sum += e;
                pages += 1;
            }
        }
        let cells: Vec<String> = by_clicks
            .iter()
            .map(|&(s, n)| {
                if n == 0 {
                    "–".to_owned()
                } else {
                    format!("{:+.2} ({n})", s / n as f64)
                }
            })
            .collect();
        println!(
            "| {name} | {:.2} | {:+.3} | {} |",
            clicks_sum / pages as f64,
            extra_sum / pages as f64,
            cells.join(", ")
        );
    }
    Ok(())
}

/// A standard normal draw (Box–Muller).
fn gauss(rng: &mut ChaCha8Rng) -> f32 {
    let u: f32 = rng.random_range(f32::EPSILON..1.0);
    let v: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}
