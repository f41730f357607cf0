//! Values and finite-difference gradients (f64) of the DIEN-repo trunk pieces in `mtrec_nn::ctr`.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mtrec_nn::testing::{assert_every_var_has_gradient, check_gradients, GradCheckConfig};
use mtrec_nn::{
    Activation, BatchNorm1d, DiceNorm, FcnConfig, FcnTrunk, FeatAffine, InputNorm, TrunkActivation,
};

const DEV: Device = Device::Cpu;

/// Deterministic pseudo-random values in (-1, 1) (a small LCG).
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
    Tensor::from_vec(values(dims.iter().product(), seed), dims, &DEV).unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn vm() -> (VarMap, VarBuilder<'static>) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &DEV);
    (vm, vb)
}

/// The VarMap's variables sorted by name, optionally without some names.
fn vars_except(vm: &VarMap, skip: &[&str]) -> Vec<Var> {
    let data = vm.data().lock().unwrap();
    let mut named: Vec<_> = data
        .iter()
        .filter(|(k, _)| !skip.iter().any(|s| k.ends_with(s)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, v)| v).collect()
}

/// Sets every variable to a random value near its init (so gamma ≠ 1, alpha ≠ 0.1 etc.).
fn perturb(vm: &VarMap, seed: u64) {
    for (i, v) in vars_except(vm, &[]).into_iter().enumerate() {
        let noise = (tensor(v.dims(), seed + i as u64) * 0.3).unwrap();
        v.set(&(v.as_tensor() + noise).unwrap()).unwrap();
    }
}

/// `Σ out ⊙ r` with a fixed random `r`.
fn project(out: &Tensor, seed: u64) -> Result<Tensor> {
    (out * tensor(out.dims(), seed))?.sum_all()
}

fn tight() -> GradCheckConfig {
    GradCheckConfig {
        step: 1e-6,
        rtol: 1e-5,
        atol: 1e-8,
    }
}

#[test]
fn feat_affine_is_the_bn_quirk() {
    let (_vm, vb) = vm();
    let a = FeatAffine::new(3, vb).unwrap();
    let x = tensor(&[4, 3], 1);
    let got = flat(&a.forward(&x).unwrap());
    let want: Vec<f64> = flat(&x).iter().map(|v| v / 1.001f64.sqrt()).collect();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-15);
    }
}

#[test]
fn feat_affine_gradients() {
    let (vm, vb) = vm();
    let a = FeatAffine::new(5, vb).unwrap();
    perturb(&vm, 10);
    let x = Var::from_tensor(&tensor(&[4, 5], 2)).unwrap();
    let mut vars = vars_except(&vm, &[]);
    vars.push(x.clone());
    check_gradients(&vars, |_| project(&a.forward(x.as_tensor())?, 3), tight())
        .unwrap()
        .assert_ok();
}

#[test]
fn batch_norm_statistics_and_moving_averages() {
    let (_vm, vb) = vm();
    let bn = BatchNorm1d::new(2, vb).unwrap();
    let x = Tensor::new(&[[1.0f64, 10.0], [3.0, 10.0], [5.0, 16.0]], &DEV).unwrap();
    // Train: batch mean (3, 12), biased variance (8/3, 8).
    let y: Vec<Vec<f64>> = bn.forward(&x, true).unwrap().to_vec2().unwrap();
    let v0 = 8.0f64 / 3.0;
    let expect0 = [-2.0 / (v0 + 1e-3).sqrt(), 0.0, 2.0 / (v0 + 1e-3).sqrt()];
    let expect1 = [
        -2.0 / (8.0f64 + 1e-3).sqrt(),
        -2.0 / (8.0f64 + 1e-3).sqrt(),
        4.0 / (8.0f64 + 1e-3).sqrt(),
    ];
    for i in 0..3 {
        assert!((y[i][0] - expect0[i]).abs() < 1e-12, "{y:?}");
        assert!((y[i][1] - expect1[i]).abs() < 1e-12, "{y:?}");
    }
    // moving = 0.99·init + 0.01·batch.
    let mm = flat(&bn.moving_mean().unwrap());
    let mv = flat(&bn.moving_variance().unwrap());
    assert!(
        (mm[0] - 0.03).abs() < 1e-12 && (mm[1] - 0.12).abs() < 1e-12,
        "{mm:?}"
    );
    assert!((mv[0] - (0.99 + 0.01 * v0)).abs() < 1e-12, "{mv:?}");
    assert!((mv[1] - (0.99 + 0.08)).abs() < 1e-12, "{mv:?}");
    // Eval uses the moving statistics and leaves them alone.
    let e: Vec<Vec<f64>> = bn.forward(&x, false).unwrap().to_vec2().unwrap();
    assert!((e[0][0] - (1.0 - 0.03) / (mv[0] + 1e-3).sqrt()).abs() < 1e-12);
    assert_eq!(flat(&bn.moving_mean().unwrap()), mm);
    // 3-D input: statistics over all leading dimensions.
    let x3 = tensor(&[2, 3, 2], 4);
    assert_eq!(bn.forward(&x3, true).unwrap().dims(), [2, 3, 2]);
    // An empty batch cannot be trained on.
    let empty = Tensor::zeros((0, 2), DType::F64, &DEV).unwrap();
    assert!(bn.forward(&empty, true).is_err());
}

