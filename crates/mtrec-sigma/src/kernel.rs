//! CPU kernels of the fused selective-scan ops (see [`crate::scan`]).
//!
//! Work is split by batch row (one rayon task per row). Within a row the state is laid out
//! `[N, d_inner]` with channels innermost, so every inner loop runs over channels without a
//! reduction and vectorises; `exp` is a polynomial ([`exp_f32`]) for the same reason.

use candle_core::WithDType;
use rayon::prelude::*;

/// Floats the kernels run on.
pub(crate) trait Real: WithDType {
    /// `exp`, in a form the compiler can vectorise where possible (see [`exp_f32`]).
    fn exp_(self) -> Self;
    /// `ln(1 + y)` for `y ∈ [0, 1]` (all softplus needs).
    fn ln_1p_(self) -> Self;
}

impl Real for f32 {
    #[inline(always)]
    fn exp_(self) -> Self {
        exp_f32(self)
    }
    #[inline(always)]
    fn ln_1p_(self) -> Self {
        // Absolute error of ln(fl(1 + y)) is ~6e-8: fine where softplus adds it to max(v, 0).
        ln_f32(1.0 + self)
    }
}

impl Real for f64 {
    #[inline(always)]
    fn exp_(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn ln_1p_(self) -> Self {
        self.ln_1p()
    }
}

/// `e^x` in f32 from plain arithmetic and bit operations (Cephes `expf`: range reduction
/// `x = n ln2 + r`, degree-5 polynomial on `|r| ≤ ln2/2`, `2^n` built in the exponent bits), so the
/// kernels' inner loops vectorise: libm's `expf` is a scalar call and dominated the scan. Relative
/// error ≤ 3e-7 on the clamped range `[−87, 88]` (inputs are clamped to it: results below
/// `e^−87 ≈ 1.6e−38` are returned as `e^−87`, harmless as a decay factor).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4; // ln 2, high part
    const C2: f32 = -2.121_944_4e-4; // ln 2 − C1
                                     // 1.5 · 2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * LOG2E + MAGIC;
    let n_bits = t.to_bits() as i32 - MAGIC.to_bits() as i32; // n = round(x / ln 2)
    let n = t - MAGIC;
    let r = x - n * C1 - n * C2;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    er * f32::from_bits(((n_bits + 127) << 23) as u32)
}

/// Natural log of a positive normal f32 (Cephes `logf`: `x = m 2^e` with `m ∈ [√½, √2)`,
/// polynomial in `m − 1`), branch-free so loops over it vectorise; ~1 ulp.
#[inline(always)]
pub(crate) fn ln_f32(x: f32) -> f32 {
    let bits = x.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 126; // x = m 2^e, m ∈ [0.5, 1)
    let m = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000);
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    let e = if small { e - 1 } else { e } as f32;
    let m = if small { m + m - 1.0 } else { m - 1.0 };
    let z = m * m;
    let mut y = 7.037_683_6e-2f32;
    y = y * m - 1.151_461_1e-1;
    y = y * m + 1.167_699_9e-1;
    y = y * m - 1.242_014_1e-1;
    y = y * m + 1.424_932_3e-1;
    y = y * m - 1.666_805_8e-1;
    y = y * m + 2.000_071_4e-1;
    y = y * m - 2.499_999_4e-1;
    y = y * m + 3.333_333e-1;
    let y = y * m * z - 2.121_944_4e-4 * e - 0.5 * z;
    m + y + 0.693_359_4 * e
}

#[inline(always)]
fn sigmoid<T: Real>(v: T) -> T {
    T::one() / (T::one() + (T::zero() - v).exp_())
}

/// `log(1 + e^v)` without overflow: `max(v, 0) + log1p(e^−|v|)`.
#[inline(always)]
fn softplus<T: Real>(v: T) -> T {
    let (pos, neg_abs) = if v > T::zero() {
        (v, T::zero() - v)
    } else {
        (T::zero(), v)
    };
    pos + neg_abs.exp_().ln_1p_()
}

