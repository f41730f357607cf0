//! DIEN backbone: shapes through the three heads, gradients (every parameter, finite differences),
//! the auxiliary loss's train/eval switch and weight, layout and padding behaviour, and forward
//! parity with the PyTorch reference `tests/reference/dien.py`.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use mtrec_dien::{Config, Dien, NAME};
use mtrec_nn::ctr::testkit::{self, max_abs_diff, random_batch, Fixture};
use mtrec_nn::testing::{check_gradients, vars_without_gradient, GradCheckConfig};
use mtrec_nn::{
    Align, Backbone, Batch, HeadKind, HostBatch, InputNorm, Model, PadPolicy, TrunkActivation,
    Vocab,
};

const DEV: Device = Device::Cpu;
const VOCAB: Vocab = Vocab {
    users: 30,
    items: 40,
    categories: 6,
};
/// The softmax over positions cancels the attention unit's last bias (as in the reference).
const NO_GRADIENT: [&str; 1] = ["att.mlp.out.bias"];

fn fixture_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity.safetensors")
}

fn build(cfg: &Config, dtype: DType) -> (VarMap, Dien) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, dtype, &DEV);
    let m = Dien::new(cfg, VOCAB, vb).unwrap();
    (vm, m)
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn names(vm: &VarMap) -> Vec<String> {
    let mut n: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
    n.sort();
    n
}

/// `Σ x ⊙ r` with a fixed pseudo-random `r` in [-1, 1].
fn project(x: &Tensor) -> Result<Tensor> {
    let n = x.elem_count();
    let r: Vec<f64> = (0..n).map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0).collect();
    let r = Tensor::from_vec(r, x.shape(), x.device())?.to_dtype(x.dtype())?;
    (x * r)?.sum_all()
}

