//! Text msgbatch writes out, made safe for where it goes.
//!
//! Run names, job ids, tags, model names, stop reasons and error messages come from job files
//! and gateways, and a job file or a gateway may be hostile. Before such text reaches a
//! terminal its control characters are escaped ([`Terminal`], [`outln!`](crate::outln),
//! [`errln!`](crate::errln)), so that `ESC]0;…` cannot retitle a window nor `ESC[2J` clear it;
//! in a CSV cell it cannot start a formula ([`csv_text`]); in Markdown it cannot break a table
//! or open raw HTML ([`markdown`]); in a file name it cannot leave the output directory
//! ([`file_name`]). Files are written whole or not at all ([`AtomicFile`]). Printing to a
//! closed pipe returns the `BrokenPipe` error, which `main` turns into a quiet exit, instead
//! of the panic `println!` gives.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Whether a character must not reach a terminal as it is: C0 and C1 controls, DEL, and the
/// bidirectional overrides and isolates that make text read differently from what it holds.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn escape_into(out: &mut impl fmt::Write, text: &str, keep_newlines: bool) -> fmt::Result {
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.write_char('\n')?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if is_unsafe(c) => write!(out, "\\u{{{:x}}}", u32::from(c))?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// Text from outside, shown on a terminal: every control character (newlines too) written as
/// an escape (`\u{1b}`, `\n`), so that it stays one visible line of inert text.
#[derive(Debug, Clone, Copy)]
pub struct Terminal<'a>(pub &'a str);

impl fmt::Display for Terminal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.chars().any(is_unsafe) {
            let mut escaped = String::with_capacity(self.0.len() + 8);
            escape_into(&mut escaped, self.0, false)?;
            f.pad(&escaped)
        } else {
            f.pad(self.0)
        }
    }
}

/// [`Terminal`] as a string.
pub fn terminal(text: &str) -> Cow<'_, str> {
    if text.chars().any(is_unsafe) {
        Cow::Owned(Terminal(text).to_string())
    } else {
        Cow::Borrowed(text)
    }
}

/// Lines for a terminal: as [`terminal`], but newlines stay newlines.
pub fn terminal_lines(text: &str) -> Cow<'_, str> {
    if text.chars().any(|c| c != '\n' && is_unsafe(c)) {
        let mut escaped = String::with_capacity(text.len() + 8);
        // Writing to a String cannot fail.
        let _ = escape_into(&mut escaped, text, true);
        Cow::Owned(escaped)
    } else {
        Cow::Borrowed(text)
    }
}

/// A document (JSON, CSV, Markdown, HTML) for standard output, which may be a terminal: each
/// character that must not reach one raw ([`is_unsafe`]) written as `\u001b`, the escape
/// JSON itself uses, line ends and tabs aside. JSON stays valid and reads back the same (no
/// raw C0 control can be in it; C1 controls, DEL and the bidirectional overrides can, as
/// text a job file or a gateway gave); in other formats the escape is inert text.
pub fn document(text: &str) -> Cow<'_, str> {
    let unsafe_at = |(at, c): (usize, char)| {
        is_unsafe(c)
            && !matches!(c, '\n' | '\t')
            && !(c == '\r' && text[at + 1..].starts_with('\n'))
    };
    if !text.char_indices().any(unsafe_at) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for (at, c) in text.char_indices() {
        if unsafe_at((at, c)) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A writer of a document streamed to standard output, with [`document`]'s escaping applied
/// as it goes: what is written is held back only as far as it must be (a character cut
/// between two writes, or a `\r` whose `\n` may follow), so memory stays bounded.
pub struct DocumentWriter<W: io::Write> {
    inner: W,
    held: Vec<u8>,
}

impl<W: io::Write> DocumentWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            held: Vec::new(),
        }
    }

    /// Writes `bytes` after what was held, keeping back an unfinished character and a last
    /// `\r` unless `last`.
    fn pass(&mut self, bytes: &[u8], last: bool) -> io::Result<()> {
        self.held.extend_from_slice(bytes);
        let held = std::mem::take(&mut self.held);
        let valid = match std::str::from_utf8(&held) {
            Err(e) if e.error_len().is_none() && !last => e.valid_up_to(),
            _ => held.len(),
        };
        let (text, rest) = held.split_at(valid);
        let text = String::from_utf8_lossy(text);
        let (text, kept) = match text.strip_suffix('\r') {
            Some(before) if !last => (before, "\r"),
            _ => (&*text, ""),
        };
        self.inner.write_all(document(text).as_bytes())?;
        self.held.extend_from_slice(kept.as_bytes());
        self.held.extend_from_slice(rest);
        Ok(())
    }

    /// Writes what was held back, flushes, and gives the writer back.
    pub fn finish(mut self) -> io::Result<W> {
        self.pass(&[], true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: io::Write> io::Write for DocumentWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pass(buf, false)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.pass(&[], false)?;
        self.inner.flush()
    }
}

