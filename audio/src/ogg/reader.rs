//! Reads Ogg Opus (RFC 7845), also from a buffer that is still growing. [`OggOpusDemuxer`] takes bytes as
//! they arrive, checks each complete page (CRC, sequence numbers), follows the first Opus logical stream and
//! ignores pages of any other serial or after its end, and hands out whole packets. [`OpusStreamDecoder`]
//! decodes those packets with libopus, drops the pre-skip and applies the end trim from the EOS page's
//! granule position; because it only ever uses complete pages and the EOS page comes last, the PCM it has
//! returned after any prefix of a file is a prefix of the PCM of the whole file.

use std::collections::VecDeque;

use super::head::{OpusHead, OpusTags};
use super::page::{Page, NO_GRANULE};
use crate::AudioError;

/// Incremental demuxer over a byte buffer that may still be growing.
#[derive(Debug, Default)]
pub struct OggOpusDemuxer {
    /// Bytes not yet parsed into pages.
    buf: Vec<u8>,
    /// Absolute offset of `buf[0]` in the stream.
    base: u64,
    /// Offset of the last page taken from `buf`.
    page_pos: u64,
    serial: Option<u32>,
    next_sequence: u32,
    /// A packet that continues on the next page.
    partial: Option<Vec<u8>>,
    queue: VecDeque<Vec<u8>>,
    head: Option<OpusHead>,
    tags: Option<OpusTags>,
    finished: bool,
    final_granule: Option<u64>,
    /// Once something failed, every later call reports it again.
    failed: Option<AudioError>,
}

