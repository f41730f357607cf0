//! The trunk pieces every DIEN-repository CTR model shares (`mouna99/dien`, `script/model.py`;
//! `specs/backbones.md` §1): the uid/mid/cat embedding tables and their standard views
//! ([`CtrEmbeddings`]), the input normalisation of `build_fcn_net` ([`InputNorm`]: the "BN quirk"
//! [`FeatAffine`] by default, or a real [`BatchNorm1d`]), and `build_fcn_net` itself without its
//! final `Linear(80, 2)` ([`FcnTrunk`]; the model's head replaces that layer).
//!
//! Wide&Deep, PNN, DeepFM, DIN and DIEN are thin compositions of these pieces.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::batch::{Batch, Layout, Vocab};
use crate::embedding::{masked_sum, Embedding, EmbeddingConfig, EmbeddingInit};
use crate::mlp::{Activation, DiceNorm, Mlp, MlpConfig};
use crate::packed::PackedHistory;

/// TensorFlow 1's `tf.layers.batch_normalization` default epsilon (also the BN quirk's).
pub const BN_EPS: f64 = 1e-3;
/// TensorFlow 1's default decay of the moving statistics: `moving = 0.99·moving + 0.01·batch`.
pub const BN_MOMENTUM: f64 = 0.99;
/// The epsilon of the DIEN repository's `dice` (`script/Dice.py`).
pub const DICE_EPS: f64 = 1e-9;
/// The official per-field embedding size of the DIEN-repository models.
pub const DEFAULT_EMBEDDING_DIM: usize = 18;
/// `build_fcn_net`'s hidden sizes.
pub const DEFAULT_FCN_HIDDEN: [usize; 2] = [200, 80];

// ------------------------------------------------------------------ input normalisation

/// How `build_fcn_net` normalises its input before the first dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputNorm {
    /// [`FeatAffine`]: what the official code effectively computes (the "BN quirk"). **Default.**
    #[default]
    Affine,
    /// [`BatchNorm1d`]: a real batch normalisation with moving statistics, i.e. what the official
    /// code presumably meant to do.
    BatchNorm,
    /// No normalisation.
    None,
}

/// The DIEN/DIN repositories' "batch normalisation": `gamma ⊙ x / sqrt(1 + 1e-3) + beta`, with
/// `gamma` (init 1) and `beta` (init 0) per feature of the last dimension.
///
/// Both official codes call `tf.layers.batch_normalization(inputs=...)` with the default
/// `training=False` and never run its update ops, so the layer always normalises with its initial
/// moving statistics (mean 0, variance 1): a learnable per-feature affine with a constant
/// `1/sqrt(1.001)` scale. We keep the constant so weights transfer 1:1. Deterministic and
/// independent of the batch. Parameters `gamma`, `beta` `[C]`.
#[derive(Debug, Clone)]
pub struct FeatAffine {
    gamma: Tensor,
    beta: Tensor,
}

impl FeatAffine {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gamma: vb.get_with_hints(dim, "gamma", Init::Const(1.0))?,
            beta: vb.get_with_hints(dim, "beta", Init::Const(0.0))?,
        })
    }

    /// `[.., C]` → `[.., C]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let scale = 1.0 / (1.0 + BN_EPS).sqrt();
        (x * scale)?
            .broadcast_mul(&self.gamma)?
            .broadcast_add(&self.beta)
    }
}

/// A real batch normalisation over all dimensions but the last, with TensorFlow 1's semantics
/// (`tf.layers.batch_normalization`, epsilon [`BN_EPS`], momentum [`BN_MOMENTUM`]):
///
/// * training (`train = true`): normalise with the batch mean and **biased** variance (gradients
///   flow through them), then update `moving = momentum·moving + (1 − momentum)·batch` in place;
/// * evaluation: normalise with the moving statistics.
///
/// Parameters `gamma` (init 1), `beta` (init 0); buffers `moving_mean` (init 0) and
/// `moving_variance` (init 1) live in the same `VarBuilder` so checkpoints keep them, but they are
/// never part of the graph (read detached, written in place), so they get **no gradient** and
/// optimisers skip them. A forward with `train = true` therefore has a side effect: call it once
/// per optimisation step.
#[derive(Debug, Clone)]
pub struct BatchNorm1d {
    gamma: Tensor,
    beta: Tensor,
    moving_mean: Tensor,
    moving_variance: Tensor,
    eps: f64,
    momentum: f64,
}

