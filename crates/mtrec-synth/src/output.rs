//! The world on disk: the log that a recommender sees (`interactions.csv`) and the ground truth that it
//! never sees (items, users, categories, rewards), plus `world.json`. The folder is written under a
//! staging name and renamed into place, so an interrupted run leaves nothing half-written.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use mtrec_data::dataset::group;
use mtrec_data::io::StagedDir;
use polars::prelude::*;
use rayon::prelude::*;
use serde::Serialize;

use crate::config::{Params, SynthConfig};
use crate::error::{PolarsContext, Result, SynthError};
use crate::world::{Calibration, World};

/// Version of the behaviour model: bump it when the same seed and preset would give another world.
pub const MODEL_VERSION: u32 = 1;

/// File names of a world folder.
pub mod files {
    /// The log: `user_id,item_id,timestamp,category`, what `mtrec prepare --format csv` reads.
    pub const INTERACTIONS: &str = "interactions.csv";
    /// Ground truth per item: `item_id, category, quality, appeal, popularity, engagements, onboarding_user`.
    pub const ITEMS: &str = "items.parquet";
    /// Ground truth per user: `user_id, length, natural_length, censored, frailty, favourites,
    /// taste_weights, mean_true_reward`.
    pub const USERS: &str = "users.parquet";
    /// Per category: `category, exposure_weight, items, engagements`.
    pub const CATEGORIES: &str = "categories.parquet";
    /// Ground truth per logged engagement: `user_id, step, item_id, category, true_reward,
    /// expected_reward, satisfied, onboarding`.
    pub const REWARDS: &str = "rewards.parquet";
    /// Preset, seed, every parameter, the calibration and the counts.
    pub const WORLD: &str = "world.json";
}

/// Counts and headline statistics of a world.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub users: usize,
    pub items: usize,
    pub categories: usize,
    pub engagements: u64,
    pub mean_length: f64,
    pub min_length: u32,
    pub median_length: u32,
    pub max_length: u32,
    /// Distinct items in the log (all of them, thanks to onboarding).
    pub items_engaged: usize,
    /// Distinct categories in the log.
    pub categories_engaged: usize,
    /// First engagements that were the catalogue's onboarding item.
    pub onboarding_engagements: usize,
    /// Share of engagements that satisfied.
    pub satisfied_share: f64,
    pub mean_true_reward: f64,
    pub mean_expected_reward: f64,
    pub censored_users: usize,
    pub censored_engagements: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "users {} · items {} · engagements {} · categories {}",
            group(self.users),
            group(self.items),
            group(self.engagements as usize),
            group(self.categories)
        )?;
        writeln!(
            f,
            "engagements per user: mean {:.2} · min {} · median {} · max {}",
            self.mean_length, self.min_length, self.median_length, self.max_length
        )?;
        writeln!(
            f,
            "mental reward (hidden): mean {:.3} · satisfied {:.1}% · censored at the window's end: {} engagements of {} users",
            self.mean_true_reward,
            100.0 * self.satisfied_share,
            group(self.censored_engagements as usize),
            group(self.censored_users)
        )
    }
}

impl World {
    /// Counts and headline statistics.
    pub fn summary(&self) -> Summary {
        let log = self.all_engagements();
        let mut lengths: Vec<u32> = self.users().iter().map(|u| u.length).collect();
        lengths.sort_unstable();
        let mut item_seen = vec![false; self.items().len() + 1];
        let mut cat_seen = vec![false; self.config().categories + 1];
        let (mut sat, mut onboarding, mut reward, mut expected) = (0usize, 0usize, 0.0f64, 0.0f64);
        for e in log {
            item_seen[e.item as usize] = true;
            cat_seen[e.category as usize] = true;
            sat += e.satisfied as usize;
            onboarding += e.onboarding as usize;
            reward += e.reward as f64;
            expected += e.expected_reward as f64;
        }
        let n = log.len().max(1) as f64;
        Summary {
            users: self.n_users(),
            items: self.items().len(),
            categories: self.config().categories,
            engagements: log.len() as u64,
            mean_length: log.len() as f64 / self.n_users() as f64,
            min_length: lengths[0],
            median_length: lengths[lengths.len() / 2],
            max_length: lengths[lengths.len() - 1],
            items_engaged: item_seen.iter().filter(|&&s| s).count(),
            categories_engaged: cat_seen.iter().filter(|&&s| s).count(),
            onboarding_engagements: onboarding,
            satisfied_share: sat as f64 / n,
            mean_true_reward: reward / n,
            mean_expected_reward: expected / n,
            censored_users: self.calibration().censored_users,
            censored_engagements: self.calibration().censored_engagements,
        }
    }

