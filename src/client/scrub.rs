//! Finding the secrets a gateway echoes back, as written or hidden behind JSON escapes: a
//! gateway that writes the key as `sk-\u0061nt-…`, or every character as `\uXXXX`, echoes it
//! as surely as one that writes it plainly, and a JSON reader (or a person) turns it back.

use std::collections::HashMap;

use memchr::memmem::Finder;

/// What replaces a secret.
const REDACTED: &str = "****";

/// The fewest characters of a secret that, cut off at the end of a shortened text (`…`), are
/// replaced too: a text cut inside the key must not keep most of it.
const PARTIAL_CHARS: usize = 4;

/// The longest run of bytes an escaped character can take after its backslashes
/// (`u` and two surrogates `XXXX\uXXXX`), for a text cut inside an escape.
const LONGEST_ESCAPE: usize = 11;

/// Secrets to be kept out of what is stored and printed, longest first, with what finds them
/// quickly in the common case of a document that holds none.
#[derive(Debug, Clone)]
pub(crate) struct Secrets {
    secrets: Vec<String>,
    finders: Vec<Finder<'static>>,
    /// Whether a secret holds a character JSON may write with a short escape (`"`, `\`, `/`
    /// or a control character): then any backslash may hide one, not only `\u`.
    short_escaped: bool,
    escape_u: Option<Finder<'static>>,
    /// Each character of a secret with where it stands: (the secret, its byte offset there).
    places: HashMap<char, Vec<(usize, usize)>>,
    /// Which ASCII characters some secret holds, and whether one holds any other: most
    /// escapes write a character of no secret, told so without a lookup.
    ascii: [bool; 128],
    non_ascii: bool,
}

impl Secrets {
    /// `secrets`, already without empty ones and longest first.
    pub(crate) fn new(secrets: Vec<String>) -> Self {
        let finders = secrets
            .iter()
            .map(|secret| Finder::new(secret.as_bytes()).into_owned())
            .collect();
        let short_escaped = secrets
            .iter()
            .flat_map(|secret| secret.chars())
            .any(|c| matches!(c, '"' | '\\' | '/') || c.is_control());
        let mut places: HashMap<char, Vec<(usize, usize)>> = HashMap::new();
        for (index, secret) in secrets.iter().enumerate() {
            for (offset, c) in secret.char_indices() {
                places.entry(c).or_default().push((index, offset));
            }
        }
        let mut ascii = [false; 128];
        let mut non_ascii = false;
        for &c in places.keys() {
            match ascii.get_mut(c as usize) {
                Some(held) => *held = true,
                None => non_ascii = true,
            }
        }
        Self {
            secrets,
            finders,
            short_escaped,
            escape_u: Some(Finder::new(b"\\u").into_owned()),
            places,
            ascii,
            non_ascii,
        }
    }

    /// Whether `document` (JSON, or any text) may hold a secret, as written or escaped. Exact
    /// for both, and quick for a document that holds none: a secret written plainly is looked
    /// for once per secret, and an escaped one only when the document has an escape that could
    /// write one of its characters (`\u`, or any backslash for a secret with `"`, `\` or `/`).
    pub(crate) fn in_document(&self, document: &[u8]) -> bool {
        if self.finders.iter().any(|f| f.find(document).is_some()) {
            return true;
        }
        let escapes = if self.short_escaped {
            memchr::memchr(b'\\', document).is_some()
        } else {
            self.escape_u
                .as_ref()
                .is_some_and(|f| f.find(document).is_some())
        };
        escapes && self.escaped_in(document)
    }

