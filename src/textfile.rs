//! Small text files read whole (a prompt template, `msgbatch.toml`, a price file), each with a
//! bound: a larger file, or an endless stream such as `/dev/zero`, is refused after no more
//! than the bound has been read.

use std::io::{self, Read};
use std::path::Path;

/// The most a prompt template may hold.
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;
/// The most `msgbatch.toml` may hold.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// The most a price file may hold (the built-in table is a few KB).
pub const MAX_PRICES_BYTES: usize = 4 << 20;

/// Reads the text of `path`, refusing it once it passes `limit` bytes. The error names no
/// path: the caller says which file it was.
pub fn read(path: &Path, limit: usize) -> io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {}", shown(limit)),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// A bound as a person reads it: `1 MB`, `512 KB`.
fn shown(limit: usize) -> String {
    if limit >= 1 << 20 {
        format!("{} MB", limit >> 20)
    } else {
        format!("{} KB", limit >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_past_its_bound_and_an_endless_stream_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.txt");
        std::fs::write(&path, "x".repeat(2048)).unwrap();
        assert_eq!(read(&path, 2048).unwrap().len(), 2048);
        let error = read(&path, 2047).unwrap_err().to_string();
        assert_eq!(error, "larger than 1 KB");
        if Path::new("/dev/zero").exists() {
            let error = read(Path::new("/dev/zero"), 1 << 20).unwrap_err();
            assert_eq!(error.to_string(), "larger than 1 MB");
        }
        std::fs::write(&path, b"\xff\xfe").unwrap();
        assert_eq!(read(&path, 10).unwrap_err().to_string(), "not UTF-8 text");
    }
}
