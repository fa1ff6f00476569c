//! Golden fixtures: one example of every payload under `tests/golden/`, signed with a fixed test key. Each file is
//! checked to be exactly what this crate produces, to parse, to verify (signed ones), to re-encode byte for
//! byte, and to appear verbatim in `docs/protocol.md`, so the docs cannot drift from the code.
//!
//! Each `.json` file holds one message followed by a newline that is not part of it; `chunk_frame.hex` is a
//! hex dump of one binary frame, 16 bytes a line. After an intended wire change, regenerate them with
//! `LOA_BLESS=1 cargo test -p loa-protocol --test golden fixtures_are_what_the_code_produces` and paste them
//! into the docs.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use loa_protocol::manifest::BulletinInfo;
use loa_protocol::*;

/// The golden test key: an Ed25519 seed that is public on purpose. Never use it outside tests.
const SEED: [u8; 32] = *b"loa-golden-test-key-not-secret!!";
/// 2025-06-01T00:00:00Z (07:00 in Vietnam).
const T0: i64 = 1_748_736_000_000;
const HOUR: i64 = 3_600_000;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms).unwrap()
}

fn signer() -> Signer {
    Signer::from_seed(KeyId::new("ctl-2025a").unwrap(), &SEED)
}

/// The key the golden key announcement moves to (seed public on purpose too).
fn new_signer() -> Signer {
    Signer::from_seed(KeyId::new("ctl-2026b").unwrap(), b"loa-golden-next-key-not-secret!!")
}

fn key_announcement() -> KeyAnnouncement {
    KeyAnnouncement {
        kid: new_signer().kid().clone(),
        public_key: loa_protocol::hash::encode_hex(&new_signer().public_key()),
        valid_from: t(T0 + 24 * HOUR),
    }
}

fn keys() -> TrustedKeys {
    let mut k = TrustedKeys::new();
    k.insert(signer().kid().clone(), &signer().public_key()).unwrap();
    k
}

fn rx() -> ReceiverId {
    ReceiverId::new("laocai-batxat-01").unwrap()
}

fn bulletin() -> BulletinId {
    BulletinId::new("2025-06-01-market-hmn").unwrap()
}

/// The golden bulletin "file": 16,424 synthetic bytes (two full 8 KiB chunks and a 40-byte last one).
fn file() -> Vec<u8> {
    (0..2 * 8192 + 40).map(|i: u32| (i.wrapping_mul(31).wrapping_add(7) % 251) as u8).collect()
}

fn manifest() -> Manifest {
    let info = BulletinInfo {
        bulletin: bulletin(),
        title: "Giá lúa và ngô tuần này".into(),
        category: Category::Market,
        tier: Tier::Normal,
        lang: Language::new("hmn").unwrap(),
        issued_at: t(T0),
        expires_at: t(T0 + 7 * 24 * HOUR),
        duration_ms: 10_920,
        codec: Codec::speech(),
    };
    Manifest::for_file(info, &file(), DEFAULT_CHUNK_SIZE).unwrap()
}

fn plan() -> Plan {
    let play = |id: &str, at: i64, bulletins: &[&str], tier: Tier, times: u8| PlannedPlay {
        id: PlayId::new(id).unwrap(),
        at: t(at),
        bulletins: bulletins.iter().map(|b| BulletinId::new(*b).unwrap()).collect(),
        times,
        tier,
        volume: 80,
        late_s: 900,
        gap_s: 0,
    };
    Plan {
        receiver: rx(),
        answers_session: None,
        seq: T0 as u64,
        from: t(T0),
        until: t(T0 + 48 * HOUR),
        plays: vec![
            play("p-0601-0730", T0 + HOUR / 2, &["2025-06-01-market-vi", "2025-06-01-market-hmn"], Tier::Normal, 1),
            play("p-0601-1700", T0 + 10 * HOUR, &["2025-06-01-storm-vi", "2025-06-01-storm-hmn"], Tier::Priority, 2),
            play("p-0602-0730", T0 + 24 * HOUR + HOUR / 2, &["2025-06-01-market-vi"], Tier::Normal, 1),
        ],
    }
}

fn command() -> Command {
    Command { receiver: rx(), seq: (T0 + 5 * 60_000) as u64, action: Action::SetVolume { volume: 70 } }
}

