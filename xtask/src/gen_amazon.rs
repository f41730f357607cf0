//! Synthetic raw Amazon-2014 ("5-core" product data) files, for benchmarks and demos.
//!
//! [`generate`] writes two files that look like the 2014 release (McAuley et al.):
//!
//! * `reviews_<name>_5.json`: one strict JSON object per line, keys in the release's order
//!   (`reviewerID`, `asin`, `reviewerName`, `helpful`, `reviewText`, `overall`, `summary`,
//!   `unixReviewTime`, `reviewTime`), grouped by item with asins in ascending order like the
//!   release. Every user has at least 5 reviews (heavy-tailed counts whose mean is exactly the
//!   configured one, up to rounding), items follow a Zipf-like popularity (so nearly all appear),
//!   a user never reviews an item twice, and reviews of one user often share a day.
//! * `meta_<name>.json`: one Python dict literal per line (Python `repr` quoting, as in the
//!   release, so it needs `ast.literal_eval`/`eval`, not a JSON parser), for exactly the items
//!   that appear in the reviews, in no particular order. The DIN rule (last element of the last
//!   `categories` path) yields one of `categories` leaf names; ~1% of items have no
//!   `categories` key ("default" under that rule) and ~3% no `price`.
//!
//! Output is a pure function of the [`GenConfig`] (seeded ChaCha8 streams, one per phase).
//! Only ASCII is written.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SECONDS_PER_DAY: i64 = 86_400;
/// 2000-01-01, in days since the Unix epoch.
const FIRST_DAY: i64 = 10_957;
/// 2014-07-23 (the last review day of the 2014 release), in days since the Unix epoch.
const LAST_DAY: i64 = 16_274;
/// Zipf-like item popularity: weight of popularity rank `r` is `1 / (r + ITEM_ZIPF_OFFSET)^ITEM_ZIPF_EXP`.
const ITEM_ZIPF_EXP: f64 = 0.9;
const ITEM_ZIPF_OFFSET: f64 = 50.0;
/// Tail index of the (Lomax) distribution of reviews per user beyond the 5-core minimum.
const USER_TAIL_ALPHA: f64 = 2.5;
const ALNUM: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const BUF_CAPACITY: usize = 4 << 20;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Number of users; every one gets at least 5 reviews.
    pub users: usize,
    /// Size of the item catalogue; nearly all of it gets reviewed (see [`GenOutput::meta_lines`]).
    pub items: usize,
    /// Number of distinct leaf category names (what the DIN rule extracts).
    pub categories: usize,
    /// Mean reviews per user (>= 5); the total is `round(users * mean)` exactly.
    pub mean_reviews_per_user: f64,
    /// Mean length of `reviewText` in characters (exponentially distributed, min ~20).
    pub review_text_chars: usize,
    pub seed: u64,
}

impl GenConfig {
    /// The shape of `reviews_Electronics_5.json`: 192,403 users, 63,001 items, 801 DIN
    /// categories and 1,689,188 reviews (~1.1 GB with ~400-character texts).
    pub fn electronics_scale() -> Self {
        Self {
            users: 192_403,
            items: 63_001,
            categories: 801,
            mean_reviews_per_user: 1_689_188.0 / 192_403.0,
            review_text_chars: 400,
            seed: 2014,
        }
    }

