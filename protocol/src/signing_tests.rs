//! Tests of the signed envelope: every rejection kind, the exact signed bytes, and proptest round trips.

use super::*;
use crate::command::{Action, Command};
use proptest::prelude::*;

pub(crate) const SEED: [u8; 32] = *b"loa-unit-test-key-not-a-secret!!";

pub(crate) fn signer() -> Signer {
    Signer::from_seed(KeyId::new("ctl-test").unwrap(), &SEED)
}

fn keys() -> TrustedKeys {
    let mut k = TrustedKeys::new();
    k.insert(KeyId::new("ctl-test").unwrap(), &signer().public_key()).unwrap();
    k
}

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms).unwrap()
}

fn rx() -> ReceiverId {
    ReceiverId::new("rx1").unwrap()
}

fn cmd(seq: u64) -> Command {
    Command { receiver: rx(), seq, action: Action::SetVolume { volume: 70 } }
}

fn opts(held: Option<u64>) -> VerifyOptions<'static> {
    static RX: std::sync::OnceLock<ReceiverId> = std::sync::OnceLock::new();
    VerifyOptions { now: t(1_500), receiver: Some(RX.get_or_init(rx)), held_seq: held }
}

fn signed_json(seq: u64) -> String {
    String::from_utf8(signer().sign(&cmd(seq), t(1_000), t(2_000)).unwrap().to_json().unwrap()).unwrap()
}

#[test]
fn exact_envelope_shape() {
    let json = signed_json(5);
    let head = r#"{"kind":"command","kid":"ctl-test","issued_at":1000,"expires_at":2000,"payload":{"receiver":"rx1","seq":5,"do":"set_volume","volume":70},"sig":""#;
    assert!(json.starts_with(head), "{json}");
    assert_eq!(json.len(), head.len() + 128 + 2);
    let env = Signed::<Command>::from_json(json.as_bytes()).unwrap();
    assert_eq!(env.to_json().unwrap(), json.as_bytes());
    assert_eq!(env.verify(&keys(), &opts(Some(4))).unwrap(), cmd(5));
}

#[test]
fn signature_covers_the_exact_preimage() {
    let env = signer().sign(&cmd(5), t(1_000), t(2_000)).unwrap();
    let pre = b"loa-signed-v1\ncommand\nctl-test\n1000\n2000\n{\"receiver\":\"rx1\",\"seq\":5,\"do\":\"set_volume\",\"volume\":70}";
    let mut sig = [0u8; 64];
    decode_hex_into(&env.sig, &mut sig).unwrap();
    let public = VerifyingKey::from_bytes(&signer().public_key()).unwrap();
    public.verify_strict(pre, &Signature::from_bytes(&sig)).unwrap();
}

#[test]
fn each_rejection_has_its_own_error() {
    let good = signed_json(5);
    let k = keys();
    let open = |s: &str, held| Signed::<Command>::open(s.as_bytes(), &k, &opts(held));

    assert!(matches!(open("not json", None), Err(ProtocolError::Malformed { .. })));
    // Unsigned: no sig, or an empty one.
    let sig_at = good.find(",\"sig\"").unwrap();
    let unsigned = format!("{}}}", &good[..sig_at]);
    assert_eq!(open(&unsigned, None), Err(ProtocolError::Unsigned));
    let empty = format!("{},\"sig\":\"\"}}", &good[..sig_at]);
    assert_eq!(open(&empty, None), Err(ProtocolError::Unsigned));
    // Tampered payload: still valid JSON, still a valid command.
    assert_eq!(open(&good.replace("\"volume\":70", "\"volume\":99"), None), Err(ProtocolError::BadSignature));
    // Tampered envelope field.
    assert_eq!(
        open(&good.replace("\"expires_at\":2000", "\"expires_at\":9000"), None),
        Err(ProtocolError::BadSignature)
    );
    // Same bytes re-serialized differently: the signature is over bytes, so this fails too.
    assert_eq!(open(&good.replace("\"seq\":5,", "\"seq\": 5,"), None), Err(ProtocolError::BadSignature));
    // Garbage signature.
    let bad_hex = format!("{}\"sig\":\"zz\"}}", &good[..sig_at + 1]);
    assert_eq!(open(&bad_hex, None), Err(ProtocolError::BadSignature));
    // Wrong key under a known kid; unknown kid.
    let mallory = Signer::from_seed(KeyId::new("ctl-test").unwrap(), &[9; 32]);
    let forged = mallory.sign(&cmd(5), t(1_000), t(2_000)).unwrap().to_json().unwrap();
    assert_eq!(Signed::<Command>::open(&forged, &k, &opts(None)), Err(ProtocolError::BadSignature));
    let other = Signer::from_seed(KeyId::new("ctl-other").unwrap(), &SEED);
    let unknown = other.sign(&cmd(5), t(1_000), t(2_000)).unwrap().to_json().unwrap();
    assert_eq!(
        Signed::<Command>::open(&unknown, &k, &opts(None)),
        Err(ProtocolError::UnknownKey { kid: "ctl-other".into() })
    );
    assert!(matches!(
        Signed::<Command>::open(&unknown, &TrustedKeys::new(), &opts(None)),
        Err(ProtocolError::UnknownKey { .. })
    ));
    // Expired, exactly at and after expiry.
    let late = |now| VerifyOptions { now: t(now), ..opts(None) };
    assert_eq!(
        Signed::<Command>::open(good.as_bytes(), &k, &late(2_000)),
        Err(ProtocolError::Expired { expires_at: t(2_000), now: t(2_000) })
    );
    assert!(Signed::<Command>::open(good.as_bytes(), &k, &late(1_999)).is_ok());
    // Replay: equal or lower sequence than held.
    assert_eq!(open(&good, Some(5)), Err(ProtocolError::Replay { held: 5, got: 5 }));
    assert_eq!(open(&good, Some(9)), Err(ProtocolError::Replay { held: 9, got: 5 }));
    assert!(open(&good, Some(4)).is_ok());
    // Addressed to someone else.
    let theirs = Command { receiver: ReceiverId::new("rx2").unwrap(), ..cmd(5) };
    let theirs = signer().sign(&theirs, t(1_000), t(2_000)).unwrap().to_json().unwrap();
    assert!(matches!(Signed::<Command>::open(&theirs, &k, &opts(None)), Err(ProtocolError::WrongReceiver { .. })));
    // A signed command offered as a plan.
    assert!(matches!(
        Signed::<crate::plan::Plan>::open(good.as_bytes(), &k, &opts(None)),
        Err(ProtocolError::WrongKind { expected: "plan", .. })
    ));
}

