//! LayerNorm's normalisation `y = (x − mean) / sqrt(var + eps)` over the last dimension as one
//! candle [`CustomOp1`] with a hand-written backward, for CPU f32/f64 tensors.
//!
//! The op-composed form ([`crate::LayerNorm`] on other devices) makes about six passes over the
//! tensor forward and a dozen backward, each through candle's broadcast kernels; in SASRec and
//! LinRec those passes were a large share of the step. Here each row is read once forward and once
//! backward: `dx = rstd · (g − mean(g) − y · mean(g ⊙ y))`, the row sums accumulated in f64, rows in
//! parallel. The affine part (`γ`, `β`) stays outside, as rank-1 matmuls.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

use crate::custom_op::{contiguous_slice, with_cpu_slice};

const OP: &str = "fused layer normalisation";

/// The normalisation with its `eps` (added to the variance).
pub(crate) struct NormalizeOp {
    pub eps: f64,
}

/// Rows of `c` values at a time per task.
fn rows_per_task(c: usize) -> usize {
    (16_384 / c.max(1)).max(1)
}

fn forward<F: Float + Send + Sync>(x: &[F], c: usize, eps: f64) -> Vec<F> {
    let mut y = vec![F::zero(); x.len()];
    let per = rows_per_task(c) * c;
    y.par_chunks_mut(per)
        .zip(x.par_chunks(per))
        .for_each(|(yb, xb)| {
            for (yr, xr) in yb.chunks_mut(c).zip(xb.chunks(c)) {
                let n = c as f64;
                let mean = xr.iter().map(|v| v.to_f64().unwrap_or(0.0)).sum::<f64>() / n;
                let var = xr
                    .iter()
                    .map(|v| {
                        let d = v.to_f64().unwrap_or(0.0) - mean;
                        d * d
                    })
                    .sum::<f64>()
                    / n;
                let rstd = 1.0 / (var + eps).sqrt();
                for (o, v) in yr.iter_mut().zip(xr) {
                    *o = F::from((v.to_f64().unwrap_or(0.0) - mean) * rstd).unwrap_or(F::zero());
                }
            }
        });
    y
}

fn backward<F: Float + Send + Sync>(x: &[F], g: &[F], c: usize, eps: f64) -> Vec<F> {
    let mut dx = vec![F::zero(); x.len()];
    let per = rows_per_task(c) * c;
    dx.par_chunks_mut(per)
        .zip(x.par_chunks(per).zip(g.par_chunks(per)))
        .for_each(|(db, (xb, gb))| {
            for ((dr, xr), gr) in db.chunks_mut(c).zip(xb.chunks(c)).zip(gb.chunks(c)) {
                let n = c as f64;
                let f = |v: &F| v.to_f64().unwrap_or(0.0);
                let mean = xr.iter().map(f).sum::<f64>() / n;
                let var = xr.iter().map(|v| (f(v) - mean).powi(2)).sum::<f64>() / n;
                let rstd = 1.0 / (var + eps).sqrt();
                let (mut sg, mut sgy) = (0.0, 0.0);
                for (v, gv) in xr.iter().zip(gr) {
                    let y = (f(v) - mean) * rstd;
                    sg += f(gv);
                    sgy += f(gv) * y;
                }
                let (mg, mgy) = (sg / n, sgy / n);
                for ((o, v), gv) in dr.iter_mut().zip(xr).zip(gr) {
                    let y = (f(v) - mean) * rstd;
                    *o = F::from(rstd * (f(gv) - mg - y * mgy)).unwrap_or(F::zero());
                }
            }
        });
    dx
}