impl OggOpusDemuxer {
    /// A demuxer that has seen no bytes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Give it more bytes (appended after everything given before).
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        if !self.finished {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Next complete audio packet from complete, CRC-checked pages: `Ok(Some(packet))`, `Ok(None)` when more
    /// bytes are needed (or the stream ended), `Err` on corrupt data. Parses OpusHead/OpusTags itself first.
    pub fn next_packet(&mut self) -> Result<Option<Vec<u8>>, AudioError> {
        if let Some(e) = &self.failed {
            return Err(replay(e));
        }
        self.next_packet_inner().inspect_err(|e| self.failed = Some(replay(e)))
    }

    /// The identification header, once parsed.
    pub fn head(&self) -> Option<&OpusHead> {
        self.head.as_ref()
    }

    /// The comment header, once parsed.
    pub fn tags(&self) -> Option<&OpusTags> {
        self.tags.as_ref()
    }

    /// True once the EOS page of the Opus stream has been read.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Granule position of the EOS page (needed for end trim), once seen.
    pub fn final_granule(&self) -> Option<u64> {
        self.final_granule
    }

    /// Byte offset of the page the last packet came from (for error messages).
    pub(crate) fn page_position(&self) -> u64 {
        self.page_pos
    }

    /// Pages are parsed one at a time, only when every packet of the previous page has been handed out, so
    /// `final_granule` becomes known exactly when the packets of the EOS page are returned.
    fn next_packet_inner(&mut self) -> Result<Option<Vec<u8>>, AudioError> {
        loop {
            if let Some(packet) = self.queue.pop_front() {
                return Ok(Some(packet));
            }
            if self.finished {
                return Ok(None);
            }
            let parsed = Page::parse(&self.buf).map_err(|e| shift(e, self.base))?;
            let Some((page, used)) = parsed else {
                return Ok(None);
            };
            self.page_pos = self.base;
            self.buf.drain(..used);
            self.base = self.base.saturating_add(used as u64);
            self.take_page(&page)?;
        }
    }

    fn take_page(&mut self, page: &Page) -> Result<(), AudioError> {
        let pos = self.page_pos;
        match self.serial {
            None if !page.is_bos() => {
                return Err(AudioError::Unsupported("Ogg file without an Opus stream".into()));
            }
            None => {
                let first = page.pieces().first().map(|p| p.data.starts_with(b"OpusHead"));
                if first != Some(true) {
                    return Ok(()); // another codec's stream (or a skeleton): not ours
                }
                self.serial = Some(page.serial);
                self.next_sequence = page.sequence;
            }
            Some(serial) if serial != page.serial => return Ok(()),
            Some(_) => {}
        }
        if page.sequence != self.next_sequence {
            let detail =
                format!("Ogg page sequence jumps from {} to {}: pages are missing", self.next_sequence, page.sequence);
            return Err(AudioError::corrupt(pos, detail));
        }
        self.next_sequence = page.sequence.wrapping_add(1);
        if !page.lacing.is_empty() && page.is_continued() != self.partial.is_some() {
            let detail = if page.is_continued() {
                "Ogg page continues a packet that never started"
            } else {
                "Ogg page drops an unfinished packet"
            };
            return Err(AudioError::corrupt(pos, detail));
        }
        let body_pos = pos.saturating_add(27 + page.lacing.len() as u64);
        for (i, piece) in page.pieces().into_iter().enumerate() {
            let mut packet = if i == 0 { self.partial.take().unwrap_or_default() } else { Vec::new() };
            packet.extend_from_slice(piece.data);
            if !piece.complete {
                self.partial = Some(packet);
            } else if self.head.is_none() {
                self.head = Some(OpusHead::parse(&packet).map_err(|e| shift(e, body_pos))?);
            } else if self.tags.is_none() {
                self.tags = Some(OpusTags::parse(&packet).map_err(|e| shift(e, body_pos))?);
            } else {
                self.queue.push_back(packet);
            }
        }
        if page.is_eos() {
            if self.tags.is_none() {
                return Err(AudioError::corrupt(pos, "Ogg Opus stream ends inside its headers"));
            }
            self.finished = true;
            self.buf = Vec::new();
            self.final_granule = (page.granule != NO_GRANULE).then_some(page.granule);
        }
        Ok(())
    }
}

/// Move a `Corrupt` position from relative to absolute.
fn shift(e: AudioError, base: u64) -> AudioError {
    match e {
        AudioError::Corrupt { position, detail } => AudioError::corrupt(base.saturating_add(position), detail),
        other => other,
    }
}

/// A copy of an error, to report it again (`Io` cannot be cloned, so it comes back as text).
fn replay(e: &AudioError) -> AudioError {
    match e {
        AudioError::Corrupt { position, detail } => AudioError::corrupt(*position, detail.clone()),
        AudioError::Unsupported(s) => AudioError::Unsupported(s.clone()),
        AudioError::InvalidOption(s) => AudioError::InvalidOption(s.clone()),
        other => AudioError::corrupt(0, other.to_string()),
    }
}

/// Decodes Ogg Opus to interleaved i16 PCM at `output_rate` (8000/12000/16000/24000/48000), honouring
/// pre-skip and end trim.
#[derive(Debug)]
pub struct OpusStreamDecoder {
    demux: OggOpusDemuxer,
    rate: u32,
    decoder: Option<opus::Decoder>,
    /// Output frames of pre-skip still to drop.
    skip: u64,
    /// Output frames returned so far.
    emitted: u64,
    /// The first error met; every later call reports it (the first one too, unless it had PCM to return).
    failed: Option<AudioError>,
}

impl OpusStreamDecoder {
    /// A decoder producing PCM at `output_rate`, one of the rates libopus decodes to.
    pub fn new(output_rate: u32) -> Result<Self, AudioError> {
        if ![8000, 12_000, 16_000, 24_000, 48_000].contains(&output_rate) {
            return Err(AudioError::InvalidOption(format!("Opus cannot decode to {output_rate} Hz")));
        }
        Ok(OpusStreamDecoder {
            demux: OggOpusDemuxer::new(),
            rate: output_rate,
            decoder: None,
            skip: 0,
            emitted: 0,
            failed: None,
        })
    }

    /// Feed newly arrived bytes; returns the PCM that became playable (a prefix-extending piece of the final
    /// output). An error met after some PCM was decoded in the same call is returned by the next call instead;
    /// after an error, every call returns it again.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<Vec<i16>, AudioError> {
        if let Some(e) = &self.failed {
            return Err(replay(e));
        }
        self.demux.push_bytes(bytes);
        let mut out = Vec::new();
        if let Err(e) = self.decode_available(&mut out) {
            let first = replay(&e);
            self.failed = Some(e);
            if out.is_empty() {
                return Err(first);
            }
        }
        Ok(out)
    }

    /// Output channel count (1 or 2), once the header is known.
    pub fn channels(&self) -> Option<u8> {
        self.demux.head().map(|h| h.channels)
    }

    /// The identification header, once parsed.
    pub fn head(&self) -> Option<&OpusHead> {
        self.demux.head()
    }

    /// The comment header, once parsed.
    pub fn tags(&self) -> Option<&OpusTags> {
        self.demux.tags()
    }

    /// True once the whole stream (up to its EOS page) has been decoded.
    pub fn is_finished(&self) -> bool {
        self.demux.is_finished()
    }

