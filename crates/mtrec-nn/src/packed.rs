//! Histories without their padding: the real positions of a batch, flattened.
//!
//! A batch pads every history to the longest one in it (or to a fixed width). With random batches of
//! Amazon data that padding is most of the tensor: on Beauty the mean history is 8.6 items while the
//! longest of 128 random samples averages 83 (a cap of 100), so a model that attends over `[B, T]`
//! spends about nine tenths of its attention work on positions it then masks out. Models whose
//! result on real positions does not depend on the padded ones (DIN's attention and its history sum)
//! can instead run on the `N = Σ_b len_b` real positions only: gather them with [`PackedHistory`],
//! compute per position, and reduce back per sample with a segment sum or a segment softmax. The
//! values are those of the padded computation (masked positions contribute exact zeros there), up to
//! the order of float sums, and so are the gradients.
//!
//! All operations are candle ops with a backward (`index_select`, `index_add`), so they run on every
//! device; the positions are read from the batch's mask on the host once per batch.

use candle_core::{DType, Device, Result, Tensor};

use crate::batch::Batch;

/// The real positions of a batch's `[B, T]` history, in row-major order.
#[derive(Debug, Clone)]
pub struct PackedHistory {
    /// Index of each real position into the flattened `[B·T]` history, `[N]` (u32).
    flat: Tensor,
    /// `flat` on the host; the sample of position `i` is `flat_host[i] / width`.
    flat_host: Vec<u32>,
    /// The sample each real position belongs to, `[N]` (u32), non-decreasing.
    seg: Tensor,
    batch: usize,
    width: usize,
}

impl PackedHistory {
    /// The positions where `batch.mask` is non-zero.
    pub fn of(batch: &Batch) -> Result<Self> {
        Self::of_mask(&batch.mask)
    }

    /// The positions where a `[B, T]` mask (any dtype) is non-zero.
    pub fn of_mask(mask: &Tensor) -> Result<Self> {
        let (b, t) = mask.dims2()?;
        let host = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Self::from_mask(&host, b, t, mask.device())
    }

    /// Whether each of the `B·T` positions is real, row-major (the mask this was built from).
    pub fn real_flags(&self) -> Vec<bool> {
        let mut real = vec![false; self.batch * self.width];
        for &i in &self.flat_host {
            real[i as usize] = true;
        }
        real
    }

    /// Every position of a `[B, T]` grid (no padding to skip): lets padded code share the packed
    /// kernels.
    pub fn dense(b: usize, t: usize, device: &Device) -> Result<Self> {
        Self::from_mask(&vec![1.0; b * t], b, t, device)
    }

    fn from_mask(mask: &[f32], b: usize, t: usize, device: &Device) -> Result<Self> {
        if mask.len() != b * t {
            candle_core::bail!("packed history: mask of {} for [{b}, {t}]", mask.len());
        }
        let flat: Vec<u32> = (0..mask.len() as u32)
            .filter(|&i| mask[i as usize] != 0.0)
            .collect();
        let seg: Vec<u32> = flat.iter().map(|&i| i / t.max(1) as u32).collect();
        let n = flat.len();
        Ok(Self {
            flat: Tensor::from_vec(flat.clone(), n, device)?,
            flat_host: flat,
            seg: Tensor::from_vec(seg, n, device)?,
            batch: b,
            width: t,
        })
    }

    /// The number of real positions `N`.
    pub fn len(&self) -> usize {
        self.flat_host.len()
    }

    /// Whether the batch has no real history position at all.
    pub fn is_empty(&self) -> bool {
        self.flat_host.is_empty()
    }

    /// The batch size `B`.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The sample of each real position, `[N]` (u32).
    pub fn segments(&self) -> &Tensor {
        &self.seg
    }

    /// The real positions of `x` `[B, T, ..]` (or `[B, T]`), as `[N, ..]` (or `[N]`).
    pub fn gather(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() < 2 || dims[0] != self.batch || dims[1] != self.width {
            candle_core::bail!(
                "packed history: tensor {dims:?} for a [{}, {}] history",
                self.batch,
                self.width
            );
        }
        let mut flat_dims = vec![self.batch * self.width];
        flat_dims.extend_from_slice(&dims[2..]);
        x.reshape(flat_dims)?.index_select(&self.flat, 0)
    }

    /// The inverse of [`Self::gather`]: `x` `[N, ..]` placed at the real positions of a zero
    /// `[B, T, ..]` tensor.
    pub fn scatter(&self, x: &Tensor) -> Result<Tensor> {
        let flat = self.add_rows(x, &self.flat, self.batch * self.width)?;
        let mut dims = flat.dims().to_vec();
        dims[0] = self.width;
        dims.insert(0, self.batch);
        flat.reshape(dims)
    }

