//! The bulletin manifest: everything a receiver needs to fetch, check and schedule one Ogg Opus file. It travels
//! signed ([`crate::signing::Signed`]) and retained on `{prefix}/rx/{receiver}/manifest/{bulletin}`.
//!
//! The file is cut into chunks of `chunk_size` bytes (the last one shorter unless the size divides evenly) and
//! the manifest lists the SHA-256 of every chunk, so each chunk is checked before it is stored and a bad one
//! costs one chunk, not the file. The whole-file SHA-256 is checked once more after assembly.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::chunk::{BulletinTag, ChunkFrame};
use crate::error::ProtocolError;
use crate::hash::Sha256;
use crate::ids::{BulletinId, Language};
use crate::signing::Signable;
use crate::time::Timestamp;
use crate::Message;

/// Default chunk size: 8 KiB. MQTT adds about 0.35 % at this size and a chunk hash in the manifest 0.8 %; on a
/// 2G link (about 5 kB/s) one chunk is under two seconds, so a dropped link loses little.
pub const DEFAULT_CHUNK_SIZE: u32 = 8 * 1024;
/// Smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u32 = 512;
/// Largest chunk size accepted.
pub const MAX_CHUNK_SIZE: u32 = 64 * 1024;
/// Most chunks one bulletin may have (16 MiB at the default chunk size: hours of speech at 12 kbit/s).
pub const MAX_CHUNKS: u32 = 2048;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// What a bulletin is about. Unknown categories from a newer controller parse as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Government policy and announcements.
    Policy,
    /// Market prices.
    Market,
    /// Public security.
    Security,
    /// Disasters and weather warnings.
    Disaster,
    /// Public health.
    Health,
    /// Anything else.
    #[serde(other)]
    Other,
}

/// Priority tier, ordered: `Normal < Priority < Emergency`. A higher tier may preempt a lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Regular bulletin.
    Normal,
    /// Goes before normal ones.
    Priority,
    /// Interrupts anything else.
    Emergency,
}

/// The codec. Only Ogg Opus exists in v1; anything else fails to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodecName {
    /// Ogg Opus (RFC 7845).
    Opus,
}

/// Codec parameters of the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Codec {
    /// Always `"opus"`.
    pub name: CodecName,
    /// Input sample rate, Hz: 8000, 12000, 16000, 24000 or 48000.
    pub sample_rate: u32,
    /// 1 or 2.
    pub channels: u8,
    /// Target bitrate, kbit/s, 6 to 510.
    pub bitrate_kbps: u16,
    /// Frame duration, ms: 10, 20, 40, 60, 80, 100 or 120.
    pub frame_ms: u16,
}

impl Codec {
    /// Loa's speech default: mono 16 kHz Opus at 12 kbit/s in 60 ms frames.
    pub fn speech() -> Self {
        Codec { name: CodecName::Opus, sample_rate: 16_000, channels: 1, bitrate_kbps: 12, frame_ms: 60 }
    }

    fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |why: String| Err(ProtocolError::invalid("codec", why));
        if ![8_000, 12_000, 16_000, 24_000, 48_000].contains(&self.sample_rate) {
            return bad(format!("sample rate {} Hz", self.sample_rate));
        }
        if !(1..=2).contains(&self.channels) {
            return bad(format!("{} channels", self.channels));
        }
        if !(6..=510).contains(&self.bitrate_kbps) {
            return bad(format!("bitrate {} kbit/s", self.bitrate_kbps));
        }
        if ![10, 20, 40, 60, 80, 100, 120].contains(&self.frame_ms) {
            return bad(format!("frame {} ms", self.frame_ms));
        }
        Ok(())
    }
}

