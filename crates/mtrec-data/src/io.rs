//! File helpers: transparent gzip, line iteration that accepts CRLF, SHA-256 of inputs, and atomic
//! writes (temp name, then rename) so that an interrupted run never leaves a half-written output.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// True when the file starts with the gzip magic bytes (the name is not trusted).
pub fn is_gzip(path: &Path) -> Result<bool> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        let n = f
            .read(&mut magic[got..])
            .map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            return Ok(false);
        }
        got += n;
    }
    Ok(magic == GZIP_MAGIC)
}

/// A buffered reader over a plain or gzip-compressed file.
pub fn open_maybe_gz(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let gz = is_gzip(path)?;
    let f = File::open(path).map_err(|e| DataError::io(path, e))?;
    if gz {
        Ok(Box::new(BufReader::with_capacity(
            1 << 20,
            MultiGzDecoder::new(BufReader::with_capacity(1 << 20, f)),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
    }
}

/// Turns an I/O error met while reading `path` into a [`DataError`], recognising gzip corruption.
pub(crate) fn read_error(path: &Path, gz: bool, e: std::io::Error) -> DataError {
    if gz
        && matches!(
            e.kind(),
            std::io::ErrorKind::InvalidInput
                | std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::UnexpectedEof
        )
    {
        DataError::Gzip {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    } else {
        DataError::io(path, e)
    }
}

/// Reads a text file (plain or gzip) line by line, calling `f(line_number, line)` with the line number
/// 1-based and the line without its `\n` or `\r\n`. Stops at the first error `f` returns.
pub fn for_each_line(path: &Path, mut f: impl FnMut(u64, &str) -> Result<()>) -> Result<()> {
    let gz = is_gzip(path)?;
    let mut reader = open_maybe_gz(path)?;
    let mut buf = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| read_error(path, gz, e))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let mut end = buf.len();
        if end > 0 && buf[end - 1] == b'\n' {
            end -= 1;
        }
        if end > 0 && buf[end - 1] == b'\r' {
            end -= 1;
        }
        let line = std::str::from_utf8(&buf[..end])
            .map_err(|e| DataError::parse(path, line_no, None, format!("not valid UTF-8: {e}")))?;
        f(line_no, line)?;
    }
}

/// SHA-256 of a file's bytes as lowercase hex (of the file as stored, compressed or not).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".mtrec-").suffix(".tmp");
    // An ordinary file's mode (rw-r--r-- less the umask), not the temporary file's private 0600:
    // results and datasets are meant to be read by others.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let mut tmp = builder
        .tempfile_in(&dir)
        .map_err(|e| DataError::io(&dir, e))?;
    tmp.write_all(bytes).map_err(|e| DataError::io(path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| DataError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| DataError::io(path, e.error))?;
    Ok(())
}

/// A folder being built under a temporary name beside its final place; [`StagedDir::commit`] renames
/// it into place. Dropped without commit, it is removed, so a failed run leaves nothing behind.
pub struct StagedDir {
    tmp: Option<tempfile::TempDir>,
    target: PathBuf,
}

impl StagedDir {
    /// Starts staging `target`. Fails if `target` exists and `overwrite` is false.
    pub fn new(target: &Path, overwrite: bool) -> Result<Self> {
        if target.exists() && !overwrite {
            return Err(DataError::Invalid(format!(
                "{} already exists (pass --force to replace it)",
                target.display()
            )));
        }
        let parent = parent_dir(target);
        std::fs::create_dir_all(&parent).map_err(|e| DataError::io(&parent, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".mtrec-staging-")
            .tempdir_in(&parent)
            .map_err(|e| DataError::io(&parent, e))?;
        Ok(StagedDir {
            tmp: Some(tmp),
            target: target.to_path_buf(),
        })
    }

    /// Where to write the folder's files now.
    pub fn path(&self) -> &Path {
        self.tmp.as_ref().map(|t| t.path()).unwrap_or(&self.target)
    }

    /// Moves the staged folder into place, replacing an old one only after the new one is complete.
    pub fn commit(mut self) -> Result<PathBuf> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(self.target.clone());
        };
        let staged = tmp.keep();
        if self.target.exists() {
            let old = staged.with_extension("old");
            std::fs::rename(&self.target, &old).map_err(|e| DataError::io(&self.target, e))?;
            std::fs::rename(&staged, &self.target).map_err(|e| DataError::io(&self.target, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| DataError::io(&old, e))?;
        } else {
            std::fs::rename(&staged, &self.target).map_err(|e| DataError::io(&self.target, e))?;
        }
        Ok(self.target.clone())
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    /// Written files get an ordinary file's mode (the umask applied), not the temp file's 0600.
    #[cfg(unix)]
    #[test]
    fn atomic_writes_get_an_ordinary_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let umasked = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
        let p = dir.path().join("out.json");
        write_atomic(&p, b"{}").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, umasked & 0o644, "{mode:o} vs {umasked:o}");
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
    }

    #[test]
    fn lines_accept_crlf_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.txt");
        std::fs::write(&plain, b"x\r\ny\n\nz").unwrap();
        let mut seen = Vec::new();
        for_each_line(&plain, |n, l| {
            seen.push((n, l.to_owned()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (1, "x".into()),
                (2, "y".into()),
                (3, "".into()),
                (4, "z".into())
            ]
        );

        let gz = dir.path().join("a.gz");
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"x\r\ny\n").unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let mut n_lines = 0;
        for_each_line(&gz, |_, _| {
            n_lines += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n_lines, 2);
    }

    #[test]
    fn corrupt_gzip_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.json.gz");
        std::fs::write(&bad, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff]).unwrap();
        let err = for_each_line(&bad, |_, _| Ok(())).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err}");
        assert!(err.to_string().contains("bad.json.gz"));
    }

    #[test]
    fn staged_dir_replaces_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("old"), b"1").unwrap();
        assert!(StagedDir::new(&target, false).is_err());
        {
            let staged = StagedDir::new(&target, true).unwrap();
            std::fs::write(staged.path().join("new"), b"2").unwrap();
            // dropped without commit
        }
        assert!(target.join("old").exists());
        let staged = StagedDir::new(&target, true).unwrap();
        std::fs::write(staged.path().join("new"), b"2").unwrap();
        staged.commit().unwrap();
        assert!(!target.join("old").exists());
        assert!(target.join("new").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn sha256_known_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
