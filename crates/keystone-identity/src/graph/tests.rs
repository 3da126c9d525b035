use std::collections::BTreeMap;

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
            message_id: "m4".into(),
            at: 4,
            linked_by: ANONYMOUS_ID.into(),
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

/// Save a graph and restore it, as between two processes.
fn save_and_restore(graph: &mut IdentityGraph) -> IdentityGraph {
    let rows = graph.identities();
    let mut merges: BTreeMap<String, u32> = BTreeMap::new();
    for slot in 0..graph.parent.len() as u32 {
        if graph.find(slot) == slot {
            let p = &graph.profiles[slot as usize];
            merges.insert(p.id.to_string(), p.merges);
        }
    }
    let unlinked: Vec<Identifier> = (0..graph.idents.len() as u32)
        .filter(|&i| graph.idents[i as usize].slot == NO_PROFILE)
        .map(|i| graph.identifier(i))
        .collect();
    let mut restored = IdentityGraph::restore(
        Rules::default(),
        rows.clone(),
        |p| merges.get(p).copied().unwrap_or(0),
        unlinked,
    );
    assert_eq!(
        restored.identities(),
        rows,
        "restore gives back the saved rows"
    );
    // The binary snapshot stands for the same rows.
    let bytes = graph.snapshot();
    let mut loaded = IdentityGraph::from_snapshot(Rules::default(), &bytes).expect("snapshot");
    assert_eq!(
        state(&mut loaded),
        state(&mut restored),
        "snapshot = restore"
    );
    // Every second save goes through the snapshot, so runs mix both.
    if bytes.len().is_multiple_of(2) {
        loaded
    } else {
        restored
    }
}

/// What decides later runs: rows, flags, the high-water mark, and per live
/// profile its creating event, counts and merges (by profile id).
type State = (
    Vec<IdentityRow>,
    Vec<(String, String, bool)>,
    Option<i64>,
    Vec<(String, (i64, String), Vec<(String, u32)>, u32, u32)>,
);

fn state(g: &mut IdentityGraph) -> State {
    let rows = g.identities();
    let mut flags: Vec<(String, String, bool)> = g
        .idents
        .iter()
        .map(|i| {
            (
                g.kinds[i.kind as usize].name.clone(),
                i.value.to_string(),
                i.restored,
            )
        })
        .collect();
    flags.sort();
    let mut profiles = Vec::new();
    for slot in 0..g.parent.len() as u32 {
        if g.find(slot) == slot && g.profiles[slot as usize].identifiers > 0 {
            let p = &g.profiles[slot as usize];
            let mut counts: Vec<(String, u32)> = p
                .counts
                .iter()
                .map(|&(k, n)| (g.kinds[k as usize].name.clone(), n))
                .filter(|&(_, n)| n > 0)
                .collect();
            counts.sort();
            profiles.push((
                p.id.to_string(),
                (p.created.0, p.created.1.to_string()),
                counts,
                p.identifiers,
                p.merges,
            ));
        }
    }
    profiles.sort();
    (rows, flags, g.high_water(), profiles)
}