    /// Whether a secret is written in `document` with at least one of its characters escaped.
    /// Such a writing has a first escape, with the secret's start written plainly before it:
    /// so each escape is read once, and only one that writes a character of a secret is
    /// looked at further.
    fn escaped_in(&self, document: &[u8]) -> bool {
        let mut at = 0;
        loop {
            // Escapes come in runs (`\u6771\u4eac`): the next is looked at before searching.
            let escape = if document.get(at) == Some(&b'\\') {
                at
            } else {
                match memchr::memchr(b'\\', document.get(at..).unwrap_or_default()) {
                    Some(found) => at + found,
                    None => break,
                }
            };
            let rest = &document[escape..];
            let run = backslashes(rest);
            // Most `\u` escapes write a character beyond ASCII (`\u00e9`, `\u6771`), which
            // no key holds: told from three digits, without reading the escape.
            let beyond_ascii = match rest.get(run..run + 4) {
                Some([b'u', a, b, c]) => *a != b'0' || *b != b'0' || !(b'0'..=b'7').contains(c),
                _ => false,
            };
            if beyond_ascii && !self.non_ascii {
                at = escape + run + 5;
                continue;
            }
            let written = escaped(rest);
            if let Some((c, _)) = written
                && self
                    .ascii
                    .get(c as usize)
                    .copied()
                    .unwrap_or(self.non_ascii)
            {
                for &(index, offset) in self.places.get(&c).map_or(&[][..], Vec::as_slice) {
                    let secret = &self.secrets[index];
                    if escape >= offset
                        && document[escape - offset..escape] == secret.as_bytes()[..offset]
                        && match_at(document, escape - offset, secret, false).is_some()
                    {
                        return true;
                    }
                }
            }
            at = escape + written.map_or(run, |(_, length)| length);
        }
        false
    }

