//! The `mtrec` binary as a user runs it. Tests that read `../shared` skip with a notice when it is
//! absent (a user's clone); CI has it.

use std::path::Path;
use std::process::Command;

mod common;
use common::{mtrec, text};

use mtrec_data::testing::shared_path as shared;

fn stats_of(dir: &Path) -> serde_json::Value {
    let o = mtrec(&["stats", "--json", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The counts the issue fixes for the real Amazon 2014 5-core files.
fn check_real(
    name: &str,
    users: u64,
    items: u64,
    interactions: u64,
    categories: u64,
    human: [&str; 4],
) {
    let Some(seq) = shared(&format!("data/amazon2014-5core/{name}.txt")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join(name);
    let o = mtrec(&[
        "prepare",
        "--format",
        "s3rec",
        seq.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = stats_of(&out);
    assert_eq!(s["users"], users);
    assert_eq!(s["items"], items);
    assert_eq!(s["interactions"], interactions);
    assert_eq!(s["categories"], categories);
    assert_eq!(s["sequence_min"], 5);
    let o = mtrec(&["stats", out.to_str().unwrap()]);
    let t = text(&o);
    for h in human {
        assert!(t.contains(h), "missing {h} in:\n{t}");
    }
}

#[test]
fn beauty_stats_match_the_published_counts() {
    check_real(
        "Beauty",
        22_363,
        12_101,
        198_502,
        195,
        ["22,363", "12,101", "198,502", "195"],
    );
}

#[test]
fn sports_stats_match_the_published_counts() {
    check_real(
        "Sports_and_Outdoors",
        35_598,
        18_357,
        296_337,
        959,
        ["35,598", "18,357", "296,337", "959"],
    );
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mtrec-data/tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn prepare_amazon_json_then_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("toy");
    let o = mtrec(&[
        "prepare",
        "--format",
        "amazon-json",
        &fixture("amazon/reviews_Toy_5.json"),
        &fixture("amazon/meta_Toy.json"),
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "7",
        "--test-fraction",
        "0.25",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = stats_of(&out);
    assert_eq!(s["users"], 8);
    assert_eq!(s["test_users"], 2);
    assert_eq!(s["seed"], 7);
    // A second run refuses to overwrite; --force replaces.
    let again = mtrec(&[
        "prepare",
        "--format",
        "amazon-json",
        &fixture("amazon/reviews_Toy_5.json"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(text(&again).contains("--force"));
    let forced = mtrec(&[
        "prepare",
        "--format",
        "amazon-json",
        &fixture("amazon/reviews_Toy_5.json"),
        "--out",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert!(forced.status.success(), "{}", text(&forced));
}

#[test]
fn bad_inputs_fail_cleanly_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let outs = out.to_str().unwrap();

    let bad = tmp.path().join("reviews_Bad_5.json");
    std::fs::write(
        &bad,
        "{\"reviewerID\": \"A\", \"asin\": \"B\", \"unixReviewTime\": 1}\nnot json\n",
    )
    .unwrap();
    let o = mtrec(&[
        "prepare",
        "--format",
        "amazon-json",
        bad.to_str().unwrap(),
        "--out",
        outs,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("reviews_Bad_5.json:2"), "{}", text(&o));

    let o = mtrec(&[
        "prepare",
        "--format",
        "amazon",
        bad.to_str().unwrap(),
        "--out",
        outs,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("unknown format 'amazon'"), "{}", text(&o));

    let gz = tmp.path().join("reviews_Gz_5.json.gz");
    std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4]).unwrap();
    let o = mtrec(&[
        "prepare",
        "--format",
        "amazon-json",
        gz.to_str().unwrap(),
        "--out",
        outs,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("gzip"), "{}", text(&o));

    let empty = tmp.path().join("reviews_Empty_5.json");
    std::fs::write(&empty, "").unwrap();
    let o = mtrec(&[
        "prepare",
        "--format",
        "amazon-json",
        empty.to_str().unwrap(),
        "--out",
        outs,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("empty"), "{}", text(&o));

    let cfg = tmp.path().join("prepare.yaml");
    std::fs::write(&cfg, "seed: 3\ntest_fractoin: 0.2\n").unwrap();
    let o = mtrec(&[
        "prepare",
        "--format",
        "amazon-json",
        &fixture("amazon/reviews_Toy_5.json"),
        "--out",
        outs,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("test_fractoin"), "{}", text(&o));

    // None of the failures left an output or a staging folder behind.
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter()
            .all(|n| !n.starts_with("out") && !n.starts_with(".mtrec")),
        "{left:?}"
    );

    let o = mtrec(&["stats", tmp.path().join("missing").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("mtrec prepare"), "{}", text(&o));
}

#[test]
fn yaml_config_sets_prepare_options() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("prepare.yaml");
    std::fs::write(
        &cfg,
        "seed: 11\ntest_fraction: 0.5\nmax_history: 3\nnegatives: popularity\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = mtrec(&[
        "prepare",
        "--format",
        "amazon-json",
        &fixture("amazon/reviews_Toy_5.json"),
        "--out",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--seed",
        "12",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let p = &manifest["rules"]["prepare"];
    assert_eq!(p["seed"], 12, "flags override the file");
    assert_eq!(p["test_fraction"], 0.5);
    assert_eq!(p["max_history"], 3);
    assert_eq!(p["negatives"], "popularity");
}

#[test]
fn download_works_from_a_local_mirror_and_rejects_truncated_files() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipping: curl not installed");
        return;
    }
    let mirror = tempfile::tempdir().unwrap();
    for name in ["reviews_Books_5.json.gz", "meta_Books.json.gz"] {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, b"{}\n").unwrap();
        std::fs::write(mirror.path().join(name), enc.finish().unwrap()).unwrap();
    }
    let cache = tempfile::tempdir().unwrap();
    let base = format!("file://{}", mirror.path().display());
    let o = mtrec(&[
        "download",
        "--dataset",
        "books",
        "--dir",
        cache.path().to_str().unwrap(),
        "--base-url",
        &base,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(cache.path().join("reviews_Books_5.json.gz").exists());
    assert!(cache.path().join("meta_Books.json.gz").exists());

    // A truncated file is refused and not left in place.
    std::fs::write(
        mirror.path().join("reviews_Books_5.json.gz"),
        [0x1f, 0x8b, 8, 0],
    )
    .unwrap();
    let cache2 = tempfile::tempdir().unwrap();
    let o = mtrec(&[
        "download",
        "--dataset",
        "books",
        "--dir",
        cache2.path().to_str().unwrap(),
        "--base-url",
        &base,
    ]);
    assert!(!o.status.success());
    assert!(!cache2.path().join("reviews_Books_5.json.gz").exists());
    let o = mtrec(&[
        "download",
        "--dataset",
        "cars",
        "--dir",
        cache2.path().to_str().unwrap(),
    ]);
    assert!(text(&o).contains("unknown dataset"), "{}", text(&o));
}
