//! End-to-end tests of [`generate`]: one small data set is generated once and
//! shared by most tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;

use super::*;

const PROFILES: u64 = 2_000;

struct Dataset {
    summary: GenSummary,
    events_text: String,
    events: Vec<Value>,
    store: Vec<csv::StringRecord>,
    store_header: Vec<String>,
    mapping: String,
    truth_text: String,
    /// (identifier_type, identifier) -> (person_id, kind)
    truth: BTreeMap<(String, String), (String, String)>,
    progress: Vec<u64>,
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn build(cfg: &GenConfig) -> Dataset {
    let dir = tempfile::tempdir().unwrap();
    let mut progress = Vec::new();
    let summary = generate(cfg, dir.path(), &mut |n| progress.push(n)).unwrap();
    let events_text = read(dir.path(), EVENTS_FILE);
    let events = events_text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    let mut rdr = csv::Reader::from_path(dir.path().join(STORE_FILE)).unwrap();
    let store_header = rdr.headers().unwrap().iter().map(String::from).collect();
    let store = rdr.records().map(Result::unwrap).collect();
    let truth_text = read(dir.path(), TRUTH_FILE);
    let mut truth = BTreeMap::new();
    let mut rdr = csv::Reader::from_reader(truth_text.as_bytes());
    assert_eq!(
        rdr.headers().unwrap(),
        vec!["identifier_type", "identifier", "person_id", "kind"]
    );
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let prev = truth.insert(
            (rec[0].to_string(), rec[1].to_string()),
            (rec[2].to_string(), rec[3].to_string()),
        );
        assert!(prev.is_none(), "duplicate truth row {rec:?}");
    }
    Dataset {
        summary,
        events_text,
        events,
        store,
        store_header,
        mapping: read(dir.path(), MAPPING_FILE),
        truth_text,
        truth,
        progress,
    }
}

fn data() -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| build(&GenConfig::new(PROFILES)))
}

