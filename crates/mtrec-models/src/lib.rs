//! Registry of MTRec's backbones: a model name and a YAML config to a constructed backbone.
//!
//! This is the only crate that knows every backbone crate. Each backbone crate exposes `NAME`, a
//! serde `Config` (`#[serde(default, deny_unknown_fields)]`, `Default` = the official
//! hyper-parameters) and `<Model>::new(&Config, Vocab, VarBuilder)`; the [`REGISTRY`] table below
//! turns that into
//!
//! - [`names`]: the registered names;
//! - [`effective_config`] / [`check_config`]: a YAML text (possibly partial) parsed into the model's
//!   `Config` — unknown keys and bad values are errors that name the origin (a file) and the field —
//!   and written back with every default filled in, which is what a run records;
//! - [`default_config_yaml`]: the defaults as YAML (`mtrec models --defaults <name>`);
//! - [`build`]: the backbone itself.
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use candle_nn::{VarBuilder, VarMap};
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
//! let vocab = mtrec_nn::Vocab { users: 100, items: 50, categories: 5 };
//! let din = mtrec_models::build("din", Some("embedding_dim: 8"), vocab, vb)?;
//! assert_eq!(din.name(), "din");
//! # Ok::<(), mtrec_models::ModelError>(())
//! ```
//!
//! **Adding a backbone**: add its crate to this crate's `Cargo.toml` and one `entry!` line to
//! [`REGISTRY`]; then write `experiments/models/<name>.yaml` (the test
//! `experiment_files_hold_the_defaults` checks that it parses to the defaults).

use std::path::Path;

use candle_nn::VarBuilder;
use mtrec_nn::{Backbone, Vocab};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A name that is not registered.
    #[error("unknown model '{name}' (known models: {known})")]
    Unknown { name: String, known: String },
    /// A configuration that does not parse into the model's `Config`.
    #[error("{origin}: invalid configuration of model '{model}': {message}")]
    Config {
        model: String,
        origin: String,
        message: String,
    },
    /// A configuration file that cannot be read.
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Building the model failed (a value the constructor rejects, or a tensor error).
    #[error("model '{model}': {message}")]
    Build { model: String, message: String },
}

/// A candle error's message without the backtrace candle attaches when `RUST_BACKTRACE` is set.
pub fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error;
    match e {
        Error::WithBacktrace { inner, .. } => candle_message(inner),
        Error::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        Error::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        e => e.to_string(),
    }
}

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// One registered backbone: its name and what the registry can do with it.
pub struct Entry {
    /// The registry name (`mtrec_<crate>::NAME`).
    pub name: &'static str,
    /// YAML (possibly partial) → the effective config as YAML, or the parse error.
    effective: fn(&str) -> std::result::Result<serde_norway::Value, String>,
    /// YAML → backbone.
    build: fn(&str, Vocab, VarBuilder) -> Result<Box<dyn Backbone>>,
}

fn parse<C: DeserializeOwned>(yaml: &str) -> std::result::Result<C, String> {
    // An empty document means "all defaults" (serde_norway reads it as unit, not as a map).
    let text = if yaml.trim().is_empty() { "{}" } else { yaml };
    serde_norway::from_str(text).map_err(|e| e.to_string())
}

fn effective<C: DeserializeOwned + Serialize>(
    yaml: &str,
) -> std::result::Result<serde_norway::Value, String> {
    let cfg: C = parse(yaml)?;
    serde_norway::to_value(&cfg).map_err(|e| e.to_string())
}

/// A registry entry for backbone crate `$krate` with model type `$model`.
macro_rules! entry {
    ($krate:ident :: $model:ident) => {
        Entry {
            name: $krate::NAME,
            effective: effective::<$krate::Config>,
            build: |yaml, vocab, vb| {
                let cfg: $krate::Config = parse(yaml).map_err(|message| ModelError::Config {
                    model: $krate::NAME.to_owned(),
                    origin: "model config".to_owned(),
                    message,
                })?;
                let m = $krate::$model::new(&cfg, vocab, vb).map_err(|e| ModelError::Build {
                    model: $krate::NAME.to_owned(),
                    message: candle_message(&e),
                })?;
                Ok(Box::new(m) as Box<dyn Backbone>)
            },
        }
    };
}

