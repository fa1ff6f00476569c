//! [`Urgent`]: how the API asks dispatch to publish some receivers' plans before anything else — an emergency
//! sent or cancelled. The general `replan` notification recomposes every receiver's plan, which takes a while
//! with a large fleet; an urgent request names the receivers concerned, and dispatch publishes their plans first
//! and at once.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

/// Receivers whose plans must go out now. Shared between the API (which [`Urgent::push`]es) and dispatch.
#[derive(Debug, Default)]
pub struct Urgent {
    ids: Mutex<BTreeSet<String>>,
    notify: Notify,
}

impl Urgent {
    /// Asks for these receivers' plans to be republished now.
    pub fn push(&self, ids: impl IntoIterator<Item = String>) {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner).extend(ids);
        self.notify.notify_one();
    }

    /// Takes the receivers asked for so far.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.ids.lock().unwrap_or_else(PoisonError::into_inner)).into_iter().collect()
    }

    /// Waits for a [`Urgent::push`].
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pushes_wake_and_are_taken_once() {
        let u = Urgent::default();
        u.push(["rx-b".to_string(), "rx-a".to_string()]);
        u.push(["rx-a".to_string()]);
        tokio::time::timeout(std::time::Duration::from_secs(1), u.notified()).await.unwrap();
        assert_eq!(u.take(), ["rx-a", "rx-b"]);
        assert!(u.take().is_empty());
    }
}
