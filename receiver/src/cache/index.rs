//! The cache's record of last use, for least-recently-used eviction. It is a logical clock, not wall-clock
//! time: a Raspberry Pi without a real-time clock can boot with its clock years off, and file modification
//! times would then order uses wrongly. Each use takes the next number of a counter; the file `lru` in the
//! cache folder holds one `<number> <sha>` line per object and is rewritten atomically after each change, so a
//! crash leaves the old or the new version. A missing or unreadable file means "no use recorded": those
//! objects count as least recently used, and the next write starts the file afresh.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::fsutil::{is_sha256_hex, write_atomic};
use super::CacheError;

const HEADER: &str = "loa-lru 1";

/// Last-use numbers of the cached objects.
#[derive(Debug)]
pub(crate) struct LruIndex {
    path: PathBuf,
    last_use: HashMap<String, u64>,
    clock: u64,
}

impl LruIndex {
    /// Reads the index at `path`; a missing or damaged file gives an empty index.
    pub(crate) fn load(path: &Path) -> Self {
        let mut index = LruIndex { path: path.to_path_buf(), last_use: HashMap::new(), clock: 0 };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return index,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the cache's use index; starting afresh");
                return index;
            }
        };
        match parse(&text) {
            Some(last_use) => {
                index.clock = last_use.values().copied().max().unwrap_or(0);
                index.last_use = last_use;
            }
            None => tracing::warn!(file = %path.display(), "damaged cache use index; starting afresh"),
        }
        index
    }

    /// Records a use of `sha` now (in memory; call [`LruIndex::save`]).
    pub(crate) fn touch(&mut self, sha: &str) {
        self.clock += 1;
        self.last_use.insert(sha.to_string(), self.clock);
    }

    /// Forgets `sha` (in memory; call [`LruIndex::save`]).
    pub(crate) fn forget(&mut self, sha: &str) {
        self.last_use.remove(sha);
    }

    /// Keeps only the entries for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.last_use.retain(|sha, _| keep(sha));
    }

    /// The last-use number of `sha`; 0 (oldest) when no use is recorded.
    pub(crate) fn last_use(&self, sha: &str) -> u64 {
        self.last_use.get(sha).copied().unwrap_or(0)
    }

    /// Writes the index to disk atomically.
    pub(crate) fn save(&self) -> Result<(), CacheError> {
        let mut entries: Vec<(&String, &u64)> = self.last_use.iter().collect();
        entries.sort_by_key(|(_, n)| **n);
        let mut text = format!("{HEADER}\n");
        for (sha, n) in entries {
            text.push_str(&format!("{n} {sha}\n"));
        }
        write_atomic(&self.path, text.as_bytes())
    }
}

fn parse(text: &str) -> Option<HashMap<String, u64>> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut map = HashMap::new();
    for line in lines {
        let (n, sha) = line.split_once(' ')?;
        if !is_sha256_hex(sha) {
            return None;
        }
        map.insert(sha.to_string(), n.parse().ok()?);
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn survives_a_reload_and_keeps_counting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lru");
        let mut index = LruIndex::load(&path);
        index.touch(&sha('a'));
        index.touch(&sha('b'));
        index.touch(&sha('a'));
        index.save().unwrap();
        let mut index = LruIndex::load(&path);
        assert!(index.last_use(&sha('b')) < index.last_use(&sha('a')));
        assert_eq!(index.last_use(&sha('c')), 0);
        index.touch(&sha('b'));
        assert!(index.last_use(&sha('b')) > index.last_use(&sha('a')));
    }

    #[test]
    fn damaged_file_gives_an_empty_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lru");
        std::fs::write(&path, format!("{HEADER}\n12 {}\ngarbage", sha('a'))).unwrap();
        let index = LruIndex::load(&path);
        assert_eq!(index.last_use(&sha('a')), 0);
    }
}
