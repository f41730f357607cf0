//! Multi-layer perceptrons with the activations of the CTR reference codes: ReLU, last-dimension
//! PReLU, Dice (DIN), sigmoid.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use crate::dense::{add_last, mul_last, Dense};

/// A [`Dense`] layer `[out, in]` + bias `[out]` with TensorFlow 1's default initialisation:
/// Glorot-uniform weight `U(±sqrt(6 / (in + out)))`, zero bias. Parameters `weight`, `bias`.
pub fn glorot_linear(input: usize, output: usize, vb: VarBuilder) -> Result<Dense> {
    let bound = (6.0 / (input + output).max(1) as f64).sqrt();
    let weight = vb.get_with_hints(
        (output, input),
        "weight",
        Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    let bias = vb.get_with_hints(output, "bias", Init::Const(0.0))?;
    Dense::from_tensors(weight, bias)
}

/// The activation after each hidden linear layer of an [`Mlp`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// [`PRelu`] with one learnable slope per feature (last dimension), initialised to 0.1 (the
    /// DIEN reference code's `prelu`).
    PRelu,
    /// [`Dice`] (DIN, Zhou et al. 2018, Eq. (9)) with the given normalisation.
    Dice(DiceNorm),
    /// The logistic sigmoid (DIN's attention MLP in both official codes).
    Sigmoid,
    /// The identity.
    None,
}

/// A built activation: the parameter-free ones, or a layer with its own parameters.
#[derive(Debug, Clone)]
pub enum ActivationLayer {
    Relu,
    PRelu(PRelu),
    Dice(Dice),
    Sigmoid,
    Identity,
}

impl ActivationLayer {
    /// Builds `act` for `dim` features; parameters (if any) live directly under `vb`.
    pub fn new(act: Activation, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(match act {
            Activation::Relu => Self::Relu,
            Activation::PRelu => Self::PRelu(PRelu::new(dim, 0.1, vb)?),
            Activation::Dice(norm) => Self::Dice(Dice::new(dim, norm, vb)?),
            Activation::Sigmoid => Self::Sigmoid,
            Activation::None => Self::Identity,
        })
    }

    /// Applies the activation over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Relu => x.relu(),
            Self::PRelu(p) => p.forward(x),
            Self::Dice(d) => d.forward(x),
            Self::Sigmoid => candle_nn::ops::sigmoid(x),
            Self::Identity => Ok(x.clone()),
        }
    }
}

/// Parametric ReLU with one slope per feature of the **last** dimension:
/// `max(x, 0) + a ⊙ min(x, 0)`. (`candle_nn::PReLU` broadcasts over dimension 1, wrong for
/// `[B, T, C]`.) Parameter: `alpha` `[C]`.
#[derive(Debug, Clone)]
pub struct PRelu {
    alpha: Tensor,
}

impl PRelu {
    pub fn new(dim: usize, init: f64, vb: VarBuilder) -> Result<Self> {
        let alpha = vb.get_with_hints(dim, "alpha", Init::Const(init))?;
        Ok(Self { alpha })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pos = x.relu()?;
        let neg = x.minimum(0.0)?;
        pos + mul_last(&neg, &self.alpha)?
    }
}

/// How [`Dice`] normalises its input before the sigmoid gate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum DiceNorm {
    /// `x̂ = γ ⊙ x + β`, a learnable per-feature affine (`gamma` init 1, `beta` init 0). This is what
    /// the DIN reference's `tf.layers.batch_normalization(center=False, scale=False)` effectively
    /// is: called without `training=True` it always normalises with its moving statistics, which
    /// never update (mean 0, variance 1), i.e. a fixed `x / sqrt(1 + 1e-3)`; we make that per-feature
    /// scale (and a shift) learnable. Deterministic, independent of the batch. **Default.**
    #[default]
    Affine,
    /// `x̂ = (x − E[x]) / (sqrt(E[(x − E[x])²] + ε) + ε)` with the statistics of the current batch
    /// (all dimensions but the last), as DIEN's `utils.py::dice` computes it (ε = 1e-9), in
    /// training and inference alike. Gradients flow through the statistics.
    BatchStats { eps: f64 },
}

/// Dice, DIN's data-adaptive activation (Zhou et al. 2018, Eq. (9)):
/// `p = σ(x̂)`, `out = p ⊙ x + (1 − p) ⊙ α ⊙ x`, with `x̂` from [`DiceNorm`] and a per-feature `alpha`
/// initialised to 0 (both reference codes). Parameters: `alpha` `[C]`, and with
/// [`DiceNorm::Affine`] `gamma`, `beta` `[C]`. Acts on the last dimension of `[.., C]`.
#[derive(Debug, Clone)]
pub struct Dice {
    alpha: Tensor,
    affine: Option<(Tensor, Tensor)>,
    norm: DiceNorm,
}

