//! Logs in `logs/{name}.log`, line by line, rotated by size (`{name}.log.1` is the newest rotated
//! file): the edge agent's modules' standard output and error, and the gateway's own log (written
//! whoever runs it); and reading them back for `ferrohub edge logs`: the last lines, and following
//! a file across rotations. Here, in the gateway's crate, so agent and gateway share one writer.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Size limits of one module's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// A file is rotated when a line would take it past this size.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`.1` … `.N`).
    #[serde(default = "default_files")]
    pub files: u32,
}

fn default_max_bytes() -> u64 {
    1024 * 1024
}

fn default_files() -> u32 {
    3
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            files: default_files(),
        }
    }
}

/// Longest line kept whole; longer output is split into lines of this size.
pub const MAX_LINE: usize = 64 * 1024;

/// An append-only log file that rotates itself.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    settings: LogSettings,
}

impl RotatingLog {
    /// Opens `path` for appending (creating its directory).
    pub fn open(path: &Path, settings: LogSettings) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            settings,
        })
    }

    /// Appends one line (a newline is added when missing), rotating first when it would not fit.
    pub fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let newline = !line.ends_with(b"\n");
        let len = line.len() as u64 + u64::from(newline);
        if self.size > 0 && self.size + len > self.settings.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        if newline {
            self.file.write_all(b"\n")?;
        }
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let n = self.settings.files;
        if n == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(numbered(&self.path, n));
        for i in (1..n).rev() {
            let from = numbered(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// `path.N`.
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The log files of `path`, oldest first (rotated ones, then `path` itself), those that exist.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<PathBuf> = (1..=100)
        .map(|i| numbered(path, i))
        .take_while(|p| p.exists())
        .collect();
    rotated.reverse();
    if path.exists() {
        rotated.push(path.to_owned());
    }
    rotated
}

/// The last `n` lines over `path` and its rotated files (all of them when `n` is `None`).
pub fn tail(path: &Path, n: Option<usize>) -> std::io::Result<Vec<String>> {
    let mut lines: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for f in files(path) {
        let bytes = std::fs::read(&f)?;
        for line in bytes.split(|b| *b == b'\n') {
            lines.push_back(String::from_utf8_lossy(line).into_owned());
            if n.is_some_and(|n| lines.len() > n + 1) {
                lines.pop_front();
            }
        }
        // `split` yields an empty piece after a final newline.
        if bytes.ends_with(b"\n") || bytes.is_empty() {
            lines.pop_back();
        }
    }
    if let Some(n) = n {
        while lines.len() > n {
            lines.pop_front();
        }
    }
    Ok(lines.into())
}

/// Reads what is appended to a log file, across rotations.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    inode: Option<u64>,
    offset: u64,
}

impl Follower {
    /// Starts at the current end of `path`.
    pub fn at_end(path: &Path) -> Self {
        let meta = std::fs::metadata(path).ok();
        Self {
            path: path.to_owned(),
            inode: meta.as_ref().map(std::os::unix::fs::MetadataExt::ino),
            offset: meta.map_or(0, |m| m.len()),
        }
    }

    /// What was written since the last call. After a rotation it reads the rest of the rotated
    /// file (`path.1`), then the new file from its start.
    pub fn poll(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        if self.inode.is_some_and(|i| i != meta.ino()) {
            let old = numbered(&self.path, 1);
            if std::fs::metadata(&old).is_ok_and(|m| Some(m.ino()) == self.inode) {
                read_from(&old, self.offset, &mut out)?;
            }
            self.offset = 0;
        } else if meta.len() < self.offset {
            self.offset = 0; // truncated
        }
        self.inode = Some(meta.ino());
        self.offset += read_from(&self.path, self.offset, &mut out)?;
        Ok(out)
    }
}

fn read_from(path: &Path, offset: u64, out: &mut Vec<u8>) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let n = f.read_to_end(out)?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/m.log");
        let mut log = RotatingLog::open(
            &path,
            LogSettings {
                max_bytes: 20,
                files: 2,
            },
        )
        .unwrap();
        for i in 0..10 {
            log.write_line(format!("line {i}").as_bytes()).unwrap();
        }
        // 7 bytes a line, 2 lines a file: 5 files' worth, of which 3 are kept.
        assert_eq!(files(&path).len(), 3);
        assert!(!numbered(&path, 3).exists());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line 8\nline 9\n");
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 1)).unwrap(),
            "line 6\nline 7\n"
        );
        assert_eq!(
            tail(&path, Some(3)).unwrap(),
            ["line 7", "line 8", "line 9"]
        );
        assert_eq!(tail(&path, None).unwrap().len(), 6);
        assert_eq!(tail(&path, Some(0)).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_follower_reads_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.log");
        let settings = LogSettings {
            max_bytes: 12,
            files: 1,
        };
        let mut log = RotatingLog::open(&path, settings).unwrap();
        log.write_line(b"old").unwrap();
        let mut f = Follower::at_end(&path);
        assert!(f.poll().unwrap().is_empty());
        log.write_line(b"a1").unwrap();
        log.write_line(b"a2").unwrap(); // file: old a1 a2 = 10 bytes
        log.write_line(b"b1").unwrap(); // rotates
        assert_eq!(f.poll().unwrap(), b"a1\na2\nb1\n");
        log.write_line(b"b2").unwrap();
        assert_eq!(f.poll().unwrap(), b"b2\n");
    }

    #[test]
    fn tail_of_a_missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            tail(&dir.path().join("none.log"), Some(5))
                .unwrap()
                .is_empty()
        );
    }
}
