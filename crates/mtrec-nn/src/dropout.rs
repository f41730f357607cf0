//! Seeded inverted dropout.
//!
//! candle's `ops::dropout` draws its mask from the thread's unseeded RNG, one element at a time: runs
//! with dropout could not be repeated, and a `[1024, 50, 50]` mask took 23.6 ms on 2 cores (a fifth of
//! a SASRec training step). Here the mask of element `i` in the `c`-th call on a thread is a pure
//! function of `(stream seed, c, i)`: a SplitMix64 hash, filled in parallel chunks. The same seed
//! gives the same masks for any thread count and on any device (the mask is made on the host), and
//! the same `[1024, 50, 50]` mask takes about 1 ms.
//!
//! Each thread has its own stream ([`seed_dropout`] restarts it). The trainers reseed it before every
//! optimiser step from the run's seed and the step number ([`step_seed`]), so a run resumed from a
//! checkpoint draws the masks an uninterrupted run draws.

use std::cell::Cell;

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

thread_local! {
    /// `(seed, calls so far)` of this thread's dropout stream.
    static STREAM: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Restarts this thread's dropout stream at `seed`.
pub fn seed_dropout(seed: u64) {
    STREAM.with(|s| s.set((seed, 0)));
}

/// The stream seed of optimiser step `step` of a run seeded `seed`.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    mix(mix(seed ^ 0x6472_6f70_6f75_7421).wrapping_add(step.wrapping_mul(GAMMA)))
}

/// The key of the next mask on this thread (advances the stream).
fn next_key() -> u64 {
    STREAM.with(|s| {
        let (seed, calls) = s.get();
        s.set((seed, calls + 1));
        mix(seed.wrapping_add(calls.wrapping_add(1).wrapping_mul(GAMMA)))
    })
}

/// `n` mask values for drop probability `p`: `1 / (1 − p)` where kept, 0 where dropped. One hash
/// `mix(key + (k + 1)·γ)` decides elements `4k..4k+4`: element `4k + j` is kept when its 16-bit
/// slice `j` is at least `round(p · 2^16)` (so `p` counts in steps of 2^-16).
pub fn dropout_mask(key: u64, n: usize, p: f32) -> Vec<f32> {
    const CHUNK: usize = 1 << 14; // elements per task, a multiple of 4
    let scale = 1.0 / (1.0 - p);
    let threshold = (f64::from(p) * 65536.0).round() as u64;
    let mut mask = vec![0f32; n];
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let first_block = (c * CHUNK / 4) as u64;
            let hash =
                |b: usize| mix(key.wrapping_add((first_block + b as u64 + 1).wrapping_mul(GAMMA)));
            let value = |h: u64, j: usize| {
                if (h >> (16 * j)) & 0xFFFF >= threshold {
                    scale
                } else {
                    0.0
                }
            };
            // Four explicit stores per hash: the compiler keeps this loop tight (a generic inner
            // loop over the quad ran 8 times slower).
            let mut quads = chunk.chunks_exact_mut(4);
            let mut b = 0;
            for q in &mut quads {
                let h = hash(b);
                q[0] = value(h, 0);
                q[1] = value(h, 1);
                q[2] = value(h, 2);
                q[3] = value(h, 3);
                b += 1;
            }
            let rest = quads.into_remainder();
            if !rest.is_empty() {
                let h = hash(b);
                for (j, m) in rest.iter_mut().enumerate() {
                    *m = value(h, j);
                }
            }
        });
    mask
}

/// Inverted dropout with drop probability `p` when `train` and `p > 0`, the identity otherwise;
/// differentiable in `x` (the mask is a constant). `p` must lie in `[0, 1)`.
pub fn dropout(x: &Tensor, p: f32, train: bool) -> Result<Tensor> {
    match mask_like(x, p, train)? {
        Some(mask) => x.mul(&mask),
        None => Ok(x.clone()),
    }
}