/// `Σ a ⊙ b` with eight independent partial sums, so the loop vectorises (a single running sum
/// would force sequential float additions).
#[inline(always)]
pub(crate) fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    const LANES: usize = 8;
    let mut acc = [T::zero(); LANES];
    let (ac, ar) = a.split_at(a.len() - a.len() % LANES);
    let (bc, br) = b[..a.len()].split_at(ac.len());
    for (ca, cb) in ac.chunks_exact(LANES).zip(bc.chunks_exact(LANES)) {
        for j in 0..LANES {
            acc[j] += ca[j] * cb[j];
        }
    }
    let mut sum = T::zero();
    for (x, y) in ar.iter().zip(br) {
        sum += *x * *y;
    }
    for v in acc {
        sum += v;
    }
    sum
}

/// `m` `[rows, cols]` transposed to `[cols, rows]`.
fn transpose<T: Real>(m: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::zero(); rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

fn add_into<T: Real>(mut acc: Vec<T>, part: Vec<T>) -> Vec<T> {
    for (x, p) in acc.iter_mut().zip(part) {
        *x += p;
    }
    acc
}

/// Sizes of a scan: `batch` rows of `len` steps, `d_inner` channels, `d_state` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    pub batch: usize,
    pub len: usize,
    pub d_inner: usize,
    pub d_state: usize,
}

/// Per-task buffers: one row's δ, x, output gradient and input gradients (`L × Di` each), its
/// recomputed states (`(L + 1) × [N, Di]`, block 0 = s_{−1} = 0), the running state gradient
/// (`[N, Di]`), two channel vectors, and the task's partial sums of the shared parameters'
/// gradients (`[N, Di]` for A, `Di` each for D and the δ bias).
struct Scratch<T> {
    delta: Vec<T>,
    x: Vec<T>,
    g: Vec<T>,
    gdelta: Vec<T>,
    gx: Vec<T>,
    y: Vec<T>,
    states: Vec<T>,
    gs: Vec<T>,
    dx: Vec<T>,
    gsn: Vec<T>,
    ga: Vec<T>,
    gd: Vec<T>,
    gbias: Vec<T>,
}

impl<T: Real> Scratch<T> {
    fn new(dims: Dims, with_states: bool) -> Self {
        let Dims {
            len,
            d_inner: di,
            d_state: n,
            ..
        } = dims;
        let z = |k: usize| vec![T::zero(); k];
        Scratch {
            delta: z(len * di),
            x: z(len * di),
            g: z(len * di),
            gdelta: z(len * di),
            gx: z(len * di),
            y: z(len * di),
            states: z(if with_states {
                (len + 1) * n * di
            } else {
                n * di
            }),
            gs: z(n * di),
            dx: z(di),
            gsn: z(di),
            ga: z(n * di),
            gd: z(di),
            gbias: z(di),
        }
    }
}

mtrec_nn::avx2_dispatch!(fn row_forward, row_forward_avx2 => row_forward_impl
    <T: Real>(
    at: &[T], bc_row: &[T], dims: Dims, sc: &mut Scratch<T>,
));
mtrec_nn::avx2_dispatch!(fn row_states, row_states_avx2 => row_states_impl
    <T: Real>(
    at: &[T], bc_row: &[T], dims: Dims, sc: &mut Scratch<T>, with_y: bool,
));
mtrec_nn::avx2_dispatch!(fn row_backward, row_backward_avx2 => row_backward_impl
    <T: Real>(
    at: &[T], bc_row: &[T], gbc_row: &mut [T], dims: Dims, sc: &mut Scratch<T>,
));
mtrec_nn::avx2_dispatch!(fn load_gated_row, load_gated_row_avx2 => load_gated_row_impl
    <T: Real>(
    u_row: &[T], bias: &[T], dims: Dims, sc: &mut Scratch<T>,
));

