//! Parameter-free feature interactions over `F` field embeddings `[B, F, E]`: the FM second-order
//! term (DeepFM, `specs/backbones.md` §2.3), IPNN's pairwise inner products and OPNN's pooled outer
//! product (PNN, §2.2).
//!
//! Build the `[B, F, E]` input with `Tensor::stack(&[&v_1, …, &v_F], 1)` from `[B, E]` fields. All
//! functions are composed from differentiable candle ops (sums, products, matmul, `index_select`).

use candle_core::{Result, Tensor};

/// The FM second-order term (Rendle 2010, Eq. (1) rewritten in linear time, Guo et al. 2017):
/// `0.5 · Σ_k [(Σ_f v_fk)² − Σ_f v_fk²]` = `Σ_{i<j} ⟨v_i, v_j⟩`, `[B, F, E]` → `[B]`.
///
/// The linear-time form costs `O(F·E)` instead of the pairwise `O(F²·E)`. It is a difference of
/// two sums, so in low precision it can lose digits when the fields nearly cancel; fine in f32 for
/// the embedding sizes of CTR models.
pub fn fm_second_order(fields: &Tensor) -> Result<Tensor> {
    fields.dims3()?;
    let square_of_sum = fields.sum(1)?.sqr()?; // [B, E]
    let sum_of_squares = fields.sqr()?.sum(1)?; // [B, E]
    (square_of_sum - sum_of_squares)?.sum(1)? * 0.5
}

/// The `F(F−1)/2` pairwise inner products `⟨v_i, v_j⟩` for `i < j`, in row-major order
/// `(0,1), (0,2), …, (0,F−1), (1,2), …, (F−2,F−1)` (FuxiCTR's `InnerProductInteraction` order),
/// `[B, F, E]` → `[B, F(F−1)/2]`. With `F < 2` the result is `[B, 0]`.
///
/// Computed as the Gram matrix `V Vᵀ` `[B, F, F]` (one batched matmul) and a gather of its strict
/// upper triangle; for the handful of fields of a CTR model the `F²` Gram is negligible.
pub fn inner_products(fields: &Tensor) -> Result<Tensor> {
    let (b, f, _e) = fields.dims3()?;
    let pairs = f * f.saturating_sub(1) / 2;
    if pairs == 0 {
        return Tensor::zeros((b, 0), fields.dtype(), fields.device());
    }
    let v = fields.contiguous()?;
    let gram = v.matmul(&v.transpose(1, 2)?.contiguous()?)?; // [B, F, F]
    let upper: Vec<u32> = (0..f)
        .flat_map(|i| (i + 1..f).map(move |j| (i * f + j) as u32))
        .collect();
    let upper = Tensor::from_vec(upper, pairs, fields.device())?;
    gram.reshape((b, f * f))?.index_select(&upper, 1)
}