#[test]
fn signer_refuses_what_receivers_would_refuse() {
    let s = signer();
    assert!(s.sign(&cmd(1), t(2_000), t(1_000)).is_err());
    let loud = Command { action: Action::SetVolume { volume: 101 }, ..cmd(1) };
    assert!(s.sign(&loud, t(1_000), t(2_000)).is_err());
    assert!(!format!("{s:?}").contains(&encode_hex(&SEED)));
}

#[test]
fn trusted_keys_from_hex() {
    let mut k = TrustedKeys::new();
    let hex = encode_hex(&signer().public_key());
    k.insert_hex(KeyId::new("ctl-test").unwrap(), &hex).unwrap();
    assert!(Signed::<Command>::open(signed_json(5).as_bytes(), &k, &opts(None)).is_ok());
    assert!(k.insert_hex(KeyId::new("x").unwrap(), "00").is_err());
    // Replacing a key under the same id drops the old one.
    k.insert(KeyId::new("ctl-test").unwrap(), &Signer::from_seed(KeyId::new("x").unwrap(), &[1; 32]).public_key())
        .unwrap();
    assert_eq!(Signed::<Command>::open(signed_json(5).as_bytes(), &k, &opts(None)), Err(ProtocolError::BadSignature));
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0u8..=100).prop_map(|volume| Action::SetVolume { volume }),
        Just(Action::StopNow),
        (1u8..=30).prop_map(|seconds| Action::TestTone { seconds }),
        Just(Action::Resync),
        Just(Action::Restart),
    ]
}

proptest! {
    #[test]
    fn round_trip(seq in 0..=crate::MAX_SEQ, action in action(), issued in 0i64..4_000_000_000_000, life in 1i64..1_000_000) {
        let c = Command { receiver: rx(), seq, action };
        let env = signer().sign(&c, t(issued), t(issued + life)).unwrap();
        let bytes = env.to_json().unwrap();
        let back = Signed::<Command>::from_json(&bytes).unwrap();
        prop_assert_eq!(&back, &env);
        prop_assert_eq!(back.to_json().unwrap(), bytes);
        let o = VerifyOptions { now: t(issued), receiver: Some(&c.receiver), held_seq: seq.checked_sub(1) };
        prop_assert_eq!(back.verify(&keys(), &o).unwrap(), c);
    }

    #[test]
    fn a_flipped_byte_never_yields_another_command(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let good = signed_json(5).into_bytes();
        let mut bad = good.clone();
        let i = at.index(bad.len());
        bad[i] ^= flip;
        match Signed::<Command>::open(&bad, &keys(), &opts(Some(4))) {
            Ok(c) => prop_assert_eq!(c, cmd(5)),
            Err(e) => prop_assert!(e.rejection().is_some()),
        }
    }

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Signed::<Command>::open(&bytes, &keys(), &opts(None));
    }
}
