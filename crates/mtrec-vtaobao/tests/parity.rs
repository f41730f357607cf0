//! Parity of the three networks with the PyTorch reference (`fixtures.safetensors`: 64 inputs
//! through the original `nn.Sequential` models, torch 2.15 CPU).
//!
//! Tolerances (spec §3): logits `|a − b| ≤ 1e-5 · max(1, |b|)` (the click logits reach ≈ 4e4 and
//! candle's gemm accumulates in another order than torch's), probabilities 1e-4 absolute.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use mtrec_vtaobao::{grouped_softmax, softmax_f64, VirtualTb, CLICK_CLASSES, USER_GROUPS};

const REL: f32 = 1e-5;
const ABS_P: f64 = 1e-4;

struct Shared {
    model: VirtualTb,
    fx: HashMap<String, Tensor>,
}

fn shared() -> Option<Shared> {
    let w = mtrec_data::testing::shared_path("data/virtualtaobao/virtualtb_v0.safetensors")?;
    let f = mtrec_data::testing::shared_path("data/virtualtaobao/fixtures.safetensors")?;
    Some(Shared {
        model: VirtualTb::load(&w, &Device::Cpu).expect("load the simulator"),
        fx: candle_core::safetensors::load(&f, &Device::Cpu).expect("load the fixtures"),
    })
}

impl Shared {
    fn t(&self, name: &str) -> &Tensor {
        self.fx
            .get(name)
            .unwrap_or_else(|| panic!("fixture `{name}` missing"))
    }
    fn rows(&self, name: &str) -> Vec<Vec<f32>> {
        self.t(name).to_vec2::<f32>().expect("2-d f32 fixture")
    }
}

/// Largest `|a − b| / max(1, |b|)`; asserts it is within `REL`.
fn check_logits(what: &str, got: &Tensor, want: &[Vec<f32>]) -> f32 {
    let got = got.to_vec2::<f32>().expect("2-d logits");
    assert_eq!(got.len(), want.len(), "{what}: rows");
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len(), "{what}: columns");
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((a - b).abs() / b.abs().max(1.0));
        }
    }
    eprintln!("{what}: max relative error {worst:e}");
    assert!(worst <= REL, "{what}: relative error {worst} > {REL}");
    worst
}

/// Largest absolute difference of probabilities; asserts it is within `ABS_P`.
fn check_probs(what: &str, got: &[Vec<f64>], want: &[Vec<f32>]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    let mut worst = 0f64;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len(), "{what}: columns");
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((a - f64::from(*b)).abs());
        }
    }
    eprintln!("{what}: max absolute error {worst:e}");
    assert!(worst <= ABS_P, "{what}: absolute error {worst} > {ABS_P}");
    worst
}

#[test]
fn generator_matches_torch() {
    let Some(s) = shared() else { return };
    let logits = s.model.generator_logits(s.t("gen_z")).unwrap();
    check_logits("gen_logits", &logits, &s.rows("gen_logits"));
    // Grouped softmax twice: on the tensor side (f32) and as the sampler computes it (f64).
    let want = s.rows("gen_grouped_softmax");
    let tensor_side: Vec<Vec<f64>> = grouped_softmax(&logits)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(f64::from).collect())
        .collect();
    check_probs("gen_grouped_softmax (tensor)", &tensor_side, &want);
    let sampler_side: Vec<Vec<f64>> = logits
        .to_vec2::<f32>()
        .unwrap()
        .iter()
        .map(|row| {
            let mut out = Vec::with_capacity(row.len());
            let mut off = 0;
            for g in USER_GROUPS {
                out.extend(softmax_f64(&row[off..off + g]));
                off += g;
            }
            out
        })
        .collect();
    check_probs("gen_grouped_softmax (f64)", &sampler_side, &want);
}

#[test]
fn leave_model_matches_torch() {
    let Some(s) = shared() else { return };
    let logits = s.model.leave_logits(s.t("users_onehot")).unwrap();
    check_logits("leave_logits", &logits, &s.rows("leave_logits"));
    let probs: Vec<Vec<f64>> = logits
        .to_vec2::<f32>()
        .unwrap()
        .iter()
        .map(|r| softmax_f64(r))
        .collect();
    check_probs("leave_probs", &probs, &s.rows("leave_probs"));
}

#[test]
fn click_model_matches_torch() {
    let Some(s) = shared() else { return };
    let logits = s
        .model
        .action_logits(s.t("users_onehot"), s.t("act_page"), s.t("act_weight"))
        .unwrap();
    check_logits("act_logits", &logits, &s.rows("act_logits"));
    let rows = logits.to_vec2::<f32>().unwrap();
    let clicks: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| softmax_f64(&r[..CLICK_CLASSES]))
        .collect();
    let b: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| softmax_f64(&r[CLICK_CLASSES..]))
        .collect();
    check_probs("act_click_probs", &clicks, &s.rows("act_click_probs"));
    check_probs("act_b_probs", &b, &s.rows("act_b_probs"));
}

#[test]
fn click_model_matches_torch_on_the_best_constant_action() {
    let Some(s) = shared() else { return };
    // The fixture feeds the same users and pages as `act_logits`, with the constant action
    // repeated on every row (checked here against best_const_action.json).
    let weights = s.rows("act_weight_best_const");
    let path = mtrec_data::testing::shared_path("data/virtualtaobao/best_const_action.json")
        .expect("best_const_action.json beside the fixtures");
    let json: Vec<f32> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("27 numbers");
    for row in &weights {
        for (a, b) in row.iter().zip(&json) {
            assert!((a - b).abs() < 1e-6, "the fixture's action is the JSON's");
        }
    }
    let logits = s
        .model
        .action_logits(
            s.t("users_onehot"),
            s.t("act_page"),
            s.t("act_weight_best_const"),
        )
        .unwrap();
    check_logits(
        "act_logits_best_const",
        &logits,
        &s.rows("act_logits_best_const"),
    );
    // 9 clicks is the arg-max on every fixture row, by a margin of hundreds of logits.
    for r in logits.to_vec2::<f32>().unwrap() {
        let p = softmax_f64(&r[..CLICK_CLASSES]);
        assert!(p[9] > 1.0 - 1e-12, "p(9 clicks) = {}", p[9]);
    }
}
