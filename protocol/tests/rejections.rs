//! What a receiver must refuse, one case per attack, each with its own error and its own heartbeat counter:
//! replayed (same or lower `seq`), reordered (an older plan after a newer one), expired, signed by an unknown
//! key id, signed by another key under a known key id, truncated signature, truncated envelope, tampered
//! payload. Unit cases first, then proptests over the same cases with random values.

#![allow(clippy::unwrap_used)]

use loa_protocol::*;
use proptest::prelude::*;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_795_392_000_000;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms).unwrap()
}

fn signer() -> Signer {
    Signer::from_seed(KeyId::new("ctl-rej").unwrap(), &[21; 32])
}

fn keys() -> TrustedKeys {
    let mut k = TrustedKeys::new();
    k.insert(signer().kid().clone(), &signer().public_key()).unwrap();
    k
}

fn me() -> ReceiverId {
    ReceiverId::new("rx-00000000000f").unwrap()
}

fn plan(seq: u64) -> Plan {
    Plan { receiver: me(), seq, from: t(T0), until: t(T0 + 2 * DAY), plays: vec![], answers_session: None }
}

fn signed_plan(by: &Signer, seq: u64, issued: i64, expires: i64) -> String {
    String::from_utf8(by.sign(&plan(seq), t(issued), t(expires)).unwrap().to_json().unwrap()).unwrap()
}

fn open(bytes: &str, now: i64, held: Option<u64>) -> Result<Plan, ProtocolError> {
    let me = me();
    Signed::<Plan>::open(bytes.as_bytes(), &keys(), &VerifyOptions { now: t(now), receiver: Some(&me), held_seq: held })
}

/// The counters after recording one error.
fn counted(e: &ProtocolError) -> Rejections {
    let mut r = Rejections::default();
    r.record(e);
    r
}

fn only(f: impl FnOnce(&mut Rejections)) -> Rejections {
    let mut r = Rejections::default();
    f(&mut r);
    r
}

/// The envelope with its `sig` cut to `keep` hex digits.
fn cut_sig(json: &str, keep: usize) -> String {
    let at = json.find("\"sig\":\"").unwrap() + 7;
    format!("{}{}\"}}", &json[..at], &json[at..at + keep])
}

#[test]
fn replayed_same_seq_is_refused_but_not_counted() {
    let msg = signed_plan(&signer(), 7, T0, T0 + DAY);
    assert_eq!(open(&msg, T0, Some(7)), Err(ProtocolError::Replay { held: 7, got: 7 }));
    // The broker re-delivers retained and QoS 1 messages: a copy of what is held is normal, not an attack.
    assert_eq!(counted(&ProtocolError::Replay { held: 7, got: 7 }), Rejections::default());
}

#[test]
fn replayed_lower_seq_and_reordered_plans_are_refused_and_counted() {
    let older = signed_plan(&signer(), 6, T0, T0 + DAY);
    let newer = signed_plan(&signer(), 7, T0 + 1, T0 + DAY);
    assert_eq!(open(&newer, T0, Some(6)).unwrap().seq, 7);
    let e = open(&older, T0, Some(7)).unwrap_err();
    assert_eq!(e, ProtocolError::Replay { held: 7, got: 6 });
    assert_eq!(counted(&e), only(|r| r.replay = 1));
}

#[test]
fn expired_is_refused_and_counted() {
    let msg = signed_plan(&signer(), 7, T0, T0 + DAY);
    assert!(open(&msg, T0 + DAY - 1, None).is_ok());
    let e = open(&msg, T0 + DAY, None).unwrap_err();
    assert_eq!(e, ProtocolError::Expired { expires_at: t(T0 + DAY), now: t(T0 + DAY) });
    assert_eq!(counted(&e), only(|r| r.expired = 1));
}

#[test]
fn unknown_key_id_is_refused_and_counted() {
    let stranger = Signer::from_seed(KeyId::new("ctl-stranger").unwrap(), &[22; 32]);
    let e = open(&signed_plan(&stranger, 7, T0, T0 + DAY), T0, None).unwrap_err();
    assert_eq!(e, ProtocolError::UnknownKey { kid: "ctl-stranger".into() });
    assert_eq!(counted(&e), only(|r| r.unknown_key = 1));
}

#[test]
fn another_key_under_a_known_key_id_is_refused_and_counted() {
    let forger = Signer::from_seed(signer().kid().clone(), &[23; 32]);
    let e = open(&signed_plan(&forger, 7, T0, T0 + DAY), T0, None).unwrap_err();
    assert_eq!(e, ProtocolError::BadSignature);
    assert_eq!(counted(&e), only(|r| r.bad_signature = 1));
}

