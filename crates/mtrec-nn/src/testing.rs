//! Gradient-checking utilities for tests: a finite-difference checker and a check that every
//! variable of a `VarMap` receives a non-zero gradient (the symptom of candle's detached fused ops).
//!
//! Use `DType::F64` variables and inputs for finite differences: in f32 the central difference has
//! too little precision for tight tolerances.

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::VarMap;

/// Settings of [`check_gradients`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradCheckConfig {
    /// Step of the central difference `(f(θ + h) − f(θ − h)) / 2h`.
    pub step: f64,
    /// Relative tolerance: an element passes if `|a − n| <= atol + rtol · max(|a|, |n|)`.
    pub rtol: f64,
    /// Absolute tolerance (for gradients near zero).
    pub atol: f64,
}

impl Default for GradCheckConfig {
    fn default() -> Self {
        Self {
            step: 1e-6,
            rtol: 1e-5,
            atol: 1e-8,
        }
    }
}

/// One element whose analytic and numeric gradients disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct GradMismatch {
    pub var: usize,
    pub index: usize,
    pub analytic: f64,
    pub numeric: f64,
}

/// The outcome of [`check_gradients`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GradCheckReport {
    /// Elements compared.
    pub checked: usize,
    /// Largest `|a − n| / max(|a|, |n|, atol)` seen.
    pub max_rel_err: f64,
    pub mismatches: Vec<GradMismatch>,
}

impl GradCheckReport {
    pub fn is_ok(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// Panics with the first mismatches if any.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert!(
            self.is_ok(),
            "{} of {} gradient elements disagree with central differences (max rel err {:.3e}); first: {:?}",
            self.mismatches.len(),
            self.checked,
            self.max_rel_err,
            &self.mismatches[..self.mismatches.len().min(5)]
        );
    }
}

fn scalar_f64(loss: &Tensor) -> Result<f64> {
    if loss.elem_count() != 1 {
        candle_core::bail!("loss must be a scalar, got shape {:?}", loss.dims());
    }
    loss.flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()
        .map(|v| v[0])
}

/// Compares candle's backward gradients of the scalar `loss(vars)` with respect to `vars` to
/// central differences computed element by element (in f64), restoring every variable afterwards.
/// The closure receives `vars` (it may also use a model that captured them).
pub fn check_gradients<F>(vars: &[Var], loss: F, cfg: GradCheckConfig) -> Result<GradCheckReport>
where
    F: Fn(&[Var]) -> Result<Tensor>,
{
    let l = loss(vars)?;
    scalar_f64(&l)?;
    let grads = l.backward()?;
    let mut report = GradCheckReport::default();
    for (vi, var) in vars.iter().enumerate() {
        let shape = var.shape().clone();
        let dtype = var.dtype();
        let device = var.device().clone();
        let analytic: Vec<f64> = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?,
            None => vec![0.0; shape.elem_count()],
        };
        let original = var.as_tensor().copy()?;
        let base: Vec<f64> = original.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
        let mut theta = base.clone();
        let set = |theta: &[f64]| -> Result<()> {
            let t = Tensor::from_slice(theta, shape.clone(), &device)?.to_dtype(dtype)?;
            var.set(&t)
        };
        for (i, &a) in analytic.iter().enumerate() {
            theta[i] = base[i] + cfg.step;
            set(&theta)?;
            let plus = scalar_f64(&loss(vars)?)?;
            theta[i] = base[i] - cfg.step;
            set(&theta)?;
            let minus = scalar_f64(&loss(vars)?)?;
            theta[i] = base[i];
            let n = (plus - minus) / (2.0 * cfg.step);
            let diff = (a - n).abs();
            let scale = a.abs().max(n.abs());
            report.checked += 1;
            report.max_rel_err = report.max_rel_err.max(diff / scale.max(cfg.atol));
            if diff > cfg.atol + cfg.rtol * scale || !diff.is_finite() {
                report.mismatches.push(GradMismatch {
                    var: vi,
                    index: i,
                    analytic: a,
                    numeric: n,
                });
            }
        }
        var.set(&original)?;
    }
    Ok(report)
}

/// [`check_gradients`] with the default config, panicking on mismatch.
#[track_caller]
pub fn assert_gradients_match<F>(vars: &[Var], loss: F)
where
    F: Fn(&[Var]) -> Result<Tensor>,
{
    check_gradients(vars, loss, GradCheckConfig::default())
        .expect("gradient check failed to run")
        .assert_ok();
}

/// The names of the variables of `varmap` whose gradient of `loss` is missing or all zero
/// (sorted).
pub fn vars_without_gradient(varmap: &VarMap, loss: &Tensor) -> Result<Vec<String>> {
    let grads = loss.backward()?;
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut missing = Vec::new();
    for (name, var) in data.iter() {
        let nonzero = match grads.get(var.as_tensor()) {
            Some(g) => {
                g.abs()?
                    .flatten_all()?
                    .to_dtype(DType::F64)?
                    .max(0)?
                    .to_scalar::<f64>()?
                    > 0.0
            }
            None => false,
        };
        if !nonzero {
            missing.push(name.clone());
        }
    }
    missing.sort();
    Ok(missing)
}

/// Panics unless every variable of `varmap` (and at least one) gets a non-zero gradient of `loss`.
#[track_caller]
pub fn assert_every_var_has_gradient(varmap: &VarMap, loss: &Tensor) {
    let n = varmap.all_vars().len();
    assert!(n > 0, "the VarMap holds no variables");
    let missing = vars_without_gradient(varmap, loss).expect("backward failed");
    assert!(
        missing.is_empty(),
        "{} of {n} variables get no gradient: {missing:?}",
        missing.len()
    );
}