fn norm_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// E.164 for the formats the generator types (national numbers are French).
fn norm_phone(raw: &str) -> String {
    let t = raw.trim();
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    if t.starts_with('+') {
        format!("+{digits}")
    } else {
        let rest = digits
            .strip_prefix('0')
            .expect("national number starts with 0");
        format!("+33{rest}")
    }
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Every (identifier_type, normalised identifier) an event mentions.
fn identifiers(e: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(u) = s(e, &["userId"]) {
        out.push(("user_id", u.to_string()));
    }
    for key in ["anonymousId", "previousId"] {
        if let Some(a) = s(e, &[key]) {
            out.push(("anonymous_id", a.to_string()));
        }
    }
    if let Some(d) = s(e, &["context", "device", "id"]) {
        out.push(("device_id", d.to_string()));
    }
    if s(e, &["type"]) == Some("identify") {
        if let Some(m) = s(e, &["traits", "email"]) {
            out.push(("email", norm_email(m)));
        }
        if let Some(p) = s(e, &["traits", "phone"]) {
            out.push(("phone", norm_phone(p)));
        }
    }
    if let Some(m) = s(e, &["context", "traits", "email"]) {
        out.push(("email", norm_email(m)));
    }
    out
}

fn raw_emails(d: &Dataset) -> Vec<String> {
    let mut out: Vec<String> = d
        .events
        .iter()
        .filter(|e| s(e, &["type"]) == Some("identify"))
        .flat_map(|e| {
            [
                s(e, &["traits", "email"]),
                s(e, &["context", "traits", "email"]),
            ]
        })
        .flatten()
        .map(String::from)
        .collect();
    out.extend(d.store.iter().map(|r| r[2].to_string()));
    out
}

#[test]
fn same_seed_gives_identical_files() {
    let cfg = GenConfig::new(300);
    let a = build(&cfg);
    let b = build(&cfg);
    assert_eq!(a.events_text, b.events_text);
    assert_eq!(a.truth_text, b.truth_text);
    assert_eq!(a.store, b.store);
    assert_eq!(a.summary.events, b.summary.events);
}

#[test]
fn different_seed_gives_different_events() {
    let a = build(&GenConfig::new(300));
    let b = build(&GenConfig {
        seed: 7,
        ..GenConfig::new(300)
    });
    assert_ne!(a.events_text, b.events_text);
    assert_ne!(a.truth_text, b.truth_text);
}

#[test]
fn prefix_of_people_does_not_depend_on_profile_count() {
    // Each person has its own random stream: the first people of a bigger
    // data set are the same people (modulo the shared-device draw).
    let a = build(&GenConfig::new(40));
    let b = build(&GenConfig::new(45));
    assert!(b.events_text.starts_with(&a.events_text));
}

#[test]
fn every_line_is_valid_segment_json() {
    let d = data();
    assert!(!d.events.is_empty());
    for e in &d.events {
        let ty = s(e, &["type"]).expect("type");
        let id = s(e, &["messageId"]).expect("messageId");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        let ts = s(e, &["timestamp"]).expect("timestamp");
        assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        if let Some(sent) = s(e, &["sentAt"]) {
            assert!(chrono::DateTime::parse_from_rfc3339(sent).is_ok());
        }
        assert!(
            s(e, &["userId"]).is_some() || s(e, &["anonymousId"]).is_some(),
            "{e}"
        );
        assert_eq!(e["integrations"], serde_json::json!({}));
        let ctx = &e["context"];
        assert!(s(ctx, &["library", "name"]).is_some());
        assert!(s(ctx, &["library", "version"]).is_some());
        assert!(s(ctx, &["ip"]).is_some());
        assert!(s(ctx, &["userAgent"]).is_some());
        assert!(s(ctx, &["locale"]).is_some());
        let is_app = ctx.get("device").is_some();
        if is_app {
            assert!(s(ctx, &["device", "id"]).is_some());
            assert!(s(ctx, &["device", "type"]).is_some());
            assert!(s(ctx, &["device", "manufacturer"]).is_some());
        } else {
            for k in ["url", "path", "referrer", "title"] {
                assert!(s(ctx, &["page", k]).is_some(), "context.page.{k} in {e}");
            }
        }
        match ty {
            "identify" => {
                assert!(e["traits"].is_object());
                let email = s(e, &["traits", "email"]).or(s(e, &["context", "traits", "email"]));
                assert!(email.is_some(), "identify without email: {e}");
                assert!(s(e, &["traits", "firstName"]).is_some());
                assert!(s(e, &["traits", "lastName"]).is_some());
                assert!(s(e, &["userId"]).is_some());
            }
            "track" => {
                assert!(s(e, &["event"]).is_some());
                assert!(e["properties"].is_object());
            }
            "page" => {
                assert!(s(e, &["name"]).is_some());
                for k in ["url", "path", "referrer", "title"] {
                    assert!(s(e, &["properties", k]).is_some(), "properties.{k}");
                }
                assert!(!is_app);
            }
            "screen" => {
                assert!(s(e, &["name"]).is_some());
                assert!(is_app);
            }
            "group" => {
                assert!(s(e, &["groupId"]).is_some());
                assert!(s(e, &["traits", "name"]).is_some());
                assert!(s(e, &["traits", "industry"]).is_some());
            }
            "alias" => {
                assert!(s(e, &["previousId"]).is_some());
                assert!(s(e, &["userId"]).is_some());
            }
            other => panic!("unexpected type {other}"),
        }
    }
}

#[test]
fn all_message_types_and_ecommerce_events_appear() {
    let d = data();
    let types: BTreeSet<&str> = d.events.iter().filter_map(|e| s(e, &["type"])).collect();
    for t in ["identify", "track", "page", "screen", "group", "alias"] {
        assert!(types.contains(t), "no {t}");
    }
    let events: BTreeSet<&str> = d.events.iter().filter_map(|e| s(e, &["event"])).collect();
    for ev in [
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
        "Products Searched",
        "Signed Up",
    ] {
        assert!(events.contains(ev), "no {ev}");
    }
    let campaigns = d
        .events
        .iter()
        .filter(|e| e["context"].get("campaign").is_some())
        .count();
    assert!(campaigns > 0);
    for e in d.events.iter().filter(|e| s(e, &["type"]) == Some("page")) {
        if let Some(source) = s(e, &["context", "campaign", "source"]) {
            let url = s(e, &["properties", "url"]).unwrap();
            assert!(url.contains(&format!("utm_source={source}")), "{url}");
        }
    }
    let no_sent_at = d
        .events
        .iter()
        .filter(|e| e.get("sentAt").is_none())
        .count();
    assert!(no_sent_at > 0 && no_sent_at < d.events.len());
}

#[test]
fn product_viewed_has_catalog_properties() {
    let d = data();
    let mut skus = BTreeSet::new();
    let mut categories = BTreeSet::new();
    for e in d
        .events
        .iter()
        .filter(|e| s(e, &["event"]) == Some("Product Viewed"))
    {
        let p = &e["properties"];
        for k in ["product_id", "sku", "category", "name"] {
            assert!(s(p, &[k]).is_some(), "{k}");
        }
        assert!(p["price"].as_f64().unwrap() > 0.0);
        skus.insert(s(p, &["sku"]).unwrap().to_string());
        categories.insert(s(p, &["category"]).unwrap().to_string());
    }
    assert_eq!(categories.len(), 10);
    assert!(skus.len() > 150 && skus.len() <= 200, "{}", skus.len());
}

#[test]
fn order_completed_revenue_is_positive_with_two_decimals() {
    let d = data();
    let orders: Vec<&Value> = d
        .events
        .iter()
        .filter(|e| s(e, &["event"]) == Some("Order Completed"))
        .collect();
    assert!(orders.len() > 50, "{}", orders.len());
    let mut eur = 0;
    for e in &orders {
        let p = &e["properties"];
        assert!(s(p, &["order_id"]).is_some());
        assert!(s(e, &["userId"]).is_some());
        let revenue = p["revenue"].as_f64().unwrap();
        assert!(revenue > 0.0);
        let text = p["revenue"].to_string();
        let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 2, "{text}");
        let products = p["products"].as_array().unwrap();
        assert!(!products.is_empty());
        let sum: f64 = products
            .iter()
            .map(|l| {
                for k in ["product_id", "sku", "category"] {
                    assert!(s(l, &[k]).is_some());
                }
                l["price"].as_f64().unwrap() * l["quantity"].as_f64().unwrap()
            })
            .sum();
        assert!((sum - revenue).abs() < 0.005, "{sum} vs {revenue}");
        if s(p, &["currency"]) == Some("EUR") {
            eur += 1;
        }
    }
    assert!(eur * 10 > orders.len() * 7, "EUR should dominate");
}

