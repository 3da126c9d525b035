//! The identity graph: a union-find over profiles, fed events in order.

use std::collections::{BTreeMap, HashMap};

use crate::extract::Identifier;
use crate::rules::Rules;

/// The identifiers one event carries, and where it sits in event order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// µs since the epoch.
    pub timestamp: i64,
    pub message_id: String,
    pub identifiers: Vec<Identifier>,
}

/// Why an identifier of an event was not used to link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CutRule {
    /// Empty after trimming.
    Empty,
    /// Longer than the rules allow.
    TooLong,
    /// A blocked value (`-1`, `null`, `0000`, …).
    Blocked,
    /// Linking it would give a profile more identifiers of its type than allowed.
    TypeLimit,
    /// Linking it would give a profile more merges than allowed.
    MergeCap,
    /// Linking it would give a profile more identifiers than allowed.
    IdentifierCap,
}

impl CutRule {
    /// Name written in the audit table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong => "too_long",
            Self::Blocked => "blocked_value",
            Self::TypeLimit => "type_limit",
            Self::MergeCap => "merge_cap",
            Self::IdentifierCap => "identifier_cap",
        }
    }
}

/// An identifier an event carried that a rule cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub identifier: Identifier,
    pub rule: CutRule,
    pub message_id: String,
}

/// Two profiles that became one: `from` was absorbed into the older `into`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub from: String,
    pub into: String,
    pub message_id: String,
}

/// What observing one event did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// The event's profile (`None` when every identifier was cut).
    pub profile: Option<String>,
    pub merges: Vec<Merge>,
    pub cuts: Vec<Cut>,
}

#[derive(Debug, Clone)]
struct Profile {
    id: String,
    counts: BTreeMap<String, usize>,
    identifiers: usize,
    merges: usize,
}

/// Profiles and the identifiers that belong to them.
///
/// ```
/// use keystone_identity::{IdentityGraph, Identifier, Observation, Rules};
/// let mut g = IdentityGraph::new(Rules::default());
/// let obs = |t, m: &str, ids: &[(&str, &str)]| Observation {
///     timestamp: t,
///     message_id: m.into(),
///     identifiers: ids.iter().map(|(k, v)| Identifier::new(*k, *v)).collect(),
/// };
/// let a = g.observe(&obs(1, "m1", &[("anonymous_id", "cookie")])).profile;
/// let b = g.observe(&obs(2, "m2", &[("user_id", "u1"), ("anonymous_id", "cookie")])).profile;
/// assert_eq!(a, b); // the login joined the anonymous profile
/// ```
#[derive(Debug, Clone)]
pub struct IdentityGraph {
    rules: Rules,
    index: HashMap<Identifier, u32>,
    parent: Vec<u32>,
    profiles: Vec<Profile>,
}

impl IdentityGraph {
    /// An empty graph.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            index: HashMap::new(),
            parent: Vec::new(),
            profiles: Vec::new(),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    fn find(&mut self, mut slot: u32) -> u32 {
        let mut root = slot;
        while self.parent[root as usize] != root {
            root = self.parent[root as usize];
        }
        while self.parent[slot as usize] != root {
            let next = self.parent[slot as usize];
            self.parent[slot as usize] = root;
            slot = next;
        }
        root
    }

