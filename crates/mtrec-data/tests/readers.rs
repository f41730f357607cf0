//! Readers against fixtures: our own Amazon 2014 raw files, and the real DIN/DIEN/S3-Rec files in
//! `../shared/data` (skipped with a notice when that folder is absent, as in a user's clone).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use mtrec_data::interactions::cols;
use mtrec_data::{
    prepare_files, read, CategoryRule, DataError, Format, PrepareConfig, ReadOptions,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

use mtrec_data::testing::shared_path as shared;

fn amazon_inputs() -> Vec<PathBuf> {
    vec![
        fixture("amazon/reviews_Toy_5.json"),
        fixture("amazon/meta_Toy.json"),
    ]
}

/// The own Amazon fixture, prepared.
fn toy(opts: &ReadOptions, cfg: &PrepareConfig) -> mtrec_data::PreparedDataset {
    prepare_files(Format::AmazonJson, &amazon_inputs(), opts, cfg).unwrap()
}

fn categories(ds: &mtrec_data::PreparedDataset) -> HashMap<String, String> {
    (1..=ds.n_items())
        .map(|i| {
            (
                ds.item_key(i).to_owned(),
                ds.category_key(ds.item_category()[i] as usize).to_owned(),
            )
        })
        .collect()
}

#[test]
fn amazon_json_with_python_literal_meta_and_both_category_rules() {
    let din = toy(&ReadOptions::default(), &PrepareConfig::default());
    assert_eq!(din.n_users(), 8);
    assert_eq!(din.n_interactions(), 47);
    let cats = categories(&din);
    assert_eq!(cats["B000TOY001"], "Cases");
    assert_eq!(cats["B000TOY004"], "Electronics");
    assert_eq!(cats["B000TOY005"], "default_cat");
    assert!(!cats.contains_key("B000UNREVIEWED"));
    assert_eq!(
        din.manifest.rules.category_rule,
        Some(CategoryRule::LastOfLast)
    );
    assert_eq!(din.manifest.inputs.len(), 2);
    assert_eq!(din.manifest.inputs[0].sha256.len(), 64);

    let opts = ReadOptions {
        category_rule: CategoryRule::LastOfFirst,
        ..ReadOptions::default()
    };
    let dien = toy(&opts, &PrepareConfig::default());
    let cats = categories(&dien);
    assert_eq!(cats["B000TOY001"], "Tablets");
    assert_eq!(cats["B000TOY004"], "Cameras");
    assert!(dien.n_categories() < din.n_categories());
}

#[test]
fn amazon_sequences_are_in_time_then_file_order() {
    let table = read(
        Format::AmazonJson,
        &amazon_inputs(),
        &ReadOptions::default(),
    )
    .unwrap();
    let df = table.df();
    let users = df.column(cols::USER).unwrap().str().unwrap().clone();
    let items = df.column(cols::ITEM).unwrap().str().unwrap().clone();
    let times = df.column(cols::TIME).unwrap().i64().unwrap().clone();
    let lines = df.column(cols::LINE).unwrap().u64().unwrap().clone();
    // Expected order per user: by (time, line).
    let mut per_user: HashMap<String, Vec<(i64, u64, String)>> = HashMap::new();
    for k in 0..df.height() {
        per_user
            .entry(users.get(k).unwrap().to_owned())
            .or_default()
            .push((
                times.get(k).unwrap(),
                lines.get(k).unwrap(),
                items.get(k).unwrap().to_owned(),
            ));
    }
    let ds = mtrec_data::prepare(&table, &PrepareConfig::default(), vec![]).unwrap();
    for u in 1..=ds.n_users() {
        let mut rows = per_user[ds.user_key(u)].clone();
        rows.sort();
        let expected: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        let got: Vec<&str> = ds
            .sequence(u)
            .iter()
            .map(|&i| ds.item_key(i as usize))
            .collect();
        assert_eq!(got, expected, "user {}", ds.user_key(u));
    }
}

#[test]
fn gzip_inputs_read_like_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut gz_inputs = Vec::new();
    for p in amazon_inputs() {
        let out = dir
            .path()
            .join(format!("{}.gz", p.file_name().unwrap().to_string_lossy()));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&std::fs::read(&p).unwrap()).unwrap();
        std::fs::write(&out, enc.finish().unwrap()).unwrap();
        gz_inputs.push(out);
    }
    let cfg = PrepareConfig::default();
    let a = toy(&ReadOptions::default(), &cfg);
    let b = prepare_files(
        Format::AmazonJson,
        &gz_inputs,
        &ReadOptions::default(),
        &cfg,
    )
    .unwrap();
    assert_eq!(a.flat_items(), b.flat_items());
    assert_eq!(a.flat_negatives(), b.flat_negatives());
    assert_eq!(categories(&a), categories(&b));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn malformed_review_lines_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"reviewerID": "A1", "asin": "B1", "unixReviewTime": 5}"#;
    let cases = [
        (
            format!("{good}\n{good}\n{{\"reviewerID\": \"A2\", \"asin\": \n"),
            3,
            None,
        ),
        (
            format!("{good}\n\n{{\"reviewerID\": \"A2\", \"unixReviewTime\": 1}}\n"),
            3,
            Some("asin"),
        ),
        (
            format!(
                "{good}\n{{\"reviewerID\": \"A2\", \"asin\": \"B\", \"unixReviewTime\": \"x\"}}\n"
            ),
            2,
            Some("unixReviewTime"),
        ),
    ];
    for (k, (text, line, field)) in cases.iter().enumerate() {
        let p = write(dir.path(), &format!("reviews_bad{k}_5.json"), text);
        let err = read(
            Format::AmazonJson,
            std::slice::from_ref(&p),
            &ReadOptions::default(),
        )
        .unwrap_err();
        match &err {
            DataError::Parse {
                path,
                line: l,
                field: f,
                ..
            } => {
                assert_eq!(path, &p);
                assert_eq!(l, line, "{err}");
                assert_eq!(f.as_deref(), *field, "{err}");
            }
            other => panic!("case {k}: expected a parse error, got {other}"),
        }
    }
}