/// The descriptive part of a manifest, given by the controller to [`Manifest::for_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulletinInfo {
    /// The bulletin id.
    pub bulletin: BulletinId,
    /// Human title (any script, at most [`MAX_TITLE_CHARS`] characters).
    pub title: String,
    /// What it is about.
    pub category: Category,
    /// Its priority tier.
    pub tier: Tier,
    /// Its language.
    pub lang: Language,
    /// When the controller issued it.
    pub issued_at: Timestamp,
    /// After this instant it must not be played (and may be deleted).
    pub expires_at: Timestamp,
    /// Playing time, ms.
    pub duration_ms: u32,
    /// Codec parameters.
    pub codec: Codec,
}

/// One bulletin file, described. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The bulletin id.
    pub bulletin: BulletinId,
    /// Human title.
    pub title: String,
    /// What it is about.
    pub category: Category,
    /// Its priority tier.
    pub tier: Tier,
    /// Its language.
    pub lang: Language,
    /// When the controller issued it.
    pub issued_at: Timestamp,
    /// After this instant it must not be played.
    pub expires_at: Timestamp,
    /// Playing time, ms.
    pub duration_ms: u32,
    /// Codec parameters.
    pub codec: Codec,
    /// File size, bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: Sha256,
    /// Chunk size, bytes (the last chunk may be shorter).
    pub chunk_size: u32,
    /// SHA-256 of each chunk, in order.
    pub chunks: Vec<Sha256>,
}

impl Message for Manifest {
    const KIND: &'static str = "manifest";
    const MAX_BYTES: usize = 256 * 1024;

    fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |why: String| Err(ProtocolError::invalid("manifest", why));
        if self.title.chars().count() > MAX_TITLE_CHARS {
            return bad(format!("title longer than {MAX_TITLE_CHARS} characters"));
        }
        if self.expires_at <= self.issued_at {
            return bad("expires before it is issued".into());
        }
        if self.duration_ms == 0 {
            return bad("zero duration".into());
        }
        self.codec.validate()?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return bad(format!("chunk size {} outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}", self.chunk_size));
        }
        if self.size == 0 {
            return bad("empty file".into());
        }
        let needed = self.size.div_ceil(u64::from(self.chunk_size));
        if needed > u64::from(MAX_CHUNKS) {
            return bad(format!("{needed} chunks, more than {MAX_CHUNKS}"));
        }
        if self.chunks.len() as u64 != needed {
            return bad(format!("{} chunk hashes for {needed} chunks", self.chunks.len()));
        }
        Ok(())
    }
}

/// Manifests carry no sequence: a bulletin's content never changes under its id. They are not addressed either:
/// the same signed manifest goes to every receiver that plays the bulletin.
impl Signable for Manifest {
    fn sequence(&self) -> Option<u64> {
        None
    }

    fn addressee(&self) -> Option<&crate::ids::ReceiverId> {
        None
    }
}