fn health() -> Health {
    Health {
        up_s: 86_400,
        ver: "0.1.0".into(),
        disk_mb: 11_520,
        cache_mb: 42,
        temp_c: Some(51),
        link: LinkKind::G3,
        dbm: Some(-97),
        clock_ms: Some(-12),
        amp: AmpState::On,
        playing: Some(PlayId::new("p-0601-0730").unwrap()),
        ready: 3,
        plan: Some(T0 as u64),
        rej: Rejections { expired: 1, replay: 2, ..Rejections::default() },
        spk: None,
    }
}

fn reports() -> ReportBatch {
    let r = |id, play: &str, at, event| PlayReport { id, play: PlayId::new(play).unwrap(), at: t(at), event };
    ReportBatch {
        reports: vec![
            r(17, "p-0601-0730", T0 + HOUR / 2 + 40, PlayEvent::Started),
            r(18, "p-0601-0730", T0 + HOUR / 2 + 21_905, PlayEvent::Finished),
            r(19, "p-0601-1700", T0 + 10 * HOUR + 900_001, PlayEvent::Missed { reason: MissReason::NotDownloaded }),
        ],
    }
}

fn frame_hex(bytes: &[u8]) -> String {
    let lines: Vec<String> =
        bytes.chunks(16).map(|line| line.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")).collect();
    lines.join("\n")
}

fn unhex(text: &str) -> Vec<u8> {
    text.split_whitespace().map(|pair| u8::from_str_radix(pair, 16).unwrap()).collect()
}

/// Every fixture: file name and the bytes this crate produces for it.
fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let s = signer();
    let m = manifest();
    vec![
        ("manifest.json", s.sign(&m, t(T0), m.expires_at).unwrap().to_json().unwrap()),
        ("plan.json", s.sign(&plan(), t(T0), t(T0 + 72 * HOUR)).unwrap().to_json().unwrap()),
        ("command.json", s.sign(&command(), t(T0 + 5 * 60_000), t(T0 + HOUR)).unwrap().to_json().unwrap()),
        (
            "key_announcement.json",
            s.sign(&key_announcement(), t(T0), t(T0 + 365 * 24 * HOUR)).unwrap().to_json().unwrap(),
        ),
        ("chunk_request.json", ChunkRequest::new(1, bulletin(), [0, 2]).unwrap().to_json().unwrap()),
        ("chunk_frame.hex", frame_hex(&m.frame(&file(), 2).unwrap().encode().unwrap()).into_bytes()),
        ("health.json", health().to_json().unwrap()),
        ("status_online.json", Status { state: StatusState::Online, session: T0 as u64 }.to_json().unwrap()),
        ("status_offline.json", Status { state: StatusState::Offline, session: T0 as u64 }.to_json().unwrap()),
        ("report_batch.json", reports().to_json().unwrap()),
        ("report_ack.json", reports().ack().to_json().unwrap()),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// A fixture's content: the file without its final newline.
fn read(name: &str) -> String {
    let text = std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

#[test]
fn fixtures_are_what_the_code_produces() {
    let bless = std::env::var_os("LOA_BLESS").is_some();
    for (name, bytes) in fixtures() {
        let produced = String::from_utf8(bytes).unwrap();
        if bless {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(dir().join(name), format!("{produced}\n")).unwrap();
        }
        assert_eq!(read(name), produced, "{name} differs from what the code produces (LOA_BLESS=1 to regenerate)");
    }
}

#[test]
fn signed_fixtures_verify_and_round_trip() {
    let k = keys();
    let me = rx();
    let opts = VerifyOptions { now: t(T0 + HOUR / 2), receiver: Some(&me), held_seq: None };

    let text = read("manifest.json");
    let env = Signed::<Manifest>::from_json(text.as_bytes()).unwrap();
    assert_eq!(env.to_json().unwrap(), text.as_bytes());
    assert_eq!(env.verify(&k, &opts).unwrap(), manifest());

    let text = read("plan.json");
    let env = Signed::<Plan>::from_json(text.as_bytes()).unwrap();
    assert_eq!(env.to_json().unwrap(), text.as_bytes());
    let p = env.verify(&k, &opts).unwrap();
    assert_eq!(p, plan());
    let held = VerifyOptions { held_seq: Some(p.seq), ..opts };
    assert_eq!(env.verify(&k, &held), Err(ProtocolError::Replay { held: p.seq, got: p.seq }));

    let text = read("command.json");
    let env = Signed::<Command>::from_json(text.as_bytes()).unwrap();
    assert_eq!(env.to_json().unwrap(), text.as_bytes());
    assert_eq!(env.verify(&k, &opts).unwrap(), command());
    let late = VerifyOptions { now: t(T0 + HOUR), ..opts };
    assert!(matches!(env.verify(&k, &late), Err(ProtocolError::Expired { .. })));

    let text = read("key_announcement.json");
    let env = Signed::<KeyAnnouncement>::from_json(text.as_bytes()).unwrap();
    assert_eq!(env.to_json().unwrap(), text.as_bytes());
    assert_eq!(env.verify(&k, &opts).unwrap(), key_announcement());
    let mut rotated = keys();
    assert_eq!(rotated.accept_announcement(text.as_bytes(), t(T0)).unwrap(), Some(key_announcement()));
    let by_new = new_signer().sign(&command(), t(T0 + 5 * 60_000), t(T0 + HOUR)).unwrap().to_json().unwrap();
    assert_eq!(Signed::<Command>::open(&by_new, &rotated, &opts).unwrap(), command());
    assert!(matches!(Signed::<Command>::open(&by_new, &k, &opts), Err(ProtocolError::UnknownKey { .. })));

    let text = read("command.json");
    let env = Signed::<Command>::from_json(text.as_bytes()).unwrap();
    let mut other = TrustedKeys::new();
    other.insert(signer().kid().clone(), &Signer::from_seed(signer().kid().clone(), &[1; 32]).public_key()).unwrap();
    assert_eq!(env.verify(&other, &opts), Err(ProtocolError::BadSignature));
}

#[test]
fn unsigned_fixtures_round_trip() {
    fn check<T: Message + PartialEq + std::fmt::Debug>(name: &str, expected: T) {
        let text = read(name);
        let value = T::from_json(text.as_bytes()).unwrap();
        assert_eq!(value, expected, "{name}");
        assert_eq!(value.to_json().unwrap(), text.as_bytes(), "{name}");
    }
    check("chunk_request.json", ChunkRequest::new(1, bulletin(), [0, 2]).unwrap());
    check("health.json", health());
    check("status_online.json", Status { state: StatusState::Online, session: T0 as u64 });
    check("status_offline.json", Status { state: StatusState::Offline, session: T0 as u64 });
    check("report_batch.json", reports());
    check("report_ack.json", reports().ack());
}

#[test]
fn chunk_frame_fixture_decodes_and_verifies_against_the_manifest() {
    let bytes = unhex(&read("chunk_frame.hex"));
    let frame = ChunkFrame::decode(&bytes).unwrap();
    assert_eq!(frame.encode().unwrap(), bytes);
    let m = manifest();
    assert_eq!(frame.tag, m.tag());
    assert_eq!((frame.index, frame.data.len()), (2, 40));
    m.verify_chunk(frame.index, &frame.data).unwrap();
    let mut bad = frame.data.clone();
    bad[0] ^= 0xff;
    assert_eq!(m.verify_chunk(2, &bad), Err(ProtocolError::ChunkHashMismatch { index: 2 }));
}

#[test]
fn docs_quote_every_fixture_verbatim() {
    let docs_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let docs = std::fs::read_to_string(&docs_path).unwrap();
    for (name, _) in fixtures() {
        let content = read(name);
        assert!(docs.contains(&content), "docs/protocol.md does not quote tests/golden/{name} verbatim");
    }
}

#[test]
fn docs_name_every_topic() {
    let docs = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md")).unwrap();
    let topics = Topics::default();
    let r = ReceiverId::new("RX").unwrap();
    let b = BulletinId::new("BULLETIN").unwrap();
    for topic in [
        Topic::Plan(r.clone()),
        Topic::Manifest(r.clone(), b),
        Topic::Chunks(r.clone()),
        Topic::Command(r.clone()),
        Topic::ReportAck(r.clone()),
        Topic::Status(r.clone()),
        Topic::Health(r.clone()),
        Topic::ChunkRequest(r.clone()),
        Topic::Reports(r.clone()),
        Topic::Key(r.clone(), KeyId::new("KID").unwrap()),
    ] {
        let s =
            topics.topic(&topic).replace("/RX/", "/{rx}/").replace("BULLETIN", "{bulletin}").replace("KID", "{kid}");
        let row = format!("| `{s}` | {} | {} | {} |", who(&topic), topic.qos() as u8, yes(topic.retained()));
        assert!(docs.contains(&row), "docs/protocol.md lacks the row\n{row}");
    }
}

fn who(topic: &Topic) -> &'static str {
    match topic.direction() {
        Direction::Down => "controller → receiver",
        Direction::Up => "receiver → controller",
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