    /// Add one event's identifiers. Events must come in `(timestamp,
    /// message_id)` order for the grouping to be independent of arrival order.
    pub fn observe(&mut self, obs: &Observation) -> Resolution {
        let mut res = Resolution::default();
        let mut ids: Vec<Identifier> = Vec::with_capacity(obs.identifiers.len());
        for id in &obs.identifiers {
            let id = Identifier::new(id.kind.trim(), id.value.trim());
            match self.rules.admit(&id) {
                Ok(()) if !ids.contains(&id) => ids.push(id),
                Ok(()) => {}
                Err(rule) => res.cuts.push(Cut {
                    identifier: id,
                    rule,
                    message_id: obs.message_id.clone(),
                }),
            }
        }
        ids.sort_by(|a, b| {
            self.rules
                .rank(&a.kind)
                .cmp(&self.rules.rank(&b.kind))
                .then_with(|| a.value.cmp(&b.value))
        });

        loop {
            if ids.is_empty() {
                return res;
            }
            let mut roots: Vec<u32> = Vec::new();
            let mut fresh: Vec<&Identifier> = Vec::new();
            for id in &ids {
                match self.index.get(id).copied() {
                    Some(slot) => {
                        let root = self.find(slot);
                        if !roots.contains(&root) {
                            roots.push(root);
                        }
                    }
                    None => fresh.push(id),
                }
            }
            roots.sort_unstable();
            match self.check(&roots, &fresh) {
                Ok(()) => {
                    let fresh: Vec<Identifier> = fresh.into_iter().cloned().collect();
                    let survivor = match roots.first() {
                        Some(&r) => r,
                        None => self.new_profile(obs, &ids[0]),
                    };
                    for &other in roots.iter().skip(1) {
                        self.absorb(survivor, other, &obs.message_id, &mut res);
                    }
                    for id in fresh {
                        let p = &mut self.profiles[survivor as usize];
                        *p.counts.entry(id.kind.clone()).or_default() += 1;
                        p.identifiers += 1;
                        self.index.insert(id, survivor);
                    }
                    res.profile = Some(self.profiles[survivor as usize].id.clone());
                    return res;
                }
                Err(rule) => {
                    // Drop the event's lowest-priority identifier and retry.
                    if let Some(dropped) = ids.pop() {
                        res.cuts.push(Cut {
                            identifier: dropped,
                            rule,
                            message_id: obs.message_id.clone(),
                        });
                    }
                }
            }
        }
    }

    /// Would joining `roots` and adding `fresh` break a limit or a cap?
    fn check(&self, roots: &[u32], fresh: &[&Identifier]) -> Result<(), CutRule> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut total = 0usize;
        let mut merges = roots.len().saturating_sub(1);
        for &r in roots {
            let p = &self.profiles[r as usize];
            for (k, n) in &p.counts {
                *counts.entry(k.as_str()).or_default() += n;
            }
            total += p.identifiers;
            merges += p.merges;
        }
        for id in fresh {
            *counts.entry(id.kind.as_str()).or_default() += 1;
            total += 1;
        }
        if counts.iter().any(|(k, n)| *n > self.rules.limit(k)) {
            return Err(CutRule::TypeLimit);
        }
        if merges > self.rules.max_merges {
            return Err(CutRule::MergeCap);
        }
        if total > self.rules.max_identifiers {
            return Err(CutRule::IdentifierCap);
        }
        Ok(())
    }

    fn new_profile(&mut self, obs: &Observation, first: &Identifier) -> u32 {
        let slot = self.profiles.len() as u32;
        let seed = format!("{}\u{0}{first}", obs.message_id);
        let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, seed.as_bytes()).to_string();
        self.profiles.push(Profile {
            id,
            counts: BTreeMap::new(),
            identifiers: 0,
            merges: 0,
        });
        self.parent.push(slot);
        slot
    }

    fn absorb(&mut self, survivor: u32, other: u32, message_id: &str, res: &mut Resolution) {
        self.parent[other as usize] = survivor;
        let absorbed = self.profiles[other as usize].clone();
        let p = &mut self.profiles[survivor as usize];
        for (k, n) in absorbed.counts {
            *p.counts.entry(k).or_default() += n;
        }
        p.identifiers += absorbed.identifiers;
        p.merges += absorbed.merges + 1;
        res.merges.push(Merge {
            from: absorbed.id,
            into: p.id.clone(),
            message_id: message_id.to_string(),
        });
    }

    /// The profile an identifier belongs to now.
    pub fn profile_of(&mut self, id: &Identifier) -> Option<String> {
        let slot = *self.index.get(id)?;
        let root = self.find(slot);
        Some(self.profiles[root as usize].id.clone())
    }

    /// Every identifier with its current profile, sorted by identifier.
    pub fn identifiers(&mut self) -> Vec<(Identifier, String)> {
        let mut entries: Vec<(Identifier, u32)> =
            self.index.iter().map(|(k, v)| (k.clone(), *v)).collect();
        entries.sort();
        entries
            .into_iter()
            .map(|(id, slot)| {
                let root = self.find(slot);
                (id, self.profiles[root as usize].id.clone())
            })
            .collect()
    }

    /// Number of live profiles (not merged into another).
    pub fn profile_count(&mut self) -> usize {
        (0..self.parent.len() as u32)
            .filter(|&s| self.find(s) == s)
            .count()
    }
}

