//! DIEN, the Deep Interest Evolution Network (G. Zhou et al., AAAI 2019), as an MTRec backbone.
//!
//! Follows the official code `mouna99/dien`, class `Model_DIN_V2_Gru_Vec_attGru_Neg` of
//! `script/model.py` (selected by `model_type == 'DIEN'` in `script/train.py`) with
//! `script/utils.py` (`din_fcn_attention`, `VecAttGRUCell`, `prelu`), `script/Dice.py` and
//! `script/rnn.py` (`dynamic_rnn`), as distilled in `specs/backbones.md` §1 and §2.5:
//!
//! ```text
//! u = Emb_uid(uid) [B,E];  ieb = [Emb_mid(mid) ; Emb_cat(cat)] [B,D];  heb [B,T,D];  hsum = Σ_t heb_t
//! o       = GRU(heb)                        interest extractor, TF GRUCell, dynamic_rnn   [B,T,H]
//! L_aux   = aux loss of o_t vs e_{t+1} / ê_{t+1}  (training only)                          scalar
//! a       = softmax_t(DIN-unit(PReLU(W ieb + b), o_t))   din_fcn_attention               [B,T]
//! h'      = AUGRU(o, a) final state         interest evolving layer, VecAttGRUCell         [B,H]
//! inp     = [u ; ieb ; hsum ; ieb ⊙ hsum ; h']                                             [B,E+3D+H]
//! feature = build_fcn_net(inp, use_dice=True) without its last Linear(80, 2)               [B,80]
//! ```
//!
//! The backbone stops before the reference's final `Linear(80, 2)`: the [`mtrec_nn::Head`] takes
//! its place, so [`Backbone::feature_dim`] is 80 by default. The auxiliary loss comes back as
//! [`Features::aux_loss`], already multiplied by [`Config::aux_loss_weight`] (official: 1, the
//! reference's `loss = ctr_loss + aux_loss`), and only when `train` is true: evaluation skips the
//! auxiliary network entirely. A DIEN Q-network (IQ-Learn / QR-IQL, `specs/backbones.md` §4) keeps
//! it as a regulariser unless its config sets the weight to 0.
//!
//! # Parameters (`VarBuilder` names)
//!
//! | name | shape (official sizes) | what (TF scope) |
//! |---|---|---|
//! | `emb.uid.weight`, `emb.mid.weight`, `emb.cat.weight` | `[vocab, 18]` | embedding tables, row 0 = frozen zero padding |
//! | `gru1.gates.kernel`, `gru1.gates.bias` | `[72, 72]`, `[72]` (init 1) | interest extractor GRU (`gru1/gru_cell/gates`) |
//! | `gru1.candidate.kernel`, `gru1.candidate.bias` | `[72, 36]`, `[36]` | (`gru1/gru_cell/candidate`) |
//! | `aux.bn.gamma`, `aux.bn.beta` | `[72]` | aux net input "BN" (`bn1gru`) |
//! | `aux.fc0.*`, `aux.fc1.*`, `aux.out.*` | `72→100→50→2` | aux net (`f1gru`, `f2gru`, `f3gru`) |
//! | `att.query.weight`, `att.query.bias` | `[36, 36]`, `[36]` | query projection (`f1{stag}`) |
//! | `att.query_prelu.alpha` | `[36]` (init 0.1) | its PReLU |
//! | `att.mlp.fc0.*`, `att.mlp.fc1.*`, `att.mlp.out.*` | `144→80→40→1` | attention unit (`f1_att`, `f2_att`, `f3_att`) |
//! | `gru2.gates.*`, `gru2.candidate.*` | as `gru1`, input 36 | AUGRU (`gru2`, `VecAttGRUCell`) |
//! | `fcn.bn.gamma`, `fcn.bn.beta` | `[162]` | `build_fcn_net`'s `bn1` |
//! | `fcn.fc0.*`, `fcn.act0.alpha`, `fcn.fc1.*`, `fcn.act1.alpha` | `162→200→80` | `f1`, `dice_1`, `f2`, `dice_2` |
//!
//! Linear weights are `[out, in]` (candle / PyTorch layout), GRU kernels TF's input-major
//! `[in, out]` (see [`mtrec_nn::TfGruCell`]). Inits follow TF 1: Glorot-uniform kernels and tables,
//! zero biases except the GRU gate bias 1.0, PReLU slopes 0.1, Dice slopes 0, BN gamma 1 / beta 0.
//! `tests/reference/dien.py` is a PyTorch model with the same names; its fixture pins forward
//! parity (features, heads, auxiliary loss) to 1e-5.
//!
//! # Deviations from the reference, and why
//!
//! * **Padding row.** The reference's tables have no padding row (id 0 is a trained "default" id)
//!   and `hsum` sums all `T` padded slots. Our row 0 is frozen at zero ([`CtrEmbeddings`]), so
//!   `hsum` is the masked sum and a sample's score does not depend on its batch-mates' lengths.
//!   The GRUs never see padding either way (`dynamic_rnn` copy-through).
//! * **Negatives of the auxiliary loss.** The reference samples 5 "no-click" items per history
//!   position (uniformly from all review rows, i.e. by popularity, rejecting the positive) and uses
//!   only the first. We use the batch's `hist_neg_items` / `hist_neg_cats`: the prepared dataset's
//!   seeded negative of each logged step, uniform over items by default (DIN's rule) or
//!   popularity-proportional with the `popularity` negative rule (DIEN's), fixed across epochs
//!   rather than redrawn per batch.
//! * **Auxiliary loss numerics.** The reference computes `−log(p₀ + 1e-8)` and
//!   `−log(1 − (p₀ + 1e-8))` from a two-way softmax; in f32 the second is `log 0 = −∞` once the net
//!   is sure a negative was clicked (`p₀` rounds to 1). We use `−log(p₁ + 1e-8)` with `p₁ = 1 − p₀`
//!   computed as `σ(z₁ − z₀)`: the log's argument differs by 2e-8, and the loss is never infinite.
//!   The mean over `B × (T − 1)` *including* the masked slots is kept (so the auxiliary loss is
//!   diluted in batches padded to a long history, exactly as in the reference); a batch without
//!   any pair (`T < 2`) gives 0 where the reference's empty mean is NaN.
//! * **Final layer.** `Linear(80, 2)` + softmax is replaced by the head (see above).
//! * **Width-0 batches** (every history empty, padded to the longest = 0 columns) skip the GRUs and
//!   the attention and use `h' = 0`, which is what `dynamic_rnn` returns for empty sequences.
//!
//! Options beyond the reference ([`Config`]): PReLU instead of Dice in the trunk, a real batch norm
//! or none instead of the BN quirk (applied to both `fcn.bn` and `aux.bn`), other sizes, the
//! auxiliary weight (0 drops the auxiliary network's computation).
//!
//! # Speed
//!
//! The two recurrent layers are sequential over `T` (up to 100): [`mtrec_nn::run_gru`] /
//! [`mtrec_nn::run_augru`] compute the input projections of all steps in one matmul and only the
//! `[B, H] × [H, ·]` products per step. The auxiliary network runs once over the stacked positive and
//! negative pairs and only over the real ones.

