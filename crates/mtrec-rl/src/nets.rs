//! Small MLPs with seeded, device-independent initial weights, global-norm gradient clipping and
//! soft (Polyak) target updates.
//!
//! Initial values come from [`mtrec_train::init::init_values`]: one ChaCha8 stream per
//! `(seed, variable name)`, drawn on the host and then moved to the device, so a seed gives the same
//! network on any device and in any build order (candle's own CPU RNG cannot be seeded).

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Module, Result, Shape, Tensor, Var};
use candle_nn::{Init, VarMap};
use mtrec_nn::Dense;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// Hidden-layer non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// SB3's default for PPO's `MlpPolicy`.
    Tanh,
    /// SB3's default for SAC's `MlpPolicy`.
    Relu,
}

impl Activation {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Tanh => x.tanh(),
            Activation::Relu => x.relu(),
        }
    }
}

/// How a dense layer's weights start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum WeightInit {
    /// Orthogonal weights scaled by `gain`, zero bias (SB3's `ortho_init` for PPO).
    Orthogonal { gain: f64 },
    /// PyTorch's `nn.Linear` default: weight and bias `U(−1/√in, 1/√in)` (SB3's SAC).
    TorchDefault,
}

/// A ChaCha8 generator for one purpose (`stream`) of a run seeded with `seed`.
pub(crate) fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// `n` standard normal draws.
pub(crate) fn standard_normal(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let x: f64 = StandardNormal.sample(rng);
            x as f32
        })
        .collect()
}

/// Orthonormalises the rows of `w` (`rows × cols`, row-major) when `rows ≤ cols`, else its columns
/// (modified Gram–Schmidt in f64), as `torch.nn.init.orthogonal_` does with a QR decomposition.
pub(crate) fn orthogonalize(w: &mut [f64], rows: usize, cols: usize) {
    // Element `k` of vector `v` is at `v·sv + k·sk`.
    let (n_vec, len, sv, sk) = if rows <= cols {
        (rows, cols, cols, 1)
    } else {
        (cols, rows, 1, cols)
    };
    let at = |v: usize, k: usize| v * sv + k * sk;
    for v in 0..n_vec {
        for p in 0..v {
            let dot: f64 = (0..len).map(|k| w[at(v, k)] * w[at(p, k)]).sum();
            for k in 0..len {
                w[at(v, k)] -= dot * w[at(p, k)];
            }
        }
        let norm = (0..len).map(|k| w[at(v, k)].powi(2)).sum::<f64>().sqrt();
        let norm = if norm > 1e-12 { norm } else { 1.0 };
        for k in 0..len {
            w[at(v, k)] /= norm;
        }
    }
}

/// Creates the variables of a model in a `VarMap`, with seeded values.
pub(crate) struct ParamFactory<'a> {
    pub(crate) varmap: &'a VarMap,
    pub(crate) seed: u64,
    pub(crate) device: &'a Device,
}

impl ParamFactory<'_> {
    /// A new f32 variable `name` holding `values`.
    pub(crate) fn var(
        &self,
        name: &str,
        shape: impl Into<Shape>,
        values: Vec<f64>,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_device(self.device)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
        if data.contains_key(name) {
            candle_core::bail!("variable {name} created twice");
        }
        data.insert(name.to_owned(), var);
        Ok(out)
    }

    /// Seeded draws for variable `name`.
    fn draw(&self, name: &str, shape: &Shape, init: Init) -> Result<Vec<f64>> {
        mtrec_train::init::init_values(shape, init, self.seed, name)
    }

    /// A dense layer `name.weight` `[out, in]`, `name.bias` `[out]`.
    pub(crate) fn dense(
        &self,
        name: &str,
        inp: usize,
        out: usize,
        init: WeightInit,
    ) -> Result<Dense> {
        let wname = format!("{name}.weight");
        let bname = format!("{name}.bias");
        let wshape = Shape::from((out, inp));
        let (w, b) = match init {
            WeightInit::Orthogonal { gain } => {
                let std_normal = Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                };
                let mut w = self.draw(&wname, &wshape, std_normal)?;
                orthogonalize(&mut w, out, inp);
                w.iter_mut().for_each(|x| *x *= gain);
                (w, vec![0.0; out])
            }
            WeightInit::TorchDefault => {
                let bound = 1.0 / (inp.max(1) as f64).sqrt();
                let u = Init::Uniform {
                    lo: -bound,
                    up: bound,
                };
                (
                    self.draw(&wname, &wshape, u)?,
                    self.draw(&bname, &Shape::from(out), u)?,
                )
            }
        };
        Dense::from_tensors(self.var(&wname, wshape, w)?, self.var(&bname, out, b)?)
    }
}

/// A multi-layer perceptron: dense layers with an activation between them, none after the last.
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    layers: Vec<Dense>,
    act: Activation,
}

impl Mlp {
    /// Layers `name.0`, `name.1`, … mapping `sizes[0] → … → sizes[last]`.
    pub(crate) fn new(
        f: &ParamFactory<'_>,
        name: &str,
        sizes: &[usize],
        act: Activation,
        hidden_init: WeightInit,
        out_init: WeightInit,
    ) -> Result<Self> {
        let n = sizes.len().saturating_sub(1);
        let mut layers = Vec::with_capacity(n);
        for (i, w) in sizes.windows(2).enumerate() {
            let init = if i + 1 == n { out_init } else { hidden_init };
            layers.push(f.dense(&format!("{name}.{i}"), w[0], w[1], init)?);
        }
        Ok(Mlp { layers, act })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }

