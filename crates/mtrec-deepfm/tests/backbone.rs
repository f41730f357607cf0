//! Shapes through every head, gradients to every parameter, the FM terms by hand, and forward
//! parity with the PyTorch reference (`tests/reference/ctr_models.py`).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use mtrec_deepfm::{Config, DeepFm, NAME};
use mtrec_nn::ctr::testkit::{check_heads_and_gradients, check_parity, random_batch};
use mtrec_nn::{Backbone, HeadKind, InputNorm, Model, Vocab, ACTION_P};

const VOCAB: Vocab = Vocab {
    users: 13,
    items: 21,
    categories: 5,
};

#[test]
fn heads_and_gradients() {
    let cfg = Config::default();
    check_heads_and_gradients(|vb| Ok(Box::new(DeepFm::new(&cfg, VOCAB, vb)?)), VOCAB, &[])
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
        |vb| Ok(Box::new(DeepFm::new(&cfg, VOCAB, vb)?)),
        VOCAB,
        &["fcn.bn.moving_mean", "fcn.bn.moving_variance"],
    )
    .unwrap();
}

#[test]
fn official_shapes_and_names() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let m = DeepFm::new(&Config::default(), VOCAB, vb).unwrap();
    assert_eq!(m.name(), NAME);
    assert_eq!(m.feature_dim(), 80);
    let data = vm.data().lock().unwrap();
    assert_eq!(data["fcn.fc0.weight"].dims(), [200, 90]);
    assert_eq!(data["fm.mid.weight"].dims(), [21, 1]);
    // First-order tables start at zero.
    let w = data["fm.uid.weight"].as_tensor().abs().unwrap();
    assert_eq!(w.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
}

/// The FM offset equals Σ_{i<j} <v_i, v_j> + first-order weights, computed by hand on the host.
#[test]
fn fm_offset_by_hand() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let cfg = Config {
        embedding_dim: 3,
        hidden: vec![4],
        ..Config::default()
    };
    let m = DeepFm::new(&cfg, VOCAB, vb).unwrap();
    // Non-zero first-order weights (row 0 stays zero: it is masked anyway).
    for name in ["fm.uid.weight", "fm.mid.weight", "fm.cat.weight"] {
        let v = vm.data().lock().unwrap()[name].clone();
        let n = v.dim(0).unwrap();
        let w: Vec<f64> = (0..n).map(|i| 0.1 * i as f64 - 0.3).collect();
        v.set(&Tensor::from_vec(w, (n, 1), &Device::Cpu).unwrap())
            .unwrap();
    }
    let batch = random_batch(VOCAB, &[2, 0, 3], 5, &Device::Cpu).unwrap();
    let offset: Vec<f64> = m
        .forward(&batch, false)
        .unwrap()
        .logit_offset
        .unwrap()
        .to_vec1()
        .unwrap();
    let table = |name: &str| -> Vec<Vec<f64>> {
        vm.data().lock().unwrap()[name]
            .as_tensor()
            .to_vec2()
            .unwrap()
    };
    let (uid, mid, cat) = (
        table("emb.uid.weight"),
        table("emb.mid.weight"),
        table("emb.cat.weight"),
    );
    let (wu, wm, wc) = (
        table("fm.uid.weight"),
        table("fm.mid.weight"),
        table("fm.cat.weight"),
    );
    let users: Vec<u32> = batch.users.to_vec1().unwrap();
    let items: Vec<u32> = batch.target_items.to_vec1().unwrap();
    let cats: Vec<u32> = batch.target_cats.to_vec1().unwrap();
    let his: Vec<Vec<u32>> = batch.hist_items.to_vec2().unwrap();
    let his_c: Vec<Vec<u32>> = batch.hist_cats.to_vec2().unwrap();
    let mask: Vec<Vec<f32>> = batch.mask.to_vec2().unwrap();
    for b in 0..3 {
        let mut fields = [
            uid[users[b] as usize].clone(),
            mid[items[b] as usize].clone(),
            cat[cats[b] as usize].clone(),
            vec![0.0; 3],
            vec![0.0; 3],
        ];
        let mut first =
            wu[users[b] as usize][0] + wm[items[b] as usize][0] + wc[cats[b] as usize][0];
        for t in 0..his[b].len() {
            if mask[b][t] == 1.0 {
                for k in 0..3 {
                    fields[3][k] += mid[his[b][t] as usize][k];
                    fields[4][k] += cat[his_c[b][t] as usize][k];
                }
                first += wm[his[b][t] as usize][0] + wc[his_c[b][t] as usize][0];
            }
        }
        let mut pairs = 0.0;
        for i in 0..5 {
            for j in i + 1..5 {
                pairs += (0..3).map(|k| fields[i][k] * fields[j][k]).sum::<f64>();
            }
        }
        assert!(
            (offset[b] - (first + pairs)).abs() < 1e-12,
            "row {b}: {} vs {}",
            offset[b],
            first + pairs
        );
    }
    // The offset lands on action P only.
    let vm2 = VarMap::new();
    let vb2 = VarBuilder::from_varmap(&vm2, DType::F64, &Device::Cpu);
    let model = Model::new(
        Box::new(DeepFm::new(&cfg, VOCAB, vb2.clone()).unwrap()),
        HeadKind::Q,
        vb2,
    )
    .unwrap();
    let with: Vec<Vec<f64>> = model
        .forward(&batch, false)
        .unwrap()
        .logits
        .to_vec2()
        .unwrap();
    let f = model.backbone().forward(&batch, false).unwrap();
    let plain: Vec<Vec<f64>> = model
        .head()
        .forward(&mtrec_nn::Features::plain(f.features))
        .unwrap()
        .to_vec2()
        .unwrap();
    let off: Vec<f64> = f.logit_offset.unwrap().to_vec1().unwrap();
    for b in 0..3 {
        assert!((with[b][ACTION_P] - plain[b][ACTION_P] - off[b]).abs() < 1e-12);
        assert_eq!(with[b][1 - ACTION_P], plain[b][1 - ACTION_P]);
    }
}

#[test]
fn config_round_trips_and_rejects_unknown_fields() {
    let cfg = Config::default();
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
    assert_eq!(serde_json::from_str::<Config>("{}").unwrap(), cfg);
    assert!(serde_json::from_str::<Config>("{\"fm\": true}").is_err());
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
            Ok(Box::new(DeepFm::new(&cfg, vocab, vb)?))
        },
        path,
        1e-5,
    )
    .unwrap();
    eprintln!("deepfm parity: max |Δ| = {worst:e}");
}
