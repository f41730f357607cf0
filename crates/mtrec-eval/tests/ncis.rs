//! NCIS, ΔNCIS and ESS against `specs/method.md` §5.3 and §9.

use mtrec_eval::{
    delta_ncis, log_rhos, ncis, ncis_from_log_weights, EvalError, LogCap, NcisConfig,
    TrajectoryLength, UserTrajectory,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn close_rel(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

/// Random trajectories of 1..=max_len steps with logits in [-3, 3], negatives included.
fn random_users(n: usize, max_len: usize, seed: u64) -> Vec<UserTrajectory> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = rng.random_range(1..=max_len);
            let pos: Vec<f64> = (0..len).map(|_| rng.random_range(-3.0..3.0)).collect();
            let neg: Vec<f64> = (0..len).map(|_| rng.random_range(-3.0..3.0)).collect();
            UserTrajectory::new(pos).with_negatives(neg)
        })
        .collect()
}

/// The paper's formula with plain products: ρ_u = Π_t p_t, NCIS = Σ ρ_u L_u / Σ ρ_u.
fn direct(users: &[UserTrajectory], with_negatives: bool) -> (f64, f64) {
    let rho: Vec<f64> = users
        .iter()
        .map(|u| {
            let mut r: f64 = u.pos_logits.iter().map(|&z| sigmoid(z)).product();
            if with_negatives {
                r *= u
                    .neg_logits
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|&z| 1.0 - sigmoid(z))
                    .product::<f64>();
            }
            r
        })
        .collect();
    let sw: f64 = rho.iter().sum();
    let swl: f64 = rho.iter().zip(users).map(|(r, u)| r * u.len() as f64).sum();
    let sw2: f64 = rho.iter().map(|r| r * r).sum();
    (swl / sw, sw * sw / sw2)
}

#[test]
fn log_space_equals_the_direct_product_formula() {
    for seed in 0..10 {
        let users = random_users(40, 12, seed);
        for with_negatives in [false, true] {
            let cfg = NcisConfig {
                with_negatives,
                ..NcisConfig::default()
            };
            let r = ncis(&users, &cfg).unwrap();
            let (value, ess) = direct(&users, with_negatives);
            assert!(close_rel(r.value, value, 1e-12), "{} vs {value}", r.value);
            assert!(close_rel(r.ess, ess, 1e-12), "{} vs {ess}", r.ess);
            assert_eq!(r.users, 40);
        }
    }
}

#[test]
fn log_rho_hand_values() {
    let users = vec![
        UserTrajectory::new([0.0, 0.0]).with_negatives([0.0, 0.0]),
        UserTrajectory::new([2.0]).with_negatives([-1.0]),
    ];
    let lr = log_rhos(&users, false).unwrap();
    assert!((lr[0] - 2.0 * 0.5f64.ln()).abs() < 1e-15);
    assert!((lr[1] - sigmoid(2.0).ln()).abs() < 1e-15);
    let lr = log_rhos(&users, true).unwrap();
    assert!((lr[0] - 4.0 * 0.5f64.ln()).abs() < 1e-15);
    assert!((lr[1] - (sigmoid(2.0) * (1.0 - sigmoid(-1.0))).ln()).abs() < 1e-15);
    // f32 logits are accepted.
    let u32s = vec![UserTrajectory::new([0.5f32, -0.25])];
    assert!(
        (log_rhos(&u32s, false).unwrap()[0] - (sigmoid(0.5) * sigmoid(-0.25)).ln()).abs() < 1e-15
    );
}

#[test]
fn delta_ncis_of_a_model_against_itself_is_zero() {
    let users = random_users(50, 20, 3);
    for cfg in [
        NcisConfig::default(),
        NcisConfig {
            with_negatives: true,
            log_cap: LogCap::BelowMax(2.0),
            length: TrajectoryLength::Reviews,
        },
    ] {
        let d = delta_ncis(&users, &users, &cfg).unwrap();
        assert_eq!(d.value, 0.0);
        assert_eq!(d.trained, d.init);
    }
}

