//! SIGMA's `GMambaBlock` and `SIGMALayers` (`model/gated_mamba.py`), operation for operation.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use mtrec_nn::LayerNorm;

use crate::layers::{
    dropout, get_with_values, permute_rows, pick, ConvSame, Dense, FeedForward, PtGru,
};
use crate::mamba::{Mamba, MambaDims};
use crate::scan::ScanImpl;

/// Initial mixing weights `[w0, w1, w2]` of the GRU, flipped-Mamba and Mamba branches
/// (`combining_weights`; used raw: the official code's softmax of them is computed and discarded).
pub const COMBINING_WEIGHTS_INIT: [f64; 3] = [0.1, 0.1, 0.8];

/// Sizes and rates of a [`GMambaBlock`] / [`SigmaLayer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockConfig {
    pub mamba: MambaDims,
    /// Dropout of the layer output and the FFN.
    pub dropout: f64,
    /// The selective gate's dropout (hard-coded 0.2 in the official code).
    pub gate_dropout: f64,
    /// `N(0, std²)` of linear layers.
    pub init_std: f64,
    /// LayerNorm epsilon (1e-12).
    pub eps: f64,
    /// Total number of layers: with one layer there is no residual around the block.
    pub num_layers: usize,
    pub scan: ScanImpl,
}

/// The gated Mamba block:
///
/// ```text
/// h1  = x + dense1(x)                  g1 = conv1d_{k=3, pad 1}(x)
/// xf  = PF-flip(x)                     h2 = dense2(xf) + xf
/// m   = mamba(x)                       mf = mamba(xf)             (shared weights; mf not un-flipped)
/// h1g = drop(si(silu(h1)) + sig(sigmoid(h1)))
/// h2g = drop(si(silu(h2)) + sig(sigmoid(h1g)))                   (sic: h1g feeds the sigmoid branch)
/// m   = m ⊙ h1g + m                    mf = mf ⊙ h2g + mf
/// y   = projection(w2·m + w1·mf + w0·gru(g1))                     (w raw, init [0.1, 0.1, 0.8])
/// ```
/// The official `gru_input = conv1d(g1)` is computed and never used; it is skipped here.
#[derive(Debug, Clone)]
pub struct GMambaBlock {
    combining_weights: Tensor,
    dense1: Dense,
    dense2: Dense,
    projection: Dense,
    mamba: Mamba,
    gru: PtGru,
    gate_sig: Dense,
    gate_si: Dense,
    conv1d: ConvSame,
    gate_dropout: f64,
}

impl GMambaBlock {
    pub fn new(cfg: &BlockConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.mamba.d_model;
        let std = cfg.init_std;
        Ok(GMambaBlock {
            combining_weights: get_with_values(
                &vb,
                &[3],
                "combining_weights",
                &COMBINING_WEIGHTS_INIT,
            )?,
            dense1: Dense::new(d, d, true, std, vb.pp("dense1"))?,
            dense2: Dense::new(d, d, true, std, vb.pp("dense2"))?,
            projection: Dense::new(d, d, true, std, vb.pp("projection"))?,
            mamba: Mamba::new(cfg.mamba, std, cfg.scan, vb.pp("mamba"))?,
            gru: PtGru::new(d, d, vb.pp("gru"))?,
            // nn.Sequential(activation, Linear): the Linear is entry "1".
            gate_sig: Dense::new(d, d, true, std, vb.pp("selective_gate_sig").pp("1"))?,
            gate_si: Dense::new(d, d, true, std, vb.pp("selective_gate_si").pp("1"))?,
            conv1d: ConvSame::new(d, d, 3, vb.pp("conv1d"))?,
            gate_dropout: cfg.gate_dropout,
        })
    }

    /// `x: [B, L, d]`; `flip[b]` is row b's time permutation (the partial flip).
    pub fn forward(&self, x: &Tensor, flip: &[Vec<usize>], train: bool) -> Result<Tensor> {
        let b = x.dim(0)?;
        let h1 = (x + self.dense1.forward(x)?)?;
        let g1 = self.conv1d.forward(x)?;
        let xf = permute_rows(x, flip)?;
        let h2 = (self.dense2.forward(&xf)? + &xf)?;
        // Both directions in one Mamba pass (same weights): batch [x; xf].
        let both = self.mamba.forward(&Tensor::cat(&[x, &xf], 0)?)?;
        let m = both.narrow(0, 0, b)?;
        let mf = both.narrow(0, b, b)?;
        let h1g = dropout(&self.gate(&h1, &h1)?, self.gate_dropout, train)?;
        let h2g = dropout(&self.gate(&h2, &h1g)?, self.gate_dropout, train)?;
        let m = ((&m * &h1g)? + &m)?;
        let mf = ((&mf * &h2g)? + &mf)?;
        let gru = self.gru.forward(&g1)?;
        let w = &self.combining_weights;
        let mixed = ((m.broadcast_mul(&pick(w, 2)?)? + mf.broadcast_mul(&pick(w, 1)?)?)?
            + gru.broadcast_mul(&pick(w, 0)?)?)?;
        self.projection.forward(&mixed)
    }

    /// `selective_gate_si(u) + selective_gate_sig(v)` = `Linear_si(silu(u)) + Linear_sig(σ(v))`.
    pub fn gate(&self, u: &Tensor, v: &Tensor) -> Result<Tensor> {
        self.gate_si.forward(&u.silu()?)? + self.gate_sig.forward(&candle_nn::ops::sigmoid(v)?)?
    }
}