/// Forward scan of one row: `y[t] = Σ_k s_t[k] C_t[k]` (overwrites `sc.y`), from `sc.delta`,
/// `sc.x`, `bc_row` (`L × [B_t ; C_t]`) and `at` = Aᵀ `[N, Di]`. Uses `sc.states[..N·Di]` as the
/// running state; stores nothing else.
#[inline(always)]
fn row_forward_impl<T: Real>(at: &[T], bc_row: &[T], dims: Dims, sc: &mut Scratch<T>) {
    let Dims {
        len,
        d_inner: di,
        d_state: n,
        ..
    } = dims;
    let s = &mut sc.states[..n * di];
    s.fill(T::zero());
    sc.y.fill(T::zero());
    for t in 0..len {
        let delta = &sc.delta[t * di..(t + 1) * di];
        let x = &sc.x[t * di..(t + 1) * di];
        let (b_t, c_t) = bc_row[t * 2 * n..(t + 1) * 2 * n].split_at(n);
        let y_t = &mut sc.y[t * di..(t + 1) * di];
        for d in 0..di {
            sc.dx[d] = delta[d] * x[d];
        }
        for k in 0..n {
            let (bk, ck) = (b_t[k], c_t[k]);
            let a_k = &at[k * di..(k + 1) * di];
            let s_k = &mut s[k * di..(k + 1) * di];
            for d in 0..di {
                let v = (delta[d] * a_k[d]).exp_() * s_k[d] + sc.dx[d] * bk;
                s_k[d] = v;
                y_t[d] += v * ck;
            }
        }
    }
}

/// Recomputes and stores every state of one row (`sc.states`, `(L + 1)` blocks); with `with_y`
/// also the scan output `sc.y`.
#[inline(always)]
fn row_states_impl<T: Real>(at: &[T], bc_row: &[T], dims: Dims, sc: &mut Scratch<T>, with_y: bool) {
    let Dims {
        len,
        d_inner: di,
        d_state: n,
        ..
    } = dims;
    let block = n * di;
    sc.states[..block].fill(T::zero());
    if with_y {
        sc.y.fill(T::zero());
    }
    for t in 0..len {
        let delta = &sc.delta[t * di..(t + 1) * di];
        let x = &sc.x[t * di..(t + 1) * di];
        let (b_t, c_t) = bc_row[t * 2 * n..(t + 1) * 2 * n].split_at(n);
        for d in 0..di {
            sc.dx[d] = delta[d] * x[d];
        }
        let (prev, next) = sc.states[t * block..(t + 2) * block].split_at_mut(block);
        let y_t = &mut sc.y[t * di..(t + 1) * di];
        for k in 0..n {
            let (bk, ck) = (b_t[k], c_t[k]);
            let a_k = &at[k * di..(k + 1) * di];
            let p_k = &prev[k * di..(k + 1) * di];
            let n_k = &mut next[k * di..(k + 1) * di];
            for d in 0..di {
                n_k[d] = (delta[d] * a_k[d]).exp_() * p_k[d] + sc.dx[d] * bk;
            }
            if with_y {
                for d in 0..di {
                    y_t[d] += n_k[d] * ck;
                }
            }
        }
    }
}

