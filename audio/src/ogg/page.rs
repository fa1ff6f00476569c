//! Ogg pages (RFC 3533): serialising a page with its CRC, and parsing one from the front of a byte buffer
//! that may still be incomplete. A page is a 27-byte header ("OggS", version 0, flags, granule position,
//! stream serial, page sequence number, CRC-32, segment count), a segment table of lacing values, and the
//! body. Packets are cut into 255-byte segments; a lacing value below 255 ends a packet, and a page whose
//! table ends in 255 leaves its last packet to be continued on the next page.

use crate::AudioError;

/// Header flag: the page starts with the rest of a packet begun on the previous page.
pub const FLAG_CONTINUED: u8 = 0x01;
/// Header flag: first page of a logical stream.
pub const FLAG_BOS: u8 = 0x02;
/// Header flag: last page of a logical stream.
pub const FLAG_EOS: u8 = 0x04;
/// Granule position of a page on which no packet ends (-1 in the RFC's signed notation).
pub const NO_GRANULE: u64 = u64::MAX;

const CAPTURE: &[u8; 4] = b"OggS";
const HEADER_LEN: usize = 27;
const CRC_OFFSET: usize = 22;

/// One Ogg page. `lacing` must hold at most 255 values and sum to `body.len()`; pages from
/// [`Page::parse`] always do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// `FLAG_CONTINUED`, `FLAG_BOS` and `FLAG_EOS` bits.
    pub flags: u8,
    /// Codec-defined position at the end of the last packet completed here, or [`NO_GRANULE`].
    pub granule: u64,
    /// Logical stream serial number.
    pub serial: u32,
    /// Page sequence number within the logical stream.
    pub sequence: u32,
    /// The segment table.
    pub lacing: Vec<u8>,
    /// The page body (all segments back to back).
    pub body: Vec<u8>,
}

/// A piece of a packet found on one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The bytes of this piece.
    pub data: &'a [u8],
    /// True when the packet ends on this page; false when it continues on the next one.
    pub complete: bool,
}

impl Page {
    /// True when the first piece on the page continues a packet from the previous page.
    pub fn is_continued(&self) -> bool {
        self.flags & FLAG_CONTINUED != 0
    }

    /// True on the first page of a logical stream.
    pub fn is_bos(&self) -> bool {
        self.flags & FLAG_BOS != 0
    }

    /// True on the last page of a logical stream.
    pub fn is_eos(&self) -> bool {
        self.flags & FLAG_EOS != 0
    }

    /// Serialise the page, CRC included.
    pub fn to_bytes(&self) -> Vec<u8> {
        debug_assert!(self.lacing.len() <= 255, "an Ogg page holds at most 255 segments");
        let nseg = self.lacing.len().min(255);
        let mut out = Vec::with_capacity(HEADER_LEN + nseg + self.body.len());
        out.extend_from_slice(CAPTURE);
        out.push(0);
        out.push(self.flags);
        out.extend_from_slice(&self.granule.to_le_bytes());
        out.extend_from_slice(&self.serial.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(nseg as u8);
        out.extend_from_slice(&self.lacing[..nseg]);
        out.extend_from_slice(&self.body);
        let crc = crc32(&out);
        out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parse the page at the start of `buf`. `Ok(None)` means the page is not complete yet (more bytes are
    /// needed); on success also returns how many bytes the page took. Positions in errors are relative to
    /// the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Option<(Page, usize)>, AudioError> {
        let have = buf.len().min(CAPTURE.len());
        if buf.get(..have) != CAPTURE.get(..have) {
            return Err(AudioError::corrupt(0, "no Ogg page here (capture pattern \"OggS\" not found)"));
        }
        if let Some(&version) = buf.get(4) {
            if version != 0 {
                return Err(AudioError::corrupt(4, format!("unknown Ogg page version {version}")));
            }
        }
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let nseg = usize::from(header[26]);
        let Some(lacing) = buf.get(HEADER_LEN..HEADER_LEN + nseg) else {
            return Ok(None);
        };
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let total = HEADER_LEN + nseg + body_len;
        let Some(bytes) = buf.get(..total) else {
            return Ok(None);
        };
        let stored = u32::from_le_bytes([header[22], header[23], header[24], header[25]]);
        let computed = crc_update(crc_update(crc32(&bytes[..CRC_OFFSET]), &[0; 4]), &bytes[CRC_OFFSET + 4..]);
        if stored != computed {
            return Err(AudioError::corrupt(0, "Ogg page CRC mismatch (damaged data)"));
        }
        let mut granule = [0; 8];
        granule.copy_from_slice(&header[6..14]);
        let page = Page {
            flags: header[5],
            granule: u64::from_le_bytes(granule),
            serial: u32::from_le_bytes([header[14], header[15], header[16], header[17]]),
            sequence: u32::from_le_bytes([header[18], header[19], header[20], header[21]]),
            lacing: lacing.to_vec(),
            body: bytes[HEADER_LEN + nseg..].to_vec(),
        };
        Ok(Some((page, total)))
    }

    /// The packet pieces on this page, in order.
    pub fn pieces(&self) -> Vec<Piece<'_>> {
        let mut pieces = Vec::new();
        let (mut start, mut end) = (0usize, 0usize);
        for &l in &self.lacing {
            end = end.saturating_add(usize::from(l));
            if l < 255 {
                let data = self.body.get(start..end).unwrap_or_default();
                pieces.push(Piece { data, complete: true });
                start = end;
            }
        }
        if self.lacing.last() == Some(&255) {
            let data = self.body.get(start..end).unwrap_or_default();
            pieces.push(Piece { data, complete: false });
        }
        pieces
    }
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 { (r << 1) ^ 0x04C1_1DB7 } else { r << 1 };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
}

fn crc_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)];
    }
    crc
}

