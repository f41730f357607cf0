//! The simulated world, measured from the outside: determinism, counts, the output files, the path
//! through `prepare`, and the mechanisms of the model (appeal vs quality, O1, O2, fatigue), each shown
//! against a world where that mechanism is switched off.

use std::path::Path;
use std::sync::OnceLock;

use mtrec_data::{prepare_files, Format, PrepareConfig, ReadOptions};
use mtrec_synth::{files, SynthConfig, SynthError, World};
use polars::prelude::*;

fn cfg(preset: &str, seed: u64) -> SynthConfig {
    SynthConfig::preset(preset, seed).unwrap()
}

/// The electronics-small world of the default seed, shared by the mechanism tests.
fn base() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| World::generate(&cfg("electronics-small", 1234)).unwrap())
}

/// electronics-small with one change to the model (a small pilot keeps the calibration quick; the
/// exact total then comes from censoring).
fn variant(change: impl FnOnce(&mut mtrec_synth::Params)) -> World {
    let mut c = cfg("electronics-small", 1234);
    c.params.pilot_users = 1_000;
    change(&mut c.params);
    World::generate(&c).unwrap()
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            r[k] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}

fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

fn read_parquet(path: &Path) -> DataFrame {
    ParquetReader::new(std::fs::File::open(path).unwrap())
        .finish()
        .unwrap()
}

#[test]
fn same_seed_same_bytes_other_seed_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    World::generate(&cfg("tiny", 7))
        .unwrap()
        .write(&a, false)
        .unwrap();
    World::generate(&cfg("tiny", 7))
        .unwrap()
        .write(&b, false)
        .unwrap();
    World::generate(&cfg("tiny", 8))
        .unwrap()
        .write(&c, false)
        .unwrap();
    for f in [
        files::INTERACTIONS,
        files::ITEMS,
        files::USERS,
        files::CATEGORIES,
        files::REWARDS,
        files::WORLD,
    ] {
        let x = std::fs::read(a.join(f)).unwrap();
        assert!(!x.is_empty());
        assert_eq!(x, std::fs::read(b.join(f)).unwrap(), "{f} differs");
        assert_ne!(x, std::fs::read(c.join(f)).unwrap(), "{f} is the same");
    }
    let mut names: Vec<_> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "categories.parquet",
            "interactions.csv",
            "items.parquet",
            "rewards.parquet",
            "users.parquet",
            "world.json"
        ]
    );
}

#[test]
fn the_number_of_threads_does_not_change_the_world() {
    let mut c = cfg("tiny", 11);
    c.params.pilot_users = 60; // exercise the margin and censoring too
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| World::generate(&c).unwrap())
    };
    let (one, three) = (run(1), run(3));
    assert_eq!(one.all_engagements(), three.all_engagements());
    assert_eq!(one.users(), three.users());
    assert_eq!(one.calibration(), three.calibration());
}

fn check_counts(w: &World) {
    let c = w.config();
    let s = w.summary();
    assert_eq!(s.users, c.users);
    assert_eq!(s.engagements, c.engagements);
    assert_eq!(s.items_engaged, c.items, "every item is in the log");
    assert_eq!(s.categories_engaged, c.categories);
    assert_eq!(s.onboarding_engagements, c.items);
    assert!(s.min_length >= 5);
    for u in 1..=c.users as u32 {
        let log = w.engagements(u);
        assert!(log.len() >= 5, "user {u} has {} engagements", log.len());
        assert!(log.windows(2).all(|p| p[0].time < p[1].time), "user {u}");
        let mut items: Vec<u32> = log.iter().map(|e| e.item).collect();
        items.sort_unstable();
        items.dedup();
        assert_eq!(items.len(), log.len(), "user {u} engaged an item twice");
        for (t, e) in log.iter().enumerate() {
            assert_eq!(e.category, w.item(e.item).category);
            assert!(!e.onboarding || t == 0);
        }
    }
}

#[test]
fn counts_match_the_preset_and_every_user_has_five() {
    check_counts(&World::generate(&cfg("tiny", 1234)).unwrap());
    let w = base();
    check_counts(w);
    let s = w.summary();
    // Heavy-tailed lengths: median below the mean, a long right tail.
    assert!(s.median_length < 8, "{s:?}");
    assert!(s.max_length as f64 > 6.0 * s.mean_length, "{s:?}");
    // The whole world was the pilot: calibration alone hits the total, within 0.1%.
    let cal = w.calibration();
    assert_eq!(cal.pilot_users, 4_000);
    assert!(
        cal.censored_engagements as f64 <= 0.001 * 35_118.0,
        "{cal:?}"
    );
}