/// Reverse-time pass of one row, after [`row_states`]: from the output gradient `sc.g`, writes
/// `sc.gdelta`, `sc.gx`, the row's `∂B ; ∂C` into `gbc_row` and adds `∂A` (transposed) into
/// `sc.ga`. Per channel d and state k (decays `exp(δ_t A)` recomputed, not stored):
///
/// ```text
/// ĝ_t   = g_{s,t} + gy_t C_t                (gradient reaching s_t)
/// ∂C_t  = Σ_d gy_t s_t       ∂B_t = Σ_d ĝ_t δ_t x_t        ∂x_t = Σ_k ĝ_t δ_t B_t
/// ∂δ_t  = Σ_k ĝ_t (A exp(δ_t A) s_{t−1} + x_t B_t)        ∂A  += ĝ_t δ_t exp(δ_t A) s_{t−1}
/// g_{s,t−1} = ĝ_t exp(δ_t A)
/// ```
#[inline(always)]
fn row_backward_impl<T: Real>(
    at: &[T],
    bc_row: &[T],
    gbc_row: &mut [T],
    dims: Dims,
    sc: &mut Scratch<T>,
) {
    let Dims {
        len,
        d_inner: di,
        d_state: n,
        ..
    } = dims;
    let block = n * di;
    sc.gs.fill(T::zero());
    sc.gdelta.fill(T::zero());
    sc.gx.fill(T::zero());
    for t in (0..len).rev() {
        let g = &sc.g[t * di..(t + 1) * di];
        let delta = &sc.delta[t * di..(t + 1) * di];
        let x = &sc.x[t * di..(t + 1) * di];
        let (b_t, c_t) = bc_row[t * 2 * n..(t + 1) * 2 * n].split_at(n);
        let (gb_t, gc_t) = gbc_row[t * 2 * n..(t + 1) * 2 * n].split_at_mut(n);
        let g_delta = &mut sc.gdelta[t * di..(t + 1) * di];
        let g_x = &mut sc.gx[t * di..(t + 1) * di];
        for d in 0..di {
            sc.dx[d] = delta[d] * x[d];
        }
        for k in 0..n {
            let (bk, ck) = (b_t[k], c_t[k]);
            let a_k = &at[k * di..(k + 1) * di];
            let prev = &sc.states[t * block + k * di..t * block + (k + 1) * di];
            let cur = &sc.states[(t + 1) * block + k * di..(t + 1) * block + (k + 1) * di];
            let gs_k = &mut sc.gs[k * di..(k + 1) * di];
            let ga_k = &mut sc.ga[k * di..(k + 1) * di];
            for d in 0..di {
                let e = (delta[d] * a_k[d]).exp_();
                let gs = gs_k[d] + g[d] * ck;
                let w = gs * e * prev[d];
                g_delta[d] += w * a_k[d] + gs * x[d] * bk;
                g_x[d] += gs * delta[d] * bk;
                ga_k[d] += w * delta[d];
                sc.gsn[d] = gs;
                gs_k[d] = gs * e;
            }
            gc_t[k] = dot(g, cur);
            gb_t[k] = dot(&sc.gsn, &sc.dx);
        }
    }
}

/// Plain scan forward. `u = [B, L, 2Di]` (δ ‖ x), `a = [Di, N]`, `bc = [B, L, 2N]` (B ‖ C) →
/// `y = [B, L, Di]`.
pub(crate) fn scan_forward<T: Real>(u: &[T], a: &[T], bc: &[T], dims: Dims) -> Vec<T> {
    let Dims {
        batch,
        len,
        d_inner: di,
        d_state: n,
    } = dims;
    let mut y = vec![T::zero(); batch * len * di];
    if y.is_empty() {
        return y;
    }
    let at = transpose(a, di, n);
    y.par_chunks_mut(len * di).enumerate().for_each_init(
        || Scratch::new(dims, false),
        |sc, (row, y_row)| {
            let u_row = &u[row * len * 2 * di..(row + 1) * len * 2 * di];
            for t in 0..len {
                let (dl, x) = u_row[t * 2 * di..(t + 1) * 2 * di].split_at(di);
                sc.delta[t * di..(t + 1) * di].copy_from_slice(dl);
                sc.x[t * di..(t + 1) * di].copy_from_slice(x);
            }
            row_forward(
                &at,
                &bc[row * len * 2 * n..(row + 1) * len * 2 * n],
                dims,
                sc,
            );
            y_row.copy_from_slice(&sc.y);
        },
    );
    y
}

