//! The chunk request: a receiver asks the controller for the chunks of one bulletin that it still lacks, on
//! `{prefix}/up/{receiver}/chunk-req`. The controller answers with [`crate::chunk::ChunkFrame`]s on that
//! receiver's `{prefix}/rx/{receiver}/chunk` only.
//!
//! JSON: `{"req":7,"bulletin":"b1","chunks":[[0,3],[7,7]]}`: `chunks` lists inclusive `[first, last]` ranges,
//! sorted and not overlapping. Requests are idempotent: a lost request or a lost frame is recovered by asking
//! again for what is still missing ([`missing`]). Ask for a window (16 chunks, 128 KiB by default) at a time so
//! that a link that drops mid-answer wastes little.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::ids::BulletinId;
use crate::manifest::{Manifest, MAX_CHUNKS};
use crate::Message;

/// Most ranges in one request.
pub const MAX_RANGES: usize = 64;
/// Suggested number of chunks to ask for at once.
pub const DEFAULT_WINDOW: u32 = 16;

/// Chunk indices `first..=last`. JSON: `[first, last]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "[u32; 2]", into = "[u32; 2]")]
pub struct ChunkRange {
    first: u32,
    last: u32,
}

impl ChunkRange {
    /// `first..=last`; errors if `first > last`.
    pub fn new(first: u32, last: u32) -> Result<Self, ProtocolError> {
        if first > last {
            return Err(ProtocolError::invalid("chunk range", format!("[{first}, {last}] is backwards")));
        }
        Ok(ChunkRange { first, last })
    }

    /// The first index.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// The last index (inclusive).
    pub fn last(&self) -> u32 {
        self.last
    }

    /// How many chunks.
    pub fn len(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }

    /// Never empty; here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The indices, in order.
    pub fn indices(&self) -> std::ops::RangeInclusive<u32> {
        self.first..=self.last
    }
}

impl TryFrom<[u32; 2]> for ChunkRange {
    type Error = ProtocolError;
    fn try_from([first, last]: [u32; 2]) -> Result<Self, Self::Error> {
        Self::new(first, last)
    }
}

impl From<ChunkRange> for [u32; 2] {
    fn from(r: ChunkRange) -> Self {
        [r.first, r.last]
    }
}

/// Sorted, merged ranges covering exactly the given indices (duplicates allowed).
pub fn ranges(indices: impl IntoIterator<Item = u32>) -> Vec<ChunkRange> {
    let mut v: Vec<u32> = indices.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<ChunkRange> = Vec::new();
    for i in v {
        match out.last_mut() {
            Some(r) if r.last.checked_add(1) == Some(i) => r.last = i,
            _ => out.push(ChunkRange { first: i, last: i }),
        }
    }
    out
}

/// The first `window` chunk indices below `count` for which `have` is false, as ranges: what to ask for next.
pub fn missing(count: u32, window: u32, have: impl Fn(u32) -> bool) -> Vec<ChunkRange> {
    ranges((0..count).filter(|&i| !have(i)).take(window as usize))
}

/// A receiver's ask for chunks of one bulletin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// Chosen by the receiver (a counter); the controller may drop a request id it has just answered.
    pub req: u32,
    /// Which bulletin.
    pub bulletin: BulletinId,
    /// Which chunks: sorted, non-overlapping, at most [`MAX_RANGES`].
    pub chunks: Vec<ChunkRange>,
}

impl Message for ChunkRequest {
    const KIND: &'static str = "chunk request";
    const MAX_BYTES: usize = 2048;

    fn validate(&self) -> Result<(), ProtocolError> {
        if self.chunks.is_empty() {
            return Err(ProtocolError::invalid(Self::KIND, "no chunks"));
        }
        if self.chunks.len() > MAX_RANGES {
            return Err(ProtocolError::invalid(Self::KIND, format!("more than {MAX_RANGES} ranges")));
        }
        if self.chunks.windows(2).any(|w| w[0].last >= w[1].first) {
            return Err(ProtocolError::invalid(Self::KIND, "ranges unsorted or overlapping"));
        }
        if self.chunks.iter().any(|r| r.last >= MAX_CHUNKS) {
            return Err(ProtocolError::invalid(Self::KIND, format!("index beyond {MAX_CHUNKS} chunks")));
        }
        Ok(())
    }
}

