//! Shapes through every head, gradients to every parameter, attention masking, and forward
//! parity with the PyTorch reference (`tests/reference/ctr_models.py`).

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use mtrec_din::{Config, Din, NAME};
use mtrec_nn::ctr::testkit::{check_heads_and_gradients, check_parity, random_batch};
use mtrec_nn::{Backbone, InputNorm, TrunkActivation, Vocab};

const VOCAB: Vocab = Vocab {
    users: 13,
    items: 21,
    categories: 5,
};

/// Softmax makes the scores shift-invariant, so the attention's output bias gets no gradient.
const SHIFT_INVARIANT: &str = "att.mlp.out.bias";

#[test]
fn heads_and_gradients() {
    let cfg = Config::default();
    check_heads_and_gradients(
        |vb| Ok(Box::new(Din::new(&cfg, VOCAB, vb)?)),
        VOCAB,
        &[SHIFT_INVARIANT],
    )
    .unwrap();
}

#[test]
fn heads_and_gradients_other_variants() {
    for (norm, act) in [
        (InputNorm::BatchNorm, TrunkActivation::DICE),
        (InputNorm::Affine, TrunkActivation::DiceAffine),
        (InputNorm::None, TrunkActivation::PRelu),
    ] {
        let cfg = Config {
            input_norm: norm,
            activation: act,
            ..Config::default()
        };
        check_heads_and_gradients(
            |vb| Ok(Box::new(Din::new(&cfg, VOCAB, vb)?)),
            VOCAB,
            &[
                SHIFT_INVARIANT,
                "fcn.bn.moving_mean",
                "fcn.bn.moving_variance",
            ],
        )
        .unwrap();
    }
}

#[test]
fn official_shapes_and_names() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let m = Din::new(&Config::default(), VOCAB, vb).unwrap();
    assert_eq!(m.name(), NAME);
    assert_eq!(m.feature_dim(), 80);
    let data = vm.data().lock().unwrap();
    // [u ; ieb ; hsum ; ieb ⊙ hsum ; att] = 18 + 4 · 36.
    assert_eq!(data["fcn.fc0.weight"].dims(), [200, 162]);
    assert_eq!(data["att.mlp.fc0.weight"].dims(), [80, 144]);
    assert_eq!(data["att.mlp.fc1.weight"].dims(), [40, 80]);
    assert_eq!(data["att.mlp.out.weight"].dims(), [1, 40]);
    // Dice with batch statistics has only its slope.
    assert!(data.contains_key("fcn.act0.alpha") && !data.contains_key("fcn.act0.gamma"));
}

#[test]
fn attention_is_masked_and_empty_history_is_finite() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let m = Din::new(&Config::default(), VOCAB, vb).unwrap();
    let batch = random_batch(VOCAB, &[3, 0, 5], 2, &Device::Cpu).unwrap();
    let w: Vec<Vec<f32>> = m.attention_weights(&batch).unwrap().to_vec2().unwrap();
    // Row 0: weights over the 3 real items sum to 1, padding gets 0.
    assert!((w[0][..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert!(w[0][3..].iter().all(|&x| x == 0.0));
    // Row 1 (empty): uniform over padding (zero keys), finite.
    assert!(w[1].iter().all(|&x| (x - 0.2).abs() < 1e-6));
    let f: Vec<Vec<f32>> = m
        .forward(&batch, false)
        .unwrap()
        .features
        .to_vec2()
        .unwrap();
    assert!(f.iter().flatten().all(|x| x.is_finite()));
}

#[test]
fn config_round_trips_and_rejects_unknown_fields() {
    let cfg = Config::default();
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
    assert_eq!(serde_json::from_str::<Config>("{}").unwrap(), cfg);
    let c: Config = serde_json::from_str(
        "{\"activation\": \"dice_affine\", \"input_norm\": \"batch_norm\", \"attention_hidden\": [8]}",
    )
    .unwrap();
    assert_eq!(c.activation, TrunkActivation::DiceAffine);
    assert_eq!(c.input_norm, InputNorm::BatchNorm);
    assert!(serde_json::from_str::<Config>("{\"dice\": true}").is_err());
    let bad = Config {
        attention_hidden: vec![0],
        ..cfg
    };
    assert!(Din::new(&bad, VOCAB, VarBuilder::zeros(DType::F32, &Device::Cpu)).is_err());
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
                attention_hidden: fx.meta("attention_hidden")?,
                ..Config::default()
            };
            Ok(Box::new(Din::new(&cfg, vocab, vb)?))
        },
        path,
        1e-5,
    )
    .unwrap();
    eprintln!("din parity: max |Δ| = {worst:e}");
}
