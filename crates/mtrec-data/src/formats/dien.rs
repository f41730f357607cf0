//! DIEN's text files (Zhou et al. 2019, `mouna99/dien` scripts): either the joined raw form
//! `reviews-info` (`reviewerID \t asin \t rating \t unixtime`) with `item-info` (`asin \t category`),
//! or the sample files `local_train` / `local_test`
//! (`label \t uid \t mid \t cat \t hist_mids \t hist_cats`, histories separated by the byte 0x02).
//! CRLF line endings are accepted everywhere (DIEN's `local_test` has them).
//!
//! From sample files a user's sequence is rebuilt from her positive lines: the history of the longest
//! one plus its target; shorter positive lines must agree with it. DIEN's own negative lines are not
//! kept: negatives are drawn again by `prepare`, with one rule for every format.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::interactions::{Interactions, RowsBuilder, DEFAULT_CATEGORY};
use crate::io::for_each_line;

const HIST_SEP: char = '\u{2}';

/// Reads DIEN files; a folder among the inputs stands for the DIEN files inside it.
pub fn read_dien(inputs: &[PathBuf]) -> Result<Interactions> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            for name in ["reviews-info", "item-info", "local_train", "local_test"] {
                let f = p.join(name);
                if f.exists() {
                    files.push(f);
                }
            }
        } else {
            files.push(p.clone());
        }
    }
    let named = |n: &str| -> Vec<PathBuf> {
        files
            .iter()
            .filter(|f| {
                f.file_name()
                    .map(|x| x.to_string_lossy().starts_with(n))
                    .unwrap_or(false)
            })
            .cloned()
            .collect()
    };
    let reviews = named("reviews-info");
    let item_info = named("item-info");
    let samples: Vec<PathBuf> = named("local_");
    if !reviews.is_empty() {
        read_reviews_info(&reviews, &item_info)
    } else if !samples.is_empty() {
        read_samples(&samples)
    } else {
        Err(DataError::Invalid(format!(
            "dien: expected files named reviews-info (+ item-info) or local_train/local_test, got: {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

fn split_fields<'a>(
    path: &Path,
    line: u64,
    text: &'a str,
    n: usize,
    names: &[&str],
) -> Result<Vec<&'a str>> {
    let fields: Vec<&str> = text.split('\t').collect();
    if fields.len() < n {
        return Err(DataError::parse(
            path,
            line,
            names.get(fields.len()).copied(),
            format!(
                "expected {n} tab-separated fields ({}), found {}",
                names.join(", "),
                fields.len()
            ),
        ));
    }
    Ok(fields)
}

fn read_reviews_info(reviews: &[PathBuf], item_info: &[PathBuf]) -> Result<Interactions> {
    struct Row {
        user: String,
        item: String,
        time: i64,
        source: u32,
        line: u64,
    }
    let mut sources = Vec::new();
    let mut raw: Vec<Row> = Vec::new();
    for path in reviews {
        let source = sources.len() as u32;
        sources.push(path.clone());
        let names = ["reviewerID", "asin", "rating", "unixtime"];
        for_each_line(path, |line, text| {
            if text.trim().is_empty() {
                return Ok(());
            }
            let f = split_fields(path, line, text, 4, &names)?;
            let time: i64 = f[3].trim().parse().map_err(|_| {
                DataError::parse(
                    path,
                    line,
                    Some("unixtime"),
                    format!("not an integer: '{}'", f[3]),
                )
            })?;
            for (value, field) in [(f[0], "reviewerID"), (f[1], "asin")] {
                if value.is_empty() {
                    return Err(DataError::parse(path, line, Some(field), "empty value"));
                }
            }
            raw.push(Row {
                user: f[0].to_owned(),
                item: f[1].to_owned(),
                time,
                source,
                line,
            });
            Ok(())
        })?;
    }
    let mut category_of: HashMap<String, String> = HashMap::new();
    for path in item_info {
        sources.push(path.clone());
        for_each_line(path, |line, text| {
            if text.trim().is_empty() {
                return Ok(());
            }
            let f = split_fields(path, line, text, 2, &["asin", "category"])?;
            category_of
                .entry(f[0].to_owned())
                .or_insert_with(|| f[1].to_owned());
            Ok(())
        })?;
    }
    let mut rows = RowsBuilder::default();
    for r in &raw {
        let cat = category_of
            .get(&r.item)
            .map(String::as_str)
            .unwrap_or(DEFAULT_CATEGORY);
        rows.push(&r.user, &r.item, cat, r.time, r.source, r.line);
    }
    rows.finish(sources, "dien")
}

struct Positive {
    seq: Vec<(String, String)>,
    source: u32,
    line: u64,
}

fn read_samples(samples: &[PathBuf]) -> Result<Interactions> {
    let names = ["label", "uid", "mid", "cat", "hist_mids", "hist_cats"];
    let mut by_user: HashMap<String, Vec<Positive>> = HashMap::new();
    let mut user_order: Vec<String> = Vec::new();
    for (source, path) in samples.iter().enumerate() {
        for_each_line(path, |line, text| {
            if text.trim().is_empty() {
                return Ok(());
            }
            let f = split_fields(path, line, text, 6, &names)?;
            match f[0] {
                "1" => {}
                "0" => return Ok(()),
                other => {
                    return Err(DataError::parse(
                        path,
                        line,
                        Some("label"),
                        format!("expected 0 or 1, found '{other}'"),
                    ))
                }
            }
            let mids: Vec<&str> = f[4].split(HIST_SEP).filter(|s| !s.is_empty()).collect();
            let cats: Vec<&str> = f[5].split(HIST_SEP).filter(|s| !s.is_empty()).collect();
            if mids.len() != cats.len() {
                return Err(DataError::parse(
                    path,
                    line,
                    Some("hist_cats"),
                    format!(
                        "{} history items but {} history categories",
                        mids.len(),
                        cats.len()
                    ),
                ));
            }
            let mut seq: Vec<(String, String)> = mids
                .iter()
                .zip(&cats)
                .map(|(m, c)| (m.to_string(), c.to_string()))
                .collect();
            seq.push((f[2].to_owned(), f[3].to_owned()));
            let entry = by_user.entry(f[1].to_owned()).or_insert_with(|| {
                user_order.push(f[1].to_owned());
                Vec::new()
            });
            entry.push(Positive {
                seq,
                source: source as u32,
                line,
            });
            Ok(())
        })?;
    }
    let mut rows = RowsBuilder::default();
    for user in &user_order {
        let lines = &by_user[user];
        let Some(longest) = lines.iter().max_by_key(|p| p.seq.len()) else {
            continue;
        };
        for p in lines {
            if longest.seq[..p.seq.len()] != p.seq[..] {
                return Err(DataError::parse(
                    &samples[p.source as usize],
                    p.line,
                    Some("hist_mids"),
                    format!(
                        "user {user}: this history disagrees with the longer one on {}:{}",
                        samples[longest.source as usize].display(),
                        longest.line
                    ),
                ));
            }
        }
        for (t, (item, cat)) in longest.seq.iter().enumerate() {
            rows.push(user, item, cat, t as i64, longest.source, longest.line);
        }
    }
    if rows.is_empty() {
        return Err(DataError::Empty {
            what: "the DIEN sample files".into(),
            hint: "no positive (label 1) line was found".into(),
        });
    }
    rows.finish(samples.to_vec(), "dien")
}
