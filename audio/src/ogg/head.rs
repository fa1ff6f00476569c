//! The two Ogg Opus header packets (RFC 7845 §5): the identification header "OpusHead" (channel count,
//! pre-skip, original input rate, output gain, channel mapping family) and the comment header "OpusTags"
//! (vendor string and "KEY=value" comments, Vorbis-comment style). Both are written and parsed here; parsing
//! checks every length against the bytes actually present, so a bogus count is an error, not an allocation.

use crate::AudioError;

const HEAD_MAGIC: &[u8; 8] = b"OpusHead";
const TAGS_MAGIC: &[u8; 8] = b"OpusTags";
const HEAD_LEN: usize = 19;

/// The Ogg Opus identification header (mono or stereo, channel mapping family 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusHead {
    /// Output channel count: 1 or 2.
    pub channels: u8,
    /// Samples (at 48 kHz) to drop from the start of the decoded audio.
    pub pre_skip: u16,
    /// Sample rate of the original input, for information only (0 = unknown).
    pub input_sample_rate: u32,
    /// Gain to apply when decoding, in dB as Q7.8 fixed point.
    pub output_gain_q8: i16,
    /// Channel mapping family; only 0 (mono/stereo) is supported.
    pub mapping_family: u8,
}

impl OpusHead {
    /// Serialise as an "OpusHead" packet (version 1).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD_LEN);
        out.extend_from_slice(HEAD_MAGIC);
        out.push(1);
        out.push(self.channels);
        out.extend_from_slice(&self.pre_skip.to_le_bytes());
        out.extend_from_slice(&self.input_sample_rate.to_le_bytes());
        out.extend_from_slice(&self.output_gain_q8.to_le_bytes());
        out.push(self.mapping_family);
        out
    }

    /// Parse an "OpusHead" packet. Multichannel streams (mapping family other than 0) are `Unsupported`.
    pub fn parse(packet: &[u8]) -> Result<Self, AudioError> {
        let Some(b) = packet.get(..HEAD_LEN) else {
            return Err(AudioError::corrupt(0, "OpusHead packet is too short"));
        };
        if &b[..8] != HEAD_MAGIC {
            return Err(AudioError::corrupt(0, "first packet is not an OpusHead header"));
        }
        let version = b[8];
        if version > 15 {
            return Err(AudioError::Unsupported(format!("Ogg Opus version {version}")));
        }
        let head = OpusHead {
            channels: b[9],
            pre_skip: u16::from_le_bytes([b[10], b[11]]),
            input_sample_rate: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
            output_gain_q8: i16::from_le_bytes([b[16], b[17]]),
            mapping_family: b[18],
        };
        if head.mapping_family != 0 {
            return Err(AudioError::Unsupported(format!(
                "multichannel Ogg Opus (channel mapping family {}, {} channels)",
                head.mapping_family, head.channels
            )));
        }
        if !(1..=2).contains(&head.channels) {
            return Err(AudioError::corrupt(
                9,
                format!("OpusHead with {} channels in mapping family 0", head.channels),
            ));
        }
        Ok(head)
    }
}

/// The Ogg Opus comment header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpusTags {
    /// Name of the encoder that wrote the stream.
    pub vendor: String,
    /// (key, value) pairs, in stream order; keys are compared case-insensitively.
    pub comments: Vec<(String, String)>,
}

impl OpusTags {
    /// Serialise as an "OpusTags" packet.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(TAGS_MAGIC);
        put_string(&mut out, self.vendor.as_bytes());
        put_u32(&mut out, self.comments.len());
        for (key, value) in &self.comments {
            put_string(&mut out, format!("{key}={value}").as_bytes());
        }
        out
    }

    /// Parse an "OpusTags" packet. Comments that are not valid UTF-8 are converted lossily; comments
    /// without '=' are skipped.
    pub fn parse(packet: &[u8]) -> Result<Self, AudioError> {
        if packet.get(..8) != Some(&TAGS_MAGIC[..]) {
            return Err(AudioError::corrupt(0, "second packet is not an OpusTags header"));
        }
        let mut r = Reader { buf: packet, pos: 8 };
        let vendor = String::from_utf8_lossy(r.string()?).into_owned();
        let count_pos = r.pos as u64;
        let count = r.u32()?;
        // Every comment takes at least its 4-byte length, which bounds the count by the bytes present.
        let left = packet.len().saturating_sub(r.pos) / 4;
        let n = usize::try_from(count).unwrap_or(usize::MAX);
        if n > left {
            return Err(AudioError::corrupt(count_pos, format!("OpusTags claims {count} comments")));
        }
        let mut comments = Vec::with_capacity(n);
        for _ in 0..count {
            let text = String::from_utf8_lossy(r.string()?);
            if let Some((key, value)) = text.split_once('=') {
                comments.push((key.to_string(), value.to_string()));
            }
        }
        Ok(OpusTags { vendor, comments })
    }

    /// Value of the first comment whose key matches `key` (ASCII case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.comments.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    let s = s.get(..s.len().min(u32::MAX as usize)).unwrap_or_default();
    put_u32(out, s.len());
    out.extend_from_slice(s);
}

