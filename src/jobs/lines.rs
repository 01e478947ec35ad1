//! Line numbers as a person counts them: a line ends at `\n`, `\r\n` or a lone `\r`, so that
//! an error names the line where its record starts whatever tool wrote the file.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, BufRead, Read};
use std::rc::Rc;

/// Reads one line at a time, ending lines at `\n`, `\r\n` or `\r`.
pub struct LineReader<R> {
    inner: R,
    /// The last line ended with `\r`: a `\n` right after it belongs to that ending.
    after_cr: bool,
    /// Number of the line last read (1-based).
    pub line: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            after_cr: false,
            line: 0,
        }
    }

    /// Reads the next line, without its ending, into `buf`. `false` at the end of the input.
    pub fn read_line(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        loop {
            let available = match self.inner.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if buf.is_empty() {
                    return Ok(false);
                }
                self.line += 1;
                return Ok(true);
            }
            if std::mem::take(&mut self.after_cr) && available[0] == b'\n' {
                self.inner.consume(1);
                continue;
            }
            match memchr::memchr2(b'\n', b'\r', available) {
                Some(end) => {
                    buf.extend_from_slice(&available[..end]);
                    self.after_cr = available[end] == b'\r';
                    self.inner.consume(end + 1);
                    self.line += 1;
                    return Ok(true);
                }
                None => {
                    let n = available.len();
                    buf.extend_from_slice(available);
                    self.inner.consume(n);
                }
            }
        }
    }
}

/// The byte offsets where lines start, as they stream past, for a reader (such as the CSV
/// parser) that reports where a record starts as a byte offset.
#[derive(Debug, Default)]
pub struct LineStarts {
    /// Starts of lines after the last one asked about, in order.
    ahead: VecDeque<u64>,
    /// The line holding the last offset asked about.
    line: u64,
    /// Bytes seen so far.
    seen: u64,
    after_cr: bool,
}

impl LineStarts {
    /// A line starts after each `\r` and after each `\n` that does not end a `\r\n`; the
    /// `\n` of a `\r\n` counts as the start of the next line, since a parser that ends
    /// records at `\r` reports the next record from there.
    fn observe(&mut self, bytes: &[u8]) {
        for (i, byte) in bytes.iter().enumerate() {
            let after = self.seen + i as u64 + 1;
            let after_cr = std::mem::replace(&mut self.after_cr, *byte == b'\r');
            match byte {
                b'\r' => self.ahead.push_back(after),
                b'\n' if !after_cr => self.ahead.push_back(after),
                _ => {}
            }
        }
        self.seen += bytes.len() as u64;
    }

    /// The 1-based line holding byte `offset`. Offsets must be asked about in order.
    pub fn line_of(&mut self, offset: u64) -> u64 {
        while self.ahead.front().is_some_and(|start| *start <= offset) {
            self.ahead.pop_front();
            self.line += 1;
        }
        self.line + 1
    }
}

/// A reader that records where lines start in what passes through it.
pub struct LineCounting<R> {
    inner: R,
    starts: Rc<RefCell<LineStarts>>,
}

impl<R: Read> LineCounting<R> {
    pub fn new(inner: R) -> (Self, Rc<RefCell<LineStarts>>) {
        let starts = Rc::new(RefCell::new(LineStarts::default()));
        (
            Self {
                inner,
                starts: Rc::clone(&starts),
            },
            starts,
        )
    }
}

impl<R: Read> Read for LineCounting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.starts.borrow_mut().observe(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8], capacity: usize) -> Vec<(u64, String)> {
        let mut reader = LineReader::new(io::BufReader::with_capacity(capacity, text));
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while reader.read_line(&mut buf).unwrap() {
            out.push((reader.line, String::from_utf8(buf.clone()).unwrap()));
        }
        out
    }

    #[test]
    fn every_line_ending_counts_once_even_split_across_reads() {
        let text = b"a\r\nb\rc\n\nd\r\r\ne";
        let expected: Vec<(u64, String)> = [
            (1, "a"),
            (2, "b"),
            (3, "c"),
            (4, ""),
            (5, "d"),
            (6, ""),
            (7, "e"),
        ]
        .iter()
        .map(|(n, s)| (*n, (*s).to_owned()))
        .collect();
        for capacity in 1..8 {
            assert_eq!(lines(text, capacity), expected, "buffer of {capacity}");
        }
    }

    #[test]
    fn offsets_map_to_the_line_they_stand_on() {
        let text = b"ab\r\ncd\ref\ngh";
        let (mut reader, starts) = LineCounting::new(&text[..]);
        let mut sink = Vec::new();
        reader.read_to_end(&mut sink).unwrap();
        let mut starts = starts.borrow_mut();
        assert_eq!(
            [0, 1, 3, 4, 6, 7, 10].map(|at| starts.line_of(at)),
            [1, 1, 2, 2, 2, 3, 4]
        );
    }
}
