//! The identity graph: a union-find over profiles, fed events in order.
//!
//! Identifiers are interned once (a type index and the value) and held in a
//! hash table of indices, so observing an event costs a few hash lookups and
//! no allocation for identifiers already known. The graph can be saved as
//! rows ([`IdentityGraph::identities`], [`IdentityGraph::profiles`]) and
//! rebuilt from them ([`IdentityGraph::restore`]) for incremental runs.

use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::{DefaultHashBuilder, HashTable};

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
    /// Not a valid value of its type (an email without `@`, a phone with letters).
    Invalid,
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
            Self::Invalid => "invalid",
            Self::TypeLimit => "type_limit",
            Self::MergeCap => "merge_cap",
            Self::IdentifierCap => "identifier_cap",
        }
    }

    /// True for the rules that depend on the graph (limits and caps), as
    /// opposed to the value alone.
    pub fn is_graph_rule(self) -> bool {
        matches!(self, Self::TypeLimit | Self::MergeCap | Self::IdentifierCap)
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
    /// The event's timestamp (µs).
    pub at: i64,
    /// Type of an identifier of the event that belonged to `from`.
    pub linked_by: String,
}

/// What observing one event did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// The event's profile (`None` when every identifier was cut).
    pub profile: Option<String>,
    pub merges: Vec<Merge>,
    pub cuts: Vec<Cut>,
}

/// One identifier of a saved graph (a row of `identities`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    pub kind: String,
    pub value: String,
    pub profile_id: String,
    /// µs since the epoch of the first and last event that linked it.
    pub first_seen: i64,
    pub last_seen: i64,
    /// The event that attached it to its profile.
    pub linked_by: String,
}

/// A row of `identities` borrowed from the graph ([`IdentityGraph::for_each_identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityRef<'a> {
    pub kind: &'a str,
    pub value: &'a str,
    pub profile_id: &'a str,
    pub first_seen: i64,
    pub last_seen: i64,
    pub linked_by: &'a str,
}

const NO_PROFILE: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Ident {
    kind: u16,
    value: Box<str>,
    /// Profile slot, or `NO_PROFILE` when never linked.
    slot: u32,
    first_seen: i64,
    last_seen: i64,
    linked_by: Box<str>,
    /// Carried by an event of a previous run (restored), linked or not.
    restored: bool,
}

#[derive(Debug, Clone)]
struct Profile {
    id: uuid::Uuid,
    /// `(timestamp, message_id)` of the event that created it: the older survives a merge.
    created: (i64, Box<str>),
    /// Identifiers per type index.
    counts: Vec<(u16, u32)>,
    identifiers: u32,
    merges: u32,
}

#[derive(Debug, Clone)]
struct Kind {
    name: String,
    limit: usize,
    rank: (usize, String),
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
    hasher: DefaultHashBuilder,
    kinds: Vec<Kind>,
    /// (index in `idents`, its [`hash_key`]).
    table: HashTable<(u32, u32)>,
    idents: Vec<Ident>,
    parent: Vec<u32>,
    profiles: Vec<Profile>,
    /// Latest event timestamp observed (µs), `i64::MIN` when none.
    high_water: i64,
}

/// An identifier's hash, 32 bits of it: the table's entries keep it beside
/// the identifier's index, so a probe reads an identifier (a cache miss,
/// then another for its text) only when the 32 bits match, and growing the
/// table reads none.
fn hash_key(hasher: &DefaultHashBuilder, kind: u16, value: &str) -> u32 {
    let mut h = hasher.build_hasher();
    kind.hash(&mut h);
    value.hash(&mut h);
    let h = h.finish();
    (h ^ (h >> 32)) as u32
}

