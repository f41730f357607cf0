//! The S3-Rec sequence files (Zhou et al., CIKM 2020): `<DS>.txt` with one line per user,
//! `user_id item_1 ... item_n` in time order, and `<DS>_item2attributes.json` mapping each item to its
//! attribute ids (brand, then the category path). An item's category is its LAST attribute, which is
//! DIN's `categories[-1][-1]`; an item without attributes gets the default category.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::interactions::{Interactions, RowsBuilder, DEFAULT_CATEGORY};
use crate::io::for_each_line;

const ATTRS_SUFFIX: &str = "_item2attributes.json";

/// Reads sequence files; each needs its attribute file, given among the inputs or found beside it.
pub fn read_s3rec(inputs: &[PathBuf]) -> Result<Interactions> {
    let (attrs, seqs): (Vec<&PathBuf>, Vec<&PathBuf>) = inputs.iter().partition(|p| {
        p.file_name()
            .map(|n| n.to_string_lossy().ends_with(ATTRS_SUFFIX))
            .unwrap_or(false)
    });
    if seqs.is_empty() {
        return Err(DataError::Invalid(
            "s3rec: no sequence file (<DS>.txt) among the inputs".into(),
        ));
    }
    let mut sources: Vec<PathBuf> = Vec::new();
    let mut rows = RowsBuilder::default();
    let mut seen_users: HashSet<String> = HashSet::new();
    for seq_path in seqs {
        let attr_path = match attrs.as_slice() {
            [one] => (*one).clone(),
            _ => beside(seq_path)?,
        };
        let category_of = read_attributes(&attr_path)?;
        let source = sources.len() as u32;
        sources.push(seq_path.clone());
        let attr_name = attr_path.display().to_string();
        for_each_line(seq_path, |line, text| {
            let mut tokens = text.split_whitespace();
            let Some(user) = tokens.next() else {
                return Ok(());
            };
            if !seen_users.insert(user.to_owned()) {
                return Err(DataError::parse(
                    seq_path,
                    line,
                    Some("user_id"),
                    format!("user '{user}' has a second line"),
                ));
            }
            let mut n = 0;
            for (t, item) in tokens.enumerate() {
                let Some(cat) = category_of.get(item) else {
                    return Err(DataError::UnknownItem {
                        path: seq_path.clone(),
                        line,
                        field: format!("item {}", t + 1),
                        item: item.to_owned(),
                        defined_in: attr_name.clone(),
                    });
                };
                rows.push(user, item, cat, t as i64, source, line);
                n += 1;
            }
            if n == 0 {
                return Err(DataError::parse(
                    seq_path,
                    line,
                    Some("items"),
                    "user line without items",
                ));
            }
            Ok(())
        })?;
        sources.push(attr_path);
    }
    rows.finish(sources, "s3rec")
}

fn beside(seq_path: &Path) -> Result<PathBuf> {
    let stem = seq_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let p = seq_path.with_file_name(format!("{stem}{ATTRS_SUFFIX}"));
    if p.exists() {
        Ok(p)
    } else {
        Err(DataError::Invalid(format!(
            "s3rec: {} needs its attribute file {} (give it as an input)",
            seq_path.display(),
            p.display()
        )))
    }
}

fn read_attributes(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let raw: HashMap<String, Vec<serde_json::Value>> =
        serde_json::from_slice(&bytes).map_err(|e| {
            DataError::parse(
                path,
                e.line() as u64,
                None,
                format!("expected {{\"item\": [attribute ids]}}: {e}"),
            )
        })?;
    raw.into_iter()
        .map(|(item, attrs)| {
            let cat = match attrs.last() {
                None => DEFAULT_CATEGORY.to_owned(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                Some(other) => {
                    return Err(DataError::parse(
                        path,
                        1,
                        Some(&item),
                        format!("attribute must be a number or a string, found {other}"),
                    ))
                }
            };
            Ok((item, cat))
        })
        .collect()
}