#[test]
fn malformed_meta_line_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let reviews = write(
        dir.path(),
        "reviews_X_5.json",
        "{\"reviewerID\": \"A1\", \"asin\": \"B1\", \"unixReviewTime\": 5}\n",
    );
    let meta = write(
        dir.path(),
        "meta_X.json",
        "{'asin': 'B1', 'categories': [['a']]}\n{'asin': 'B2', 'categories': [['a', 'b']}\n",
    );
    let err = read(
        Format::AmazonJson,
        &[reviews, meta.clone()],
        &ReadOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("meta_X.json:2"), "{msg}");
    assert!(msg.contains("categories"), "{msg}");
}

#[test]
fn empty_and_unknown_inputs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "reviews_E_5.json", "");
    let err = read(Format::AmazonJson, &[empty], &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }), "{err}");
    let blank = write(
        dir.path(),
        "log.csv",
        "user_id,item_id,timestamp,category\n",
    );
    let err = read(Format::Csv, &[blank], &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }), "{err}");
    assert!("amazon"
        .parse::<Format>()
        .unwrap_err()
        .to_string()
        .contains("amazon-json"));
    let err = read(
        Format::S3rec,
        &[dir.path().join("nope.txt")],
        &ReadOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope.txt"), "{err}");
}

#[test]
fn generic_csv_with_custom_columns_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "log.csv",
        "who,what,when\nu1,a,3\nu1,b,1\nu2,a,2\nu2,c,2\n",
    );
    let opts = ReadOptions {
        columns: mtrec_data::ColumnMap {
            user: "who".into(),
            item: "what".into(),
            time: Some("when".into()),
            category: None,
        },
        ..ReadOptions::default()
    };
    let ds = prepare_files(
        Format::Csv,
        std::slice::from_ref(&p),
        &opts,
        &PrepareConfig::default(),
    )
    .unwrap();
    let u1 = (1..=2).find(|&u| ds.user_key(u) == "u1").unwrap();
    let seq: Vec<&str> = ds
        .sequence(u1)
        .iter()
        .map(|&i| ds.item_key(i as usize))
        .collect();
    assert_eq!(seq, ["b", "a"]);
    assert_eq!(ds.n_categories(), 1);

    let missing = ReadOptions::default(); // expects user_id
    let err = read(Format::Csv, &[p], &missing).unwrap_err();
    assert!(
        matches!(err, DataError::MissingColumn { ref column, .. } if column == "user_id"),
        "{err}"
    );

    let bad_time = write(dir.path(), "bad.csv", "who,what,when\nu1,a,3\nu1,b,soon\n");
    let err = read(Format::Csv, &[bad_time], &opts).unwrap_err();
    match err {
        DataError::Parse { line, field, .. } => {
            assert_eq!(line, 3);
            assert_eq!(field.as_deref(), Some("when"));
        }
        other => panic!("{other}"),
    }
    let gap = write(dir.path(), "gap.csv", "who,what,when\nu1,a,3\n,b,4\n");
    let err = read(Format::Csv, &[gap], &opts).unwrap_err();
    assert!(err.to_string().contains("gap.csv:3: field 'who'"), "{err}");
}

