//! PNN (Y. Qu et al., "Product-based Neural Networks for User Response Prediction", ICDM 2016) as
//! an MTRec backbone, following the DIEN repository's Amazon version (`mouna99/dien`,
//! `script/model.py::Model_PNN`; `specs/backbones.md` §2.2):
//!
//! ```text
//! u = Emb_uid(uid) [E]   ieb = [Emb_mid(mid) ; Emb_cat(cat)] [2E]   hsum = Σ_t heb_t [2E]
//! inp = [u ; ieb ; hsum ; ieb ⊙ hsum]                               [7E = 126]
//! features = build_fcn_net(inp) without Linear(80, 2)
//!          = PReLU(Linear(200→80)(PReLU(Linear(126→200)(BN(inp)))))  [80]
//! ```
//!
//! The "product layer" of the reference is the element-wise product `ieb ⊙ hsum` of the shown
//! item and the summed history (a simplified IPNN/OPNN); the paper's pairwise inner or pooled
//! outer products over all fields are not what the Amazon code does, so we do not add them
//! (`mtrec_nn::inner_products` / `outer_product_pooled` exist for such a variant).
//!
//! Deviations from the reference:
//! * **Padding** (see [`mtrec_nn::CtrEmbeddings`]): id 0 is a frozen zero row and the history sum
//!   is masked; the reference sums a learned "default" embedding over all padded positions, which
//!   makes a sample's score depend on its batch-mates' history lengths.
//! * **Output**: the backbone stops before `Linear(80, 2)`; the head (one click logit with BCE,
//!   or the Q / quantile layer) replaces it (`specs/backbones.md` §1, §4).
//! * `BN` is the reference's "BN quirk" ([`mtrec_nn::FeatAffine`]) by default; a real batch
//!   normalisation is available with [`InputNorm::BatchNorm`].
//!
//! Parameters: `emb.{uid,mid,cat}.weight`, `fcn.bn.{gamma,beta}`, `fcn.fc{0,1}.{weight,bias}`,
//! `fcn.act{0,1}.alpha` (see [`mtrec_nn::FcnTrunk`]); the head adds `head.{weight,bias}`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use mtrec_nn::{
    Align, Backbone, Batch, CtrEmbeddings, FcnConfig, FcnTrunk, Features, InputNorm, Layout,
    PadPolicy, TrunkActivation, Vocab,
};

/// The registry name.
pub const NAME: &str = "pnn";

/// PNN hyper-parameters; the defaults are the DIEN repository's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Per-field embedding size E (official 18); an item is `[mid ; cat]`, `2E`.
    pub embedding_dim: usize,
    /// Hidden sizes of `build_fcn_net` (official `[200, 80]`); the last one is the feature size.
    pub hidden: Vec<usize>,
    /// Normalisation of the trunk's input (official: the BN quirk, `affine`).
    pub input_norm: InputNorm,
    /// Activation of the hidden layers (official: `prelu`, `build_fcn_net(use_dice=False)`).
    pub activation: TrunkActivation,
    /// The most recent history items kept (official `maxlen` 100).
    pub max_history: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            embedding_dim: mtrec_nn::ctr::DEFAULT_EMBEDDING_DIM,
            hidden: mtrec_nn::ctr::DEFAULT_FCN_HIDDEN.to_vec(),
            input_norm: InputNorm::Affine,
            activation: TrunkActivation::PRelu,
            max_history: 100,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<()> {
        if self.embedding_dim == 0 || self.max_history == 0 || self.hidden.contains(&0) {
            candle_core::bail!(
                "pnn: embedding_dim, max_history and hidden sizes must be > 0: {self:?}"
            );
        }
        Ok(())
    }
}

/// The PNN trunk: features of size `hidden.last()` (80).
#[derive(Debug, Clone)]
pub struct Pnn {
    cfg: Config,
    emb: CtrEmbeddings,
    fcn: FcnTrunk,
}

impl Pnn {
    pub fn new(cfg: &Config, vocab: Vocab, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let e = cfg.embedding_dim;
        let emb = CtrEmbeddings::new(vocab, e, vb.pp("emb"))?;
        let fcn = FcnConfig {
            input: 7 * e,
            hidden: cfg.hidden.clone(),
            norm: cfg.input_norm,
            activation: cfg.activation.activation(),
        };
        let fcn = FcnTrunk::new(&fcn, vb.pp("fcn"))?;
        Ok(Self {
            cfg: cfg.clone(),
            emb,
            fcn,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

impl Backbone for Pnn {
    fn name(&self) -> &str {
        NAME
    }

    fn feature_dim(&self) -> usize {
        self.fcn.out_dim()
    }

    fn layout(&self) -> Layout {
        Layout {
            max_history: self.cfg.max_history,
            pad: PadPolicy::Longest,
            align: Align::Left,
        }
    }

    fn forward(&self, batch: &Batch, train: bool) -> Result<Features> {
        let u = self.emb.user(batch)?;
        let ieb = self.emb.item_eb(batch)?;
        let hsum = CtrEmbeddings::hsum_of(&self.emb.his_eb(batch)?, batch)?;
        let product = (&ieb * &hsum)?;
        let inp = Tensor::cat(&[&u, &ieb, &hsum, &product], 1)?;
        Ok(Features::plain(self.fcn.forward(&inp, train)?))
    }
}