mod attention;
mod auxiliary;

pub use attention::InterestAttention;
pub use auxiliary::AuxNet;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use mtrec_nn::{
    run_augru, run_gru, Align, AugruCell, Backbone, Batch, CtrEmbeddings, FcnConfig, FcnTrunk,
    Features, InputNorm, Layout, PackedHistory, PadPolicy, TfGruCell, TrunkActivation, Vocab,
};
use serde::{Deserialize, Serialize};

/// The registry name.
pub const NAME: &str = "dien";

/// DIEN's hyper-parameters; [`Default`] is the official setting (`script/train.py`,
/// `script/model.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Per-field embedding size `E` (official `EMBEDDING_DIM = 18`); items are `[mid ; cat]`, `D = 2E`.
    pub embedding_dim: usize,
    /// Hidden size `H` of both GRUs and of the attention's query (official `HIDDEN_SIZE = 36`).
    pub hidden: usize,
    /// Hidden sizes of the attention unit's MLP (official `[80, 40]`, sigmoid).
    pub attention_hidden: Vec<usize>,
    /// Hidden sizes of the auxiliary network (official `[100, 50]`, sigmoid).
    pub aux_hidden: Vec<usize>,
    /// Hidden sizes of `build_fcn_net` (official `[200, 80]`); the last is the feature size.
    pub fcn_hidden: Vec<usize>,
    /// Activation of `build_fcn_net` (official: Dice with batch statistics, eps 1e-9).
    pub activation: TrunkActivation,
    /// Normalisation before `build_fcn_net` and the auxiliary network (official: the BN quirk,
    /// a learnable affine).
    pub input_norm: InputNorm,
    /// Weight of the auxiliary loss (official 1); 0 skips the auxiliary network.
    pub aux_loss_weight: f64,
    /// Longest history fed to the model, most recent kept (official `maxlen = 100`).
    pub max_history: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            embedding_dim: 18,
            hidden: 36,
            attention_hidden: vec![80, 40],
            aux_hidden: vec![100, 50],
            fcn_hidden: vec![200, 80],
            activation: TrunkActivation::DICE,
            input_norm: InputNorm::Affine,
            aux_loss_weight: 1.0,
            max_history: 100,
        }
    }
}