    /// A few hundred users and ~2.5k reviews: for tests and demos.
    pub fn small() -> Self {
        Self {
            users: 300,
            items: 400,
            categories: 20,
            mean_reviews_per_user: 8.3,
            review_text_chars: 120,
            seed: 7,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOutput {
    pub reviews_path: PathBuf,
    pub meta_path: PathBuf,
    /// Lines in the reviews file.
    pub reviews: usize,
    /// Lines in the meta file = number of distinct items reviewed.
    pub meta_lines: usize,
}

/// Writes `<dir>/reviews_<name>_5.json` and `<dir>/meta_<name>.json` (creating `dir`).
pub fn generate(cfg: &GenConfig, dir: &Path, name: &str) -> Result<GenOutput> {
    ensure!(cfg.users >= 1, "need at least one user");
    ensure!(
        cfg.items >= 10,
        "need at least 10 items (5-core users review 5 distinct items)"
    );
    ensure!(cfg.categories >= 1, "need at least one category");
    ensure!(
        cfg.users <= u32::MAX as usize && cfg.items <= u32::MAX as usize,
        "too many users or items"
    );
    ensure!(
        cfg.mean_reviews_per_user.is_finite() && cfg.mean_reviews_per_user >= 5.0,
        "mean_reviews_per_user must be >= 5 (5-core), got {}",
        cfg.mean_reviews_per_user
    );
    let cap = per_user_cap(cfg.items);
    ensure!(
        cfg.mean_reviews_per_user <= cap as f64,
        "mean_reviews_per_user {} exceeds the per-user cap {cap} for {} items",
        cfg.mean_reviews_per_user,
        cfg.items
    );

    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let reviews_path = dir.join(format!("reviews_{name}_5.json"));
    let meta_path = dir.join(format!("meta_{name}.json"));

    let users = make_users(cfg);
    let asins = make_asins(cfg);
    let counts = review_counts(cfg, cap);
    let popularity = ItemPopularity::new(cfg);
    let records = draw_reviews(cfg, &counts, &popularity);

    let reviews = write_reviews(cfg, &reviews_path, &records, &users, &asins)?;
    let meta_lines = write_meta(cfg, &meta_path, &records, &asins, &popularity)?;
    Ok(GenOutput {
        reviews_path,
        meta_path,
        reviews,
        meta_lines,
    })
}

fn rng_for(cfg: &GenConfig, phase: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(phase);
    rng
}

/// Largest number of reviews one user may write.
fn per_user_cap(items: usize) -> usize {
    (items / 2).clamp(5, 500)
}

fn uniform_open(rng: &mut ChaCha8Rng) -> f64 {
    // (0, 1]: safe for ln() and negative powers.
    1.0 - rng.random::<f64>()
}

fn random_alnum<const N: usize>(rng: &mut ChaCha8Rng) -> [u8; N] {
    let mut out = [0u8; N];
    for b in &mut out {
        *b = ALNUM[rng.random_range(0..ALNUM.len())];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Users, items, counts

struct User {
    id: [u8; 13],
    /// JSON-escaped, without the surrounding quotes.
    name_json: String,
}

#[rustfmt::skip]
const FIRST_NAMES: &[&str] = &[
    "John", "Mary", "David", "Linda", "Michael", "Susan", "James", "Karen", "Robert", "Lisa",
    "Chris", "Nancy", "Daniel", "Betty", "Paul", "Sandra", "Mark", "Donna", "Steven", "Carol",
    "Kevin", "Ruth", "Brian", "Sharon", "Jason", "Laura", "Eric", "Amy", "Scott", "Anna", "Greg",
    "Helen", "Ray", "Diane", "Tom", "Joan", "Frank", "Julie", "Gary", "Emma",
];
#[rustfmt::skip]
const LAST_NAMES: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Garcia", "Wilson",
    "Moore", "Taylor", "Anderson", "Thomas", "Jackson", "White", "Harris", "Martin", "Thompson",
    "Young", "Allen", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill",
    "Campbell", "O'Brien", "Mitchell", "Roberts",
];
#[rustfmt::skip]
const NICKNAMES: &[&str] = &[
    "Tech Guy", "gadget girl", "Bookworm", "Audiophile", "Road Warrior", "Geek Dad", "The Reviewer",
    "Mom of 3", "Photo Nut", "gamer",
];

fn make_users(cfg: &GenConfig) -> Vec<User> {
    let mut rng = rng_for(cfg, 1);
    let mut seen = HashSet::with_capacity(cfg.users);
    let mut users = Vec::with_capacity(cfg.users);
    let mut raw = String::new();
    for _ in 0..cfg.users {
        let id = loop {
            let id = random_alnum::<13>(&mut rng);
            if seen.insert(id) {
                break id;
            }
        };
        let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
        let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
        raw.clear();
        match rng.random_range(0..100u32) {
            0..=44 => {
                raw.push_str(first);
                raw.push(' ');
                raw.push_str(last);
            }
            45..=64 => {
                raw.push_str(&first[..1]);
                raw.push_str(". ");
                raw.push_str(last);
            }
            65..=79 => {
                raw.push_str(&first.to_ascii_lowercase());
                raw.push_str(&rng.random_range(1..100u32).to_string());
            }
            80..=89 => raw.push_str("Amazon Customer"),
            90..=96 => {
                // The release has plenty of names like `J. Smith "Tech Guy"`.
                raw.push_str(first);
                raw.push_str(" \"");
                raw.push_str(NICKNAMES[rng.random_range(0..NICKNAMES.len())]);
                raw.push_str("\" ");
                raw.push_str(last);
            }
            _ => {
                raw.push_str(first);
                raw.push_str(" \\ ");
                raw.push_str(last);
            }
        }
        let mut name_json = Vec::with_capacity(raw.len() + 4);
        json_escape_into(&raw, &mut name_json);
        users.push(User {
            id,
            name_json: String::from_utf8(name_json).expect("ASCII"),
        });
    }
    users
}

/// The 7 characters after "B00" of each item's asin, in ascending order (the release is sorted by asin).
fn make_asins(cfg: &GenConfig) -> Vec<[u8; 7]> {
    let mut rng = rng_for(cfg, 2);
    let mut seen = HashSet::with_capacity(cfg.items);
    while seen.len() < cfg.items {
        seen.insert(random_alnum::<7>(&mut rng));
    }
    let mut asins: Vec<[u8; 7]> = seen.into_iter().collect();
    asins.sort_unstable();
    asins
}

/// Reviews per user: 5 + a Lomax (Pareto II) tail, then nudged so the total is exactly
/// `round(users * mean)`.
fn review_counts(cfg: &GenConfig, cap: usize) -> Vec<u32> {
    let mut rng = rng_for(cfg, 3);
    let extra_mean = cfg.mean_reviews_per_user - 5.0;
    // floor() loses ~0.5 on average.
    let scale = (extra_mean + 0.5) * (USER_TAIL_ALPHA - 1.0);
    let mut counts: Vec<u32> = (0..cfg.users)
        .map(|_| {
            let x = scale * (uniform_open(&mut rng).powf(-1.0 / USER_TAIL_ALPHA) - 1.0);
            (5.0 + x.floor()).min(cap as f64) as u32
        })
        .collect();
    let target = (cfg.users as f64 * cfg.mean_reviews_per_user).round() as u64;
    let mut total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    while total < target {
        let u = rng.random_range(0..cfg.users);
        if (counts[u] as usize) < cap {
            counts[u] += 1;
            total += 1;
        }
    }
    while total > target {
        let u = rng.random_range(0..cfg.users);
        if counts[u] > 5 {
            counts[u] -= 1;
            total -= 1;
        }
    }
    counts
}

/// Zipf-like item popularity over a random permutation of the catalogue.
struct ItemPopularity {
    /// `by_rank[r]` = item with popularity rank `r` (0 = most popular).
    by_rank: Vec<u32>,
    /// Cumulative weights by rank.
    cdf: Vec<f64>,
}

impl ItemPopularity {
    fn new(cfg: &GenConfig) -> Self {
        let mut rng = rng_for(cfg, 4);
        let mut by_rank: Vec<u32> = (0..cfg.items as u32).collect();
        shuffle(&mut by_rank, &mut rng);
        let mut acc = 0.0;
        let cdf = (0..cfg.items)
            .map(|r| {
                acc += (r as f64 + ITEM_ZIPF_OFFSET).powf(-ITEM_ZIPF_EXP);
                acc
            })
            .collect();
        Self { by_rank, cdf }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> u32 {
        let x = rng.random::<f64>() * self.cdf[self.cdf.len() - 1];
        let r = self
            .cdf
            .partition_point(|&c| c <= x)
            .min(self.cdf.len() - 1);
        self.by_rank[r]
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

#[derive(Clone, Copy)]
struct Rec {
    item: u32,
    user: u32,
    /// Days since the Unix epoch.
    day: u32,
}

/// Draws every user's items (distinct) and days, then orders the reviews by item (stable, so
/// by user within an item), like the release.
fn draw_reviews(cfg: &GenConfig, counts: &[u32], pop: &ItemPopularity) -> Vec<Rec> {
    let mut rng = rng_for(cfg, 5);
    let total: usize = counts.iter().map(|&c| c as usize).sum();
    let mut recs: Vec<Rec> = Vec::with_capacity(total);
    // stamp[item] == user + 1 <=> the current user already reviewed it.
    let mut stamp = vec![0u32; cfg.items];
    let range = (LAST_DAY - FIRST_DAY) as f64;
    for (user, &count) in counts.iter().enumerate() {
        let mark = user as u32 + 1;
        let first_rec = recs.len();
        // Activity skews to the later years, as in the release; heavy users stay longer.
        let last_day = FIRST_DAY + (range * rng.random::<f64>().powf(0.3)) as i64;
        let span_mean = 150.0 + 25.0 * f64::from(count);
        let span = ((-uniform_open(&mut rng).ln() * span_mean) as i64).min(last_day - FIRST_DAY);
        for k in 0..count {
            let item = loop {
                let item = pop.sample(&mut rng);
                if stamp[item as usize] != mark {
                    stamp[item as usize] = mark;
                    break item;
                }
            };
            // ~20% of reviews land on the same day as an earlier review of the same user.
            let day = if k > 0 && rng.random_bool(0.2) {
                recs[rng.random_range(first_rec..recs.len())].day
            } else {
                (last_day - rng.random_range(0..=span)) as u32
            };
            recs.push(Rec {
                item,
                user: user as u32,
                day,
            });
        }
    }
    // Counting sort by item: stable, O(n).
    let mut starts = vec![0usize; cfg.items + 1];
    for r in &recs {
        starts[r.item as usize + 1] += 1;
    }
    for i in 0..cfg.items {
        starts[i + 1] += starts[i];
    }
    let mut sorted = vec![
        Rec {
            item: 0,
            user: 0,
            day: 0
        };
        recs.len()
    ];
    for r in &recs {
        let slot = &mut starts[r.item as usize];
        sorted[*slot] = *r;
        *slot += 1;
    }
    sorted
}

// ---------------------------------------------------------------------------------------------
// Reviews file

#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "the", "the", "a", "a", "and", "and", "to", "to", "of", "it", "it", "is", "is", "I", "I",
    "this", "this", "for", "for", "with", "with", "on", "my", "that", "in", "in", "was", "you",
    "but", "not", "have", "are", "as", "be", "so", "one", "very", "great", "good", "works", "work",
    "use", "used", "using", "just", "all", "can", "if", "will", "an", "would", "or", "at", "up",
    "no", "more", "from", "than", "like", "well", "when", "has", "out", "only", "get", "also",
    "had", "they", "them", "which", "after", "about", "what", "do", "does", "there", "product",
    "price", "quality", "sound", "cable", "cables", "battery", "charger", "charge", "case",
    "screen", "camera", "lens", "card", "drive", "USB", "HDMI", "Bluetooth", "headphones",
    "speaker", "speakers", "mouse", "keyboard", "laptop", "tablet", "phone", "iPad", "Kindle", "TV",
    "remote", "power", "adapter", "port", "mount", "router", "signal", "wireless", "wifi", "memory",
    "SD", "GB", "fast", "slow", "easy", "hard", "cheap", "expensive", "nice", "perfect",
    "excellent", "bad", "poor", "happy", "recommend", "recommended", "bought", "buy", "purchase",
    "purchased", "returned", "received", "arrived", "shipping", "Amazon", "seller", "box",
    "package", "install", "installed", "setup", "software", "driver", "drivers", "connect",
    "connected", "connection", "plug", "fit", "fits", "size", "small", "light", "heavy", "long",
    "short", "time", "times", "day", "days", "week", "month", "months", "year", "years", "after",
    "before", "still", "again", "really", "pretty", "little", "much", "better", "best", "worth",
    "money", "problem", "problems", "issue", "issues", "worked", "working", "stopped", "broke",
    "life", "volume", "bass", "clear", "clarity", "picture", "video", "photos", "color", "black",
    "white", "plastic", "metal", "build", "design", "feature", "features", "button", "buttons",
    "light", "LED", "display", "resolution", "1080p", "4K", "5\"", "7\"", "10\"", "\"great\"",
    "\"works\"", "C:\\drivers", "inch", "mm", "volts", "mAh", "car", "home", "office", "travel",
    "kids", "wife", "husband", "son", "daughter", "gift", "Christmas", "old", "new", "first",
    "second", "two", "three", "few", "many", "every", "some", "any", "other", "same", "different",
    "sure", "definitely", "highly", "overall", "exactly", "expected", "advertised", "described",
    "though", "however", "because", "enough", "too", "even", "never", "always", "don't", "doesn't",
    "can't", "it's", "I'm", "I've", "wasn't", "isn't",
];

#[rustfmt::skip]
const SUMMARIES: &[&str] = &[
    "Five Stars", "Five Stars", "Five Stars", "Four Stars", "Four Stars", "Three Stars",
    "Two Stars", "One Star", "Great product", "Works great", "Works as advertised", "Good value",
    "Excellent", "Love it!", "Not bad", "Does the job", "Great for the price", "Perfect",
    "Disappointed", "Stopped working after a month", "Exactly what I needed", "Highly recommend",
    "Solid build", "Cheap but works", "Meh", "Returned it", "Better than expected",
    "Not as described", "Great \"bang for the buck\"", "Kid's favorite",
    "Fast shipping, works fine", "Pretty good",
];

/// JSON string content (no quotes): escapes `"`, `\` and control characters.
fn json_escape_into(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
}

fn escaped_table(words: &[&str]) -> Vec<Vec<u8>> {
    words
        .iter()
        .map(|w| {
            let mut v = Vec::with_capacity(w.len() + 2);
            json_escape_into(w, &mut v);
            v
        })
        .collect()
}

/// (year, month, day) of a day number since the Unix epoch (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The release's `reviewTime`: zero-padded month, unpadded day, e.g. "09 13, 2009", "01 1, 2011".
fn review_time(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{m:02} {d}, {y}")
}

/// Appends ~`target` characters of sentences built from the word table.
fn push_text(out: &mut Vec<u8>, target: usize, words: &[Vec<u8>], rng: &mut ChaCha8Rng) {
    let start = out.len();
    let mut capitalize = true;
    let mut bits = 0u64;
    let mut left = 0u32;
    while out.len() - start < target {
        if left == 0 {
            bits = rng.next_u64();
            left = 4;
        }
        let chunk = (bits & 0xffff) as usize;
        bits >>= 16;
        left -= 1;
        if out.len() > start {
            out.push(b' ');
        }
        let at = out.len();
        out.extend_from_slice(&words[((chunk & 0xff) * words.len()) >> 8]);
        if capitalize {
            out[at] = out[at].to_ascii_uppercase();
        }
        // ~8% of words end a sentence.
        capitalize = (chunk >> 8) < 21;
        if capitalize {
            out.push(if chunk & 0x100 == 0 { b'.' } else { b'!' });
        }
    }
    if !capitalize && out.len() > start {
        out.push(b'.');
    }
}

fn write_reviews(
    cfg: &GenConfig,
    path: &Path,
    recs: &[Rec],
    users: &[User],
    asins: &[[u8; 7]],
) -> Result<usize> {
    let mut rng = rng_for(cfg, 6);
    let words = escaped_table(WORDS);
    let summaries = escaped_table(SUMMARIES);
    let dates: Vec<String> = (FIRST_DAY..=LAST_DAY).map(review_time).collect();
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(BUF_CAPACITY, file);
    let mut line: Vec<u8> = Vec::with_capacity(1 << 16);
    let text_mean = cfg.review_text_chars.max(20) as f64;
    for r in recs {
        let user = &users[r.user as usize];
        line.clear();
        line.extend_from_slice(b"{\"reviewerID\": \"A");
        line.extend_from_slice(&user.id);
        line.extend_from_slice(b"\", \"asin\": \"B00");
        line.extend_from_slice(&asins[r.item as usize]);
        line.extend_from_slice(b"\", \"reviewerName\": \"");
        line.extend_from_slice(user.name_json.as_bytes());
        let (up, total) = match rng.random_range(0..100u32) {
            0..=59 => (0, 0),
            p => {
                let total =
                    1 + (-uniform_open(&mut rng).ln() * if p >= 97 { 40.0 } else { 4.0 }) as u32;
                (rng.random_range(0..=total), total)
            }
        };
        write!(line, "\", \"helpful\": [{up}, {total}], \"reviewText\": \"")?;
        // Exponential lengths with a floor of ~20 characters and mean ~text_mean.
        let len = 20.0 + (-uniform_open(&mut rng).ln() * (text_mean - 20.0)).min(30.0 * text_mean);
        push_text(&mut line, len as usize, &words, &mut rng);
        let overall = match rng.random_range(0..100u32) {
            0..=6 => 1,
            7..=11 => 2,
            12..=20 => 3,
            21..=42 => 4,
            _ => 5,
        };
        write!(line, "\", \"overall\": {overall}.0, \"summary\": \"")?;
        if rng.random_bool(0.7) {
            line.extend_from_slice(&summaries[rng.random_range(0..summaries.len())]);
        } else {
            let n = rng.random_range(10..40);
            push_text(&mut line, n, &words, &mut rng);
            line.pop(); // no trailing period, like most summaries
        }
        let day = i64::from(r.day);
        write!(
            line,
            "\", \"unixReviewTime\": {}, \"reviewTime\": \"",
            day * SECONDS_PER_DAY
        )?;
        line.extend_from_slice(dates[(day - FIRST_DAY) as usize].as_bytes());
        line.extend_from_slice(b"\"}\n");
        w.write_all(&line)?;
    }
    w.flush()?;
    Ok(recs.len())
}

// ---------------------------------------------------------------------------------------------
// Meta file

#[rustfmt::skip]
const LEAF_BASES: &[&str] = &[
    "Cables & Adapters", "Headphones", "Earbud Headphones", "Over-Ear Headphones", "Memory Cards",
    "USB Flash Drives", "Internal Hard Drives", "External Hard Drives", "Mice", "Keyboards",
    "Laptop Bags", "Sleeves", "Screen Protectors", "Cases", "Chargers & Adapters", "Power Strips",
    "Surge Protectors", "Batteries", "Car Chargers", "Bluetooth Speakers", "Portable Speakers",
    "Home Theater Systems", "Soundbars", "Antennas", "Remote Controls", "HDMI Cables", "Routers",
    "Network Adapters", "Webcams", "Monitors", "Monitor Accessories", "Tripods", "Camera Bags",
    "Lenses", "Flashes", "Lens Filters", "Cleaning Kits", "GPS Units", "Dash Cams", "Car Audio",
    "Kids' Tablets", "Kids' Headphones", "Men's Watches", "Women's Watches", "eBook Readers",
    "Styluses", "Mounts", "Stands", "Docking Stations", "Sound Cards", "Graphics Cards",
    "Cooling Pads", "Microphones", "MP3 Players", "Radios", "Telephones", "Projectors",
    "Printer Ink", "Scanners", "Hubs",
];
#[rustfmt::skip]
const MID_CATEGORIES: &[&str] = &[
    "Computers & Accessories", "Accessories & Supplies", "Camera & Photo", "Portable Audio & Video",
    "Home Audio", "Television & Video", "Car & Vehicle Electronics", "Cell Phones & Accessories",
    "Wearable Technology", "Office Electronics", "GPS & Navigation", "Video Games",
];
#[rustfmt::skip]
const SECONDARY: &[&str] = &[
    "Electronics Features", "Accessories & Supplies", "Audio & Video Accessories",
    "Computer Accessories & Peripherals", "Power Accessories", "Cables",
    "Touch Screen Tablet Accessories",
];
#[rustfmt::skip]
const BRANDS: &[&str] = &[
    "Sony", "Logitech", "Samsung", "SanDisk", "AmazonBasics", "Belkin", "Anker", "Kingston",
    "Canon", "Panasonic", "JVC", "Philips", "Monster", "Case Logic", "Targus", "Generic",
];
#[rustfmt::skip]
const TITLE_ADJ: &[&str] = &[
    "Premium", "Ultra Slim", "Portable", "Wireless", "Heavy Duty", "Compact", "Universal", "Rugged",
    "High Speed", "Noise Cancelling", "Rechargeable", "Deluxe",
];
#[rustfmt::skip]
const TITLE_NOUNS: &[&str] = &[
    "Tablet Case", "HDMI Cable", "Bluetooth Speaker", "Wall Charger", "Car Mount", "Headphones",
    "Keyboard", "Optical Mouse", "Memory Card", "USB Hub", "Screen Protector", "Camera Bag",
    "Power Bank", "Stylus Pen", "Laptop Sleeve", "Earbuds", "Antenna", "Surge Protector",
];

/// A Python `repr` of an ASCII string, as Python 3 writes it: single quotes unless the string
/// contains `'` and no `"`.
fn py_repr_into(s: &str, out: &mut Vec<u8>) {
    let quote = if s.contains('\'') && !s.contains('"') {
        b'"'
    } else {
        b'\''
    };
    out.push(quote);
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\x");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ if b == quote => {
                out.push(b'\\');
                out.push(b);
            }
            _ => out.push(b),
        }
    }
    out.push(quote);
}

/// Python's `repr(cents / 100)`: shortest round-trip form, e.g. 12.99, 12.9, 13.0.
fn push_price(cents: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    let (whole, frac) = (cents / 100, cents % 100);
    if frac == 0 {
        write!(out, "{whole}.0")
    } else if frac % 10 == 0 {
        write!(out, "{whole}.{}", frac / 10)
    } else {
        write!(out, "{whole}.{frac:02}")
    }
}

fn leaf_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let base = LEAF_BASES[i % LEAF_BASES.len()];
            match i / LEAF_BASES.len() {
                0 => base.to_string(),
                k => format!("{base} {k}"),
            }
        })
        .collect()
}

