//! Deterministic random inputs for the unit tests (candle's CPU RNG cannot be seeded).

use candle_core::{DType, Device, Shape, Tensor};

/// SplitMix64: tiny, seedable, good enough for test inputs.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A tensor of uniform values in `[lo, hi)`.
pub fn rand_tensor<S: Into<Shape>>(
    rng: &mut Lcg,
    shape: S,
    lo: f64,
    hi: f64,
    dtype: DType,
    dev: &Device,
) -> Tensor {
    let shape: Shape = shape.into();
    let v: Vec<f64> = (0..shape.elem_count())
        .map(|_| rng.uniform(lo, hi))
        .collect();
    Tensor::from_vec(v, shape, dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Overwrites every variable of `vm` with seeded values (candle's own init cannot be seeded):
/// `A_log` ≈ log(1..N), LayerNorm weights and `D` ≈ 1, everything else `U(±scale)`.
pub fn reseed(vm: &candle_nn::VarMap, seed: u64, scale: f64) {
    let mut rng = Lcg::new(seed);
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let count: usize = dims.iter().product();
        let values: Vec<f64> = (0..count)
            .map(|i| {
                let noise = rng.uniform(-1.0, 1.0);
                if name.ends_with("A_log") {
                    ((i % dims[1] + 1) as f64).ln() + 0.2 * noise
                } else if name.ends_with("LayerNorm.weight") || name.ends_with(".D") || name == "D"
                {
                    1.0 + 0.2 * noise
                } else {
                    scale * noise
                }
            })
            .collect();
        let t = Tensor::from_vec(values, dims, var.device())
            .unwrap()
            .to_dtype(var.dtype())
            .unwrap();
        var.set(&t).unwrap();
    }
}
