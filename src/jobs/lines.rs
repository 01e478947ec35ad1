//! Line numbers as a person counts them: a line ends at `\n`, `\r\n` or a lone `\r`, so that
//! an error names the line where its record starts whatever tool wrote the file. Lines are
//! read into a buffer of bounded size: a line longer than the bound is not held, only skipped.

use std::io::{self, BufRead};

/// What [`LineReader::read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// The end of the input.
    End,
    /// A line, in the buffer.
    Read,
    /// A line longer than the bound: the buffer is empty, and the rest of the line is skipped
    /// by the next read.
    TooLong,
}

/// Reads one line at a time, ending lines at `\n`, `\r\n` or `\r`.
pub struct LineReader<R> {
    inner: R,
    /// The last line ended with `\r`: a `\n` right after it belongs to that ending.
    after_cr: bool,
    /// The last line was too long, and its rest is still to be skipped.
    skipping: bool,
    /// Number of the line last read (1-based).
    pub line: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            after_cr: false,
            skipping: false,
            line: 0,
        }
    }

    /// Reads the next line, without its ending, into `buf`, holding at most `limit` bytes of
    /// it: a longer line stops being buffered at the bound and is reported as
    /// [`Line::TooLong`], and the next call skips its rest (the caller that stops there never
    /// reads it, so an endless line costs no more than the bound).
    pub fn read_line(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<Line> {
        buf.clear();
        if std::mem::take(&mut self.skipping) {
            self.skip_rest()?;
        }
        loop {
            let available = fill(&mut self.inner)?;
            if available.is_empty() {
                if buf.is_empty() {
                    return Ok(Line::End);
                }
                self.line += 1;
                return Ok(Line::Read);
            }
            if std::mem::take(&mut self.after_cr) && available[0] == b'\n' {
                self.inner.consume(1);
                continue;
            }
            let end = memchr::memchr2(b'\n', b'\r', available);
            let part = end.unwrap_or(available.len());
            if buf.len() + part > limit {
                buf.clear();
                self.line += 1;
                self.skipping = true;
                return Ok(Line::TooLong);
            }
            extend_within(buf, &available[..part], limit);
            match end {
                Some(end) => {
                    self.after_cr = available[end] == b'\r';
                    self.inner.consume(end + 1);
                    self.line += 1;
                    return Ok(Line::Read);
                }
                None => self.inner.consume(part),
            }
        }
    }

    /// Consumes the input up to and including the end of the current line.
    fn skip_rest(&mut self) -> io::Result<()> {
        loop {
            let available = fill(&mut self.inner)?;
            if available.is_empty() {
                return Ok(());
            }
            match memchr::memchr2(b'\n', b'\r', available) {
                Some(end) => {
                    self.after_cr = available[end] == b'\r';
                    self.inner.consume(end + 1);
                    return Ok(());
                }
                None => {
                    let n = available.len();
                    self.inner.consume(n);
                }
            }
        }
    }
}

/// The bytes `inner` has buffered, reading more when it holds none (empty at the end of the
/// input); a read interrupted by a signal is tried again.
fn fill<R: BufRead>(inner: &mut R) -> io::Result<&[u8]> {
    loop {
        match inner.fill_buf() {
            // At the end: not asked again, as a terminal would wait for a second end.
            Ok([]) => return Ok(&[]),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // The buffer holds bytes, so this hands them back without reading. (Returning them from
    // inside the loop is what the borrow checker cannot yet follow.)
    inner.fill_buf()
}

/// Appends `bytes` to `buf`, growing it no further than `limit` (or what it must hold) so
/// that a line near the bound does not double the buffer past it.
fn extend_within(buf: &mut Vec<u8>, bytes: &[u8], limit: usize) {
    let needed = buf.len() + bytes.len();
    if needed > buf.capacity() {
        let target = (buf.capacity() * 2).clamp(needed, limit.max(needed));
        buf.reserve_exact(target - buf.len());
    }
    buf.extend_from_slice(bytes);
}

/// Counts lines in the bytes a parser consumes (such as the CSV parser, which ends records at
/// `\r` as well as `\n`): a line starts after each `\r`, and after each `\n` that does not end
/// a `\r\n`. Only a count is kept, so that nothing grows with the input.
#[derive(Debug, Default)]
pub struct LineCount {
    /// Line starts seen so far.
    starts: u64,
    after_cr: bool,
}

impl LineCount {
    /// Counts the line starts in `bytes`, the next bytes consumed.
    pub fn observe(&mut self, bytes: &[u8]) {
        let mut last = None;
        for at in memchr::memchr2_iter(b'\n', b'\r', bytes) {
            let after_cr = match last {
                Some(previous) => previous + 1 == at && bytes[previous] == b'\r',
                None => at == 0 && self.after_cr,
            };
            if bytes[at] == b'\r' || !after_cr {
                self.starts += 1;
            }
            last = Some(at);
        }
        if let Some(&byte) = bytes.last() {
            self.after_cr = byte == b'\r';
        }
    }

    /// The 1-based line that the next byte consumed stands on.
    pub fn line(&self) -> u64 {
        self.starts + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8], capacity: usize, limit: usize) -> Vec<(u64, Option<String>)> {
        let mut reader = LineReader::new(io::BufReader::with_capacity(capacity, text));
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            match reader.read_line(&mut buf, limit).unwrap() {
                Line::End => return out,
                Line::Read => {
                    out.push((reader.line, Some(String::from_utf8(buf.clone()).unwrap())))
                }
                Line::TooLong => out.push((reader.line, None)),
            }
        }
    }

    #[test]
    fn every_line_ending_counts_once_even_split_across_reads() {
        let text = b"a\r\nb\rc\n\nd\r\r\ne";
        let expected: Vec<(u64, Option<String>)> = [
            (1, "a"),
            (2, "b"),
            (3, "c"),
            (4, ""),
            (5, "d"),
            (6, ""),
            (7, "e"),
        ]
        .iter()
        .map(|(n, s)| (*n, Some((*s).to_owned())))
        .collect();
        for capacity in 1..8 {
            assert_eq!(lines(text, capacity, 100), expected, "buffer of {capacity}");
        }
    }

    #[test]
    fn a_line_over_the_bound_is_skipped_and_the_count_goes_on() {
        let text = b"ab\r\nabcdef\r\nabc\rlast";
        for capacity in 1..8 {
            assert_eq!(
                lines(text, capacity, 3),
                [
                    (1, Some("ab".to_owned())),
                    (2, None),
                    (3, Some("abc".to_owned())),
                    (4, None),
                ],
                "buffer of {capacity}"
            );
        }
    }

    #[test]
    fn consumed_bytes_count_lines_whatever_the_endings_and_splits() {
        let text = b"ab\r\ncd\ref\n\ngh";
        // The line each byte offset stands on.
        let expected = [1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 5, 5];
        for split in 0..text.len() {
            let mut count = LineCount::default();
            let mut found = Vec::new();
            for at in 0..text.len() {
                // Bytes fed in two pieces, cut at `split`.
                let mut partial = LineCount::default();
                if at <= split {
                    partial.observe(&text[..at]);
                } else {
                    partial.observe(&text[..split]);
                    partial.observe(&text[split..at]);
                }
                found.push(partial.line());
            }
            count.observe(text);
            assert_eq!(found, expected, "cut at {split}");
            assert_eq!(count.line(), 5);
        }
    }
}
