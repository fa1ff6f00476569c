//! Builders shared by the agent's unit tests: a test signing key, manifests and plans.

use loa_protocol::{
    BulletinId, BulletinInfo, Category, Codec, KeyId, Language, Manifest, Plan, PlannedPlay, PlayId, ReceiverId,
    Signer, Tier, Timestamp, TrustedKeys,
};

pub(crate) fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms).unwrap()
}

pub(crate) fn signer() -> Signer {
    Signer::from_seed(KeyId::new("ctl-test").unwrap(), &[42; 32])
}

pub(crate) fn keys(signer: &Signer) -> TrustedKeys {
    let mut keys = TrustedKeys::new();
    keys.insert(signer.kid().clone(), &signer.public_key()).unwrap();
    keys
}

/// A manifest for a fake file of `size` bytes in 1 KiB chunks, valid for a week from `now`.
pub(crate) fn manifest_for(bulletin: &str, now: Timestamp, size: u32) -> (Manifest, Vec<u8>) {
    let file: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let info = BulletinInfo {
        bulletin: BulletinId::new(bulletin).unwrap(),
        title: "Tin thị trường".into(),
        category: Category::Market,
        tier: Tier::Normal,
        lang: Language::new("vi").unwrap(),
        issued_at: now,
        expires_at: now.saturating_add_ms(7 * 86_400_000),
        duration_ms: 10_000,
        codec: Codec::speech(),
    };
    (Manifest::for_file(info, &file, 1024).unwrap(), file)
}

/// A plan over 49 hours from `from` with one single-variant normal play per `(id, at, bulletin)`.
pub(crate) fn plan_with(me: &ReceiverId, seq: u64, from: Timestamp, plays: &[(&str, Timestamp, &str)]) -> Plan {
    Plan {
        receiver: me.clone(),
        answers_session: None,
        seq,
        from,
        until: from.saturating_add_ms(49 * 3_600_000),
        plays: plays
            .iter()
            .map(|(id, at, b)| PlannedPlay {
                id: PlayId::new(*id).unwrap(),
                at: *at,
                bulletins: vec![BulletinId::new(*b).unwrap()],
                times: 1,
                tier: Tier::Normal,
                volume: 80,
                late_s: 900,
                gap_s: 0,
            })
            .collect(),
    }
}
