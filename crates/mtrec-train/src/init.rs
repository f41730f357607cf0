//! Seeded initial weights.
//!
//! candle's CPU device draws `Init::Randn` / `Init::Uniform` from the thread's unseeded RNG
//! (`Device::Cpu.set_seed` is an error in candle 0.11), so a `VarMap`-backed model starts from
//! different weights on every run. [`seeded_var_builder`] puts a `VarBuilder` backend in front of
//! the `VarMap` that draws each new variable from its own ChaCha8 stream, keyed by the seed and
//! the variable's full name: the same seed gives the same initial model whatever the order in
//! which the layers are built, on any device and any number of threads. This is what makes
//! `M_init` of ΔNCIS reproducible from the seed alone, and training bit-identical per seed.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// A `VarMap` whose new variables are drawn from `(seed, name)`-keyed streams.
#[derive(Clone)]
pub struct SeededVarMap {
    varmap: VarMap,
    seed: u64,
}

impl SeededVarMap {
    /// Wraps `varmap` (shared: the variables end up in it).
    pub fn new(varmap: &VarMap, seed: u64) -> Self {
        SeededVarMap {
            varmap: varmap.clone(),
            seed,
        }
    }
}

/// 64-bit FNV-1a: a stable, platform-independent hash of a variable name.
fn fnv1a(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The initial values of variable `name`, in f64, drawn as `init` prescribes.
pub fn init_values(shape: &Shape, init: Init, seed: u64, name: &str) -> Result<Vec<f64>> {
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(fnv1a(name));
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> Result<Vec<f64>> {
        let d = Normal::new(mean, std).map_err(candle_core::Error::wrap)?;
        Ok((0..n).map(|_| d.sample(rng)).collect())
    };
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f64> {
        if lo < up {
            (0..n).map(|_| rng.random_range(lo..up)).collect()
        } else {
            vec![lo; n]
        }
    };
    match init {
        Init::Const(c) => Ok(vec![c; n]),
        Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
        Init::Uniform { lo, up } => Ok(uniform(&mut rng, lo, up)),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            // As candle's `Init::var`: std = gain / sqrt(fan).
            let fan = match fan {
                FanInOut::FanIn => FanInOut::FanIn.for_shape(shape),
                FanInOut::FanOut => FanInOut::FanOut.for_shape(shape),
            };
            let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    Ok(uniform(&mut rng, -bound, bound))
                }
                NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let values = init_values(&s, h, self.seed, name)?;
        let t = Tensor::from_vec(values, s, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_owned(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("`get_unchecked` ({name}) needs a shape and an init with a VarMap")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

/// A `VarBuilder` that creates its variables in `varmap` with seeded initial values.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(SeededVarMap::new(varmap, seed)),
        dtype,
        device.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(seed: u64, order_ab: bool) -> Vec<(String, Vec<f32>)> {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu);
        let mk = |n: &str| {
            vb.get_with_hints(
                (3, 4),
                n,
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )
            .unwrap()
        };
        if order_ab {
            mk("a");
            mk("b");
        } else {
            mk("b");
            mk("a");
        }
        vb.get_with_hints(5, "c", Init::Const(0.25)).unwrap();
        vb.get_with_hints((2, 6), "d", Init::Uniform { lo: -0.5, up: 0.5 })
            .unwrap();
        let mut out: Vec<(String, Vec<f32>)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        out.sort_by(|x, y| x.0.cmp(&y.0));
        out
    }

    #[test]
    fn same_seed_same_weights_whatever_the_order() {
        let a = build(7, true);
        assert_eq!(a, build(7, false));
        assert_ne!(a, build(8, true));
        // Different names, different streams.
        assert_ne!(a[0].1, a[1].1);
        assert!(a[2].1.iter().all(|&x| x == 0.25));
        assert!(a[3].1.iter().all(|&x| (-0.5..0.5).contains(&x)));
        // Roughly standard normal.
        let v = init_values(
            &Shape::from(20_000),
            Init::Randn {
                mean: 0.0,
                stdev: 2.0,
            },
            1,
            "x",
        )
        .unwrap();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 0.05 && (var.sqrt() - 2.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