#[test]
fn truncated_signatures_are_refused_and_counted() {
    let msg = signed_plan(&signer(), 7, T0, T0 + DAY);
    for keep in [127, 126, 64, 2, 1] {
        let e = open(&cut_sig(&msg, keep), T0, None).unwrap_err();
        assert_eq!(e, ProtocolError::BadSignature, "sig cut to {keep} hex digits");
        assert_eq!(counted(&e), only(|r| r.bad_signature = 1));
    }
    // Cut to nothing: unsigned.
    let e = open(&cut_sig(&msg, 0), T0, None).unwrap_err();
    assert_eq!(e, ProtocolError::Unsigned);
    assert_eq!(counted(&e), only(|r| r.unsigned = 1));
    // The envelope itself cut short (a lost tail): malformed.
    let e = open(&msg[..msg.len() - 3], T0, None).unwrap_err();
    assert!(matches!(e, ProtocolError::Malformed { .. }), "{e:?}");
    assert_eq!(counted(&e), only(|r| r.malformed = 1));
}

#[test]
fn tampered_payload_is_refused_and_counted() {
    let msg = signed_plan(&signer(), 7, T0, T0 + DAY);
    // A higher seq, which would otherwise win over every later plan.
    let e = open(&msg.replace("\"seq\":7", "\"seq\":9"), T0, None).unwrap_err();
    assert_eq!(e, ProtocolError::BadSignature);
    assert_eq!(counted(&e), only(|r| r.bad_signature = 1));
    // Another receiver's name swapped in.
    let e = open(&msg.replace("rx-00000000000f", "rx-00000000000e"), T0, None).unwrap_err();
    assert_eq!(e, ProtocolError::BadSignature);
}

proptest! {
    #[test]
    fn seq_not_above_held_is_a_replay(seq in 0..=MAX_SEQ, held in 0..=MAX_SEQ) {
        let msg = signed_plan(&signer(), seq, T0, T0 + DAY);
        match open(&msg, T0, Some(held)) {
            Ok(p) => prop_assert!(seq > held && p.seq == seq),
            Err(e) => {
                prop_assert!(seq <= held);
                prop_assert_eq!(&e, &ProtocolError::Replay { held, got: seq });
                let expected = if seq == held { Rejections::default() } else { only(|r| r.replay = 1) };
                prop_assert_eq!(counted(&e), expected);
            }
        }
    }

    #[test]
    fn at_or_after_expiry_is_expired(life in 0i64..10 * DAY, after in -DAY..DAY) {
        let msg = signed_plan(&signer(), 1, T0, T0 + life);
        let now = T0 + life + after;
        match open(&msg, now, None) {
            Ok(_) => prop_assert!(now < T0 + life),
            Err(e) => {
                prop_assert!(now >= T0 + life);
                prop_assert_eq!(counted(&e), only(|r| r.expired = 1));
            }
        }
    }

    #[test]
    fn any_truncated_signature_is_refused(keep in 0usize..128) {
        let msg = signed_plan(&signer(), 1, T0, T0 + DAY);
        let e = open(&cut_sig(&msg, keep), T0, None).unwrap_err();
        let expected = if keep == 0 { ProtocolError::Unsigned } else { ProtocolError::BadSignature };
        prop_assert_eq!(e, expected);
    }

    #[test]
    fn any_truncated_envelope_is_refused(keep in 0usize..300) {
        let msg = signed_plan(&signer(), 1, T0, T0 + DAY);
        let keep = keep.min(msg.len() - 1);
        let e = open(&msg[..keep], T0, None).unwrap_err();
        prop_assert!(e.rejection().is_some());
    }

    #[test]
    fn any_signer_but_ours_is_refused(seed in any::<[u8; 32]>(), same_kid in any::<bool>()) {
        prop_assume!(seed != [21; 32]);
        let kid = if same_kid { signer().kid().clone() } else { KeyId::new("ctl-other").unwrap() };
        let msg = signed_plan(&Signer::from_seed(kid, &seed), 1, T0, T0 + DAY);
        let e = open(&msg, T0, None).unwrap_err();
        let expected = if same_kid { only(|r| r.bad_signature = 1) } else { only(|r| r.unknown_key = 1) };
        prop_assert_eq!(counted(&e), expected);
    }

    #[test]
    fn any_changed_payload_byte_is_refused(at in any::<prop::sample::Index>(), to in any::<u8>()) {
        let msg = signed_plan(&signer(), 1, T0, T0 + DAY);
        let start = msg.find("\"payload\":").unwrap() + 10;
        let end = msg.find(",\"sig\"").unwrap();
        let i = start + at.index(end - start);
        prop_assume!(msg.as_bytes()[i] != to);
        let mut bad = msg.clone().into_bytes();
        bad[i] = to;
        let me = me();
        let opts = VerifyOptions { now: t(T0), receiver: Some(&me), held_seq: None };
        let e = Signed::<Plan>::open(&bad, &keys(), &opts).unwrap_err();
        prop_assert!(e.rejection().is_some(), "{:?}", e);
    }
}