/// The table's 64-bit hash of a 32-bit [`hash_key`]: the 32 bits in both
/// halves, so the control byte (top bits) and the bucket (low bits) both
/// come from them.
fn wide(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

impl IdentityGraph {
    /// An empty graph.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            hasher: DefaultHashBuilder::default(),
            kinds: Vec::new(),
            table: HashTable::new(),
            idents: Vec::new(),
            parent: Vec::new(),
            profiles: Vec::new(),
            high_water: i64::MIN,
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Latest event timestamp observed or restored (µs), if any.
    pub fn high_water(&self) -> Option<i64> {
        (self.high_water != i64::MIN).then_some(self.high_water)
    }

    /// The type index of `name`, added if new.
    pub fn kind_index(&mut self, name: &str) -> u16 {
        if let Some(i) = self.kinds.iter().position(|k| k.name == name) {
            return i as u16;
        }
        self.kinds.push(Kind {
            name: name.to_string(),
            limit: self.rules.limit(name),
            rank: {
                let (position, kind) = self.rules.rank(name);
                (position, kind.to_string())
            },
        });
        (self.kinds.len() - 1) as u16
    }

    /// The index of an identifier, interning it (unlinked) if new.
    pub fn intern(&mut self, kind: u16, value: &str) -> u32 {
        let hash = hash_key(&self.hasher, kind, value);
        let idents = &self.idents;
        if let Some(&(i, _)) = self.table.find(wide(hash), |&(i, h)| {
            h == hash && {
                let id = &idents[i as usize];
                id.kind == kind && &*id.value == value
            }
        }) {
            return i;
        }
        let i = self.idents.len() as u32;
        self.idents.push(Ident {
            kind,
            value: value.into(),
            slot: NO_PROFILE,
            first_seen: i64::MAX,
            last_seen: i64::MIN,
            linked_by: "".into(),
            restored: false,
        });
        self.table
            .insert_unique(wide(hash), (i, hash), |&(_, h)| wide(h));
        i
    }

    fn lookup(&self, kind: &str, value: &str) -> Option<u32> {
        let kind = self.kinds.iter().position(|k| k.name == kind)? as u16;
        let hash = hash_key(&self.hasher, kind, value);
        self.table
            .find(wide(hash), |&(i, h)| {
                h == hash && {
                    let id = &self.idents[i as usize];
                    id.kind == kind && &*id.value == value
                }
            })
            .map(|&(i, _)| i)
    }

    /// True when the identifier was carried by an event of a previous run.
    pub fn is_restored(&self, ident: u32) -> bool {
        self.idents[ident as usize].restored
    }

    /// True when an event at `timestamp` with these (interned) identifiers
    /// could have changed what earlier runs decided: it is not later than
    /// every event already resolved, and it carries an identifier an earlier
    /// event carried. Observing such an event after the fact would not give
    /// the grouping of one run in timestamp order, so the graph must be
    /// rebuilt. A late event whose identifiers are all new is safe: no
    /// earlier decision involved them.
    pub fn rewrites_history(&self, timestamp: i64, ids: &[u32]) -> bool {
        timestamp <= self.high_water && ids.iter().any(|&i| self.is_restored(i))
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

    fn identifier(&self, ident: u32) -> Identifier {
        let id = &self.idents[ident as usize];
        Identifier::new(self.kinds[id.kind as usize].name.as_str(), &*id.value)
    }

    /// Add one event's identifiers (checked against the value rules first).
    /// Events must come in `(timestamp, message_id)` order for the grouping
    /// to be independent of arrival order.
    pub fn observe(&mut self, obs: &Observation) -> Resolution {
        let mut cuts = Vec::new();
        let mut ids = Vec::with_capacity(obs.identifiers.len());
        for id in &obs.identifiers {
            let id = Identifier::new(id.kind.trim(), id.value.trim());
            match self.rules.admit(&id) {
                Ok(()) => {
                    let kind = self.kind_index(&id.kind);
                    ids.push(self.intern(kind, &id.value));
                }
                Err(rule) => cuts.push(Cut {
                    identifier: id,
                    rule,
                    message_id: obs.message_id.clone(),
                }),
            }
        }
        let mut res = Resolution::default();
        if let Some(slot) = self.link(obs.timestamp, &obs.message_id, &mut ids, &mut res) {
            let root = self.find(slot);
            res.profile = Some(self.profiles[root as usize].id.to_string());
        }
        cuts.append(&mut res.cuts);
        res.cuts = cuts;
        res
    }

    /// Add one event whose identifiers were admitted and interned already.
    /// `ids` is reordered (priority order) and deduplicated in place. The
    /// event's profile is not filled in (see [`IdentityGraph::observe`]).
    pub fn observe_interned(
        &mut self,
        timestamp: i64,
        message_id: &str,
        ids: &mut Vec<u32>,
    ) -> Resolution {
        let mut res = Resolution::default();
        self.link(timestamp, message_id, ids, &mut res);
        res
    }

    fn link(
        &mut self,
        timestamp: i64,
        message_id: &str,
        ids: &mut Vec<u32>,
        res: &mut Resolution,
    ) -> Option<u32> {
        self.high_water = self.high_water.max(timestamp);
        ids.sort_unstable_by(|&a, &b| {
            let (ia, ib) = (&self.idents[a as usize], &self.idents[b as usize]);
            self.kinds[ia.kind as usize]
                .rank
                .cmp(&self.kinds[ib.kind as usize].rank)
                .then_with(|| ia.value.cmp(&ib.value))
        });
        ids.dedup();
        let mut roots: Vec<(u32, u32)> = Vec::with_capacity(ids.len());
        loop {
            if ids.is_empty() {
                return None;
            }
            roots.clear();
            let mut fresh = 0usize;
            for &i in ids.iter() {
                let slot = self.idents[i as usize].slot;
                if slot == NO_PROFILE {
                    fresh += 1;
                } else {
                    let root = self.find(slot);
                    if !roots.iter().any(|&(r, _)| r == root) {
                        roots.push((root, i));
                    }
                }
            }
            match self.check(&roots, ids, fresh) {
                Ok(()) => break,
                Err(rule) => {
                    // Drop the event's lowest-priority identifier and retry.
                    if let Some(dropped) = ids.pop() {
                        res.cuts.push(Cut {
                            identifier: self.identifier(dropped),
                            rule,
                            message_id: message_id.to_string(),
                        });
                    }
                }
            }
        }
        // The oldest profile survives.
        roots.sort_by(|a, b| {
            let (pa, pb) = (&self.profiles[a.0 as usize], &self.profiles[b.0 as usize]);
            pa.created.cmp(&pb.created)
        });
        let survivor = match roots.first() {
            Some(&(r, _)) => r,
            None => self.new_profile(timestamp, message_id, ids[0]),
        };
        for &(other, via) in roots.iter().skip(1) {
            let linked_by = self.kinds[self.idents[via as usize].kind as usize]
                .name
                .clone();
            let merge = self.absorb(survivor, other, timestamp, message_id, linked_by);
            res.merges.push(merge);
        }
        for &i in ids.iter() {
            let id = &mut self.idents[i as usize];
            if id.slot == NO_PROFILE {
                id.slot = survivor;
                id.first_seen = timestamp;
                id.linked_by = message_id.into();
                let kind = id.kind;
                let p = &mut self.profiles[survivor as usize];
                match p.counts.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += 1,
                    None => p.counts.push((kind, 1)),
                }
                p.identifiers += 1;
            }
            let id = &mut self.idents[i as usize];
            id.last_seen = id.last_seen.max(timestamp);
        }
        Some(survivor)
    }

    /// Would joining `roots` and adding the `fresh` identifiers of `ids` break
    /// a limit or a cap?
    fn check(&self, roots: &[(u32, u32)], ids: &[u32], fresh: usize) -> Result<(), CutRule> {
        let mut counts: Vec<(u16, usize)> = Vec::with_capacity(8);
        let mut add = |kind: u16, n: usize| match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, c)) => *c += n,
            None => counts.push((kind, n)),
        };
        let mut total = fresh;
        let mut merges = roots.len().saturating_sub(1);
        for &(r, _) in roots {
            let p = &self.profiles[r as usize];
            for &(k, n) in &p.counts {
                add(k, n as usize);
            }
            total += p.identifiers as usize;
            merges += p.merges as usize;
        }
        for &i in ids {
            let id = &self.idents[i as usize];
            if id.slot == NO_PROFILE {
                add(id.kind, 1);
            }
        }
        if counts
            .iter()
            .any(|&(k, n)| n > self.kinds[k as usize].limit)
        {
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

    fn new_profile(&mut self, timestamp: i64, message_id: &str, first: u32) -> u32 {
        let slot = self.profiles.len() as u32;
        let seed = format!("{message_id}\u{0}{}", self.identifier(first));
        self.profiles.push(Profile {
            id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, seed.as_bytes()),
            created: (timestamp, message_id.into()),
            counts: Vec::new(),
            identifiers: 0,
            merges: 0,
        });
        self.parent.push(slot);
        slot
    }

    fn absorb(
        &mut self,
        survivor: u32,
        other: u32,
        at: i64,
        message_id: &str,
        linked_by: String,
    ) -> Merge {
        self.parent[other as usize] = survivor;
        let absorbed = std::mem::take(&mut self.profiles[other as usize].counts);
        let (a_ids, a_merges, a_id) = {
            let o = &self.profiles[other as usize];
            (o.identifiers, o.merges, o.id)
        };
        let p = &mut self.profiles[survivor as usize];
        for (k, n) in absorbed {
            match p.counts.iter_mut().find(|(kk, _)| *kk == k) {
                Some((_, c)) => *c += n,
                None => p.counts.push((k, n)),
            }
        }
        p.identifiers += a_ids;
        p.merges += a_merges + 1;
        Merge {
            from: a_id.to_string(),
            into: p.id.to_string(),
            message_id: message_id.to_string(),
            at,
            linked_by,
        }
    }

    /// The profile an identifier belongs to now.
    pub fn profile_of(&mut self, id: &Identifier) -> Option<String> {
        let i = self.lookup(&id.kind, &id.value)?;
        let slot = self.idents[i as usize].slot;
        if slot == NO_PROFILE {
            return None;
        }
        let root = self.find(slot);
        Some(self.profiles[root as usize].id.to_string())
    }

    /// Every linked identifier with its current profile, sorted by identifier.
    pub fn identifiers(&mut self) -> Vec<(Identifier, String)> {
        self.identities()
            .into_iter()
            .map(|r| (Identifier::new(r.kind, r.value), r.profile_id))
            .collect()
    }

    /// Every linked identifier as a row of `identities`, sorted by type then value.
    pub fn identities(&mut self) -> Vec<IdentityRow> {
        let mut rows = Vec::new();
        self.for_each_identity(|r| {
            rows.push(IdentityRow {
                kind: r.kind.to_string(),
                value: r.value.to_string(),
                profile_id: r.profile_id.to_string(),
                first_seen: r.first_seen,
                last_seen: r.last_seen,
                linked_by: r.linked_by.to_string(),
            })
        });
        rows
    }

    /// Call `f` with every linked identifier, sorted by type then value, as
    /// borrowed row of `identities` (no copy of the strings; what a writer
    /// of millions of rows wants). Returns how many there were.
    pub fn for_each_identity(&mut self, f: impl FnMut(IdentityRef<'_>)) -> usize {
        let order = self.identity_order();
        self.for_each_identity_in(&order, f);
        order.len()
    }

    /// The linked identifiers, sorted by type then value: the row order of
    /// `identities`, for [`IdentityGraph::for_each_identity_in`] and
    /// [`IdentityGraph::snapshot_into`] (one sort for both).
    pub fn identity_order(&mut self) -> Vec<u32> {
        // Every slot points at its root after this (full path compression).
        for s in 0..self.parent.len() as u32 {
            self.find(s);
        }
        let mut by_name: Vec<u16> = (0..self.kinds.len() as u16).collect();
        by_name.sort_unstable_by(|&a, &b| {
            self.kinds[a as usize]
                .name
                .cmp(&self.kinds[b as usize].name)
        });
        let mut rank = vec![0u16; self.kinds.len()];
        for (r, &k) in by_name.iter().enumerate() {
            rank[k as usize] = r as u16;
        }
        // Sorted by a key held in place — the type's rank and the value's
        // first bytes — so most comparisons do not follow a pointer to the
        // value; equal keys fall back to the whole value.
        let mut keyed: Vec<(u128, u32)> = (0..self.idents.len() as u32)
            .filter(|&i| self.idents[i as usize].slot != NO_PROFILE)
            .map(|i| {
                let id = &self.idents[i as usize];
                (sort_key(rank[id.kind as usize], &id.value), i)
            })
            .collect();
        // A stable sort finds runs already in order: the identifiers restored
        // from a sorted table come first, so a run after a restore only sorts
        // the new ones and merges.
        keyed.sort_by(|&(ka, a), &(kb, b)| {
            ka.cmp(&kb).then_with(|| {
                self.idents[a as usize]
                    .value
                    .cmp(&self.idents[b as usize].value)
            })
        });
        keyed.into_iter().map(|(_, i)| i).collect()
    }

    /// Call `f` with the identifiers of `order`, from
    /// [`IdentityGraph::identity_order`] with the graph unchanged since.
    pub fn for_each_identity_in(&self, order: &[u32], mut f: impl FnMut(IdentityRef<'_>)) {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        for &i in order {
            let id = &self.idents[i as usize];
            let root = self.parent[id.slot as usize];
            let profile_id = self.profiles[root as usize]
                .id
                .hyphenated()
                .encode_lower(&mut buf);
            f(IdentityRef {
                kind: &self.kinds[id.kind as usize].name,
                value: &id.value,
                profile_id,
                first_seen: id.first_seen,
                last_seen: id.last_seen,
                linked_by: &id.linked_by,
            });
        }
    }

    /// Number of live profiles (not merged into another).
    pub fn profile_count(&mut self) -> usize {
        (0..self.parent.len() as u32)
            .filter(|&s| self.find(s) == s)
            .count()
    }

    /// Rebuild a graph saved by a previous run: its `identities` rows, the
    /// number of merges each live profile absorbed, and the identifiers that
    /// earlier events carried but no profile holds (cut by a limit or cap).
    /// [`GraphRestore`] does the same from borrowed rows.
    pub fn restore(
        rules: Rules,
        identities: impl IntoIterator<Item = IdentityRow>,
        merges: impl Fn(&str) -> u32,
        unlinked: impl IntoIterator<Item = Identifier>,
    ) -> Self {
        let mut restore = GraphRestore::new(rules, merges);
        for row in identities {
            restore.add(IdentityRef {
                kind: &row.kind,
                value: &row.value,
                profile_id: &row.profile_id,
                first_seen: row.first_seen,
                last_seen: row.last_seen,
                linked_by: &row.linked_by,
            });
        }
        restore.finish(unlinked)
    }
}

