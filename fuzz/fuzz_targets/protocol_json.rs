//! Fuzzes every JSON payload a receiver or the controller parses off MQTT: each `Message::from_json` kind and
//! each signed envelope (`Signed::from_json`, then `verify` against a test key). Any bytes give a value or a
//! typed error; a message that parses encodes back and parses to the same value.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use loa_protocol::{
    ChunkRequest, Command, Health, KeyAnnouncement, KeyId, Manifest, Message, Plan, ReceiverId, ReportAck, ReportBatch,
    Signable, Signed, Signer, Status, Timestamp, TrustedKeys, VerifyOptions,
};

fn keys() -> &'static TrustedKeys {
    static K: OnceLock<TrustedKeys> = OnceLock::new();
    K.get_or_init(|| {
        let signer = Signer::from_seed(KeyId::new("ctl-test").expect("constant kid"), &[7; 32]);
        let mut keys = TrustedKeys::new();
        keys.insert(signer.kid().clone(), &signer.public_key()).expect("constant key");
        keys
    })
}

fn round_trip<T: Message + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(v) = T::from_json(bytes) {
        let again = v.to_json().expect("a parsed message encodes");
        assert_eq!(T::from_json(&again).expect("its encoding parses"), v);
    }
}

fn envelope<T: Signable + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    let Ok(env) = Signed::<T>::from_json(bytes) else { return };
    let me = ReceiverId::new("rx-000000000001").expect("constant id");
    let now = Timestamp::from_unix_ms(1_800_000_000_000).expect("constant time");
    let opts = VerifyOptions { now, receiver: Some(&me), held_seq: Some(3) };
    let _ = env.verify(keys(), &opts);
    let again = env.to_json().expect("a parsed envelope encodes");
    assert_eq!(Signed::<T>::from_json(&again).expect("its encoding parses"), env);
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Manifest>(data);
    round_trip::<Plan>(data);
    round_trip::<Command>(data);
    round_trip::<KeyAnnouncement>(data);
    round_trip::<ChunkRequest>(data);
    round_trip::<Health>(data);
    round_trip::<Status>(data);
    round_trip::<ReportBatch>(data);
    round_trip::<ReportAck>(data);
    envelope::<Manifest>(data);
    envelope::<Plan>(data);
    envelope::<Command>(data);
    envelope::<KeyAnnouncement>(data);
    let mut keys = keys().clone();
    let now = Timestamp::from_unix_ms(1_800_000_000_000).expect("constant time");
    let _ = keys.accept_announcement(data, now);
});
