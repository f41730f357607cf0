//! LinRec backbone tests: config, parameter names, heads and gradients, finite differences,
//! layout handling, and forward parity with the PyTorch reference (`tests/reference/seq_models.py`).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mtrec_linrec::{Config, FfnActivation, LinRec, TokenInput, NAME};
use mtrec_nn::testing::{check_gradients, GradCheckConfig};
use mtrec_nn::transformer::testkit;
use mtrec_nn::{bce_with_logits, Align, Backbone, HeadKind, Layout, Model, PadPolicy, Vocab};

const VOCAB: Vocab = Vocab {
    users: 10,
    items: 20,
    categories: 5,
};

fn small() -> Config {
    Config {
        hidden_size: 8,
        inner_size: 12,
        n_layers: 2,
        n_heads: 2,
        max_seq_length: 6,
        ..Config::default()
    }
}

fn build(cfg: &Config, vm: &VarMap, dtype: DType) -> LinRec {
    LinRec::new(cfg, VOCAB, VarBuilder::from_varmap(vm, dtype, &Device::Cpu)).unwrap()
}

fn names_and_shapes(vm: &VarMap) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<_> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    v.sort();
    v
}

/// Sets every variable to deterministic values in (-0.5, 0.5) (+1 for LayerNorm weights).
fn randomize(vm: &VarMap, seed: u64) {
    let mut s = seed;
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let vals: Vec<f64> = (0..var.elem_count())
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                if name.contains("LayerNorm") && name.ends_with("weight") {
                    1.0 + u
                } else {
                    u
                }
            })
            .collect();
        let t = Tensor::from_vec(vals, var.shape(), &Device::Cpu)
            .unwrap()
            .to_dtype(var.dtype())
            .unwrap();
        var.set(&t).unwrap();
    }
}