/// OPNN's outer product with sum pooling (Qu et al. 2016, §3.3): `p = (Σ_f v_f)(Σ_f v_f)ᵀ`,
/// flattened row-major, `[B, F, E]` → `[B, E·E]` (`p[b, k·E + l] = s_k s_l` with `s = Σ_f v_f`).
///
/// Pooling the fields before the outer product is OPNN's trick to cut the `F²` outer products
/// (`E²` each) to one; the output is symmetric, so a following linear layer sees each cross term
/// twice (as in the reference). For the DIEN-repo "PNN" (element-wise product of two vectors) no
/// helper is needed: it is `a * b`.
pub fn outer_product_pooled(fields: &Tensor) -> Result<Tensor> {
    let (b, _f, e) = fields.dims3()?;
    let s = fields.sum(1)?; // [B, E]
    s.unsqueeze(2)?
        .broadcast_mul(&s.unsqueeze(1)?)?
        .reshape((b, e * e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_gradients_match;
    use candle_core::{DType, Device, Var};

    const DEV: Device = Device::Cpu;

    /// Deterministic pseudo-random values in (-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn tensor(dims: &[usize], seed: u64) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_vec(values(n, seed), dims, &DEV).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    /// B = 2, F = 3, E = 2 with small integers (exact in floating point).
    fn small() -> Tensor {
        #[rustfmt::skip]
        let v = vec![
            1.0, 2.0,   3.0, -1.0,   0.5, 4.0,   // sample 0: v_0, v_1, v_2
            -2.0, 1.0,  0.0, 3.0,    1.0, 1.0,   // sample 1
        ];
        Tensor::from_vec(v, (2, 3, 2), &DEV).unwrap()
    }

    #[test]
    fn fm_second_order_by_hand() {
        // Sample 0: Σ_f v = (4.5, 5); (Σv)² = (20.25, 25); Σv² = (1+9+0.25, 4+1+16) = (10.25, 21)
        // → 0.5·((20.25−10.25) + (25−21)) = 7.
        // Pairwise: ⟨v0,v1⟩ = 3−2 = 1, ⟨v0,v2⟩ = 0.5+8 = 8.5, ⟨v1,v2⟩ = 1.5−4 = −2.5 → 7. ✓
        // Sample 1: ⟨v0,v1⟩ = 0+3 = 3, ⟨v0,v2⟩ = −2+1 = −1, ⟨v1,v2⟩ = 0+3 = 3 → 5.
        let got = fm_second_order(&small()).unwrap();
        assert_eq!(got.dims(), [2]);
        close(&flat(&got), &[7.0, 5.0], 1e-12);
        // A single field has no pairs.
        let one = tensor(&[3, 1, 4], 1);
        close(&flat(&fm_second_order(&one).unwrap()), &[0.0; 3], 1e-12);
    }

    #[test]
    fn inner_products_by_hand() {
        let got = inner_products(&small()).unwrap();
        assert_eq!(got.dims(), [2, 3]);
        close(&flat(&got), &[1.0, 8.5, -2.5, 3.0, -1.0, 3.0], 1e-12);
        assert_eq!(
            inner_products(&tensor(&[3, 1, 4], 1)).unwrap().dims(),
            [3, 0]
        );
    }

    #[test]
    fn inner_products_order_and_fm_identity() {
        let (b, f, e) = (3, 5, 4);
        let x = tensor(&[b, f, e], 2);
        let v = flat(&x);
        let got = flat(&inner_products(&x).unwrap());
        let fm = flat(&fm_second_order(&x).unwrap());
        let mut want = Vec::new();
        for bi in 0..b {
            let field = |i: usize| &v[(bi * f + i) * e..(bi * f + i + 1) * e];
            let mut total = 0.0;
            for i in 0..f {
                for j in i + 1..f {
                    let p: f64 = field(i).iter().zip(field(j)).map(|(a, c)| a * c).sum();
                    want.push(p);
                    total += p;
                }
            }
            assert!(
                (fm[bi] - total).abs() < 1e-12,
                "FM = Σ pairs: {} vs {total}",
                fm[bi]
            );
        }
        close(&got, &want, 1e-12);
    }

    #[test]
    fn outer_product_pooled_by_hand() {
        // s = (4.5, 5) and (−1, 5): p = [s0², s0·s1, s1·s0, s1²].
        let got = outer_product_pooled(&small()).unwrap();
        assert_eq!(got.dims(), [2, 4]);
        close(
            &flat(&got),
            &[20.25, 22.5, 22.5, 25.0, 1.0, -5.0, -5.0, 25.0],
            1e-12,
        );
    }

    #[test]
    fn gradients() {
        let x = Var::from_tensor(&tensor(&[3, 4, 3], 3)).unwrap();
        let r_in = tensor(&[3, 6], 4);
        let r_out = tensor(&[3, 9], 5);
        let r_fm = tensor(&[3], 6);
        assert_gradients_match(&[x], |v| {
            let x = v[0].as_tensor();
            let a = (fm_second_order(x)? * &r_fm)?.sum_all()?;
            let b = (inner_products(x)? * &r_in)?.sum_all()?;
            let c = (outer_product_pooled(x)? * &r_out)?.sum_all()?;
            (a + b)? + c
        });
    }

    #[test]
    fn rejects_non_3d_input() {
        let x = tensor(&[3, 4], 1);
        assert!(fm_second_order(&x).is_err());
        assert!(inner_products(&x).is_err());
        assert!(outer_product_pooled(&x).is_err());
    }
}