    /// Writes the world folder `dir` atomically (staging folder, then rename). An existing `dir` is
    /// replaced only when `overwrite` is set.
    pub fn write(&self, dir: &Path, overwrite: bool) -> Result<PathBuf> {
        if dir.exists() && !overwrite {
            return Err(SynthError::Exists {
                path: dir.to_path_buf(),
            });
        }
        let start = std::time::Instant::now();
        let staged = StagedDir::new(dir, overwrite)?;
        let p = staged.path();
        self.write_interactions(&p.join(files::INTERACTIONS))?;
        self.write_items(&p.join(files::ITEMS))?;
        self.write_users(&p.join(files::USERS))?;
        self.write_categories(&p.join(files::CATEGORIES))?;
        self.write_rewards(&p.join(files::REWARDS))?;
        let manifest = serde_json::to_vec_pretty(&self.manifest()).map_err(|e| {
            SynthError::io(p.join(files::WORLD), std::io::Error::other(e.to_string()))
        })?;
        std::fs::write(p.join(files::WORLD), manifest)
            .map_err(|e| SynthError::io(p.join(files::WORLD), e))?;
        let out = staged.commit()?;
        tracing::info!(
            "wrote {} in {:.2}s",
            out.display(),
            start.elapsed().as_secs_f64()
        );
        Ok(out)
    }