impl BatchNorm1d {
    /// A layer with TensorFlow's defaults.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::with_settings(dim, BN_EPS, BN_MOMENTUM, vb)
    }

    /// A layer with a chosen epsilon and momentum (decay of the moving statistics, in `[0, 1]`).
    pub fn with_settings(dim: usize, eps: f64, momentum: f64, vb: VarBuilder) -> Result<Self> {
        if !(0.0..=1.0).contains(&momentum) || eps.is_nan() || eps < 0.0 {
            candle_core::bail!(
                "BatchNorm1d: need momentum in [0, 1] and eps >= 0, got {momentum}, {eps}"
            );
        }
        Ok(Self {
            gamma: vb.get_with_hints(dim, "gamma", Init::Const(1.0))?,
            beta: vb.get_with_hints(dim, "beta", Init::Const(0.0))?,
            moving_mean: vb.get_with_hints(dim, "moving_mean", Init::Const(0.0))?,
            moving_variance: vb.get_with_hints(dim, "moving_variance", Init::Const(1.0))?,
            eps,
            momentum,
        })
    }

    /// The moving mean `[C]` (a detached copy of the current values).
    pub fn moving_mean(&self) -> Result<Tensor> {
        self.moving_mean.detach().copy()
    }

    /// The moving variance `[C]` (a detached copy of the current values).
    pub fn moving_variance(&self) -> Result<Tensor> {
        self.moving_variance.detach().copy()
    }

    /// `[.., C]` → `[.., C]`; see the type docs for `train`. Fails on an empty batch in training
    /// (its statistics are undefined and would poison the moving averages).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = x.dim(candle_core::D::Minus1)?;
        let rows = x.elem_count() / c.max(1);
        let flat = x.reshape((rows, c))?;
        let (mean, var) = if train {
            if rows == 0 {
                candle_core::bail!("BatchNorm1d: cannot train on an empty batch");
            }
            let mean = flat.mean_keepdim(0)?; // [1, C]
            let var = flat.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?; // biased, as TF
            self.update_moving(&mean.squeeze(0)?, &var.squeeze(0)?)?;
            (mean, var)
        } else {
            (
                self.moving_mean.detach().unsqueeze(0)?,
                self.moving_variance.detach().unsqueeze(0)?,
            )
        };
        let inv_std = (var + self.eps)?.sqrt()?.recip()?;
        flat.broadcast_sub(&mean)?
            .broadcast_mul(&inv_std)?
            .broadcast_mul(&self.gamma)?
            .broadcast_add(&self.beta)?
            .reshape(x.shape())
    }

    /// In-place exponential moving average of the batch statistics (outside the graph).
    fn update_moving(&self, mean: &Tensor, var: &Tensor) -> Result<()> {
        let m = self.momentum;
        let dtype = self.moving_mean.dtype();
        for (moving, batch) in [(&self.moving_mean, mean), (&self.moving_variance, var)] {
            let batch = batch.detach().to_dtype(dtype)?;
            let new = ((moving.detach() * m)? + (batch * (1.0 - m))?)?.contiguous()?;
            // Writes into the storage shared with the VarMap's variable.
            moving.slice_set(&new, 0, 0)?;
        }
        Ok(())
    }
}

/// A built [`InputNorm`].
#[derive(Debug, Clone)]
pub enum InputNormLayer {
    Affine(FeatAffine),
    BatchNorm(BatchNorm1d),
    Identity,
}