/// Sort `observations` by `(timestamp, message_id)` and observe them all.
pub fn resolve_in_order(
    rules: Rules,
    mut observations: Vec<Observation>,
) -> (IdentityGraph, Vec<Resolution>) {
    observations.sort_by(|a, b| (a.timestamp, &a.message_id).cmp(&(b.timestamp, &b.message_id)));
    let mut graph = IdentityGraph::new(rules);
    let resolutions = observations.iter().map(|o| graph.observe(o)).collect();
    (graph, resolutions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{ANONYMOUS_ID, DEVICE_ID, EMAIL, USER_ID};

    fn obs(t: i64, ids: &[(&str, &str)]) -> Observation {
        Observation {
            timestamp: t,
            message_id: format!("m{t}"),
            identifiers: ids.iter().map(|(k, v)| Identifier::new(*k, *v)).collect(),
        }
    }

    fn same(g: &mut IdentityGraph, a: (&str, &str), b: (&str, &str)) -> bool {
        let pa = g.profile_of(&Identifier::new(a.0, a.1));
        pa.is_some() && pa == g.profile_of(&Identifier::new(b.0, b.1))
    }

    #[test]
    fn login_links_devices_and_the_older_profile_survives() {
        let mut g = IdentityGraph::new(Rules::default());
        let web = g
            .observe(&obs(1, &[(ANONYMOUS_ID, "web")]))
            .profile
            .unwrap();
        let app = g
            .observe(&obs(2, &[(ANONYMOUS_ID, "app")]))
            .profile
            .unwrap();
        assert_ne!(web, app);
        g.observe(&obs(3, &[(USER_ID, "u1"), (ANONYMOUS_ID, "web")]));
        let r = g.observe(&obs(4, &[(USER_ID, "u1"), (ANONYMOUS_ID, "app")]));
        assert_eq!(r.profile.as_deref(), Some(web.as_str()));
        assert_eq!(
            r.merges,
            vec![Merge {
                from: app,
                into: web,
                message_id: "m4".into()
            }]
        );
        assert_eq!(g.profile_count(), 1);
    }

    #[test]
    fn shared_device_never_merges_two_users() {
        let mut g = IdentityGraph::new(Rules::default());
        g.observe(&obs(
            1,
            &[
                (USER_ID, "alice"),
                (ANONYMOUS_ID, "kiosk"),
                (DEVICE_ID, "tablet"),
            ],
        ));
        let r = g.observe(&obs(
            2,
            &[
                (USER_ID, "bob"),
                (ANONYMOUS_ID, "kiosk"),
                (DEVICE_ID, "tablet"),
            ],
        ));
        assert!(!same(&mut g, (USER_ID, "alice"), (USER_ID, "bob")));
        // The lowest-priority identifiers were dropped one by one, then bob got his own profile.
        let cut: Vec<(&str, CutRule)> = r
            .cuts
            .iter()
            .map(|c| (c.identifier.kind.as_str(), c.rule))
            .collect();
        assert_eq!(
            cut,
            vec![
                (DEVICE_ID, CutRule::TypeLimit),
                (ANONYMOUS_ID, CutRule::TypeLimit)
            ]
        );
        assert!(r.merges.is_empty());
    }

    #[test]
    fn junk_email_shared_by_two_users_is_cut_for_the_second() {
        let mut g = IdentityGraph::new(Rules::default());
        g.observe(&obs(1, &[(USER_ID, "alice"), (EMAIL, "test@test.com")]));
        let r = g.observe(&obs(2, &[(USER_ID, "bob"), (EMAIL, "test@test.com")]));
        assert!(!same(&mut g, (USER_ID, "alice"), (USER_ID, "bob")));
        assert_eq!(
            r.cuts[0].identifier,
            Identifier::new(EMAIL, "test@test.com")
        );
    }

    #[test]
    fn blocked_values_link_nothing() {
        let mut g = IdentityGraph::new(Rules::default());
        g.observe(&obs(1, &[(USER_ID, "alice"), (ANONYMOUS_ID, "undefined")]));
        let r = g.observe(&obs(2, &[(USER_ID, "bob"), (ANONYMOUS_ID, "undefined")]));
        assert_eq!(r.cuts[0].rule, CutRule::Blocked);
        assert!(!same(&mut g, (USER_ID, "alice"), (USER_ID, "bob")));
        let r = g.observe(&obs(3, &[(ANONYMOUS_ID, "0000-0000")]));
        assert_eq!(r.profile, None);
    }

    #[test]
    fn type_limit_caps_anonymous_ids() {
        let rules = Rules {
            default_limit: 2,
            ..Rules::default()
        };
        let mut g = IdentityGraph::new(rules);
        for (t, a) in [(1, "a1"), (2, "a2"), (3, "a3")] {
            g.observe(&obs(t, &[(USER_ID, "u"), (ANONYMOUS_ID, a)]));
        }
        assert!(same(&mut g, (USER_ID, "u"), (ANONYMOUS_ID, "a2")));
        assert!(!same(&mut g, (USER_ID, "u"), (ANONYMOUS_ID, "a3")));
        assert_eq!(g.profile_of(&Identifier::new(ANONYMOUS_ID, "a3")), None);
    }

    #[test]
    fn merge_cap_stops_chains() {
        let rules = Rules {
            max_merges: 1,
            default_limit: 100,
            ..Rules::default()
        };
        let mut g = IdentityGraph::new(rules);
        for (t, a) in [(1, "a1"), (2, "a2"), (3, "a3")] {
            g.observe(&obs(t, &[(ANONYMOUS_ID, a)]));
        }
        g.observe(&obs(
            4,
            &[(EMAIL, "e"), (ANONYMOUS_ID, "a1"), (ANONYMOUS_ID, "a2")],
        ));
        let r = g.observe(&obs(5, &[(EMAIL, "e"), (ANONYMOUS_ID, "a3")]));
        assert_eq!(r.cuts[0].rule, CutRule::MergeCap);
        assert_eq!(g.profile_count(), 2);
    }

    /// A small random world: people with devices and logins, shared devices, junk emails.
    fn random_events(seed: u64) -> Vec<Observation> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::new();
        for i in 0..400 {
            let person = rng.random_range(0..60);
            let mut ids = vec![(
                ANONYMOUS_ID.to_string(),
                format!("a{person}-{}", rng.random_range(0..3)),
            )];
            if rng.random_bool(0.5) {
                ids.push((USER_ID.into(), format!("u{person}")));
            }
            if rng.random_bool(0.3) {
                let email = if rng.random_bool(0.1) {
                    "test@test.com".to_string()
                } else {
                    format!("p{person}@x.org")
                };
                ids.push((EMAIL.into(), email));
            }
            if rng.random_bool(0.05) {
                ids.push((DEVICE_ID.into(), "kiosk".into()));
            }
            out.push(Observation {
                timestamp: rng.random_range(0..1000),
                message_id: format!("m{i:04}"),
                identifiers: ids
                    .into_iter()
                    .map(|(k, v)| Identifier::new(k, v))
                    .collect(),
            });
        }
        out
    }

    fn grouping(g: &mut IdentityGraph) -> Vec<Vec<Identifier>> {
        let mut by_profile: BTreeMap<String, Vec<Identifier>> = BTreeMap::new();
        for (id, p) in g.identifiers() {
            by_profile.entry(p).or_default().push(id);
        }
        let mut groups: Vec<Vec<Identifier>> = by_profile.into_values().collect();
        groups.sort();
        groups
    }

    #[test]
    fn grouping_does_not_depend_on_arrival_order() {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        for seed in 0..20 {
            let events = random_events(seed);
            let (mut g1, _) = resolve_in_order(Rules::default(), events.clone());
            let mut shuffled = events;
            shuffled.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed + 1000));
            let (mut g2, _) = resolve_in_order(Rules::default(), shuffled);
            assert_eq!(grouping(&mut g1), grouping(&mut g2), "seed {seed}");
            // Same events, same profile ids.
            assert_eq!(g1.identifiers(), g2.identifiers(), "seed {seed}");
        }
    }

    #[test]
    fn no_profile_ever_holds_two_user_ids() {
        for seed in 0..20 {
            let (mut g, _) = resolve_in_order(Rules::default(), random_events(seed));
            let mut users: BTreeMap<String, usize> = BTreeMap::new();
            for (id, p) in g.identifiers() {
                if id.kind == USER_ID {
                    *users.entry(p).or_default() += 1;
                }
            }
            assert!(users.values().all(|&n| n == 1), "seed {seed}: {users:?}");
        }
    }
}