#[test]
fn the_output_files_hold_the_world() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("w");
    let w = World::generate(&cfg("tiny", 3)).unwrap();
    w.write(&out, false).unwrap();

    let csv = std::fs::read_to_string(out.join(files::INTERACTIONS)).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("user_id,item_id,timestamp,category"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1_756);
    let e = w.engagements(1)[0];
    assert_eq!(rows[0], format!("1,{},{},{}", e.item, e.time, e.category));

    let rewards = read_parquet(&out.join(files::REWARDS));
    assert_eq!(rewards.height(), 1_756);
    let r: Vec<f32> = rewards
        .column("true_reward")
        .unwrap()
        .f32()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let truth: Vec<f32> = w.all_engagements().iter().map(|e| e.reward).collect();
    assert_eq!(r, truth);
    let sat = rewards.column("satisfied").unwrap().bool().unwrap();
    assert_eq!(
        sat.sum().unwrap() as usize,
        w.all_engagements().iter().filter(|e| e.satisfied).count()
    );
    for name in [
        "user_id",
        "step",
        "item_id",
        "category",
        "expected_reward",
        "onboarding",
    ] {
        assert!(rewards.column(name).is_ok(), "rewards lacks {name}");
    }

    let items = read_parquet(&out.join(files::ITEMS));
    assert_eq!(items.height(), 120);
    let q: Vec<f64> = items
        .column("quality")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(q, w.items().iter().map(|i| i.quality).collect::<Vec<_>>());
    let engaged: u32 = items
        .column("engagements")
        .unwrap()
        .u32()
        .unwrap()
        .sum()
        .unwrap();
    assert_eq!(engaged, 1_756);
    assert_eq!(read_parquet(&out.join(files::USERS)).height(), 200);
    assert_eq!(read_parquet(&out.join(files::CATEGORIES)).height(), 10);

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(files::WORLD)).unwrap()).unwrap();
    assert_eq!(json["preset"], "tiny");
    assert_eq!(json["seed"], 3);
    assert_eq!(json["counts"]["engagements"], 1_756);
    assert_eq!(json["params"]["slate_size"], 10);
    assert!(json["calibration"]["base_hazard"].as_f64().unwrap() > 0.0);

    // An existing folder is kept unless replacing it is asked for.
    let err = w.write(&out, false).unwrap_err();
    assert!(matches!(err, SynthError::Exists { .. }));
    assert!(err.to_string().contains("--force"), "{err}");
    World::generate(&cfg("tiny", 4))
        .unwrap()
        .write(&out, true)
        .unwrap();
    let again = std::fs::read_to_string(out.join(files::INTERACTIONS)).unwrap();
    assert_ne!(again, csv);
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no staging left"
    );
}

#[test]
fn prepare_reads_the_log_and_keeps_the_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("w");
    let w = World::generate(&cfg("tiny", 1234)).unwrap();
    w.write(&out, false).unwrap();
    let ds = prepare_files(
        Format::Csv,
        &[out.join(files::INTERACTIONS)],
        &ReadOptions::default(),
        &PrepareConfig::default(),
    )
    .unwrap();
    assert_eq!(ds.n_users(), 200);
    assert_eq!(ds.n_items(), 120);
    assert_eq!(ds.n_categories(), 10);
    assert_eq!(ds.n_interactions(), 1_756);
    for u in 1..=200u32 {
        assert_eq!(ds.user_key(u as usize), u.to_string());
        let seq: Vec<u32> = w.engagements(u).iter().map(|e| e.item).collect();
        assert_eq!(ds.sequence(u as usize), &seq[..], "user {u}");
    }
    for id in 1..=120u32 {
        assert_eq!(ds.item_key(id as usize), id.to_string());
        let c = ds.item_category()[id as usize];
        assert_eq!(ds.category_key(c as usize), w.item(id).category.to_string());
        assert_eq!(c, w.item(id).category);
    }
}

/// (appeal or quality, log(1 + engagements chosen from a slate)) per item, and the engagements'
/// (attribute, reward).
fn item_and_reward_correlations(w: &World, attr: impl Fn(&mtrec_synth::Item) -> f64) -> (f64, f64) {
    let mut chosen = vec![0.0f64; w.items().len()];
    let (mut xs, mut rs) = (Vec::new(), Vec::new());
    for e in w.all_engagements() {
        if !e.onboarding {
            chosen[e.item as usize - 1] += 1.0;
        }
        xs.push(attr(w.item(e.item)));
        rs.push(e.reward as f64);
    }
    let a: Vec<f64> = w.items().iter().map(&attr).collect();
    let c: Vec<f64> = chosen.iter().map(|n| (1.0 + n).ln()).collect();
    (pearson(&a, &c), pearson(&xs, &rs))
}

#[test]
fn appeal_wins_the_click_and_quality_the_reward() {
    let w = base();
    let (appeal_engaged, appeal_reward) = item_and_reward_correlations(w, |i| i.appeal);
    let (quality_engaged, quality_reward) = item_and_reward_correlations(w, |i| i.quality);
    eprintln!(
        "appeal: engaged {appeal_engaged:.3}, reward {appeal_reward:.3}; \
         quality: engaged {quality_engaged:.3}, reward {quality_reward:.3}"
    );
    assert!(appeal_engaged > 0.3, "{appeal_engaged}");
    assert!(appeal_engaged > 5.0 * appeal_reward.abs());
    assert!(quality_reward > 0.3, "{quality_reward}");
    // Quality is invisible before engaging: it does not bring engagements.
    assert!(quality_engaged.abs() < 0.1, "{quality_engaged}");
}