/// Writes one line to standard output with [`terminal_lines`]' escaping. A closed pipe comes
/// back as the `BrokenPipe` error for the caller to return: `main` exits quietly on it.
pub fn print_line(args: fmt::Arguments<'_>) -> io::Result<()> {
    let line = args.to_string();
    let mut stdout = io::stdout().lock();
    stdout.write_all(terminal_lines(&line).as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// Writes one line to standard error with [`terminal_lines`]' escaping. Errors are dropped:
/// a message that cannot be shown must not end the command that wanted to show it.
pub fn eprint_line(args: fmt::Arguments<'_>) {
    let line = args.to_string();
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_all(terminal_lines(&line).as_bytes());
    let _ = stderr.write_all(b"\n");
}

/// `println!` for command output: control characters escaped, and an `io::Result` in place of
/// the panic on a closed pipe.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::print_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::print_line(format_args!($($arg)*))
    };
}

/// `eprintln!` for messages: control characters escaped, and never a panic.
#[macro_export]
macro_rules! errln {
    () => {
        $crate::output::eprint_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::eprint_line(format_args!($($arg)*))
    };
}

/// A text cell for a CSV file: one that a spreadsheet would read as a formula (it begins with
/// `=`, `+`, `-`, `@`, a tab or a carriage return, OWASP's list) gets a leading `'`. Only text
/// from outside goes through here; the numbers msgbatch writes stay numbers.
pub fn csv_text(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// Text for Markdown, in a table cell or a line: `|` escaped, line breaks made spaces, `<`,
/// `>` and `&` written as entities (so no raw HTML reaches the page), and other control
/// characters escaped as on a terminal.
pub fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A URL with the credentials of its authority (`user:password@`) shown as `***@`, and the
/// value of every query parameter whose name says it is a credential (`key`, `token`,
/// `secret`, `sig`, `pass`, `auth`, `cred`, in any case) shown as `***`; the rest as it was.
/// A gateway's URL may carry its credentials: this is the form stored with a run, printed and
/// put in reports.
pub fn redacted_url(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = match rest[..authority_end].rfind('@') {
        Some(at) => (
            Cow::Owned(format!("***{}", &rest[at..authority_end])),
            &rest[authority_end..],
        ),
        None => (
            Cow::Borrowed(&rest[..authority_end]),
            &rest[authority_end..],
        ),
    };
    let query = redacted_query(rest);
    if matches!((&authority, &query), (Cow::Borrowed(_), Cow::Borrowed(_))) {
        return Cow::Borrowed(url);
    }
    Cow::Owned(format!("{scheme}://{authority}{query}"))
}

/// Names of query parameters whose values [`redacted_url`] hides, matched as parts of the
/// lower-cased name (`api_key`, `X-Api-Key`, `access_token`, `sig`, `password`, …).
const CREDENTIAL_NAMES: [&str; 7] = ["key", "token", "secret", "sig", "pass", "auth", "cred"];

/// Whether a query parameter's name says it is a credential. The name is read as a server
/// reads it, percent-escapes decoded (`%6Bey` is `key`) and `+` as a space.
pub fn is_credential_name(name: &str) -> bool {
    form_urlencoded::parse(name.as_bytes()).any(|(decoded, _)| {
        let decoded = decoded.to_ascii_lowercase();
        CREDENTIAL_NAMES.iter().any(|part| decoded.contains(part))
    })
}

/// A messages path (`/v1/messages?api-version=1&key=…`) with the value of every credential
/// query parameter shown as `***`, as [`redacted_url`] shows them: the form stored with a
/// run, printed and put in reports. Other parameters stay as they are.
pub fn redacted_path(path: &str) -> Cow<'_, str> {
    redacted_query(path)
}

/// Whether [`redacted_path`] (or [`redacted_url`]) hid a credential in the query of `path`: a
/// run's stored messages path that did cannot be sent to as it is.
pub fn has_hidden_query_credentials(path: &str) -> bool {
    let Some(start) = path.find('?') else {
        return false;
    };
    let end = path[start..].find('#').map_or(path.len(), |at| start + at);
    path[start + 1..end].split('&').any(|pair| {
        pair.split_once('=')
            .is_some_and(|(name, value)| value == "***" && is_credential_name(name))
    })
}