/// Plain scan backward: gradients of `Σ grad ⊙ y` for `u` (δ ‖ x), `a`, `bc` (B ‖ C).
pub(crate) fn scan_backward<T: Real>(
    u: &[T],
    a: &[T],
    bc: &[T],
    grad: &[T],
    dims: Dims,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let Dims {
        batch,
        len,
        d_inner: di,
        d_state: n,
    } = dims;
    let mut gu = vec![T::zero(); batch * len * 2 * di];
    let mut gbc = vec![T::zero(); batch * len * 2 * n];
    if batch * len == 0 {
        return (gu, vec![T::zero(); di * n], gbc);
    }
    let at = transpose(a, di, n);
    let ga_t = gu
        .par_chunks_mut(len * 2 * di)
        .zip(gbc.par_chunks_mut(len * 2 * n))
        .enumerate()
        .fold(
            || Scratch::new(dims, true),
            |mut sc, (row, (gu_row, gbc_row))| {
                let u_row = &u[row * len * 2 * di..(row + 1) * len * 2 * di];
                for t in 0..len {
                    let (dl, x) = u_row[t * 2 * di..(t + 1) * 2 * di].split_at(di);
                    sc.delta[t * di..(t + 1) * di].copy_from_slice(dl);
                    sc.x[t * di..(t + 1) * di].copy_from_slice(x);
                }
                sc.g.copy_from_slice(&grad[row * len * di..(row + 1) * len * di]);
                let bc_row = &bc[row * len * 2 * n..(row + 1) * len * 2 * n];
                row_states(&at, bc_row, dims, &mut sc, false);
                row_backward(&at, bc_row, gbc_row, dims, &mut sc);
                for t in 0..len {
                    let (gdl, gx) = gu_row[t * 2 * di..(t + 1) * 2 * di].split_at_mut(di);
                    gdl.copy_from_slice(&sc.gdelta[t * di..(t + 1) * di]);
                    gx.copy_from_slice(&sc.gx[t * di..(t + 1) * di]);
                }
                sc
            },
        )
        .map(|sc| sc.ga)
        .reduce(|| vec![T::zero(); n * di], add_into);
    (gu, transpose(&ga_t, n, di), gbc)
}

/// Loads one row of the gated op's inputs into the scratch: `δ = softplus(δraw + bias)`, `x`.
#[inline(always)]
fn load_gated_row_impl<T: Real>(u_row: &[T], bias: &[T], dims: Dims, sc: &mut Scratch<T>) {
    let Dims {
        len, d_inner: di, ..
    } = dims;
    for t in 0..len {
        let ut = &u_row[t * 3 * di..(t + 1) * 3 * di];
        for ((o, &v), &b) in sc.delta[t * di..(t + 1) * di]
            .iter_mut()
            .zip(&ut[..di])
            .zip(bias)
        {
            *o = softplus(v + b);
        }
        sc.x[t * di..(t + 1) * di].copy_from_slice(&ut[di..2 * di]);
    }
}

/// The δ bias column of `p = [Di, N + 2]` (A ‖ D ‖ δ bias), contiguous, so that the softplus loop
/// vectorises.
fn delta_bias<T: Real>(p: &[T], dims: Dims) -> Vec<T> {
    let n = dims.d_state;
    (0..dims.d_inner).map(|d| p[d * (n + 2) + n + 1]).collect()
}

/// Gated scan forward (mamba_ssm's `selective_scan_fn` with `delta_bias`, `delta_softplus`, `D`
/// and `z`). `u = [B, L, 3Di]` (δraw ‖ x ‖ z), `p = [Di, N + 2]` (A ‖ D ‖ δ bias),
/// `bc = [B, L, 2N]` →
/// `out = (scan(softplus(δraw + bias), A, B, C, x) + D ⊙ x) ⊙ silu(z)`, `[B, L, Di]`.
pub(crate) fn gated_forward<T: Real>(u: &[T], p: &[T], bc: &[T], dims: Dims) -> Vec<T> {
    let Dims {
        batch,
        len,
        d_inner: di,
        d_state: n,
    } = dims;
    let mut out = vec![T::zero(); batch * len * di];
    if out.is_empty() {
        return out;
    }
    let at: Vec<T> = transpose(p, di, n + 2)[..n * di].to_vec();
    let bias = delta_bias(p, dims);
    out.par_chunks_mut(len * di).enumerate().for_each_init(
        || Scratch::new(dims, false),
        |sc, (row, o_row)| {
            let u_row = &u[row * len * 3 * di..(row + 1) * len * 3 * di];
            load_gated_row(u_row, &bias, dims, sc);
            row_forward(
                &at,
                &bc[row * len * 2 * n..(row + 1) * len * 2 * n],
                dims,
                sc,
            );
            for t in 0..len {
                let z = &u_row[t * 3 * di + 2 * di..(t + 1) * 3 * di];
                for d in 0..di {
                    let i = t * di + d;
                    let skip = p[d * (n + 2) + n];
                    o_row[i] = (sc.y[i] + skip * sc.x[i]) * z[d] * sigmoid(z[d]);
                }
            }
        },
    );
    out
}