impl InputNormLayer {
    /// Builds `kind` for `dim` features; parameters live directly under `vb`.
    pub fn new(kind: InputNorm, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(match kind {
            InputNorm::Affine => Self::Affine(FeatAffine::new(dim, vb)?),
            InputNorm::BatchNorm => Self::BatchNorm(BatchNorm1d::new(dim, vb)?),
            InputNorm::None => Self::Identity,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::Affine(a) => a.forward(x),
            Self::BatchNorm(b) => b.forward(x, train),
            Self::Identity => Ok(x.clone()),
        }
    }
}

// ------------------------------------------------------------------ activation choice

/// The activation of [`FcnTrunk`]'s hidden layers, as it appears in model configuration files.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum TrunkActivation {
    /// PReLU, per-feature slope initialised to 0.1 (`build_fcn_net(use_dice=False)`).
    #[serde(rename = "prelu")]
    PRelu,
    /// Dice normalised with the current batch's statistics, in training and evaluation alike
    /// (the DIEN repository's `script/Dice.py`, eps 1e-9: `build_fcn_net(use_dice=True)`).
    #[serde(rename = "dice")]
    Dice { eps: f64 },
    /// Dice with a learnable per-feature affine instead of batch statistics (the DIN repository's
    /// `Dice.py` under the same BN quirk as [`FeatAffine`]); deterministic per sample.
    #[serde(rename = "dice_affine")]
    DiceAffine,
}

impl TrunkActivation {
    /// The DIEN repository's Dice (batch statistics, eps 1e-9).
    pub const DICE: Self = TrunkActivation::Dice { eps: DICE_EPS };

    /// The [`Activation`] an [`Mlp`] builds from it.
    pub fn activation(&self) -> Activation {
        match *self {
            Self::PRelu => Activation::PRelu,
            Self::Dice { eps } => Activation::Dice(DiceNorm::BatchStats { eps }),
            Self::DiceAffine => Activation::Dice(DiceNorm::Affine),
        }
    }
}

// ------------------------------------------------------------------ shared settings

/// The settings of the DIEN-repository backbones that are an embedding table set plus one
/// `build_fcn_net` trunk (Wide&Deep, PNN, DeepFM): one struct serves all three, whose official
/// settings coincide (`specs/backbones.md` §5). Unknown YAML keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CtrConfig {
    /// Per-field embedding size E (official 18); an item is `[mid ; cat]`, `2E`.
    pub embedding_dim: usize,
    /// Hidden sizes of the (deep) trunk (official `[200, 80]`); the last one is the trunk's output.
    pub hidden: Vec<usize>,
    /// Normalisation of the trunk's input (official: the BN quirk, `affine`).
    pub input_norm: InputNorm,
    /// Activation of the hidden layers (official: `prelu`, `build_fcn_net(use_dice=False)`).
    pub activation: TrunkActivation,
    /// The most recent history items kept (official `maxlen` 100).
    pub max_history: usize,
}

impl Default for CtrConfig {
    fn default() -> Self {
        Self {
            embedding_dim: DEFAULT_EMBEDDING_DIM,
            hidden: DEFAULT_FCN_HIDDEN.to_vec(),
            input_norm: InputNorm::Affine,
            activation: TrunkActivation::PRelu,
            max_history: 100,
        }
    }
}

impl CtrConfig {
    /// Checks that every size is positive; errors name `model`.
    pub fn validate(&self, model: &str) -> Result<()> {
        if self.embedding_dim == 0 || self.max_history == 0 || self.hidden.contains(&0) {
            candle_core::bail!(
                "{model}: embedding_dim, max_history and hidden sizes must be > 0: {self:?}"
            );
        }
        Ok(())
    }

    /// The DIEN layout with this history cap: oldest first, padded to the batch's longest.
    pub fn layout(&self) -> Layout {
        Layout {
            max_history: self.max_history,
            ..Layout::default()
        }
    }
}

// ------------------------------------------------------------------ build_fcn_net

/// The shape of an [`FcnTrunk`].
#[derive(Debug, Clone, PartialEq)]
pub struct FcnConfig {
    /// Input features.
    pub input: usize,
    /// Hidden sizes (official `[200, 80]`).
    pub hidden: Vec<usize>,
    pub norm: InputNorm,
    /// Activation after every hidden layer.
    pub activation: Activation,
}

impl FcnConfig {
    /// The official `build_fcn_net`: BN quirk, `[200, 80]`, with the given activation (PReLU for
    /// Wide&Deep/PNN/DeepFM, Dice with batch statistics for DIN/DIEN).
    pub fn dien(input: usize, activation: Activation) -> Self {
        Self {
            input,
            hidden: DEFAULT_FCN_HIDDEN.to_vec(),
            norm: InputNorm::Affine,
            activation,
        }
    }

