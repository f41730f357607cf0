//! The three networks of VirtualTB-v0 (user generator, click "action" model, leave model) and their
//! deterministic, batched forward passes.
//!
//! The parameter names mirror the PyTorch `nn.Sequential` state dicts of eyounx/VirtualTaobao
//! (`0`, `2`, `4` are the `Linear` layers; `1`, `3` the LeakyReLUs), prefixed `user_generator.`,
//! `action.` and `leave.` in the combined safetensors file, so the reference weights load as they
//! are. Weights are stored `[out, in]` as in torch; they are transposed once at load time so a
//! forward pass is one `matmul` per layer.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::Rng;

use crate::error::{Result, VtbError};
use crate::sample::sample_categorical;

/// Length of the generator's noise input `z ~ U[0, 1)^128`.
pub const Z_DIM: usize = 128;
/// Length of a user's one-hot feature vector (11 categorical attributes).
pub const USER_DIM: usize = 88;
/// Length of the recommender's action (the "weight vector").
pub const ACT_DIM: usize = 27;
/// Outputs of the action model: 11 click logits (0..=10 clicks), then 10 logits of the unused `b`.
pub const ACTION_OUT: usize = CLICK_CLASSES + B_CLASSES;
/// Number of click classes: 0..=10 clicks on a page of 10 items.
pub const CLICK_CLASSES: usize = 11;
/// Number of classes of the leftover `b` head (0..=9), shown in the observation only.
pub const B_CLASSES: usize = 10;
/// Number of leave classes: the user leaves after 0..=100 pages (0 is never drawn in practice and
/// behaves as 1, as in the original env).
pub const LEAVE_CLASSES: usize = 101;
/// Sizes of the 11 categorical user attributes, in order; they tile the 88 user dimensions.
pub const USER_GROUPS: [usize; 11] = [8, 8, 11, 11, 11, 11, 2, 2, 3, 18, 3];

/// Slope of torch's default `nn.LeakyReLU()`, used between all layers.
const LEAKY_SLOPE: f64 = 0.01;

/// `(prefix, [(in, out)] per Linear layer)` of each network.
const GENERATOR: (&str, &[(usize, usize)]) = ("user_generator", &[(128, 128), (128, 88)]);
const ACTION: (&str, &[(usize, usize)]) = ("action", &[(116, 128), (128, 256), (256, 21)]);
const LEAVE: (&str, &[(usize, usize)]) = ("leave", &[(88, 128), (128, 256), (256, 101)]);

/// Start offset of each user attribute group in the 88 dimensions.
pub(crate) fn group_offsets() -> [usize; 11] {
    let mut off = [0; 11];
    let mut acc = 0;
    for (o, g) in off.iter_mut().zip(USER_GROUPS) {
        *o = acc;
        acc += g;
    }
    off
}

/// One `Linear` layer, weight kept transposed (`[in, out]`, contiguous).
#[derive(Debug, Clone)]
struct Linear {
    wt: Tensor,
    b: Tensor,
}

/// A stack of `Linear` layers with LeakyReLU(0.01) between them (not after the last).
#[derive(Debug, Clone)]
struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    fn load(
        tensors: &HashMap<String, Tensor>,
        path: &Path,
        (prefix, dims): (&str, &[(usize, usize)]),
    ) -> Result<Self> {
        let mut layers = Vec::with_capacity(dims.len());
        for (i, &(fan_in, fan_out)) in dims.iter().enumerate() {
            let w = take(
                tensors,
                path,
                &format!("{prefix}.{}.weight", 2 * i),
                &[fan_out, fan_in],
            )?;
            let b = take(
                tensors,
                path,
                &format!("{prefix}.{}.bias", 2 * i),
                &[fan_out],
            )?;
            layers.push(Linear {
                wt: w.t()?.contiguous()?,
                b,
            });
        }
        Ok(Mlp { layers })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            x = x.matmul(&l.wt)?.broadcast_add(&l.b)?;
            if i < last {
                // max(x, 0) + 0.01·min(x, 0) equals torch's `x > 0 ? x : 0.01·x` bit for bit.
                // (candle-nn's function, not `Tensor::maximum` here: that generic method would be
                // compiled into this crate, unoptimised in test builds, and dominate a step.)
                x = candle_nn::ops::leaky_relu(&x, LEAKY_SLOPE)?;
            }
        }
        Ok(x)
    }
}