#[test]
fn delta_ncis_rewards_following_long_trajectories() {
    let lengths = [3usize, 5, 8, 13, 21];
    let init: Vec<_> = lengths
        .iter()
        .map(|&l| UserTrajectory::new(vec![0.0; l]))
        .collect();
    let trained: Vec<_> = lengths
        .iter()
        .map(|&l| UserTrajectory::new(vec![3.0; l]))
        .collect();
    let d = delta_ncis(&trained, &init, &NcisConfig::default()).unwrap();
    assert!(d.value > 0.0);
    assert!((d.value - (d.trained.value - d.init.value)).abs() == 0.0);
    // σ(3) = 0.9526: ρ = 0.9526^L spreads the weight towards the long trajectories.
    // Values computed independently (Python, float64).
    assert!(
        (d.trained.value - 8.208149033616726).abs() < 1e-12,
        "{:?}",
        d.trained
    );
    assert!((d.trained.ess - 4.63662806026331).abs() < 1e-12);
    assert!(
        (d.init.value - 3.5194731784523205).abs() < 1e-12,
        "{:?}",
        d.init
    );
    assert!((d.init.ess - 1.5459797834742897).abs() < 1e-12);
}

#[test]
fn untrained_model_gives_about_the_minimum_length() {
    // p = 0.5 everywhere: ρ_u = 2^{-L_u}; lengths that differ a lot → NCIS ≈ min L_u.
    let lengths = [3usize, 10, 20, 50, 100];
    let users: Vec<_> = lengths
        .iter()
        .map(|&l| UserTrajectory::new(vec![0.0; l]))
        .collect();
    let r = ncis(&users, &NcisConfig::default()).unwrap();
    let w: Vec<f64> = lengths.iter().map(|&l| 0.5f64.powi(l as i32)).collect();
    let exact = w
        .iter()
        .zip(&lengths)
        .map(|(w, &l)| w * l as f64)
        .sum::<f64>()
        / w.iter().sum::<f64>();
    assert!((r.value - exact).abs() < 1e-12);
    assert!((r.value - 3.0).abs() < 0.06, "{}", r.value);
    assert_eq!(r.min_length, 3.0);
    assert_eq!(r.mean_length, 36.6);
    assert!(r.ess < 1.02);

    // Books-scale trajectories: 0.5^1500 underflows f64 (the product formula gives 0/0), log
    // space does not.
    let lengths = [1500usize, 2000, 3000];
    let users: Vec<_> = lengths
        .iter()
        .map(|&l| UserTrajectory::new(vec![0.0; l]))
        .collect();
    assert!(direct(&users, false).0.is_nan());
    let r = ncis(&users, &NcisConfig::default()).unwrap();
    assert_eq!(r.value, 1500.0);
    assert_eq!(r.ess, 1.0);
    assert!((r.max_log_rho - 1500.0 * 0.5f64.ln()).abs() < 1e-9);

    // Several users share the minimum: NCIS ≈ 5, ESS ≈ their number.
    let lengths = [5usize, 5, 5, 40, 80];
    let users: Vec<_> = lengths
        .iter()
        .map(|&l| UserTrajectory::new(vec![0.0; l]))
        .collect();
    let r = ncis(&users, &NcisConfig::default()).unwrap();
    assert!((r.value - 5.0).abs() < 1e-8);
    assert!((r.ess - 3.0).abs() < 1e-8);
}

#[test]
fn trajectory_length_reviews_shifts_by_one() {
    let users = random_users(30, 10, 11);
    let a = ncis(&users, &NcisConfig::default()).unwrap();
    let b = ncis(
        &users,
        &NcisConfig {
            length: TrajectoryLength::Reviews,
            ..NcisConfig::default()
        },
    )
    .unwrap();
    assert!((b.value - a.value - 1.0).abs() < 1e-12);
    assert_eq!(a.ess, b.ess);
}