/// The Ogg CRC-32 (polynomial 0x04C11DB7, not reflected, initial value 0, no final xor).
pub fn crc32(data: &[u8]) -> u32 {
    crc_update(0, data)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample_page() -> Page {
        Page { flags: FLAG_BOS, granule: 0, serial: 0x1234_5678, sequence: 0, lacing: vec![3], body: b"abc".to_vec() }
    }

    #[test]
    fn crc_check_value() {
        // CRC-32/MPEG-2 without its init and final xor, i.e. the Ogg variant: check value of "123456789".
        assert_eq!(crc32(b"123456789"), 0x89A1_897F);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn hand_built_page_bytes() {
        let bytes = sample_page().to_bytes();
        let mut expected = b"OggS\x00\x02".to_vec();
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(&[0x78, 0x56, 0x34, 0x12]);
        expected.extend_from_slice(&[0; 4]);
        expected.extend_from_slice(&[0; 4]); // CRC placeholder
        expected.extend_from_slice(&[1, 3]);
        expected.extend_from_slice(b"abc");
        let crc = crc32(&expected);
        expected[22..26].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(bytes, expected);
        let (page, used) = Page::parse(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(page, sample_page());
    }

    #[test]
    fn round_trip_with_continuation() {
        let page = Page {
            flags: FLAG_CONTINUED | FLAG_EOS,
            granule: 123_456_789,
            serial: 7,
            sequence: 42,
            lacing: vec![10, 255, 255, 0, 255],
            body: (0..775u32).map(|i| i as u8).collect(),
        };
        let mut bytes = page.to_bytes();
        bytes.extend_from_slice(b"OggS trailing");
        let (parsed, used) = Page::parse(&bytes).unwrap().unwrap();
        assert_eq!(parsed, page);
        assert_eq!(used, 27 + 5 + 775);
        assert!(parsed.is_continued() && parsed.is_eos() && !parsed.is_bos());
        let pieces = parsed.pieces();
        assert_eq!(pieces.len(), 3);
        assert_eq!((pieces[0].data.len(), pieces[0].complete), (10, true));
        assert_eq!((pieces[1].data.len(), pieces[1].complete), (510, true));
        assert_eq!((pieces[2].data.len(), pieces[2].complete), (255, false));
    }

    #[test]
    fn incomplete_page_needs_more_bytes() {
        let bytes = sample_page().to_bytes();
        for cut in 0..bytes.len() {
            assert!(Page::parse(&bytes[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = sample_page().to_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            // A flip in the segment count or lacing value makes the page look longer (incomplete); anything
            // else must fail.
            match Page::parse(&bad) {
                Err(AudioError::Corrupt { .. }) => {}
                Ok(None) if i == 26 || i == 27 => {}
                other => panic!("flip at {i} gave {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_capture_and_version_are_corrupt() {
        assert!(matches!(Page::parse(b"Og"), Ok(None)));
        assert!(matches!(Page::parse(b"RIFF...."), Err(AudioError::Corrupt { position: 0, .. })));
        assert!(matches!(Page::parse(b"OggS\x01"), Err(AudioError::Corrupt { position: 4, .. })));
    }
}
