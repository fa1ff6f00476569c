//! Writes an Ogg Opus file (RFC 7845) in memory: the OpusHead page (BOS), the OpusTags page(s), then audio
//! pages. An audio page is closed as soon as it holds the configured amount of audio, so a receiver can start
//! playing a file that is still arriving; a packet that would push a page past that amount starts a new page.
//! Each page's granule position is the number of 48 kHz samples decoded up to the end of the last packet
//! completed on it (the pre-skip samples count too: the audio proper starts at granule `pre_skip`). The last
//! packet is held back so [`OggOpusWriter::finish`] can put it on the EOS page, whose granule position trims
//! the padding of the final frame (RFC 7845 §4.4).

use super::head::{OpusHead, OpusTags};
use super::page::{Page, FLAG_BOS, FLAG_CONTINUED, FLAG_EOS, NO_GRANULE};

/// A 20 ms fullband CELT frame of silence, as libopus encodes it.
const SILENT_FRAME: [u8; 3] = [0xF8, 0xFF, 0xFE];

/// Builds an Ogg Opus file from Opus packets.
#[derive(Debug)]
pub struct OggOpusWriter {
    out: Vec<u8>,
    serial: u32,
    sequence: u32,
    pre_skip: u64,
    max_page_samples: u64,
    /// 48 kHz samples decoded from all packets added so far (pre-skip included, as granules count it).
    granule: u64,
    /// Granule of the last page written that had one (the floor for the end-trimmed final granule).
    last_page_granule: u64,
    page: OpenPage,
    pending: Option<(Vec<u8>, u64)>,
}

/// The page being filled.
#[derive(Debug, Default)]
struct OpenPage {
    continued: bool,
    lacing: Vec<u8>,
    body: Vec<u8>,
    /// Whether a packet ends on this page.
    completed: bool,
    /// Audio (48 kHz samples) of the packets that end on this page.
    samples: u64,
}

impl OggOpusWriter {
    /// Start a stream: writes the header pages. `max_page_samples_48k`: close a page once it holds at least
    /// this much audio (48 kHz units); callers pass ≤ 48_000 (1 s).
    pub fn new(serial: u32, head: &OpusHead, tags: &OpusTags, max_page_samples_48k: u64) -> Self {
        let mut w = OggOpusWriter {
            out: Vec::new(),
            serial,
            sequence: 0,
            pre_skip: u64::from(head.pre_skip),
            max_page_samples: max_page_samples_48k.max(1),
            granule: 0,
            last_page_granule: 0,
            page: OpenPage::default(),
            pending: None,
        };
        w.add_to_page(&head.to_bytes(), 0);
        w.flush_page(FLAG_BOS);
        w.add_to_page(&tags.to_bytes(), 0);
        w.flush_page(0);
        w
    }

    /// Append one Opus packet whose decoded duration is `samples_48k` (in 48 kHz units).
    pub fn push_packet(&mut self, packet: &[u8], samples_48k: u64) {
        if let Some((prev, samples)) = self.pending.replace((packet.to_vec(), samples_48k)) {
            self.add_audio(&prev, samples);
        }
    }

    /// Finish the stream: the last page carries the EOS flag and granule = pre_skip + valid_samples_48k
    /// (end trimming, RFC 7845 §4.4), where `valid_samples_48k` is the real length of the input audio at
    /// 48 kHz. The value is clamped so it never extends the audio nor cuts into earlier pages.
    pub fn finish(mut self, mut valid_samples_48k: u64) -> Vec<u8> {
        if self.pending.is_none() {
            // opusfile (so opusinfo and opusdec) rejects a stream without audio packets: write 20 ms frames of
            // silence covering the pre-skip, all of it trimmed away.
            for _ in 0..self.pre_skip.div_ceil(960).max(1) {
                self.push_packet(&SILENT_FRAME, 960);
            }
            valid_samples_48k = 0;
        }
        if let Some((last, samples)) = self.pending.take() {
            if self.page.completed && self.page.samples.saturating_add(samples) > self.max_page_samples {
                self.flush_page(0);
            }
            self.add_to_page(&last, samples);
        }
        let wanted = self.pre_skip.saturating_add(valid_samples_48k);
        self.granule = wanted.min(self.granule).max(self.last_page_granule);
        self.flush_page(FLAG_EOS);
        self.out
    }

    fn add_audio(&mut self, packet: &[u8], samples: u64) {
        if self.page.completed && self.page.samples.saturating_add(samples) > self.max_page_samples {
            self.flush_page(0);
        }
        self.add_to_page(packet, samples);
        if self.page.samples >= self.max_page_samples {
            self.flush_page(0);
        }
    }

    /// Lace `packet` onto the open page, starting new pages when the segment table fills up.
    fn add_to_page(&mut self, packet: &[u8], samples: u64) {
        let mut rest = packet;
        loop {
            let room = 255 - self.page.lacing.len().min(255);
            let full = rest.len() / 255;
            if full < room {
                self.page.lacing.extend(std::iter::repeat_n(255, full));
                self.page.lacing.push((rest.len() % 255) as u8);
                self.page.body.extend_from_slice(rest);
                self.page.completed = true;
                self.page.samples = self.page.samples.saturating_add(samples);
                self.granule = self.granule.saturating_add(samples);
                return;
            }
            let (now, later) = rest.split_at(room * 255);
            self.page.lacing.extend(std::iter::repeat_n(255, room));
            self.page.body.extend_from_slice(now);
            rest = later;
            self.flush_page(0);
            // Nothing of the packet fits when the table was already full: then the next page starts it afresh.
            self.page.continued = !now.is_empty();
        }
    }

    /// Write the open page (if it has anything, or always when `flags` has EOS) and start an empty one.
    fn flush_page(&mut self, flags: u8) {
        if self.page.lacing.is_empty() && flags & FLAG_EOS == 0 {
            return;
        }
        let open = std::mem::take(&mut self.page);
        let granule = if open.completed { self.granule } else { NO_GRANULE };
        if open.completed {
            self.last_page_granule = granule;
        }
        let page = Page {
            flags: flags | if open.continued { FLAG_CONTINUED } else { 0 },
            granule,
            serial: self.serial,
            sequence: self.sequence,
            lacing: open.lacing,
            body: open.body,
        };
        self.out.extend_from_slice(&page.to_bytes());
        self.sequence = self.sequence.wrapping_add(1);
    }
}