#[test]
fn the_reward_is_bimodal() {
    let r: Vec<f32> = base().all_engagements().iter().map(|e| e.reward).collect();
    let count = |lo: f32, hi: f32| r.iter().filter(|&&x| x >= lo && x < hi).count();
    let (dis, mid, sat) = (count(-1.25, -0.75), count(-0.25, 0.25), count(0.75, 1.25));
    eprintln!("reward near -1: {dis}, near 0: {mid}, near +1: {sat}");
    assert!(mid * 2 < dis.min(sat), "no dip between the modes");
}

/// P(next engagement in the same category | this one satisfied) minus the same after a
/// disappointment.
fn same_category_gap(w: &World) -> (f64, f64) {
    let (mut n, mut same) = ([0usize; 2], [0usize; 2]);
    for u in 1..=w.n_users() as u32 {
        for p in w.engagements(u).windows(2) {
            let k = p[0].satisfied as usize;
            n[k] += 1;
            same[k] += (p[0].category == p[1].category) as usize;
        }
    }
    (same[1] as f64 / n[1] as f64, same[0] as f64 / n[0] as f64)
}

#[test]
fn o1_a_disappointment_turns_her_from_the_category() {
    let (after_sat, after_dis) = same_category_gap(base());
    let (off_sat, off_dis) = same_category_gap(&variant(|p| p.interest_rate = 0.0));
    eprintln!(
        "same category next: after satisfied {after_sat:.3}, after disappointed {after_dis:.3}; \
         without O1: {off_sat:.3} vs {off_dis:.3}"
    );
    assert!(after_sat > after_dis + 0.15);
    // Without the interest update, only the favourites' higher satisfaction remains (a smaller gap).
    assert!(
        (after_sat - after_dis) > (off_sat - off_dis) + 0.08,
        "the interest update adds little"
    );
}

fn reward_length_correlation(w: &World) -> f64 {
    let (mut mean, mut len) = (Vec::new(), Vec::new());
    for (u, t) in w.users().iter().enumerate() {
        let log = w.engagements(u as u32 + 1);
        mean.push(log.iter().map(|e| e.reward as f64).sum::<f64>() / log.len() as f64);
        len.push(t.length as f64);
    }
    spearman(&mean, &len)
}

#[test]
fn o2_satisfied_users_stay_longer() {
    let on = reward_length_correlation(base());
    let off = reward_length_correlation(&variant(|p| p.stop_sensitivity = 0.0));
    eprintln!("spearman(mean reward, length): {on:.3}; without O2: {off:.3}");
    assert!(on > 0.25, "{on}");
    // Without it, fatigue makes long users' mean reward lower: the link is gone or reversed.
    assert!(off < 0.05 && on > off + 0.3, "{on} vs {off}");
}

fn mean_reward_by_step(w: &World, steps: usize) -> Vec<f64> {
    let (mut sum, mut n) = (vec![0.0; steps], vec![0usize; steps]);
    for u in 1..=w.n_users() as u32 {
        for (t, e) in w.engagements(u).iter().enumerate().take(steps) {
            sum[t] += e.reward as f64;
            n[t] += 1;
        }
    }
    sum.iter().zip(&n).map(|(s, &k)| s / k as f64).collect()
}

fn slope(y: &[f64]) -> f64 {
    let x: Vec<f64> = (0..y.len()).map(|i| i as f64).collect();
    pearson(&x, y) * {
        let n = y.len() as f64;
        let sd = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / n;
            (v.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / n).sqrt()
        };
        sd(y) / sd(&x)
    }
}

#[test]
fn fatigue_lowers_the_reward_along_the_sequence() {
    // Steps 1..=10 (0-based; step 0 of many users is an onboarding item, not a choice).
    let on = mean_reward_by_step(base(), 11)[1..].to_vec();
    let off = mean_reward_by_step(&variant(|p| p.fatigue_scale = 0.0), 11)[1..].to_vec();
    eprintln!(
        "mean reward by step 1..10: {on:.3?} (slope {:.4})\nwithout fatigue: {off:.3?} (slope {:.4})",
        slope(&on),
        slope(&off)
    );
    let head = on[..3].iter().sum::<f64>() / 3.0;
    let tail = on[7..].iter().sum::<f64>() / 3.0;
    assert!(head > tail + 0.1, "{head} vs {tail}");
    assert!(slope(&on) < -0.015, "{}", slope(&on));
    assert!(
        slope(&on) < slope(&off) - 0.02,
        "{} vs {}",
        slope(&on),
        slope(&off)
    );
}
