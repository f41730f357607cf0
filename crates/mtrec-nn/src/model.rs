//! The [`Backbone`] trait every recommendation model implements, the output [`Head`]s, and
//! [`Model`] = backbone + head.
//!
//! One trunk serves three jobs (`specs/backbones.md` §4): the CTR model `F` (one click logit), the
//! IQ-Learn Q-network (2 logits, one per action) and the QR-IQL Q-network (2 × N quantile logits).
//! "Same architecture except the output layer": the backbone stops just before the reference
//! code's last `Linear`, and the head is that `Linear` widened to the output it needs.

use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};

use crate::batch::{Batch, Layout};
use crate::mlp::glorot_linear;

/// What a backbone hands to its head.
#[derive(Debug, Clone)]
pub struct Features {
    /// `[B, feature_dim]`: the input of the reference code's final linear layer.
    pub features: Tensor,
    /// `[B]`: a term the reference adds to the click logit outside the final layer (DeepFM's
    /// first- and second-order FM terms). Heads add it to the outputs of action "click" (P).
    pub logit_offset: Option<Tensor>,
    /// A scalar auxiliary loss to add to the training loss (DIEN's interest-extractor loss).
    pub aux_loss: Option<Tensor>,
}

impl Features {
    /// Features with no offset and no auxiliary loss.
    pub fn plain(features: Tensor) -> Self {
        Features {
            features,
            logit_offset: None,
            aux_loss: None,
        }
    }
}

/// A recommendation model's trunk: scores a batch of (user, history, shown item) samples up to
/// its last hidden layer.
pub trait Backbone: Send + Sync {
    /// The registry name (`din`, `dien`, ...).
    fn name(&self) -> &str;
    /// The size of [`Features::features`]' last dimension.
    fn feature_dim(&self) -> usize;
    /// The batch layout the model expects (history cap, padding, alignment).
    fn layout(&self) -> Layout {
        Layout::default()
    }
    /// Runs the trunk. `train` is true during training (dropout, auxiliary losses); evaluation
    /// passes false and may skip work that only feeds the auxiliary loss.
    fn forward(&self, batch: &Batch, train: bool) -> Result<Features>;
}

/// Which output layer sits on top of a backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadKind {
    /// One click logit per sample: the recommendation model `F = σ(logit)`.
    Ctr,
    /// One logit per action `[N, P]`: IQ-Learn's Q(s, ·).
    Q,
    /// `N` quantile logits per action, `[B, 2, N]`: QR-IQL's Q-network.
    Quantile(usize),
}

impl HeadKind {
    /// Width of the output linear layer.
    pub fn outputs(&self) -> usize {
        match self {
            HeadKind::Ctr => 1,
            HeadKind::Q => 2,
            HeadKind::Quantile(n) => 2 * n,
        }
    }
}

/// Index of the "click" action P in the action axis of Q heads (matches `mtrec_mdp::ACTION_POSITIVE`).
pub const ACTION_P: usize = 1;

/// The final linear layer, with TensorFlow's Glorot init and zero bias. Parameters `head.weight`,
/// `head.bias` (under the model's prefix).
#[derive(Debug, Clone)]
pub struct Head {
    kind: HeadKind,
    linear: crate::dense::Dense,
}

impl Head {
    pub fn new(kind: HeadKind, input: usize, vb: VarBuilder) -> Result<Self> {
        if let HeadKind::Quantile(0) = kind {
            candle_core::bail!("a quantile head needs at least one quantile");
        }
        Ok(Head {
            kind,
            linear: glorot_linear(input, kind.outputs(), vb)?,
        })
    }

    pub fn kind(&self) -> HeadKind {
        self.kind
    }

