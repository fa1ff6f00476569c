//! MQTT topic names and filters: which are valid ([`valid_topic`], [`valid_filter`]), whether a filter matches a
//! topic ([`matches`]), and the broker's subscription index ([`Subscriptions`]), a tree with one level of the
//! topic per node so that finding a topic's subscribers costs its number of levels, not the number of
//! subscriptions (10,000 receivers hold 10,000 filters).
//!
//! The rules are MQTT 3.1.1's (section 4.7): `+` stands for one whole level, `#` for any number of levels (also
//! none) and only last; filters that start with a wildcard do not match topics that start with `$`.

use std::collections::HashMap;

use rumqttc::QoS;

/// Whether `topic` may be published on: not empty, no wildcard, no NUL.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Whether `filter` may be subscribed to: not empty, no NUL, `+` only as a whole level, `#` only as the whole
/// last level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "+" => {}
            "#" if last => {}
            other if other.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// Whether `filter` (valid) matches `topic` (valid).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        if level == "#" {
            return true;
        }
        match topic_levels.next() {
            Some(t) if level == "+" || level == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// The part of `filter` before its first wildcard level (all topics it matches start with this).
pub fn literal_prefix(filter: &str) -> &str {
    let mut end = 0;
    for level in filter.split('/') {
        if level == "+" || level == "#" {
            return &filter[..end];
        }
        end = (end + level.len() + 1).min(filter.len());
    }
    filter
}

/// A subscriber: a connection number and the QoS it asked for.
pub type Subscriber = (u64, QoS);

/// Every subscription of the broker, indexed by level.
#[derive(Debug, Default)]
pub struct Subscriptions {
    root: Node,
    len: usize,
}

#[derive(Debug, Default)]
struct Node {
    /// Next levels, `+` and `#` included.
    children: HashMap<Box<str>, Node>,
    /// Subscribers whose filter ends here.
    here: Vec<Subscriber>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.here.is_empty()
    }

    /// Removes `conn` from the filter `levels` below this node; drops nodes left empty. Whether it was there.
    fn remove(&mut self, levels: &[&str], conn: u64) -> bool {
        let Some((first, rest)) = levels.split_first() else {
            let before = self.here.len();
            self.here.retain(|(c, _)| *c != conn);
            return self.here.len() != before;
        };
        let Some(child) = self.children.get_mut(*first) else { return false };
        let removed = child.remove(rest, conn);
        if child.is_empty() {
            self.children.remove(*first);
        }
        removed
    }

    fn collect(&self, levels: &[&str], dollar: bool, out: &mut Vec<Subscriber>) {
        if let Some(hash) = self.children.get("#") {
            if !dollar {
                out.extend_from_slice(&hash.here);
            }
        }
        let Some((first, rest)) = levels.split_first() else {
            out.extend_from_slice(&self.here);
            return;
        };
        if let Some(child) = self.children.get(*first) {
            child.collect(rest, false, out);
        }
        if !dollar {
            if let Some(plus) = self.children.get("+") {
                plus.collect(rest, false, out);
            }
        }
    }
}