/// Gated scan backward: gradients for `u` (δraw ‖ x ‖ z), `p` (A ‖ D ‖ δ bias), `bc` (B ‖ C).
///
/// ```text
/// ∂z   = g · (y + D x) · σ(z) (1 + z (1 − σ(z)))     ĝ = g · silu(z)   (gradient reaching y + D x)
/// ∂D  += ĝ x      ∂x = scan's ∂x + ĝ D      ∂δraw = scan's ∂δ · σ(δraw + bias)      ∂bias += ∂δraw
/// ```
pub(crate) fn gated_backward<T: Real>(
    u: &[T],
    p: &[T],
    bc: &[T],
    grad: &[T],
    dims: Dims,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let Dims {
        batch,
        len,
        d_inner: di,
        d_state: n,
    } = dims;
    let mut gu = vec![T::zero(); batch * len * 3 * di];
    let mut gbc = vec![T::zero(); batch * len * 2 * n];
    if batch * len == 0 {
        return (gu, vec![T::zero(); di * (n + 2)], gbc);
    }
    let at: Vec<T> = transpose(p, di, n + 2)[..n * di].to_vec();
    let bias = delta_bias(p, dims);
    let (ga_t, gd, gbias) = gu
        .par_chunks_mut(len * 3 * di)
        .zip(gbc.par_chunks_mut(len * 2 * n))
        .enumerate()
        .fold(
            || Scratch::new(dims, true),
            |mut sc, (row, (gu_row, gbc_row))| {
                let u_row = &u[row * len * 3 * di..(row + 1) * len * 3 * di];
                let g_row = &grad[row * len * di..(row + 1) * len * di];
                let bc_row = &bc[row * len * 2 * n..(row + 1) * len * 2 * n];
                load_gated_row(u_row, &bias, dims, &mut sc);
                row_states(&at, bc_row, dims, &mut sc, true);
                for t in 0..len {
                    let z = &u_row[t * 3 * di + 2 * di..(t + 1) * 3 * di];
                    let gz = &mut gu_row[t * 3 * di + 2 * di..(t + 1) * 3 * di];
                    for d in 0..di {
                        let i = t * di + d;
                        let skip = p[d * (n + 2) + n];
                        let sz = sigmoid(z[d]);
                        let pre = sc.y[i] + skip * sc.x[i];
                        gz[d] = g_row[i] * pre * sz * (T::one() + z[d] * (T::one() - sz));
                        let gpre = g_row[i] * z[d] * sz;
                        sc.g[i] = gpre;
                        sc.gd[d] += gpre * sc.x[i];
                    }
                }
                row_backward(&at, bc_row, gbc_row, dims, &mut sc);
                for t in 0..len {
                    let ut = &u_row[t * 3 * di..(t + 1) * 3 * di];
                    let gt = &mut gu_row[t * 3 * di..(t + 1) * 3 * di];
                    for d in 0..di {
                        let i = t * di + d;
                        let row_p = &p[d * (n + 2)..(d + 1) * (n + 2)];
                        let g_raw = sc.gdelta[i] * sigmoid(ut[d] + row_p[n + 1]);
                        gt[d] = g_raw;
                        sc.gbias[d] += g_raw;
                        gt[di + d] = sc.gx[i] + sc.g[i] * row_p[n];
                    }
                }
                sc
            },
        )
        .map(|sc| (sc.ga, sc.gd, sc.gbias))
        .reduce(
            || {
                (
                    vec![T::zero(); n * di],
                    vec![T::zero(); di],
                    vec![T::zero(); di],
                )
            },
            |(a1, d1, b1), (a2, d2, b2)| (add_into(a1, a2), add_into(d1, d2), add_into(b1, b2)),
        );
    let ga = transpose(&ga_t, n, di);
    let mut gp = vec![T::zero(); di * (n + 2)];
    for d in 0..di {
        gp[d * (n + 2)..d * (n + 2) + n].copy_from_slice(&ga[d * n..(d + 1) * n]);
        gp[d * (n + 2) + n] = gd[d];
        gp[d * (n + 2) + n + 1] = gbias[d];
    }
    (gu, gp, gbc)
}