impl Config {
    /// `E + 3D + H`, the width of `build_fcn_net`'s input (162 officially).
    pub fn fcn_input(&self) -> usize {
        7 * self.embedding_dim + self.hidden
    }

    fn validate(&self) -> Result<()> {
        if self.embedding_dim == 0 || self.hidden == 0 || self.max_history == 0 {
            candle_core::bail!(
                "DIEN: embedding_dim, hidden and max_history must be positive, got {self:?}"
            );
        }
        if [&self.attention_hidden, &self.aux_hidden, &self.fcn_hidden]
            .iter()
            .any(|v| v.contains(&0))
        {
            candle_core::bail!("DIEN: hidden layer sizes must be positive, got {self:?}");
        }
        if !(self.aux_loss_weight.is_finite() && self.aux_loss_weight >= 0.0) {
            candle_core::bail!(
                "DIEN: aux_loss_weight must be finite and >= 0, got {}",
                self.aux_loss_weight
            );
        }
        Ok(())
    }
}

/// The DIEN backbone; see the crate docs.
#[derive(Debug, Clone)]
pub struct Dien {
    cfg: Config,
    emb: CtrEmbeddings,
    gru: TfGruCell,
    aux: Option<AuxNet>,
    att: InterestAttention,
    augru: AugruCell,
    fcn: FcnTrunk,
}

