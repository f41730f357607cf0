//! Shared neural building blocks of MTRec's recommendation backbones, on candle 0.11.
//!
//! The blocks follow the official reference codes distilled in `specs/backbones.md`:
//!
//! * **DIN**: G. Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018
//!   (`zhougr1993/DeepInterestNetwork`): the local activation unit ([`DinAttention`]) and the
//!   data-adaptive activation [`Dice`].
//! * **DIEN**: G. Zhou et al., "Deep Interest Evolution Network for Click-Through Rate Prediction",
//!   AAAI 2019 (`mouna99/dien`, `script/utils.py::din_attention`, `dice`, `model.py::build_fcn_net`):
//!   softmax-normalised attention with a `-2^32+1` fill, Dice with batch statistics.
//!
//! | module | what |
//! |---|---|
//! | [`batch`] | the model input contract: [`Batch`] of padded histories, [`Layout`], [`Vocab`]; [`plan_length_groups`] for models that may run a batch in length groups |
//! | [`model`] | the [`Backbone`] trait, output [`Head`]s (CTR, Q, quantile), [`Model`] |
//! | [`loss`] | stable [`softplus`], [`log_sigmoid`], [`bce_with_logits`] |
//! | [`embedding`] | [`Embedding`] with id 0 = padding; [`masked_sum`], [`masked_mean`] pooling |
//! | [`mlp`] | [`Mlp`] builder, [`Activation`] enum, last-dimension [`PRelu`], [`Dice`] |
//! | [`norm`] | differentiable [`LayerNorm`] (one fused CPU op with its own backward, affine part included), [`softmax`], [`masked_softmax`] |
//! | [`attention`] | [`DinAttention`], DIN's local activation unit |
//! | [`ctr`] | DIEN-repo CTR trunk pieces: [`CtrEmbeddings`], the BN quirk [`FeatAffine`] / [`BatchNorm1d`] ([`InputNorm`]), `build_fcn_net` as [`FcnTrunk`] |
//! | [`rnn`] | DIEN's TF-1.x [`TfGruCell`] and [`AugruCell`], `dynamic_rnn`-style [`run_gru`] / [`run_augru`] |
//! | [`interaction`] | [`fm_second_order`], pairwise [`inner_products`], [`outer_product_pooled`] |
//! | [`fused_pointwise`] | fused CPU ops with their own backward: a dense layer's bias + activation + dropout ([`fused_pointwise::bias_act`]), LayerNorm with its affine part, a sublayer's bias + dropout + residual + LayerNorm, an embedding block's positions + LayerNorm + dropout |
//! | [`fastmath`] | vectorisable f32 `exp` and `erf` for the fused kernels |
//! | [`dropout`] | seeded, parallel inverted [`dropout::dropout`]; [`seed_dropout`], [`step_seed`] (trainers reseed every step) |
//! | [`transformer`] | SASRec's [`SoftmaxAttention`] and LinRec's [`LinearAttention`], [`PointwiseFfn`], [`PositionalEmbedding`], [`TokenEmbedding`], masks, [`gather_rows`], the [`heads_for`] rule |
//! | [`testing`] | finite-difference gradient checker and an every-Var-gets-a-gradient check |
//!
//! Conventions: every `forward` returns `candle_core::Result<Tensor>`; constructors take a
//! [`candle_nn::VarBuilder`] and name their parameters with `vb.pp("...")`; masks are float tensors
//! (1 = real item, 0 = padding) of the model's dtype or any float dtype (they are cast).
//!
//! # candle pitfalls avoided (see `specs/backbones.md` §3 and `specs/rust-stack.md` §3)
//!
//! * `candle_nn::LayerNorm`, `ops::layer_norm`, `ops::rms_norm` and `ops::softmax_last_dim` are
//!   built with `apply_op*_no_bwd`: their output is silently detached from the graph (candle
//!   issue #3011). [`LayerNorm`] uses `ops::layer_norm_slow` (composed from differentiable ops) and
//!   [`softmax`] uses `ops::softmax(x, D::Minus1)`. The tests check every parameter gets a gradient.
//! * `candle_nn::PReLU` broadcasts its slopes over dimension 1, which is wrong for `[B, T, C]`;
//!   [`PRelu`] broadcasts over the last dimension.
//! * A `-inf` fill makes an all-masked softmax row NaN; [`masked_softmax`] fills with `-1e9` (and
//!   [`DinAttention`] with DIEN's `-2^32+1`), so an empty history gives finite (uniform) weights.
//! * `where_cond` does not broadcast: the fill tensor is built at the scores' shape.
//! * A mean over an all-zero mask divides by zero: [`masked_mean`] divides by `max(Σmask, 1e-12)`.

pub mod attention;
pub mod batch;
pub mod ctr;
#[doc(hidden)]
pub mod custom_op;
pub mod dense;
pub mod dropout;
pub mod embedding;
pub mod fastmath;
mod fused_gru;
mod fused_linear_attention;
pub mod fused_pointwise;
pub mod interaction;
pub mod loss;
pub mod mlp;
pub mod model;
pub mod norm;
pub mod packed;
pub mod rnn;
#[doc(hidden)]
pub mod testing;
pub mod transformer;

pub use attention::{AttentionNorm, DinAttention, DinAttentionConfig};
pub use batch::{
    plan_length_groups, Align, Batch, HostBatch, Layout, LengthGroup, PadPolicy, Vocab,
};
pub use ctr::{
    BatchNorm1d, CtrConfig, CtrEmbeddings, FcnConfig, FcnTrunk, FeatAffine, InputNorm,
    InputNormLayer, TrunkActivation,
};
pub use dense::{add_last, dense, expand_rows, mul_last, Dense};
pub use dropout::{seed_dropout, step_seed};
pub use embedding::{masked_mean, masked_sum, Embedding, EmbeddingConfig, EmbeddingInit};
pub use interaction::{fm_second_order, inner_products, outer_product_pooled};
pub use loss::{bce_with_logits, log_sigmoid, softplus};
pub use mlp::{glorot_linear, Activation, Dice, DiceNorm, Mlp, MlpConfig, PRelu};
pub use model::{Backbone, Features, Head, HeadKind, Model, ModelOutput, ACTION_P};
pub use norm::{masked_softmax, masked_softmax_with_fill, softmax, LayerNorm};
pub use packed::PackedHistory;
pub use rnn::{run_augru, run_gru, AugruCell, TfGruCell};
pub use transformer::{
    attention_mask, gather_rows, heads_for, last_positions, FfnActivation, LinearAttention,
    LinearInit, PointwiseFfn, PositionalEmbedding, SoftmaxAttention, TokenEmbedding, TokenInput,
};