/// Causal depthwise convolution + SiLU forward: `x = [B, L, C]`, `w = [C, K]`, `bias = [C]` →
/// `silu(bias[c] + Σ_j w[c, j] x[b, t + j − (K − 1), c])` (zeros before `t = 0`).
pub(crate) fn conv_silu_forward<T: Real>(
    x: &[T],
    w: &[T],
    bias: &[T],
    (batch, len, ch, k): (usize, usize, usize, usize),
) -> Vec<T> {
    let mut y = vec![T::zero(); batch * len * ch];
    if y.is_empty() {
        return y;
    }
    let wt = transpose(w, ch, k); // [K, C]
    y.par_chunks_mut(len * ch)
        .zip(x.par_chunks(len * ch))
        .for_each(|(y_row, x_row)| {
            for t in 0..len {
                let y_t = &mut y_row[t * ch..(t + 1) * ch];
                y_t.copy_from_slice(bias);
                for j in 0..k {
                    // source step t + j − (K − 1)
                    if t + j + 1 < k {
                        continue;
                    }
                    let src = t + j + 1 - k;
                    let x_s = &x_row[src * ch..(src + 1) * ch];
                    let w_j = &wt[j * ch..(j + 1) * ch];
                    for c in 0..ch {
                        y_t[c] += w_j[c] * x_s[c];
                    }
                }
                for v in y_t.iter_mut() {
                    *v = *v * sigmoid(*v);
                }
            }
        });
    y
}

