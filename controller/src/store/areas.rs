//! The admin tree (province → district → commune → village, any depth) and named groups.
//!
//! An area's languages and quiet hours are its own or, when unset, the nearest ancestor's; the root defaults
//! are `["vi"]` and 21:30–05:30. [`AreaSettings`] is that resolved view. Groups hold areas (meaning their
//! whole subtrees) and single receivers.

use chrono::NaiveTime;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Default languages of a tree without any set.
pub const DEFAULT_LANGUAGES: &[&str] = &["vi"];
/// Default start of the quiet hours, local time.
pub const DEFAULT_QUIET_START: &str = "21:30";
/// Default end of the quiet hours, local time.
pub const DEFAULT_QUIET_END: &str = "05:30";
/// Longest area or group name.
pub const MAX_NAME_CHARS: usize = 200;

/// The level of an area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AreaKind {
    /// Tỉnh.
    Province,
    /// Huyện.
    District,
    /// Xã.
    Commune,
    /// Thôn / bản.
    Village,
    /// Anything else (hamlet, market, school...).
    Other,
}

impl AreaKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AreaKind::Province => "province",
            AreaKind::District => "district",
            AreaKind::Commune => "commune",
            AreaKind::Village => "village",
            AreaKind::Other => "other",
        }
    }

    fn parse(s: &str) -> AreaKind {
        match s {
            "province" => AreaKind::Province,
            "district" => AreaKind::District,
            "commune" => AreaKind::Commune,
            "village" => AreaKind::Village,
            _ => AreaKind::Other,
        }
    }
}

/// A new area.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewArea {
    /// Its name, e.g. "Thôn Đền Thàng".
    pub name: String,
    /// Its level.
    pub kind: AreaKind,
    /// The area it belongs to; `None` for a root.
    #[serde(default)]
    pub parent_id: Option<i64>,
    /// Languages in play order; `None` inherits.
    #[serde(default)]
    pub languages: Option<Vec<String>>,
    /// Quiet hours start, "HH:MM" local; `None` inherits.
    #[serde(default)]
    pub quiet_start: Option<String>,
    /// Quiet hours end, "HH:MM" local; `None` inherits.
    #[serde(default)]
    pub quiet_end: Option<String>,
}

impl NewArea {
    /// A village at the root of the tree that inherits every setting (what tests and tools that need one
    /// receiver somewhere start from).
    pub fn root_village(name: &str) -> Self {
        NewArea {
            name: name.into(),
            kind: AreaKind::Village,
            parent_id: None,
            languages: None,
            quiet_start: None,
            quiet_end: None,
        }
    }
}

/// An area as stored (own settings only; `None` = inherited).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Area {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Level.
    pub kind: AreaKind,
    /// Parent, if any.
    pub parent_id: Option<i64>,
    /// Own languages.
    pub languages: Option<Vec<String>>,
    /// Own quiet hours start.
    pub quiet_start: Option<String>,
    /// Own quiet hours end.
    pub quiet_end: Option<String>,
    /// Created, UTC ms.
    pub created_at: i64,
}

/// An area's settings after inheritance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AreaSettings {
    /// Area id.
    pub id: i64,
    /// Area name (for messages).
    pub name: String,
    /// Languages in play order.
    pub languages: Vec<String>,
    /// Quiet hours start, local.
    pub quiet_start: NaiveTime,
    /// Quiet hours end, local. Equal to the start: no quiet hours.
    pub quiet_end: NaiveTime,
}

impl AreaSettings {
    /// Whether local time `t` falls in the quiet hours (start inclusive, end exclusive; may wrap midnight).
    pub fn is_quiet(&self, t: NaiveTime) -> bool {
        let (s, e) = (self.quiet_start, self.quiet_end);
        if s < e {
            s <= t && t < e
        } else if s > e {
            t >= s || t < e
        } else {
            false
        }
    }
}

/// A named group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Member areas (with their subtrees).
    pub areas: Vec<i64>,
    /// Member receivers.
    pub receivers: Vec<String>,
}

/// Parses "HH:MM" (24 h).
pub fn parse_hhmm(s: &str) -> Result<NaiveTime, StoreError> {
    let ok = s.len() == 5 && s.as_bytes()[2] == b':';
    NaiveTime::parse_from_str(s, "%H:%M")
        .ok()
        .filter(|_| ok)
        .ok_or_else(|| StoreError::invalid(format!("\"{s}\" is not a time of day; write it as HH:MM, e.g. 06:00")))
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<String, StoreError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StoreError::invalid(format!("the {what} needs a name")));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(StoreError::invalid(format!("the {what} name is longer than {MAX_NAME_CHARS} characters")));
    }
    Ok(name.to_string())
}

fn check_languages(list: &[String]) -> Result<String, StoreError> {
    if list.is_empty() {
        return Err(StoreError::invalid("the language list is empty; leave it out to inherit the parent's"));
    }
    for lang in list {
        loa_protocol::Language::new(lang.clone())
            .map_err(|e| StoreError::invalid(format!("\"{lang}\" is not a language code ({e})")))?;
        if lang.contains(',') {
            return Err(StoreError::invalid(format!("\"{lang}\" is not a language code")));
        }
    }
    Ok(list.join(","))
}