/// Fetches one tensor, checks its shape and values, and converts it to f32.
fn take(
    tensors: &HashMap<String, Tensor>,
    path: &Path,
    name: &str,
    expected: &[usize],
) -> Result<Tensor> {
    let t = tensors.get(name).ok_or_else(|| VtbError::MissingTensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        expected: expected.to_vec(),
    })?;
    if t.dims() != expected {
        return Err(VtbError::TensorShape {
            path: path.to_path_buf(),
            name: name.to_string(),
            expected: expected.to_vec(),
            got: t.dims().to_vec(),
        });
    }
    let t = t.to_dtype(DType::F32)?;
    let finite = t
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|x| x.is_finite());
    if !finite {
        return Err(VtbError::NonFiniteWeights {
            path: path.to_path_buf(),
            name: name.to_string(),
        });
    }
    Ok(t)
}

/// Checks that an input tensor is f32 `[B, cols]` and returns `B`.
fn check_input(t: &Tensor, what: &'static str, cols: usize) -> Result<usize> {
    match t.dims() {
        &[b, c] if c == cols && t.dtype() == DType::F32 => Ok(b),
        dims => Err(VtbError::InputShape {
            what,
            expected: format!("an f32 tensor [B, {cols}]"),
            got: dims.to_vec(),
            dtype: format!("{:?}", t.dtype()),
        }),
    }
}

/// The Virtual Taobao simulator's networks, loaded from safetensors.
///
/// Cheap to share between environments through an `Arc` (the weights are read only).
#[derive(Debug, Clone)]
pub struct VirtualTb {
    generator: Mlp,
    action: Mlp,
    leave: Mlp,
    device: Device,
}

impl VirtualTb {
    /// Loads the three networks from the combined file (`virtualtb_v0.safetensors`, keys
    /// `user_generator.{0,2}.*`, `action.{0,2,4}.*`, `leave.{0,2,4}.*`; other keys are ignored).
    ///
    /// The caller passes the path: the weights are not bundled with the crate (they are the
    /// simulator authors' files, converted once; the tests read them from `../shared`). Every
    /// shape is checked, and a missing or malformed tensor is an error naming the file and tensor.
    /// Any float dtype is accepted and converted to f32.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors =
            candle_core::safetensors::load(path, device).map_err(|source| VtbError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_tensors(&tensors, path, device)
    }