#[test]
fn parquet_logs_round_trip() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.parquet");
    let mut df = df!("user_id" => [1i64, 1, 2, 2, 2], "item_id" => [10i64, 11, 10, 12, 13],
        "timestamp" => [1i64, 2, 1, 2, 3], "category" => ["x", "y", "x", "y", "z"])
    .unwrap();
    ParquetWriter::new(std::fs::File::create(&p).unwrap())
        .finish(&mut df)
        .unwrap();
    let ds = prepare_files(
        Format::Parquet,
        &[p],
        &ReadOptions::default(),
        &PrepareConfig::default(),
    )
    .unwrap();
    assert_eq!(ds.n_users(), 2);
    assert_eq!(ds.n_items(), 4);
    assert_eq!(ds.n_categories(), 3);
}

#[test]
fn din_remap_csv_fixture() {
    let Some(p) = shared("data/fixtures/rechub-amazon-sample/amazon_electronics_sample.csv") else {
        return;
    };
    let text = std::fs::read_to_string(&p).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let users: HashSet<&str> = rows.iter().map(|r| r[0]).collect();
    let items: HashSet<&str> = rows.iter().map(|r| r[1]).collect();
    let ds = prepare_files(
        Format::DinCsv,
        &[p],
        &ReadOptions::default(),
        &PrepareConfig::default(),
    )
    .unwrap();
    assert_eq!(ds.n_interactions(), rows.len());
    assert_eq!(ds.n_users(), users.len());
    assert_eq!(ds.n_items(), items.len());
    // Numeric keys keep numeric order.
    let keys: Vec<u64> = (1..=ds.n_items())
        .map(|i| ds.item_key(i).parse().unwrap())
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn din_csv_rejects_the_books_sample_without_categories() {
    let Some(p) = shared("data/fixtures/rechub-amazon-sample/amazon_books_sample.csv") else {
        return;
    };
    let err = read(Format::DinCsv, &[p], &ReadOptions::default()).unwrap_err();
    assert!(
        matches!(err, DataError::MissingColumn { ref column, .. } if column == "cate_id"),
        "{err}"
    );
}

#[test]
fn dien_reviews_info_and_sample_files() {
    let Some(dir) = shared("data/fixtures/dien-books-tiny") else {
        return;
    };
    let ri = read(
        Format::Dien,
        &[dir.join("reviews-info"), dir.join("item-info")],
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(ri.len(), 1000);
    let users: HashSet<&str> = ri
        .df()
        .column(cols::USER)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    // CRLF must not leak into keys.
    assert!(users.iter().all(|u| !u.ends_with('\r')));

    let samples = read(
        Format::Dien,
        &[dir.join("local_train"), dir.join("local_test")],
        &ReadOptions::default(),
    )
    .unwrap();
    // local_test holds one positive line per user; local_train one more.
    let text = std::fs::read_to_string(dir.join("local_test")).unwrap();
    let pos_users: HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("1\t"))
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    let got: HashSet<&str> = samples
        .df()
        .column(cols::USER)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert!(pos_users.iter().all(|u| got.contains(u)));
    let cats: HashSet<&str> = samples
        .df()
        .column(cols::CATEGORY)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert!(cats.iter().all(|c| !c.ends_with('\r')), "{cats:?}");
    // The folder form reads the same files.
    let folder = read(
        Format::Dien,
        std::slice::from_ref(&dir),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(folder.len(), ri.len());
}

#[test]
fn dien_sample_lines_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "local_test",
        "1\tu1\tm3\tc\tm1\u{2}m2\tc\u{2}c\r\n1\tu1\tm2\tc\tm9\tc\r\n",
    );
    let err = read(Format::Dien, &[p], &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("local_test:2"), "{err}");
    let q = write(dir.path(), "local_train", "1\tu1\tm3\tc\tm1\u{2}m2\tc\n");
    let err = read(Format::Dien, &[q], &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("field 'hist_cats'"), "{err}");
}