    /// The forward pass with the weights treated as constants: gradients still flow to `x`, but
    /// a backward pass computes no weight gradients (SAC's actor loss differentiates through the
    /// critics without updating them; this saves their weight-gradient matmuls).
    pub(crate) fn forward_frozen(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    fn run(&self, x: &Tensor, frozen: bool) -> Result<Tensor> {
        let mut h = x.clone();
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            h = if frozen {
                mtrec_nn::dense(&h, &l.weight().detach(), Some(&l.bias().detach()))?
            } else {
                l.forward(&h)?
            };
            if i + 1 < n {
                h = self.act.apply(&h)?;
            }
        }
        Ok(h)
    }
}

/// The variables of a `VarMap`, sorted by name (a fixed order: sums over them are repeatable).
pub(crate) fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Scales the gradients of `vars` in `grads` so that their global L2 norm is at most `max_norm`
/// (PyTorch's `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when below 1). Returns the
/// norm before clipping. The norm is summed in f64 in the order of `vars`.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sq = 0.0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * coef)?);
            }
        }
    }
    Ok(norm)
}

/// Polyak averaging `target ← τ·source + (1 − τ)·target`, pairwise (same order and shapes).
pub fn soft_update(target: &[Var], source: &[Var], tau: f64) -> Result<()> {
    if target.len() != source.len() {
        candle_core::bail!(
            "soft_update: {} target and {} source variables",
            target.len(),
            source.len()
        );
    }
    for (t, s) in target.iter().zip(source) {
        if t.shape() != s.shape() {
            candle_core::bail!("soft_update: shapes {:?} and {:?}", t.shape(), s.shape());
        }
        let next = ((s.as_tensor() * tau)? + (t.as_tensor() * (1.0 - tau))?)?;
        t.set(&next)?;
    }
    Ok(())
}

/// Rows of host floats as a `[n, d]` f32 tensor on `device`.
pub(crate) fn rows(data: &[f32], n: usize, d: usize, device: &Device) -> Result<Tensor> {
    Tensor::from_slice(data, (n, d), &Device::Cpu)?.to_device(device)
}

/// A tensor's values as host f32, flattened.
pub(crate) fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_init_has_orthonormal_rows_or_columns() {
        for (r, c) in [(3usize, 5usize), (6, 4), (4, 4)] {
            let vm = VarMap::new();
            let f = ParamFactory {
                varmap: &vm,
                seed: 1,
                device: &Device::Cpu,
            };
            let d = f
                .dense("l", c, r, WeightInit::Orthogonal { gain: 2.0 })
                .unwrap();
            let w: Vec<Vec<f32>> = d.weight().to_vec2().unwrap();
            let k = r.min(c);
            for a in 0..k {
                for b in 0..k {
                    let dot: f32 = if r <= c {
                        (0..c).map(|j| w[a][j] * w[b][j]).sum()
                    } else {
                        (0..r).map(|j| w[j][a] * w[j][b]).sum()
                    };
                    let want = if a == b { 4.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-5, "{r}x{c} ({a},{b}): {dot}");
                }
            }
            assert!(d.bias().to_vec1::<f32>().unwrap().iter().all(|&b| b == 0.0));
        }
    }

    #[test]
    fn soft_update_and_clipping_arithmetic() {
        let t = Var::new(&[1.0f32, -2.0, 4.0], &Device::Cpu).unwrap();
        let s = Var::new(&[3.0f32, 2.0, 0.0], &Device::Cpu).unwrap();
        soft_update(std::slice::from_ref(&t), std::slice::from_ref(&s), 0.25).unwrap();
        // 0.25·3 + 0.75·1 = 1.5; 0.25·2 + 0.75·(−2) = −1; 0.75·4 = 3.
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![1.5, -1.0, 3.0]);
        soft_update(std::slice::from_ref(&t), std::slice::from_ref(&s), 1.0).unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![3.0, 2.0, 0.0]);
        let other = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        assert!(soft_update(&[other], std::slice::from_ref(&s), 0.5).is_err());

        // Global norm of (3, 4) and (12) is 13: clipped to 6.5 each scaled by 0.5.
        let a = Var::new(&[1.0f32, 1.0], &Device::Cpu).unwrap();
        let b = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let w = Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap();
        let loss = ((a.as_tensor() * &w).unwrap().sum_all().unwrap()
            + (b.as_tensor() * 12.0).unwrap().sum_all().unwrap())
        .unwrap();
        let mut g = loss.backward().unwrap();
        let vars = [a.clone(), b.clone()];
        let norm = clip_grad_norm(&mut g, &vars, 100.0).unwrap();
        assert!((norm - 13.0).abs() < 1e-6);
        assert_eq!(
            g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            vec![12.0]
        );
        let norm = clip_grad_norm(&mut g, &vars, 6.5).unwrap();
        assert!((norm - 13.0).abs() < 1e-6);
        let ga = g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let gb = g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let k = 6.5 / (13.0 + 1e-6);
        assert!((ga[0] - 3.0 * k as f32).abs() < 1e-6 && (ga[1] - 4.0 * k as f32).abs() < 1e-6);
        assert!((gb[0] - 12.0 * k as f32).abs() < 1e-5);
    }
}