    /// Builds the simulator from tensors already in memory (named as in [`VirtualTb::load`]);
    /// `source` names where they came from in error messages.
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        source: &Path,
        device: &Device,
    ) -> Result<Self> {
        let on_device: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_device(device)?)))
            .collect::<std::result::Result<_, candle_core::Error>>()?;
        let model = VirtualTb {
            generator: Mlp::load(&on_device, source, GENERATOR)?,
            action: Mlp::load(&on_device, source, ACTION)?,
            leave: Mlp::load(&on_device, source, LEAVE)?,
            device: device.clone(),
        };
        tracing::debug!(source = %source.display(), "loaded the Virtual Taobao networks");
        Ok(model)
    }

    /// The device the weights live on; inputs must be on it too.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// User generator: `z [B, 128]` (uniform in `[0, 1)`) to the 88 logits of the 11 user
    /// attributes (`[B, 88]`); apply [`grouped_softmax`] for the attribute probabilities.
    pub fn generator_logits(&self, z: &Tensor) -> Result<Tensor> {
        check_input(z, "generator input z", Z_DIM)?;
        self.generator.forward(z)
    }

    /// Leave model: one-hot users `[B, 88]` to the logits of leaving after 0..=100 pages
    /// (`[B, 101]`).
    pub fn leave_logits(&self, users: &Tensor) -> Result<Tensor> {
        check_input(users, "leave model users", USER_DIM)?;
        self.leave.forward(users)
    }

    /// Click ("action") model: users `[B, 88]`, the raw page counter `[B, 1]` (0, 1, 2, …, not
    /// scaled: the original env feeds it so) and the recommender's action `[B, 27]` to `[B, 21]`
    /// logits, the first 11 for 0..=10 clicks, the next 10 for the unused `b` (0..=9).
    pub fn action_logits(&self, users: &Tensor, page: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let b = check_input(users, "action model users", USER_DIM)?;
        let bp = check_input(page, "action model page", 1)?;
        let bw = check_input(weight, "action model weight", ACT_DIM)?;
        if bp != b || bw != b {
            return Err(VtbError::Config(format!(
                "action_logits: batch sizes differ (users {b}, page {bp}, weight {bw})"
            )));
        }
        self.action_packed(&Tensor::cat(&[users, page, weight], 1)?)
    }

    /// Action model on an already concatenated `[B, 116]` input (the env's hot path).
    pub(crate) fn action_packed(&self, x: &Tensor) -> Result<Tensor> {
        check_input(x, "action model input", USER_DIM + 1 + ACT_DIM)?;
        self.action.forward(x)
    }

    /// Draws `n` users as the original `UserModel.generate()` does: `z ~ U[0,1)^128`, the
    /// generator's logits, then one categorical draw per attribute group (softmax in f64, inverse
    /// CDF). Returns `n × 88` one-hot rows, row-major.
    pub fn sample_users<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Result<Vec<f32>> {
        let mut users = vec![0f32; n * USER_DIM];
        if n == 0 {
            return Ok(users);
        }
        let z: Vec<f32> = (0..n * Z_DIM).map(|_| rng.random::<f32>()).collect();
        let z = Tensor::from_vec(z, (n, Z_DIM), &self.device)?;
        let logits = self.generator_logits(&z)?.flatten_all()?.to_vec1::<f32>()?;
        let offsets = group_offsets();
        for (row, user) in logits
            .chunks_exact(USER_DIM)
            .zip(users.chunks_exact_mut(USER_DIM))
        {
            for (&off, &g) in offsets.iter().zip(&USER_GROUPS) {
                let k = sample_categorical(&row[off..off + g], rng.random::<f64>()).ok_or(
                    VtbError::NonFiniteLogits {
                        what: "user generator",
                        max: max_of(&row[off..off + g]),
                    },
                )?;
                user[off + k] = 1.0;
            }
        }
        Ok(users)
    }

    /// Draws each user's leave count (the number of pages before leaving, 0..=100) from the leave
    /// model; `users` is `k × 88`, row-major.
    pub fn sample_leaves<R: Rng + ?Sized>(&self, users: &[f32], rng: &mut R) -> Result<Vec<u32>> {
        let probs_logits = self.leave_logits_flat(users)?;
        probs_logits
            .chunks_exact(LEAVE_CLASSES)
            .map(|row| {
                sample_categorical(row, rng.random::<f64>())
                    .map(|k| k as u32)
                    .ok_or(VtbError::NonFiniteLogits {
                        what: "leave model",
                        max: max_of(row),
                    })
            })
            .collect()
    }

    /// Leave logits of `k × 88` users as a flat `k × 101` vector.
    pub fn leave_logits_flat(&self, users: &[f32]) -> Result<Vec<f32>> {
        if users.len() % USER_DIM != 0 {
            return Err(VtbError::Length {
                what: "users (a multiple of 88)",
                expected: users.len().div_ceil(USER_DIM) * USER_DIM,
                got: users.len(),
            });
        }
        let k = users.len() / USER_DIM;
        if k == 0 {
            return Ok(Vec::new());
        }
        let u = Tensor::from_slice(users, (k, USER_DIM), &self.device)?;
        Ok(self.leave_logits(&u)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

fn max_of(x: &[f32]) -> f32 {
    x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Softmax within each of the 11 user attribute groups of `[B, 88]` logits (f32, on the tensor's
/// device): what the original generator feeds to `torch.multinomial`.
pub fn grouped_softmax(logits: &Tensor) -> Result<Tensor> {
    check_input(logits, "grouped_softmax logits", USER_DIM)?;
    let parts = group_offsets()
        .iter()
        .zip(USER_GROUPS)
        .map(|(&off, g)| {
            let x = logits.narrow(1, off, g)?.contiguous()?;
            Ok(candle_nn::ops::softmax_last_dim(&x)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{synthetic_tensors, write};

    fn load_err(tensors: &HashMap<String, Tensor>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.safetensors", tensors);
        match VirtualTb::load(&p, &Device::Cpu) {
            Ok(_) => panic!("a malformed file must not load"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn wrong_shape_names_file_tensor_and_shapes() {
        let mut t = synthetic_tensors();
        t.insert(
            "action.0.weight".into(),
            Tensor::zeros((128, 115), DType::F32, &Device::Cpu).unwrap(),
        );
        let msg = load_err(&t);
        assert!(msg.contains("bad.safetensors"), "{msg}");
        assert!(msg.contains("`action.0.weight`"), "{msg}");
        assert!(
            msg.contains("[128, 115]") && msg.contains("[128, 116]"),
            "{msg}"
        );
    }

    #[test]
    fn missing_tensor_is_named() {
        let mut t = synthetic_tensors();
        t.remove("leave.4.bias");
        let msg = load_err(&t);
        assert!(msg.contains("`leave.4.bias` is missing"), "{msg}");
        assert!(msg.contains("bad.safetensors"), "{msg}");
    }

    #[test]
    fn non_finite_weights_are_refused() {
        let mut t = synthetic_tensors();
        let mut v = vec![0f32; 88];
        v[3] = f32::NAN;
        t.insert(
            "user_generator.2.bias".into(),
            Tensor::from_vec(v, 88, &Device::Cpu).unwrap(),
        );
        let msg = load_err(&t);
        assert!(
            msg.contains("`user_generator.2.bias` holds non-finite"),
            "{msg}"
        );
    }

    #[test]
    fn unreadable_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.safetensors");
        let e = VirtualTb::load(&missing, &Device::Cpu).unwrap_err();
        assert!(matches!(e, VtbError::Read { .. }));
        assert!(e.to_string().contains("nope.safetensors"), "{e}");
        let garbage = dir.path().join("garbage.safetensors");
        std::fs::write(&garbage, b"not a safetensors file").unwrap();
        let e = VirtualTb::load(&garbage, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("garbage.safetensors"), "{e}");
    }

    #[test]
    fn other_float_dtypes_load_and_bad_inputs_are_errors() {
        let t: HashMap<String, Tensor> = synthetic_tensors()
            .into_iter()
            .map(|(k, v)| (k, v.to_dtype(DType::F64).unwrap()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "f64.safetensors", &t);
        let m = VirtualTb::load(&p, &Device::Cpu).unwrap();
        let z = Tensor::zeros((2, 127), DType::F32, &Device::Cpu).unwrap();
        let e = m.generator_logits(&z).unwrap_err().to_string();
        assert!(
            e.contains("generator input z") && e.contains("[2, 127]"),
            "{e}"
        );
        let u = Tensor::zeros((2, 88), DType::F64, &Device::Cpu).unwrap();
        assert!(m.leave_logits(&u).unwrap_err().to_string().contains("F64"));
        let u = Tensor::zeros((2, 88), DType::F32, &Device::Cpu).unwrap();
        let p1 = Tensor::zeros((3, 1), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((2, 27), DType::F32, &Device::Cpu).unwrap();
        let e = m.action_logits(&u, &p1, &w).unwrap_err().to_string();
        assert!(e.contains("batch sizes differ"), "{e}");
        assert!(m.leave_logits_flat(&[0.0; 87]).is_err());
    }

    #[test]
    fn grouped_softmax_sums_to_one_per_group() {
        let vals: Vec<f32> = (0..3 * USER_DIM)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3)
            .collect();
        let x = Tensor::from_vec(vals, (3, USER_DIM), &Device::Cpu).unwrap();
        let p = grouped_softmax(&x).unwrap().to_vec2::<f32>().unwrap();
        for row in &p {
            for (&off, &g) in group_offsets().iter().zip(&USER_GROUPS) {
                let s: f32 = row[off..off + g].iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "group at {off} sums to {s}");
            }
            assert!((row.iter().sum::<f32>() - 11.0).abs() < 1e-4);
        }
        assert_eq!(group_offsets()[10] + USER_GROUPS[10], USER_DIM);
    }
}
