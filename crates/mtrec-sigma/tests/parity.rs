//! Forward parity with the plain-PyTorch SIGMA reference (`tests/reference/sigma.py` at the
//! repository root, which writes `tests/fixtures/parity.safetensors`): same weights, same batch,
//! features `z = h ⊙ e_target` and Quantile(10) head logits, in f64 (tight) and f32 (1e-5), with
//! the fused and the composed scan.

use std::collections::{BTreeSet, HashMap};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use mtrec_nn::{Align, Backbone, Batch, HeadKind, HostBatch, Model, Vocab};
use mtrec_sigma::{Config, FlipMode, ScanImpl, Sigma, Tokens};

const VOCAB: Vocab = Vocab {
    users: 2,
    items: 50,
    categories: 6,
};

fn fixture() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/parity.safetensors"
    );
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn u32s(t: &HashMap<String, Tensor>, name: &str) -> Vec<u32> {
    t[name].flatten_all().unwrap().to_vec1().unwrap()
}

fn batch(t: &HashMap<String, Tensor>) -> Batch {
    let (b, width) = t["input.hist_items"].dims2().unwrap();
    let lengths = u32s(t, "input.lengths");
    let mask = (0..b * width)
        .map(|i| {
            if (i % width) < lengths[i / width] as usize {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    HostBatch {
        users: vec![1; b],
        hist_items: u32s(t, "input.hist_items"),
        hist_cats: u32s(t, "input.hist_cats"),
        hist_neg_items: vec![0; b * width],
        hist_neg_cats: vec![0; b * width],
        mask,
        lengths,
        target_items: u32s(t, "input.target_items"),
        target_cats: u32s(t, "input.target_cats"),
        labels: vec![0.0; b],
    }
    .to_device(width, Align::Left, &Device::Cpu)
    .unwrap()
}

fn config(variant: &str, scan: ScanImpl) -> Config {
    let base = Config {
        hidden_size: 8,
        d_state: 4,
        d_conv: 4,
        expand: 2,
        max_history: 8,
        scan,
        ..Config::default()
    };
    match variant {
        "io" => base,
        "ic" => Config {
            tokens: Tokens::ItemCategory,
            ..base
        },
        "ic2" => Config {
            tokens: Tokens::ItemCategory,
            num_layers: 2,
            flip: FlipMode::LengthAware,
            ..base
        },
        _ => unreachable!(),
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn forward_matches_pytorch_reference() {
    let t = fixture();
    let b = batch(&t);
    for variant in ["io", "ic", "ic2"] {
        for scan in [ScanImpl::Fused, ScanImpl::Composed] {
            for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
                let vb = VarBuilder::from_tensors(t.clone(), dtype, &Device::Cpu).pp(variant);
                let cfg = config(variant, scan);
                let sigma = Sigma::new(&cfg, VOCAB, vb.clone()).unwrap();
                let features = sigma.forward(&b, false).unwrap().features;
                let model = Model::new(Box::new(sigma), HeadKind::Quantile(10), vb).unwrap();
                let logits = model.forward(&b, false).unwrap().logits;
                let want_f = &t[&format!("{variant}.expected.features")];
                let want_l = &t[&format!("{variant}.expected.logits")];
                let (ef, el) = (
                    max_abs_diff(&features, want_f),
                    max_abs_diff(&logits, want_l),
                );
                assert!(
                    ef < tol && el < tol,
                    "{variant} {scan:?} {dtype:?}: features err {ef:.3e}, logits err {el:.3e}"
                );
            }
        }
    }
}

/// The fixture holds exactly the parameters our VarMap creates (no PyTorch parameter unused,
/// no Rust parameter missing), with the same shapes.
#[test]
fn parameter_names_match_the_pytorch_state_dict() {
    let t = fixture();
    for variant in ["io", "ic", "ic2"] {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let sigma = Sigma::new(&config(variant, ScanImpl::Fused), VOCAB, vb.clone()).unwrap();
        let _model = Model::new(Box::new(sigma), HeadKind::Quantile(10), vb).unwrap();
        let ours: BTreeSet<String> = vm.data().lock().unwrap().keys().cloned().collect();
        let prefix = format!("{variant}.");
        let theirs: BTreeSet<String> = t
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|k| !k.starts_with("expected."))
            .map(str::to_string)
            .collect();
        assert_eq!(ours, theirs, "{variant}");
        let data = vm.data().lock().unwrap();
        for name in &ours {
            assert_eq!(
                data[name].dims(),
                t[&format!("{prefix}{name}")].dims(),
                "{variant}.{name}"
            );
        }
    }
}
