//! Amazon 2014 product data (McAuley et al. 2015): `reviews_<Cat>_5.json` (JSON lines) and
//! `meta_<Cat>.json` (one Python dict literal per line), plain or gzip.
//!
//! Reviews are parsed by polars' NDJSON parser in parallel chunks, projecting only `reviewerID`, `asin`
//! and `unixReviewTime` (the review text is never materialised). When polars rejects a chunk or leaves
//! a value missing, the chunk is re-read line by line with serde_json to name the exact line and field.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use polars::io::ndjson::core::{is_json_line, parse_ndjson};
use polars::prelude::*;
use rayon::prelude::*;

use crate::error::{DataError, PolarsContext, Result};
use crate::interactions::{cols, Interactions, DEFAULT_CATEGORY};
use crate::io::{for_each_line, is_gzip, open_maybe_gz, read_error};
use crate::pylit::parse_meta_line;

/// Which element of an item's category paths becomes its category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CategoryRule {
    /// DIN's rule, `categories[-1][-1]`: last element of the last path (Electronics in the paper).
    LastOfLast,
    /// DIEN's rule, `categories[0][-1]`: last element of the first path (Books in the paper).
    LastOfFirst,
}

impl std::str::FromStr for CategoryRule {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "din" | "last-of-last" => Ok(CategoryRule::LastOfLast),
            "dien" | "last-of-first" => Ok(CategoryRule::LastOfFirst),
            other => Err(DataError::Invalid(format!(
                "unknown category rule '{other}' (expected 'din' = last-of-last or 'dien' = last-of-first)"
            ))),
        }
    }
}

impl std::fmt::Display for CategoryRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CategoryRule::LastOfLast => "last-of-last",
            CategoryRule::LastOfFirst => "last-of-first",
        })
    }
}

impl CategoryRule {
    /// The category of one item's paths, `None` when the item has no category path.
    pub fn apply<'a>(&self, paths: &'a [Vec<String>]) -> Option<&'a str> {
        let path = match self {
            CategoryRule::LastOfLast => paths.last(),
            CategoryRule::LastOfFirst => paths.first(),
        }?;
        path.last().map(String::as_str)
    }
}

/// Bytes of decompressed input parsed per chunk.
const CHUNK_BYTES: usize = 64 << 20;

const F_USER: &str = "reviewerID";
const F_ITEM: &str = "asin";
const F_TIME: &str = "unixReviewTime";

/// Reads review files and meta files into the canonical table. Files whose name contains `meta` are
/// meta files; the others are review files. Items without meta (or without a category path) get
/// [`DEFAULT_CATEGORY`].
pub fn read_amazon(inputs: &[PathBuf], rule: CategoryRule) -> Result<Interactions> {
    let (meta, reviews): (Vec<&PathBuf>, Vec<&PathBuf>) = inputs.iter().partition(|p| {
        p.file_name()
            .map(|n| n.to_string_lossy().contains("meta"))
            .unwrap_or(false)
    });
    if reviews.is_empty() {
        return Err(DataError::Invalid(
            "amazon-json needs at least one reviews file (reviews_<Cat>_5.json[.gz])".into(),
        ));
    }
    let mut sources: Vec<PathBuf> = Vec::new();
    let mut frames = Vec::new();
    let start = std::time::Instant::now();
    for path in &reviews {
        let idx = sources.len() as u32;
        sources.push((*path).clone());
        frames.push(read_reviews_file(path, idx)?);
    }
    let mut df = concat_frames(frames)?;
    tracing::debug!("reviews parsed in {:.2}s", start.elapsed().as_secs_f64());
    let start = std::time::Instant::now();

    let items: HashSet<String> = {
        let ca = df
            .column(cols::ITEM)
            .and_then(|c| c.str().cloned())
            .ctx(|| "asin column".into())?;
        ca.iter().flatten().map(str::to_owned).collect()
    };
    let mut category_of: HashMap<String, String> = HashMap::new();
    for path in &meta {
        sources.push((*path).clone());
        read_meta_file(path, rule, &items, &mut category_of)?;
    }
    tracing::debug!("meta parsed in {:.2}s", start.elapsed().as_secs_f64());
    if !meta.is_empty() {
        let missing = items
            .iter()
            .filter(|i| !category_of.contains_key(*i))
            .count();
        if missing > 0 {
            tracing::warn!(
                "{missing} of {} reviewed items have no meta record or no category path; they get '{DEFAULT_CATEGORY}'",
                items.len()
            );
        }
    } else {
        tracing::warn!("no meta file given: every item gets the category '{DEFAULT_CATEGORY}'");
    }
    let cats: Vec<&str> = {
        let ca = df
            .column(cols::ITEM)
            .and_then(|c| c.str())
            .ctx(|| "asin column".into())?;
        ca.iter()
            .map(|a| {
                a.and_then(|a| category_of.get(a))
                    .map(String::as_str)
                    .unwrap_or(DEFAULT_CATEGORY)
            })
            .collect()
    };
    let cat_col = Column::new(cols::CATEGORY.into(), cats);
    df.with_column(cat_col).ctx(|| "adding categories".into())?;
    Interactions::new(df, sources, "amazon-json")
}