/// The mask [`dropout`] would multiply `x` by (drawn from this thread's stream, which it
/// advances), of `x`'s shape, dtype and device; `None` when dropout is off (`!train` or `p = 0`).
/// For fused ops that apply the mask themselves.
pub fn mask_like(x: &Tensor, p: f32, train: bool) -> Result<Option<Tensor>> {
    if !train || p <= 0.0 {
        return Ok(None);
    }
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout probability must lie in [0, 1), got {p}");
    }
    let mask = dropout_mask(next_key(), x.elem_count(), p);
    let mask = Tensor::from_vec(mask, x.shape(), &Device::Cpu)?;
    let mask = match x.dtype() {
        DType::F32 => mask,
        dt => mask.to_dtype(dt)?,
    };
    Ok(Some(mask.to_device(x.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_gradients_match;
    use candle_core::Var;

    #[test]
    fn masks_drop_the_asked_share_and_scale_the_rest() {
        let n = 1 << 20;
        for p in [0.1f32, 0.5, 0.8] {
            let m = dropout_mask(42, n, p);
            let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
            // 5 standard errors of a binomial share.
            let se = (f64::from(p) * (1.0 - f64::from(p)) / n as f64).sqrt();
            assert!(
                (dropped - f64::from(p)).abs() < 5.0 * se,
                "p {p}: dropped {dropped}"
            );
            assert!(m.iter().all(|&v| v == 0.0 || v == 1.0 / (1.0 - p)));
            // Mean preserved (inverted dropout).
            let mean = m.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            assert!((mean - 1.0).abs() < 0.01, "p {p}: mean {mean}");
        }
        // Neighbouring elements are not correlated.
        let m = dropout_mask(7, 1 << 16, 0.5);
        let both = m.windows(2).filter(|w| w[0] == 0.0 && w[1] == 0.0).count() as f64;
        assert!((both / (1 << 16) as f64 - 0.25).abs() < 0.02, "{both}");
    }

    #[test]
    fn same_seed_same_masks_on_any_thread_count() {
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let a = one.install(|| dropout_mask(9, 300_001, 0.3));
        let b = three.install(|| dropout_mask(9, 300_001, 0.3));
        assert_eq!(a, b);
        assert_ne!(a, dropout_mask(10, 300_001, 0.3));

        let x = Tensor::ones((64, 50), DType::F32, &Device::Cpu).unwrap();
        seed_dropout(5);
        let y1 = dropout(&x, 0.5, true).unwrap().to_vec2::<f32>().unwrap();
        let y2 = dropout(&x, 0.5, true).unwrap().to_vec2::<f32>().unwrap();
        assert_ne!(y1, y2, "each call draws a new mask");
        seed_dropout(5);
        assert_eq!(
            y1,
            dropout(&x, 0.5, true).unwrap().to_vec2::<f32>().unwrap()
        );
        seed_dropout(6);
        assert_ne!(
            y1,
            dropout(&x, 0.5, true).unwrap().to_vec2::<f32>().unwrap()
        );
        assert_ne!(step_seed(1, 0), step_seed(1, 1));
        assert_ne!(step_seed(1, 0), step_seed(2, 0));
    }

    #[test]
    fn identity_outside_training_and_errors_on_bad_p() {
        let x = Tensor::arange(0f32, 12.0, &Device::Cpu).unwrap();
        let same = |y: Tensor| y.to_vec1::<f32>().unwrap() == x.to_vec1::<f32>().unwrap();
        assert!(same(dropout(&x, 0.5, false).unwrap()));
        assert!(same(dropout(&x, 0.0, true).unwrap()));
        assert!(dropout(&x, 1.0, true).is_err());
        let x64 = x.to_dtype(DType::F64).unwrap();
        assert_eq!(dropout(&x64, 0.5, true).unwrap().dtype(), DType::F64);
    }

    #[test]
    fn gradient_is_the_mask() {
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (4, 6), &Device::Cpu).unwrap()).unwrap();
        // The same mask at every evaluation: reseed before each forward.
        assert_gradients_match(&[x], |v| {
            seed_dropout(11);
            dropout(v[0].as_tensor(), 0.4, true)?.sqr()?.sum_all()
        });
    }
}
