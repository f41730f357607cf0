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
use mtrec_nn::{Backbone, Batch, CtrEmbeddings, FcnConfig, FcnTrunk, Features, Layout, Vocab};

/// The registry name.
pub const NAME: &str = "pnn";

/// PNN hyper-parameters; the defaults are the DIEN repository's.
/// The fields are shared with the other `build_fcn_net` backbones ([`mtrec_nn::CtrConfig`]).
pub type Config = mtrec_nn::CtrConfig;

/// The PNN trunk: features of size `hidden.last()` (80).
#[derive(Debug, Clone)]
pub struct Pnn {
    cfg: Config,
    emb: CtrEmbeddings,
    fcn: FcnTrunk,
}

impl Pnn {
    pub fn new(cfg: &Config, vocab: Vocab, vb: VarBuilder) -> Result<Self> {
        cfg.validate(NAME)?;
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
        self.cfg.layout()
    }

    fn forward(&self, batch: &Batch, train: bool) -> Result<Features> {
        let u = self.emb.user(batch)?;
        let ieb = self.emb.item_eb(batch)?;
        let hsum = self.emb.hsum(batch)?;
        let product = (&ieb * &hsum)?;
        let inp = Tensor::cat(&[&u, &ieb, &hsum, &product], 1)?;
        Ok(Features::plain(self.fcn.forward(&inp, train)?))
    }
}
