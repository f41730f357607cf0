//! Backbone-level tests: shapes through every head, gradients reach every parameter, fused and
//! composed scans agree, the batch contract is enforced.

use super::*;
use crate::testutil::Lcg;
use candle_core::{DType, Device};
use candle_nn::VarMap;
use mtrec_nn::testing::assert_every_var_has_gradient;
use mtrec_nn::{HeadKind, HostBatch, Model};

fn vocab() -> Vocab {
    Vocab {
        users: 10,
        items: 30,
        categories: 5,
    }
}

fn small(tokens: Tokens) -> Config {
    Config {
        hidden_size: 8,
        tokens,
        d_state: 4,
        max_history: 8,
        ..Config::default()
    }
}

/// Random batch with the given lengths, left-aligned, `width` columns.
fn batch(lengths: &[u32], width: usize, align: Align, seed: u64) -> Batch {
    let mut rng = Lcg::new(seed);
    let b = lengths.len();
    let mut hb = HostBatch::default();
    for &len in lengths {
        for t in 0..width {
            let real = (t as u32) < len;
            let item = if real {
                1 + (rng.next_u64() % 29) as u32
            } else {
                0
            };
            hb.hist_items.push(item);
            hb.hist_cats.push(if real { 1 + item % 4 } else { 0 });
            hb.hist_neg_items.push(0);
            hb.hist_neg_cats.push(0);
            hb.mask.push(if real { 1.0 } else { 0.0 });
        }
        hb.lengths.push(len);
        let target = 1 + (rng.next_u64() % 29) as u32;
        hb.target_items.push(target);
        hb.target_cats.push(1 + target % 4);
        hb.labels.push((rng.next_u64() % 2) as f32);
        hb.users.push(1);
    }
    assert_eq!(hb.users.len(), b);
    hb.to_device(width, align, &Device::Cpu).unwrap()
}

fn model(cfg: &Config, kind: HeadKind, dtype: DType) -> (VarMap, Model) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
    let sigma = Sigma::new(cfg, vocab(), vb.clone()).unwrap();
    let m = Model::new(Box::new(sigma), kind, vb).unwrap();
    (vm, m)
}

