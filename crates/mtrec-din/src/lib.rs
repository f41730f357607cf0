//! DIN (G. Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018) as an
//! MTRec backbone, following the DIEN repository's Amazon version (`mouna99/dien`,
//! `script/model.py::Model_DIN`, `script/utils.py::din_attention`, `script/Dice.py`;
//! `specs/backbones.md` §2.4):
//!
//! ```text
//! u = Emb_uid(uid) [E]   ieb = [Emb_mid(mid) ; Emb_cat(cat)] [D = 2E]   heb_t, hsum = Σ_t heb_t
//! s_t  = Linear(40→1)(σ(Linear(80→40)(σ(Linear(4D→80)([ieb ; heb_t ; ieb − heb_t ; ieb ⊙ heb_t])))))
//! w    = softmax_t(mask_t ? s_t : −2^32 + 1)        att = Σ_t w_t heb_t               [D]
//! inp  = [u ; ieb ; hsum ; ieb ⊙ hsum ; att]                                            [9E = 162]
//! features = build_fcn_net(inp, use_dice=True) without Linear(80, 2)
//!          = Dice(Linear(200→80)(Dice(Linear(162→200)(BN(inp)))))                     [80]
//! ```
//!
//! As in the reference, the attention MLP uses sigmoid (the paper mentions PReLU/Dice), scores are
//! not scaled by `1/sqrt(D)`, and Dice normalises with the **current batch's** statistics in
//! training and evaluation alike (`script/Dice.py`, eps 1e-9): a sample's features depend on its
//! batch. [`TrunkActivation::DiceAffine`] gives a batch-independent alternative.
//!
//! Deviations from the reference:
//! * **Padding** (see [`mtrec_nn::CtrEmbeddings`]): id 0 is a frozen zero row and the history sum
//!   is masked; the reference sums a learned "default" embedding over all padded positions, which
//!   makes a sample's score depend on its batch-mates' history lengths. The attention is masked in
//!   both. An empty history gives uniform weights over zero keys, so `att = 0` (never NaN).
//! * **Output**: the backbone stops before `Linear(80, 2)`; the head (one click logit with BCE,
//!   or the Q / quantile layer) replaces it (`specs/backbones.md` §1, §4).
//! * `BN` is the reference's "BN quirk" ([`mtrec_nn::FeatAffine`]) by default; a real batch
//!   normalisation is available with [`InputNorm::BatchNorm`].
//!
//! Parameters: `emb.{uid,mid,cat}.weight`, `att.mlp.fc{0,1}.{weight,bias}`,
//! `att.mlp.out.{weight,bias}` (see [`mtrec_nn::DinAttention`]), `fcn.bn.{gamma,beta}`,
//! `fcn.fc{0,1}.{weight,bias}`, `fcn.act{0,1}.alpha` (see [`mtrec_nn::FcnTrunk`]); the head adds
//! `head.{weight,bias}`. `att.mlp.out.bias` never gets a gradient: the softmax over `t` cancels a
//! constant shift of the scores (as in the reference).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use mtrec_nn::{
    Align, Backbone, Batch, CtrEmbeddings, DinAttention, DinAttentionConfig, FcnConfig, FcnTrunk,
    Features, InputNorm, Layout, PackedHistory, PadPolicy, TrunkActivation, Vocab,
};

/// The registry name.
pub const NAME: &str = "din";

/// DIN hyper-parameters; the defaults are the DIEN repository's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Per-field embedding size E (official 18); an item is `[mid ; cat]`, `2E`.
    pub embedding_dim: usize,
    /// Hidden sizes of the attention MLP (official `[80, 40]`, sigmoid), followed by `→ 1`.
    pub attention_hidden: Vec<usize>,
    /// Hidden sizes of `build_fcn_net` (official `[200, 80]`); the last one is the feature size.
    pub hidden: Vec<usize>,
    /// Normalisation of the trunk's input (official: the BN quirk, `affine`).
    pub input_norm: InputNorm,
    /// Activation of the trunk's hidden layers (official: Dice with batch statistics,
    /// `{dice: {eps: 1e-9}}`).
    pub activation: TrunkActivation,
    /// The most recent history items kept (official `maxlen` 100).
    pub max_history: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            embedding_dim: mtrec_nn::ctr::DEFAULT_EMBEDDING_DIM,
            attention_hidden: vec![80, 40],
            hidden: mtrec_nn::ctr::DEFAULT_FCN_HIDDEN.to_vec(),
            input_norm: InputNorm::Affine,
            activation: TrunkActivation::DICE,
            max_history: 100,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<()> {
        if self.embedding_dim == 0
            || self.max_history == 0
            || self.hidden.contains(&0)
            || self.attention_hidden.contains(&0)
        {
            candle_core::bail!(
                "din: embedding_dim, max_history and hidden sizes must be > 0: {self:?}"
            );
        }
        Ok(())
    }
}

/// The DIN trunk: features of size `hidden.last()` (80).
#[derive(Debug, Clone)]
pub struct Din {
    cfg: Config,
    emb: CtrEmbeddings,
    att: DinAttention,
    fcn: FcnTrunk,
}

impl Din {
    pub fn new(cfg: &Config, vocab: Vocab, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let e = cfg.embedding_dim;
        let emb = CtrEmbeddings::new(vocab, e, vb.pp("emb"))?;
        let att_cfg = DinAttentionConfig {
            hidden: cfg.attention_hidden.clone(),
            ..DinAttentionConfig::dien(2 * e)
        };
        let att = DinAttention::new(&att_cfg, vb.pp("att"))?;
        let fcn = FcnConfig {
            input: 9 * e,
            hidden: cfg.hidden.clone(),
            norm: cfg.input_norm,
            activation: cfg.activation.activation(),
        };
        let fcn = FcnTrunk::new(&fcn, vb.pp("fcn"))?;
        Ok(Self {
            cfg: cfg.clone(),
            emb,
            att,
            fcn,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The attention weights `[B, T]` over the history (for inspection).
    pub fn attention_weights(&self, batch: &Batch) -> Result<Tensor> {
        let ieb = self.emb.item_eb(batch)?;
        let heb = self.emb.his_eb(batch)?;
        self.att.weights(&ieb, &heb, &batch.mask)
    }
}

impl Backbone for Din {
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

    /// Runs on the real history positions only ([`PackedHistory`]): the history sum and the
    /// attention equal their padded forms (padding contributes exact zeros there), at a cost that
    /// follows the real lengths rather than the batch's longest history.
    fn forward(&self, batch: &Batch, train: bool) -> Result<Features> {
        let u = self.emb.user(batch)?;
        let ieb = self.emb.item_eb(batch)?;
        let pk = PackedHistory::of(batch)?;
        let keys = self.emb.item_pair(
            &pk.gather(&batch.hist_items)?,
            &pk.gather(&batch.hist_cats)?,
        )?;
        let hsum = pk.segment_sum(&keys)?;
        let (_, att) = self.att.forward_packed(&ieb, &keys, &pk)?;
        let product = (&ieb * &hsum)?;
        let inp = Tensor::cat(&[&u, &ieb, &hsum, &product, &att], 1)?;
        Ok(Features::plain(self.fcn.forward(&inp, train)?))
    }
}