/// Bounds-checked little-endian reader over a header packet.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AudioError> {
        let end = self.pos.checked_add(n);
        let Some(bytes) = end.and_then(|end| self.buf.get(self.pos..end)) else {
            return Err(AudioError::corrupt(self.pos as u64, "OpusTags header is truncated"));
        };
        self.pos += n;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32, AudioError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<&'a [u8], AudioError> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| AudioError::corrupt(self.pos as u64, "OpusTags string too long"))?;
        self.take(len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head() -> OpusHead {
        OpusHead { channels: 1, pre_skip: 312, input_sample_rate: 16_000, output_gain_q8: -256, mapping_family: 0 }
    }

    fn tags() -> OpusTags {
        OpusTags {
            vendor: "Loa test".into(),
            comments: vec![("TITLE".into(), "Marché = fermé".into()), ("encoder".into(), "loa".into())],
        }
    }

    #[test]
    fn head_bytes_and_round_trip() {
        let bytes = head().to_bytes();
        assert_eq!(bytes, b"OpusHead\x01\x01\x38\x01\x80\x3e\x00\x00\x00\xff\x00");
        assert_eq!(OpusHead::parse(&bytes).unwrap(), head());
    }

    #[test]
    fn head_rejects_bad_input() {
        let bytes = head().to_bytes();
        for cut in 0..bytes.len() {
            assert!(matches!(OpusHead::parse(&bytes[..cut]), Err(AudioError::Corrupt { .. })));
        }
        let mut family1 = bytes.clone();
        family1[18] = 1;
        family1.extend_from_slice(&[1, 0, 0]);
        assert!(matches!(OpusHead::parse(&family1), Err(AudioError::Unsupported(m)) if m.contains("multichannel")));
        let mut family255 = bytes.clone();
        family255[18] = 255;
        assert!(matches!(OpusHead::parse(&family255), Err(AudioError::Unsupported(_))));
        let mut three = bytes.clone();
        three[9] = 3;
        assert!(matches!(OpusHead::parse(&three), Err(AudioError::Corrupt { .. })));
        let mut version = bytes.clone();
        version[8] = 16;
        assert!(matches!(OpusHead::parse(&version), Err(AudioError::Unsupported(_))));
        let mut magic = bytes;
        magic[0] = b'o';
        assert!(matches!(OpusHead::parse(&magic), Err(AudioError::Corrupt { .. })));
    }

    #[test]
    fn tags_round_trip_and_lookup() {
        let bytes = tags().to_bytes();
        let parsed = OpusTags::parse(&bytes).unwrap();
        assert_eq!(parsed, tags());
        assert_eq!(parsed.get("title"), Some("Marché = fermé"));
        assert_eq!(parsed.get("ENCODER"), Some("loa"));
        assert_eq!(parsed.get("artist"), None);
        assert_eq!(OpusTags::parse(&OpusTags::default().to_bytes()).unwrap(), OpusTags::default());
    }

    #[test]
    fn tags_reject_truncation_and_huge_counts() {
        let bytes = tags().to_bytes();
        for cut in 0..bytes.len() {
            assert!(OpusTags::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = b"OpusTags".to_vec();
        huge.extend_from_slice(&0u32.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(OpusTags::parse(&huge), Err(AudioError::Corrupt { position: 12, .. })));
        let mut long_vendor = b"OpusTags".to_vec();
        long_vendor.extend_from_slice(&u32::MAX.to_le_bytes());
        long_vendor.extend_from_slice(b"abc");
        assert!(matches!(OpusTags::parse(&long_vendor), Err(AudioError::Corrupt { .. })));
    }

    #[test]
    fn tags_skip_comments_without_equals() {
        let mut bytes = b"OpusTags".to_vec();
        put_string(&mut bytes, b"v");
        put_u32(&mut bytes, 2);
        put_string(&mut bytes, b"junk");
        put_string(&mut bytes, b"A=b");
        let parsed = OpusTags::parse(&bytes).unwrap();
        assert_eq!(parsed.comments, vec![("A".to_string(), "b".to_string())]);
    }
}
