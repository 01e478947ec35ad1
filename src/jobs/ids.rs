//! Custom ids: which earlier record took a record's id, and the id of a record that gives
//! none.

use std::collections::HashMap;
use std::hash::BuildHasher as _;

#[derive(Debug, Clone, Copy)]
pub(super) struct Duplicate {
    pub(super) line: u64,
    pub(super) first: u64,
}

/// An id's hash and the line of the record that used it.
pub(super) struct IdUse {
    pub(super) hash: [u64; 2],
    pub(super) line: u64,
}

/// The records whose id an earlier record used, in line order.
pub(super) fn duplicates(mut uses: Vec<IdUse>) -> Vec<Duplicate> {
    uses.sort_unstable_by_key(|u| (u.hash, u.line));
    let mut found = Vec::new();
    for group in uses.chunk_by(|a, b| a.hash == b.hash) {
        let first = group[0].line;
        found.extend(group[1..].iter().map(|u| Duplicate {
            line: u.line,
            first,
        }));
    }
    found.sort_unstable_by_key(|d| d.line);
    found
}

/// The two keys of an id's 128-bit hash.
#[derive(Default)]
pub(super) struct IdKeys(
    std::collections::hash_map::RandomState,
    std::collections::hash_map::RandomState,
);

impl IdKeys {
    /// The hash of a record's id (a record without one is `line-<n>`).
    pub(super) fn hash(&self, id: Option<&str>, line: u64) -> [u64; 2] {
        let hash = |id: &str| [self.0.hash_one(id), self.1.hash_one(id)];
        match id {
            Some(id) => hash(id),
            None => hash(&unnamed(line)),
        }
    }
}

/// Which earlier record, if any, took a record's id.
pub(super) enum Ids<'a> {
    /// Ids seen so far, as 128-bit hashes with the line that used them.
    Track {
        seen: HashMap<[u64; 2], u64>,
        keys: IdKeys,
    },
    /// The duplicates a check found, in line order, met in turn.
    Known {
        duplicates: &'a [Duplicate],
        next: usize,
    },
}

impl Ids<'_> {
    pub(super) fn track() -> Self {
        Self::Track {
            seen: HashMap::new(),
            keys: IdKeys::default(),
        }
    }

    /// The line that first used the id of the record on `line`, or `None` when the id is its
    /// own.
    pub(super) fn first_use(&mut self, id: Option<&str>, line: u64) -> Option<u64> {
        match self {
            Self::Track { seen, keys } => match seen.entry(keys.hash(id, line)) {
                std::collections::hash_map::Entry::Occupied(first) => Some(*first.get()),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(line);
                    None
                }
            },
            Self::Known { duplicates, next } => {
                while duplicates.get(*next).is_some_and(|d| d.line < line) {
                    *next += 1;
                }
                duplicates
                    .get(*next)
                    .filter(|d| d.line == line)
                    .map(|d| d.first)
            }
        }
    }
}

/// The id of a record that gives none: its line.
pub(super) fn unnamed(line: u64) -> String {
    format!("line-{line}")
}