    /// `Ctr` → `[B]`, `Q` → `[B, 2]`, `Quantile(n)` → `[B, 2, n]`; the offset (if any) is added
    /// to every output of action P.
    pub fn forward(&self, f: &Features) -> Result<Tensor> {
        let z = self.linear.forward(&f.features)?;
        let b = z.dim(0)?;
        match self.kind {
            HeadKind::Ctr => {
                let z = z.squeeze(1)?;
                match &f.logit_offset {
                    Some(o) => z + o,
                    None => Ok(z),
                }
            }
            HeadKind::Q | HeadKind::Quantile(_) => {
                let n = self.kind.outputs() / 2;
                let z = z.reshape((b, 2, n))?;
                let z = match &f.logit_offset {
                    Some(o) => {
                        // [B,1,1] offset on the P row only.
                        let sel = Tensor::from_vec(
                            (0..2)
                                .map(|a| if a == ACTION_P { 1f32 } else { 0.0 })
                                .collect::<Vec<_>>(),
                            (1, 2, 1),
                            z.device(),
                        )?
                        .to_dtype(z.dtype())?;
                        z.broadcast_add(&o.reshape((b, 1, 1))?.broadcast_mul(&sel)?)?
                    }
                    None => z,
                };
                if self.kind == HeadKind::Q {
                    z.squeeze(2)
                } else {
                    Ok(z)
                }
            }
        }
    }
}

/// The output of [`Model::forward`].
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// See [`Head::forward`] for the shape.
    pub logits: Tensor,
    pub aux_loss: Option<Tensor>,
}

/// A backbone with its head.
pub struct Model {
    backbone: Box<dyn Backbone>,
    head: Head,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("backbone", &self.backbone.name())
            .field("head", &self.head.kind)
            .finish()
    }
}

impl Model {
    /// Puts a head of `kind` named `vb.pp("head")` on `backbone`.
    pub fn new(backbone: Box<dyn Backbone>, kind: HeadKind, vb: VarBuilder) -> Result<Self> {
        let head = Head::new(kind, backbone.feature_dim(), vb.pp("head"))?;
        Ok(Model { backbone, head })
    }

    pub fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn layout(&self) -> Layout {
        self.backbone.layout()
    }

    pub fn forward(&self, batch: &Batch, train: bool) -> Result<ModelOutput> {
        let f = self.backbone.forward(batch, train)?;
        let logits = self.head.forward(&f)?;
        Ok(ModelOutput {
            logits,
            aux_loss: f.aux_loss,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    struct Fixed(usize);
    impl Backbone for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn feature_dim(&self) -> usize {
            self.0
        }
        fn forward(&self, batch: &Batch, _train: bool) -> Result<Features> {
            let x = batch.labels.unsqueeze(1)?.repeat((1, self.0))?;
            Ok(Features {
                logit_offset: Some(batch.labels.clone()),
                ..Features::plain(x)
            })
        }
    }

    fn batch(labels: &[f32]) -> Batch {
        let b = labels.len();
        crate::batch::HostBatch {
            users: vec![1; b],
            hist_items: vec![0; b],
            hist_cats: vec![0; b],
            hist_neg_items: vec![0; b],
            hist_neg_cats: vec![0; b],
            mask: vec![0.0; b],
            lengths: vec![0; b],
            target_items: vec![1; b],
            target_cats: vec![1; b],
            labels: labels.to_vec(),
        }
        .to_device(1, crate::batch::Align::Left, &Device::Cpu)
        .unwrap()
    }

    #[test]
    fn head_shapes_and_offset_on_action_p() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let b = batch(&[0.0, 1.0, 2.0]);
        for (kind, shape) in [
            (HeadKind::Ctr, vec![3]),
            (HeadKind::Q, vec![3, 2]),
            (HeadKind::Quantile(4), vec![3, 2, 4]),
        ] {
            let m = Model::new(Box::new(Fixed(3)), kind, vb.pp(format!("{kind:?}"))).unwrap();
            let out = m.forward(&b, true).unwrap().logits;
            assert_eq!(out.dims(), &shape[..], "{kind:?}");
        }
        // With zero weights the output is bias (0) + offset on P only.
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let m = Model::new(Box::new(Fixed(2)), HeadKind::Quantile(2), vb).unwrap();
        for v in vm.all_vars() {
            v.set(&v.zeros_like().unwrap()).unwrap();
        }
        let out = m.forward(&b, false).unwrap().logits;
        let v: Vec<Vec<Vec<f32>>> = out.to_vec3().unwrap();
        assert_eq!(v[2][0], vec![0.0, 0.0]);
        assert_eq!(v[2][ACTION_P], vec![2.0, 2.0]);
        assert!(Head::new(
            HeadKind::Quantile(0),
            2,
            VarBuilder::zeros(DType::F32, &Device::Cpu)
        )
        .is_err());
    }
}