    /// `text` with each secret replaced by `****`, whether written plainly or with any of its
    /// characters escaped as JSON escapes them (`\u0061`, `\\u0061`, `\/`); and, when the text
    /// was cut (it ends with `…`), the start of a secret it was cut in.
    pub(crate) fn scrub(&self, mut text: String) -> String {
        for (secret, finder) in self.secrets.iter().zip(&self.finders) {
            if finder.find(text.as_bytes()).is_some() {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        let cut = text.ends_with('…');
        if !cut && !text.contains(['\\', '%']) {
            return text;
        }
        for secret in &self.secrets {
            let end = if cut {
                text.len() - '…'.len_utf8()
            } else {
                text.len()
            };
            let mut scrubbed = String::new();
            let (mut kept, mut at) = (0, 0);
            while let Some((start, stop)) = find(&text.as_bytes()[..end], secret, at, cut) {
                scrubbed.push_str(&text[kept..start]);
                scrubbed.push_str(REDACTED);
                (kept, at) = (stop, stop);
            }
            if kept > 0 {
                scrubbed.push_str(&text[kept..]);
                text = scrubbed;
            }
        }
        text
    }
}

/// The first place in `hay` from `from` on where `secret` is written, any of its characters
/// plainly or escaped; with `partial_end`, a start of the secret (at least [`PARTIAL_CHARS`]
/// characters) that `hay` ends in counts too. Both ends lie on character boundaries.
fn find(hay: &[u8], secret: &str, from: usize, partial_end: bool) -> Option<(usize, usize)> {
    let first = *secret.as_bytes().first()?;
    let mut at = from;
    while at < hay.len() {
        let start = at + memchr::memchr3(first, b'\\', b'%', &hay[at..])?;
        if matches!(hay[start], b'\\' | b'%') && hay[start] != first {
            // An escape starts a writing of the secret only if it writes its first character.
            if escaped(&hay[start..]).is_none_or(|(c, _)| !secret.starts_with(c)) {
                at = start + backslashes(&hay[start..]).max(1);
                continue;
            }
        }
        if let Some(stop) = match_at(hay, start, secret, partial_end) {
            return Some((start, stop));
        }
        at = start + 1;
    }
    None
}

/// Where a writing of `secret` that starts at `at` ends, if one does.
fn match_at(hay: &[u8], at: usize, secret: &str, partial_end: bool) -> Option<usize> {
    let mut position = at;
    for (matched, c) in secret.chars().enumerate() {
        let rest = &hay[position..];
        // A text cut inside the secret, or inside an escape of its next character.
        let cut_here = || {
            rest.is_empty()
                || (rest[0] == b'%' && rest.len() < 3)
                || (rest[0] == b'\\'
                    && rest.len() <= LONGEST_ESCAPE + backslashes(rest)
                    && escaped(rest).is_none())
        };
        if partial_end && matched >= PARTIAL_CHARS.min(secret.chars().count()) && cut_here() {
            return Some(hay.len());
        }
        let mut buffer = [0; 4];
        let plain = c.encode_utf8(&mut buffer).as_bytes();
        if rest.starts_with(plain) {
            position += plain.len();
            continue;
        }
        let (written, length) = escaped(rest)?;
        if written != c {
            return None;
        }
        position += length;
    }
    Some(position)
}

/// The length in bytes of the backslashes that start `text`, each written plainly (`\`) or
/// escaped (`\u005c`): an escape escaped again (`\\u0061` or `\u005cu0061`, which read back
/// as the text `\u0061`) starts with more than one byte of them.
fn backslashes(text: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match text.get(at..).unwrap_or_default() {
            [b'\\', b'u', b'0', b'0', b'5', b'c' | b'C', ..] => at += 6,
            [b'\\', ..] => at += 1,
            _ => return at,
        }
    }
}

/// The character an escape at the start of `text` writes, and its length in bytes: a JSON
/// escape, or a URL's percent escape of an ASCII character. A run of
/// backslashes counts as one, so that an escape escaped again (`\\u0061`, which reads back
/// as the text `\u0061`) is found too.
fn escaped(text: &[u8]) -> Option<(char, usize)> {
    if let [b'%', high, low, ..] = text {
        // A URL's percent escape of an ASCII character (`%2F`), as a location quoting a URL
        // writes a token's `/` and `+`.
        let byte = hex4(&[b'0', b'0', *high, *low])?;
        return u8::try_from(byte)
            .ok()
            .filter(u8::is_ascii)
            .map(|b| (char::from(b), 3));
    }
    let run = backslashes(text);
    if run == 0 {
        return None;
    }
    let c = match *text.get(run)? {
        b'u' => {
            let unit = hex4(text.get(run + 1..run + 5)?)?;
            if (0xD800..0xDC00).contains(&unit) {
                let low_text = &text[run + 5..];
                let low_run = backslashes(low_text);
                if low_run == 0 || low_text.get(low_run) != Some(&b'u') {
                    return None;
                }
                let low = hex4(low_text.get(low_run + 1..low_run + 5)?)?;
                if !(0xDC00..0xE000).contains(&low) {
                    return None;
                }
                let c = char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?;
                return Some((c, run + 5 + low_run + 5));
            }
            return Some((char::from_u32(unit)?, run + 5));
        }
        b'"' => '"',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        // An escaped backslash: two written plainly, or one escape of it.
        _ if run >= 2 => return Some(('\\', if text.get(1) == Some(&b'\\') { 2 } else { 6 })),
        _ => return None,
    };
    Some((c, run + 1))
}

fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0, |value, &digit| {
        Some(value * 16 + char::from(digit).to_digit(16)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-ant-api03-Secret_key-9";

    fn secrets() -> Secrets {
        Secrets::new(vec![KEY.to_owned(), "tok/en".to_owned()])
    }

    /// `text` with every character as `\uXXXX`.
    fn all_escaped(text: &str) -> String {
        text.encode_utf16().map(|u| format!("\\u{u:04X}")).collect()
    }

    #[test]
    fn a_secret_is_found_written_plainly_or_behind_any_escape() {
        let s = secrets();
        let key_a = KEY.replacen('a', "\\u0061", 1);
        let key_all = all_escaped(KEY);
        let key_twice = KEY.replace('-', "\\\\u002d");
        // The same, its backslash escaped as `\u005c` rather than doubled.
        let key_twice_escaped = KEY.replacen('s', "\\u005cu0073", 1);
        let token = "tok\\/en";
        for written in [KEY, &key_a, &key_all, &key_twice, &key_twice_escaped, token] {
            let document = format!(r#"{{"text":"said: {written}!"}}"#);
            assert!(s.in_document(document.as_bytes()), "{document}");
            assert_eq!(s.scrub(document), r#"{"text":"said: ****!"}"#, "{written}");
            // Right after a run of other escapes, which are skipped whole.
            let after_escapes = format!(r#"{{"text":"\u6771\u4eac\n{written}"}}"#);
            assert!(s.in_document(after_escapes.as_bytes()), "{after_escapes}");
        }
    }

    #[test]
    fn a_secret_in_a_url_is_found_behind_percent_escapes() {
        let s = secrets();
        let location = "https://login.example/?next=%2Fv1%3Ft%3Dtok%2fen%26k%3D%73k-ant-api03-Secret_key-9 50%";
        assert_eq!(
            s.scrub(location.to_owned()),
            "https://login.example/?next=%2Fv1%3Ft%3D****%26k%3D**** 50%"
        );
        assert_eq!(s.scrub("cut %73k-an…".to_owned()), "cut ****…");
    }

    #[test]
    fn ordinary_text_and_escapes_are_left_as_they_are() {
        let s = secrets();
        for document in [
            r#"{"text":"sk-ant-api03 and tok\/e\n \u00e9t\u00e9 \\u0073k-"}"#,
            r#"{"text":"plain"}"#,
            r#"{"text":"\ud83d\ude00 \u"}"#,
            r#"{"text":"a \u005c b \u005C\u005cn \u005cu00e9 \u005c"}"#,
        ] {
            assert!(!s.in_document(document.as_bytes()), "{document}");
            assert_eq!(s.scrub(document.to_owned()), document);
        }
    }

    #[test]
    fn a_secret_beyond_the_basic_plane_is_found_escaped_as_a_surrogate_pair() {
        let s = Secrets::new(vec!["key-😀-end".to_owned()]);
        let document = format!("x{}y", all_escaped("key-😀-end"));
        assert!(s.in_document(document.as_bytes()));
        assert_eq!(s.scrub(document), "x****y");
    }

    #[test]
    fn a_text_cut_inside_a_secret_keeps_none_of_it() {
        let s = secrets();
        assert_eq!(s.scrub("key sk-ant-api03-Sec…".to_owned()), "key ****…");
        let escaped = format!("key {}…", &all_escaped(KEY)[..40]);
        assert_eq!(s.scrub(escaped), "key ****…");
        let inside_an_escape = format!("key {}…", &all_escaped(KEY)[..27]);
        assert_eq!(s.scrub(inside_an_escape), "key ****…");
        // A few characters are too few to be a secret's start; an uncut text keeps them.
        assert_eq!(s.scrub("the sk-…".to_owned()), "the sk-…");
        assert_eq!(s.scrub("key sk-ant-api".to_owned()), "key sk-ant-api");
    }
}

/// How long finding no secret takes in an ordinary answer and in one whose every non-ASCII
/// character is a `\u` escape (as gateways that escape all non-ASCII write them):
/// `cargo test --release --lib scrubbing_speed -- --ignored --nocapture`.
#[cfg(test)]
mod speed {
    use super::*;

    #[test]
    #[ignore = "a measurement, for a release build"]
    #[allow(clippy::print_stderr)]
    fn scrubbing_speed() {
        let key = format!("sk-ant-api03-{}-AAAA", "aB3_x".repeat(18));
        let secrets = Secrets::new(vec![key, "hv-gateway-token-77e1f".to_owned()]);
        let english = r#"The quick brown fox jumps over the lazy dog.\n\n\"Quoted\" line. "#;
        let accented: String = "Été à Paris, 東京 の夏 — ça va. "
            .encode_utf16()
            .map(|u| match u8::try_from(u) {
                Ok(b) if b.is_ascii() => char::from(b).to_string(),
                _ => format!("\\u{u:04x}"),
            })
            .collect();
        for (name, text) in [("plain", english.to_owned()), ("\\u-escaped", accented)] {
            let document = format!(
                r#"{{"content":[{{"type":"text","text":"{}"}}]}}"#,
                text.repeat(60_000 / text.len())
            );
            let rounds = 2_000;
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                assert!(!secrets.in_document(std::hint::black_box(document.as_bytes())));
            }
            let each = started.elapsed() / rounds;
            eprintln!(
                "{name}: {} bytes in {each:?} ({:.2} ns a byte)",
                document.len(),
                each.as_nanos() as f64 / document.len() as f64
            );
        }
    }
}
