//! SASRec backbone tests: config, parameter names, heads and gradients, finite differences,
//! layout handling, and forward parity with the PyTorch reference (`tests/reference/seq_models.py`).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mtrec_nn::testing::{check_gradients, GradCheckConfig};
use mtrec_nn::transformer::testkit;
use mtrec_nn::{bce_with_logits, Align, Backbone, HeadKind, Layout, Model, PadPolicy, Vocab};
use mtrec_sasrec::{Config, SasRec, TokenInput, NAME};

const VOCAB: Vocab = Vocab {
    users: 10,
    items: 20,
    categories: 5,
};

fn small() -> Config {
    Config {
        hidden_units: 8,
        num_blocks: 2,
        num_heads: 2,
        maxlen: 6,
        ..Config::default()
    }
}

fn build(cfg: &Config, vm: &VarMap, dtype: DType) -> SasRec {
    SasRec::new(cfg, VOCAB, VarBuilder::from_varmap(vm, dtype, &Device::Cpu)).unwrap()
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
                if name.contains("layernorm") && name.ends_with("weight") {
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
        (c.hidden_units, c.num_blocks, c.num_heads, c.maxlen),
        (50, 2, 1, 50)
    );
    assert_eq!(c.dropout_rate, 0.5);
    assert_eq!(c.layer_norm_eps, 1e-8);
    assert_eq!(c.token, TokenInput::ItemCategory);
    assert!(!c.pad_to_longest);
    assert!(c.length_groups);
    assert_eq!(NAME, "sasrec");
    // serde: round trip, defaults for missing fields, unknown fields rejected.
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
    let partial: Config = serde_json::from_str(r#"{"hidden_units": 36, "token": "item"}"#).unwrap();
    assert_eq!(partial.hidden_units, 36);
    assert_eq!(partial.token, TokenInput::Item);
    assert_eq!(partial.maxlen, 50);
    assert!(serde_json::from_str::<Config>(r#"{"hidden": 36}"#).is_err());
}

#[test]
fn invalid_configs_are_errors() {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    for cfg in [
        Config {
            hidden_units: 0,
            ..small()
        },
        Config {
            num_heads: 0,
            ..small()
        },
        Config {
            maxlen: 0,
            ..small()
        },
        Config {
            dropout_rate: 1.0,
            ..small()
        },
        Config {
            hidden_units: 1,
            num_heads: 1,
            ..small()
        }, // too narrow for item + category halves
    ] {
        assert!(SasRec::new(&cfg, VOCAB, vb.clone()).is_err(), "{cfg:?}");
    }
}

#[test]
fn parameter_names_and_shapes() {
    let vm = VarMap::new();
    let m = build(
        &Config {
            num_blocks: 1,
            hidden_units: 9,
            num_heads: 4,
            ..small()
        },
        &vm,
        DType::F32,
    );
    // 4 heads do not divide 9: the rule picks 3.
    assert_eq!(m.heads(), 3);
    assert_eq!(m.feature_dim(), 9);
    let want: Vec<(String, Vec<usize>)> = [
        ("attention_layernorms.0.bias", vec![9]),
        ("attention_layernorms.0.weight", vec![9]),
        ("attention_layers.0.key.bias", vec![9]),
        ("attention_layers.0.key.weight", vec![9, 9]),
        ("attention_layers.0.query.bias", vec![9]),
        ("attention_layers.0.query.weight", vec![9, 9]),
        ("attention_layers.0.value.bias", vec![9]),
        ("attention_layers.0.value.weight", vec![9, 9]),
        ("cat_emb.weight", vec![5, 4]),
        ("forward_layernorms.0.bias", vec![9]),
        ("forward_layernorms.0.weight", vec![9]),
        ("forward_layers.0.conv1.bias", vec![9]),
        ("forward_layers.0.conv1.weight", vec![9, 9]),
        ("forward_layers.0.conv2.bias", vec![9]),
        ("forward_layers.0.conv2.weight", vec![9, 9]),
        ("item_emb.weight", vec![20, 5]),
        ("last_layernorm.bias", vec![9]),
        ("last_layernorm.weight", vec![9]),
        ("pos_emb.weight", vec![6, 9]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(names_and_shapes(&vm), want);

    // Item-only tokens use one table of the full width.
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
    assert!(shapes.contains(&("item_emb.weight".to_string(), vec![20, 8])));
    assert!(!shapes.iter().any(|(n, _)| n.starts_with("cat_emb")));
}

#[test]
fn heads_shapes_and_every_parameter_gets_a_gradient() {
    for cfg in [
        small(),
        Config::default(),
        Config {
            num_blocks: 0,
            ..small()
        },
        Config {
            token: TokenInput::Item,
            pad_to_longest: true,
            ..small()
        },
    ] {
        testkit::check_heads_and_gradients(
            |vb| Ok(Box::new(SasRec::new(&cfg, VOCAB, vb)?) as Box<dyn Backbone>),
            VOCAB,
        )
        .unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
    }
}

#[test]
fn gradients_match_finite_differences() {
    // Tiny f64 model, every parameter, through a CTR head and BCE (pre-LN blocks, causal and key
    // masks, two heads, final LayerNorm, tied target embedding).
    let cfg = Config {
        hidden_units: 4,
        num_blocks: 2,
        num_heads: 2,
        maxlen: 4,
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
        Box::new(SasRec::new(&cfg, vocab, vb.clone()).unwrap()),
        HeadKind::Ctr,
        vb,
    )
    .unwrap();
    randomize(&vm, 3);
    let batch =
        testkit::random_batch(vocab, &[4, 1, 0, 2], 4, Align::Right, 5, &Device::Cpu).unwrap();
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
    let vm = VarMap::new();
    let m = build(&small(), &vm, DType::F32);
    assert_eq!(
        m.layout(),
        Layout {
            max_history: 6,
            pad: PadPolicy::Fixed,
            align: Align::Right
        }
    );
    let longest = build(
        &Config {
            pad_to_longest: true,
            ..small()
        },
        &VarMap::new(),
        DType::F32,
    );
    assert_eq!(longest.layout().pad, PadPolicy::Longest);

    let dev = Device::Cpu;
    let left = testkit::random_batch(VOCAB, &[2, 3], 6, Align::Left, 1, &dev).unwrap();
    let err = m.forward(&left, false).unwrap_err().to_string();
    assert!(err.contains("Left-aligned"), "{err}");
    let wide = testkit::random_batch(VOCAB, &[2, 3], 7, Align::Right, 1, &dev).unwrap();
    let err = m.forward(&wide, false).unwrap_err().to_string();
    assert!(err.contains("width 7"), "{err}");
}

#[test]
fn narrower_batches_give_the_same_features() {
    // Positions count from the right and padding is fully masked, so padding to the longest
    // history (4) gives exactly what the fixed width (6) gives.
    let vm = VarMap::new();
    let m = build(&small(), &vm, DType::F32);
    randomize(&vm, 9);
    let dev = Device::Cpu;
    let lengths = [4, 0, 1, 3];
    let fixed = testkit::random_batch(VOCAB, &lengths, 6, Align::Right, 2, &dev).unwrap();
    let narrow = testkit::random_batch(VOCAB, &lengths, 4, Align::Right, 2, &dev).unwrap();
    let a = m.forward(&fixed, false).unwrap().features;
    let b = m.forward(&narrow, false).unwrap().features;
    let d = testkit::max_abs_diff(&a, &b).unwrap();
    assert!(d < 1e-6, "{d}");
}

#[test]
fn length_groups_give_the_features_and_gradients_of_one_padded_pass() {
    // 300 one-item rows and 100 full ones: the planner splits them, and the features and every
    // parameter's gradient equal those of one pass at the full width.
    let dev = Device::Cpu;
    let mut lengths = vec![1usize; 300];
    lengths.extend([6, 5, 0, 3].iter().cycle().take(100));
    let batch = testkit::random_batch(VOCAB, &lengths, 6, Align::Right, 4, &dev).unwrap();
    let mut results = Vec::new();
    for grouped in [true, false] {
        let cfg = Config {
            length_groups: grouped,
            ..small()
        };
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &dev);
        let sas = SasRec::new(&cfg, VOCAB, vb.clone()).unwrap();
        let groups = sas.length_groups(&batch).unwrap();
        assert_eq!(groups.len() > 1, grouped, "{groups:?}");
        let model = Model::new(Box::new(sas), HeadKind::Ctr, vb).unwrap();
        randomize(&vm, 21);
        let out = model.forward(&batch, false).unwrap();
        let labels = batch.labels.to_dtype(DType::F64).unwrap();
        let grads = bce_with_logits(&out.logits, &labels)
            .unwrap()
            .backward()
            .unwrap();
        let mut named: Vec<(String, Tensor)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), grads.get(v).unwrap().clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        results.push((out.logits, named));
    }
    let d = testkit::max_abs_diff(&results[0].0, &results[1].0).unwrap();
    assert!(d < 1e-12, "logits differ by {d}");
    for ((name, a), (_, b)) in results[0].1.iter().zip(&results[1].1) {
        let d = testkit::max_abs_diff(a, b).unwrap();
        assert!(d < 1e-12, "gradient of {name} differs by {d}");
    }
}

#[test]
fn empty_history_reads_the_last_layernorm_bias() {
    let vm = VarMap::new();
    let m = build(&small(), &vm, DType::F32);
    randomize(&vm, 4);
    let batch = testkit::random_batch(VOCAB, &[0, 2], 6, Align::Right, 3, &Device::Cpu).unwrap();
    let h = m.encode(&batch, false).unwrap();
    let beta = vm
        .data()
        .lock()
        .unwrap()
        .get("last_layernorm.bias")
        .unwrap()
        .as_tensor()
        .copy()
        .unwrap();
    let d = testkit::max_abs_diff(&h.get(0).unwrap(), &beta).unwrap();
    assert!(d < 1e-6, "{d}");
}

#[test]
fn dropout_only_when_training() {
    let vm = VarMap::new();
    let m = build(&small(), &vm, DType::F32);
    randomize(&vm, 6);
    let batch = testkit::random_batch(VOCAB, &[5, 3, 6], 6, Align::Right, 8, &Device::Cpu).unwrap();
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
        hidden_units: meta("hidden_units"),
        num_blocks: meta("num_blocks"),
        num_heads: meta("num_heads"),
        maxlen: meta("maxlen"),
        ..Config::default()
    };
    let batch = testkit::fixture_batch(&fx, Align::Right).unwrap();
    // f32 (the training dtype) to 1e-5; f64 shows the formulations agree to rounding.
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-10)] {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
        let q = Model::new(
            Box::new(SasRec::new(&cfg, vocab, vb.clone()).unwrap()),
            HeadKind::Quantile(10),
            vb.clone(),
        )
        .unwrap();
        let ctr = Model::new(
            Box::new(SasRec::new(&cfg, vocab, vb.clone()).unwrap()),
            HeadKind::Ctr,
            vb.pp("ctr"),
        )
        .unwrap();
        let sas = SasRec::new(&cfg, vocab, vb.clone()).unwrap();
        testkit::load_weights(&vm, &fx).unwrap();
        let checks = [
            ("h", sas.encode(&batch, false).unwrap()),
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
            eprintln!("sasrec parity {dtype:?} {name}: max |Δ| = {d:.3e}");
            assert!(d <= tol, "{dtype:?} {name}: max |Δ| = {d:e} > {tol:e}");
        }
    }
}