impl Dice {
    pub fn new(dim: usize, norm: DiceNorm, vb: VarBuilder) -> Result<Self> {
        let alpha = vb.get_with_hints(dim, "alpha", Init::Const(0.0))?;
        let affine = match norm {
            DiceNorm::Affine => Some((
                vb.get_with_hints(dim, "gamma", Init::Const(1.0))?,
                vb.get_with_hints(dim, "beta", Init::Const(0.0))?,
            )),
            DiceNorm::BatchStats { .. } => None,
        };
        Ok(Self {
            alpha,
            affine,
            norm,
        })
    }

    /// The normalised input `x̂` fed to the sigmoid gate.
    pub fn normalise(&self, x: &Tensor) -> Result<Tensor> {
        match (self.norm, &self.affine) {
            (DiceNorm::Affine, Some((g, b))) => add_last(&mul_last(x, g)?, b),
            (DiceNorm::BatchStats { eps }, _) => {
                let c = x.dim(D::Minus1)?;
                let rows = x.elem_count() / c.max(1);
                let flat = x.reshape((rows, c))?;
                let mean = flat.mean_keepdim(0)?;
                let centred = flat.broadcast_sub(&mean)?;
                let var = (centred.sqr()? + eps)?.mean_keepdim(0)?;
                let std = (var.sqrt()? + eps)?;
                centred.broadcast_div(&std)?.reshape(x.shape())
            }
            (DiceNorm::Affine, None) => candle_core::bail!("Dice: affine parameters missing"),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = candle_nn::ops::sigmoid(&self.normalise(x)?)?;
        // out = p·x + (1 − p)·α·x = x ⊙ (p + (1 − p) ⊙ α)
        let one_minus_p = p.affine(-1.0, 1.0)?;
        let gate = (&p + mul_last(&one_minus_p, &self.alpha)?)?;
        x * gate
    }
}

/// The shape of an [`Mlp`]: `input → hidden[0] → … → hidden[n−1] (→ output)`, an activation after
/// each hidden layer, none after the output layer.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    pub input: usize,
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// Size of an optional final linear layer (no activation after it), e.g. 1 or 2 logits.
    pub output: Option<usize>,
}

impl MlpConfig {
    pub fn new(input: usize, hidden: &[usize], activation: Activation) -> Self {
        Self {
            input,
            hidden: hidden.to_vec(),
            activation,
            output: None,
        }
    }

    pub fn with_output(mut self, output: usize) -> Self {
        self.output = Some(output);
        self
    }

    /// The size of the last dimension of the output.
    pub fn out_dim(&self) -> usize {
        self.output
            .or_else(|| self.hidden.last().copied())
            .unwrap_or(self.input)
    }
}

/// A stack of `Linear` + activation layers over the last dimension (any leading shape).
///
/// Parameter names: `fc{i}.weight`, `fc{i}.bias` for hidden layer `i` (from 0), its activation's
/// parameters under `act{i}.*` (`alpha`, `gamma`, `beta`), and `out.weight`, `out.bias` for the
/// optional output layer. Linear layers use [`glorot_linear`] (TensorFlow 1's `tf.layers.dense`
/// defaults, which every DIEN-family reference code relies on).
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<(Dense, ActivationLayer)>,
    output: Option<Dense>,
    cfg: MlpConfig,
}

impl Mlp {
    pub fn new(cfg: &MlpConfig, vb: VarBuilder) -> Result<Self> {
        let mut layers = Vec::with_capacity(cfg.hidden.len());
        let mut fan_in = cfg.input;
        for (i, &h) in cfg.hidden.iter().enumerate() {
            let lin = glorot_linear(fan_in, h, vb.pp(format!("fc{i}")))?;
            let act = ActivationLayer::new(cfg.activation, h, vb.pp(format!("act{i}")))?;
            layers.push((lin, act));
            fan_in = h;
        }
        let output = match cfg.output {
            Some(o) => Some(glorot_linear(fan_in, o, vb.pp("out"))?),
            None => None,
        };
        Ok(Self {
            layers,
            output,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &MlpConfig {
        &self.cfg
    }

    /// The first affine layer (the first hidden layer, or the output layer when there is none).
    pub fn first_layer(&self) -> Option<&Dense> {
        self.layers
            .first()
            .map(|(lin, _)| lin)
            .or(self.output.as_ref())
    }

    /// The rest of the network given the first affine layer's output `z` (pre-activation):
    /// `forward(x) == forward_after_first(first_layer().forward(x))`. Lets a caller compute the
    /// first product in a cheaper, algebraically equal way (DIN's attention).
    pub fn forward_after_first(&self, z: &Tensor) -> Result<Tensor> {
        let Some(((_, act0), rest)) = self.layers.split_first() else {
            return Ok(z.clone());
        };
        let mut h = act0.forward(z)?;
        for (lin, act) in rest {
            h = act.forward(&lin.forward(&h)?)?;
        }
        match &self.output {
            Some(out) => out.forward(&h),
            None => Ok(h),
        }
    }

    /// `[.., input]` → `[.., out_dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (lin, act) in &self.layers {
            h = act.forward(&lin.forward(&h)?)?;
        }
        match &self.output {
            Some(out) => out.forward(&h),
            None => Ok(h),
        }
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Mlp::forward(self, xs)
    }
}