#[test]
fn s3rec_unknown_item_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let seq = write(dir.path(), "Toy.txt", "1 1 2 3\n2 2 3 7\n");
    write(
        dir.path(),
        "Toy_item2attributes.json",
        r#"{"1": [5, 6], "2": [6], "3": []}"#,
    );
    let err = read(Format::S3rec, &[seq], &ReadOptions::default()).unwrap_err();
    match err {
        DataError::UnknownItem { line, item, .. } => {
            assert_eq!(line, 2);
            assert_eq!(item, "7");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn prepared_dataset_round_trips_and_writes_nothing_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ds = toy(&ReadOptions::default(), &PrepareConfig::default());
    let out = dir.path().join("prepared");
    ds.save(&out, false).unwrap();
    let back = mtrec_data::PreparedDataset::load(&out).unwrap();
    assert_eq!(back.flat_items(), ds.flat_items());
    assert_eq!(back.flat_negatives(), ds.flat_negatives());
    assert_eq!(back.item_category(), ds.item_category());
    assert_eq!(back.manifest, ds.manifest);
    assert_eq!(back.stats(), ds.stats());
    // Refuses to overwrite without permission and leaves the old folder intact.
    assert!(ds.save(&out, false).is_err());
    assert!(out.join("manifest.json").exists());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn same_seed_same_dataset_other_seed_other_negatives() {
    let cfg = PrepareConfig::default();
    let a = toy(&ReadOptions::default(), &cfg);
    let b = toy(&ReadOptions::default(), &cfg);
    assert_eq!(a.flat_negatives(), b.flat_negatives());
    let c = toy(&ReadOptions::default(), &PrepareConfig { seed: 99, ..cfg });
    assert_ne!(a.flat_negatives(), c.flat_negatives());
}

#[test]
fn popularity_negatives_avoid_only_the_step_positive() {
    let cfg = PrepareConfig {
        negatives: mtrec_data::NegativeRule::Popularity,
        ..PrepareConfig::default()
    };
    let ds = toy(&ReadOptions::default(), &cfg);
    for (p, n) in ds.flat_items().iter().zip(ds.flat_negatives()) {
        assert_ne!(p, n);
    }
}

#[test]
fn manifest_lists_every_file_a_reader_used() {
    let dir = tempfile::tempdir().unwrap();
    let seq = write(dir.path(), "Toy.txt", "1 1 2\n2 3 4\n");
    write(
        dir.path(),
        "Toy_item2attributes.json",
        r#"{"1": [5, 6], "2": [6], "3": [], "4": [7]}"#,
    );
    write(dir.path(), "unrelated.txt", "not read");
    let ds = prepare_files(
        Format::S3rec,
        &[seq],
        &ReadOptions::default(),
        &PrepareConfig::default(),
    )
    .unwrap();
    let names: Vec<String> = ds
        .manifest
        .inputs
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["Toy.txt", "Toy_item2attributes.json"]);
    // Item "3" has no attribute: the default category.
    assert_eq!(ds.n_categories(), 3);
    assert_eq!(
        ds.category_key(ds.item_category()[3] as usize),
        "default_cat"
    );
}
