//! Forward values, shapes, finite-difference gradients (f64) and every-parameter-gets-a-gradient
//! checks for the shared blocks.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mtrec_nn::embedding::{mask_from_ids, mask_from_lengths};
use mtrec_nn::testing::{
    assert_every_var_has_gradient, assert_gradients_match, vars_without_gradient,
};
use mtrec_nn::{
    masked_mean, masked_softmax, masked_sum, softmax, Activation, AttentionNorm, Dice, DiceNorm,
    DinAttention, DinAttentionConfig, Embedding, EmbeddingConfig, LayerNorm, Mlp, MlpConfig,
};

const DEV: Device = Device::Cpu;

/// Deterministic pseudo-random values in (-1, 1) (a small LCG; no rand dependency).
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

fn var(dims: &[usize], seed: u64) -> Var {
    Var::from_tensor(&tensor(dims, seed)).unwrap()
}

fn vm() -> (VarMap, VarBuilder<'static>) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &DEV);
    (vm, vb)
}

/// `Σ out ⊙ r` with a fixed random `r`: a scalar loss whose gradient reaches every output element.
fn project(out: &Tensor, seed: u64) -> Result<Tensor> {
    let r = tensor(out.dims(), seed);
    (out * r)?.sum_all()
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn all_vars(vm: &VarMap) -> Vec<Var> {
    let data = vm.data().lock().unwrap();
    let mut named: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, v)| v).collect()
}

// ---------------------------------------------------------------- embedding and pooling

fn ids() -> Tensor {
    Tensor::new(&[[3u32, 1, 0, 0], [2, 4, 4, 1], [0, 0, 0, 0]], &DEV).unwrap()
}

#[test]
fn embedding_padding_row_is_zero_and_shapes() -> Result<()> {
    let (_vm, vb) = vm();
    let emb = Embedding::with_defaults(5, 3, vb.pp("item"))?;
    assert_eq!(emb.weight().dims(), &[5, 3]);
    close(&flat(&emb.weight().get(0)?), &[0.0; 3], 0.0);
    let out = emb.forward(&ids())?;
    assert_eq!(out.dims(), &[3, 4, 3]);
    close(&flat(&out.get(2)?), &[0.0; 12], 0.0);
    close(
        &flat(&out.get(0)?.get(0)?),
        &flat(&emb.weight().get(3)?),
        0.0,
    );
    let single = emb.forward(&Tensor::new(&[2u32, 0], &DEV)?)?;
    assert_eq!(single.dims(), &[2, 3]);
    Ok(())
}

#[test]
fn embedding_pooling_gradients_match_finite_differences() -> Result<()> {
    let (vm, vb) = vm();
    let emb = Embedding::with_defaults(5, 3, vb.pp("item"))?;
    let mask = mask_from_ids(&ids(), DType::F64)?;
    let vars = all_vars(&vm);
    assert_gradients_match(&vars, |_| {
        let e = emb.forward(&ids())?;
        (project(&masked_mean(&e, &mask)?, 1)? + project(&masked_sum(&e, &mask)?, 2)?)?
            .add(&project(&e, 3)?)
    });
    // Every parameter: the table (its row 0 stays at zero gradient with freeze_padding).
    let e = emb.forward(&ids())?;
    let loss = project(&masked_mean(&e, &mask)?, 1)?;
    assert_every_var_has_gradient(&vm, &loss);
    let g = loss.backward()?;
    let g = g.get(emb.weight()).expect("table gradient");
    close(&flat(&g.get(0)?), &[0.0; 3], 0.0);
    Ok(())
}

#[test]
fn unfrozen_padding_row_is_trainable() -> Result<()> {
    let (_vm, vb) = vm();
    let cfg = EmbeddingConfig {
        freeze_padding: false,
        ..Default::default()
    };
    let emb = Embedding::new(5, 3, cfg, vb)?;
    close(&flat(&emb.weight().get(0)?), &[0.0; 3], 0.0);
    let loss = project(&emb.forward(&ids())?, 4)?;
    let g = loss.backward()?;
    let row0 = flat(&g.get(emb.weight()).unwrap().get(0)?);
    assert!(row0.iter().any(|v| *v != 0.0));
    Ok(())
}

