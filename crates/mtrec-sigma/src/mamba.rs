//! The Mamba block SIGMA uses (`mamba_ssm/modules/mamba_simple.py::Mamba`, its reference path
//! `selective_scan_ref`), full-sequence and trainable:
//!
//! ```text
//! [xi ; z] = x W_in                                   W_in: d → 2·d_inner, no bias
//! xi = silu(causal_depthwise_conv_K(xi) + b_conv)     left-padded by K − 1, first L outputs
//! [δr ; B ; C] = xi W_x                               W_x: d_inner → dt_rank + 2N, no bias
//! δ  = softplus(δr W_dt + b_dt)                        stable softplus (mtrec_nn::softplus)
//! A  = −exp(A_log)                                     [d_inner, N]
//! y  = scan(δ, A, B, C, xi) + D ⊙ xi                   crate::scan
//! out = (y ⊙ silu(z)) W_out                            W_out: d_inner → d, no bias
//! ```
//!
//! With [`ScanImpl::Fused`] (CPU) the conv + SiLU is one custom op and the last three lines are
//! one gated-scan op ([`crate::scan::selective_scan_gated`], softplus, `D` and `silu(z)` folded
//! in); with [`ScanImpl::Composed`] every step is a candle op. `[xi ; z]` and `[δr ; B ; C]` are
//! computed with row blocks of `W_in` / `W_x` rather than by slicing the outputs (a sliced
//! activation's backward in candle allocates a full-size zero gradient).
//!
//! Parameter names follow the PyTorch module: `in_proj.weight`, `conv1d.weight [d_inner, 1, K]`,
//! `conv1d.bias`, `x_proj.weight`, `dt_proj.weight`, `dt_proj.bias`, `A_log`, `D`,
//! `out_proj.weight`.
//!
//! Initialisation is SIGMA's, not mamba_ssm's: SIGMA's `_init_weights` runs after Mamba's own
//! and resets every `nn.Linear` (including `dt_proj`) to `N(0, 0.02)` weights and zero bias, so
//! `δ ≈ softplus(0) ≈ 0.69` at the start. `A_log = log(1..N)` per channel, `D = 1` and the
//! convolution's PyTorch default `U(±1/sqrt(K))` are kept.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::layers::{causal_conv_silu, get_with_values, uniform, Dense};
use crate::scan::{selective_scan_gated, ScanImpl};
use mtrec_nn::dense as linear;

/// Sizes of a [`Mamba`] block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MambaDims {
    /// Model width d.
    pub d_model: usize,
    /// SSM state size N.
    pub d_state: usize,
    /// Depthwise convolution width K.
    pub d_conv: usize,
    /// `d_inner = expand · d`.
    pub expand: usize,
    /// Rank of δ's projection (mamba_ssm: `ceil(d / 16)`).
    pub dt_rank: usize,
}

impl MambaDims {
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }
}

/// A Mamba mixer `[B, L, d] → [B, L, d]`.
#[derive(Debug, Clone)]
pub struct Mamba {
    dims: MambaDims,
    in_proj: Dense,
    conv_weight: Tensor,
    conv_bias: Tensor,
    x_proj: Dense,
    dt_proj: Dense,
    a_log: Tensor,
    d: Tensor,
    out_proj: Dense,
    scan: ScanImpl,
}

impl Mamba {
    /// `std` is the `N(0, std²)` of the linear layers (SIGMA: 0.02).
    pub fn new(dims: MambaDims, std: f64, scan: ScanImpl, vb: VarBuilder) -> Result<Self> {
        let MambaDims {
            d_model,
            d_state,
            d_conv,
            dt_rank,
            ..
        } = dims;
        let di = dims.d_inner();
        let bound = 1.0 / (d_conv as f64).sqrt();
        let conv_weight = vb.get_with_hints((di, 1, d_conv), "conv1d.weight", uniform(bound))?;
        let conv_bias = vb.get_with_hints(di, "conv1d.bias", uniform(bound))?;
        let a_log_init: Vec<f64> = (0..di)
            .flat_map(|_| (1..=d_state).map(|n| (n as f64).ln()))
            .collect();
        Ok(Mamba {
            dims,
            in_proj: Dense::new(d_model, 2 * di, false, std, vb.pp("in_proj"))?,
            conv_weight,
            conv_bias,
            x_proj: Dense::new(di, dt_rank + 2 * d_state, false, std, vb.pp("x_proj"))?,
            dt_proj: Dense::new(dt_rank, di, true, std, vb.pp("dt_proj"))?,
            a_log: get_with_values(&vb, &[di, d_state], "A_log", &a_log_init)?,
            d: vb.get_with_hints(di, "D", Init::Const(1.0))?,
            out_proj: Dense::new(di, d_model, false, std, vb.pp("out_proj"))?,
            scan,
        })
    }

    pub fn dims(&self) -> MambaDims {
        self.dims
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let di = self.dims.d_inner();
        let n = self.dims.d_state;
        let r = self.dims.dt_rank;
        // Row blocks of the projection weights rather than column slices of their outputs: a
        // narrowed activation's backward pads a full-size zero gradient, a narrowed weight's is
        // tiny.
        let w_in = self.in_proj.weight(); // [2Di, d]: xi rows, then z rows
        let xi = linear(x, &w_in.narrow(0, 0, di)?, None)?;
        let z = linear(x, &w_in.narrow(0, di, di)?, None)?;
        let xi = causal_conv_silu(&xi, &self.conv_weight, &self.conv_bias, self.scan)?;
        let w_x = self.x_proj.weight(); // [R + 2N, Di]: δ rows, B rows, C rows
        let dt = linear(&xi, &w_x.narrow(0, 0, r)?, None)?;
        let b = linear(&xi, &w_x.narrow(0, r, n)?, None)?;
        let c = linear(&xi, &w_x.narrow(0, r + n, n)?, None)?;
        let delta_raw = linear(&dt, self.dt_proj.weight(), None)?;
        let delta_bias = self
            .dt_proj
            .bias()
            .ok_or_else(|| candle_core::Error::Msg("dt_proj has no bias".into()))?;
        let a = self.a_log.exp()?.neg()?;
        // (scan(softplus(δraw + b_dt), A, B, C, xi) + D ⊙ xi) ⊙ silu(z)
        let y = selective_scan_gated(
            &delta_raw, delta_bias, &a, &b, &c, &self.d, &xi, &z, self.scan,
        )?;
        self.out_proj.forward(&y)
    }
}
