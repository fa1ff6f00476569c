//! Composing one receiver's plan from the store: its upcoming plays, each with the ready language variants of
//! its bulletin in the village's language order, signed by the controller.
//!
//! Decisions: a play whose bulletin has no ready variant yet is left out (the encode job asks for a replan when
//! it finishes); two plays at the same instant on one receiver keep the higher tier (the schedule API refuses
//! such clashes, so this only guards the plan's rule); a normal or priority play may start up to
//! [`LATE_NORMAL_S`] late, an emergency until it expires (see [`late_s`]); plays too old to start or still be on
//! air are left out, plays on air stay in (a receiver stops a play that leaves its plan: that is how a cancel
//! reaches a loudspeaker).

use std::collections::HashMap;

use loa_protocol::{BulletinId, PlannedPlay, PlayId, ReceiverId, Tier, Timestamp};
use sha2::{Digest, Sha256};

use crate::schedule::place::parse_tier;
use crate::store::dispatch::{self as q, PlayRow, VariantRow};
use crate::store::{Store, StoreError};

/// How late a normal or priority play may start, seconds.
pub const LATE_NORMAL_S: u32 = 300;
/// How late an emergency may start, seconds.
pub const LATE_EMERGENCY_S: u32 = 1800;

/// A receiver's plays and the variant files they need.
#[derive(Debug, Clone, PartialEq)]
pub struct Composed {
    /// The plays, in strictly increasing time.
    pub plays: Vec<PlannedPlay>,
    /// Every variant the plays name, once each.
    pub variants: Vec<VariantRow>,
    /// SHA-256 (hex) of the plays' JSON: an unchanged digest means the plan need not be republished.
    pub digest: String,
}

/// Orders a bulletin's ready variants by the village's languages; if none match, the first ready one.
pub fn pick_variants(ready: &[VariantRow], languages: &[String]) -> Vec<VariantRow> {
    let mut picked: Vec<VariantRow> =
        languages.iter().filter_map(|lang| ready.iter().find(|v| &v.language == lang).cloned()).collect();
    if picked.is_empty() {
        if let Some(first) = ready.iter().find(|v| v.language == "vi").or_else(|| ready.first()) {
            picked.push(first.clone());
        }
    }
    picked.truncate(loa_protocol::plan::MAX_VARIANTS);
    picked
}

/// How late a play may start: an emergency until its expiry (an offline receiver that comes back in time still
/// sounds the warning), at most a day; others [`LATE_NORMAL_S`].
pub fn late_s(row: &PlayRow) -> u32 {
    if parse_tier(&row.tier) != Tier::Emergency {
        return LATE_NORMAL_S;
    }
    match row.valid_until {
        Some(until) => u32::try_from(((until - row.planned_at) / 1000).clamp(60, 86_400)).unwrap_or(LATE_EMERGENCY_S),
        None => LATE_EMERGENCY_S,
    }
}

/// Whether a play may still be starting or on air at `now_ms`: its latest start plus its length plus a margin.
/// Older plays stay out of the plan; a play still on air must stay in (a receiver stops a play that leaves it).
fn still_relevant(row: &PlayRow, now_ms: i64) -> bool {
    row.planned_at + i64::from(late_s(row)) * 1000 + row.slot_ms.max(0) + 600_000 >= now_ms
}

/// Builds the plays of one receiver from rows already read.
pub fn compose_rows(
    rows: &[PlayRow],
    languages: &[String],
    now: Timestamp,
    ready: &mut dyn FnMut(&str) -> Result<Vec<VariantRow>, StoreError>,
) -> Result<Composed, StoreError> {
    let mut plays: Vec<PlannedPlay> = Vec::new();
    let mut variants: Vec<VariantRow> = Vec::new();
    let mut cache: HashMap<String, Vec<VariantRow>> = HashMap::new();
    for row in rows.iter().filter(|r| still_relevant(r, now.unix_ms())) {
        if !cache.contains_key(&row.bulletin_id) {
            cache.insert(row.bulletin_id.clone(), ready(&row.bulletin_id)?);
        }
        let picked = pick_variants(cache.get(&row.bulletin_id).map(Vec::as_slice).unwrap_or(&[]), languages);
        if picked.is_empty() {
            continue;
        }
        let (Ok(id), Ok(at)) = (PlayId::new(row.id.clone()), Timestamp::from_unix_ms(row.planned_at)) else {
            tracing::warn!(play = %row.id, "play left out of the plan: bad id or time");
            continue;
        };
        let bulletins: Vec<BulletinId> =
            picked.iter().filter_map(|v| BulletinId::new(v.protocol_id()).ok()).collect::<Vec<_>>();
        if bulletins.len() != picked.len() {
            tracing::warn!(play = %row.id, "play left out of the plan: a language code is not valid on the wire");
            continue;
        }
        let tier = parse_tier(&row.tier);
        let play = PlannedPlay {
            id,
            at,
            bulletins,
            times: u8::try_from(row.times.clamp(1, i64::from(loa_protocol::plan::MAX_TIMES))).unwrap_or(1),
            tier,
            volume: row.volume.map(|v| (v.clamp(0.0, 1.0) * 100.0).round() as u8).unwrap_or(100),
            late_s: late_s(row),
            gap_s: if row.times > 1 {
                u16::try_from(row.gap_s.clamp(0, i64::from(loa_protocol::plan::MAX_GAP_S))).unwrap_or(0)
            } else {
                0
            },
        };
        match plays.last_mut() {
            Some(last) if last.at == play.at => {
                if play.tier > last.tier {
                    *last = play;
                }
                continue;
            }
            _ => plays.push(play),
        }
        for v in picked {
            if !variants.iter().any(|known| known.protocol_id() == v.protocol_id()) {
                variants.push(v);
            }
        }
    }
    variants.retain(|v| plays.iter().any(|p| p.bulletins.iter().any(|b| b.as_str() == v.protocol_id())));
    let json = serde_json::to_vec(&plays).unwrap_or_default();
    let digest = hex::encode(Sha256::digest(&json));
    Ok(Composed { plays, variants, digest })
}

