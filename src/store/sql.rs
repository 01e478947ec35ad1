//! Statements written once for both databases the store runs on, SQLite and PostgreSQL.
//!
//! A [`Sql`] is the statement's text with `$N` placeholders (which both accept) and its
//! arguments as plain values, bound to either driver when it runs. The text is SQLite's, with
//! its query-planner hints (`NOT INDEXED`, `INDEXED BY`, `CROSS JOIN … ON` to fix the join
//! order): PostgreSQL plans for itself, and [`Dialect::text`] drops them for it. Everything
//! else is written in the SQL both understand: `COUNT(*) FILTER (WHERE …)` rather than
//! SQLite's sums of comparisons, `CAST(SUM(…) AS BIGINT)` where PostgreSQL would sum into a
//! `NUMERIC`, flags tested as booleans, `ON CONFLICT … DO UPDATE` for upserts.

use std::borrow::Cow;
use std::sync::LazyLock;

use sqlx::Arguments as _;
use sqlx::postgres::PgArguments;
use sqlx::sqlite::SqliteArguments;

/// Which SQL a statement is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// A statement's text for this database.
    pub fn text(self, sql: &str) -> Cow<'_, str> {
        static HINTS: LazyLock<regex::Regex> = LazyLock::new(|| {
            regex::Regex::new(r"\s+(?:NOT INDEXED|INDEXED BY \w+)\b|\bCROSS (JOIN\b)")
                .expect("the hint pattern is valid")
        });
        match self {
            Self::Sqlite => Cow::Borrowed(sql),
            Self::Postgres => HINTS.replace_all(sql, "$1"),
        }
    }
}

/// One argument of a statement.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(Option<bool>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Self::Bool(Some(v))
    }
}
impl From<Option<bool>> for Arg {
    fn from(v: Option<bool>) -> Self {
        Self::Bool(v)
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_owned()))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Self::Text(Some(v.clone()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Self::Text(v.map(str::to_owned))
    }
}

/// A statement and its arguments.
#[derive(Debug, Clone)]
pub struct Sql {
    text: Cow<'static, str>,
    args: Vec<Arg>,
    /// Kept prepared on the connection. Multi-row statements are, only when they hold
    /// [`BLOCK_ROWS`] rows: their text differs with their row count, and a connection's
    /// statement cache would keep a hundred of them, each program hundreds of kilobytes
    /// (44 MB of a 200,000-job run's heap on SQLite).
    persistent: bool,
}

/// The rows of one multi-row statement (fewer when its columns would pass
/// [`super::MAX_VARIABLES`]): a statement of a whole block is kept prepared, so that a long
/// stream of rows is parsed once per table rather than once per statement (parsing a
/// statement of thousands of rows cost as much as running it), and only the last, shorter
/// one of a write is prepared for once.
pub(super) const BLOCK_ROWS: usize = 256;

/// How many rows of `columns` columns each go in one statement: [`BLOCK_ROWS`], or fewer to
/// stay under [`super::MAX_VARIABLES`].
pub(super) fn block_rows(columns: usize) -> usize {
    BLOCK_ROWS.min(super::MAX_VARIABLES / columns).max(1)
}

impl Sql {
    /// A statement whose placeholders are numbered in its text; arguments follow with
    /// [`Sql::bind`].
    pub fn new(text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            text: text.into(),
            args: Vec::new(),
            persistent: true,
        }
    }

    #[must_use]
    pub fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// The statement's query plan on SQLite, for tests that check an index is used.
    #[cfg(test)]
    #[must_use]
    pub fn explained(mut self) -> Self {
        self.text = format!("EXPLAIN QUERY PLAN {}", self.text).into();
        self.once()
    }

    /// Prepared for this one execution only.
    #[must_use]
    pub fn once(mut self) -> Self {
        self.persistent = false;
        self
    }

    /// A multi-row statement of `rows` rows of `columns` columns: kept prepared when they
    /// are a whole block ([`block_rows`]), prepared for this execution only otherwise.
    #[must_use]
    pub fn block(self, rows: usize, columns: usize) -> Self {
        if rows == block_rows(columns) {
            self
        } else {
            self.once()
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.to_mut().push_str(text);
        self
    }

    /// Appends a placeholder for `arg`.
    pub fn push_bind(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.args.push(arg.into());
        let text = self.text.to_mut();
        text.push('$');
        // Written without a formatter: a multi-row statement has thousands.
        let mut n = self.args.len();
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + u8::try_from(n % 10).unwrap_or(0);
            n /= 10;
            if n == 0 {
                break;
            }
        }
        text.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
        self
    }

    /// Appends `a, b, c`, a placeholder for each id.
    pub fn push_list(&mut self, ids: &[i64]) -> &mut Self {
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push_bind(*id);
        }
        self
    }

    /// Appends `VALUES (…), (…)`, one tuple per item, its arguments given by `row`.
    pub fn push_values<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        mut row: impl FnMut(&mut Row<'_>, T),
    ) -> &mut Self {
        self.push("VALUES ");
        for (i, item) in items.into_iter().enumerate() {
            self.push(if i == 0 { "(" } else { ", (" });
            row(
                &mut Row {
                    sql: self,
                    first: true,
                },
                item,
            );
            self.push(")");
        }
        self
    }

    pub(super) fn persistent(&self) -> bool {
        self.persistent
    }

    /// The text and arguments for SQLite. A statement whose placeholders are `$1` to `$n` in
    /// order, each once (every one built with [`Sql::push_bind`]), is sent with anonymous `?`
    /// placeholders: SQLite finds a named one's index by walking the list of names, so binding
    /// the 30,000 of a multi-row insert by name took most of a run's time.
    pub(super) fn sqlite(self) -> Result<(Cow<'static, str>, SqliteArguments), sqlx::Error> {
        let args_len = self.args.len();
        let mut args = SqliteArguments::default();
        let bound = self.args.into_iter().try_for_each(|arg| match arg {
            Arg::Int(v) => args.add(v),
            Arg::Text(v) => args.add(v),
            Arg::Bool(v) => args.add(v),
        });
        bound.map_err(sqlx::Error::Encode)?;
        let text = match anonymous(&self.text, args_len) {
            Some(text) => Cow::Owned(text),
            None => self.text,
        };
        Ok((text, args))
    }

    /// The text (hints dropped) and arguments for PostgreSQL.
    pub(super) fn postgres(self) -> Result<(Cow<'static, str>, PgArguments), sqlx::Error> {
        let mut args = PgArguments::default();
        let bound = self.args.into_iter().try_for_each(|arg| match arg {
            Arg::Int(v) => args.add(v),
            Arg::Text(v) => args.add(v),
            Arg::Bool(v) => args.add(v),
        });
        let text = match Dialect::Postgres.text(&self.text) {
            Cow::Borrowed(_) => self.text,
            Cow::Owned(text) => Cow::Owned(text),
        };
        bound.map_err(sqlx::Error::Encode)?;
        Ok((text, args))
    }
}