    fn write_interactions(&self, path: &Path) -> Result<()> {
        const USERS_PER_BLOCK: usize = 4096;
        const BLOCKS_PER_ROUND: usize = 64;
        let f = File::create(path).map_err(|e| SynthError::io(path, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(b"user_id,item_id,timestamp,category\n")
            .map_err(|e| SynthError::io(path, e))?;
        let n_users = self.n_users();
        let n_blocks = n_users.div_ceil(USERS_PER_BLOCK);
        for round in (0..n_blocks).step_by(BLOCKS_PER_ROUND) {
            let bufs: Vec<Vec<u8>> = (round..(round + BLOCKS_PER_ROUND).min(n_blocks))
                .into_par_iter()
                .map(|b| {
                    let users = b * USERS_PER_BLOCK + 1..=((b + 1) * USERS_PER_BLOCK).min(n_users);
                    let mut buf = Vec::with_capacity(USERS_PER_BLOCK * 16 * 40);
                    for u in users {
                        for e in self.engagements(u as u32) {
                            push_int(&mut buf, u as i64);
                            buf.push(b',');
                            push_int(&mut buf, e.item as i64);
                            buf.push(b',');
                            push_int(&mut buf, e.time);
                            buf.push(b',');
                            push_int(&mut buf, e.category as i64);
                            buf.push(b'\n');
                        }
                    }
                    buf
                })
                .collect();
            for buf in bufs {
                w.write_all(&buf).map_err(|e| SynthError::io(path, e))?;
            }
        }
        w.flush().map_err(|e| SynthError::io(path, e))
    }

    fn write_items(&self, path: &Path) -> Result<()> {
        let items = self.items();
        let n = items.len();
        let mut engaged = vec![0u32; n];
        for e in self.all_engagements() {
            engaged[e.item as usize - 1] += 1;
        }
        let mut df = DataFrame::new(
            n,
            vec![
                Column::new("item_id".into(), (1..=n as u32).collect::<Vec<_>>()),
                Column::new(
                    "category".into(),
                    items.iter().map(|i| i.category).collect::<Vec<_>>(),
                ),
                Column::new(
                    "quality".into(),
                    items.iter().map(|i| i.quality).collect::<Vec<_>>(),
                ),
                Column::new(
                    "appeal".into(),
                    items.iter().map(|i| i.appeal).collect::<Vec<_>>(),
                ),
                Column::new(
                    "popularity".into(),
                    items.iter().map(|i| i.popularity).collect::<Vec<_>>(),
                ),
                Column::new("engagements".into(), engaged),
                Column::new(
                    "onboarding_user".into(),
                    (1..=n as u32)
                        .map(|id| self.onboarding_user(id))
                        .collect::<Vec<_>>(),
                ),
            ],
        )
        .ctx(|| "items table".into())?;
        write_parquet(path, &mut df)
    }

    fn write_users(&self, path: &Path) -> Result<()> {
        let users = self.users();
        let n = users.len();
        let joined = |f: &dyn Fn(&(u32, f64)) -> String| -> Vec<String> {
            users
                .iter()
                .map(|u| u.favourites.iter().map(f).collect::<Vec<_>>().join(";"))
                .collect()
        };
        let mean_reward: Vec<f64> = (1..=n as u32)
            .map(|u| {
                let log = self.engagements(u);
                log.iter().map(|e| e.reward as f64).sum::<f64>() / log.len() as f64
            })
            .collect();
        let mut df = DataFrame::new(
            n,
            vec![
                Column::new("user_id".into(), (1..=n as u32).collect::<Vec<_>>()),
                Column::new(
                    "length".into(),
                    users.iter().map(|u| u.length).collect::<Vec<_>>(),
                ),
                Column::new(
                    "natural_length".into(),
                    users.iter().map(|u| u.natural_length).collect::<Vec<_>>(),
                ),
                Column::new(
                    "censored".into(),
                    users
                        .iter()
                        .map(|u| u.length < u.natural_length)
                        .collect::<Vec<_>>(),
                ),
                Column::new(
                    "frailty".into(),
                    users.iter().map(|u| u.frailty).collect::<Vec<_>>(),
                ),
                Column::new("favourites".into(), joined(&|f| f.0.to_string())),
                Column::new("taste_weights".into(), joined(&|f| format!("{:.4}", f.1))),
                Column::new("mean_true_reward".into(), mean_reward),
            ],
        )
        .ctx(|| "users table".into())?;
        write_parquet(path, &mut df)
    }

    fn write_categories(&self, path: &Path) -> Result<()> {
        let n = self.config().categories;
        let mut items = vec![0u32; n];
        for it in self.items() {
            items[it.category as usize - 1] += 1;
        }
        let mut engaged = vec![0u64; n];
        for e in self.all_engagements() {
            engaged[e.category as usize - 1] += 1;
        }
        let mut df = DataFrame::new(
            n,
            vec![
                Column::new("category".into(), (1..=n as u32).collect::<Vec<_>>()),
                Column::new("exposure_weight".into(), self.category_weights().to_vec()),
                Column::new("items".into(), items),
                Column::new("engagements".into(), engaged),
            ],
        )
        .ctx(|| "categories table".into())?;
        write_parquet(path, &mut df)
    }

    fn write_rewards(&self, path: &Path) -> Result<()> {
        let log = self.all_engagements();
        let n = log.len();
        let mut user = Vec::with_capacity(n);
        let mut step = Vec::with_capacity(n);
        for u in 1..=self.n_users() as u32 {
            for t in 0..self.engagements(u).len() {
                user.push(u);
                step.push(t as u32);
            }
        }
        let col = |name: &str, f: &dyn Fn(&crate::Engagement) -> f32| {
            Column::new(name.into(), log.iter().map(f).collect::<Vec<_>>())
        };
        let flag = |name: &str, f: &dyn Fn(&crate::Engagement) -> bool| {
            Column::new(name.into(), log.iter().map(f).collect::<Vec<_>>())
        };
        let mut df = DataFrame::new(
            n,
            vec![
                Column::new("user_id".into(), user),
                Column::new("step".into(), step),
                Column::new(
                    "item_id".into(),
                    log.iter().map(|e| e.item).collect::<Vec<_>>(),
                ),
                Column::new(
                    "category".into(),
                    log.iter().map(|e| e.category).collect::<Vec<_>>(),
                ),
                col("true_reward", &|e| e.reward),
                col("expected_reward", &|e| e.expected_reward),
                flag("satisfied", &|e| e.satisfied),
                flag("onboarding", &|e| e.onboarding),
            ],
        )
        .ctx(|| "rewards table".into())?;
        write_parquet(path, &mut df)
    }

    fn manifest(&self) -> Manifest<'_> {
        let cfg = self.config();
        let mut files_doc = BTreeMap::new();
        files_doc.insert(
            files::INTERACTIONS,
            "the log a recommender sees: user_id,item_id,timestamp,category (timestamp in unix seconds, strictly increasing per user)",
        );
        files_doc.insert(files::ITEMS, "ground truth per item: item_id, category, quality, appeal, popularity (exposure weight within the category), engagements, onboarding_user");
        files_doc.insert(files::USERS, "ground truth per user: user_id, length, natural_length, censored, frailty, favourites, taste_weights, mean_true_reward");
        files_doc.insert(
            files::CATEGORIES,
            "per category: category, exposure_weight (Zipf), items, engagements",
        );
        files_doc.insert(files::REWARDS, "ground truth per logged engagement: user_id, step (0-based), item_id, category, true_reward, expected_reward, satisfied, onboarding");
        Manifest {
            format: "mtrec-synth world",
            model_version: MODEL_VERSION,
            mtrec_version: env!("CARGO_PKG_VERSION"),
            preset: &cfg.preset,
            seed: cfg.seed,
            target: Target {
                users: cfg.users,
                items: cfg.items,
                categories: cfg.categories,
                engagements: cfg.engagements,
                mean_length: cfg.mean_length(),
            },
            params: &cfg.params,
            calibration: self.calibration(),
            counts: self.summary(),
            files: files_doc,
            ids: "user, item and category ids are the integers 1..n; `mtrec prepare` numbers integer keys in numeric order, so a prepared dataset of interactions.csv keeps these ids, and step t of a user in rewards.parquet is step t of the prepared sequence",
        }
    }
}

#[derive(Serialize)]
struct Target {
    users: usize,
    items: usize,
    categories: usize,
    engagements: u64,
    mean_length: f64,
}

#[derive(Serialize)]
struct Manifest<'a> {
    format: &'static str,
    model_version: u32,
    mtrec_version: &'static str,
    preset: &'a str,
    seed: u64,
    target: Target,
    params: &'a Params,
    calibration: &'a Calibration,
    counts: Summary,
    files: BTreeMap<&'static str, &'static str>,
    ids: &'static str,
}