/// The path, query and fragment of a URL with credential values in its query hidden.
fn redacted_query(tail: &str) -> Cow<'_, str> {
    let Some(start) = tail.find('?') else {
        return Cow::Borrowed(tail);
    };
    let end = tail[start..].find('#').map_or(tail.len(), |at| start + at);
    let mut hid = false;
    let pairs: Vec<String> = tail[start + 1..end]
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() && is_credential_name(name) => {
                hid = true;
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    if !hid {
        return Cow::Borrowed(tail);
    }
    Cow::Owned(format!(
        "{}?{}{}",
        &tail[..start],
        pairs.join("&"),
        &tail[end..]
    ))
}

/// Whether [`redacted_url`] hid credentials in `url`: a run's stored base URL that did cannot
/// be sent to as it is.
pub fn has_hidden_credentials(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(_, rest)| rest.starts_with("***@"))
}

/// Longest name part [`file_name`] keeps, in characters.
const FILE_NAME_CHARS: usize = 120;

/// A run name (or several joined) as part of a file name: letters, digits, `-`, `_` and `.`
/// kept, anything else (a `/`, a `\`, a control character) made `_`, leading dots dropped,
/// at most 120 characters. The result is one plain path component, never `..`.
pub fn file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let kept: String = cleaned
        .trim_start_matches('.')
        .chars()
        .take(FILE_NAME_CHARS)
        .collect();
    if kept.is_empty() {
        "run".to_owned()
    } else {
        kept
    }
}

/// A file written under a temporary name in its directory and renamed into place by
/// [`AtomicFile::commit`]: a command stopped half-way (an error, Ctrl-C, `kill`) leaves the
/// file as it was before, never a truncated one that looks complete. Dropped uncommitted, the
/// temporary file is removed.
pub struct AtomicFile {
    path: PathBuf,
    temporary: PathBuf,
    file: Option<io::BufWriter<fs_err::File>>,
}