/// Format of [`IdentityGraph::snapshot`] (bumped on any layout change).
const SNAPSHOT_FORMAT: u32 = 1;

impl IdentityGraph {
    /// The graph as bytes for [`IdentityGraph::from_snapshot`]: exactly what
    /// [`GraphRestore`] would rebuild from the `identities` rows, the merge
    /// counts and the cut identifiers this graph stands for (live profiles
    /// only, their creating event, every identifier marked as seen before),
    /// without the cost of interning and grouping millions of rows again.
    /// Linked identifiers come sorted by type and value, as in `identities`.
    pub fn snapshot(&mut self) -> Vec<u8> {
        let order = self.identity_order();
        let mut out = Vec::new();
        self.snapshot_into(&order, &mut out);
        out
    }

    /// [`IdentityGraph::snapshot`] appended to `out` (after a caller's
    /// header, without copying hundreds of megabytes again), with the order
    /// of [`IdentityGraph::identity_order`], the graph unchanged since.
    pub fn snapshot_into(&self, order: &[u32], out: &mut Vec<u8>) {
        out.reserve(self.idents.len() * 96 + self.profiles.len() * 72);
        let put_str = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        out.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
        out.extend_from_slice(&(self.kinds.len() as u32).to_le_bytes());
        for k in &self.kinds {
            put_str(out, &k.name);
        }
        // Live profiles holding an identifier, renumbered in slot order.
        let mut number = vec![NO_PROFILE; self.profiles.len()];
        for id in &self.idents {
            if id.slot != NO_PROFILE {
                number[self.parent[id.slot as usize] as usize] = 0;
            }
        }
        let mut live = 0u32;
        for n in number.iter_mut().filter(|n| **n == 0) {
            *n = live;
            live += 1;
        }
        out.extend_from_slice(&live.to_le_bytes());
        for (slot, p) in self.profiles.iter().enumerate() {
            if number[slot] != NO_PROFILE {
                out.extend_from_slice(p.id.as_bytes());
                out.extend_from_slice(&p.created.0.to_le_bytes());
                put_str(out, &p.created.1);
                out.extend_from_slice(&p.merges.to_le_bytes());
            }
        }
        // Linked identifiers in table order, then the unlinked ones.
        let unlinked =
            (0..self.idents.len() as u32).filter(|&i| self.idents[i as usize].slot == NO_PROFILE);
        out.extend_from_slice(&(self.idents.len() as u64).to_le_bytes());
        for i in order.iter().copied().chain(unlinked) {
            let id = &self.idents[i as usize];
            let slot = if id.slot == NO_PROFILE {
                NO_PROFILE
            } else {
                number[self.parent[id.slot as usize] as usize]
            };
            out.extend_from_slice(&id.kind.to_le_bytes());
            out.extend_from_slice(&slot.to_le_bytes());
            out.extend_from_slice(&id.first_seen.to_le_bytes());
            out.extend_from_slice(&id.last_seen.to_le_bytes());
            put_str(out, &id.value);
            put_str(out, &id.linked_by);
        }
    }