/// Backward of [`conv_silu_forward`]: gradients for `x`, `w` (`[C, K]`) and `bias`.
pub(crate) fn conv_silu_backward<T: Real>(
    x: &[T],
    w: &[T],
    bias: &[T],
    grad: &[T],
    (batch, len, ch, k): (usize, usize, usize, usize),
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut gx = vec![T::zero(); batch * len * ch];
    if gx.is_empty() {
        return (gx, vec![T::zero(); ch * k], vec![T::zero(); ch]);
    }
    let wt = transpose(w, ch, k); // [K, C]
    let (gwt, gb) = gx
        .par_chunks_mut(len * ch)
        .zip(x.par_chunks(len * ch))
        .zip(grad.par_chunks(len * ch))
        .fold(
            || {
                (
                    vec![T::zero(); k * ch],
                    vec![T::zero(); ch],
                    vec![T::zero(); ch],
                )
            },
            |(mut gwt, mut gb, mut gpre), ((gx_row, x_row), g_row)| {
                for t in 0..len {
                    // Recompute the pre-activation, then ∂pre = g · silu'(pre).
                    gpre.copy_from_slice(bias);
                    for j in 0..k {
                        if t + j + 1 < k {
                            continue;
                        }
                        let src = t + j + 1 - k;
                        let x_s = &x_row[src * ch..(src + 1) * ch];
                        let w_j = &wt[j * ch..(j + 1) * ch];
                        for c in 0..ch {
                            gpre[c] += w_j[c] * x_s[c];
                        }
                    }
                    let g_t = &g_row[t * ch..(t + 1) * ch];
                    for c in 0..ch {
                        let sg = sigmoid(gpre[c]);
                        gpre[c] = g_t[c] * sg * (T::one() + gpre[c] * (T::one() - sg));
                        gb[c] += gpre[c];
                    }
                    for j in 0..k {
                        if t + j + 1 < k {
                            continue;
                        }
                        let src = t + j + 1 - k;
                        let w_j = &wt[j * ch..(j + 1) * ch];
                        let gw_j = &mut gwt[j * ch..(j + 1) * ch];
                        for c in 0..ch {
                            gx_row[src * ch + c] += w_j[c] * gpre[c];
                            gw_j[c] += gpre[c] * x_row[src * ch + c];
                        }
                    }
                }
                (gwt, gb, gpre)
            },
        )
        .map(|(gwt, gb, _)| (gwt, gb))
        .reduce(
            || (vec![T::zero(); k * ch], vec![T::zero(); ch]),
            |(w1, b1), (w2, b2)| (add_into(w1, w2), add_into(b1, b2)),
        );
    (gx, transpose(&gwt, k, ch), gb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max((got - want).abs() / want);
            x += 0.001_7;
        }
        assert!(worst < 3e-7, "max relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1e4) > 0.0 && exp_f32(-1e4) < 2e-38);
        assert!(exp_f32(1e4).is_finite());
    }

    #[test]
    fn fast_ln_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = 1e-30f32;
        while x < 1e30 {
            let want = (x as f64).ln();
            let got = ln_f32(x) as f64;
            worst = worst.max((got - want).abs() / want.abs().max(1.0));
            x *= 1.013;
        }
        let mut y = 0.0f32;
        while y <= 1.0 {
            let want = (y as f64).ln_1p();
            worst = worst.max((y.ln_1p_() as f64 - want).abs());
            y += 0.000_37;
        }
        assert!(worst < 2e-7, "{worst:e}");
        assert_eq!(ln_f32(1.0), 0.0);
    }

    /// The AVX2 and the baseline builds of the row kernels give the same bits (only the vector
    /// width differs), on a width that leaves a remainder after the 8-lane loops.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernels_equal_the_baseline_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let dims = Dims {
            batch: 1,
            len: 7,
            d_inner: 21,
            d_state: 5,
        };
        let (l, di, n) = (dims.len, dims.d_inner, dims.d_state);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |k: usize, scale: f32| -> Vec<f32> {
            (0..k)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
                })
                .collect()
        };
        let u_row = rnd(l * 3 * di, 4.0);
        let bias = rnd(di, 2.0);
        let at: Vec<f32> = rnd(n * di, 2.0).iter().map(|v| -v.abs()).collect();
        let bc_row = rnd(l * 2 * n, 2.0);
        let g = rnd(l * di, 2.0);
        let run = |avx: bool| {
            let mut sc = Scratch::<f32>::new(dims, true);
            let mut gbc = vec![0f32; l * 2 * n];
            // SAFETY: AVX2 is present (checked above).
            unsafe {
                if avx {
                    load_gated_row_avx2(&u_row, &bias, dims, &mut sc);
                    row_forward_avx2(&at, &bc_row, dims, &mut sc);
                } else {
                    load_gated_row_impl(&u_row, &bias, dims, &mut sc);
                    row_forward_impl(&at, &bc_row, dims, &mut sc);
                }
                let y = sc.y.clone();
                sc.g.copy_from_slice(&g);
                if avx {
                    row_states_avx2(&at, &bc_row, dims, &mut sc, true);
                    row_backward_avx2(&at, &bc_row, &mut gbc, dims, &mut sc);
                } else {
                    row_states_impl(&at, &bc_row, dims, &mut sc, true);
                    row_backward_impl(&at, &bc_row, &mut gbc, dims, &mut sc);
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                [
                    bits(&sc.delta),
                    bits(&y),
                    bits(&sc.y),
                    bits(&sc.states),
                    bits(&sc.gdelta),
                    bits(&sc.gx),
                    bits(&sc.ga),
                    bits(&gbc),
                ]
            }
        };
        let (base, avx) = (run(false), run(true));
        assert!(base[1].iter().any(|&b| b != 0));
        assert_eq!(base, avx);
    }

    #[test]
    fn dot_handles_remainders() {
        for len in [0, 3, 8, 13] {
            let a: Vec<f64> = (0..len).map(|i| i as f64 + 0.5).collect();
            let want: f64 = a.iter().map(|v| v * v).sum();
            assert!((dot(&a, &a) - want).abs() < 1e-9);
        }
    }

    #[test]
    fn scalar_softplus_and_sigmoid() {
        for v in [-800.0f64, -3.0, 0.0, 2.5, 800.0] {
            let want = if v > 30.0 { v } else { (1.0 + v.exp()).ln() };
            assert!((softplus(v) - want).abs() < 1e-12, "{v}");
            assert!((sigmoid(v) - 1.0 / (1.0 + (-v).exp())).abs() < 1e-15);
        }
        assert!(softplus(100.0f32).is_finite() && sigmoid(-100.0f32) >= 0.0);
    }
}
