//! Tests across the Ogg Opus writer and reader: round trips with real libopus packets, truncated and damaged
//! files, other logical streams, and files made by (or checked with) opus-tools and ffmpeg when installed.

use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use super::page::NO_GRANULE;
use super::*;
use crate::AudioError;

/// A 16 kHz mono chirp encoded with libopus in 20 ms frames and written with `OggOpusWriter`.
pub(super) struct Encoded {
    pub bytes: Vec<u8>,
    pub input: Vec<i16>,
    pub packets: Vec<Vec<u8>>,
    pub pre_skip: u16,
}

pub(super) fn chirp(n: usize, rate: u32) -> Vec<i16> {
    let rate = f64::from(rate);
    let secs = n as f64 / rate;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate;
            let phase = 2.0 * std::f64::consts::PI * (200.0 * t + 1400.0 * t * t / secs.max(0.001));
            (phase.sin() * 12_000.0) as i16
        })
        .collect()
}

pub(super) fn encode(n: usize, max_page_samples_48k: u64) -> Encoded {
    let input = chirp(n, 16_000);
    let mut enc = opus::Encoder::new(16_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let lookahead = enc.get_lookahead().unwrap() as usize;
    let pre_skip = (lookahead * 3) as u16;
    let head = OpusHead { channels: 1, pre_skip, input_sample_rate: 16_000, output_gain_q8: 0, mapping_family: 0 };
    let tags = OpusTags { vendor: "loa-test".into(), comments: vec![("TITLE".into(), "chirp".into())] };
    let mut writer = OggOpusWriter::new(0x4c6f_6121, &head, &tags, max_page_samples_48k);
    let mut packets = Vec::new();
    // Encode enough frames to cover the input plus the encoder's lookahead.
    for start in (0..n + lookahead).step_by(320) {
        let mut frame = [0i16; 320];
        for (k, s) in frame.iter_mut().enumerate() {
            *s = input.get(start + k).copied().unwrap_or(0);
        }
        let packet = enc.encode_vec(&frame, 4000).unwrap();
        writer.push_packet(&packet, 960);
        packets.push(packet);
    }
    let bytes = writer.finish(n as u64 * 3);
    Encoded { bytes, input, packets, pre_skip }
}

fn all_pages(mut bytes: &[u8]) -> Vec<Page> {
    let mut pages = Vec::new();
    while let Some((page, used)) = Page::parse(bytes).unwrap() {
        pages.push(page);
        bytes = &bytes[used..];
    }
    assert!(bytes.is_empty(), "trailing bytes");
    pages
}

fn page_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = vec![0];
    for page in all_pages(bytes) {
        offsets.push(offsets.last().unwrap() + page.to_bytes().len());
    }
    offsets
}

fn stream_decode(bytes: &[u8], chunk: usize) -> Vec<i16> {
    let mut decoder = OpusStreamDecoder::new(16_000).unwrap();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        out.extend(decoder.push_bytes(piece).unwrap());
    }
    out
}

#[test]
fn round_trip_keeps_exact_length_and_alignment() {
    let n = 16_000 + 1234;
    let enc = encode(n, 48_000);
    let decoded = decode_ogg_opus(&enc.bytes, 16_000).unwrap();
    assert_eq!((decoded.channels, decoded.rate), (1, 16_000));
    assert_eq!(decoded.head.pre_skip, enc.pre_skip);
    assert_eq!(decoded.tags.get("title"), Some("chirp"));
    assert_eq!(decoded.pcm.len(), n);
    // Pre-skip equals the encoder delay, so the output lines up with the input: the best lag is 0.
    let corr = |lag: usize| -> f64 {
        (2000..n - 2000).map(|i| f64::from(enc.input[i]) * f64::from(decoded.pcm[i + lag - 20])).sum()
    };
    let best = (0..=40).max_by(|&a, &b| corr(a).total_cmp(&corr(b))).unwrap();
    assert_eq!(best, 20, "decoded audio is shifted by {} samples", best as i64 - 20);
    assert_eq!(decode_ogg_opus(&enc.bytes, 48_000).unwrap().pcm.len(), n * 3);
    assert_eq!(decode_ogg_opus(&enc.bytes, 8_000).unwrap().pcm.len(), n / 2);
}

#[test]
fn demuxer_returns_the_packets_byte_by_byte() {
    let enc = encode(8000, 9600);
    let mut demux = OggOpusDemuxer::new();
    let mut packets = Vec::new();
    for &b in &enc.bytes {
        demux.push_bytes(&[b]);
        while let Some(p) = demux.next_packet().unwrap() {
            packets.push(p);
        }
    }
    assert_eq!(packets, enc.packets);
    assert!(demux.is_finished());
    assert_eq!(demux.final_granule(), Some(u64::from(enc.pre_skip) + 24_000));
    assert_eq!(demux.head().unwrap().pre_skip, enc.pre_skip);
    assert_eq!(demux.tags().unwrap().vendor, "loa-test");
}