fn area_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Area> {
    let languages: Option<String> = r.get(4)?;
    Ok(Area {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: AreaKind::parse(&r.get::<_, String>(2)?),
        parent_id: r.get(3)?,
        languages: languages.filter(|l| !l.is_empty()).map(|l| l.split(',').map(str::to_string).collect()),
        quiet_start: r.get(5)?,
        quiet_end: r.get(6)?,
        created_at: r.get(7)?,
    })
}

const AREA_COLUMNS: &str = "id, name, kind, parent_id, languages, quiet_start, quiet_end, created_at";

/// One area.
pub(crate) fn get_area(c: &Connection, id: i64) -> Result<Area, StoreError> {
    c.query_row(&format!("SELECT {AREA_COLUMNS} FROM areas WHERE id = ?1"), [id], area_row)
        .optional()?
        .ok_or_else(|| StoreError::not_found("area", id))
}

/// An area's settings after inheritance.
pub(crate) fn area_settings(c: &Connection, id: i64) -> Result<AreaSettings, StoreError> {
    let area = get_area(c, id)?;
    let (mut languages, mut start, mut end) =
        (area.languages.clone(), area.quiet_start.clone(), area.quiet_end.clone());
    let mut parent = area.parent_id;
    let mut hops = 0;
    while let (Some(p), true) = (parent, languages.is_none() || start.is_none() || end.is_none()) {
        hops += 1;
        if hops > 64 {
            break;
        }
        let up = get_area(c, p)?;
        languages = languages.or(up.languages);
        start = start.or(up.quiet_start);
        end = end.or(up.quiet_end);
        parent = up.parent_id;
    }
    Ok(AreaSettings {
        id,
        name: area.name,
        languages: languages.unwrap_or_else(|| DEFAULT_LANGUAGES.iter().map(|l| l.to_string()).collect()),
        quiet_start: parse_hhmm(start.as_deref().unwrap_or(DEFAULT_QUIET_START))?,
        quiet_end: parse_hhmm(end.as_deref().unwrap_or(DEFAULT_QUIET_END))?,
    })
}

/// The area and every area below it.
pub(crate) fn subtree(c: &Connection, id: i64) -> Result<Vec<i64>, StoreError> {
    get_area(c, id)?;
    let mut stmt = c.prepare(
        "WITH RECURSIVE sub(id) AS (SELECT ?1 UNION SELECT a.id FROM areas a JOIN sub ON a.parent_id = sub.id)
         SELECT id FROM sub ORDER BY id",
    )?;
    let ids = stmt.query_map([id], |r| r.get(0))?.collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}

pub(crate) fn get_group(c: &Connection, id: i64) -> Result<Group, StoreError> {
    let name: String = c
        .query_row("SELECT name FROM groups WHERE id = ?1", [id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::not_found("group", id))?;
    let mut stmt = c.prepare("SELECT area_id, receiver_id FROM group_members WHERE group_id = ?1 ORDER BY rowid")?;
    let rows = stmt.query_map([id], |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<String>>(1)?)))?;
    let (mut areas, mut receivers) = (Vec::new(), Vec::new());
    for row in rows {
        match row? {
            (Some(a), _) => areas.push(a),
            (None, Some(r)) => receivers.push(r),
            (None, None) => {}
        }
    }
    Ok(Group { id, name, areas, receivers })
}