impl Dien {
    /// Builds the model for `vocab` with parameters named as in the crate docs. With
    /// `aux_loss_weight = 0` the auxiliary network's parameters are not created.
    pub fn new(cfg: &Config, vocab: Vocab, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let e = cfg.embedding_dim;
        let d = 2 * e;
        let h = cfg.hidden;
        let emb = CtrEmbeddings::new(vocab, e, vb.pp("emb"))?;
        let gru = TfGruCell::new(d, h, vb.pp("gru1"))?;
        let aux = if cfg.aux_loss_weight > 0.0 {
            Some(AuxNet::new(
                h + d,
                &cfg.aux_hidden,
                cfg.input_norm,
                vb.pp("aux"),
            )?)
        } else {
            None
        };
        let att = InterestAttention::new(d, h, &cfg.attention_hidden, vb.pp("att"))?;
        let augru = AugruCell::new(h, h, vb.pp("gru2"))?;
        let fcn_cfg = FcnConfig {
            input: cfg.fcn_input(),
            hidden: cfg.fcn_hidden.clone(),
            norm: cfg.input_norm,
            activation: cfg.activation.activation(),
        };
        let fcn = FcnTrunk::new(&fcn_cfg, vb.pp("fcn"))?;
        Ok(Self {
            cfg: cfg.clone(),
            emb,
            gru,
            aux,
            att,
            augru,
            fcn,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The interest extractor, the attention and the interest evolving layer for a batch (no
    /// auxiliary loss). Exposed for inspection and parity tests; [`Backbone::forward`] uses it.
    pub fn interests(&self, batch: &Batch) -> Result<Interests> {
        check_align(batch)?;
        let heb = self.emb.his_eb(batch)?;
        let ieb = self.emb.item_eb(batch)?;
        self.interests_of(batch, &heb, &ieb, false)
    }

    /// The unweighted auxiliary loss `L_aux` of a batch (`None` when the auxiliary weight is 0).
    pub fn aux_loss(&self, batch: &Batch) -> Result<Option<Tensor>> {
        check_align(batch)?;
        let heb = self.emb.his_eb(batch)?;
        let ieb = self.emb.item_eb(batch)?;
        let i = self.interests_of(batch, &heb, &ieb, true)?;
        self.aux_loss_of(batch, &i.states, &heb)
    }

    /// `packed`: the attention on the real positions only ([`InterestAttention::weights_packed`],
    /// what training uses); otherwise the padded weights of the reference (for inspection).
    fn interests_of(
        &self,
        batch: &Batch,
        heb: &Tensor,
        ieb: &Tensor,
        packed: bool,
    ) -> Result<Interests> {
        let (b, t, _) = heb.dims3()?;
        let (dtype, dev) = (heb.dtype(), heb.device());
        let h = self.cfg.hidden;
        if t == 0 {
            // dynamic_rnn over empty sequences: no outputs, zero final state.
            return Ok(Interests {
                states: Tensor::zeros((b, 0, h), dtype, dev)?,
                attention: Tensor::zeros((b, 0), dtype, dev)?,
                last: Tensor::zeros((b, h), dtype, dev)?,
            });
        }
        let mask = batch.mask.to_dtype(dtype)?;
        let (states, _) = run_gru(&self.gru, heb, &mask)?;
        let attention = if packed {
            self.att
                .weights_packed(ieb, &states, &PackedHistory::of_mask(&mask)?)?
        } else {
            self.att.weights(ieb, &states, &mask)?
        };
        let (_, last) = run_augru(&self.augru, &states, &attention, &mask)?;
        Ok(Interests {
            states,
            attention,
            last,
        })
    }

    fn aux_loss_of(&self, batch: &Batch, states: &Tensor, heb: &Tensor) -> Result<Option<Tensor>> {
        let Some(net) = &self.aux else {
            return Ok(None);
        };
        if states.dim(1)? < 2 {
            return Ok(Some(Tensor::zeros((), heb.dtype(), heb.device())?));
        }
        let neg = self.emb.neg_his_eb(batch)?;
        Ok(Some(net.loss(states, heb, &neg, &batch.mask)?))
    }
}

/// The auxiliary loss pairs position `t` with `t + 1` wherever `mask_{t+1} = 1`, which pairs
/// consecutive real items only when histories are left-aligned (the reference's layout); with left
/// padding it would also pair the zero state before the first item with that item.
fn check_align(batch: &Batch) -> Result<()> {
    if batch.align != Align::Left {
        candle_core::bail!(
            "DIEN expects left-aligned histories (oldest first), got {:?}",
            batch.align
        );
    }
    Ok(())
}

/// The intermediate results of [`Dien::interests`].
#[derive(Debug, Clone)]
pub struct Interests {
    /// The interest extractor GRU's outputs `o` `[B, T, H]` (zero at padding).
    pub states: Tensor,
    /// The attention weights `a` `[B, T]` (softmax over the real positions).
    pub attention: Tensor,
    /// The AUGRU's final state `h'` `[B, H]` (zero for an empty history).
    pub last: Tensor,
}

impl Backbone for Dien {
    fn name(&self) -> &str {
        NAME
    }

    fn feature_dim(&self) -> usize {
        self.fcn.out_dim()
    }

    /// Left-aligned, padded to the batch's longest history, at most `max_history` items.
    fn layout(&self) -> Layout {
        Layout {
            max_history: self.cfg.max_history,
            pad: PadPolicy::Longest,
            align: Align::Left,
        }
    }

    fn forward(&self, batch: &Batch, train: bool) -> Result<Features> {
        check_align(batch)?;
        let u = self.emb.user(batch)?;
        let ieb = self.emb.item_eb(batch)?;
        let heb = self.emb.his_eb(batch)?;
        let hsum = CtrEmbeddings::hsum_of(&heb, batch)?;
        let interests = self.interests_of(batch, &heb, &ieb, true)?;
        let aux_loss = if train && self.cfg.aux_loss_weight > 0.0 {
            match self.aux_loss_of(batch, &interests.states, &heb)? {
                Some(l) if self.cfg.aux_loss_weight != 1.0 => {
                    Some(l.affine(self.cfg.aux_loss_weight, 0.0)?)
                }
                other => other,
            }
        } else {
            None
        };
        let inp = Tensor::cat(&[&u, &ieb, &hsum, &(&ieb * &hsum)?, &interests.last], 1)?;
        let features = self.fcn.forward(&inp, train)?;
        Ok(Features {
            features,
            logit_offset: None,
            aux_loss,
        })
    }
}
