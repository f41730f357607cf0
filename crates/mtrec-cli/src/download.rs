//! Opt-in download of the raw Amazon 2014 files of the paper's Table 1 (McAuley et al. 2015). Never
//! used by the default path or by tests against the network: it runs only when a user asks for it.
//! `curl` does the transfer; each file is checked to be a complete gzip stream before it is renamed
//! into place, so an interrupted download never leaves a file that looks finished.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

/// Where the 2014 release's category files are published (the same address DIN's scripts use).
const DEFAULT_BASE: &str = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles";

#[derive(Args)]
pub struct DownloadArgs {
    /// electronics or books.
    #[arg(long)]
    dataset: String,
    /// Folder to download into (git-ignored cache).
    #[arg(long, default_value = "data/cache/amazon2014")]
    dir: PathBuf,
    /// Base address of the files (e.g. a mirror, or file:///path for an offline copy).
    #[arg(long, default_value = DEFAULT_BASE)]
    base_url: String,
    /// Download again even if the files are present.
    #[arg(long)]
    force: bool,
}

/// The two files of a dataset: 5-core reviews and meta.
pub fn files_of(dataset: &str) -> Result<[String; 2]> {
    let cat = match dataset.to_ascii_lowercase().as_str() {
        "electronics" => "Electronics",
        "books" => "Books",
        other => bail!("unknown dataset '{other}' (expected electronics or books)"),
    };
    Ok([
        format!("reviews_{cat}_5.json.gz"),
        format!("meta_{cat}.json.gz"),
    ])
}

pub fn run(args: DownloadArgs) -> Result<()> {
    let files = files_of(&args.dataset)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    for name in &files {
        let target = args.dir.join(name);
        if target.exists() && !args.force {
            tracing::info!(
                "{} is present (use --force to fetch it again)",
                target.display()
            );
            continue;
        }
        let url = format!("{}/{}", args.base_url.trim_end_matches('/'), name);
        let partial = args.dir.join(format!("{name}.part"));
        tracing::info!("downloading {url}");
        let status = Command::new("curl")
            .args(["-fL", "--retry", "3", "--progress-bar", "-o"])
            .arg(&partial)
            .arg(&url)
            .status()
            .context("running curl (is it installed?)")?;
        if !status.success() {
            let _ = std::fs::remove_file(&partial);
            bail!("curl failed for {url} ({status})");
        }
        verify_gzip(&partial).with_context(|| format!("{url} did not arrive whole"))?;
        std::fs::rename(&partial, &target)
            .with_context(|| format!("renaming into {}", target.display()))?;
        let sha = mtrec_data::io::sha256_file(&target)?;
        tracing::info!(
            "{} ({} bytes, sha256 {sha})",
            target.display(),
            std::fs::metadata(&target)?.len()
        );
    }
    println!(
        "done; prepare with:\n  mtrec prepare --format amazon-json {} {} --out data/prepared/{}",
        args.dir.join(&files[0]).display(),
        args.dir.join(&files[1]).display(),
        args.dataset.to_ascii_lowercase()
    );
    Ok(())
}

/// Decompresses the whole file to check that it is a complete gzip stream.
fn verify_gzip(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path)?;
    let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = dec
            .read(&mut buf)
            .context("gzip stream is corrupt or truncated")?;
        if n == 0 {
            return Ok(());
        }
    }
}