    /// The size of the output's last dimension (the last hidden size, or the input without
    /// hidden layers).
    pub fn out_dim(&self) -> usize {
        self.hidden.last().copied().unwrap_or(self.input)
    }
}

/// `build_fcn_net` (DIEN repository `script/model.py`) without its final `Linear(80, 2)`:
/// `norm → Linear(in, 200) → act → Linear(200, 80) → act`, `[B, in]` → `[B, 80]`.
///
/// Parameter names: the normalisation under `bn.*` (`gamma`, `beta`, and for a real batch norm
/// `moving_mean`, `moving_variance`), the layers as in [`Mlp`]: `fc{i}.weight`, `fc{i}.bias`,
/// `act{i}.alpha` (and `act{i}.gamma`, `act{i}.beta` for Dice with the affine norm). Linear
/// layers use TensorFlow's Glorot-uniform init with zero biases.
#[derive(Debug, Clone)]
pub struct FcnTrunk {
    norm: InputNormLayer,
    mlp: Mlp,
    cfg: FcnConfig,
}

impl FcnTrunk {
    pub fn new(cfg: &FcnConfig, vb: VarBuilder) -> Result<Self> {
        let norm = InputNormLayer::new(cfg.norm, cfg.input, vb.pp("bn"))?;
        let mlp = Mlp::new(&MlpConfig::new(cfg.input, &cfg.hidden, cfg.activation), vb)?;
        Ok(Self {
            norm,
            mlp,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &FcnConfig {
        &self.cfg
    }

    pub fn out_dim(&self) -> usize {
        self.cfg.out_dim()
    }

    /// `[B, in]` → `[B, out_dim]`. `train` only matters for [`InputNorm::BatchNorm`].
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.mlp.forward(&self.norm.forward(x, train)?)
    }
}

// ------------------------------------------------------------------ embeddings

/// The uid / mid / cat embedding tables of the DIEN-repository models and the views their
/// trunks are built from (`script/model.py::Model.__init__`).
///
/// Each table is `[vocab, E]` (official E = 18) with TensorFlow's default Glorot-uniform init
/// (`U(±sqrt(6 / (vocab + E)))`), and row 0 is padding: zero and frozen (see [`Embedding`]).
/// Parameters `uid.weight`, `mid.weight`, `cat.weight`.
///
/// **Deviation from the reference.** The official tables have no padding row: id 0 is a real,
/// trained "default" id, and the history sum `Σ_t heb[:, t]` runs over all `T` padded positions.
/// With a learned padding embedding, a sample's input (and score) would depend on how many
/// padding slots its batch-mates force on it (batches are padded to their longest history). Our
/// padding row is frozen at zero, so the unmasked and the masked sum coincide and [`Self::hsum`]
/// is batch-independent; we still apply the mask explicitly.
#[derive(Debug, Clone)]
pub struct CtrEmbeddings {
    uid: Embedding,
    mid: Embedding,
    cat: Embedding,
    dim: usize,
}

impl CtrEmbeddings {
    /// Builds the three `[vocab, dim]` tables.
    pub fn new(vocab: Vocab, dim: usize, vb: VarBuilder) -> Result<Self> {
        if dim == 0 || vocab.users == 0 || vocab.items == 0 || vocab.categories == 0 {
            candle_core::bail!(
                "CtrEmbeddings: need dim > 0 and non-empty vocabularies, got dim {dim}, {vocab:?}"
            );
        }
        let cfg = EmbeddingConfig {
            init: EmbeddingInit::GlorotUniform,
            zero_padding_init: true,
            freeze_padding: true,
        };
        Ok(Self {
            uid: Embedding::new(vocab.users, dim, cfg, vb.pp("uid"))?,
            mid: Embedding::new(vocab.items, dim, cfg, vb.pp("mid"))?,
            cat: Embedding::new(vocab.categories, dim, cfg, vb.pp("cat"))?,
            dim,
        })
    }

    /// E, the per-field size; item representations are `2E`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn uid(&self) -> &Embedding {
        &self.uid
    }

    pub fn mid(&self) -> &Embedding {
        &self.mid
    }

    pub fn cat(&self) -> &Embedding {
        &self.cat
    }

    /// `[mid(items) ; cat(cats)]` for id tensors of any equal shape `[..]` → `[.., 2E]`.
    pub fn item_pair(&self, items: &Tensor, cats: &Tensor) -> Result<Tensor> {
        let m = self.mid.forward(items)?;
        let c = self.cat.forward(cats)?;
        Tensor::cat(&[&m, &c], m.rank() - 1)
    }

    /// `u = Emb_uid(uid)`, `[B, E]`.
    pub fn user(&self, batch: &Batch) -> Result<Tensor> {
        self.uid.forward(&batch.users)
    }

    /// `ieb = [Emb_mid(mid) ; Emb_cat(cat)]` of the shown item, `[B, 2E]`.
    pub fn item_eb(&self, batch: &Batch) -> Result<Tensor> {
        self.item_pair(&batch.target_items, &batch.target_cats)
    }

    /// `heb = [Emb_mid(mid_his) ; Emb_cat(cat_his)]`, `[B, T, 2E]` (zero at padding).
    pub fn his_eb(&self, batch: &Batch) -> Result<Tensor> {
        self.item_pair(&batch.hist_items, &batch.hist_cats)
    }

    /// The negatives' `[Emb_mid ; Emb_cat]` per history position (DIEN's auxiliary loss),
    /// `[B, T, 2E]`, from `hist_neg_items` / `hist_neg_cats`.
    pub fn neg_his_eb(&self, batch: &Batch) -> Result<Tensor> {
        self.item_pair(&batch.hist_neg_items, &batch.hist_neg_cats)
    }

    /// `hsum = Σ_t mask_t · heb[:, t]`, `[B, 2E]` (masked sum; see the type docs for why this
    /// equals the reference's unmasked sum here). Looks up and sums the real positions only
    /// ([`PackedHistory`]): the same value as [`Self::hsum_of`] on [`Self::his_eb`], at the cost
    /// of the real history lengths instead of the padded width.
    pub fn hsum(&self, batch: &Batch) -> Result<Tensor> {
        self.hsum_packed(batch, &PackedHistory::of(batch)?)
    }

    /// [`Self::hsum`] with the batch's real positions already found (`pk` of `batch`).
    pub fn hsum_packed(&self, batch: &Batch, pk: &PackedHistory) -> Result<Tensor> {
        let real = self.item_pair(
            &pk.gather(&batch.hist_items)?,
            &pk.gather(&batch.hist_cats)?,
        )?;
        pk.segment_sum(&real)
    }

    /// [`Self::hsum`] from an already computed `heb` `[B, T, 2E]`.
    pub fn hsum_of(his_eb: &Tensor, batch: &Batch) -> Result<Tensor> {
        masked_sum(his_eb, &batch.mask)
    }
}

// ------------------------------------------------------------------ test support

/// Test support shared by the CTR backbone crates: random batches, the heads-and-gradients check
/// every backbone runs, and loading of the PyTorch parity fixtures that
/// `tests/reference/ctr_models.py` writes. Not part of the modelling API.
#[doc(hidden)]
pub mod testkit {
    use std::collections::{BTreeSet, HashMap};
    use std::path::Path;

