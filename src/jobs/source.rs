//! Opening a job file as given: a path or standard input, plain or compressed.
//!
//! The bytes are hashed as they arrive, before decompression, so that the run's sha256 is of
//! the file the user has. Compression is found by the file's extension (`.gz`, `.zst`) or by
//! its first bytes, and undone as a stream: memory does not grow with the file.

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::LoadError;

/// How a job file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a file name announces.
    pub fn from_extension(path: &Path) -> Self {
        match extension(path).as_deref() {
            Some("gz" | "gzip") => Self::Gzip,
            Some("zst" | "zstd") => Self::Zstd,
            _ => Self::None,
        }
    }

    /// The compression the first bytes of a file show.
    fn from_magic(prefix: &[u8]) -> Self {
        match prefix {
            [0x1f, 0x8b, ..] => Self::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::Zstd,
            _ => Self::None,
        }
    }

    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Gzip => Some("gzip"),
            Self::Zstd => Some("zstd"),
        }
    }
}

/// A file's extension, lower-cased.
pub fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// Formats the first bytes show that msgbatch cannot read, with what to do instead.
fn unreadable(prefix: &[u8]) -> Option<&'static str> {
    match prefix {
        [b'B', b'Z', b'h', ..] => Some("bzip2"),
        [0xfd, b'7', b'z', b'X', b'Z', ..] => Some("xz"),
        [b'P', b'K', 0x03, 0x04, ..] => Some("a zip archive"),
        [b'7', b'z', 0xbc, 0xaf, ..] => Some("a 7z archive"),
        _ => None,
    }
}

/// Counts and hashes the bytes of the file as given.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The error number of a loop of symbolic links (`ELOOP`): 40 on Linux, 62 on the BSDs and
/// macOS.
const ELOOP: i32 = if cfg!(target_os = "linux") { 40 } else { 62 };

/// Checks that `path` names something a job file can be read from: standard input (`-`), a
/// file, or any other stream (a FIFO, a `<(…)` substitution, a device), which is read once.
/// What cannot be read says why: missing, a directory, a loop of symbolic links.
pub fn check_readable(path: &Path) -> Result<(), LoadError> {
    if path.as_os_str() == "-" {
        return Ok(());
    }
    let unreadable = |reason: &str| LoadError::Unreadable {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    };
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => {
            Err(unreadable("it is a directory; give a job file in it"))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(unreadable("no such file")),
        // `io::ErrorKind` names a loop only on nightly.
        Err(e) if cfg!(unix) && e.raw_os_error() == Some(ELOOP) => Err(unreadable(
            "its symbolic links make a loop (too many levels of symbolic links)",
        )),
        Err(source) => Err(LoadError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Opens the job file (`-` for standard input).
pub fn open(path: &Path) -> Result<Box<dyn Read + Send>, LoadError> {
    let input: Box<dyn Read + Send> = if path.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })?)
    };
    Ok(input)
}

/// Wraps `raw` in the decoder its extension or first bytes call for. Returns the reader of
/// the file's text and the compression found.
pub fn decompress<'a, R: Read + 'a>(
    mut raw: R,
    path: &Path,
) -> Result<(Box<dyn Read + 'a>, Compression), LoadError> {
    let display = path.display().to_string();
    let io_error = |source| LoadError::Io {
        path: display.clone(),
        source,
    };
    // Up to six bytes, however the first reads come (a pipe may hand them over one by one).
    let mut prefix = [0_u8; 6];
    let mut len = 0;
    while len < prefix.len() {
        match raw.read(&mut prefix[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    let prefix = &prefix[..len];
    let named = Compression::from_extension(path);
    let found = Compression::from_magic(prefix);
    if named != Compression::None && found != named && !prefix.is_empty() {
        return Err(LoadError::Format {
            path: display,
            message: format!(
                "the name says {} but the file is not {} data",
                named.name().unwrap_or("plain"),
                named.name().unwrap_or("plain")
            ),
        });
    }
    if found == Compression::None
        && let Some(kind) = unreadable(prefix)
    {
        return Err(LoadError::Format {
            path: display,
            message: format!(
                "this is {kind}, which msgbatch does not read; give it as plain, .gz or .zst JSONL, CSV or TSV"
            ),
        });
    }
    let whole = io::Cursor::new(prefix.to_vec()).chain(raw);
    let reader: Box<dyn Read + 'a> = match found {
        Compression::None => Box::new(whole),
        // Concatenated gzip members (as `cat a.gz b.gz` makes) are one file.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole).map_err(io_error)?),
    };
    Ok((reader, found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(bytes: &[u8], name: &str) -> Result<(String, Compression), LoadError> {
        let (mut reader, found) = decompress(bytes, Path::new(name))?;
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        Ok((text, found))
    }

    #[test]
    fn gzip_and_zstd_are_found_by_their_bytes_and_read_as_streams() {
        let text = "{\"a\":1}\n".repeat(1000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(text.as_bytes(), 1).unwrap();
        assert_eq!(
            read_all(&gz, "a.jsonl.gz").unwrap(),
            (text.clone(), Compression::Gzip)
        );
        // No extension: the bytes decide.
        assert_eq!(
            read_all(&gz, "-").unwrap(),
            (text.clone(), Compression::Gzip)
        );
        assert_eq!(
            read_all(&zst, "a.jsonl").unwrap(),
            (text.clone(), Compression::Zstd)
        );
        assert_eq!(
            read_all(text.as_bytes(), "a.jsonl").unwrap().1,
            Compression::None
        );
        // Two gzip members one after the other are one file.
        let both = [gz.clone(), gz].concat();
        assert_eq!(read_all(&both, "a.gz").unwrap().0, text.repeat(2));
    }

    #[test]
    fn a_name_that_lies_and_formats_msgbatch_cannot_read_are_named() {
        let error = read_all(b"{\"a\":1}\n", "a.jsonl.gz")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("a.jsonl.gz") && error.contains("not gzip data"),
            "{error}"
        );
        let error = read_all(b"BZh91AY&SY", "a.jsonl.bz2")
            .unwrap_err()
            .to_string();
        assert!(error.contains("bzip2"), "{error}");
        let error = read_all(b"PK\x03\x04rest", "a.zip")
            .unwrap_err()
            .to_string();
        assert!(error.contains("zip archive"), "{error}");
        // An empty file is an empty file, whatever its name.
        assert_eq!(read_all(b"", "a.gz").unwrap().0, "");
    }
}