/// Every registered backbone, in the order of the paper's Table 1. **Add new backbones here.**
pub static REGISTRY: &[Entry] = &[
    entry!(mtrec_widedeep::WideDeep),
    entry!(mtrec_pnn::Pnn),
    entry!(mtrec_deepfm::DeepFm),
    entry!(mtrec_din::Din),
    entry!(mtrec_dien::Dien),
    entry!(mtrec_sasrec::SasRec),
    entry!(mtrec_linrec::LinRec),
    entry!(mtrec_sigma::Sigma),
];

/// The registered model names.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

fn find<'a>(registry: &'a [Entry], name: &str) -> Result<&'a Entry> {
    registry
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| ModelError::Unknown {
            name: name.to_owned(),
            known: registry
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Whether `name` is registered.
pub fn is_known(name: &str) -> bool {
    REGISTRY.iter().any(|e| e.name == name)
}

fn effective_in(
    registry: &[Entry],
    name: &str,
    yaml: Option<&str>,
    origin: &str,
) -> Result<serde_norway::Value> {
    let e = find(registry, name)?;
    (e.effective)(yaml.unwrap_or("")).map_err(|message| ModelError::Config {
        model: name.to_owned(),
        origin: origin.to_owned(),
        message,
    })
}

/// The effective configuration of `name` from a YAML text (`None` or empty = all defaults), with
/// every field present. Errors (unknown key, wrong type) name `origin` (e.g. the file) and the
/// field with its line.
pub fn check_config(name: &str, yaml: Option<&str>, origin: &str) -> Result<serde_norway::Value> {
    effective_in(REGISTRY, name, yaml, origin)
}

/// [`check_config`] with the origin "model config".
pub fn effective_config(name: &str, yaml: Option<&str>) -> Result<serde_norway::Value> {
    check_config(name, yaml, "model config")
}

/// The default configuration of `name` as YAML.
pub fn default_config_yaml(name: &str) -> Result<String> {
    let v = effective_config(name, None)?;
    serde_norway::to_string(&v).map_err(|e| ModelError::Config {
        model: name.to_owned(),
        origin: "defaults".into(),
        message: e.to_string(),
    })
}

/// Reads a model configuration file (YAML text; check it with [`check_config`] and the path as
/// origin).
pub fn load_config_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn build_in(
    registry: &[Entry],
    name: &str,
    yaml: Option<&str>,
    vocab: Vocab,
    vb: VarBuilder,
) -> Result<Box<dyn Backbone>> {
    let e = find(registry, name)?;
    (e.build)(yaml.unwrap_or(""), vocab, vb)
}

/// Builds backbone `name` from a YAML configuration (`None` = defaults) for `vocab`, with its
/// variables from `vb`.
pub fn build(
    name: &str,
    yaml: Option<&str>,
    vocab: Vocab,
    vb: VarBuilder,
) -> Result<Box<dyn Backbone>> {
    build_in(REGISTRY, name, yaml, vocab, vb)
}

/// Builds backbone `name` from an effective configuration value (as recorded in a run's
/// `config.yaml`).
pub fn build_from_value(
    name: &str,
    config: &serde_norway::Value,
    vocab: Vocab,
    vb: VarBuilder,
) -> Result<Box<dyn Backbone>> {
    let text = if config.is_null() {
        String::new()
    } else {
        serde_norway::to_string(config).map_err(|e| ModelError::Config {
            model: name.to_owned(),
            origin: "model config".into(),
            message: e.to_string(),
        })?
    };
    build(name, Some(&text), vocab, vb)
}

/// A backbone constructor for the trainer and the reward fit (`mtrec_train::BuildBackbone`):
/// [`build_from_value`] of `name` with `config`, its error turned into a candle error.
pub fn builder(
    name: String,
    config: serde_norway::Value,
) -> impl Fn(Vocab, VarBuilder<'static>) -> candle_core::Result<Box<dyn Backbone>> {
    move |vocab, vb| {
        build_from_value(&name, &config, vocab, vb)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
