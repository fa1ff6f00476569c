//! Fuzzes the incremental Ogg Opus reader the receiver plays from, fed in uneven pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loa_audio::ogg::OpusStreamDecoder;

fuzz_target!(|data: &[u8]| {
    let Ok(mut decoder) = OpusStreamDecoder::new(16_000) else { return };
    let split = data.first().map_or(1, |&b| usize::from(b).max(1));
    for piece in data.chunks(split) {
        if decoder.push_bytes(piece).is_err() {
            break;
        }
    }
});