    /// `x` `[N, ..]` added row by row into a zero `[rows, ..]` tensor at `index` `[N]`.
    fn add_rows(&self, x: &Tensor, index: &Tensor, rows: usize) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        if dims.first() != Some(&self.len()) {
            candle_core::bail!("packed history: {dims:?} for {} positions", self.len());
        }
        dims[0] = rows;
        Tensor::zeros(dims, x.dtype(), x.device())?.index_add(index, x, 0)
    }

    /// Each sample's row of `x` `[B, ..]` repeated for its real positions, `[N, ..]`.
    pub fn expand(&self, x: &Tensor) -> Result<Tensor> {
        if x.dims().first() != Some(&self.batch) {
            candle_core::bail!(
                "packed history: {:?} for a batch of {}",
                x.dims(),
                self.batch
            );
        }
        x.index_select(&self.seg, 0)
    }

    /// Per-sample sums of `x` `[N, ..]`, `[B, ..]` (zero for an empty history).
    pub fn segment_sum(&self, x: &Tensor) -> Result<Tensor> {
        self.add_rows(x, &self.seg, self.batch)
    }

    /// Softmax of the scores `s` `[N]` within each sample, `[N]`. Each sample's maximum is
    /// subtracted first (a constant: softmax does not depend on it, so neither does the gradient).
    pub fn segment_softmax(&self, s: &Tensor) -> Result<Tensor> {
        if s.dims() != [self.len()] {
            candle_core::bail!(
                "segment softmax: scores {:?} for {} positions",
                s.dims(),
                self.len()
            );
        }
        if self.is_empty() {
            return Ok(s.clone());
        }
        let host = s.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let sample = |i: u32| i as usize / self.width;
        let mut max = vec![f64::NEG_INFINITY; self.batch];
        for (&i, &v) in self.flat_host.iter().zip(&host) {
            let m = &mut max[sample(i)];
            if v > *m {
                *m = v;
            }
        }
        let shift: Vec<f64> = self.flat_host.iter().map(|&i| max[sample(i)]).collect();
        let shift = Tensor::from_vec(shift, self.len(), s.device())?.to_dtype(s.dtype())?;
        let e = (s - shift)?.exp()?;
        let z = self.segment_sum(&e)?;
        e / self.expand(&z)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctr::testkit::max_abs_diff;
    use crate::norm::masked_softmax_with_fill;
    use crate::testing::assert_gradients_match;
    use candle_core::Var;

    fn mask() -> (Vec<f32>, usize, usize) {
        // Left-aligned lengths 2, 0, 3 and a right-aligned 1.
        let m = vec![
            1., 1., 0., //
            0., 0., 0., //
            1., 1., 1., //
            0., 0., 1.,
        ];
        (m, 4, 3)
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| (((i as u64 * 7919 + seed * 31) % 101) as f64 / 25.0) - 2.0)
            .collect()
    }

    #[test]
    fn packed_ops_equal_masked_padded_ones() {
        let (m, b, t) = mask();
        let dev = Device::Cpu;
        let pk = PackedHistory::from_mask(&m, b, t, &dev).unwrap();
        assert_eq!(pk.len(), 6);
        let real: Vec<bool> = m.iter().map(|&v| v != 0.0).collect();
        assert_eq!(pk.real_flags(), real);
        assert_eq!(
            pk.segments().to_vec1::<u32>().unwrap(),
            vec![0, 0, 2, 2, 2, 3]
        );
        let x = Tensor::from_vec(values(b * t * 2, 1), (b, t, 2), &dev).unwrap();
        let mask = Tensor::from_vec(m.clone(), (b, t), &dev)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        // Segment sum = masked sum.
        let got = pk.segment_sum(&pk.gather(&x).unwrap()).unwrap();
        let want = x
            .broadcast_mul(&mask.unsqueeze(2).unwrap())
            .unwrap()
            .sum(1)
            .unwrap();
        assert!(max_abs_diff(&got, &want).unwrap() < 1e-12);
        // Segment softmax = masked softmax on the real positions (and an empty row stays empty).
        let s = Tensor::from_vec(values(b * t, 2), (b, t), &dev).unwrap();
        let padded = masked_softmax_with_fill(&s, &mask, -4_294_967_295.0).unwrap();
        let got = pk.segment_softmax(&pk.gather(&s).unwrap()).unwrap();
        let want = pk.gather(&padded).unwrap();
        assert!(max_abs_diff(&got, &want).unwrap() < 1e-12);
        // Shapes are checked.
        assert!(pk
            .gather(&Tensor::zeros((b, t + 1), DType::F64, &dev).unwrap())
            .is_err());
        assert!(pk
            .segment_sum(&Tensor::zeros(5, DType::F64, &dev).unwrap())
            .is_err());
        assert!(pk
            .expand(&Tensor::zeros(3, DType::F64, &dev).unwrap())
            .is_err());
        let dense = PackedHistory::dense(2, 3, &dev).unwrap();
        assert_eq!(dense.len(), 6);
    }

    #[test]
    fn a_batch_without_any_history_pools_to_zeros() {
        use crate::attention::{DinAttention, DinAttentionConfig};
        use candle_nn::{VarBuilder, VarMap};
        let dev = Device::Cpu;
        let pk = PackedHistory::from_mask(&[0.0; 6], 2, 3, &dev).unwrap();
        assert!(pk.is_empty());
        let vm = VarMap::new();
        let att = DinAttention::new(
            &DinAttentionConfig::dien(4),
            VarBuilder::from_varmap(&vm, DType::F32, &dev),
        )
        .unwrap();
        let q = Tensor::ones((2, 4), DType::F32, &dev).unwrap();
        let keys = pk
            .gather(&Tensor::ones((2, 3, 4), DType::F32, &dev).unwrap())
            .unwrap();
        assert_eq!(keys.dims(), &[0, 4]);
        let (w, pooled) = att.forward_packed(&q, &keys, &pk).unwrap();
        assert_eq!(w.dims(), &[0]);
        assert_eq!(pooled.to_vec2::<f32>().unwrap(), vec![vec![0.0; 4]; 2]);
    }

    #[test]
    fn segment_softmax_and_sum_gradients() {
        let (m, b, t) = mask();
        let dev = Device::Cpu;
        let pk = PackedHistory::from_mask(&m, b, t, &dev).unwrap();
        let s = Var::from_tensor(&Tensor::from_vec(values(6, 3), 6, &dev).unwrap()).unwrap();
        let k = Var::from_tensor(&Tensor::from_vec(values(12, 4), (6, 2), &dev).unwrap()).unwrap();
        let proj = Tensor::from_vec(values(b * 2, 5), (b, 2), &dev).unwrap();
        assert_gradients_match(&[s, k], |v| {
            let w = pk.segment_softmax(v[0].as_tensor())?;
            let pooled = pk.segment_sum(&v[1].as_tensor().broadcast_mul(&w.unsqueeze(1)?)?)?;
            (pooled * &proj)?.sum_all()
        });
    }

    #[test]
    fn packed_din_attention_equals_padded_values_and_gradients() {
        use crate::attention::{DinAttention, DinAttentionConfig};
        use candle_nn::{VarBuilder, VarMap};
        let (m, b, t) = mask();
        let dev = Device::Cpu;
        let d = 4;
        for norm in [crate::AttentionNorm::Softmax, crate::AttentionNorm::None] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F64, &dev);
            let cfg = DinAttentionConfig {
                hidden: vec![5, 3],
                norm,
                ..DinAttentionConfig::dien(d)
            };
            let att = DinAttention::new(&cfg, vb).unwrap();
            let q = Tensor::from_vec(values(b * d, 6), (b, d), &dev).unwrap();
            // Padded keys are zero, as the frozen padding embedding makes them.
            let mask = Tensor::from_vec(m.clone(), (b, t), &dev).unwrap();
            let keys = Tensor::from_vec(values(b * t * d, 7), (b, t, d), &dev)
                .unwrap()
                .broadcast_mul(&mask.to_dtype(DType::F64).unwrap().unsqueeze(2).unwrap())
                .unwrap();
            let pk = PackedHistory::from_mask(&m, b, t, &dev).unwrap();
            let proj = Tensor::from_vec(values(b * d, 8), (b, d), &dev).unwrap();
            let (w_pad, pooled_pad) = att.forward_with_weights(&q, &keys, &mask).unwrap();
            let (w_pk, pooled_pk) = att
                .forward_packed(&q, &pk.gather(&keys).unwrap(), &pk)
                .unwrap();
            let close = |a: &Tensor, c: &Tensor| {
                assert!(max_abs_diff(a, c).unwrap() < 1e-12, "{norm:?}");
            };
            close(&pooled_pad, &pooled_pk);
            close(&pk.gather(&w_pad).unwrap(), &w_pk);
            let g_pad = (pooled_pad * &proj)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_pk = (pooled_pk * &proj)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (name, var) in vm.data().lock().unwrap().iter() {
                match (g_pad.get(var.as_tensor()), g_pk.get(var.as_tensor())) {
                    (Some(a), Some(c)) => close(a, c),
                    (None, None) => {}
                    _ => panic!("{name}: a gradient in one form only"),
                }
            }
        }
    }
}