/// Reads and composes the plays of `receiver` (area `area_id`) between `from` and `until` that are still
/// relevant at `now`.
pub fn compose(
    store: &Store,
    receiver: &ReceiverId,
    area_id: i64,
    now: Timestamp,
    from: Timestamp,
    until: Timestamp,
) -> Result<Composed, StoreError> {
    let rows = q::upcoming_plays(store, receiver.as_str(), from.unix_ms(), until.unix_ms())?;
    let languages = store.area_settings(area_id)?.languages;
    compose_rows(&rows, &languages, now, &mut |bulletin| q::ready_variants(store, bulletin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(b: &str, lang: &str) -> VariantRow {
        VariantRow {
            bulletin_id: b.into(),
            language: lang.into(),
            sha256: "00".repeat(32),
            bytes: 1000,
            duration_ms: 5000,
            title: "t".into(),
            category: "market".into(),
        }
    }

    fn row(id: &str, at: i64, tier: &str, b: &str) -> PlayRow {
        PlayRow {
            id: id.into(),
            planned_at: at,
            tier: tier.into(),
            bulletin_id: b.into(),
            volume: None,
            times: 1,
            gap_s: 0,
            valid_until: None,
            slot_ms: 5_000,
        }
    }

    #[test]
    fn variants_follow_the_village_language_order() {
        let ready = vec![variant("b-1", "vi"), variant("b-1", "hmn")];
        let picked = pick_variants(&ready, &["hmn".into(), "vi".into()]);
        assert_eq!(picked.iter().map(|v| v.language.as_str()).collect::<Vec<_>>(), ["hmn", "vi"]);
        let picked = pick_variants(&ready, &["tay".into()]);
        assert_eq!(picked.iter().map(|v| v.language.as_str()).collect::<Vec<_>>(), ["vi"]);
        assert!(pick_variants(&[], &["vi".into()]).is_empty());
    }

    #[test]
    fn plays_without_ready_audio_are_left_out_and_clashes_keep_the_higher_tier() {
        let rows = vec![
            row("p-1", 1_000, "normal", "b-ready"),
            row("p-2", 2_000, "normal", "b-encoding"),
            row("p-3", 3_000, "normal", "b-ready"),
            row("p-4", 3_000, "emergency", "b-ready"),
        ];
        let composed = compose_rows(&rows, &["vi".into()], Timestamp::EPOCH, &mut |b| {
            Ok(if b == "b-ready" { vec![variant(b, "vi")] } else { vec![] })
        })
        .unwrap();
        let ids: Vec<&str> = composed.plays.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["p-1", "p-4"]);
        assert_eq!(composed.plays[1].tier, Tier::Emergency);
        assert_eq!(composed.plays[1].late_s, LATE_EMERGENCY_S);
        assert_eq!(composed.variants.len(), 1);
        assert_eq!(composed.plays[0].bulletins[0].as_str(), "b-ready-vi");
    }

    #[test]
    fn digest_changes_with_the_plays_only() {
        let mut ready = |b: &str| Ok(vec![variant(b, "vi")]);
        let a =
            compose_rows(&[row("p-1", 1_000, "normal", "b-x")], &["vi".into()], Timestamp::EPOCH, &mut ready).unwrap();
        let b =
            compose_rows(&[row("p-1", 1_000, "normal", "b-x")], &["vi".into()], Timestamp::EPOCH, &mut ready).unwrap();
        let c =
            compose_rows(&[row("p-1", 2_000, "normal", "b-x")], &["vi".into()], Timestamp::EPOCH, &mut ready).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
    }
}