#[test]
fn ess_bounds() {
    for seed in 0..20 {
        let users = random_users(1 + seed as usize * 7, 30, 100 + seed);
        let r = ncis(&users, &NcisConfig::default()).unwrap();
        assert!(r.ess >= 1.0 && r.ess <= users.len() as f64, "{r:?}");
    }
    // Equal weights: ESS = n exactly, NCIS = mean length.
    let users: Vec<_> = (0..7).map(|_| UserTrajectory::new([0.4, -0.1])).collect();
    let r = ncis(&users, &NcisConfig::default()).unwrap();
    assert_eq!(r.ess, 7.0);
    assert_eq!(r.value, 2.0);
    // One user dominates: ESS → 1.
    let r = ncis_from_log_weights(&[0.0, -50.0, -60.0], &[1.0, 2.0, 3.0], LogCap::None).unwrap();
    assert!((r.ess - 1.0).abs() < 1e-20);
    assert!((r.value - 1.0).abs() < 1e-20);
}

#[test]
fn capping() {
    let users = random_users(60, 25, 21);
    let plain = ncis(&users, &NcisConfig::default()).unwrap();
    assert_eq!(plain.capped_users, 0);
    assert_eq!(plain.log_cap, None);
    // ρ ≤ 1, so ln c ≥ 0 changes nothing; K = 0 neither.
    for cap in [
        LogCap::Absolute(0.0),
        LogCap::Absolute(5.0),
        LogCap::BelowMax(0.0),
    ] {
        let r = ncis(
            &users,
            &NcisConfig {
                log_cap: cap,
                ..NcisConfig::default()
            },
        )
        .unwrap();
        assert_eq!(r.value, plain.value, "{cap:?}");
        assert_eq!(r.capped_users, 0);
    }
    // A cap below every weight makes them equal: NCIS = mean L, ESS = n.
    let r = ncis(
        &users,
        &NcisConfig {
            log_cap: LogCap::BelowMax(1e6),
            ..NcisConfig::default()
        },
    )
    .unwrap();
    assert!((r.value - r.mean_length).abs() < 1e-12);
    assert!((r.ess - 60.0).abs() < 1e-9);
    // In between: by hand on log weights.
    let lr = [-1.0, -2.0, -3.0, -9.0];
    let l = [1.0, 2.0, 3.0, 9.0];
    let r = ncis_from_log_weights(&lr, &l, LogCap::BelowMax(2.5)).unwrap();
    // ln c = -1 - 2.5 = -3.5: weights e^{-3.5} for the first three, e^{-9} for the last.
    let (w, w4) = ((-3.5f64).exp(), (-9.0f64).exp());
    let expect = (w * 6.0 + w4 * 9.0) / (3.0 * w + w4);
    assert!((r.value - expect).abs() < 1e-12);
    assert_eq!(r.capped_users, 3);
    assert_eq!(r.log_cap, Some(-3.5));
    let r2 = ncis_from_log_weights(&lr, &l, LogCap::Absolute(-3.5)).unwrap();
    assert_eq!(r.value, r2.value);
}