impl CustomOp1 for NormalizeOp {
    fn name(&self) -> &'static str {
        "mtrec-layer-normalise"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let c = l.dims().last().copied().unwrap_or(1);
        let out = match s {
            CpuStorage::F32(x) => {
                CpuStorage::F32(forward(contiguous_slice(x, l, OP)?, c, self.eps))
            }
            CpuStorage::F64(x) => {
                CpuStorage::F64(forward(contiguous_slice(x, l, OP)?, c, self.eps))
            }
            _ => bail!("{OP}: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let c = x.dims().last().copied().unwrap_or(1);
        let grad = grad.contiguous()?;
        let dx = match x.dtype() {
            candle_core::DType::F32 => {
                let v = with_cpu_slice::<f32, _>(x, OP, |xs| {
                    with_cpu_slice::<f32, _>(&grad, OP, |gs| Ok(backward(xs, gs, c, self.eps)))
                })?;
                Tensor::from_vec(v, x.shape(), x.device())?
            }
            candle_core::DType::F64 => {
                let v = with_cpu_slice::<f64, _>(x, OP, |xs| {
                    with_cpu_slice::<f64, _>(&grad, OP, |gs| Ok(backward(xs, gs, c, self.eps)))
                })?;
                Tensor::from_vec(v, x.shape(), x.device())?
            }
            dt => bail!("{OP}: no backward for {dt:?}"),
        };
        Ok(Some(dx))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::{VarBuilder, VarMap};

    use crate::testing::assert_gradients_match;
    use crate::LayerNorm;

    fn layer_norm(dim: usize, eps: f64, dtype: DType) -> (VarMap, LayerNorm) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
        let ln = LayerNorm::new(dim, eps, vb).unwrap();
        // Non-trivial γ, β.
        for (name, var) in vm.data().lock().unwrap().iter() {
            let n = var.elem_count();
            let v: Vec<f64> = (0..n)
                .map(|i| {
                    if name.contains("weight") {
                        0.5 + 0.1 * i as f64
                    } else {
                        0.05 * i as f64 - 0.1
                    }
                })
                .collect();
            var.set(
                &Tensor::from_vec(v, n, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
        }
        (vm, ln)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        crate::ctr::testkit::max_abs_diff(a, b).unwrap()
    }

    #[test]
    fn fused_matches_composed_values_and_gradients() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-5)] {
            let (vm, ln) = layer_norm(7, 1e-8, dtype);
            let x = Var::from_tensor(
                &(Tensor::randn(0f64, 2.0, (3, 5, 7), &Device::Cpu).unwrap() + 0.7)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let w = Tensor::randn(0f64, 1.0, (3, 5, 7), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let fused = ln.forward(x.as_tensor()).unwrap();
            let composed = ln.forward_composed(x.as_tensor()).unwrap();
            assert!(max_diff(&fused, &composed) < tol, "{dtype:?}");
            let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (composed * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut vars: Vec<Tensor> = vec![x.as_tensor().clone()];
            vars.extend(vm.all_vars().iter().map(|v| v.as_tensor().clone()));
            for v in &vars {
                let (a, b) = (gf.get(v).unwrap(), gc.get(v).unwrap());
                assert!(max_diff(a, b) < 10.0 * tol, "{dtype:?}: {}", max_diff(a, b));
            }
        }
    }

    #[test]
    fn fused_gradient_matches_finite_differences() {
        let (_, ln) = layer_norm(6, 1e-5, DType::F64);
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (4, 6), &Device::Cpu).unwrap()).unwrap();
        let w = Tensor::randn(0f64, 1.0, (4, 6), &Device::Cpu).unwrap();
        assert_gradients_match(&[x], |v| (ln.forward(v[0].as_tensor())? * &w)?.sum_all());
    }

    #[test]
    fn constant_rows_and_one_column_stay_finite() {
        let (_, ln) = layer_norm(4, 1e-8, DType::F32);
        let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
        let y = ln.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert!(y.iter().flatten().all(|v| v.is_finite()));
        let (_, ln1) = layer_norm(1, 1e-8, DType::F32);
        let x = Tensor::new(&[[3f32], [-1.0]], &Device::Cpu).unwrap();
        assert!(ln1
            .forward(&x)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .flatten()
            .all(|v| v.is_finite()));
    }
}
