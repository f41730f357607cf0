//! DeepFM (H. Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR
//! Prediction", IJCAI 2017) as an MTRec backbone. **Our adaptation** (`specs/backbones.md` §2.3,
//! "Recommended"): the DIEN repository has no DeepFM, and the only Amazon code of the family
//! (`zhougr1993/DeepInterestNetwork`, `deepFM/model.py`) is a toy FM over two scalars with 64-dim
//! embeddings. We build DeepFM from the same pieces as the DIEN-repository models (E = 18):
//!
//! ```text
//! fields v_f ∈ R^E: u = Emb_uid(uid), Emb_mid(mid), Emb_cat(cat), Σ_t Emb_mid(his_t), Σ_t Emb_cat(cat_his_t)
//! first  = w_uid[uid] + w_mid[mid] + w_cat[cat] + Σ_t mask_t (w_mid[his_t] + w_cat[cat_his_t])
//! second = 0.5 · Σ_k [(Σ_f v_fk)² − Σ_f v_fk²]                      (FM, 5 fields)
//! deep   = PReLU(Linear(200→80)(PReLU(Linear(90→200)(BN([u ; ieb ; hsum])))))   [80] = features
//! logit  = head(deep) + first + second
//! ```
//!
//! The embeddings are shared between the FM and the deep part (Guo et al. 2017). The FM terms are
//! the backbone's `logit_offset`: the CTR head adds them to its logit, Q and quantile heads add
//! them to every output of action P (`specs/backbones.md` §4, "deep head → 20 + FM scalar
//! broadcast-added").
//!
//! Choices and deviations:
//! * The global bias `b` of the spec's first-order term is left out: it is the head's bias.
//! * The first-order tables (`w_*`, `[vocab, 1]`) start at zero, like the DIN repository's item
//!   bias (`item_b`, `constant_initializer(0.0)`); the field embeddings use TensorFlow's
//!   Glorot-uniform init like every DIEN-repository table.
//! * **Padding** (see [`mtrec_nn::CtrEmbeddings`]): id 0 is a frozen zero row in every table and
//!   all history sums are masked.
//! * `BN` is the reference family's "BN quirk" ([`mtrec_nn::FeatAffine`]) by default; a real
//!   batch normalisation is available with [`InputNorm::BatchNorm`].
//!
//! Parameters: `emb.{uid,mid,cat}.weight`, `fm.{uid,mid,cat}.weight` (`[vocab, 1]`),
//! `fcn.bn.{gamma,beta}`, `fcn.fc{0,1}.{weight,bias}`, `fcn.act{0,1}.alpha`; the head adds
//! `head.{weight,bias}`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use mtrec_nn::{
    fm_second_order, Backbone, Batch, CtrEmbeddings, Embedding, EmbeddingConfig, EmbeddingInit,
    FcnConfig, FcnTrunk, Features, Layout, PackedHistory, Vocab,
};

/// The registry name.
pub const NAME: &str = "deepfm";

/// DeepFM hyper-parameters; the defaults follow the DIEN-repository models (our adaptation).
/// The fields are shared with the other `build_fcn_net` backbones ([`mtrec_nn::CtrConfig`]).
pub type Config = mtrec_nn::CtrConfig;

/// The first-order weights: one scalar per uid / mid / cat id (row 0 = padding, frozen zero).
#[derive(Debug, Clone)]
struct FirstOrder {
    uid: Embedding,
    mid: Embedding,
    cat: Embedding,
}

impl FirstOrder {
    fn new(vocab: Vocab, vb: VarBuilder) -> Result<Self> {
        let cfg = EmbeddingConfig {
            // N(0, 0²): all zeros, like the DIN repository's item bias.
            init: EmbeddingInit::Normal { std: 0.0 },
            zero_padding_init: true,
            freeze_padding: true,
        };
        Ok(Self {
            uid: Embedding::new(vocab.users, 1, cfg, vb.pp("uid"))?,
            mid: Embedding::new(vocab.items, 1, cfg, vb.pp("mid"))?,
            cat: Embedding::new(vocab.categories, 1, cfg, vb.pp("cat"))?,
        })
    }

    /// `w_uid[uid] + w_mid[mid] + w_cat[cat] + Σ_t mask_t (w_mid[his_t] + w_cat[cat_his_t])`, `[B]`.
    fn forward(&self, batch: &Batch, pk: &PackedHistory) -> Result<Tensor> {
        let shown = ((self.uid.forward(&batch.users)?
            + self.mid.forward(&batch.target_items)?)?
            + self.cat.forward(&batch.target_cats)?)?; // [B, 1]
                                                       // The real history positions `pk` only (the padded ones contribute zero).
        let his = (self.mid.forward(&pk.gather(&batch.hist_items)?)?
            + self.cat.forward(&pk.gather(&batch.hist_cats)?)?)?; // [N, 1]
        (shown + pk.segment_sum(&his)?)?.squeeze(1)
    }
}

/// The DeepFM trunk: features = the deep part (80), logit offset = the FM terms.
#[derive(Debug, Clone)]
pub struct DeepFm {
    cfg: Config,
    emb: CtrEmbeddings,
    first: FirstOrder,
    deep: FcnTrunk,
}

impl DeepFm {
    pub fn new(cfg: &Config, vocab: Vocab, vb: VarBuilder) -> Result<Self> {
        cfg.validate(NAME)?;
        let e = cfg.embedding_dim;
        let emb = CtrEmbeddings::new(vocab, e, vb.pp("emb"))?;
        let first = FirstOrder::new(vocab, vb.pp("fm"))?;
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
            first,
            deep,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

impl Backbone for DeepFm {
    fn name(&self) -> &str {
        NAME
    }

    fn feature_dim(&self) -> usize {
        self.deep.out_dim()
    }

    fn layout(&self) -> Layout {
        self.cfg.layout()
    }

    fn forward(&self, batch: &Batch, train: bool) -> Result<Features> {
        let e = self.cfg.embedding_dim;
        let u = self.emb.user(batch)?;
        let ieb = self.emb.item_eb(batch)?;
        let pk = PackedHistory::of(batch)?;
        let hsum = self.emb.hsum_packed(batch, &pk)?;
        let deep = self
            .deep
            .forward(&Tensor::cat(&[&u, &ieb, &hsum], 1)?, train)?;
        // The five FM fields: [u, mid, cat, Σ his mid, Σ his cat], [B, 5, E].
        let fields = Tensor::stack(
            &[
                u,
                ieb.narrow(1, 0, e)?,
                ieb.narrow(1, e, e)?,
                hsum.narrow(1, 0, e)?,
                hsum.narrow(1, e, e)?,
            ],
            1,
        )?;
        let fm = (self.first.forward(batch, &pk)? + fm_second_order(&fields)?)?;
        Ok(Features {
            logit_offset: Some(fm),
            ..Features::plain(deep)
        })
    }
}