#[test]
fn default_config_is_official_and_round_trips() {
    let c = Config::default();
    assert_eq!(
        (c.hidden_size, c.num_layers, c.d_state, c.d_conv, c.expand),
        (64, 1, 32, 4, 2)
    );
    assert_eq!((c.max_history, c.flip_keep, c.dt_rank()), (50, 5, 4));
    assert_eq!(c.scan, ScanImpl::Fused);
    let json = serde_json::to_string(&c).unwrap();
    let back: Config = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    let partial: Config =
        serde_json::from_str(r#"{"tokens":"item_category","scan":"composed"}"#).unwrap();
    assert_eq!(partial.tokens, Tokens::ItemCategory);
    assert_eq!(partial.scan, ScanImpl::Composed);
    assert!(serde_json::from_str::<Config>(r#"{"hidden":3}"#).is_err());
}

#[test]
fn dense_parameter_count_matches_the_spec() {
    // specs/backbones.md §6: official SIGMA (d = 64) has about 130 K dense parameters, 38.8 K of
    // them in the Mamba mixer.
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    Sigma::new(&Config::default(), vocab(), vb).unwrap();
    let data = vm.data().lock().unwrap();
    let count = |f: &dyn Fn(&str) -> bool| -> usize {
        data.iter()
            .filter(|(k, _)| f(k))
            .map(|(_, v)| v.elem_count())
            .sum()
    };
    assert_eq!(count(&|k| k.contains(".mamba.")), 38_784);
    assert_eq!(count(&|k| !k.contains("embedding")), 129_987);
}

#[test]
fn invalid_configs_are_rejected() {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    for bad in [
        Config {
            hidden_size: 7,
            tokens: Tokens::ItemCategory,
            ..Config::default()
        },
        Config {
            dropout: 1.0,
            ..Config::default()
        },
        Config {
            d_state: 0,
            ..Config::default()
        },
    ] {
        assert!(bad.validate().is_err());
        assert!(Sigma::new(&bad, vocab(), vb.clone()).is_err());
    }
}

#[test]
fn flip_permutations() {
    // Official: first L − 5 positions reversed whatever the length.
    assert_eq!(
        flip_permutation(8, 2, 5, FlipMode::Official),
        vec![2, 1, 0, 3, 4, 5, 6, 7]
    );
    assert_eq!(flip_permutation(50, 0, 5, FlipMode::Official)[0], 44);
    assert_eq!(flip_permutation(50, 0, 5, FlipMode::Official)[45], 45);
    // Length aware: first len − 5 real items.
    assert_eq!(
        flip_permutation(8, 7, 5, FlipMode::LengthAware),
        vec![1, 0, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(
        flip_permutation(4, 3, 5, FlipMode::LengthAware),
        vec![0, 1, 2, 3]
    );
    assert_eq!(flip_permutation(3, 3, 5, FlipMode::Official), vec![0, 1, 2]);
}

#[test]
fn head_shapes_and_layout() {
    let b = batch(&[0, 1, 5, 8, 3], 8, Align::Left, 1);
    for tokens in [Tokens::ItemOnly, Tokens::ItemCategory] {
        for (kind, shape) in [
            (HeadKind::Ctr, vec![5]),
            (HeadKind::Q, vec![5, 2]),
            (HeadKind::Quantile(10), vec![5, 2, 10]),
        ] {
            let (_, m) = model(&small(tokens), kind, DType::F32);
            assert_eq!(m.backbone().feature_dim(), 8);
            assert_eq!(m.backbone().name(), NAME);
            let out = m.forward(&b, true).unwrap();
            assert_eq!(out.logits.dims(), &shape[..], "{tokens:?} {kind:?}");
            assert!(out.aux_loss.is_none());
            let v: Vec<f32> = out.logits.flatten_all().unwrap().to_vec1().unwrap();
            assert!(v.iter().all(|x| x.is_finite()));
        }
    }
    let (_, m) = model(&Config::default(), HeadKind::Ctr, DType::F32);
    assert_eq!(
        m.layout(),
        Layout {
            max_history: 50,
            pad: PadPolicy::Fixed,
            align: Align::Left
        }
    );
}

#[test]
fn batch_contract_is_enforced() {
    let (_, m) = model(&small(Tokens::ItemOnly), HeadKind::Ctr, DType::F32);
    let right = batch(&[2, 3], 8, Align::Right, 2);
    let err = m.forward(&right, false).unwrap_err().to_string();
    assert!(err.contains("Align::Left"), "{err}");
    let mut long = batch(&[2, 3], 8, Align::Left, 2);
    long.lengths = Tensor::new(&[2u32, 9], &Device::Cpu).unwrap();
    let err = m.forward(&long, false).unwrap_err().to_string();
    assert!(err.contains("exceeds the batch width"), "{err}");
}

#[test]
fn every_parameter_gets_a_gradient() {
    for (tokens, layers, flip) in [
        (Tokens::ItemOnly, 1, FlipMode::Official),
        (Tokens::ItemCategory, 2, FlipMode::LengthAware),
    ] {
        let cfg = Config {
            num_layers: layers,
            flip,
            ..small(tokens)
        };
        let (vm, m) = model(&cfg, HeadKind::Quantile(3), DType::F32);
        let b = batch(&[0, 1, 6, 8, 7, 8], 8, Align::Left, 3);
        let loss = m
            .forward(&b, true)
            .unwrap()
            .logits
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        assert_every_var_has_gradient(&vm, &loss);
    }
}

#[test]
fn fused_and_composed_backbones_agree() {
    let b = batch(&[0, 1, 4, 8], 8, Align::Left, 4);
    let cfg = |scan| Config {
        scan,
        init_std: 0.3,
        ..small(Tokens::ItemCategory)
    };
    let (vm_f, fused) = model(&cfg(ScanImpl::Fused), HeadKind::Q, DType::F64);
    let (vm_c, composed) = model(&cfg(ScanImpl::Composed), HeadKind::Q, DType::F64);
    {
        let (df, dc) = (vm_f.data().lock().unwrap(), vm_c.data().lock().unwrap());
        for (name, v) in df.iter() {
            dc[name].set(v.as_tensor()).unwrap();
        }
    }
    let run = |m: &Model, vm: &VarMap| -> (Vec<f64>, Vec<f64>) {
        let out = m.forward(&b, false).unwrap().logits;
        let g = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let data = vm.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let gv = names
            .iter()
            .flat_map(|n| {
                g.get(data[*n].as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            })
            .collect();
        (out.flatten_all().unwrap().to_vec1().unwrap(), gv)
    };
    let (of, gf) = run(&fused, &vm_f);
    let (oc, gc) = run(&composed, &vm_c);
    assert_eq!(gf.len(), gc.len());
    for (x, y) in of.iter().zip(&oc) {
        assert!((x - y).abs() < 1e-10, "{x} vs {y}");
    }
    for (x, y) in gf.iter().zip(&gc) {
        assert!((x - y).abs() < 1e-9 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

#[test]
fn eval_is_deterministic_and_train_uses_dropout() {
    let (_, m) = model(&small(Tokens::ItemOnly), HeadKind::Ctr, DType::F32);
    let b = batch(&[3, 8, 1], 8, Align::Left, 5);
    let e1: Vec<f32> = m.forward(&b, false).unwrap().logits.to_vec1().unwrap();
    let e2: Vec<f32> = m.forward(&b, false).unwrap().logits.to_vec1().unwrap();
    assert_eq!(e1, e2);
    let t1: Vec<f32> = m.forward(&b, true).unwrap().logits.to_vec1().unwrap();
    assert_ne!(e1, t1);
}

#[test]
fn empty_histories_share_one_representation() {
    let (_, m) = model(&small(Tokens::ItemOnly), HeadKind::Ctr, DType::F32);
    let b = batch(&[0, 0, 4], 8, Align::Left, 6);
    let lb = m.backbone();
    let f = lb.forward(&b, false).unwrap().features;
    // h for length 0 is position 0 of an all-padding row, identical across such rows; features
    // differ only through the target embedding.
    let sigma_seq = {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let s = Sigma::new(&small(Tokens::ItemOnly), vocab(), vb).unwrap();
        s.sequence_output(&b, false).unwrap()
    };
    let rows: Vec<Vec<Vec<f32>>> = sigma_seq.to_vec3().unwrap();
    assert_eq!(rows[0], rows[1]);
    assert_eq!(f.dims(), &[3, 8]);
}