fn push_asin(out: &mut Vec<u8>, asin: &[u8; 7]) {
    out.extend_from_slice(b"'B00");
    out.extend_from_slice(asin);
    out.push(b'\'');
}

fn write_meta(
    cfg: &GenConfig,
    path: &Path,
    recs: &[Rec],
    asins: &[[u8; 7]],
    pop: &ItemPopularity,
) -> Result<usize> {
    let mut rng = rng_for(cfg, 7);
    let mut used = vec![false; cfg.items];
    for r in recs {
        used[r.item as usize] = true;
    }
    let leaves = leaf_names(cfg.categories);
    // Mild Zipf over a random order of the leaves, so every leaf is used at scale.
    let mut leaf_order: Vec<u32> = (0..cfg.categories as u32).collect();
    shuffle(&mut leaf_order, &mut rng);
    let mut acc = 0.0;
    let leaf_cdf: Vec<f64> = (0..cfg.categories)
        .map(|r| {
            acc += (r as f64 + 1.0).powf(-0.7);
            acc
        })
        .collect();

    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(BUF_CAPACITY, file);
    let mut line: Vec<u8> = Vec::with_capacity(4096);
    let mut title = String::new();
    let mut picked: Vec<u32> = Vec::with_capacity(32);
    let mut lines = 0;
    // Popularity-rank order: a random order of the items.
    for (rank, &item) in pop.by_rank.iter().enumerate() {
        if !used[item as usize] {
            continue;
        }
        line.clear();
        line.extend_from_slice(b"{'asin': ");
        push_asin(&mut line, &asins[item as usize]);

        if rng.random_bool(0.99) {
            title.clear();
            match rng.random_range(0..100u32) {
                0..=7 => title.push_str("Kid's "),
                8..=11 => title.push_str("Women's "),
                _ => {}
            }
            title.push_str(BRANDS[rng.random_range(0..BRANDS.len())]);
            title.push(' ');
            title.push_str(TITLE_ADJ[rng.random_range(0..TITLE_ADJ.len())]);
            title.push(' ');
            if rng.random_bool(0.1) {
                // Both quote kinds when combined with "Kid's": repr escapes the single quote.
                title.push_str(["7\" ", "10\" ", "13.3\" "][rng.random_range(0..3)]);
            }
            title.push_str(TITLE_NOUNS[rng.random_range(0..TITLE_NOUNS.len())]);
            if rng.random_bool(0.2) {
                title.push_str(" - Black");
            }
            line.extend_from_slice(b", 'title': ");
            py_repr_into(&title, &mut line);
        }
        if rng.random_bool(0.97) {
            line.extend_from_slice(b", 'price': ");
            let dollars = (800f64.ln() * rng.random::<f64>().powf(1.6)).exp();
            let mut cents = (dollars * 100.0).round() as u64;
            if rng.random_bool(0.6) {
                cents = (cents / 100) * 100 + 99;
            }
            push_price(cents.max(1), &mut line)?;
        }
        line.extend_from_slice(b", 'imUrl': 'http://ecx.images-amazon.com/images/I/");
        for _ in 0..11 {
            const MIXED: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-%";
            line.push(MIXED[rng.random_range(0..MIXED.len())]);
        }
        line.extend_from_slice(b"._SY300_.jpg'");

        if rng.random_bool(0.95) {
            line.extend_from_slice(b", 'related': {");
            let mut first = true;
            for (key, max) in [
                ("also_bought", 30usize),
                ("also_viewed", 20),
                ("bought_together", 3),
            ] {
                // Distinct other items (there are >= 9).
                let n = rng.random_range(0..=max.min(asins.len() - 1));
                if n == 0 && !(first && key == "bought_together") {
                    continue;
                }
                if !first {
                    line.extend_from_slice(b", ");
                }
                first = false;
                write!(line, "'{key}': [")?;
                picked.clear();
                while picked.len() < n.max(1) {
                    let other = rng.random_range(0..asins.len()) as u32;
                    if other == item || picked.contains(&other) {
                        continue;
                    }
                    if !picked.is_empty() {
                        line.extend_from_slice(b", ");
                    }
                    picked.push(other);
                    push_asin(&mut line, &asins[other as usize]);
                }
                line.push(b']');
            }
            line.push(b'}');
        }
        if rng.random_bool(0.97) {
            // Popular items sell better, with noise.
            let base = 50.0 + 2_000.0 * rank as f64;
            let sales_rank = (base * (0.3 + 1.4 * rng.random::<f64>())) as u64 + 1;
            write!(line, ", 'salesRank': {{'Electronics': {sales_rank}}}")?;
        }
        if rng.random_bool(0.3) {
            line.extend_from_slice(b", 'brand': ");
            py_repr_into(BRANDS[rng.random_range(0..BRANDS.len())], &mut line);
        }
        if rng.random_bool(0.99) {
            let x = rng.random::<f64>() * leaf_cdf[leaf_cdf.len() - 1];
            let r = leaf_cdf
                .partition_point(|&c| c <= x)
                .min(leaf_cdf.len() - 1);
            let leaf_idx = leaf_order[r] as usize;
            let leaf = &leaves[leaf_idx];
            line.extend_from_slice(b", 'categories': [");
            if rng.random_bool(0.35) {
                line.extend_from_slice(b"['Electronics', ");
                py_repr_into(SECONDARY[rng.random_range(0..SECONDARY.len())], &mut line);
                line.extend_from_slice(b"], ");
            }
            // The DIN rule reads the last element of this, the last path.
            line.extend_from_slice(b"['Electronics', ");
            py_repr_into(MID_CATEGORIES[leaf_idx % MID_CATEGORIES.len()], &mut line);
            if rng.random_bool(0.3) {
                line.extend_from_slice(b", ");
                py_repr_into(SECONDARY[leaf_idx % SECONDARY.len()], &mut line);
            }
            line.extend_from_slice(b", ");
            py_repr_into(leaf, &mut line);
            line.extend_from_slice(b"]]");
        }
        line.extend_from_slice(b"}\n");
        w.write_all(&line)?;
        lines += 1;
    }
    w.flush()?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("mtrec-gen-amazon-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            Self(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The string value after `"key": "` (still JSON-escaped).
    fn field<'a>(line: &'a str, key: &str) -> &'a str {
        let pat = format!("\"{key}\": \"");
        let start = line
            .find(&pat)
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            + pat.len();
        let len = line[start..].find('"').unwrap();
        &line[start..start + len]
    }

    #[test]
    fn small_output_is_well_formed_5_core() {
        let tmp = TempDir::new("small");
        let cfg = GenConfig::small();
        let out = generate(&cfg, &tmp.0, "Small").unwrap();
        assert_eq!(out.reviews_path, tmp.0.join("reviews_Small_5.json"));
        assert_eq!(out.meta_path, tmp.0.join("meta_Small.json"));
        assert_eq!(
            out.reviews,
            (cfg.users as f64 * cfg.mean_reviews_per_user).round() as usize
        );

        let reviews = std::fs::read_to_string(&out.reviews_path).unwrap();
        let mut per_user: HashMap<&str, HashSet<&str>> = HashMap::new();
        let mut n = 0;
        let mut ties = 0;
        let mut user_days: HashMap<&str, HashSet<&str>> = HashMap::new();
        for line in reviews.lines() {
            n += 1;
            assert!(line.starts_with("{\"reviewerID\": \"A"), "{line}");
            assert!(line.ends_with('}'), "{line}");
            let user = field(line, "reviewerID");
            let asin = field(line, "asin");
            assert_eq!(user.len(), 14);
            assert!(asin.len() == 10 && asin.starts_with("B00"), "{asin}");
            assert!(
                per_user.entry(user).or_default().insert(asin),
                "{user} reviewed {asin} twice"
            );
            let t = line.find("\"unixReviewTime\": ").unwrap() + 18;
            let secs: i64 = line[t..t + line[t..].find(',').unwrap()].parse().unwrap();
            assert_eq!(secs % SECONDS_PER_DAY, 0);
            assert!((946_684_800..1_420_070_400).contains(&secs), "{secs}");
            let date = field(line, "reviewTime");
            assert_eq!(date, review_time(secs / SECONDS_PER_DAY));
            if !user_days.entry(user).or_default().insert(date) {
                ties += 1;
            }
        }
        assert_eq!(n, out.reviews);
        assert_eq!(per_user.len(), cfg.users);
        assert!(per_user.values().all(|items| items.len() >= 5));
        assert!(ties > 0, "expected same-day reviews");
        assert!(reviews.contains("\\\""), "expected escaped quotes");

        let used: HashSet<&str> = per_user.values().flatten().copied().collect();
        assert!(
            used.len() * 10 >= cfg.items * 9,
            "only {} of {} items used",
            used.len(),
            cfg.items
        );
        let meta = std::fs::read_to_string(&out.meta_path).unwrap();
        let mut meta_asins = HashSet::new();
        for line in meta.lines() {
            assert!(
                line.starts_with("{'asin': 'B00") && line.ends_with('}'),
                "{line}"
            );
            meta_asins.insert(&line[10..20]);
        }
        assert_eq!(meta.lines().count(), out.meta_lines);
        assert_eq!(meta_asins, used);
        assert!(meta.contains("'categories': [["));
    }

    #[test]
    fn deterministic_per_seed() {
        let (a, b) = (TempDir::new("det-a"), TempDir::new("det-b"));
        let cfg = GenConfig {
            users: 50,
            items: 60,
            ..GenConfig::small()
        };
        let oa = generate(&cfg, &a.0, "X").unwrap();
        let ob = generate(&cfg, &b.0, "X").unwrap();
        let read = |p: &Path| std::fs::read(p).unwrap();
        assert_eq!(read(&oa.reviews_path), read(&ob.reviews_path));
        assert_eq!(read(&oa.meta_path), read(&ob.meta_path));
        let oc = generate(
            &GenConfig {
                seed: cfg.seed + 1,
                ..cfg
            },
            &b.0,
            "X",
        )
        .unwrap();
        assert_ne!(read(&oa.reviews_path), read(&oc.reviews_path));
    }

    #[test]
    fn dates_and_quoting() {
        assert_eq!(review_time(1_252_800_000 / SECONDS_PER_DAY), "09 13, 2009");
        assert_eq!(review_time(FIRST_DAY), "01 1, 2000");
        assert_eq!(review_time(LAST_DAY), "07 23, 2014");
        assert_eq!(review_time(11_016), "02 29, 2000");
        let repr = |s: &str| {
            let mut v = Vec::new();
            py_repr_into(s, &mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(repr("Kid's Tablet Case"), "\"Kid's Tablet Case\"");
        assert_eq!(repr("Kid's 7\" Case"), "'Kid\\'s 7\" Case'");
        assert_eq!(repr("a\\b"), "'a\\\\b'");
        let mut j = Vec::new();
        json_escape_into("a\"b\\c\n\u{1}", &mut j);
        assert_eq!(j, b"a\\\"b\\\\c\\n\\u0001");
        let price = |c| {
            let mut v = Vec::new();
            push_price(c, &mut v).unwrap();
            String::from_utf8(v).unwrap()
        };
        assert_eq!(
            [price(1299), price(1290), price(1300), price(5)],
            ["12.99", "12.9", "13.0", "0.05"]
        );
    }

    #[test]
    fn rejects_bad_configs() {
        let tmp = TempDir::new("bad");
        assert!(generate(
            &GenConfig {
                mean_reviews_per_user: 4.0,
                ..GenConfig::small()
            },
            &tmp.0,
            "x"
        )
        .is_err());
    }
}