    /// The graph saved by [`IdentityGraph::snapshot`], under `rules` (the
    /// rules it was built with; limits are not stored). Errors say what is
    /// wrong with the bytes.
    pub fn from_snapshot(rules: Rules, bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { bytes, at: 0 };
        let format = r.u32()?;
        if format != SNAPSHOT_FORMAT {
            return Err(format!(
                "snapshot format {format}, this version reads {SNAPSHOT_FORMAT}"
            ));
        }
        let mut g = IdentityGraph::new(rules);
        let kinds = r.u32()?;
        for _ in 0..kinds {
            let name = r.str()?;
            g.kind_index(name);
        }
        if g.kinds.len() != kinds as usize {
            return Err("a type name is repeated".into());
        }
        let live = r.u32()? as usize;
        if live > bytes.len() / 32 {
            return Err(format!(
                "{live} profiles cannot fit in {} bytes",
                bytes.len()
            ));
        }
        g.profiles.reserve_exact(live);
        g.parent.reserve_exact(live);
        for slot in 0..live {
            let id = uuid::Uuid::from_bytes(r.array()?);
            let created = (r.i64()?, r.str()?.into());
            let merges = r.u32()?;
            g.profiles.push(Profile {
                id,
                created,
                counts: Vec::new(),
                identifiers: 0,
                merges,
            });
            g.parent.push(slot as u32);
        }
        let idents = usize::try_from(r.u64()?).map_err(|_| "identifier count")?;
        if idents > bytes.len() / 30 {
            return Err(format!(
                "{idents} identifiers cannot fit in {} bytes",
                bytes.len()
            ));
        }
        // The identifiers are parsed, hashed and copied out of the snapshot
        // by two threads, a half each (the second half found by skipping
        // the first one's records); then indexed in order on this one.
        let body = r.at;
        let half = idents / 2;
        let mut skip = Reader { bytes, at: body };
        for _ in 0..half {
            skip.take(2 + 4 + 8 + 8)?;
            for _ in 0..2 {
                let n = skip.u32()? as usize;
                skip.take(n)?;
            }
        }
        let mid = skip.at;
        let kinds = g.kinds.len();
        let hasher = &g.hasher;
        let parse = |from: usize, count: usize, capacity: usize| {
            let mut r = Reader { bytes, at: from };
            let mut out = Vec::with_capacity(capacity);
            let mut hashes = Vec::with_capacity(capacity);
            for _ in 0..count {
                let kind = r.u16()?;
                let slot = r.u32()?;
                let (first_seen, last_seen) = (r.i64()?, r.i64()?);
                let (value, linked_by) = (r.str()?, r.str()?);
                if kind as usize >= kinds || (slot != NO_PROFILE && slot as usize >= live) {
                    return Err(format!(
                        "identifier {value:?} points past the saved types or profiles"
                    ));
                }
                hashes.push(hash_key(hasher, kind, value));
                let linked = slot != NO_PROFILE;
                out.push(Ident {
                    kind,
                    value: value.into(),
                    slot,
                    first_seen: if linked { first_seen } else { i64::MAX },
                    last_seen: if linked { last_seen } else { i64::MIN },
                    linked_by: if linked { linked_by } else { "" }.into(),
                    restored: true,
                });
            }
            Ok::<_, String>((out, hashes, r.at))
        };
        let (first, second) = std::thread::scope(|scope| {
            let second = scope.spawn(|| parse(mid, idents - half, idents - half));
            let first = parse(body, half, idents);
            let second = second
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (first, second)
        });
        let ((mut saved, mut hashes, _), (rest, rest_hashes, end)) = (first?, second?);
        if end != bytes.len() {
            return Err(format!(
                "{} bytes after the last identifier",
                bytes.len() - end
            ));
        }
        saved.extend(rest);
        hashes.extend(rest_hashes);
        let table = &mut g.table;
        table.reserve(idents, |&(_, h)| wide(h));
        for (i, (id, &hash)) in saved.iter().zip(&hashes).enumerate() {
            let same = |&(j, h): &(u32, u32)| {
                h == hash && {
                    let other = &saved[j as usize];
                    other.kind == id.kind && other.value == id.value
                }
            };
            if table.find(wide(hash), same).is_some() {
                return Err(format!("identifier {:?} is saved twice", id.value));
            }
            table.insert_unique(wide(hash), (i as u32, hash), |&(_, h)| wide(h));
            if id.slot != NO_PROFILE {
                g.high_water = g.high_water.max(id.last_seen);
                let p = &mut g.profiles[id.slot as usize];
                match p.counts.iter_mut().find(|(k, _)| *k == id.kind) {
                    Some((_, n)) => *n += 1,
                    None => p.counts.push((id.kind, 1)),
                }
                p.identifiers += 1;
            }
        }
        g.idents = saved;
        Ok(g)
    }
}