impl AtomicFile {
    /// Starts writing `path`, creating its directory when missing.
    pub fn create(path: &Path) -> io::Result<Self> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs_err::create_dir_all(dir)?;
        let name = path
            .file_name()
            .map_or_else(|| Cow::Borrowed("output"), |n| n.to_string_lossy());
        loop {
            let temporary = dir.join(format!(".{name}.{:08x}.tmp", fastrand::u32(..)));
            match fs_err::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temporary)
            {
                Ok(file) => {
                    return Ok(Self {
                        path: path.to_owned(),
                        temporary,
                        file: Some(io::BufWriter::new(file)),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Flushes the file to disk and renames it into place.
    pub fn commit(mut self) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
            file.sync_all()?;
        }
        fs_err::rename(&self.temporary, &self.path)
    }

    /// Writes `text` to `path` whole, or leaves `path` as it was.
    pub fn write(path: &Path, text: &str) -> io::Result<()> {
        let mut file = Self::create(path)?;
        file.write_all(text.as_bytes())?;
        file.commit()
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(file) => file.write(buf),
            None => Err(io::Error::other("the file is committed already")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.file = None;
            // Best effort: a leftover hidden temporary file is harmless, a truncated report
            // under the real name is not.
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_reach_a_terminal_as_inert_text() {
        let hostile = "job\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}x\u{202e}cba\u{7f}";
        let shown = Terminal(hostile).to_string();
        assert!(!shown.chars().any(is_unsafe), "{shown:?}");
        assert_eq!(
            shown,
            "job\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{9b}x\\u{202e}cba\\u{7f}"
        );
        assert_eq!(Terminal("a\nb\tc").to_string(), "a\\nb\\tc");
        assert_eq!(terminal_lines("a\nb\u{1b}c"), "a\nb\\u{1b}c");
        assert!(matches!(terminal("plain ünïcode"), Cow::Borrowed(_)));
        // Padding applies to the escaped text, so tables stay aligned.
        assert_eq!(format!("[{:<6}]", Terminal("a\u{7}")), "[a\\u{7}]");
        assert_eq!(format!("[{:<4}]", Terminal("ab")), "[ab  ]");
    }

    #[test]
    fn a_document_written_in_pieces_is_escaped_as_the_whole_one() {
        use std::io::Write as _;
        let text = "id,prompt\r\né\u{1b}[31m,\u{9b}x\r\n\u{202e}rev\rlone,\u{1F600}\r";
        let whole = document(text).into_owned();
        for size in 1..=text.len() {
            let mut writer = DocumentWriter::new(Vec::new());
            for piece in text.as_bytes().chunks(size) {
                writer.write_all(piece).unwrap();
                writer.flush().unwrap();
            }
            let written = String::from_utf8(writer.finish().unwrap()).unwrap();
            assert_eq!(written, whole, "pieces of {size} bytes");
        }
    }

    #[test]
    fn a_document_for_a_terminal_keeps_its_json_valid_and_the_same() {
        let value = serde_json::json!({"id": "a\u{1b}[2J\u{9b}1m\u{7f}\u{202e}z", "n": "\u{e9}"});
        let text = serde_json::to_string_pretty(&value).unwrap();
        assert!(text.contains('\u{9b}'), "serde_json leaves C1 controls raw");
        let shown = document(&text);
        assert!(!shown.chars().any(|c| is_unsafe(c) && c != '\n'), "{shown}");
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, value);
        assert_eq!(
            document("a,b\r\n\u{1b}x,\ty\rz\n"),
            "a,b\r\n\\u001bx,\ty\\u000dz\n"
        );
        assert!(matches!(document("plain\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn csv_text_cells_cannot_start_a_formula() {
        for cell in ["=cmd|' /C calc'!A0", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(csv_text(cell), format!("'{cell}"));
        }
        for cell in ["job-1", "", "a=b", "claude-haiku-4-5"] {
            assert_eq!(csv_text(cell), cell);
        }
    }

    #[test]
    fn markdown_cells_hold_their_text_and_nothing_more() {
        assert_eq!(
            markdown("a|b\nc<script>&\u{1b}"),
            "a\\|b c&lt;script&gt;&amp;\\u{1b}"
        );
    }

    #[test]
    fn credentials_in_a_url_are_hidden() {
        for (url, want) in [
            (
                "https://user:hunter2@gw.example/v1",
                "https://***@gw.example/v1",
            ),
            (
                "http://sk-ant-secret@127.0.0.1:8080",
                "http://***@127.0.0.1:8080",
            ),
            (
                "https://a:b@c@gw.example?x=@y",
                "https://***@gw.example?x=@y",
            ),
            ("https://api.anthropic.com", "https://api.anthropic.com"),
            ("https://gw.example/path@v1", "https://gw.example/path@v1"),
            (
                "https://gw.example/v1/messages?api-version=1&API_KEY=sk-ant-x&sig=&a=b#key=c",
                "https://gw.example/v1/messages?api-version=1&API_KEY=***&sig=&a=b#key=c",
            ),
            (
                "https://u:p@gw.example?access_token=t",
                "https://***@gw.example?access_token=***",
            ),
        ] {
            assert_eq!(redacted_url(url), want, "{url}");
        }
        assert!(has_hidden_credentials("https://***@gw.example"));
        assert!(!has_hidden_credentials("https://gw.example/***@"));
    }

    #[test]
    fn keys_in_a_messages_path_are_hidden_and_other_parameters_kept() {
        for (path, want) in [
            ("/v1/messages", "/v1/messages"),
            (
                "/v1/messages?api-version=2023-06-01",
                "/v1/messages?api-version=2023-06-01",
            ),
            (
                "/v1/messages?api-version=2023-06-01&key=sk-1",
                "/v1/messages?api-version=2023-06-01&key=***",
            ),
            ("/m?api-key=a&b=c", "/m?api-key=***&b=c"),
            (
                "/m?%6Bey=a&Access%5FToken=b",
                "/m?%6Bey=***&Access%5FToken=***",
            ),
            ("/m?x+auth=a", "/m?x+auth=***"),
        ] {
            assert_eq!(redacted_path(path), want, "{path}");
            assert_eq!(
                has_hidden_query_credentials(&redacted_path(path)),
                want.contains("=***"),
                "{path}"
            );
        }
        assert!(!has_hidden_query_credentials("/m?version=***"));
        assert!(!has_hidden_query_credentials("/m#key=***"));
    }

    #[test]
    fn file_names_stay_one_plain_component() {
        for (name, want) in [
            ("../../x", "_.._x"),
            ("night-1.jsonl", "night-1.jsonl"),
            ("..", "run"),
            ("", "run"),
            ("a/b\\c\u{1b}d", "a_b_c_d"),
            ("/etc/passwd", "_etc_passwd"),
        ] {
            let got = file_name(name);
            assert_eq!(got, want, "{name:?}");
            let mut parts = Path::new(&got).components();
            assert!(matches!(
                parts.next(),
                Some(std::path::Component::Normal(_))
            ));
            assert!(parts.next().is_none());
        }
        assert_eq!(file_name(&"x".repeat(500)).len(), FILE_NAME_CHARS);
    }

    #[test]
    fn an_atomic_file_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("report.csv");
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"half").unwrap();
        assert!(!path.exists(), "nothing under the real name before commit");
        drop(file);
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            0
        );

        std::fs::write(&path, "old").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"new, half").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        AtomicFile::write(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