#[test]
fn batch_norm_gradients_train_and_eval() {
    let (vm, vb) = vm();
    let bn = BatchNorm1d::new(4, vb).unwrap();
    perturb(&vm, 20);
    let x = Var::from_tensor(&tensor(&[5, 4], 5)).unwrap();
    // Gradients flow through the batch statistics in training...
    let mut vars = vars_except(&vm, &["moving_mean", "moving_variance"]);
    vars.push(x.clone());
    check_gradients(
        &vars,
        |_| project(&bn.forward(x.as_tensor(), true)?, 6),
        tight(),
    )
    .unwrap()
    .assert_ok();
    // ...and through gamma, beta and x (not the detached moving statistics) in evaluation.
    check_gradients(
        &vars,
        |_| project(&bn.forward(x.as_tensor(), false)?, 7),
        tight(),
    )
    .unwrap()
    .assert_ok();
    // The moving statistics are buffers: never in the graph.
    let loss = project(&bn.forward(x.as_tensor(), false).unwrap(), 8).unwrap();
    let grads = loss.backward().unwrap();
    for v in vars_except(&vm, &["gamma", "beta"]) {
        assert!(grads.get(v.as_tensor()).is_none());
    }
}

fn trunk_gradients(norm: InputNorm, activation: Activation, train: bool, seed: u64) {
    let (vm, vb) = vm();
    let cfg = FcnConfig {
        input: 6,
        hidden: vec![5, 3],
        norm,
        activation,
    };
    let trunk = FcnTrunk::new(&cfg, vb).unwrap();
    assert_eq!(trunk.out_dim(), 3);
    perturb(&vm, seed);
    let x = Var::from_tensor(&(tensor(&[7, 6], seed + 100) * 2.0).unwrap()).unwrap();
    let out = trunk.forward(x.as_tensor(), train).unwrap();
    assert_eq!(out.dims(), [7, 3]);
    let loss = project(&out, seed + 200).unwrap();
    if norm != InputNorm::BatchNorm {
        assert_every_var_has_gradient(&vm, &loss);
    }
    let mut vars = vars_except(&vm, &["moving_mean", "moving_variance"]);
    vars.push(x.clone());
    check_gradients(
        &vars,
        |_| project(&trunk.forward(x.as_tensor(), train)?, seed + 200),
        tight(),
    )
    .unwrap()
    .assert_ok();
}

#[test]
fn fcn_trunk_prelu_affine_gradients() {
    trunk_gradients(InputNorm::Affine, Activation::PRelu, true, 30);
}

#[test]
fn fcn_trunk_dice_batch_stats_gradients() {
    trunk_gradients(
        InputNorm::Affine,
        TrunkActivation::DICE.activation(),
        false,
        40,
    );
}

#[test]
fn fcn_trunk_batch_norm_gradients() {
    trunk_gradients(InputNorm::BatchNorm, Activation::PRelu, true, 50);
    trunk_gradients(
        InputNorm::BatchNorm,
        Activation::Dice(DiceNorm::Affine),
        false,
        60,
    );
    trunk_gradients(InputNorm::None, Activation::PRelu, true, 70);
}

#[test]
fn fcn_trunk_parameter_names() {
    let (vm, vb) = vm();
    let cfg = FcnConfig::dien(90, TrunkActivation::DICE.activation());
    let trunk = FcnTrunk::new(&cfg, vb.pp("fcn")).unwrap();
    assert_eq!(trunk.out_dim(), 80);
    let mut names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "fcn.act0.alpha",
            "fcn.act1.alpha",
            "fcn.bn.beta",
            "fcn.bn.gamma",
            "fcn.fc0.bias",
            "fcn.fc0.weight",
            "fcn.fc1.bias",
            "fcn.fc1.weight"
        ]
    );
    let w = vm.data().lock().unwrap()["fcn.fc0.weight"]
        .as_tensor()
        .clone();
    assert_eq!(w.dims(), [200, 90]);
}