impl Manifest {
    /// Describes `file`, cut into chunks of `chunk_size` bytes. Errors if the result breaks a rule.
    pub fn for_file(info: BulletinInfo, file: &[u8], chunk_size: u32) -> Result<Self, ProtocolError> {
        let step = usize::try_from(chunk_size.max(1)).unwrap_or(usize::MAX);
        let manifest = Manifest {
            bulletin: info.bulletin,
            title: info.title,
            category: info.category,
            tier: info.tier,
            lang: info.lang,
            issued_at: info.issued_at,
            expires_at: info.expires_at,
            duration_ms: info.duration_ms,
            codec: info.codec,
            size: file.len() as u64,
            sha256: Sha256::of(file),
            chunk_size,
            chunks: file.chunks(step).map(Sha256::of).collect(),
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// The short tag that chunk frames of this bulletin carry: the first 8 bytes of the file's SHA-256.
    pub fn tag(&self) -> BulletinTag {
        BulletinTag::of(&self.sha256)
    }

    /// How many chunks the file has.
    pub fn chunk_count(&self) -> u32 {
        u32::try_from(self.chunks.len()).unwrap_or(u32::MAX)
    }

    /// The byte range of chunk `index` in the file.
    pub fn chunk_range(&self, index: u32) -> Result<Range<u64>, ProtocolError> {
        let count = self.chunk_count();
        if index >= count {
            return Err(ProtocolError::ChunkOutOfRange { index, count });
        }
        let start = u64::from(index) * u64::from(self.chunk_size);
        let end = (start + u64::from(self.chunk_size)).min(self.size);
        if start >= end {
            // Only reachable for a manifest that failed validation.
            return Err(ProtocolError::invalid("manifest", "chunk hashes do not match the size"));
        }
        Ok(start..end)
    }

    /// The length of chunk `index`: `chunk_size`, or less for the last one.
    pub fn chunk_len(&self, index: u32) -> Result<u32, ProtocolError> {
        let r = self.chunk_range(index)?;
        Ok(u32::try_from(r.end - r.start).unwrap_or(u32::MAX))
    }

    /// Checks one received chunk (length, then SHA-256) before it is stored.
    pub fn verify_chunk(&self, index: u32, bytes: &[u8]) -> Result<(), ProtocolError> {
        let expected = self.chunk_len(index)?;
        let got = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        if got != expected {
            return Err(ProtocolError::ChunkSizeMismatch { index, expected, got });
        }
        match self.chunks.get(index as usize) {
            Some(h) if *h == Sha256::of(bytes) => Ok(()),
            _ => Err(ProtocolError::ChunkHashMismatch { index }),
        }
    }

    /// Checks the assembled file (size, then SHA-256) before it is scheduled.
    pub fn verify_file(&self, file: &[u8]) -> Result<(), ProtocolError> {
        if file.len() as u64 != self.size {
            return Err(ProtocolError::FileMismatch { why: format!("{} bytes, expected {}", file.len(), self.size) });
        }
        if Sha256::of(file) != self.sha256 {
            return Err(ProtocolError::FileMismatch { why: "SHA-256 differs".into() });
        }
        Ok(())
    }

    /// Chunk `index` of `file` (controller side), as a slice.
    pub fn chunk_of<'a>(&self, file: &'a [u8], index: u32) -> Result<&'a [u8], ProtocolError> {
        let r = self.chunk_range(index)?;
        let (start, end) = (usize::try_from(r.start), usize::try_from(r.end));
        match (start, end) {
            (Ok(s), Ok(e)) => file.get(s..e),
            _ => None,
        }
        .ok_or_else(|| ProtocolError::FileMismatch { why: "file shorter than the manifest says".into() })
    }