    use candle_core::{DType, Device, Result, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    use crate::batch::{Align, Batch, HostBatch, Vocab};
    use crate::loss::bce_with_logits;
    use crate::model::{Backbone, HeadKind, Model};
    use crate::testing::vars_without_gradient;

    /// A deterministic generator of small pseudo-random integers (an LCG; no rand dependency).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, n: usize) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n.max(1) as u64) as u32
        }

        /// A real id in `1..vocab` (or 0 for a vocabulary with only padding).
        fn id(&mut self, vocab: usize) -> u32 {
            if vocab <= 1 {
                0
            } else {
                1 + self.next(vocab - 1)
            }
        }
    }

    /// A left-aligned batch with one row per entry of `lengths` (history lengths; 0 = empty
    /// history), padded to the longest (at least 1 column), random real ids, alternating labels.
    pub fn random_batch(
        vocab: Vocab,
        lengths: &[usize],
        seed: u64,
        device: &Device,
    ) -> Result<Batch> {
        let width = lengths.iter().copied().max().unwrap_or(0).max(1);
        let mut rng = Lcg(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut h = HostBatch::default();
        for (row, &len) in lengths.iter().enumerate() {
            h.users.push(rng.id(vocab.users));
            for t in 0..width {
                let real = t < len;
                let pick = |rng: &mut Lcg, v: usize| if real { rng.id(v) } else { 0 };
                h.hist_items.push(pick(&mut rng, vocab.items));
                h.hist_cats.push(pick(&mut rng, vocab.categories));
                h.hist_neg_items.push(pick(&mut rng, vocab.items));
                h.hist_neg_cats.push(pick(&mut rng, vocab.categories));
                h.mask.push(if real { 1.0 } else { 0.0 });
            }
            h.lengths.push(len as u32);
            h.target_items.push(rng.id(vocab.items));
            h.target_cats.push(rng.id(vocab.categories));
            h.labels.push((row % 2) as f32);
        }
        h.to_device(width, Align::Left, device)
    }

    /// The check every CTR backbone crate runs: through [`Model`] with a CTR, a Q and a
    /// `Quantile(10)` head (f32, CPU), on a batch of 6 with lengths `[3, 0, 5, 1, 2, 4]`:
    /// features are `[B, feature_dim]` (offset `[B]`), logits have the head's shape and are
    /// finite in training and evaluation, and every variable gets a non-zero gradient of a loss
    /// (BCE for CTR, a random projection otherwise, plus any auxiliary loss), except the names
    /// listed in `may_lack_gradient` (e.g. a bias that a softmax cancels).
    pub fn check_heads_and_gradients<F>(
        make: F,
        vocab: Vocab,
        may_lack_gradient: &[&str],
    ) -> Result<()>
    where
        F: Fn(VarBuilder) -> Result<Box<dyn Backbone>>,
    {
        let dev = Device::Cpu;
        let batch = random_batch(vocab, &[3, 0, 5, 1, 2, 4], 7, &dev)?;
        let b = batch.size;
        for (kind, shape) in [
            (HeadKind::Ctr, vec![b]),
            (HeadKind::Q, vec![b, 2]),
            (HeadKind::Quantile(10), vec![b, 2, 10]),
        ] {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let backbone = make(vb.clone())?;
            let f = backbone.forward(&batch, true)?;
            if f.features.dims() != [b, backbone.feature_dim()] {
                candle_core::bail!(
                    "features {:?}, feature_dim {}",
                    f.features.dims(),
                    backbone.feature_dim()
                );
            }
            if let Some(o) = &f.logit_offset {
                if o.dims() != [b] {
                    candle_core::bail!("logit offset {:?}", o.dims());
                }
            }
            let model = Model::new(backbone, kind, vb)?;
            for train in [false, true] {
                let out = model.forward(&batch, train)?;
                if out.logits.dims() != &shape[..] {
                    candle_core::bail!("{kind:?}: logits {:?}, want {shape:?}", out.logits.dims());
                }
                let v: Vec<f32> = out.logits.flatten_all()?.to_vec1()?;
                if v.iter().any(|x| !x.is_finite()) {
                    candle_core::bail!("{kind:?}: non-finite logits {v:?}");
                }
            }
            let out = model.forward(&batch, true)?;
            let mut loss = match kind {
                HeadKind::Ctr => bce_with_logits(&out.logits, &batch.labels)?,
                _ => {
                    let n = out.logits.elem_count();
                    let r: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
                    let r = Tensor::from_vec(r, out.logits.shape(), &dev)?;
                    (&out.logits * r)?.sum_all()?
                }
            };
            if let Some(aux) = &out.aux_loss {
                loss = (loss + aux)?;
            }
            let missing = vars_without_gradient(&varmap, &loss)?;
            let unexpected: Vec<_> = missing
                .iter()
                .filter(|m| !may_lack_gradient.contains(&m.as_str()))
                .collect();
            if !unexpected.is_empty() || varmap.all_vars().is_empty() {
                candle_core::bail!("{kind:?}: variables without gradient: {unexpected:?}");
            }
        }
        Ok(())
    }

    /// Prefixes of the non-weight tensors of a fixture.
    pub const INPUT: &str = "input.";
    pub const EXPECTED: &str = "expected.";
    pub const META: &str = "meta.";

    /// All tensors of one fixture file.
    #[derive(Debug)]
    pub struct Fixture {
        pub tensors: HashMap<String, Tensor>,
    }

    impl Fixture {
        pub fn load(path: impl AsRef<Path>) -> Result<Self> {
            Ok(Self {
                tensors: candle_core::safetensors::load(path, &Device::Cpu)?,
            })
        }

        pub fn get(&self, name: &str) -> Result<Tensor> {
            self.tensors
                .get(name)
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg(format!("fixture has no tensor {name}")))
        }

        /// The names of the weights (everything but `input.*`, `expected.*`, `meta.*`).
        pub fn weight_names(&self) -> BTreeSet<String> {
            self.tensors
                .keys()
                .filter(|k| ![INPUT, EXPECTED, META].iter().any(|p| k.starts_with(p)))
                .cloned()
                .collect()
        }

        /// Fails unless the fixture's weights and the VarMap's variables have the same names.
        pub fn check_names(&self, varmap: &VarMap) -> Result<()> {
            let vars: BTreeSet<String> = varmap
                .data()
                .lock()
                .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?
                .keys()
                .cloned()
                .collect();
            let weights = self.weight_names();
            if vars != weights {
                candle_core::bail!(
                    "names differ: only in the model {:?}, only in the fixture {:?}",
                    vars.difference(&weights).collect::<Vec<_>>(),
                    weights.difference(&vars).collect::<Vec<_>>()
                );
            }
            Ok(())
        }

        /// `expected.<name>`.
        pub fn expected(&self, name: &str) -> Result<Tensor> {
            self.get(&format!("{EXPECTED}{name}"))
        }

        /// An integer `meta.<name>` vector.
        pub fn meta(&self, name: &str) -> Result<Vec<usize>> {
            let v: Vec<i64> = self
                .get(&format!("{META}{name}"))?
                .flatten_all()?
                .to_dtype(DType::I64)?
                .to_vec1()?;
            Ok(v.into_iter().map(|x| x.max(0) as usize).collect())
        }

        fn ids(&self, name: &str) -> Result<Vec<u32>> {
            let v: Vec<i64> = self
                .get(&format!("{INPUT}{name}"))?
                .flatten_all()?
                .to_dtype(DType::I64)?
                .to_vec1()?;
            Ok(v.into_iter().map(|x| x as u32).collect())
        }

        fn floats(&self, name: &str) -> Result<Vec<f32>> {
            self.get(&format!("{INPUT}{name}"))?
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1()
        }

        /// The input batch (left-aligned, as the fixture writes it) on the CPU.
        pub fn batch(&self) -> Result<Batch> {
            let (_, width) = self.get(&format!("{INPUT}hist_items"))?.dims2()?;
            HostBatch {
                users: self.ids("users")?,
                hist_items: self.ids("hist_items")?,
                hist_cats: self.ids("hist_cats")?,
                hist_neg_items: self.ids("hist_neg_items")?,
                hist_neg_cats: self.ids("hist_neg_cats")?,
                mask: self.floats("mask")?,
                lengths: self.ids("lengths")?,
                target_items: self.ids("target_items")?,
                target_cats: self.ids("target_cats")?,
                labels: self.floats("labels")?,
            }
            .to_device(width, Align::Left, &Device::Cpu)
        }
    }