pub(crate) fn concat_frames(frames: Vec<DataFrame>) -> Result<DataFrame> {
    let mut it = frames.into_iter();
    let Some(mut df) = it.next() else {
        return Err(DataError::Invalid("no input file".into()));
    };
    for f in it {
        df.vstack_mut_owned(f)
            .ctx(|| "concatenating inputs".into())?;
    }
    df.rechunk_mut_par();
    Ok(df)
}

/// One review file into (user, item, time, source, line).
fn read_reviews_file(path: &Path, source: u32) -> Result<DataFrame> {
    let gz = is_gzip(path)?;
    let mut reader = open_maybe_gz(path)?;
    let schema = Schema::from_iter([
        Field::new(F_USER.into(), DataType::String),
        Field::new(F_ITEM.into(), DataType::String),
        Field::new(F_TIME.into(), DataType::Int64),
    ]);
    let mut frames = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_BYTES + (1 << 20));
    let mut first_line = 1u64;
    let mut eof = false;
    let (mut t_read, mut t_parse) = (0f64, 0f64);
    while !eof {
        let t = std::time::Instant::now();
        // Fill up to CHUNK_BYTES, then cut after the last newline; the rest carries over.
        let want = CHUNK_BYTES.saturating_sub(buf.len()).max(1 << 20) as u64;
        let n = (&mut reader)
            .take(want)
            .read_to_end(&mut buf)
            .map_err(|e| read_error(path, gz, e))?;
        // `take` stops short of `want` only at the end of the input.
        eof = (n as u64) < want;
        let cut = if eof {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(p) => p + 1,
                None => continue, // one line longer than the chunk: read more
            }
        };
        t_read += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let chunk = &buf[..cut];
        let lines_in_chunk = memchr::memchr_iter(b'\n', chunk).count() as u64
            + u64::from(eof && !chunk.is_empty() && chunk.last() != Some(&b'\n'));
        if !chunk.is_empty() {
            frames.push(parse_review_chunk(
                path, chunk, first_line, source, &schema,
            )?);
        }
        first_line += lines_in_chunk;
        buf.drain(..cut);
        t_parse += t.elapsed().as_secs_f64();
    }
    tracing::debug!(
        "{}: reading {t_read:.2}s, parsing {t_parse:.2}s",
        path.display()
    );
    if frames.is_empty() {
        return Err(DataError::Empty {
            what: path.display().to_string(),
            hint: "the reviews file has no line".into(),
        });
    }
    concat_frames(frames)
}

/// Parses one chunk of whole lines in parallel sub-chunks; `first_line` is the 1-based number of the
/// chunk's first line.
fn parse_review_chunk(
    path: &Path,
    chunk: &[u8],
    first_line: u64,
    source: u32,
    schema: &Schema,
) -> Result<DataFrame> {
    // Sub-chunks at line boundaries, each with the number of its first line.
    let n_parts = (rayon::current_num_threads() * 2).max(1);
    let target = chunk.len() / n_parts + 1;
    let mut parts: Vec<(&[u8], u64)> = Vec::with_capacity(n_parts);
    let mut pos = 0;
    let mut line = first_line;
    while pos < chunk.len() {
        let mut end = (pos + target).min(chunk.len());
        if end < chunk.len() {
            end = match memchr::memchr(b'\n', &chunk[end..]) {
                Some(p) => end + p + 1,
                None => chunk.len(),
            };
        }
        let part = &chunk[pos..end];
        parts.push((part, line));
        line += memchr::memchr_iter(b'\n', part).count() as u64;
        pos = end;
    }
    let frames = parts
        .par_iter()
        .map(|(part, line)| parse_review_part(path, part, *line, source, schema))
        .collect::<Result<Vec<_>>>()?;
    concat_frames(frames)
}