/// Reads the little-endian fields of a snapshot.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("truncated at byte {}", self.at));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    /// The next `N` bytes as an array (for the `from_le_bytes` readers).
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let at = self.at;
        self.take(N)?
            .try_into()
            .map_err(|_| format!("truncated at byte {at}"))
    }
    fn u16(&mut self) -> Result<u16, String> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Result<i64, String> {
        self.array().map(i64::from_le_bytes)
    }
    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.u32()? as usize;
        let at = self.at;
        std::str::from_utf8(self.take(n)?).map_err(|_| format!("text at byte {at} is not UTF-8"))
    }
}

/// A graph being rebuilt from the rows of `identities`, one borrowed row at
/// a time (no owned copy of a table of millions of rows).
#[derive(Debug)]
pub struct GraphRestore<M> {
    graph: IdentityGraph,
    /// Profile id → slot.
    slots: hashbrown::HashMap<Box<str>, u32>,
    merges: M,
}

impl<M: Fn(&str) -> u32> GraphRestore<M> {
    /// `merges` gives the number of merges a live profile absorbed.
    pub fn new(rules: Rules, merges: M) -> Self {
        Self {
            graph: IdentityGraph::new(rules),
            slots: hashbrown::HashMap::new(),
            merges,
        }
    }

    /// Add one row of `identities`.
    pub fn add(&mut self, row: IdentityRef<'_>) {
        let g = &mut self.graph;
        let kind = g.kind_index(row.kind);
        let i = g.intern(kind, row.value);
        let slot = match self.slots.get(row.profile_id) {
            Some(&slot) => slot,
            None => {
                let slot = g.profiles.len() as u32;
                let id = uuid::Uuid::parse_str(row.profile_id).unwrap_or_else(|_| {
                    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, row.profile_id.as_bytes())
                });
                g.profiles.push(Profile {
                    id,
                    created: (i64::MAX, "".into()),
                    counts: Vec::new(),
                    identifiers: 0,
                    merges: (self.merges)(row.profile_id),
                });
                g.parent.push(slot);
                self.slots.insert(row.profile_id.into(), slot);
                slot
            }
        };
        g.high_water = g.high_water.max(row.last_seen);
        let p = &mut g.profiles[slot as usize];
        // The profile's creating event is the first that linked any of its identifiers.
        let key = (row.first_seen, row.linked_by);
        if key < (p.created.0, &*p.created.1) {
            p.created = (row.first_seen, row.linked_by.into());
        }
        match p.counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => p.counts.push((kind, 1)),
        }
        p.identifiers += 1;
        let id = &mut g.idents[i as usize];
        id.slot = slot;
        id.first_seen = row.first_seen;
        id.last_seen = row.last_seen;
        id.linked_by = row.linked_by.into();
        id.restored = true;
    }

    /// The graph, with the identifiers that earlier events carried but no
    /// profile holds.
    pub fn finish(self, unlinked: impl IntoIterator<Item = Identifier>) -> IdentityGraph {
        let mut g = self.graph;
        for id in unlinked {
            let kind = g.kind_index(&id.kind);
            let i = g.intern(kind, &id.value);
            g.idents[i as usize].restored = true;
        }
        g
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

/// Bytes of a value held in an identifier's sort key.
const SORT_KEY_BYTES: usize = 14;

/// The sort key of an identifier: its type's rank in the top 16 bits, then
/// the first [`SORT_KEY_BYTES`] bytes of its value (zero-padded). Keys order
/// as (rank, value) do wherever they differ; equal keys need the values.
fn sort_key(rank: u16, value: &str) -> u128 {
    let mut bytes = [0u8; 16];
    bytes[..2].copy_from_slice(&rank.to_be_bytes());
    let head = &value.as_bytes()[..value.len().min(SORT_KEY_BYTES)];
    bytes[2..2 + head.len()].copy_from_slice(head);
    u128::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests;
