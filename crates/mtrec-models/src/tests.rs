use super::*;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use mtrec_nn::{Align, Batch, Features, HostBatch};

/// A stand-in backbone crate, to test the registry's plumbing independently of the real ones.
mod fake {
    use super::*;

    pub const NAME: &str = "fake";

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Config {
        /// Feature size.
        pub dim: usize,
        pub scale: f64,
    }

    impl Default for Config {
        fn default() -> Self {
            Config { dim: 3, scale: 1.0 }
        }
    }

    pub struct Fake {
        dim: usize,
        w: Tensor,
    }

    impl Fake {
        pub fn new(cfg: &Config, vocab: Vocab, vb: VarBuilder) -> candle_core::Result<Self> {
            if cfg.dim == 0 {
                candle_core::bail!("dim must be > 0");
            }
            let w = vb.get((vocab.items, cfg.dim), "w")?;
            Ok(Fake { dim: cfg.dim, w })
        }
    }

    impl Backbone for Fake {
        fn name(&self) -> &str {
            NAME
        }
        fn feature_dim(&self) -> usize {
            self.dim
        }
        fn forward(&self, batch: &Batch, _train: bool) -> candle_core::Result<Features> {
            Ok(Features::plain(
                self.w.index_select(&batch.target_items, 0)?,
            ))
        }
    }
}

static TEST_REGISTRY: &[Entry] = &[entry!(fake::Fake)];

fn vb(vm: &VarMap) -> VarBuilder<'static> {
    VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu)
}

const VOCAB: Vocab = Vocab {
    users: 20,
    items: 30,
    categories: 4,
};

#[test]
fn configs_parse_partially_reject_unknown_keys_and_name_the_origin() {
    let v = effective_in(TEST_REGISTRY, "fake", Some("dim: 5"), "x.yaml").unwrap();
    let want: serde_norway::Value = serde_norway::from_str("dim: 5\nscale: 1.0").unwrap();
    assert_eq!(v, want);
    for empty in [None, Some(""), Some("  \n# only a comment\n")] {
        let v = effective_in(TEST_REGISTRY, "fake", empty, "x").unwrap();
        assert_eq!(v["dim"], serde_norway::Value::from(3u64), "{empty:?}");
    }
    let e = effective_in(
        TEST_REGISTRY,
        "fake",
        Some("dim: 5\ndimm: 2\n"),
        "m/fake.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("m/fake.yaml: invalid configuration of model 'fake'")
            && e.contains("unknown field `dimm`")
            && e.contains("line 2"),
        "{e}"
    );
    let e = effective_in(TEST_REGISTRY, "fake", Some("dim: many"), "m.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("dim") && e.contains("m.yaml"), "{e}");
    let e = effective_in(TEST_REGISTRY, "nope", None, "x")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "unknown model 'nope' (known models: fake)");
}

#[test]
fn builds_from_yaml_and_reports_constructor_errors() {
    let vm = VarMap::new();
    let m = build_in(TEST_REGISTRY, "fake", Some("dim: 4"), VOCAB, vb(&vm)).unwrap();
    assert_eq!((m.name(), m.feature_dim()), ("fake", 4));
    let e = build_in(
        TEST_REGISTRY,
        "fake",
        Some("dim: 0"),
        VOCAB,
        vb(&VarMap::new()),
    )
    .err()
    .unwrap()
    .to_string();
    assert_eq!(
        e, "model 'fake': dim must be > 0",
        "no backtrace in messages"
    );
}

/// Three samples with histories of 3, 2 and 4 items, laid out as `layout` asks.
fn batch(layout: mtrec_nn::Layout) -> Batch {
    let hist: [&[u32]; 3] = [&[1, 2, 3], &[4, 5], &[6, 7, 8, 9]];
    let w = match layout.pad {
        mtrec_nn::PadPolicy::Fixed => layout.max_history,
        mtrec_nn::PadPolicy::Longest => 4,
    };
    let mut h = HostBatch {
        users: vec![1, 2, 3],
        target_items: vec![20, 21, 22],
        target_cats: vec![1, 2, 3],
        labels: vec![1., 0., 1.],
        ..HostBatch::default()
    };
    for items in hist {
        let items = &items[items.len().saturating_sub(w)..];
        let pad = w - items.len();
        let mut row = vec![0u32; w];
        let at = if layout.align == Align::Left { 0 } else { pad };
        row[at..at + items.len()].copy_from_slice(items);
        h.hist_items.extend(&row);
        h.hist_cats
            .extend(row.iter().map(|&i| if i == 0 { 0 } else { 1 + i % 3 }));
        h.hist_neg_items
            .extend(row.iter().map(|&i| if i == 0 { 0 } else { 10 + i }));
        h.hist_neg_cats.extend(
            row.iter()
                .map(|&i| if i == 0 { 0 } else { 1 + (i + 1) % 3 }),
        );
        h.mask
            .extend(row.iter().map(|&i| if i == 0 { 0f32 } else { 1.0 }));
        h.lengths.push(items.len() as u32);
    }
    h.to_device(w, layout.align, &Device::Cpu).unwrap()
}

/// Every registered backbone builds from its defaults and produces `[B, feature_dim]` features.
#[test]
fn every_registered_backbone_builds_from_its_defaults() {
    assert!(!names().is_empty());
    for name in names() {
        let vm = VarMap::new();
        let m = build(name, None, VOCAB, vb(&vm)).unwrap();
        assert_eq!(m.name(), name);
        let f = m.forward(&batch(m.layout()), true).unwrap();
        assert_eq!(f.features.dims(), &[3, m.feature_dim()], "{name}");
        let v = effective_config(name, None).unwrap();
        let vm = VarMap::new();
        build_from_value(name, &v, VOCAB, vb(&vm)).unwrap();
        assert!(default_config_yaml(name).unwrap().contains(':'));
    }
    let e = build("nope", None, VOCAB, vb(&VarMap::new()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("unknown model 'nope'") && e.contains("din"),
        "{e}"
    );
}

/// `experiments/models/<name>.yaml` exists for every registered model and holds its defaults.
#[test]
fn experiment_files_hold_the_defaults() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/models");
    for name in names() {
        let p = dir.join(format!("{name}.yaml"));
        let text = load_config_file(&p).unwrap_or_else(|e| {
            panic!(
                "{e}\nwrite it from `mtrec models --defaults {name}`:\n{}",
                default_config_yaml(name).unwrap()
            )
        });
        let got = check_config(name, Some(&text), &p.display().to_string()).unwrap();
        assert_eq!(
            got,
            effective_config(name, None).unwrap(),
            "{} does not hold the defaults of {name}; they are:\n{}",
            p.display(),
            default_config_yaml(name).unwrap()
        );
        // Every key is written out (the file documents the defaults, it does not rely on them).
        let keys = |v: &serde_norway::Value| -> Vec<String> {
            let mut k: Vec<String> = v
                .as_mapping()
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            k.sort();
            k
        };
        let raw: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(keys(&raw), keys(&got), "{}: write every field", p.display());
    }
}
