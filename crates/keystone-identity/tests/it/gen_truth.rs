use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

use keystone_core::event::{ParseOptions, parse_event_str};
use keystone_core::identifier::normalize_email;
use keystone_gen::{EVENTS_FILE, GenConfig, STORE_FILE, TRUTH_FILE, generate};
use keystone_identity::{Identifier, Observation, Rules, extract_identifiers, resolve_in_order};

/// Pairwise precision and recall of a predicted grouping against the truth,
/// over the identifiers the truth assigns to one person.
struct Score {
    precision: f64,
    recall: f64,
    scored: usize,
}

fn pairs(n: usize) -> u64 {
    (n as u64) * (n as u64).saturating_sub(1) / 2
}

fn score(truth: &HashMap<Identifier, String>, predicted: &HashMap<Identifier, String>) -> Score {
    let mut cells: HashMap<(&str, &str), usize> = HashMap::new();
    let mut per_person: HashMap<&str, usize> = HashMap::new();
    let mut per_profile: HashMap<&str, usize> = HashMap::new();
    let mut scored = 0;
    for (id, person) in truth {
        *per_person.entry(person).or_default() += 1;
        if let Some(profile) = predicted.get(id) {
            *per_profile.entry(profile).or_default() += 1;
            *cells.entry((person, profile)).or_default() += 1;
            scored += 1;
        }
    }
    let tp: u64 = cells.values().map(|&n| pairs(n)).sum();
    let predicted_pairs: u64 = per_profile.values().map(|&n| pairs(n)).sum();
    let true_pairs: u64 = per_person.values().map(|&n| pairs(n)).sum();
    Score {
        precision: if predicted_pairs == 0 {
            1.0
        } else {
            tp as f64 / predicted_pairs as f64
        },
        recall: if true_pairs == 0 {
            1.0
        } else {
            tp as f64 / true_pairs as f64
        },
        scored,
    }
}

fn observations(dir: &Path) -> Vec<Observation> {
    let mut out = Vec::new();
    let file = std::io::BufReader::new(std::fs::File::open(dir.join(EVENTS_FILE)).unwrap());
    let opts = ParseOptions::new("gen", 0, &|| unreachable!("gen always sends messageId"));
    for line in file.lines() {
        let row = parse_event_str(&line.unwrap(), &opts).unwrap();
        out.push(Observation {
            timestamp: row.timestamp,
            message_id: row.message_id.clone(),
            identifiers: extract_identifiers(&row, &fr_rules()),
        });
    }
    let mut store = csv::Reader::from_path(dir.join(STORE_FILE)).unwrap();
    for rec in store.records() {
        let rec = rec.unwrap();
        let ts = chrono_like_micros(&rec[1]);
        out.push(Observation {
            timestamp: ts,
            message_id: rec[0].to_string(),
            identifiers: vec![Identifier::new(
                "email",
                normalize_email(&rec[2]).unwrap_or_default(),
            )],
        });
    }
    out
}

fn chrono_like_micros(s: &str) -> i64 {
    keystone_core::event::parse_timestamp(s).unwrap()
}

#[test]
fn resolution_of_generated_people_meets_the_precision_and_recall_bar() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig::new(3_000);
    generate(&cfg, dir.path(), &mut |_| {}).unwrap();

    let mut truth = HashMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut reader = csv::Reader::from_path(dir.path().join(TRUTH_FILE)).unwrap();
    for rec in reader.records() {
        let rec = rec.unwrap();
        *kinds.entry(rec[3].to_string()).or_default() += 1;
        if &rec[3] == "person" {
            truth.insert(Identifier::new(&rec[0], &rec[1]), rec[2].to_string());
        }
    }
    assert!(
        kinds.get("shared_device").copied().unwrap_or(0) > 0,
        "{kinds:?}"
    );
    assert!(
        kinds.get("junk_email").copied().unwrap_or(0) > 0,
        "{kinds:?}"
    );

    let events = observations(dir.path());
    let ceiling = score(&truth, &evidence_components(&events, &truth));
    let (mut graph, _) = resolve_in_order(fr_rules(), events);
    let predicted: HashMap<Identifier, String> = graph.identifiers().into_iter().collect();
    let s = score(&truth, &predicted);
    let relative_recall = s.recall / ceiling.recall;
    println!(
        "3000 people: {} of {} person identifiers resolved into {} profiles; precision {:.5}, \
         recall {:.5} (the events themselves link {:.5} of the true pairs: recall of what is linkable {:.5})",
        s.scored,
        truth.len(),
        graph.profile_count(),
        s.precision,
        s.recall,
        ceiling.recall,
        relative_recall,
    );
    assert!(s.precision >= 0.999, "precision {:.5}", s.precision);
    assert!(
        relative_recall >= 0.99,
        "recall of linkable pairs {relative_recall:.5}"
    );
}

/// The best any resolver can do: identifiers joined whenever one event carries
/// both, leaving out the trap identifiers (shared devices, junk emails) that
/// the truth assigns to nobody. Pairs that no chain of events links (a second
/// phone that never logged in, say) are not recoverable from the data.
fn evidence_components(
    events: &[Observation],
    truth: &HashMap<Identifier, String>,
) -> HashMap<Identifier, String> {
    let mut parent: HashMap<Identifier, Identifier> = HashMap::new();
    fn find(parent: &mut HashMap<Identifier, Identifier>, x: &Identifier) -> Identifier {
        let mut root = x.clone();
        while let Some(p) = parent.get(&root).filter(|p| *p != &root) {
            root = p.clone();
        }
        parent.insert(x.clone(), root.clone());
        root
    }
    for e in events {
        let ids: Vec<&Identifier> = e
            .identifiers
            .iter()
            .filter(|i| truth.contains_key(*i))
            .collect();
        for id in &ids {
            parent.entry((*id).clone()).or_insert_with(|| (*id).clone());
        }
        for pair in ids.windows(2) {
            let (a, b) = (find(&mut parent, pair[0]), find(&mut parent, pair[1]));
            if a != b {
                parent.insert(a, b);
            }
        }
    }
    let keys: Vec<Identifier> = parent.keys().cloned().collect();
    keys.into_iter()
        .map(|k| {
            let root = find(&mut parent, &k);
            (k, root.to_string())
        })
        .collect()
}

fn fr_rules() -> Rules {
    Rules {
        default_region: Some("FR".into()),
        ..Rules::default()
    }
}