fn parse_review_part(
    path: &Path,
    part: &[u8],
    first_line: u64,
    source: u32,
    schema: &Schema,
) -> Result<DataFrame> {
    // Line numbers of the lines polars will parse (it skips blank lines).
    let mut line_numbers: Vec<u64> = Vec::with_capacity(part.len() / 512 + 1);
    let mut start = 0usize;
    let ends = memchr::memchr_iter(b'\n', part).chain(std::iter::once(part.len()));
    for (line, end) in (first_line..).zip(ends) {
        if is_json_line(&part[start..end]) {
            line_numbers.push(line);
        }
        start = end + 1;
    }
    let df = match parse_ndjson(part, Some(line_numbers.len()), schema, false) {
        Ok(df) => df,
        Err(e) => {
            return Err(
                locate_review_error(path, part, first_line).unwrap_or_else(|| {
                    DataError::polars(format!("{}: lines {first_line}..", path.display()), e)
                }),
            )
        }
    };
    if df.height() != line_numbers.len() || df.columns().iter().any(|c| c.null_count() > 0) {
        return Err(
            locate_review_error(path, part, first_line).unwrap_or_else(|| {
                DataError::Invalid(format!(
                    "{}: lines {first_line}..: polars read {} rows from {} lines",
                    path.display(),
                    df.height(),
                    line_numbers.len()
                ))
            }),
        );
    }
    let h = df.height();
    let mut out = df
        .select([F_USER, F_ITEM, F_TIME].map(PlSmallStr::from_str))
        .ctx(|| "reviews".into())?;
    out.rename(F_USER, cols::USER.into())
        .ctx(|| "rename".into())?;
    out.rename(F_ITEM, cols::ITEM.into())
        .ctx(|| "rename".into())?;
    out.rename(F_TIME, cols::TIME.into())
        .ctx(|| "rename".into())?;
    out.with_column(Column::new(cols::SOURCE.into(), vec![source; h]))
        .ctx(|| "source".into())?;
    out.with_column(Column::new(cols::LINE.into(), line_numbers))
        .ctx(|| "line".into())?;
    Ok(out)
}

/// Re-reads a chunk line by line with serde_json and names the first bad line and field.
fn locate_review_error(path: &Path, part: &[u8], first_line: u64) -> Option<DataError> {
    for (i, l) in part.split(|&b| b == b'\n').enumerate() {
        if !is_json_line(l) {
            continue;
        }
        let line = first_line + i as u64;
        let value: serde_json::Value = match serde_json::from_slice(l) {
            Ok(v) => v,
            Err(e) => {
                return Some(DataError::parse(
                    path,
                    line,
                    None,
                    format!("malformed JSON: {e}"),
                ))
            }
        };
        let Some(obj) = value.as_object() else {
            return Some(DataError::parse(path, line, None, "expected a JSON object"));
        };
        for (field, want_int) in [(F_USER, false), (F_ITEM, false), (F_TIME, true)] {
            match obj.get(field) {
                None | Some(serde_json::Value::Null) => {
                    return Some(DataError::parse(path, line, Some(field), "missing field"))
                }
                Some(v) if want_int && !(v.is_i64() || v.is_u64()) => {
                    return Some(DataError::parse(
                        path,
                        line,
                        Some(field),
                        format!("expected an integer, found {v}"),
                    ))
                }
                Some(v) if !want_int && !v.is_string() => {
                    return Some(DataError::parse(
                        path,
                        line,
                        Some(field),
                        format!("expected a string, found {v}"),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    None
}

/// Reads a meta file, keeping the category of the items in `wanted`.
fn read_meta_file(
    path: &Path,
    rule: CategoryRule,
    wanted: &HashSet<String>,
    category_of: &mut HashMap<String, String>,
) -> Result<()> {
    const BATCH: usize = 50_000;
    let mut batch: Vec<(u64, String)> = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<(u64, String)>, out: &mut HashMap<String, String>| -> Result<()> {
        let parsed = batch
            .par_iter()
            .map(|(line, text)| {
                parse_meta_line(text).map_err(|e| {
                    DataError::parse(
                        path,
                        *line,
                        e.field.as_deref(),
                        format!("at byte {}: {}", e.offset, e.message),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for rec in parsed {
            if wanted.contains(&rec.asin) {
                if let Some(cat) = rule.apply(&rec.categories) {
                    out.entry(rec.asin).or_insert_with(|| cat.to_owned());
                }
            }
        }
        batch.clear();
        Ok(())
    };
    let mut any = false;
    for_each_line(path, |line, text| {
        if text.trim().is_empty() {
            return Ok(());
        }
        any = true;
        batch.push((line, text.to_owned()));
        if batch.len() == BATCH {
            flush(&mut batch, category_of)?;
        }
        Ok(())
    })?;
    flush(&mut batch, category_of)?;
    if !any {
        return Err(DataError::Empty {
            what: path.display().to_string(),
            hint: "the meta file has no line".into(),
        });
    }
    Ok(())
}