#[test]
fn damaged_snapshots_are_refused() {
    let mut g = IdentityGraph::new(Rules::default());
    g.observe(&obs(10, &[(USER_ID, "alice"), (ANONYMOUS_ID, "a1")]));
    let bytes = g.snapshot();
    for cut in [0, 3, 9, bytes.len() / 2, bytes.len() - 1] {
        let err = IdentityGraph::from_snapshot(Rules::default(), &bytes[..cut]).unwrap_err();
        assert!(err.contains("truncated"), "{cut}: {err}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let err = IdentityGraph::from_snapshot(Rules::default(), &longer).unwrap_err();
    assert!(err.contains("1 bytes after"), "{err}");
    // A count past what the bytes can hold is refused before any allocation.
    let at = 8 + g.kinds.iter().map(|k| 4 + k.name.len()).sum::<usize>();
    let mut huge = bytes.clone();
    huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = IdentityGraph::from_snapshot(Rules::default(), &huge).unwrap_err();
    assert!(err.contains("profiles cannot fit"), "{err}");
    let mut other = bytes;
    other[0] = 99;
    let err = IdentityGraph::from_snapshot(Rules::default(), &other).unwrap_err();
    assert!(err.contains("format 99"), "{err}");
}

/// Two saved identifiers of one type with the same value are refused,
/// whichever half of the snapshot each is loaded by.
#[test]
fn a_snapshot_holding_an_identifier_twice_is_refused() {
    let mut g = IdentityGraph::new(Rules::default());
    g.observe(&obs(10, &[(USER_ID, "alice"), (ANONYMOUS_ID, "ax")]));
    g.observe(&obs(11, &[(USER_ID, "alice"), (ANONYMOUS_ID, "ay")]));
    let mut bytes = g.snapshot();
    IdentityGraph::from_snapshot(Rules::default(), &bytes).expect("an intact snapshot loads");
    let saved = |v: &str| [&(v.len() as u32).to_le_bytes()[..], v.as_bytes()].concat();
    let (from, to) = (saved("ay"), saved("ax"));
    let at: Vec<usize> = (0..=bytes.len() - from.len())
        .filter(|&i| bytes[i..i + from.len()] == from[..])
        .collect();
    assert_eq!(at.len(), 1, "the value is saved once");
    bytes[at[0]..at[0] + to.len()].copy_from_slice(&to);
    let err = IdentityGraph::from_snapshot(Rules::default(), &bytes).unwrap_err();
    assert!(err.contains("\"ax\" is saved twice"), "{err}");
}

/// Resolve `batches` (in arrival order) one run each, the way `keystone
/// resolve` does: restore the saved graph, and rebuild from every event so
/// far when a new event rewrites history. Returns the graph and how many runs
/// had to rebuild.
fn resolve_in_runs(batches: &[Vec<Observation>]) -> (IdentityGraph, usize) {
    let mut graph = IdentityGraph::new(Rules::default());
    let mut seen: Vec<Observation> = Vec::new();
    let mut rebuilds = 0;
    for batch in batches {
        graph = save_and_restore(&mut graph);
        let rewrites = batch.iter().any(|o| {
            let ids: Vec<u32> = o
                .identifiers
                .iter()
                .map(|id| {
                    let k = graph.kind_index(&id.kind);
                    graph.intern(k, &id.value)
                })
                .collect();
            graph.rewrites_history(o.timestamp, &ids)
        });
        seen.extend(batch.iter().cloned());
        if rewrites {
            rebuilds += 1;
            graph = resolve_in_order(Rules::default(), seen.clone()).0;
        } else {
            let mut sorted = batch.clone();
            sorted.sort_by(|a, b| (a.timestamp, &a.message_id).cmp(&(b.timestamp, &b.message_id)));
            for o in &sorted {
                graph.observe(o);
            }
        }
    }
    (graph, rebuilds)
}

#[test]
fn grouping_does_not_depend_on_how_events_are_split_into_runs() {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let (mut rebuilt, mut incremental) = (0, 0);
    for seed in 0..40 {
        let events = random_events(seed);
        let (mut whole, _) = resolve_in_order(Rules::default(), events.clone());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 7);
        // Arrival order: in time order for even seeds (a stream), shuffled for odd ones (backfills).
        let mut arrival = events.clone();
        if seed % 2 == 0 {
            arrival.sort_by_key(|o| o.timestamp);
        } else {
            arrival.shuffle(&mut rng);
        }
        let mut cuts: Vec<usize> = (0..rng.random_range(1..8))
            .map(|_| rng.random_range(0..arrival.len()))
            .collect();
        cuts.push(arrival.len());
        cuts.sort_unstable();
        let mut batches = Vec::new();
        let mut start = 0;
        for end in cuts {
            batches.push(arrival[start..end].to_vec());
            start = end;
        }
        let (mut split, rebuilds) = resolve_in_runs(&batches);
        rebuilt += rebuilds;
        incremental += batches.len() - rebuilds;
        assert_eq!(whole.identities(), split.identities(), "seed {seed}");
    }
    assert!(
        rebuilt > 0 && incremental > 0,
        "{rebuilt} rebuilds, {incremental} incremental runs"
    );
}

#[test]
fn late_events_with_only_new_identifiers_stay_incremental() {
    let mut g = IdentityGraph::new(Rules::default());
    g.observe(&obs(10, &[(USER_ID, "alice"), (ANONYMOUS_ID, "a1")]));
    let mut g = save_and_restore(&mut g);
    let anon = g.kind_index(ANONYMOUS_ID);
    let (known, new) = (g.intern(anon, "a1"), g.intern(anon, "a9"));
    assert!(g.rewrites_history(5, &[known]));
    assert!(!g.rewrites_history(5, &[new]));
    assert!(!g.rewrites_history(11, &[known]));
}

#[test]
fn restored_identifiers_are_known_and_flagged() {
    let mut g = IdentityGraph::new(Rules::default());
    g.observe(&obs(1, &[(USER_ID, "alice"), (EMAIL, "a@x.org")]));
    let rows = g.identities();
    let mut r = IdentityGraph::restore(
        Rules::default(),
        rows,
        |_| 0,
        [Identifier::new(EMAIL, "cut@x.org")],
    );
    assert_eq!(r.high_water(), Some(1));
    let email = r.kind_index(EMAIL);
    let known = r.intern(email, "a@x.org");
    let cut = r.intern(email, "cut@x.org");
    let new = r.intern(email, "new@x.org");
    assert!(r.is_restored(known) && r.is_restored(cut) && !r.is_restored(new));
    // The restored profile keeps its id and absorbs later events.
    let p = r
        .observe(&obs(2, &[(EMAIL, "a@x.org"), (ANONYMOUS_ID, "c")]))
        .profile;
    assert_eq!(p, g.profile_of(&Identifier::new(USER_ID, "alice")));
}

/// Sort keys order identifiers as (type rank, value) do, on values built to
/// trip a prefix key: shared heads longer than the key, one value the
/// prefix of another, NUL bytes (which the key's padding also uses), and
/// multi-byte characters cut by the key's end.
#[test]
fn sort_keys_order_like_rank_then_value() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let pieces = [
        "",
        "\0",
        "a",
        "b",
        "é",
        "marie.dupont",
        "0123456789abcdef",
        "\u{1F600}",
    ];
    let mut values: Vec<(u16, String)> = (0..3000)
        .map(|_| {
            let parts = rng.random_range(0..5);
            let value: String = (0..parts)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            (rng.random_range(0..3), value)
        })
        .collect();
    let mut expected = values.clone();
    expected.sort();
    values.sort_by(|(ra, a), (rb, b)| {
        sort_key(*ra, a)
            .cmp(&sort_key(*rb, b))
            .then_with(|| a.cmp(b))
    });
    assert_eq!(values, expected);
    // Distinct keys alone decide: a key order never contradicts the values'.
    for pair in expected.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            sort_key(a.0, &a.1) <= sort_key(b.0, &b.1),
            "{a:?} then {b:?}"
        );
    }
}