#[test]
fn masked_pooling_hand_computed() -> Result<()> {
    // x[0] = [[1,2],[3,4],[5,6]] with mask [1,1,0]; x[1] = anything with an all-zero mask.
    let x = Tensor::new(
        &[
            [[1f32, 2.], [3., 4.], [5., 6.]],
            [[7., 8.], [9., 10.], [11., 12.]],
        ],
        &DEV,
    )?;
    let mask = Tensor::new(&[[1f32, 1., 0.], [0., 0., 0.]], &DEV)?;
    let s = masked_sum(&x, &mask)?;
    let m = masked_mean(&x, &mask)?;
    assert_eq!(s.dims(), &[2, 2]);
    close(&flat(&s), &[4.0, 6.0, 0.0, 0.0], 1e-6);
    close(&flat(&m), &[2.0, 3.0, 0.0, 0.0], 1e-6);
    assert!(flat(&m).iter().all(|v| v.is_finite()));
    // Masks from lengths / ids.
    let lm = mask_from_lengths(&Tensor::new(&[2u32, 0, 3], &DEV)?, 3, DType::F32)?;
    close(&flat(&lm), &[1., 1., 0., 0., 0., 0., 1., 1., 1.], 0.0);
    assert!(masked_mean(&x, &Tensor::new(&[[1f32, 1.], [0., 0.]], &DEV)?).is_err());
    Ok(())
}

// ---------------------------------------------------------------- MLP and activations

fn activations() -> Vec<Activation> {
    vec![
        Activation::Relu,
        Activation::PRelu,
        Activation::Dice(DiceNorm::Affine),
        Activation::Dice(DiceNorm::BatchStats { eps: 1e-9 }),
        Activation::Sigmoid,
        Activation::None,
    ]
}

#[test]
fn mlp_gradients_match_finite_differences_for_each_activation() -> Result<()> {
    for act in activations() {
        let (vm, vb) = vm();
        let cfg = MlpConfig::new(4, &[5, 3], act).with_output(2);
        let mlp = Mlp::new(&cfg, vb)?;
        // Seeded weights (the builder's init is unseeded): with ReLU/PReLU kinks, random weights
        // could put a pre-activation within the finite-difference step of 0 on some runs.
        for (i, v) in all_vars(&vm).iter().enumerate() {
            v.set(&tensor(v.dims(), 100 + i as u64))?;
        }
        let x = var(&[6, 4], 11);
        let mut vars = all_vars(&vm);
        vars.push(x.clone());
        let report = mtrec_nn::testing::check_gradients(
            &vars,
            |_| project(&mlp.forward(x.as_tensor())?, 5),
            Default::default(),
        )?;
        assert!(report.is_ok(), "{act:?}: {report:?}");
    }
    Ok(())
}

#[test]
fn mlp_every_parameter_gets_a_gradient_and_shapes() -> Result<()> {
    for act in activations() {
        let (vm, vb) = vm();
        let cfg = MlpConfig::new(4, &[5, 3], act).with_output(2);
        assert_eq!(cfg.out_dim(), 2);
        let mlp = Mlp::new(&cfg, vb)?;
        // 3-D input, as in attention: [B, T, C].
        let x = tensor(&[16, 4, 4], 12);
        let out = mlp.forward(&x)?;
        assert_eq!(out.dims(), &[16, 4, 2], "{act:?}");
        let expected = match act {
            // 2 hidden × (weight, bias, alpha[, gamma, beta]) + output (weight, bias).
            Activation::PRelu => 8,
            Activation::Dice(DiceNorm::Affine) => 12,
            Activation::Dice(_) => 8,
            _ => 6,
        };
        assert_eq!(vm.all_vars().len(), expected, "{act:?}");
        assert_every_var_has_gradient(&vm, &project(&out, 6)?);
    }
    // Without an output layer the last hidden size is the output.
    let (_vm, vb) = vm();
    let mlp = Mlp::new(&MlpConfig::new(4, &[5, 3], Activation::Relu), vb)?;
    assert_eq!(mlp.forward(&tensor(&[2, 4], 1))?.dims(), &[2, 3]);
    Ok(())
}

