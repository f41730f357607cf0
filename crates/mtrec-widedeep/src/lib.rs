//! Wide&Deep (H.-T. Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016) as an
//! MTRec backbone, following the DIEN repository's Amazon version (`mouna99/dien`,
//! `script/model.py::Model_WideDeep`; `specs/backbones.md` §2.1):
//!
//! ```text
//! u = Emb_uid(uid) [E]   ieb = [Emb_mid(mid) ; Emb_cat(cat)] [2E]   hsum = Σ_t heb_t [2E]
//! deep = PReLU(Linear(200→80)(PReLU(Linear(5E→200)(BN([u ; ieb ; hsum])))))     [80]
//! wide = [ieb ; hsum ; ieb ⊙ hsum]                                                [6E = 108]
//! reference: z = Linear(80, 2)(deep) + Linear(108, 2)(wide)
//! ours:      features = [deep ; wide]  [80 + 108 = 188],  head = Linear(188, ·)
//! ```
//!
//! **The two output layers as one head.** The reference sums a deep `Linear(80, 2)` and a wide
//! `Linear(108, 2)`. One linear layer over the concatenation is the same function:
//! `W [d ; w] + b = W_d d + W_w w + b` with `W = [W_d | W_w]` and `b = b_d + b_w`; so the backbone
//! returns `[deep ; wide]` and any head (CTR, Q, quantile) widens both parts at once, as
//! `specs/backbones.md` §4 asks for the Q-network ("both Linear(80,2) and wide Linear(108,2) → 20").
//! Only the initial distribution differs: one Glorot range over fan-in 188 instead of two over 80
//! and 108 (and one bias instead of two redundant ones).
//!
//! Other deviations from the reference:
//! * **Padding** (see [`mtrec_nn::CtrEmbeddings`]): id 0 is a frozen zero row and the history sum
//!   is masked; the reference sums a learned "default" embedding over all padded positions, which
//!   makes a sample's score depend on its batch-mates' history lengths.
//! * **Output**: one click logit (BCE) instead of a 2-logit softmax; `specs/backbones.md` §1
//!   shows they are the same model.
//! * `BN` is the reference's "BN quirk" ([`mtrec_nn::FeatAffine`]) by default; a real batch
//!   normalisation is available with [`InputNorm::BatchNorm`].
//!
//! Parameters: `emb.{uid,mid,cat}.weight`, `fcn.bn.{gamma,beta}`, `fcn.fc{0,1}.{weight,bias}`,
//! `fcn.act{0,1}.alpha` (see [`mtrec_nn::FcnTrunk`]); the head adds `head.{weight,bias}`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use mtrec_nn::{Backbone, Batch, CtrEmbeddings, FcnConfig, FcnTrunk, Features, Layout, Vocab};

/// The registry name.
pub const NAME: &str = "widedeep";

/// Wide&Deep hyper-parameters; the defaults are the DIEN repository's.
/// The fields are shared with the other `build_fcn_net` backbones ([`mtrec_nn::CtrConfig`]).
pub type Config = mtrec_nn::CtrConfig;

/// The Wide&Deep trunk: features `[deep ; wide]` of size `hidden.last() + 6E`.
#[derive(Debug, Clone)]
pub struct WideDeep {
    cfg: Config,
    emb: CtrEmbeddings,
    deep: FcnTrunk,
}

impl WideDeep {
    pub fn new(cfg: &Config, vocab: Vocab, vb: VarBuilder) -> Result<Self> {
        cfg.validate(NAME)?;
        let e = cfg.embedding_dim;
        let emb = CtrEmbeddings::new(vocab, e, vb.pp("emb"))?;
        let fcn = FcnConfig {
            input: 5 * e,
            hidden: cfg.hidden.clone(),
            norm: cfg.input_norm,
            activation: cfg.activation.activation(),
        };
        let deep = FcnTrunk::new(&fcn, vb.pp("fcn"))?;
        Ok(Self {
            cfg: cfg.clone(),
            emb,
            deep,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

impl Backbone for WideDeep {
    fn name(&self) -> &str {
        NAME
    }

    fn feature_dim(&self) -> usize {
        self.deep.out_dim() + 6 * self.cfg.embedding_dim
    }

    fn layout(&self) -> Layout {
        self.cfg.layout()
    }

    fn forward(&self, batch: &Batch, train: bool) -> Result<Features> {
        let u = self.emb.user(batch)?;
        let ieb = self.emb.item_eb(batch)?;
        let hsum = self.emb.hsum(batch)?;
        let deep = self
            .deep
            .forward(&Tensor::cat(&[&u, &ieb, &hsum], 1)?, train)?;
        let cross = (&ieb * &hsum)?;
        let features = Tensor::cat(&[&deep, &ieb, &hsum, &cross], 1)?;
        Ok(Features::plain(features))
    }
}