#[test]
fn errors() {
    let cfg = NcisConfig::default();
    assert!(matches!(ncis(&[], &cfg), Err(EvalError::Empty { .. })));
    assert!(matches!(
        ncis(
            &[
                UserTrajectory::new([0.1]),
                UserTrajectory::new(Vec::<f64>::new())
            ],
            &cfg
        ),
        Err(EvalError::EmptyTrajectory { user: 1 })
    ));
    assert!(matches!(
        ncis(&[UserTrajectory::new([0.1, f64::NAN])], &cfg),
        Err(EvalError::NaNLogit {
            user: 0,
            step: 1,
            ..
        })
    ));
    let with_neg = NcisConfig {
        with_negatives: true,
        ..cfg
    };
    assert!(matches!(
        ncis(&[UserTrajectory::new([0.1, 0.2])], &with_neg),
        Err(EvalError::NegativesMismatch {
            user: 0,
            expected: 2,
            found: 0
        })
    ));
    assert!(matches!(
        ncis(
            &[UserTrajectory::new([0.1, 0.2]).with_negatives([0.3])],
            &with_neg
        ),
        Err(EvalError::NegativesMismatch {
            expected: 2,
            found: 1,
            ..
        })
    ));
    assert!(matches!(
        ncis(
            &[UserTrajectory::new([0.1]).with_negatives([f64::NAN])],
            &with_neg
        ),
        Err(EvalError::NaNLogit {
            kind: "negative",
            ..
        })
    ));
    // Without the flag, missing or NaN negatives are ignored.
    assert!(ncis(
        &[UserTrajectory::new([0.1]).with_negatives([f64::NAN])],
        &cfg
    )
    .is_ok());

    let a = vec![UserTrajectory::new([0.1, 0.2]), UserTrajectory::new([0.3])];
    let b = vec![UserTrajectory::new([0.1, 0.2])];
    assert!(matches!(
        delta_ncis(&a, &b, &cfg),
        Err(EvalError::LengthMismatch { .. })
    ));
    let c = vec![
        UserTrajectory::new([0.1, 0.2]),
        UserTrajectory::new([0.3, 0.4]),
    ];
    assert!(matches!(
        delta_ncis(&a, &c, &cfg),
        Err(EvalError::TrajectoryMismatch {
            user: 1,
            trained: 1,
            init: 2
        })
    ));

    assert!(matches!(
        ncis_from_log_weights(&[0.0, -1.0], &[1.0], LogCap::None),
        Err(EvalError::LengthMismatch { .. })
    ));
    assert!(matches!(
        ncis_from_log_weights(&[f64::NAN], &[1.0], LogCap::None),
        Err(EvalError::NaN { .. })
    ));
    assert!(matches!(
        ncis_from_log_weights(&[f64::INFINITY], &[1.0], LogCap::None),
        Err(EvalError::InvalidParameter { .. })
    ));
    assert!(matches!(
        ncis_from_log_weights(&[0.0], &[-1.0], LogCap::None),
        Err(EvalError::InvalidParameter { .. })
    ));
    for cap in [
        LogCap::BelowMax(-1.0),
        LogCap::BelowMax(f64::NAN),
        LogCap::BelowMax(f64::INFINITY),
        LogCap::Absolute(f64::NAN),
    ] {
        assert!(
            matches!(
                ncis_from_log_weights(&[0.0], &[1.0], cap),
                Err(EvalError::InvalidParameter { .. })
            ),
            "{cap:?}"
        );
    }
    // Every trajectory impossible (a -inf logit each), or a cap of c = 0.
    assert!(matches!(
        ncis(&[UserTrajectory::new([f64::NEG_INFINITY])], &cfg),
        Err(EvalError::ZeroWeights)
    ));
    assert!(matches!(
        ncis_from_log_weights(&[0.0], &[1.0], LogCap::Absolute(f64::NEG_INFINITY)),
        Err(EvalError::ZeroWeights)
    ));
    // One impossible trajectory just gets weight 0.
    let r = ncis(
        &[
            UserTrajectory::new([f64::NEG_INFINITY]),
            UserTrajectory::new([0.0, 0.0]),
        ],
        &cfg,
    )
    .unwrap();
    assert_eq!(r.value, 2.0);
}

#[test]
fn config_round_trips_through_json() {
    let cfg = NcisConfig {
        with_negatives: true,
        log_cap: LogCap::BelowMax(3.0),
        length: TrajectoryLength::Reviews,
    };
    let s = serde_json::to_string(&cfg).unwrap();
    assert_eq!(
        s,
        r#"{"with_negatives":true,"log_cap":{"below_max":3.0},"length":"reviews"}"#
    );
    assert_eq!(serde_json::from_str::<NcisConfig>(&s).unwrap(), cfg);
    assert_eq!(
        serde_json::from_str::<NcisConfig>("{}").unwrap(),
        NcisConfig::default()
    );
    assert!(serde_json::from_str::<NcisConfig>(r#"{"cap":1}"#).is_err());
}
