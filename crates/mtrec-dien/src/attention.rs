//! DIEN's attention over the interest states (`utils.py::din_fcn_attention` with `softmax_stag=1`,
//! `mode='LIST'`, `return_alphas=True`; `specs/backbones.md` §2.5 step 3).

use candle_core::Module;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use mtrec_nn::{glorot_linear, Dense, DinAttention, DinAttentionConfig, PRelu, PackedHistory};

/// The PReLU slope init of the reference's `prelu` (`utils.py`).
const PRELU_INIT: f64 = 0.1;

/// `din_fcn_attention`: the target item `ieb` `[B, D]` is first projected to the interest space,
/// `q = PReLU(Linear(D, H)(ieb))`, then DIN's local activation unit scores every interest state
/// `o_t` `[B, T, H]` from `[q ; o_t ; q − o_t ; q ⊙ o_t]` (hidden layers with sigmoid, then
/// `Linear(·, 1)`), masked with `-2^32+1` and softmax-normalised over `t`.
///
/// [`DinAttention`] has no query projection, so it lives here. Parameters (under the prefix):
/// `query.weight` `[H, D]`, `query.bias` `[H]` (TF `f1{stag}`, Glorot / 0), `query_prelu.alpha`
/// `[H]` (init 0.1), and the unit's `mlp.fc{i}.*`, `mlp.out.*` (TF `f1_att`, `f2_att`, `f3_att`).
/// `mlp.out.bias` never gets a gradient: the softmax cancels it (as in the reference).
#[derive(Debug, Clone)]
pub struct InterestAttention {
    query: Dense,
    query_prelu: PRelu,
    unit: DinAttention,
}

impl InterestAttention {
    /// `item_dim` = D (the target's `[mid ; cat]` size), `hidden` = H (the GRU size), `mlp_hidden`
    /// = the unit's hidden sizes (official `[80, 40]`).
    pub fn new(
        item_dim: usize,
        hidden: usize,
        mlp_hidden: &[usize],
        vb: VarBuilder,
    ) -> Result<Self> {
        let query = glorot_linear(item_dim, hidden, vb.pp("query"))?;
        let query_prelu = PRelu::new(hidden, PRELU_INIT, vb.pp("query_prelu"))?;
        let cfg = DinAttentionConfig {
            hidden: mlp_hidden.to_vec(),
            ..DinAttentionConfig::dien(hidden)
        };
        let unit = DinAttention::new(&cfg, vb)?;
        Ok(Self {
            query,
            query_prelu,
            unit,
        })
    }

    /// The projected query `q = PReLU(W ieb + b)`, `[B, H]`.
    pub fn query(&self, item_eb: &Tensor) -> Result<Tensor> {
        self.query_prelu.forward(&self.query.forward(item_eb)?)
    }

    /// The attention weights `a` `[B, T]` over the interest states `states` `[B, T, H]`: softmax
    /// over the real positions (masked scores are `-2^32+1`; an empty history gives uniform weights,
    /// which the AUGRU ignores because it skips masked steps).
    pub fn weights(&self, item_eb: &Tensor, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.unit.weights(&self.query(item_eb)?, states, mask)
    }

    /// [`Self::weights`] computed on the real positions `pk` only (0 at padding, also for an
    /// empty history); what the AUGRU reads is the same.
    pub fn weights_packed(
        &self,
        item_eb: &Tensor,
        states: &Tensor,
        pk: &PackedHistory,
    ) -> Result<Tensor> {
        self.unit.weights_packed(&self.query(item_eb)?, states, pk)
    }
}
