//! Fuzzes the binary chunk frame a receiver reads off `rx/{r}/chunk`: any bytes give a frame or a typed error;
//! a frame that decodes encodes back to the same bytes, and its data is checked against a manifest without panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use loa_protocol::{BulletinId, BulletinInfo, Category, ChunkFrame, Codec, Language, Manifest, Tier, Timestamp};

/// A 3-chunk manifest (1 KiB chunks, the last one short) to check decoded frames against.
fn manifest() -> &'static Manifest {
    static M: OnceLock<Manifest> = OnceLock::new();
    M.get_or_init(|| {
        let now = Timestamp::from_unix_ms(1_800_000_000_000).expect("constant time");
        let info = BulletinInfo {
            bulletin: BulletinId::new("b-000000000001-vi").expect("constant id"),
            title: "fuzz".into(),
            category: Category::Market,
            tier: Tier::Normal,
            lang: Language::new("vi").expect("constant language"),
            issued_at: now,
            expires_at: now.saturating_add_ms(86_400_000),
            duration_ms: 1000,
            codec: Codec::speech(),
        };
        let file: Vec<u8> = (0..2500u32).map(|i| (i * 7 % 251) as u8).collect();
        Manifest::for_file(info, &file, 1024).expect("constant manifest")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = ChunkFrame::decode(data) else { return };
    let again = frame.encode().expect("a decoded frame encodes");
    assert_eq!(again, data, "decode then encode must give the same bytes");
    let m = manifest();
    if frame.tag == m.tag() {
        let _ = m.verify_chunk(frame.index, &frame.data);
    }
    let _ = m.chunk_range(frame.index);
});