#[test]
fn defaults_are_official_and_config_round_trips() {
    let cfg = Config::default();
    assert_eq!(cfg.embedding_dim, 18);
    assert_eq!(cfg.hidden, 36);
    assert_eq!(cfg.attention_hidden, [80, 40]);
    assert_eq!(cfg.aux_hidden, [100, 50]);
    assert_eq!(cfg.fcn_hidden, [200, 80]);
    assert_eq!(cfg.activation, TrunkActivation::DICE);
    assert_eq!(cfg.input_norm, InputNorm::Affine);
    assert_eq!(cfg.aux_loss_weight, 1.0);
    assert_eq!(cfg.max_history, 100);
    assert_eq!(cfg.fcn_input(), 162);

    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
    let partial: Config = serde_json::from_str(r#"{"hidden": 8, "aux_loss_weight": 0.0}"#).unwrap();
    assert_eq!((partial.hidden, partial.embedding_dim), (8, 18));
    assert!(serde_json::from_str::<Config>(r#"{"hiden": 8}"#).is_err());

    let vb = VarBuilder::zeros(DType::F32, &DEV);
    for bad in [
        Config {
            hidden: 0,
            ..Config::default()
        },
        Config {
            aux_hidden: vec![10, 0],
            ..Config::default()
        },
        Config {
            aux_loss_weight: -1.0,
            ..Config::default()
        },
        Config {
            aux_loss_weight: f64::NAN,
            ..Config::default()
        },
    ] {
        assert!(Dien::new(&bad, VOCAB, vb.clone()).is_err(), "{bad:?}");
    }
}

#[test]
fn parameter_names_and_shapes() {
    let (vm, m) = build(&Config::default(), DType::F32);
    assert_eq!(m.name(), NAME);
    assert_eq!(m.feature_dim(), 80);
    let layout = m.layout();
    assert_eq!(
        (layout.max_history, layout.pad, layout.align),
        (100, PadPolicy::Longest, Align::Left)
    );
    let data = vm.data().lock().unwrap();
    let dims = |n: &str| data[n].dims().to_vec();
    assert_eq!(dims("emb.uid.weight"), [30, 18]);
    assert_eq!(dims("emb.mid.weight"), [40, 18]);
    assert_eq!(dims("gru1.gates.kernel"), [72, 72]);
    assert_eq!(dims("gru1.candidate.kernel"), [72, 36]);
    assert_eq!(dims("gru2.gates.kernel"), [72, 72]);
    assert_eq!(dims("aux.bn.gamma"), [72]);
    assert_eq!(dims("aux.fc0.weight"), [100, 72]);
    assert_eq!(dims("aux.fc1.weight"), [50, 100]);
    assert_eq!(dims("aux.out.weight"), [2, 50]);
    assert_eq!(dims("att.query.weight"), [36, 36]);
    assert_eq!(dims("att.query_prelu.alpha"), [36]);
    assert_eq!(dims("att.mlp.fc0.weight"), [80, 144]);
    assert_eq!(dims("att.mlp.fc1.weight"), [40, 80]);
    assert_eq!(dims("att.mlp.out.weight"), [1, 40]);
    assert_eq!(dims("fcn.bn.gamma"), [162]);
    assert_eq!(dims("fcn.fc0.weight"), [200, 162]);
    assert_eq!(dims("fcn.fc1.weight"), [80, 200]);
    assert_eq!(dims("fcn.act1.alpha"), [80]);
    // TF inits that matter: GRU gate bias 1, query PReLU 0.1, Dice slope 0.
    let all = |n: &str, v: f32| {
        let x: Vec<f32> = data[n].as_tensor().to_vec1().unwrap();
        x.iter().all(|&y| y == v)
    };
    assert!(all("gru1.gates.bias", 1.0) && all("gru2.gates.bias", 1.0));
    assert!(all("gru1.candidate.bias", 0.0));
    assert!(all("att.query_prelu.alpha", 0.1));
    assert!(all("fcn.act0.alpha", 0.0));
    // Dense parameter count of specs/backbones.md §6 (94.1 K at E = 18): all but the tables.
    let dense: usize = data
        .iter()
        .filter(|(k, _)| !k.starts_with("emb."))
        .map(|(_, v)| v.elem_count())
        .sum();
    assert!((93_000..95_500).contains(&dense), "{dense}");
}

/// CTR, Q and Quantile(10) heads through `mtrec_nn::Model`; every parameter but the cancelled
/// attention bias gets a gradient of head loss + auxiliary loss (lengths 3, 0, 5, 1, 2, 4).
#[test]
fn heads_and_gradients() {
    testkit::check_heads_and_gradients(
        |vb| Ok(Box::new(Dien::new(&Config::default(), VOCAB, vb)?) as Box<dyn Backbone>),
        VOCAB,
        &NO_GRADIENT,
    )
    .unwrap();
}

/// Varied lengths (0, 1 and long), the official sizes: the auxiliary loss alone reaches exactly the
/// embeddings, the extractor GRU and the auxiliary network; with the head loss every parameter.
#[test]
fn gradient_paths_with_varied_lengths() {
    let lengths = [0, 1, 9, 1, 4, 0, 12, 2];
    let batch = random_batch(VOCAB, &lengths, 3, &DEV).unwrap();
    let (vm, m) = build(&Config::default(), DType::F32);
    let f = m.forward(&batch, true).unwrap();
    assert_eq!(f.features.dims(), [8, 80]);
    let aux = f
        .aux_loss
        .clone()
        .expect("training computes the auxiliary loss");
    let l = scalar(&aux);
    assert!(l.is_finite() && l > 0.0, "{l}");

    let missing = vars_without_gradient(&vm, &aux).unwrap();
    let reached: Vec<String> = names(&vm)
        .into_iter()
        .filter(|n| !missing.contains(n))
        .collect();
    assert!(
        reached.iter().all(|n| {
            n.starts_with("emb.mid")
                || n.starts_with("emb.cat")
                || n.starts_with("gru1.")
                || n.starts_with("aux.")
        }),
        "{reached:?}"
    );
    for must in [
        "emb.mid.weight",
        "emb.cat.weight",
        "gru1.gates.kernel",
        "aux.bn.gamma",
        "aux.out.bias",
    ] {
        assert!(
            reached.iter().any(|n| n == must),
            "{must} gets no gradient from L_aux"
        );
    }

    let model_vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&model_vm, DType::F32, &DEV);
    let backbone = Dien::new(&Config::default(), VOCAB, vb.clone()).unwrap();
    let model = Model::new(Box::new(backbone), HeadKind::Quantile(10), vb).unwrap();
    let out = model.forward(&batch, true).unwrap();
    assert_eq!(out.logits.dims(), [8, 2, 10]);
    let loss = (project(&out.logits).unwrap() + out.aux_loss.unwrap()).unwrap();
    // (The cancelled bias's gradient is zero only up to rounding, so it may or may not show up.)
    let missing = vars_without_gradient(&model_vm, &loss).unwrap();
    assert!(
        missing.iter().all(|m| NO_GRADIENT.contains(&m.as_str())),
        "parameters without gradient: {missing:?}"
    );
}

/// Finite differences (f64) through the whole backbone, auxiliary loss included, on a tiny
/// configuration with Dice (batch statistics), every parameter moved off its init.
#[test]
fn gradients_match_finite_differences() {
    let cfg = Config {
        embedding_dim: 2,
        hidden: 3,
        attention_hidden: vec![4],
        aux_hidden: vec![4, 3],
        fcn_hidden: vec![5, 3],
        aux_loss_weight: 0.7,
        ..Config::default()
    };
    let vocab = Vocab {
        users: 4,
        items: 7,
        categories: 3,
    };
    let batch = random_batch(vocab, &[3, 0, 4, 1, 2], 11, &DEV).unwrap();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &DEV);
    let m = Dien::new(&cfg, vocab, vb).unwrap();
    // Move every parameter off its (often constant) init.
    let mut vars: Vec<(String, candle_core::Var)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (name, v)) in vars.iter().enumerate() {
        let n = v.elem_count();
        let mut r: Vec<f64> = (0..n)
            .map(|j| (((i * 31 + j * 17) % 23) as f64 / 11.0 - 1.0) * 0.8)
            .collect();
        if name.starts_with("emb.") {
            let dim = v.dims()[1];
            r[..dim].iter_mut().for_each(|x| *x = 0.0);
        }
        v.set(&Tensor::from_vec(r, v.shape(), &DEV).unwrap())
            .unwrap();
    }
    let vars: Vec<candle_core::Var> = vars.into_iter().map(|(_, v)| v).collect();
    let report = check_gradients(
        &vars,
        |_| {
            let f = m.forward(&batch, true)?;
            project(&f.features)? + f.aux_loss.expect("aux")
        },
        GradCheckConfig {
            step: 1e-6,
            rtol: 1e-5,
            atol: 1e-8,
        },
    )
    .unwrap();
    assert!(report.checked > 300, "{}", report.checked);
    report.assert_ok();
}