    /// Forward parity with a PyTorch fixture: builds the backbone twice on one `VarMap` (f32, CPU)
    /// with `make`, puts a `Quantile(n)` head (`head.*`, `n` from `expected.quantile`) on one and a
    /// CTR head (`ctr.head.*`) on the other, checks that the model's and the fixture's weight names
    /// agree, loads the weights and compares, in evaluation and in training mode, the features
    /// (`expected.features`), the logit offset (`expected.offset`, if the fixture has it) and both
    /// heads' logits (`expected.quantile`, `expected.ctr`). Returns the largest absolute error and
    /// fails if it exceeds `tol`.
    pub fn check_parity<F>(make: F, path: impl AsRef<Path>, tol: f64) -> Result<f64>
    where
        F: Fn(&Fixture, VarBuilder) -> Result<Box<dyn Backbone>>,
    {
        let path = path.as_ref();
        let fx = Fixture::load(path)?;
        let dev = Device::Cpu;
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let want_q = fx.expected("quantile")?;
        let n = want_q.dim(2)?;
        let q_model = Model::new(make(&fx, vb.clone())?, HeadKind::Quantile(n), vb.clone())?;
        let ctr_model = Model::new(make(&fx, vb.clone())?, HeadKind::Ctr, vb.pp("ctr"))?;
        fx.check_names(&varmap)?;
        varmap.load(path)?;
        let batch = fx.batch()?;
        let mut worst = 0.0f64;
        let mut compare = |what: &str, got: &Tensor, want: &Tensor| -> Result<()> {
            let d = max_abs_diff(got, want)?;
            // NaN fails too.
            if d.is_nan() || d > tol {
                candle_core::bail!("{what}: max |Δ| = {d:e} > {tol:e}");
            }
            worst = worst.max(d);
            Ok(())
        };
        for train in [false, true] {
            let f = q_model.backbone().forward(&batch, train)?;
            compare("features", &f.features, &fx.expected("features")?)?;
            match (&f.logit_offset, fx.tensors.get("expected.offset")) {
                (Some(got), Some(want)) => compare("offset", got, want)?,
                (None, None) => {}
                (got, want) => candle_core::bail!(
                    "logit offset: model has one: {}, fixture has one: {}",
                    got.is_some(),
                    want.is_some()
                ),
            }
            compare(
                "quantile head",
                &q_model.forward(&batch, train)?.logits,
                &want_q,
            )?;
            compare(
                "ctr head",
                &ctr_model.forward(&batch, train)?.logits,
                &fx.expected("ctr")?,
            )?;
        }
        Ok(worst)
    }

