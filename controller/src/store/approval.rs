//! Approval before air: a bulletin is `draft` → `submitted` → `approved` or `rejected` (with a comment), and
//! only an approved one may be scheduled (emergencies excepted). Each bulletin is owned by an area (`None` =
//! the whole tree); an area (or an ancestor) with `one_step_approval` approves on submit. Who may move a
//! bulletin where is the API's business (`api::bulletins`); this module keeps the states consistent.

use rusqlite::{params, Connection};
use serde::Serialize;

use super::bulletins::{get_bulletin, Bulletin};
use super::{Store, StoreError};

/// Where a bulletin stands in approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// Being written; not yet sent for approval.
    Draft,
    /// Waiting for an approver.
    Submitted,
    /// May be scheduled.
    Approved,
    /// Sent back with a comment; may be changed and submitted again.
    Rejected,
}

impl Approval {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Approval::Draft => "draft",
            Approval::Submitted => "submitted",
            Approval::Approved => "approved",
            Approval::Rejected => "rejected",
        }
    }

    pub(crate) fn parse(s: &str) -> Approval {
        match s {
            "submitted" => Approval::Submitted,
            "approved" => Approval::Approved,
            "rejected" => Approval::Rejected,
            // The CHECK constraint keeps the column to these four; anything else is not approved.
            _ => Approval::Draft,
        }
    }
}

/// Who owns a new bulletin and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulletinOwner {
    /// Owning area (`None` = the whole tree).
    pub area_id: Option<i64>,
    /// The user making it (`None` = the admin token).
    pub created_by: Option<i64>,
    /// Its first approval state.
    pub approval: Approval,
}

impl BulletinOwner {
    /// The admin's own upload: whole tree, approved on upload.
    pub fn admin() -> Self {
        BulletinOwner { area_id: None, created_by: None, approval: Approval::Approved }
    }

    pub(crate) fn reviewed_by(&self) -> Option<i64> {
        (self.approval == Approval::Approved).then_some(self.created_by).flatten()
    }
}

/// A move from one approval state to another.
#[derive(Debug, Clone, Copy)]
pub struct Review<'a> {
    /// Allowed current states.
    pub from: &'a [Approval],
    /// New state.
    pub to: Approval,
    /// The reviewer (for approved / rejected).
    pub by: Option<i64>,
    /// The reviewer's comment.
    pub comment: Option<&'a str>,
}

/// The area and its ancestors, nearest first.
pub(crate) fn ancestors(c: &Connection, id: i64) -> Result<Vec<i64>, StoreError> {
    let mut out = vec![id];
    let mut area = super::areas::get_area(c, id)?;
    while let Some(p) = area.parent_id {
        if out.len() > 64 || out.contains(&p) {
            break;
        }
        out.push(p);
        area = super::areas::get_area(c, p)?;
    }
    Ok(out)
}

impl Store {
    /// The area and its ancestors, nearest first.
    pub fn area_ancestors(&self, id: i64) -> Result<Vec<i64>, StoreError> {
        self.with_conn(|c| ancestors(c, id))
    }