    /// `samples_48k` converted to output frames (rounding down).
    fn scale(&self, samples_48k: u64) -> u64 {
        let scaled = u128::from(samples_48k) * u128::from(self.rate) / 48_000;
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }

    fn decode_available(&mut self, out: &mut Vec<i16>) -> Result<(), AudioError> {
        while let Some(packet) = self.demux.next_packet()? {
            let pos = self.demux.page_position();
            let Some(head) = self.demux.head().cloned() else {
                return Err(AudioError::corrupt(pos, "audio packet before OpusHead"));
            };
            let channels = usize::from(head.channels);
            if self.decoder.is_none() {
                let layout = if head.channels == 1 { opus::Channels::Mono } else { opus::Channels::Stereo };
                let mut decoder = opus::Decoder::new(self.rate, layout)
                    .map_err(|e| AudioError::Unsupported(format!("libopus decoder: {e}")))?;
                decoder
                    .set_gain(i32::from(head.output_gain_q8))
                    .map_err(|e| AudioError::Unsupported(format!("libopus decoder gain: {e}")))?;
                self.decoder = Some(decoder);
                self.skip = self.scale(u64::from(head.pre_skip));
            }
            let Some(decoder) = self.decoder.as_mut() else {
                continue;
            };
            let bad = |e: opus::Error| AudioError::corrupt(pos, format!("bad Opus packet: {e}"));
            let frames = opus::packet::get_nb_samples(&packet, self.rate).map_err(bad)?;
            let mut pcm = vec![0i16; frames.saturating_mul(channels)];
            let decoded = decoder.decode(&packet, &mut pcm, false).map_err(bad)?.min(frames) as u64;
            let dropped = decoded.min(self.skip);
            self.skip -= dropped;
            let mut keep = decoded - dropped;
            if let Some(granule) = self.demux.final_granule() {
                let total = self.scale(granule.saturating_sub(u64::from(head.pre_skip)));
                keep = keep.min(total.saturating_sub(self.emitted));
            }
            let start = usize::try_from(dropped).unwrap_or(usize::MAX).saturating_mul(channels);
            let len = usize::try_from(keep).unwrap_or(usize::MAX).saturating_mul(channels);
            out.extend_from_slice(pcm.get(start..start.saturating_add(len)).unwrap_or_default());
            self.emitted = self.emitted.saturating_add(keep);
        }
        Ok(())
    }
}

/// A whole decoded Ogg Opus file.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedOpus {
    /// The identification header.
    pub head: OpusHead,
    /// The comment header.
    pub tags: OpusTags,
    /// Channels in `pcm` (1 or 2).
    pub channels: u8,
    /// Sample rate of `pcm`.
    pub rate: u32,
    /// Interleaved samples.
    pub pcm: Vec<i16>,
}

/// Whole-file decode to `output_rate`; `Err(Corrupt)` if the stream has no EOS page (the file is cut short).
pub fn decode_ogg_opus(bytes: &[u8], output_rate: u32) -> Result<DecodedOpus, AudioError> {
    if !bytes.starts_with(b"OggS") {
        return Err(AudioError::Unsupported("not an Ogg file".into()));
    }
    let mut decoder = OpusStreamDecoder::new(output_rate)?;
    let pcm = decoder.push_bytes(bytes)?;
    decoder.push_bytes(&[])?; // reports an error met after some PCM in the first call
    let (Some(head), Some(tags)) = (decoder.head(), decoder.tags()) else {
        if is_ogg_opus(bytes) || matches!(Page::parse(bytes), Ok(None)) {
            return Err(AudioError::corrupt(bytes.len() as u64, "Ogg file cut short inside its headers"));
        }
        return Err(AudioError::Unsupported("Ogg file without an Opus stream".into()));
    };
    if !decoder.is_finished() {
        let detail = "Ogg Opus stream has no end-of-stream page: the file was cut short";
        return Err(AudioError::corrupt(bytes.len() as u64, detail));
    }
    Ok(DecodedOpus { head: head.clone(), tags: tags.clone(), channels: head.channels, rate: output_rate, pcm })
}

/// True when the bytes start with an Ogg page whose first packet starts with "OpusHead" (format sniffing:
/// only the page header and the first 8 body bytes need to be present).
pub fn is_ogg_opus(bytes: &[u8]) -> bool {
    let Some(&nseg) = bytes.get(26) else {
        return false;
    };
    let body = 27 + usize::from(nseg);
    bytes.starts_with(b"OggS\0") && nseg > 0 && bytes.get(body..body + 8) == Some(&b"OpusHead"[..])
}