#[test]
fn defaults_are_the_official_hyper_parameters() {
    let c = Config::default();
    assert_eq!(
        (c.hidden_size, c.inner_size, c.n_layers, c.n_heads),
        (128, 256, 2, 8)
    );
    // Ours: 50 (official 200), see the crate docs.
    assert_eq!(c.max_seq_length, 50);
    assert_eq!(c.hidden_dropout_prob, 0.2);
    assert_eq!(c.hidden_act, FfnActivation::Gelu);
    assert_eq!(c.layer_norm_eps, 1e-12);
    assert_eq!(c.initializer_range, 0.02);
    assert_eq!(c.norm_eps, 1e-6);
    assert_eq!(c.token, TokenInput::ItemCategory);
    assert_eq!(NAME, "linrec");
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
    let partial: Config =
        serde_json::from_str(r#"{"hidden_size": 36, "hidden_act": "relu"}"#).unwrap();
    assert_eq!(partial.hidden_size, 36);
    assert_eq!(partial.hidden_act, FfnActivation::Relu);
    assert_eq!(partial.n_heads, 8);
    assert!(serde_json::from_str::<Config>(r#"{"attn_dropout_prob": 0.2}"#).is_err());
}

#[test]
fn invalid_configs_are_errors() {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    for cfg in [
        Config {
            hidden_size: 0,
            ..small()
        },
        Config {
            n_heads: 0,
            ..small()
        },
        Config {
            max_seq_length: 0,
            ..small()
        },
        Config {
            inner_size: 0,
            ..small()
        },
        Config {
            hidden_dropout_prob: -0.1,
            ..small()
        },
        Config {
            norm_eps: -1.0,
            ..small()
        },
    ] {
        assert!(LinRec::new(&cfg, VOCAB, vb.clone()).is_err(), "{cfg:?}");
    }
}

#[test]
fn heads_rule() {
    // specs/backbones.md §6: d = 36 with the official 8 heads; 8 does not divide 36 → 6 heads.
    let m = build(
        &Config {
            hidden_size: 36,
            inner_size: 72,
            n_heads: 8,
            ..small()
        },
        &VarMap::new(),
        DType::F32,
    );
    assert_eq!(m.heads(), 6);
    let m = build(&Config::default(), &VarMap::new(), DType::F32);
    assert_eq!(m.heads(), 8);
    let m = build(
        &Config {
            hidden_size: 72,
            inner_size: 144,
            n_heads: 8,
            ..small()
        },
        &VarMap::new(),
        DType::F32,
    );
    assert_eq!(m.heads(), 8);
}

#[test]
fn parameter_names_and_shapes() {
    let vm = VarMap::new();
    let m = build(
        &Config {
            n_layers: 1,
            hidden_size: 9,
            ..small()
        },
        &vm,
        DType::F32,
    );
    assert_eq!(m.feature_dim(), 9);
    let l = "trm_encoder.layer.0";
    let mut want: Vec<(String, Vec<usize>)> = vec![
        ("LayerNorm.bias".into(), vec![9]),
        ("LayerNorm.weight".into(), vec![9]),
        ("cat_embedding.weight".into(), vec![5, 4]),
        ("item_embedding.weight".into(), vec![20, 5]),
        ("position_embedding.weight".into(), vec![6, 9]),
        (format!("{l}.feed_forward.LayerNorm.bias"), vec![9]),
        (format!("{l}.feed_forward.LayerNorm.weight"), vec![9]),
        (format!("{l}.feed_forward.dense_1.bias"), vec![12]),
        (format!("{l}.feed_forward.dense_1.weight"), vec![12, 9]),
        (format!("{l}.feed_forward.dense_2.bias"), vec![9]),
        (format!("{l}.feed_forward.dense_2.weight"), vec![9, 12]),
        (format!("{l}.multi_head_attention.LayerNorm.bias"), vec![9]),
        (
            format!("{l}.multi_head_attention.LayerNorm.weight"),
            vec![9],
        ),
    ];
    for p in ["dense", "key", "query", "value"] {
        want.push((format!("{l}.multi_head_attention.{p}.bias"), vec![9]));
        want.push((format!("{l}.multi_head_attention.{p}.weight"), vec![9, 9]));
    }
    want.sort();
    assert_eq!(names_and_shapes(&vm), want);

    let vm = VarMap::new();
    build(
        &Config {
            token: TokenInput::Item,
            ..small()
        },
        &vm,
        DType::F32,
    );
    let shapes = names_and_shapes(&vm);
    assert!(shapes.contains(&("item_embedding.weight".to_string(), vec![20, 8])));
    assert!(!shapes.iter().any(|(n, _)| n.starts_with("cat_embedding")));
}

#[test]
fn heads_shapes_and_every_parameter_gets_a_gradient() {
    for cfg in [
        small(),
        Config::default(),
        Config {
            n_layers: 0,
            ..small()
        },
        Config {
            token: TokenInput::Item,
            n_layers: 1,
            hidden_act: FfnActivation::Relu,
            ..small()
        },
    ] {
        testkit::check_heads_and_gradients(
            |vb| Ok(Box::new(LinRec::new(&cfg, VOCAB, vb)?) as Box<dyn Backbone>),
            VOCAB,
        )
        .unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
    }
}

#[test]
fn gradients_match_finite_differences() {
    // Tiny f64 model, every parameter, through a CTR head and BCE (embedding LayerNorm, linear
    // attention with its L2 norms, post-LN, GELU feed-forward, gather at len − 1).
    let cfg = Config {
        hidden_size: 4,
        inner_size: 6,
        n_layers: 2,
        n_heads: 2,
        max_seq_length: 4,
        ..Config::default()
    };
    let vocab = Vocab {
        users: 3,
        items: 6,
        categories: 3,
    };
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let model = Model::new(
        Box::new(LinRec::new(&cfg, vocab, vb.clone()).unwrap()),
        HeadKind::Ctr,
        vb,
    )
    .unwrap();
    randomize(&vm, 3);
    let batch =
        testkit::random_batch(vocab, &[4, 1, 0, 2], 4, Align::Left, 5, &Device::Cpu).unwrap();
    let labels = batch.labels.to_dtype(DType::F64).unwrap();
    let vars: Vec<Var> = vm.all_vars();
    let report = check_gradients(
        &vars,
        |_| bce_with_logits(&model.forward(&batch, false)?.logits, &labels),
        GradCheckConfig::default(),
    )
    .unwrap();
    assert!(report.checked > 200, "{}", report.checked);
    report.assert_ok();
}

#[test]
fn layout_and_wrong_batches() {
    let m = build(&small(), &VarMap::new(), DType::F32);
    assert_eq!(
        m.layout(),
        Layout {
            max_history: 6,
            pad: PadPolicy::Fixed,
            align: Align::Left
        }
    );
    let dev = Device::Cpu;
    let right = testkit::random_batch(VOCAB, &[2, 3], 6, Align::Right, 1, &dev).unwrap();
    let err = m.forward(&right, false).unwrap_err().to_string();
    assert!(err.contains("Right-aligned"), "{err}");
    // No mask: a narrower (or wider) batch would change the result, so it is refused.
    for width in [3, 7] {
        let b = testkit::random_batch(VOCAB, &[2, 3], width, Align::Left, 1, &dev).unwrap();
        let err = m.forward(&b, false).unwrap_err().to_string();
        assert!(err.contains(&format!("width {width}")), "{err}");
    }
}

#[test]
fn reads_position_len_minus_one_and_zero_for_empty() {
    // An empty history reads column 0, exactly like a length-1 read of the same (all-padding)
    // row; a real history is read at len − 1, so padding ids after it only matter through the
    // (unmasked) attention.
    let vm = VarMap::new();
    let m = build(&small(), &vm, DType::F32);
    randomize(&vm, 4);
    let dev = Device::Cpu;
    let mut b = testkit::random_batch(VOCAB, &[0, 0, 3], 6, Align::Left, 3, &dev).unwrap();
    b.lengths = Tensor::new(&[0u32, 1, 3], &dev).unwrap();
    let h = m.encode(&b, false).unwrap();
    assert_eq!(
        testkit::max_abs_diff(&h.get(0).unwrap(), &h.get(1).unwrap()).unwrap(),
        0.0
    );
    // Reading another position of row 2 gives something else.
    let mut b2 = b.clone();
    b2.lengths = Tensor::new(&[0u32, 1, 2], &dev).unwrap();
    let h2 = m.encode(&b2, false).unwrap();
    assert!(testkit::max_abs_diff(&h.get(2).unwrap(), &h2.get(2).unwrap()).unwrap() > 1e-4);
}

#[test]
fn dropout_only_when_training() {
    let vm = VarMap::new();
    let m = build(&small(), &vm, DType::F32);
    randomize(&vm, 6);
    let batch = testkit::random_batch(VOCAB, &[5, 3, 6], 6, Align::Left, 8, &Device::Cpu).unwrap();
    let e1 = m.forward(&batch, false).unwrap().features;
    let e2 = m.forward(&batch, false).unwrap().features;
    assert_eq!(testkit::max_abs_diff(&e1, &e2).unwrap(), 0.0);
    let t1 = m.forward(&batch, true).unwrap().features;
    let t2 = m.forward(&batch, true).unwrap().features;
    assert!(testkit::max_abs_diff(&t1, &t2).unwrap() > 0.0);
}

#[test]
fn parity_with_pytorch_reference() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/parity.safetensors"
    );
    let fx = testkit::load_fixture(path).unwrap();
    let meta = |n: &str| testkit::meta(&fx, n).unwrap()[0];
    let v = testkit::meta(&fx, "vocab").unwrap();
    let vocab = Vocab {
        users: v[0],
        items: v[1],
        categories: v[2],
    };
    let cfg = Config {
        hidden_size: meta("hidden_size"),
        inner_size: meta("inner_size"),
        n_layers: meta("n_layers"),
        n_heads: meta("n_heads"),
        max_seq_length: meta("max_seq_length"),
        ..Config::default()
    };
    let batch = testkit::fixture_batch(&fx, Align::Left).unwrap();
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-10)] {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
        let q = Model::new(
            Box::new(LinRec::new(&cfg, vocab, vb.clone()).unwrap()),
            HeadKind::Quantile(10),
            vb.clone(),
        )
        .unwrap();
        let ctr = Model::new(
            Box::new(LinRec::new(&cfg, vocab, vb.clone()).unwrap()),
            HeadKind::Ctr,
            vb.pp("ctr"),
        )
        .unwrap();
        let lin = LinRec::new(&cfg, vocab, vb.clone()).unwrap();
        // The fixture's reference used 4 heads: the rule's answer for 12 and 5.
        assert_eq!(lin.heads(), 4);
        testkit::load_weights(&vm, &fx).unwrap();
        let checks = [
            ("h", lin.encode(&batch, false).unwrap()),
            (
                "features",
                q.backbone().forward(&batch, false).unwrap().features,
            ),
            ("quantile", q.forward(&batch, false).unwrap().logits),
            ("ctr", ctr.forward(&batch, false).unwrap().logits),
        ];
        for (name, got) in checks {
            let want = testkit::get(&fx, &format!("expected.{name}")).unwrap();
            let d = testkit::max_abs_diff(&got, &want).unwrap();
            eprintln!("linrec parity {dtype:?} {name}: max |Δ| = {d:.3e}");
            assert!(d <= tol, "{dtype:?} {name}: max |Δ| = {d:e} > {tol:e}");
        }
    }
}
