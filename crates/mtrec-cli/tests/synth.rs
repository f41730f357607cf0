//! `mtrec synth` as a user runs it, then `mtrec prepare` on what it wrote.

mod common;
use common::{mtrec, text};
use std::process::Command;

#[test]
fn synth_writes_a_world_that_prepare_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let world = tmp.path().join("tiny");
    let w = world.to_str().unwrap();
    let o = mtrec(&["synth", "--preset", "tiny", "--out", w, "--seed", "5"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "users 200",
        "items 120",
        "engagements 1,756",
        "categories 10",
    ] {
        assert!(out.contains(want), "missing {want} in:\n{out}");
    }
    let csv = world.join("interactions.csv");
    let next = format!(
        "mtrec prepare --format csv {} --out {}",
        csv.display(),
        tmp.path().join("tiny-prepared").display()
    );
    assert!(out.contains(&next), "missing the next command in:\n{out}");

    // Again without --force: refused, and the world is untouched.
    let before = std::fs::read(&csv).unwrap();
    let o = mtrec(&["synth", "--preset", "tiny", "--out", w, "--seed", "6"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("already exists (pass --force"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&csv).unwrap(), before);
    let o = mtrec(&[
        "synth", "--preset", "tiny", "--out", w, "--seed", "6", "--force",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(std::fs::read(&csv).unwrap(), before);

    // The printed next command works.
    let prepared = tmp.path().join("tiny-prepared");
    let o = mtrec(&[
        "prepare",
        "--format",
        "csv",
        csv.to_str().unwrap(),
        "--out",
        prepared.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = mtrec(&["stats", "--json", prepared.to_str().unwrap()]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["users"], 200);
    assert_eq!(s["items"], 120);
    assert_eq!(s["interactions"], 1_756);
    assert_eq!(s["categories"], 10);
    assert_eq!(s["sequence_min"], 5);
}

#[test]
fn unknown_preset_lists_the_valid_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let o = mtrec(&["synth", "--preset", "books", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("unknown preset 'books'"), "{t}");
    for p in [
        "tiny",
        "electronics-small",
        "books-small",
        "electronics-like",
        "books-like",
    ] {
        assert!(t.contains(p), "{p} not listed in: {t}");
    }
    assert!(!out.exists());
}

#[test]
fn the_files_do_not_depend_on_the_number_of_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |threads: &str| {
        let out = tmp.path().join(format!("t{threads}"));
        let o = Command::new(env!("CARGO_BIN_EXE_mtrec"))
            .args(["synth", "--preset", "tiny", "--out", out.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .env("RAYON_NUM_THREADS", threads)
            .env("POLARS_MAX_THREADS", threads)
            .output()
            .expect("running mtrec");
        assert!(o.status.success(), "{}", text(&o));
        out
    };
    let (one, three) = (run("1"), run("3"));
    for f in [
        "interactions.csv",
        "items.parquet",
        "users.parquet",
        "categories.parquet",
        "rewards.parquet",
        "world.json",
    ] {
        assert_eq!(
            std::fs::read(one.join(f)).unwrap(),
            std::fs::read(three.join(f)).unwrap(),
            "{f} depends on the thread count"
        );
    }
}