#[test]
fn prelu_acts_on_the_last_dimension() -> Result<()> {
    let (vm, vb) = vm();
    let p = mtrec_nn::PRelu::new(2, 0.1, vb)?;
    let x = Tensor::new(&[[[-1f64, 2.], [3., -4.], [-5., -6.]]], &DEV)?; // [1, 3, 2]
    close(
        &flat(&p.forward(&x)?),
        &[-0.1, 2., 3., -0.4, -0.5, -0.6],
        1e-12,
    );
    vm.data().lock().unwrap()["alpha"].set(&Tensor::new(&[0.5f64, 0.25], &DEV)?)?;
    close(
        &flat(&p.forward(&x)?),
        &[-0.5, 2., 3., -1.0, -2.5, -1.5],
        1e-12,
    );
    Ok(())
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn dice_hand_computed() -> Result<()> {
    // Affine at init (gamma 1, beta 0, alpha 0): out = σ(x)·x.
    let (vm, vb) = vm();
    let dice = Dice::new(3, DiceNorm::Affine, vb)?;
    let x = Tensor::new(&[[0f64, 1., -2.]], &DEV)?;
    let expect: Vec<f64> = [0f64, 1., -2.].iter().map(|&v| sigmoid(v) * v).collect();
    close(&flat(&dice.forward(&x)?), &expect, 1e-12);
    close(
        &flat(&dice.forward(&x)?),
        &[0.0, 0.731_058_578_6, -0.238_405_844_0],
        1e-9,
    );
    // alpha = 0.25, gamma = 2, beta = 0.5: p = σ(2x + 0.5), out = p·x + (1 − p)·0.25·x.
    {
        let data = vm.data().lock().unwrap();
        data["alpha"].set(&Tensor::new(&[0.25f64; 3], &DEV)?)?;
        data["gamma"].set(&Tensor::new(&[2f64; 3], &DEV)?)?;
        data["beta"].set(&Tensor::new(&[0.5f64; 3], &DEV)?)?;
    }
    let expect: Vec<f64> = [0f64, 1., -2.]
        .iter()
        .map(|&v| {
            let p = sigmoid(2.0 * v + 0.5);
            p * v + (1.0 - p) * 0.25 * v
        })
        .collect();
    close(&flat(&dice.forward(&x)?), &expect, 1e-12);
    // -2: p = σ(-3.5) = 0.0293122, out = -2·(0.0293122 + 0.9706878·0.25) = -0.5439683
    close(&flat(&dice.forward(&x)?)[2..], &[-0.543_968_35], 1e-6);

    // Batch statistics: one feature, rows 1 and 3 → normalised ∓1 (ε tiny), alpha 0.
    let (_vm, vb) = self::vm();
    let dice = Dice::new(1, DiceNorm::BatchStats { eps: 1e-9 }, vb)?;
    let x = Tensor::new(&[[1f64], [3.]], &DEV)?;
    close(
        &flat(&dice.forward(&x)?),
        &[sigmoid(-1.0), 3.0 * sigmoid(1.0)],
        1e-7,
    );
    Ok(())
}

#[test]
fn dice_gradients_match_finite_differences() -> Result<()> {
    for norm in [DiceNorm::Affine, DiceNorm::BatchStats { eps: 1e-9 }] {
        let (vm, vb) = vm();
        let dice = Dice::new(3, norm, vb)?;
        // Move alpha (and the affine) away from their init so every term matters.
        for (name, v) in vm.data().lock().unwrap().iter() {
            let seed = name.len() as u64;
            v.set(&(v.as_tensor() + tensor(&[3], seed))?)?;
        }
        let x = var(&[2, 4, 3], 21);
        let mut vars = all_vars(&vm);
        vars.push(x.clone());
        assert_gradients_match(&vars, |_| project(&dice.forward(x.as_tensor())?, 22));
        assert_every_var_has_gradient(&vm, &project(&dice.forward(x.as_tensor())?, 22)?);
    }
    Ok(())
}

// ---------------------------------------------------------------- LayerNorm and softmax

#[test]
fn layer_norm_hand_computed() -> Result<()> {
    let (vm, vb) = vm();
    let ln = LayerNorm::new(3, 0.0, vb)?;
    let x = Tensor::new(&[[1f64, 2., 3.], [2., 2., 5.]], &DEV)?;
    // Row 0: mean 2, var 2/3 → [-1.2247449, 0, 1.2247449]. Row 1: mean 3, var 2 → [-1/√2, -1/√2, √2].
    let r = 1.0 / (2.0f64 / 3.0).sqrt();
    let h = std::f64::consts::FRAC_1_SQRT_2;
    close(
        &flat(&ln.forward(&x)?),
        &[-r, 0.0, r, -h, -h, 2.0 * h],
        1e-12,
    );
    {
        let data = vm.data().lock().unwrap();
        data["weight"].set(&Tensor::new(&[2f64, 1., 0.5], &DEV)?)?;
        data["bias"].set(&Tensor::new(&[0f64, 1., -1.], &DEV)?)?;
    }
    close(
        &flat(&ln.forward(&x.get(0)?)?),
        &[-2.0 * r, 1.0, 0.5 * r - 1.0],
        1e-12,
    );
    // eps: x = [0, 2] → var 1, eps 1 → (x − 1)/√2.
    let (_vm, vb) = self::vm();
    let ln = LayerNorm::new(2, 1.0, vb)?;
    close(
        &flat(&ln.forward(&Tensor::new(&[0f64, 2.], &DEV)?)?),
        &[-h, h],
        1e-12,
    );
    Ok(())
}

#[test]
fn layer_norm_gradients_and_every_parameter() -> Result<()> {
    let (vm, vb) = vm();
    let ln = LayerNorm::new(4, 1e-5, vb)?;
    for (name, v) in vm.data().lock().unwrap().iter() {
        v.set(&(v.as_tensor() + tensor(&[4], name.len() as u64))?)?;
    }
    let x = var(&[2, 3, 4], 31);
    let mut vars = all_vars(&vm);
    vars.push(x.clone());
    assert_gradients_match(&vars, |_| project(&ln.forward(x.as_tensor())?, 32));
    // Contiguous input with a bias: the case where candle_nn::LayerNorm silently detaches.
    assert!(x.as_tensor().is_contiguous());
    let loss = project(&ln.forward(x.as_tensor())?, 32)?;
    assert_every_var_has_gradient(&vm, &loss);
    assert!(loss.backward()?.get(x.as_tensor()).is_some());
    Ok(())
}

#[test]
fn masked_softmax_values_and_all_masked_row() -> Result<()> {
    let s = Tensor::new(&[[1f32, 2., 3.], [5., -1., 7.], [4., 4., 4.]], &DEV)?;
    let mask = Tensor::new(&[[1f32, 1., 0.], [0., 0., 0.], [1., 1., 1.]], &DEV)?;
    let w = masked_softmax(&s, &mask)?;
    let v = flat(&w);
    assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
    close(&v[..3], &[sigmoid(-1.0), sigmoid(1.0), 0.0], 1e-6);
    close(&v[3..6], &[1.0 / 3.0; 3], 1e-6); // all masked: uniform, finite
    close(&v[6..], &[1.0 / 3.0; 3], 1e-6);
    close(&flat(&softmax(&s)?)[6..], &[1.0 / 3.0; 3], 1e-6);
    assert!(masked_softmax(&s, &mask.get(0)?).is_err());
    // Gradients through the all-masked row are finite too.
    let sv = Var::from_tensor(&s)?;
    let g = masked_softmax(sv.as_tensor(), &mask)?
        .sqr()?
        .sum_all()?
        .backward()?;
    assert!(flat(g.get(sv.as_tensor()).unwrap())
        .iter()
        .all(|x| x.is_finite()));
    Ok(())
}

#[test]
fn softmax_gradients_match_finite_differences() -> Result<()> {
    let s = var(&[3, 5], 41);
    let mask = Tensor::new(
        &[
            [1f64, 1., 0., 1., 0.],
            [0., 0., 0., 0., 0.],
            [1., 1., 1., 1., 1.],
        ],
        &DEV,
    )?;
    assert_gradients_match(std::slice::from_ref(&s), |v| {
        project(&masked_softmax(v[0].as_tensor(), &mask)?, 42)
    });
    assert_gradients_match(std::slice::from_ref(&s), |v| {
        project(&softmax(v[0].as_tensor())?, 43)
    });
    Ok(())
}

// ---------------------------------------------------------------- DIN attention

fn att_cfg(norm: AttentionNorm, scale: bool, act: Activation) -> DinAttentionConfig {
    DinAttentionConfig {
        hidden: vec![6, 4],
        activation: act,
        norm,
        scale,
        ..DinAttentionConfig::dien(3)
    }
}

fn att_mask() -> Tensor {
    Tensor::new(
        &[[1f64, 1., 1., 0.], [1., 0., 0., 0.], [0., 0., 0., 0.]],
        &DEV,
    )
    .unwrap()
}

#[test]
fn din_attention_gradients_match_finite_differences() -> Result<()> {
    for (norm, scale, act) in [
        (AttentionNorm::Softmax, false, Activation::Sigmoid),
        (AttentionNorm::None, false, Activation::Sigmoid),
        (
            AttentionNorm::Softmax,
            true,
            Activation::Dice(DiceNorm::Affine),
        ),
        (AttentionNorm::None, true, Activation::PRelu),
    ] {
        let (vm, vb) = vm();
        let att = DinAttention::new(&att_cfg(norm, scale, act), vb.pp("att"))?;
        let q = var(&[3, 3], 51);
        let k = var(&[3, 4, 3], 52);
        let mut vars = all_vars(&vm);
        vars.push(q.clone());
        vars.push(k.clone());
        let report = mtrec_nn::testing::check_gradients(
            &vars,
            |_| project(&att.forward(q.as_tensor(), k.as_tensor(), &att_mask())?, 53),
            Default::default(),
        )?;
        assert!(report.is_ok(), "{norm:?} {scale} {act:?}: {report:?}");
    }
    Ok(())
}

#[test]
fn din_attention_every_parameter_gets_a_gradient() -> Result<()> {
    // Without softmax every parameter matters.
    let (vm, vb) = vm();
    let att = DinAttention::new(
        &att_cfg(AttentionNorm::None, false, Activation::Sigmoid),
        vb,
    )?;
    let (q, k) = (tensor(&[3, 3], 61), tensor(&[3, 4, 3], 62));
    assert_every_var_has_gradient(&vm, &project(&att.forward(&q, &k, &att_mask())?, 63)?);
    // With softmax the score MLP's final bias is redundant (softmax is shift-invariant): it alone
    // gets a zero gradient, as in the reference codes.
    let (vm, vb) = self::vm();
    let att = DinAttention::new(
        &att_cfg(AttentionNorm::Softmax, false, Activation::Sigmoid),
        vb,
    )?;
    let loss = project(&att.forward(&q, &k, &att_mask())?, 63)?;
    let missing = vars_without_gradient(&vm, &loss)?;
    assert!(missing.iter().all(|n| n == "mlp.out.bias"), "{missing:?}");
    let n_vars = vm.all_vars().len();
    assert_eq!(n_vars, 6);
    Ok(())
}

#[test]
fn din_attention_shapes_weights_and_masking() -> Result<()> {
    let (vm, vb) = vm();
    let att = DinAttention::new(&DinAttentionConfig::dien(3), vb.pp("att"))?;
    // Official sizes: 4D → 80 → 40 → 1.
    let data = vm.data().lock().unwrap();
    assert_eq!(data["att.mlp.fc0.weight"].dims(), &[80, 12]);
    assert_eq!(data["att.mlp.fc1.weight"].dims(), &[40, 80]);
    assert_eq!(data["att.mlp.out.weight"].dims(), &[1, 40]);
    drop(data);
    let (q, k) = (tensor(&[3, 3], 71), tensor(&[3, 4, 3], 72));
    let (w, out) = att.forward_with_weights(&q, &k, &att_mask())?;
    assert_eq!(w.dims(), &[3, 4]);
    assert_eq!(out.dims(), &[3, 3]);
    let wv = flat(&w);
    assert!(wv.iter().all(|x| x.is_finite()));
    close(&[wv[0] + wv[1] + wv[2], wv[3]], &[1.0, 0.0], 1e-9);
    close(&wv[4..8], &[1.0, 0.0, 0.0, 0.0], 1e-9);
    // The weighted sum is Σ w_t k_t.
    let manual = k.broadcast_mul(&w.unsqueeze(2)?)?.sum(1)?;
    close(&flat(&out), &flat(&manual), 1e-12);
    // Second row has a single real key: the output is that key.
    close(&flat(&out.get(1)?), &flat(&k.get(1)?.get(0)?), 1e-9);

    // DIN paper mode: raw scores, zero at padding; scaling divides the scores by √D.
    let (_vm2, vb2) = self::vm();
    let plain = DinAttention::new(&DinAttentionConfig::din_paper(3), vb2.clone())?;
    let w = flat(&plain.weights(&q, &k, &att_mask())?);
    let s = flat(&plain.scores(&q, &k)?);
    close(&[w[3], w[5], w[8], w[11]], &[0.0; 4], 0.0);
    close(&w[..3], &s[..3], 1e-12);
    let scaled = DinAttention::new(
        &DinAttentionConfig {
            scale: true,
            ..DinAttentionConfig::din_paper(3)
        },
        vb2,
    )?;
    let s2 = flat(&scaled.scores(&q, &k)?);
    close(
        &s2,
        &s.iter().map(|v| v / 3f64.sqrt()).collect::<Vec<_>>(),
        1e-12,
    );
    assert!(att.forward(&tensor(&[3, 2], 1), &k, &att_mask()).is_err());
    Ok(())
}

#[test]
fn f32_end_to_end_smoke() -> Result<()> {
    // The default dtype of the backbones: embeddings → DIN attention → MLP head, every Var trained.
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &DEV);
    let emb = Embedding::with_defaults(5, 3, vb.pp("emb"))?;
    let att = DinAttention::new(&DinAttentionConfig::din_paper(3), vb.pp("att"))?;
    let head = Mlp::new(
        &MlpConfig::new(6, &[4], Activation::Dice(DiceNorm::Affine)).with_output(1),
        vb.pp("head"),
    )?;
    let hist = emb.forward(&ids())?;
    let q = emb.forward(&Tensor::new(&[1u32, 2, 3], &DEV)?)?;
    let mask = mask_from_ids(&ids(), DType::F32)?;
    let pooled = att.forward(&q, &hist, &mask)?;
    let logit = head.forward(&Tensor::cat(&[&q, &pooled], 1)?)?;
    assert_eq!(logit.dims(), &[3, 1]);
    assert_eq!(logit.dtype(), DType::F32);
    assert_every_var_has_gradient(&vm, &logit.sum_all()?);
    Ok(())
}