impl Subscriptions {
    /// Adds (or, for the same connection and filter, replaces the QoS of) a subscription. `filter` is valid.
    pub fn insert(&mut self, filter: &str, conn: u64, qos: QoS) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        match node.here.iter_mut().find(|(c, _)| *c == conn) {
            Some(existing) => existing.1 = qos,
            None => {
                node.here.push((conn, qos));
                self.len += 1;
            }
        }
    }

    /// Removes a subscription; whether it existed.
    pub fn remove(&mut self, filter: &str, conn: u64) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = self.root.remove(&levels, conn);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// The subscribers of `topic`, each connection once with the highest QoS of its matching filters.
    pub fn subscribers(&self, topic: &str) -> Vec<Subscriber> {
        let levels: Vec<&str> = topic.split('/').collect();
        let mut found = Vec::new();
        self.root.collect(&levels, topic.starts_with('$'), &mut found);
        found.sort_unstable_by_key(|(conn, qos)| (*conn, std::cmp::Reverse(*qos as u8)));
        found.dedup_by_key(|(conn, _)| *conn);
        found
    }

    /// How many subscriptions there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn filters_and_topics_are_checked() {
        for ok in ["a", "a/b", "+", "#", "a/+/c", "a/#", "+/+", "/", "a//b", "$SYS/#"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "#/a", "a/b+", "a\0b"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        for ok in ["a", "a/b", "/", "$SYS/x", "loa/v1/rx/rx-aaaaaaaaaaaa/plan"] {
            assert!(valid_topic(ok), "{ok}");
        }
        for bad in ["", "a/+", "#", "a/b#", "a\0"] {
            assert!(!valid_topic(bad), "{bad}");
        }
    }

    #[test]
    fn matching_follows_the_standard() {
        let yes = [
            ("a/b", "a/b"),
            ("a/+", "a/b"),
            ("a/#", "a"),
            ("a/#", "a/b/c"),
            ("#", "a/b"),
            ("+/+", "/x"),
            ("+", ""),
            ("$SYS/#", "$SYS/x"),
        ];
        for (f, t) in yes {
            assert!(matches(f, t), "{f} {t}");
        }
        let no = [("a/b", "a"), ("a/+", "a/b/c"), ("a/+", "a"), ("#", "$SYS/x"), ("+/x", "$SYS/x"), ("a", "a/b")];
        for (f, t) in no {
            assert!(!matches(f, t), "{f} {t}");
        }
        assert_eq!(literal_prefix("loa/v1/rx/x/#"), "loa/v1/rx/x/");
        assert_eq!(literal_prefix("loa/v1/up/+/status"), "loa/v1/up/");
        assert_eq!(literal_prefix("#"), "");
        assert_eq!(literal_prefix("a/b"), "a/b");
    }

    #[test]
    fn subscriptions_come_and_go() {
        let mut s = Subscriptions::default();
        s.insert("loa/v1/rx/a/#", 1, QoS::AtLeastOnce);
        s.insert("loa/v1/up/+/status", 2, QoS::AtMostOnce);
        s.insert("loa/v1/#", 2, QoS::AtLeastOnce);
        s.insert("loa/v1/#", 2, QoS::AtLeastOnce);
        assert_eq!(s.len(), 3);
        assert_eq!(s.subscribers("loa/v1/rx/a/plan"), vec![(1, QoS::AtLeastOnce), (2, QoS::AtLeastOnce)]);
        assert_eq!(s.subscribers("loa/v1/up/a/status"), vec![(2, QoS::AtLeastOnce)]);
        assert_eq!(s.subscribers("loa/v1/rx/b/plan"), vec![(2, QoS::AtLeastOnce)]);
        assert!(s.remove("loa/v1/#", 2));
        assert!(!s.remove("loa/v1/#", 2));
        assert_eq!(s.subscribers("loa/v1/up/a/status"), vec![(2, QoS::AtMostOnce)]);
        assert!(s.remove("loa/v1/rx/a/#", 1));
        assert!(s.remove("loa/v1/up/+/status", 2));
        assert!(s.is_empty());
        assert!(s.root.is_empty(), "empty nodes are dropped");
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just("a".to_string()), Just("b".to_string()), Just(String::new()), Just("$x".to_string())]
    }

    fn filter() -> impl Strategy<Value = String> {
        (proptest::collection::vec(prop_oneof![4 => level(), 2 => Just("+".to_string())], 1..4), any::<bool>())
            .prop_map(|(mut levels, hash)| {
                if hash {
                    levels.push("#".into());
                }
                let f = levels.join("/");
                if f.is_empty() {
                    "a".to_string()
                } else {
                    f
                }
            })
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..5).prop_map(|levels| match levels.join("/") {
            t if t.is_empty() => "b".to_string(),
            t => t,
        })
    }

    proptest! {
        /// The index finds exactly the subscribers whose filter matches, as a plain scan over all filters would.
        #[test]
        fn the_index_agrees_with_a_scan(filters in proptest::collection::vec(filter(), 1..12), topics in proptest::collection::vec(topic(), 1..8), removed in 0usize..12) {
            let mut s = Subscriptions::default();
            for (i, f) in filters.iter().enumerate() {
                prop_assert!(valid_filter(f));
                s.insert(f, i as u64, QoS::AtMostOnce);
            }
            let gone = removed % filters.len();
            prop_assert!(s.remove(&filters[gone], gone as u64));
            for t in &topics {
                let want: Vec<u64> = (0..filters.len()).filter(|&i| i != gone && matches(&filters[i], t)).map(|i| i as u64).collect();
                let got: Vec<u64> = s.subscribers(t).into_iter().map(|(c, _)| c).collect();
                prop_assert_eq!(&got, &want, "topic {:?} filters {:?}", t, filters);
            }
        }
    }
}