/// `text` with `$1` … `$n` made `?`, when those are its placeholders, in order, each once, and
/// there are enough of them for binding by name to cost anything.
fn anonymous(text: &str, n: usize) -> Option<String> {
    if n < 16 {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut expected = 1;
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        out.push_str(&rest[..at]);
        if digits == 0 {
            out.push('$');
            rest = &rest[at + 1..];
            continue;
        }
        let number: usize = rest[at + 1..at + 1 + digits].parse().ok()?;
        if number != expected {
            return None;
        }
        expected += 1;
        out.push('?');
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    (expected == n + 1).then_some(out)
}

/// One tuple of [`Sql::push_values`].
pub struct Row<'a> {
    sql: &'a mut Sql,
    first: bool,
}

impl Row<'_> {
    pub fn bind(&mut self, arg: impl Into<Arg>) -> &mut Self {
        if !self.first {
            self.sql.push(", ");
        }
        self.first = false;
        self.sql.push_bind(arg);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_text_drops_sqlite_planner_hints_only() {
        let sql = "SELECT a FROM jobs j NOT INDEXED LEFT JOIN results r ON r.job = j.id
                   FROM attempts a INDEXED BY attempts_failed CROSS JOIN jobs j ON j.id = a.job
                   WHERE note = 'CROSS JOINED'";
        let pg = Dialect::Postgres.text(sql);
        assert!(!pg.contains("INDEXED"), "{pg}");
        assert!(pg.contains("jobs j LEFT JOIN"), "{pg}");
        assert!(pg.contains("attempts a JOIN jobs j ON"), "{pg}");
        assert_eq!(Dialect::Sqlite.text(sql), sql);
    }

    #[test]
    fn many_placeholders_in_order_go_to_sqlite_anonymous() {
        let mut sql = Sql::new("INSERT INTO t (a) ");
        sql.push_values(1..=20_i64, |row, a| {
            row.bind(a);
        });
        let (text, _) = sql.sqlite().unwrap();
        assert_eq!(text.matches('?').count(), 20);
        assert!(!text.contains('$'), "{text}");
        // Reused or out of order, they keep their numbers; a `$` in a literal stays.
        let reused = "SELECT '$.x', $1 WHERE a = $2 OR b = $1";
        assert_eq!(anonymous(reused, 20), None);
        assert_eq!(
            anonymous("SELECT '$.x', $1, $2", 2),
            None,
            "few are bound by name"
        );
        let mut text = String::from("SELECT json_extract(x, '$.a')");
        for i in 1..=16 {
            text.push_str(&format!(", ${i}"));
        }
        let out = anonymous(&text, 16).unwrap();
        assert!(
            out.starts_with("SELECT json_extract(x, '$.a'), ?, ?"),
            "{out}"
        );
    }

    #[test]
    fn values_number_their_placeholders_after_those_before() {
        let mut sql = Sql::new("INSERT INTO t (a, b) ");
        sql.push_values([(1_i64, "x"), (2, "y")], |row, (a, b)| {
            row.bind(a).bind(b);
        });
        sql.push(" WHERE c IN (").push_list(&[7, 8]).push(")");
        assert_eq!(
            sql.text,
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) WHERE c IN ($5, $6)"
        );
        assert_eq!(sql.args.len(), 6);
    }
}
