//! DIEN's auxiliary loss on the interest extractor (`model.py::auxiliary_loss`,
//! `auxiliary_net`; `specs/backbones.md` §2.5 step 2; paper Eq. (5)).

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use mtrec_nn::{Activation, InputNorm, InputNormLayer, Mlp, MlpConfig};

/// The `+1e-8` the reference adds to its softmax probabilities before the log.
const PROB_EPS: f64 = 1e-8;

/// `auxiliary_net`: `softmax(Linear(·, 2)(σ(Linear(σ(Linear(H + D, 100)(BN(x)))))))`, the
/// probability that `x = [o_t ; e]` pairs an interest state with the item clicked next.
///
/// Parameters (under the prefix): the input normalisation `bn.*` (the BN quirk `gamma`, `beta` by
/// default, TF `bn1gru`), `fc{i}.weight`, `fc{i}.bias` (TF `f1gru`, `f2gru`) and `out.weight`
/// `[2, ·]`, `out.bias` (TF `f3gru`). The two-logit output is kept (rather than one logit) so that
/// the parameters correspond one to one with the reference's.
#[derive(Debug, Clone)]
pub struct AuxNet {
    norm: InputNormLayer,
    mlp: Mlp,
}

impl AuxNet {
    /// `input` = H + D, `hidden` = the hidden sizes (official `[100, 50]`).
    pub fn new(input: usize, hidden: &[usize], norm: InputNorm, vb: VarBuilder) -> Result<Self> {
        let norm = InputNormLayer::new(norm, input, vb.pp("bn"))?;
        let mlp = Mlp::new(
            &MlpConfig::new(input, hidden, Activation::Sigmoid).with_output(2),
            vb,
        )?;
        Ok(Self { norm, mlp })
    }

    /// The two logits `[N, 2]` for inputs `[N, H + D]` (always a training-time computation).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.mlp.forward(&self.norm.forward(x, true)?)
    }

    /// `L_aux` for interest states `states` `[B, T, H]`, clicked items `clicked` `[B, T, D]`,
    /// not-clicked items `negatives` `[B, T, D]` and the `[B, T]` mask of a **left-aligned** batch:
    ///
    /// ```text
    /// p⁺_t = softmax(net([o_t ; e_{t+1}]))₀ + 1e-8,   p⁻_t = softmax(net([o_t ; ê_{t+1}]))₁ + 1e-8
    /// L_aux = Σ_{b, t < T−1} m_{b,t+1} · (−log p⁺_t − log p⁻_t) / (B · (T − 1))
    /// ```
    ///
    /// The mean runs over all `B × (T − 1)` slots, masked ones included (they count as zeros), as
    /// the reference's `reduce_mean` does; so the loss's scale depends on the batch's padded width.
    /// Only the real pairs are fed to the network (same value and gradient, far less work when
    /// most histories are short). `T < 2` or no real pair gives a constant 0.
    pub fn loss(
        &self,
        states: &Tensor,
        clicked: &Tensor,
        negatives: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let (b, t, h) = states.dims3()?;
        let d = clicked.dim(2)?;
        let dtype = states.dtype();
        let zero = || Tensor::zeros((), dtype, states.device());
        if t < 2 || b == 0 {
            return zero();
        }
        // Flat row indices of the real pairs (b, t) → (b, t + 1); m_{b,t+1} = 1.
        let m: Vec<f32> = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut prev = Vec::new();
        let mut next = Vec::new();
        for bi in 0..b {
            for ti in 0..t - 1 {
                let row = bi * t + ti;
                if m[row + 1] != 0.0 {
                    prev.push(row as u32);
                    next.push(row as u32 + 1);
                }
            }
        }
        if prev.is_empty() {
            return zero();
        }
        let n = prev.len();
        let dev = states.device();
        let prev = Tensor::from_vec(prev, n, dev)?;
        let next = Tensor::from_vec(next, n, dev)?;
        let o = states.reshape((b * t, h))?.index_select(&prev, 0)?;
        let pos = clicked.reshape((b * t, d))?.index_select(&next, 0)?;
        let neg = negatives.reshape((b * t, d))?.index_select(&next, 0)?;
        // One pass over [positives ; negatives]: [2N, H + D].
        let x = Tensor::cat(
            &[&Tensor::cat(&[&o, &pos], 1)?, &Tensor::cat(&[&o, &neg], 1)?],
            0,
        )?;
        let z = self.logits(&x)?;
        // softmax over two logits: p₀ = σ(z₀ − z₁), p₁ = σ(z₁ − z₀).
        let diff = (z.narrow(1, 0, 1)? - z.narrow(1, 1, 1)?)?.squeeze(1)?; // [2N]
        let p_click = candle_nn::ops::sigmoid(&diff.narrow(0, 0, n)?)?;
        let p_noclick = candle_nn::ops::sigmoid(&diff.narrow(0, n, n)?.neg()?)?;
        let nll = ((p_click + PROB_EPS)?.log()?.sum_all()?
            + (p_noclick + PROB_EPS)?.log()?.sum_all()?)?;
        nll.affine(-1.0 / (b * (t - 1)) as f64, 0.0)
    }
}