// ---------------------------------------------------------------- the checkers catch the pitfalls

#[test]
fn checkers_catch_candle_detached_fused_ops() -> Result<()> {
    // candle_nn::LayerNorm on contiguous input with a bias takes the fused no-backward path
    // (the fused kernels have no f64 version, hence f32 and a coarse checker here).
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &DEV);
    let fused = candle_nn::layer_norm(4, 1e-5, vb)?;
    let x = tensor(&[2, 4], 81).to_dtype(DType::F32)?;
    let r = tensor(&[2, 4], 82).to_dtype(DType::F32)?;
    let loss = (candle_core::Module::forward(&fused, &x)? * r)?.sum_all()?;
    let missing = vars_without_gradient(&vm, &loss)?;
    assert_eq!(
        missing,
        vec!["bias".to_string(), "weight".to_string()],
        "candle fixed #3011?"
    );
    // ops::softmax_last_dim: the finite-difference checker reports the missing gradient, while
    // ops::softmax passes the same check.
    let s = Var::from_tensor(&tensor(&[2, 3], 83).to_dtype(DType::F32)?)?;
    let coarse = mtrec_nn::testing::GradCheckConfig {
        step: 1e-2,
        rtol: 1e-2,
        atol: 1e-4,
    };
    let r = tensor(&[2, 3], 84).to_dtype(DType::F32)?;
    let ok = mtrec_nn::testing::check_gradients(
        std::slice::from_ref(&s),
        |v| (softmax(v[0].as_tensor())? * &r)?.sum_all(),
        coarse,
    )?;
    assert!(ok.is_ok(), "{ok:?}");
    let report = mtrec_nn::testing::check_gradients(
        std::slice::from_ref(&s),
        |v| (candle_nn::ops::softmax_last_dim(v[0].as_tensor())? * &r)?.sum_all(),
        coarse,
    )?;
    assert!(
        !report.is_ok(),
        "softmax_last_dim now has a backward? {report:?}"
    );
    Ok(())
}