    /// Whether submitting a bulletin of this area approves it (the area or an ancestor chose one-step
    /// approval). `None` (the whole tree) never does.
    pub fn one_step_approval(&self, area: Option<i64>) -> Result<bool, StoreError> {
        let Some(area) = area else { return Ok(false) };
        self.with_conn(|c| {
            let chain = ancestors(c, area)?;
            let mut stmt = c.prepare_cached("SELECT one_step_approval FROM areas WHERE id = ?1")?;
            for a in chain {
                if stmt.query_row([a], |r| r.get::<_, i64>(0))? != 0 {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Sets an area's own one-step approval flag.
    pub fn set_one_step_approval(&self, area: i64, on: bool) -> Result<(), StoreError> {
        self.with_conn(|c| {
            let n = c.execute("UPDATE areas SET one_step_approval = ?2 WHERE id = ?1", params![area, i64::from(on)])?;
            if n == 0 {
                return Err(StoreError::not_found("area", area));
            }
            Ok(())
        })
    }

    /// An area's own one-step approval flag.
    pub fn area_one_step_approval(&self, area: i64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let v: Option<i64> = rusqlite::OptionalExtension::optional(c.query_row(
                "SELECT one_step_approval FROM areas WHERE id = ?1",
                [area],
                |r| r.get(0),
            ))?;
            v.map(|v| v != 0).ok_or_else(|| StoreError::not_found("area", area))
        })
    }

    /// Moves a bulletin to `review.to` if it is in one of `review.from` (else a conflict naming its state);
    /// approving or rejecting records the reviewer, comment and time. Returns the bulletin as it is now.
    pub fn review_bulletin(&self, id: &str, review: &Review<'_>, now_ms: i64) -> Result<Bulletin, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let b = get_bulletin(&tx, id)?;
            if b.cancelled_at.is_some() {
                return Err(StoreError::Conflict(format!("bulletin {id} is cancelled")));
            }
            if !review.from.contains(&b.approval) {
                return Err(StoreError::Conflict(format!(
                    "bulletin {id} is {}; this needs it to be {}",
                    b.approval.as_str(),
                    review.from.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" or ")
                )));
            }
            match review.to {
                Approval::Approved | Approval::Rejected => tx.execute(
                    "UPDATE bulletins SET status = ?2, reviewed_by = ?3, review_comment = ?4, reviewed_at = ?5
                     WHERE id = ?1",
                    params![id, review.to.as_str(), review.by, review.comment, now_ms],
                )?,
                Approval::Draft | Approval::Submitted => tx.execute(
                    "UPDATE bulletins SET status = ?2, reviewed_by = NULL, reviewed_at = NULL WHERE id = ?1",
                    params![id, review.to.as_str()],
                )?,
            };
            let b = get_bulletin(&tx, id)?;
            tx.commit()?;
            Ok(b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::areas::{AreaKind, NewArea};

    #[test]
    fn bulletins_move_through_approval() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let new = |name: &str, parent| NewArea {
            name: name.into(),
            kind: AreaKind::Commune,
            parent_id: parent,
            languages: None,
            quiet_start: None,
            quiet_end: None,
        };
        let p = store.create_area(&new("P", None), 0).unwrap();
        let c = store.create_area(&new("C", Some(p)), 0).unwrap();
        assert_eq!(store.area_ancestors(c).unwrap(), vec![c, p]);
        assert!(!store.one_step_approval(Some(c)).unwrap());
        store.set_one_step_approval(p, true).unwrap();
        assert!(store.one_step_approval(Some(c)).unwrap());
        assert!(!store.one_step_approval(None).unwrap());

        let owner = BulletinOwner { area_id: Some(c), created_by: None, approval: Approval::Draft };
        let (id, _) = store.create_bulletin_as("x", "other", "vi", &owner, 1).unwrap();
        assert_eq!(store.bulletin(&id).unwrap().approval, Approval::Draft);
        let approve = Review { from: &[Approval::Submitted], to: Approval::Approved, by: None, comment: None };
        assert!(matches!(store.review_bulletin(&id, &approve, 2), Err(StoreError::Conflict(_))));
        let submit = Review { from: &[Approval::Draft], to: Approval::Submitted, by: None, comment: None };
        store.review_bulletin(&id, &submit, 2).unwrap();
        let b = store.review_bulletin(&id, &Review { comment: Some("ok"), ..approve }, 3).unwrap();
        assert_eq!((b.approval, b.review_comment.as_deref(), b.reviewed_at), (Approval::Approved, Some("ok"), Some(3)));
        // Made by the admin path: approved at once.
        let (admin, _) = store.create_bulletin("y", "other", "vi", 1).unwrap();
        assert_eq!(store.bulletin(&admin).unwrap().approval, Approval::Approved);
    }
}
