//! Fuzzes the decode entry point every upload goes through: any bytes must give audio or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loa_audio::decode::{decode, DecodeOptions};

fuzz_target!(|data: &[u8]| {
    // A short cap keeps each run fast; the cap itself is part of what is exercised.
    let opts = DecodeOptions { max_duration: std::time::Duration::from_secs(120) };
    let _ = decode(data, &opts);
});