#[test]
fn aux_loss_only_in_training_and_weighted() {
    let batch = random_batch(VOCAB, &[4, 0, 1, 6, 3], 5, &DEV).unwrap();
    let (vm, m) = build(&Config::default(), DType::F32);
    let train = m.forward(&batch, true).unwrap();
    let eval = m.forward(&batch, false).unwrap();
    assert!(
        eval.aux_loss.is_none(),
        "evaluation must skip the auxiliary loss"
    );
    let l1 = scalar(train.aux_loss.as_ref().unwrap());
    assert_eq!(l1, scalar(&m.aux_loss(&batch).unwrap().unwrap()));
    // Dice uses batch statistics in both modes and the BN quirk is deterministic: same features.
    assert_eq!(max_abs_diff(&train.features, &eval.features).unwrap(), 0.0);

    // The same weights with weight 0.25: a quarter of the loss.
    let half = Config {
        aux_loss_weight: 0.25,
        ..Config::default()
    };
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &DEV);
    let m2 = Dien::new(&half, VOCAB, vb).unwrap();
    let l2 = scalar(&m2.forward(&batch, true).unwrap().aux_loss.unwrap());
    assert!((l2 - 0.25 * l1).abs() < 1e-7, "{l2} vs {l1}");

    // Weight 0: no auxiliary parameters and no auxiliary loss; the rest is unchanged.
    let off = Config {
        aux_loss_weight: 0.0,
        ..Config::default()
    };
    let (vm0, m0) = build(&off, DType::F32);
    assert!(names(&vm0).iter().all(|n| !n.starts_with("aux.")));
    assert_eq!(names(&vm0).len() + 8, names(&vm).len()); // bn.gamma/beta, fc0, fc1, out (w, b)
    assert!(m0.forward(&batch, true).unwrap().aux_loss.is_none());
    assert!(m0.aux_loss(&batch).unwrap().is_none());
}

fn host(lengths: &[usize], width: usize) -> HostBatch {
    let mut h = HostBatch::default();
    for (row, &len) in lengths.iter().enumerate() {
        h.users.push(1 + row as u32 % 29);
        for t in 0..width {
            let real = t < len;
            let id = |k: usize, v: usize| {
                if real {
                    1 + ((row * 13 + t * 7 + k) % (v - 1)) as u32
                } else {
                    0
                }
            };
            h.hist_items.push(id(0, 40));
            h.hist_cats.push(id(1, 6));
            h.hist_neg_items.push(id(2, 40));
            h.hist_neg_cats.push(id(3, 6));
            h.mask.push(if real { 1.0 } else { 0.0 });
        }
        h.lengths.push(len as u32);
        h.target_items.push(1 + (row * 5 % 39) as u32);
        h.target_cats.push(1 + (row % 5) as u32);
        h.labels.push((row % 2) as f32);
    }
    h
}

/// Empty and one-item histories: a batch of width 0 (every history empty) and one of width 1 have
/// finite features, zero auxiliary loss (no pairs), and the AUGRU state is zero for empty rows.
#[test]
fn empty_and_single_item_histories() {
    let (_vm, m) = build(&Config::default(), DType::F32);
    for (lengths, width) in [(vec![0, 0, 0], 0), (vec![1, 0, 1], 1)] {
        let batch = host(&lengths, width)
            .to_device(width, Align::Left, &DEV)
            .unwrap();
        let f = m.forward(&batch, true).unwrap();
        assert_eq!(f.features.dims(), [3, 80]);
        let v: Vec<f32> = f.features.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite()));
        assert_eq!(scalar(&f.aux_loss.unwrap()), 0.0);
        let i = m.interests(&batch).unwrap();
        assert_eq!(i.states.dims(), [3, width, 36]);
        assert_eq!(i.attention.dims(), [3, width]);
        let last: Vec<Vec<f32>> = i.last.to_vec2().unwrap();
        for (row, &len) in lengths.iter().enumerate() {
            assert_eq!(last[row].iter().any(|&x| x != 0.0), len > 0, "row {row}");
        }
    }
}