#[test]
fn any_truncation_decodes_to_a_prefix() {
    let enc = encode(16_000 * 3 + 100, 16_000);
    let full = decode_ogg_opus(&enc.bytes, 16_000).unwrap().pcm;
    assert!(stream_decode(&enc.bytes, 1000) == full);
    let mut runner = TestRunner::default();
    runner
        .run(&(0..=enc.bytes.len(), 1..5000usize), |(cut, chunk)| {
            let part = stream_decode(&enc.bytes[..cut], chunk);
            prop_assert!(part.len() <= full.len());
            prop_assert!(part == full[..part.len()], "cut at {} is not a prefix", cut);
            if cut < enc.bytes.len() {
                let is_cut_short =
                    matches!(decode_ogg_opus(&enc.bytes[..cut], 16_000), Err(AudioError::Corrupt { .. }));
                prop_assert!(cut < 4 || is_cut_short);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn empty_stream_is_valid() {
    let head = OpusHead { channels: 2, pre_skip: 312, input_sample_rate: 48_000, output_gain_q8: 0, mapping_family: 0 };
    let bytes = OggOpusWriter::new(1, &head, &OpusTags::default(), 48_000).finish(0);
    let decoded = decode_ogg_opus(&bytes, 48_000).unwrap();
    assert!(decoded.pcm.is_empty());
    assert_eq!(decoded.channels, 2);
    assert!(is_ogg_opus(&bytes));
}

#[test]
fn sniffing() {
    let enc = encode(3200, 48_000);
    assert!(is_ogg_opus(&enc.bytes[..40]));
    assert!(!is_ogg_opus(&enc.bytes[..30]));
    assert!(!is_ogg_opus(b"RIFF\0\0\0\0WAVEfmt "));
    assert!(matches!(decode_ogg_opus(b"ID3\x04", 16_000), Err(AudioError::Unsupported(_))));
    assert!(matches!(OpusStreamDecoder::new(44_100), Err(AudioError::InvalidOption(_))));
}

#[test]
fn other_serials_and_chained_streams_are_ignored() {
    let a = encode(16_000, 9600);
    let head = OpusHead { channels: 1, pre_skip: 0, input_sample_rate: 0, output_gain_q8: 0, mapping_family: 0 };
    let mut other = OggOpusWriter::new(7, &head, &OpusTags::default(), 960);
    for p in &a.packets {
        other.push_packet(p, 960);
    }
    let b = other.finish(48_000);
    let expected = decode_ogg_opus(&a.bytes, 16_000).unwrap().pcm;
    // Grouped: a non-Opus stream's BOS page, then the Opus BOS pages (the first one is used), then the pages
    // interleaved.
    let (pa, pb) = (all_pages(&a.bytes), all_pages(&b));
    let theora = Page { flags: 2, granule: 0, serial: 3, sequence: 0, lacing: vec![7], body: b"\x80theora".to_vec() };
    let mut grouped = theora.to_bytes();
    grouped.extend(pa[0].to_bytes());
    grouped.extend(pb[0].to_bytes());
    for i in 1..pa.len().max(pb.len()) {
        for pages in [&pa, &pb] {
            if let Some(p) = pages.get(i) {
                grouped.extend(p.to_bytes());
            }
        }
    }
    assert!(decode_ogg_opus(&grouped, 16_000).unwrap().pcm == expected);
    // Chained: a second stream after the first one's EOS.
    let chained = [a.bytes.clone(), b].concat();
    assert!(decode_ogg_opus(&chained, 16_000).unwrap().pcm == expected);
}

#[test]
fn missing_page_is_corrupt_with_its_position() {
    let enc = encode(16_000, 4800);
    let offsets = page_offsets(&enc.bytes);
    let holed = [&enc.bytes[..offsets[4]], &enc.bytes[offsets[5]..]].concat();
    match decode_ogg_opus(&holed, 16_000) {
        Err(AudioError::Corrupt { position, detail }) => {
            assert_eq!(position, offsets[4] as u64);
            assert!(detail.contains("missing"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let mut flipped = enc.bytes.clone();
    flipped[offsets[3] + 40] ^= 1;
    match decode_ogg_opus(&flipped, 16_000) {
        Err(AudioError::Corrupt { position, .. }) => assert_eq!(position, offsets[3] as u64),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The streaming decoder hands out what came before the damage, then reports it.
    let mut decoder = OpusStreamDecoder::new(16_000).unwrap();
    assert!(!decoder.push_bytes(&flipped).unwrap().is_empty());
    assert!(decoder.push_bytes(&[]).is_err());
}

fn packet_strategy() -> impl Strategy<Value = Vec<(usize, u64)>> {
    let len = prop_oneof![20 => 0..700usize, 1 => 60_000..70_000usize];
    let dur = prop::sample::select(vec![120u64, 240, 480, 960, 1920, 2880]);
    prop::collection::vec((len, dur), 0..80)
}

proptest! {
    #[test]
    fn writer_pages_hold_at_most_max_audio(
        spec in packet_strategy(), max in 2880u64..=48_000, pre_skip in 0u16..4000, trim in 0u64..3000,
    ) {
        let head = OpusHead { channels: 1, pre_skip, input_sample_rate: 0, output_gain_q8: 0, mapping_family: 0 };
        let mut writer = OggOpusWriter::new(99, &head, &OpusTags::default(), max);
        let packets: Vec<Vec<u8>> =
            spec.iter().enumerate().map(|(i, &(len, _))| (0..len).map(|j| (i * 7 + j) as u8).collect()).collect();
        for (p, &(_, dur)) in packets.iter().zip(&spec) {
            writer.push_packet(p, dur);
        }
        let total: u64 = spec.iter().map(|&(_, d)| d).sum();
        let last = spec.last().map_or(0, |&(_, d)| d);
        let valid = total.saturating_sub(trim.min(last.saturating_sub(1)));
        let bytes = writer.finish(valid);

        let pages = all_pages(&bytes);
        prop_assert!(pages[0].is_bos() && pages[0].pieces().len() == 1);
        prop_assert!(pages.last().unwrap().is_eos());
        let mut prev = 0;
        for (i, page) in pages.iter().enumerate() {
            prop_assert_eq!(page.sequence as usize, i);
            prop_assert_eq!(page.is_eos(), i + 1 == pages.len());
            prop_assert_eq!(page.is_bos(), i == 0);
            if i >= 2 && page.granule != NO_GRANULE && !page.is_eos() {
                prop_assert!(page.granule >= prev && page.granule - prev <= max, "page {} holds too much", i);
                prev = page.granule;
            }
        }
        // End trim: pre_skip + valid, but never beyond the audio nor before the previous page. Without audio
        // the writer adds silence that is trimmed away entirely.
        let final_granule = pages.last().unwrap().granule;
        if spec.is_empty() {
            prop_assert_eq!(final_granule, u64::from(pre_skip));
        } else {
            prop_assert_eq!(final_granule, (u64::from(pre_skip) + valid).min(total).max(prev));
            prop_assert!(total - prev <= max, "the EOS page holds too much");
        }

        let mut demux = OggOpusDemuxer::new();
        demux.push_bytes(&bytes);
        let mut got = Vec::new();
        while let Some(p) = demux.next_packet().unwrap() {
            got.push(p);
        }
        prop_assert!(got == packets || (packets.is_empty() && got.iter().all(|p| p == &[0xF8, 0xFF, 0xFE])));
        prop_assert_eq!(demux.head(), Some(&head));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..3000), ogg in any::<bool>()) {
        let bytes = if ogg { [&b"OggS\0\x02"[..], &bytes].concat() } else { bytes };
        let _ = decode_ogg_opus(&bytes, 48_000);
        let _ = is_ogg_opus(&bytes);
        let mut decoder = OpusStreamDecoder::new(8000).unwrap();
        for piece in bytes.chunks(97) {
            if decoder.push_bytes(piece).is_err() {
                break;
            }
        }
    }
}

#[test]
fn damaged_pages_with_valid_crcs_never_panic() {
    let enc = encode(16_000, 4800);
    let pages = all_pages(&enc.bytes);
    let strategy = (0..pages.len(), any::<prop::sample::Index>(), 1..=255u8, any::<u64>(), 0..4u8);
    TestRunner::default()
        .run(&strategy, |(which, at, xor, granule, field)| {
            let mut pages = pages.clone();
            let page = &mut pages[which];
            match field {
                0 if !page.body.is_empty() => {
                    let i = at.index(page.body.len());
                    page.body[i] ^= xor;
                }
                1 => page.granule = granule,
                2 => page.flags ^= xor & 7,
                _ => page.sequence ^= u32::from(xor),
            }
            let bytes: Vec<u8> = pages.iter().flat_map(Page::to_bytes).collect();
            for rate in [8000, 48_000] {
                let _ = decode_ogg_opus(&bytes, rate);
            }
            Ok(())
        })
        .unwrap();
}