    /// The frame that carries chunk `index` of `file` (controller side).
    pub fn frame(&self, file: &[u8], index: u32) -> Result<ChunkFrame, ProtocolError> {
        Ok(ChunkFrame { tag: self.tag(), index, data: self.chunk_of(file, index)?.to_vec() })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn info() -> BulletinInfo {
        BulletinInfo {
            bulletin: BulletinId::new("2025-06-01-market-hmn").unwrap(),
            title: "Giá lúa tuần này".into(),
            category: Category::Market,
            tier: Tier::Normal,
            lang: Language::new("hmn").unwrap(),
            issued_at: Timestamp::from_unix_ms(1_748_736_000_000).unwrap(),
            expires_at: Timestamp::from_unix_ms(1_749_340_800_000).unwrap(),
            duration_ms: 10_000,
            codec: Codec::speech(),
        }
    }

    pub(crate) fn file(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn chunking_with_a_short_last_chunk() {
        let f = file(2 * 1024 + 100);
        let m = Manifest::for_file(info(), &f, 1024).unwrap();
        assert_eq!(m.chunk_count(), 3);
        assert_eq!(m.chunk_len(0).unwrap(), 1024);
        assert_eq!(m.chunk_len(2).unwrap(), 100);
        assert_eq!(m.chunk_range(2).unwrap(), 2048..2148);
        assert_eq!(m.chunk_len(3), Err(ProtocolError::ChunkOutOfRange { index: 3, count: 3 }));
        for i in 0..3 {
            m.verify_chunk(i, m.chunk_of(&f, i).unwrap()).unwrap();
        }
        m.verify_file(&f).unwrap();
        assert_eq!(m.tag().0, m.sha256.0[..8]);
    }

    #[test]
    fn exact_multiple_has_no_empty_chunk() {
        let m = Manifest::for_file(info(), &file(2048), 1024).unwrap();
        assert_eq!(m.chunk_count(), 2);
        assert_eq!(m.chunk_len(1).unwrap(), 1024);
    }

    #[test]
    fn bad_chunks_are_caught() {
        let f = file(3000);
        let m = Manifest::for_file(info(), &f, 1024).unwrap();
        let mut c = m.chunk_of(&f, 1).unwrap().to_vec();
        assert_eq!(
            m.verify_chunk(1, &c[..1000]),
            Err(ProtocolError::ChunkSizeMismatch { index: 1, expected: 1024, got: 1000 })
        );
        c[5] ^= 1;
        assert_eq!(m.verify_chunk(1, &c), Err(ProtocolError::ChunkHashMismatch { index: 1 }));
        // A good chunk under the wrong index.
        assert_eq!(m.verify_chunk(0, m.chunk_of(&f, 1).unwrap()), Err(ProtocolError::ChunkHashMismatch { index: 0 }));
        assert!(matches!(m.verify_chunk(9, &c), Err(ProtocolError::ChunkOutOfRange { .. })));
        let mut g = f.clone();
        g[0] ^= 1;
        assert!(matches!(m.verify_file(&g), Err(ProtocolError::FileMismatch { .. })));
        assert!(matches!(m.verify_file(&f[1..]), Err(ProtocolError::FileMismatch { .. })));
    }

    #[test]
    fn rules_are_enforced() {
        let f = file(5000);
        assert!(Manifest::for_file(info(), &[], 1024).is_err());
        assert!(Manifest::for_file(info(), &f, 100).is_err());
        assert!(Manifest::for_file(info(), &f, MAX_CHUNK_SIZE + 1).is_err());
        let mut i = info();
        i.expires_at = i.issued_at;
        assert!(Manifest::for_file(i, &f, 1024).is_err());
        let mut i = info();
        i.codec.frame_ms = 30;
        assert!(Manifest::for_file(i, &f, 1024).is_err());
        let mut m = Manifest::for_file(info(), &f, 1024).unwrap();
        m.chunks.pop();
        assert!(m.validate().is_err());
        assert!(m.to_json().is_err());
        // A manifest that lies about its hashes never panics its readers.
        assert!(m.chunk_len(4).is_err());
        assert!(m.verify_chunk(4, &f[4096..]).is_err());
    }

    #[test]
    fn json_shape_and_forward_compatibility() {
        let m = Manifest::for_file(info(), &file(1500), 1024).unwrap();
        let json = String::from_utf8(m.to_json().unwrap()).unwrap();
        assert!(json.starts_with(r#"{"bulletin":"2025-06-01-market-hmn","title":"Giá lúa tuần này","category":"market","tier":"normal","lang":"hmn","issued_at":1748736000000,"expires_at":1749340800000,"duration_ms":10000,"codec":{"name":"opus","sample_rate":16000,"channels":1,"bitrate_kbps":12,"frame_ms":60},"size":1500,"sha256":""#), "{json}");
        assert_eq!(Manifest::from_json(json.as_bytes()).unwrap(), m);
        // Unknown fields are ignored; unknown categories read as Other; unknown codecs are refused.
        let newer = json.replacen("\"market\"", "\"agriculture\"", 1).replacen('{', "{\"new\":1,", 1);
        assert_eq!(Manifest::from_json(newer.as_bytes()).unwrap().category, Category::Other);
        assert!(Manifest::from_json(json.replacen("\"opus\"", "\"mp3\"", 1).as_bytes()).is_err());
        assert!(Tier::Emergency > Tier::Priority && Tier::Priority > Tier::Normal);
    }
}