#[test]
fn some_carts_are_abandoned() {
    let d = data();
    let count = |name: &str| {
        d.events
            .iter()
            .filter(|e| s(e, &["event"]) == Some(name))
            .count()
    };
    let added = count("Product Added");
    let started = count("Checkout Started");
    let completed = count("Order Completed");
    assert!(added > started && started > completed && completed > 0);
}

#[test]
fn roughly_ten_events_per_profile() {
    let d = data();
    let per = d.summary.events as f64 / PROFILES as f64;
    assert!((8.0..=12.5).contains(&per), "{per} events per profile");
    assert_eq!(d.summary.events as usize, d.events.len());
    assert_eq!(d.summary.profiles, PROFILES);
}

#[test]
fn summary_matches_files_and_progress_is_reported() {
    let d = data();
    assert_eq!(d.summary.store_purchases as usize, d.store.len());
    assert_eq!(d.summary.truth_rows as usize, d.truth.len());
    assert_eq!(d.summary.files.len(), 4);
    assert!(d.summary.files[0].ends_with(EVENTS_FILE));
    assert!(d.progress.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(d.progress.last(), Some(&PROFILES));
    assert!(d.progress.contains(&1_000));
}

#[test]
fn timestamps_lie_within_the_span_with_recent_activity() {
    let d = data();
    let cfg = GenConfig::new(PROFILES);
    let first = cfg.end - chrono::Days::new(u64::from(cfg.days) - 1);
    let mut recent = 0;
    for e in &d.events {
        let ts = chrono::DateTime::parse_from_rfc3339(s(e, &["timestamp"]).unwrap()).unwrap();
        let day = ts.date_naive();
        assert!(day >= first && day <= cfg.end, "{ts}");
        if day >= cfg.end - chrono::Days::new(1) {
            recent += 1;
        }
    }
    assert!(recent > d.events.len() / 50, "{recent} recent events");
    for r in &d.store {
        let t = chrono::NaiveDateTime::parse_from_str(&r[1], "%Y-%m-%d %H:%M:%S").unwrap();
        assert!(t.date() >= first && t.date() <= cfg.end);
    }
}

#[test]
fn truth_covers_every_identifier_in_events() {
    let d = data();
    for e in &d.events {
        for (ty, id) in identifiers(e) {
            assert!(
                d.truth.contains_key(&(ty.to_string(), id.clone())),
                "{ty} {id:?} missing from truth"
            );
        }
    }
    for r in &d.store {
        let key = ("email".to_string(), norm_email(&r[2]));
        assert!(d.truth.contains_key(&key), "{key:?}");
    }
}

#[test]
fn every_truth_identifier_is_used() {
    let d = data();
    let mut used: BTreeSet<(String, String)> = d
        .events
        .iter()
        .flat_map(identifiers)
        .map(|(t, i)| (t.to_string(), i))
        .collect();
    used.extend(
        d.store
            .iter()
            .map(|r| ("email".to_string(), norm_email(&r[2]))),
    );
    for key in d.truth.keys() {
        assert!(used.contains(key), "{key:?} never used");
    }
}

#[test]
fn truth_is_sorted_normalised_and_well_formed() {
    let d = data();
    let keys: Vec<_> = d
        .truth_text
        .lines()
        .skip(1)
        .map(|l| {
            let mut it = l.split(',');
            (it.next().unwrap(), it.next().unwrap())
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "truth not sorted");
    let types: BTreeSet<&str> = keys.iter().map(|k| k.0).collect();
    assert_eq!(
        types,
        BTreeSet::from(["anonymous_id", "device_id", "email", "phone", "user_id"])
    );
    for ((ty, id), (person, kind)) in &d.truth {
        match kind.as_str() {
            "person" => assert!(person.starts_with("p_") && person.len() == 8, "{person}"),
            "shared_device" => {
                assert!(person.is_empty());
                assert!(ty == "anonymous_id" || ty == "device_id");
            }
            "junk_email" => {
                assert!(person.is_empty());
                assert_eq!(ty, "email");
            }
            other => panic!("kind {other}"),
        }
        match ty.as_str() {
            "email" => assert_eq!(id, &norm_email(id)),
            "phone" => {
                assert!(id.starts_with('+') && id[1..].bytes().all(|b| b.is_ascii_digit()));
            }
            "user_id" => assert_eq!(&id[2..], &person[2..]),
            _ => {}
        }
    }
}

#[test]
fn events_link_only_identifiers_of_one_person_except_traps() {
    let d = data();
    let person = |ty: &str, id: &str| -> Option<&str> {
        let (p, kind) = d.truth.get(&(ty.to_string(), id.to_string()))?;
        (kind == "person").then_some(p.as_str())
    };
    let mut linked = 0;
    for e in &d.events {
        let Some(u) = s(e, &["userId"]) else { continue };
        let owner = person("user_id", u).unwrap();
        for (ty, id) in identifiers(e) {
            if let Some(p) = person(ty, &id) {
                assert_eq!(p, owner, "{ty} {id} on event of {u}");
                linked += 1;
            }
        }
    }
    assert!(linked > 1000);
}

#[test]
fn logged_in_events_carry_user_id_and_anonymous_id() {
    let d = data();
    let both = d
        .events
        .iter()
        .filter(|e| s(e, &["userId"]).is_some() && s(e, &["anonymousId"]).is_some())
        .count();
    let anon_only = d
        .events
        .iter()
        .filter(|e| s(e, &["userId"]).is_none())
        .count();
    assert!(both > d.events.len() / 5, "{both}");
    assert!(anon_only > d.events.len() / 5, "{anon_only}");
}

#[test]
fn people_have_several_devices_and_some_never_log_in() {
    let d = data();
    let mut anon_per_person: BTreeMap<&str, usize> = BTreeMap::new();
    let mut with_user_id = BTreeSet::new();
    for ((ty, _), (p, kind)) in &d.truth {
        if kind != "person" {
            continue;
        }
        match ty.as_str() {
            "anonymous_id" => *anon_per_person.entry(p).or_default() += 1,
            "user_id" => {
                with_user_id.insert(p.as_str());
            }
            _ => {}
        }
    }
    assert!(anon_per_person.values().all(|&n| (1..=3).contains(&n)));
    let multi = anon_per_person.values().filter(|&&n| n > 1).count();
    assert!(multi > 200, "{multi} people with several devices");
    let never = anon_per_person
        .keys()
        .filter(|p| !with_user_id.contains(*p))
        .count();
    let share = never as f64 / PROFILES as f64;
    assert!((0.2..0.4).contains(&share), "{share} anonymous-only");
}

#[test]
fn emails_have_case_variants_but_truth_is_normalised() {
    let d = data();
    let raw = raw_emails(d);
    let variants: Vec<&String> = raw.iter().filter(|e| **e != norm_email(e)).collect();
    assert!(
        variants.len() > raw.len() / 20,
        "{} variants",
        variants.len()
    );
    assert!(
        variants
            .iter()
            .any(|e| e.starts_with(' ') || e.ends_with(' '))
    );
    assert!(variants.iter().any(|e| e.trim() != e.trim().to_lowercase()));
    for e in &raw {
        let key = ("email".to_string(), norm_email(e));
        assert!(d.truth.contains_key(&key), "{e:?}");
    }
    // The same person's email is seen in more than one spelling.
    let mut spellings: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for e in &raw {
        spellings.entry(norm_email(e)).or_default().insert(e);
    }
    assert!(spellings.values().filter(|v| v.len() > 1).count() > 50);
}

#[test]
fn some_identify_calls_put_email_in_context_traits() {
    let d = data();
    let identifies: Vec<&Value> = d
        .events
        .iter()
        .filter(|e| s(e, &["type"]) == Some("identify"))
        .collect();
    let in_context = identifies
        .iter()
        .filter(|e| s(e, &["context", "traits", "email"]).is_some())
        .count();
    assert!(
        in_context > 0 && in_context < identifies.len() / 4,
        "{in_context}"
    );
    for e in identifies {
        let top = s(e, &["traits", "email"]).is_some();
        let ctx = s(e, &["context", "traits", "email"]).is_some();
        assert!(top != ctx, "exactly one email location: {e}");
    }
}

#[test]
fn phones_appear_in_several_formats_and_normalise_to_truth() {
    let d = data();
    let phones: Vec<&str> = d
        .events
        .iter()
        .filter_map(|e| s(e, &["traits", "phone"]))
        .collect();
    assert!(phones.len() > 200);
    assert!(phones.iter().any(|p| p.starts_with("+33 ")));
    assert!(phones.iter().any(|p| p.starts_with("0") && p.contains(' ')));
    assert!(phones.iter().any(|p| !p.contains(' ')));
    for p in phones {
        assert!(
            d.truth.contains_key(&("phone".to_string(), norm_phone(p))),
            "{p}"
        );
    }
}

#[test]
fn app_events_carry_device_ids() {
    let d = data();
    let app = d
        .events
        .iter()
        .filter(|e| s(e, &["context", "device", "id"]).is_some())
        .count();
    assert!(
        app > d.events.len() / 10 && app < d.events.len() / 2,
        "{app}"
    );
}

#[test]
fn alias_previous_id_is_an_anonymous_id_of_the_same_person() {
    let d = data();
    let aliases: Vec<&Value> = d
        .events
        .iter()
        .filter(|e| s(e, &["type"]) == Some("alias"))
        .collect();
    assert!(!aliases.is_empty());
    for e in aliases {
        let prev = &d.truth[&(
            "anonymous_id".to_string(),
            s(e, &["previousId"]).unwrap().to_string(),
        )];
        let user = &d.truth[&(
            "user_id".to_string(),
            s(e, &["userId"]).unwrap().to_string(),
        )];
        assert_eq!(prev.0, user.0);
    }
}

#[test]
fn shared_devices_are_used_by_several_people() {
    let d = data();
    let shared: Vec<&(String, String)> = d
        .truth
        .iter()
        .filter(|(_, (_, kind))| kind == "shared_device")
        .map(|(k, _)| k)
        .collect();
    assert!(shared.len() >= 4, "{}", shared.len());
    for (ty, id) in shared {
        let users: BTreeSet<&str> = d
            .events
            .iter()
            .filter(|e| match ty.as_str() {
                "anonymous_id" => s(e, &["anonymousId"]) == Some(id.as_str()),
                _ => s(e, &["context", "device", "id"]) == Some(id.as_str()),
            })
            .filter_map(|e| s(e, &["userId"]))
            .collect();
        assert!(
            (2..=5).contains(&users.len()),
            "{ty} {id} used by {users:?}"
        );
    }
}

#[test]
fn junk_emails_are_entered_by_many_different_people() {
    let d = data();
    let junk: Vec<&String> = d
        .truth
        .iter()
        .filter(|(_, (_, kind))| kind == "junk_email")
        .map(|((_, id), _)| id)
        .collect();
    assert!(junk.len() >= 3, "{junk:?}");
    let mut busiest = 0;
    for j in junk {
        assert!(
            [
                "test@test.com",
                "noreply@example.com",
                "a@a.a",
                "none@none.com"
            ]
            .contains(&j.as_str())
        );
        let users: BTreeSet<&str> = d
            .events
            .iter()
            .filter(|e| {
                [
                    s(e, &["traits", "email"]),
                    s(e, &["context", "traits", "email"]),
                ]
                .into_iter()
                .flatten()
                .any(|m| norm_email(m) == *j)
            })
            .filter_map(|e| s(e, &["userId"]))
            .collect();
        let store_rows = d.store.iter().filter(|r| norm_email(&r[2]) == *j).count();
        assert!(users.len() + store_rows >= 2, "{j}");
        busiest = busiest.max(users.len());
    }
    assert!(busiest >= 3);
}

#[test]
fn store_csv_matches_mapping_header() {
    let d = data();
    assert_eq!(d.store_header, STORE_HEADER);
    assert_eq!(d.mapping, STORE_MAPPING);
    // Every column the mapping refers to exists in the CSV.
    for line in d
        .mapping
        .lines()
        .filter(|l| l.contains(" = ") && !l.starts_with('#'))
    {
        let (key, value) = line.split_once(" = ").unwrap();
        if ["type", "event", "timestamp_format"].contains(&key) {
            continue;
        }
        let column = value
            .split('"')
            .nth(1)
            .unwrap_or_else(|| panic!("no column in {line}"));
        assert!(STORE_HEADER.contains(&column), "{column}");
    }
    let mut receipts = BTreeSet::new();
    for r in &d.store {
        assert_eq!(r.len(), 8);
        assert!(
            receipts.insert(r[0].to_string()),
            "duplicate receipt {}",
            &r[0]
        );
        assert!(chrono::NaiveDateTime::parse_from_str(&r[1], "%Y-%m-%d %H:%M:%S").is_ok());
        let (whole, cents) = r[4].split_once('.').unwrap();
        assert!(whole.parse::<u64>().is_ok() && cents.len() == 2);
        assert!(r[4].parse::<f64>().unwrap() > 0.0);
        assert!(["EUR", "GBP"].contains(&&r[5]));
        assert!(r[7].starts_with("KS-"));
    }
}

#[test]
fn store_purchases_mix_online_and_offline_only_people() {
    let d = data();
    let online_emails: BTreeSet<String> = d
        .events
        .iter()
        .flat_map(identifiers)
        .filter(|(t, _)| *t == "email")
        .map(|(_, e)| e)
        .collect();
    let mut buyers: BTreeSet<String> = BTreeSet::new();
    let (mut known, mut offline) = (0, 0);
    for r in &d.store {
        let email = norm_email(&r[2]);
        let (person, kind) = &d.truth[&("email".to_string(), email.clone())];
        if kind != "person" {
            continue;
        }
        if buyers.insert(person.clone()) {
            if online_emails.contains(&email) {
                known += 1;
            } else {
                offline += 1;
            }
        }
    }
    let share = buyers.len() as f64 / PROFILES as f64;
    assert!(
        (0.03..0.08).contains(&share),
        "{share} of people buy in store"
    );
    assert!(
        known > offline && offline > 5,
        "{known} known, {offline} offline-only"
    );
    let eur = d.store.iter().filter(|r| &r[5] == "EUR").count();
    assert!(eur * 10 > d.store.len() * 7);
}

#[test]
fn invalid_config_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        GenConfig::new(0),
        GenConfig {
            days: 0,
            ..GenConfig::new(10)
        },
        GenConfig {
            end: NaiveDate::from_ymd_opt(1970, 1, 5).unwrap(),
            ..GenConfig::new(10)
        },
    ];
    for cfg in bad {
        let err = generate(&cfg, dir.path(), &mut |_| {}).unwrap_err();
        assert!(matches!(err, GenError::InvalidConfig(_)), "{err}");
    }
}

#[test]
fn unwritable_output_is_an_io_error_with_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let err = generate(&GenConfig::new(5), &file, &mut |_| {}).unwrap_err();
    match err {
        GenError::Io { path, .. } => assert_eq!(path, file),
        other => panic!("{other}"),
    }
}

#[test]
fn tiny_and_one_day_configs_work() {
    let one = build(&GenConfig::new(1));
    assert_eq!(one.summary.profiles, 1);
    assert_eq!(one.progress.last(), Some(&1));
    let short = build(&GenConfig {
        days: 1,
        ..GenConfig::new(60)
    });
    let end = GenConfig::new(1).end;
    for e in &short.events {
        let ts = chrono::DateTime::parse_from_rfc3339(s(e, &["timestamp"]).unwrap()).unwrap();
        assert_eq!(ts.date_naive(), end);
    }
}
