//! Shapes through every head, gradients to every parameter, and forward parity with the PyTorch
//! reference (`tests/reference/ctr_models.py`).

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use mtrec_nn::ctr::testkit::{check_heads_and_gradients, check_parity, random_batch};
use mtrec_nn::{Backbone, InputNorm, Vocab};
use mtrec_widedeep::{Config, WideDeep, NAME};

const VOCAB: Vocab = Vocab {
    users: 13,
    items: 21,
    categories: 5,
};

#[test]
fn heads_and_gradients() {
    let cfg = Config::default();
    check_heads_and_gradients(
        |vb| Ok(Box::new(WideDeep::new(&cfg, VOCAB, vb)?)),
        VOCAB,
        &[],
    )
    .unwrap();
}

#[test]
fn heads_and_gradients_with_batch_norm() {
    let cfg = Config {
        input_norm: InputNorm::BatchNorm,
        ..Config::default()
    };
    // The moving statistics are buffers, not trained.
    check_heads_and_gradients(
        |vb| Ok(Box::new(WideDeep::new(&cfg, VOCAB, vb)?)),
        VOCAB,
        &["fcn.bn.moving_mean", "fcn.bn.moving_variance"],
    )
    .unwrap();
}

#[test]
fn official_shapes_and_names() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let m = WideDeep::new(&Config::default(), VOCAB, vb).unwrap();
    assert_eq!(m.name(), NAME);
    // deep 80 + wide [ieb ; hsum ; ieb ⊙ hsum] = 3 · 36.
    assert_eq!(m.feature_dim(), 80 + 108);
    assert_eq!(m.layout().max_history, 100);
    let data = vm.data().lock().unwrap();
    assert_eq!(data["fcn.fc0.weight"].dims(), [200, 90]);
    assert_eq!(data["fcn.fc1.weight"].dims(), [80, 200]);
    assert_eq!(data["emb.uid.weight"].dims(), [13, 18]);
    // The wide part of the features is [ieb ; hsum ; ieb ⊙ hsum].
    drop(data);
    let batch = random_batch(VOCAB, &[2, 0, 3], 1, &Device::Cpu).unwrap();
    let f = m.forward(&batch, false).unwrap().features;
    let wide = f.narrow(1, 80, 108).unwrap();
    let ieb = wide.narrow(1, 0, 36).unwrap();
    let hsum = wide.narrow(1, 36, 36).unwrap();
    let cross = wide.narrow(1, 72, 36).unwrap();
    let d = (cross - (ieb * hsum).unwrap()).unwrap().abs().unwrap();
    assert_eq!(d.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn config_round_trips_and_rejects_unknown_fields() {
    let cfg = Config::default();
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
    assert_eq!(serde_json::from_str::<Config>("{}").unwrap(), cfg);
    assert!(serde_json::from_str::<Config>("{\"hiden\": [1]}").is_err());
    let bad = Config {
        embedding_dim: 0,
        ..cfg
    };
    assert!(WideDeep::new(&bad, VOCAB, VarBuilder::zeros(DType::F32, &Device::Cpu)).is_err());
}

#[test]
fn parity_with_pytorch() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/parity.safetensors"
    );
    let worst = check_parity(
        |fx, vb| {
            let v = fx.meta("vocab")?;
            let vocab = Vocab {
                users: v[0],
                items: v[1],
                categories: v[2],
            };
            let cfg = Config {
                embedding_dim: fx.meta("embedding_dim")?[0],
                hidden: fx.meta("hidden")?,
                ..Config::default()
            };
            Ok(Box::new(WideDeep::new(&cfg, vocab, vb)?))
        },
        path,
        1e-5,
    )
    .unwrap();
    eprintln!("widedeep parity: max |Δ| = {worst:e}");
}