/// Writes `world` into the folder `dir` (see [`World::write`]).
pub fn write_world(world: &World, dir: &Path, overwrite: bool) -> Result<PathBuf> {
    world.write(dir, overwrite)
}

/// Generates the world of `cfg` and writes it to `dir`: the library form of `mtrec synth`.
pub fn synthesize(cfg: &SynthConfig, dir: &Path, overwrite: bool) -> Result<(World, PathBuf)> {
    if dir.exists() && !overwrite {
        return Err(SynthError::Exists {
            path: dir.to_path_buf(),
        });
    }
    let world = World::generate(cfg)?;
    let out = world.write(dir, overwrite)?;
    Ok((world, out))
}

fn push_int(buf: &mut Vec<u8>, v: i64) {
    if v < 0 {
        buf.push(b'-');
    }
    let mut n = v.unsigned_abs();
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<()> {
    let f = File::create(path).map_err(|e| SynthError::io(path, e))?;
    ParquetWriter::new(f)
        .finish(df)
        .ctx(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_like_display() {
        let mut buf = Vec::new();
        for v in [0i64, 7, 10, 1_262_304_000, -42, i64::MAX, i64::MIN] {
            buf.clear();
            push_int(&mut buf, v);
            assert_eq!(String::from_utf8(buf.clone()).unwrap(), v.to_string());
        }
    }
}