    /// `max |a − b|` over all elements (shapes must agree).
    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        if a.dims() != b.dims() {
            candle_core::bail!("shapes differ: {:?} vs {:?}", a.dims(), b.dims());
        }
        let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?.abs()?;
        d.flatten_all()?.max(0)?.to_scalar::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Align, HostBatch};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn embeddings_views() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let vocab = Vocab {
            users: 5,
            items: 9,
            categories: 4,
        };
        let emb = CtrEmbeddings::new(vocab, 3, vb).unwrap();
        let b = HostBatch {
            users: vec![1, 4],
            hist_items: vec![2, 3, 0, 0, 0, 0],
            hist_cats: vec![1, 2, 0, 0, 0, 0],
            hist_neg_items: vec![5, 6, 0, 0, 0, 0],
            hist_neg_cats: vec![3, 3, 0, 0, 0, 0],
            mask: vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            lengths: vec![2, 0],
            target_items: vec![7, 8],
            target_cats: vec![1, 2],
            labels: vec![1.0, 0.0],
        }
        .to_device(3, Align::Left, &Device::Cpu)
        .unwrap();
        assert_eq!(emb.user(&b).unwrap().dims(), [2, 3]);
        assert_eq!(emb.item_eb(&b).unwrap().dims(), [2, 6]);
        let heb = emb.his_eb(&b).unwrap();
        assert_eq!(heb.dims(), [2, 3, 6]);
        assert_eq!(emb.neg_his_eb(&b).unwrap().dims(), [2, 3, 6]);
        let hsum = emb.hsum(&b).unwrap();
        // With the frozen zero padding row the masked sum equals the reference's unmasked sum.
        let unmasked = heb.sum(1).unwrap();
        assert_eq!(testkit::max_abs_diff(&hsum, &unmasked).unwrap(), 0.0);
        let rows: Vec<Vec<f32>> = hsum.to_vec2().unwrap();
        assert!(
            rows[1].iter().all(|&v| v == 0.0),
            "empty history sums to zero"
        );
        // Glorot bound of the item table: sqrt(6 / (9 + 3)).
        let bound = (6.0f64 / 12.0).sqrt() as f32;
        let w: Vec<Vec<f32>> = emb.mid().weight().to_vec2().unwrap();
        assert!(w[0].iter().all(|&v| v == 0.0));
        assert!(w.iter().flatten().all(|v| v.abs() <= bound));
        assert!(CtrEmbeddings::new(vocab, 0, VarBuilder::zeros(DType::F32, &Device::Cpu)).is_err());
    }
}