/// With a batch-independent trunk (PReLU instead of Dice's batch statistics), a sample's
/// features do not depend on how far its batch is padded: the zero padding row and the GRU's
/// copy-through make padding invisible. Right-aligned batches are refused.
#[test]
fn padding_is_invisible_and_layout_is_checked() {
    let cfg = Config {
        activation: TrunkActivation::PRelu,
        ..Config::default()
    };
    let (_vm, m) = build(&cfg, DType::F32);
    let narrow = host(&[3, 1, 0, 2], 3)
        .to_device(3, Align::Left, &DEV)
        .unwrap();
    let f_narrow = m.forward(&narrow, false).unwrap().features;
    // The same four rows padded to 9 columns, garbage ids nowhere (padding is 0).
    let mut wide = host(&[3, 1, 0, 2], 9);
    let src = host(&[3, 1, 0, 2], 3);
    for row in 0..4 {
        for t in 0..9 {
            let (dst, s) = (row * 9 + t, row * 3 + t);
            let take = |v: &Vec<u32>| if t < 3 { v[s] } else { 0 };
            wide.hist_items[dst] = take(&src.hist_items);
            wide.hist_cats[dst] = take(&src.hist_cats);
            wide.hist_neg_items[dst] = take(&src.hist_neg_items);
            wide.hist_neg_cats[dst] = take(&src.hist_neg_cats);
            wide.mask[dst] = if t < 3 { src.mask[s] } else { 0.0 };
        }
    }
    let wide = wide.to_device(9, Align::Left, &DEV).unwrap();
    let f_wide = m.forward(&wide, false).unwrap().features;
    assert!(max_abs_diff(&f_narrow, &f_wide).unwrap() < 1e-6);

    let right: Batch = host(&[3, 1], 3).to_device(3, Align::Right, &DEV).unwrap();
    assert!(m.forward(&right, false).is_err());
}

fn fixture_config(fx: &Fixture) -> Result<(Config, Vocab)> {
    let v = fx.meta("vocab")?;
    let cfg = Config {
        embedding_dim: fx.meta("embedding_dim")?[0],
        hidden: fx.meta("gru_hidden")?[0],
        attention_hidden: fx.meta("attention_hidden")?,
        aux_hidden: fx.meta("aux_hidden")?,
        fcn_hidden: fx.meta("hidden")?,
        ..Config::default()
    };
    Ok((
        cfg,
        Vocab {
            users: v[0],
            items: v[1],
            categories: v[2],
        },
    ))
}

/// Features, Quantile(10) and CTR logits (eval and train mode) to 1e-5 against the PyTorch
/// reference, in f32.
#[test]
fn parity_with_pytorch_heads() {
    let worst = testkit::check_parity(
        |fx, vb| {
            let (cfg, vocab) = fixture_config(fx)?;
            Ok(Box::new(Dien::new(&cfg, vocab, vb)?) as Box<dyn Backbone>)
        },
        fixture_path(),
        1e-5,
    )
    .unwrap();
    eprintln!("DIEN parity (f32): max |Δ| = {worst:e}");
}

/// The intermediates (interest states, attention, AUGRU state) and the auxiliary loss against
/// the reference: to 1e-5 in f32 and 1e-10 in f64.
#[test]
fn parity_with_pytorch_interests_and_aux_loss() {
    let fx = Fixture::load(fixture_path()).unwrap();
    let (cfg, vocab) = fixture_config(&fx).unwrap();
    let batch = fx.batch().unwrap();
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-10)] {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, dtype, &DEV);
        let m = Dien::new(&cfg, vocab, vb).unwrap();
        for (name, var) in vm.data().lock().unwrap().iter() {
            var.set(&fx.get(name).unwrap().to_dtype(dtype).unwrap())
                .unwrap();
        }
        let i = m.interests(&batch).unwrap();
        let f = m.forward(&batch, true).unwrap();
        for (what, got) in [
            ("states", &i.states),
            ("attention", &i.attention),
            ("last", &i.last),
            ("features", &f.features),
            ("aux_loss", f.aux_loss.as_ref().unwrap()),
        ] {
            let d = max_abs_diff(got, &fx.expected(what).unwrap()).unwrap();
            assert!(d <= tol, "{dtype:?} {what}: max |Δ| = {d:e} > {tol:e}");
        }
        assert!(m.forward(&batch, false).unwrap().aux_loss.is_none());
    }
}