/// `SIGMALayers`: block, (residual unless there is one layer), LayerNorm, feed-forward (4d, GELU).
/// Parameters `gmamba.*`, `LayerNorm`, `ffn.*`.
#[derive(Debug, Clone)]
pub struct SigmaLayer {
    gmamba: GMambaBlock,
    norm: LayerNorm,
    ffn: FeedForward,
    dropout: f64,
    residual: bool,
}

impl SigmaLayer {
    pub fn new(cfg: &BlockConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.mamba.d_model;
        Ok(SigmaLayer {
            gmamba: GMambaBlock::new(cfg, vb.pp("gmamba"))?,
            norm: LayerNorm::new(d, cfg.eps, vb.pp("LayerNorm"))?,
            ffn: FeedForward::new(d, 4 * d, cfg.dropout, cfg.eps, cfg.init_std, vb.pp("ffn"))?,
            dropout: cfg.dropout,
            residual: cfg.num_layers != 1,
        })
    }

    pub fn forward(&self, x: &Tensor, flip: &[Vec<usize>], train: bool) -> Result<Tensor> {
        let y = dropout(&self.gmamba.forward(x, flip, train)?, self.dropout, train)?;
        let y = if self.residual { (y + x)? } else { y };
        self.ffn.forward(&self.norm.forward(&y)?, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{rand_tensor, Lcg};
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;
    use mtrec_nn::testing::assert_gradients_match;

    fn cfg() -> BlockConfig {
        BlockConfig {
            mamba: MambaDims {
                d_model: 3,
                d_state: 2,
                d_conv: 4,
                expand: 2,
                dt_rank: 1,
            },
            dropout: 0.2,
            gate_dropout: 0.2,
            init_std: 0.3,
            eps: 1e-12,
            num_layers: 1,
            scan: ScanImpl::Fused,
        }
    }

    #[test]
    fn gate_gradients() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let block = GMambaBlock::new(&cfg(), vb).unwrap();
        crate::testutil::reseed(&vm, 19, 0.5);
        let mut rng = Lcg::new(20);
        let u = Var::from_tensor(&rand_tensor(
            &mut rng,
            (2, 3, 3),
            -2.0,
            2.0,
            DType::F64,
            &Device::Cpu,
        ))
        .unwrap();
        let v = Var::from_tensor(&rand_tensor(
            &mut rng,
            (2, 3, 3),
            -2.0,
            2.0,
            DType::F64,
            &Device::Cpu,
        ))
        .unwrap();
        let w = rand_tensor(&mut rng, (2, 3, 3), -1.0, 1.0, DType::F64, &Device::Cpu);
        let gate_vars: Vec<Var> = {
            let data = vm.data().lock().unwrap();
            [
                "selective_gate_si.1.weight",
                "selective_gate_si.1.bias",
                "selective_gate_sig.1.weight",
                "selective_gate_sig.1.bias",
            ]
            .iter()
            .map(|k| data[*k].clone())
            .collect()
        };
        let mut vars = vec![u, v];
        vars.extend(gate_vars);
        assert_gradients_match(&vars, |vs| {
            (block.gate(vs[0].as_tensor(), vs[1].as_tensor())? * &w)?.sum_all()
        });
    }

    #[test]
    fn gmamba_block_gradients() {
        // The gated block alone (both Mamba passes through the fused gated scan, GRU, conv,
        // gates, flip, mixing weights), f64, seeded weights.
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let block = GMambaBlock::new(&cfg(), vb).unwrap();
        crate::testutil::reseed(&vm, 22, 0.5);
        let mut rng = Lcg::new(21);
        let x = Var::from_tensor(&rand_tensor(
            &mut rng,
            (2, 4, 3),
            -1.0,
            1.0,
            DType::F64,
            &Device::Cpu,
        ))
        .unwrap();
        let w = rand_tensor(&mut rng, (2, 4, 3), -1.0, 1.0, DType::F64, &Device::Cpu);
        let flip = vec![vec![1, 0, 2, 3], vec![2, 1, 0, 3]];
        let mut vars = vm.all_vars();
        vars.push(x);
        assert_gradients_match(&vars, |vs| {
            (block.forward(vs.last().unwrap().as_tensor(), &flip, false)? * &w)?.sum_all()
        });
    }

    #[test]
    fn layer_gradients() {
        // Block + LayerNorm + FFN. rtol 1e-4: candle's GELU-erf backward uses 0.398942 for
        // 1/sqrt(2π), so its analytic gradient is off by ~1e-6 relative.
        for num_layers in [1, 2] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
            let layer = SigmaLayer::new(
                &BlockConfig {
                    num_layers,
                    ..cfg()
                },
                vb,
            )
            .unwrap();
            crate::testutil::reseed(&vm, 23, 0.5);
            let mut rng = Lcg::new(24);
            let x = Var::from_tensor(&rand_tensor(
                &mut rng,
                (2, 4, 3),
                -1.0,
                1.0,
                DType::F64,
                &Device::Cpu,
            ))
            .unwrap();
            let w = rand_tensor(&mut rng, (2, 4, 3), -1.0, 1.0, DType::F64, &Device::Cpu);
            let flip = vec![vec![0, 1, 2, 3], vec![2, 1, 0, 3]];
            let mut vars = vm.all_vars();
            vars.push(x);
            let cfg = mtrec_nn::testing::GradCheckConfig {
                rtol: 1e-4,
                ..Default::default()
            };
            mtrec_nn::testing::check_gradients(
                &vars,
                |vs| (layer.forward(vs.last().unwrap().as_tensor(), &flip, false)? * &w)?.sum_all(),
                cfg,
            )
            .unwrap()
            .assert_ok();
        }
    }
}