impl ChunkRequest {
    /// A request for the given indices (any order, duplicates allowed), checked.
    pub fn new(req: u32, bulletin: BulletinId, indices: impl IntoIterator<Item = u32>) -> Result<Self, ProtocolError> {
        let r = ChunkRequest { req, bulletin, chunks: ranges(indices) };
        r.validate()?;
        Ok(r)
    }

    /// Every requested index, in order.
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks.iter().flat_map(ChunkRange::indices)
    }

    /// How many chunks are asked for.
    pub fn count(&self) -> u64 {
        self.chunks.iter().map(ChunkRange::len).sum()
    }

    /// Controller side: checks the request names this manifest's bulletin and only chunks it has.
    pub fn check_against(&self, manifest: &Manifest) -> Result<(), ProtocolError> {
        if self.bulletin != manifest.bulletin {
            return Err(ProtocolError::invalid(Self::KIND, "asks for another bulletin"));
        }
        let count = manifest.chunk_count();
        match self.chunks.last() {
            Some(r) if r.last >= count => Err(ProtocolError::ChunkOutOfRange { index: r.last, count }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::{file, info};
    use proptest::prelude::*;

    fn b() -> BulletinId {
        BulletinId::new("b1").unwrap()
    }

    #[test]
    fn exact_json() {
        let r = ChunkRequest::new(7, b(), [7, 0, 1, 2, 3, 3]).unwrap();
        let json = r.to_json().unwrap();
        assert_eq!(json, br#"{"req":7,"bulletin":"b1","chunks":[[0,3],[7,7]]}"#);
        assert_eq!(ChunkRequest::from_json(&json).unwrap(), r);
        assert_eq!(r.indices().collect::<Vec<_>>(), [0, 1, 2, 3, 7]);
        assert_eq!(r.count(), 5);
    }

    #[test]
    fn bad_requests_are_refused() {
        for json in [
            r#"{"req":1,"bulletin":"b1","chunks":[]}"#,
            r#"{"req":1,"bulletin":"b1","chunks":[[3,2]]}"#,
            r#"{"req":1,"bulletin":"b1","chunks":[[0,3],[3,4]]}"#,
            r#"{"req":1,"bulletin":"b1","chunks":[[5,6],[0,1]]}"#,
            r#"{"req":1,"bulletin":"b1","chunks":[[0,2048]]}"#,
            r#"{"req":1,"bulletin":"b1","chunks":[[0]]}"#,
            r#"{"req":-1,"bulletin":"b1","chunks":[[0,1]]}"#,
            r#"{"req":1,"bulletin":"b/1","chunks":[[0,1]]}"#,
        ] {
            assert!(ChunkRequest::from_json(json.as_bytes()).is_err(), "{json}");
        }
        let many = ChunkRequest::new(1, b(), (0..200).map(|i| i * 2));
        assert!(many.is_err());
    }

    #[test]
    fn missing_window_and_controller_check() {
        let have = |i: u32| i < 3 || i == 5;
        assert_eq!(missing(10, 4, have), ranges([3, 4, 6, 7]));
        assert_eq!(missing(4, 16, |_| true), vec![]);
        let f = file(5000);
        let m = crate::manifest::Manifest::for_file(info(), &f, 1024).unwrap();
        let ok = ChunkRequest::new(1, m.bulletin.clone(), [0, 4]).unwrap();
        ok.check_against(&m).unwrap();
        let beyond = ChunkRequest::new(1, m.bulletin.clone(), [5]).unwrap();
        assert_eq!(beyond.check_against(&m), Err(ProtocolError::ChunkOutOfRange { index: 5, count: 5 }));
        assert!(ChunkRequest::new(1, b(), [0]).unwrap().check_against(&m).is_err());
    }

    proptest! {
        #[test]
        fn ranges_cover_exactly(v in proptest::collection::vec(0u32..300, 0..100)) {
            let rs = ranges(v.iter().copied());
            let mut want = v.clone();
            want.sort_unstable();
            want.dedup();
            let got: Vec<u32> = rs.iter().flat_map(ChunkRange::indices).collect();
            prop_assert_eq!(got, want);
            prop_assert!(rs.windows(2).all(|w| w[0].last() + 1 < w[1].first()));
        }

        #[test]
        fn extreme_indices_do_not_overflow(v in proptest::collection::vec(u32::MAX - 3..=u32::MAX, 0..10)) {
            let rs = ranges(v.iter().copied());
            let got: Vec<u32> = rs.iter().flat_map(ChunkRange::indices).collect();
            let mut want = v;
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(got, want);
        }
    }
}