impl Store {
    /// Adds an area; returns its id.
    pub fn create_area(&self, new: &NewArea, now_ms: i64) -> Result<i64, StoreError> {
        let name = check_name("area", &new.name)?;
        let languages = new.languages.as_deref().map(check_languages).transpose()?;
        for t in [&new.quiet_start, &new.quiet_end].into_iter().flatten() {
            parse_hhmm(t)?;
        }
        if new.quiet_start.is_some() != new.quiet_end.is_some() {
            return Err(StoreError::invalid("give both quiet_start and quiet_end, or neither"));
        }
        self.with_conn(|c| {
            if let Some(parent) = new.parent_id {
                get_area(c, parent)?;
            }
            c.execute(
                "INSERT INTO areas (name, kind, parent_id, languages, quiet_start, quiet_end, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![name, new.kind.as_str(), new.parent_id, languages, new.quiet_start, new.quiet_end, now_ms],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// One area.
    pub fn area(&self, id: i64) -> Result<Area, StoreError> {
        self.with_conn(|c| get_area(c, id))
    }

    /// Every area, parents before children.
    pub fn areas(&self) -> Result<Vec<Area>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!("SELECT {AREA_COLUMNS} FROM areas ORDER BY id"))?;
            let areas = stmt.query_map([], area_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(areas)
        })
    }

    /// An area's languages and quiet hours after inheritance.
    pub fn area_settings(&self, id: i64) -> Result<AreaSettings, StoreError> {
        self.with_conn(|c| area_settings(c, id))
    }

    /// The area and all areas below it.
    pub fn area_subtree(&self, id: i64) -> Result<Vec<i64>, StoreError> {
        self.with_conn(|c| subtree(c, id))
    }

    /// Adds a group of areas and receivers; returns its id. The name must be unused.
    pub fn create_group(
        &self,
        name: &str,
        areas: &[i64],
        receivers: &[String],
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let name = check_name("group", name)?;
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let taken: bool =
                tx.query_row("SELECT EXISTS(SELECT 1 FROM groups WHERE name = ?1)", [&name], |r| r.get(0))?;
            if taken {
                return Err(StoreError::Conflict(format!("a group named \"{name}\" already exists")));
            }
            tx.execute("INSERT INTO groups (name, created_at) VALUES (?1, ?2)", params![name, now_ms])?;
            let id = tx.last_insert_rowid();
            for &area in areas {
                get_area(&tx, area)?;
                tx.execute("INSERT INTO group_members (group_id, area_id) VALUES (?1, ?2)", params![id, area])?;
            }
            for rx in receivers {
                super::receivers::get_receiver(&tx, rx)?;
                tx.execute("INSERT INTO group_members (group_id, receiver_id) VALUES (?1, ?2)", params![id, rx])?;
            }
            tx.commit()?;
            Ok(id)
        })
    }

    /// One group.
    pub fn group(&self, id: i64) -> Result<Group, StoreError> {
        self.with_conn(|c| get_group(c, id))
    }

    /// Every group.
    pub fn groups(&self) -> Result<Vec<Group>, StoreError> {
        self.with_conn(|c| {
            let ids = c
                .prepare("SELECT id FROM groups ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<i64>, _>>()?;
            ids.into_iter().map(|id| get_group(c, id)).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(name: &str, kind: AreaKind, parent: Option<i64>) -> NewArea {
        NewArea { name: name.into(), kind, parent_id: parent, languages: None, quiet_start: None, quiet_end: None }
    }

    #[test]
    fn settings_inherit_down_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let province = store.create_area(&area("Lào Cai", AreaKind::Province, None), 0).unwrap();
        let commune = store
            .create_area(
                &NewArea {
                    languages: Some(vec!["vi".into(), "hmn".into()]),
                    quiet_start: Some("22:00".into()),
                    quiet_end: Some("05:00".into()),
                    ..area("Bản Vược", AreaKind::Commune, Some(province))
                },
                0,
            )
            .unwrap();
        let village = store.create_area(&area("Thôn 1", AreaKind::Village, Some(commune)), 0).unwrap();

        let root = store.area_settings(province).unwrap();
        assert_eq!(root.languages, vec!["vi"]);
        assert_eq!(root.quiet_start, parse_hhmm("21:30").unwrap());
        let v = store.area_settings(village).unwrap();
        assert_eq!(v.languages, vec!["vi", "hmn"]);
        assert_eq!((v.quiet_start, v.quiet_end), (parse_hhmm("22:00").unwrap(), parse_hhmm("05:00").unwrap()));
        assert!(v.is_quiet(parse_hhmm("23:10").unwrap()));
        assert!(v.is_quiet(parse_hhmm("04:59").unwrap()));
        assert!(!v.is_quiet(parse_hhmm("05:00").unwrap()));
        assert_eq!(store.area_subtree(province).unwrap(), vec![province, commune, village]);
        assert_eq!(store.area_subtree(village).unwrap(), vec![village]);
        assert_eq!(store.areas().unwrap().len(), 3);
    }

    #[test]
    fn bad_areas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(matches!(store.create_area(&area(" ", AreaKind::Village, None), 0), Err(StoreError::Invalid(_))));
        assert!(matches!(
            store.create_area(&area("x", AreaKind::Village, Some(42)), 0),
            Err(StoreError::NotFound { what: "area", .. })
        ));
        let bad_time = NewArea {
            quiet_start: Some("25:00".into()),
            quiet_end: Some("05:00".into()),
            ..area("x", AreaKind::Village, None)
        };
        assert!(matches!(store.create_area(&bad_time, 0), Err(StoreError::Invalid(_))));
        let bad_lang = NewArea { languages: Some(vec!["Vietnamese!".into()]), ..area("x", AreaKind::Village, None) };
        assert!(matches!(store.create_area(&bad_lang, 0), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn groups_hold_areas_and_receivers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.create_area(&area("Thôn 1", AreaKind::Village, None), 0).unwrap();
        let rx = store.register_receiver("loa 1", a, 0).unwrap();
        let g = store.create_group("riverside", &[a], std::slice::from_ref(&rx.id), 0).unwrap();
        let group = store.group(g).unwrap();
        assert_eq!(group.areas, vec![a]);
        assert_eq!(group.receivers, vec![rx.id]);
        assert!(matches!(store.create_group("riverside", &[], &[], 0), Err(StoreError::Conflict(_))));
        assert!(matches!(store.create_group("other", &[999], &[], 0), Err(StoreError::NotFound { .. })));
        assert_eq!(store.groups().unwrap().len(), 1);
    }
}
