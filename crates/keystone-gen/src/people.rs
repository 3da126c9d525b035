//! Per-person behaviour: profiles, devices, sessions, the Segment messages
//! they produce, store purchases and the identifiers for the ground truth.
//!
//! Each person has its own ChaCha8 stream (`set_stream(index + 1)` on a key
//! derived from the seed), so a person's data depends only on the seed and
//! its index: chunks can be generated on several threads and written in
//! order with byte-identical results.

use std::collections::BTreeMap;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalog::{CATEGORY_COUNT, Catalog, PER_CATEGORY, Product};
use crate::message::{
    Address, AppInfo, Campaign, Context, ContextTraits, DeviceInfo, GroupTraits, Integrations,
    Library, LineItem, Message, MethodProps, OrderProps, OsInfo, PageInfo, PersonTraits,
    ProductProps, Props, SearchProps, Traits, compact_date, money, money_str, rfc3339_ms,
    sql_datetime,
};
use crate::names::{
    ANDROID_MODELS, CAMPAIGNS, COMPANY_STEMS, COMPANY_SUFFIXES, Country, EUR_STORES, GBP_STORES,
    INDUSTRIES, IOS_MODELS, IP_FIRST_OCTETS, REFERRERS, TABLET_MODELS, WEB_USER_AGENTS, plan,
};
use crate::truth::{Owner, Truth, padded};

/// Junk emails typed by many unrelated people (or store cashiers).
pub(crate) const JUNK_EMAILS: [&str; 4] = [
    "test@test.com",
    "noreply@example.com",
    "a@a.a",
    "none@none.com",
];

// ---- proportions -------------------------------------------------------

/// Share of people who only ever buy in store (known by email only).
const P_OFFLINE_ONLY: f64 = 0.01;
/// Share of people who browse anonymously and never log in (cumulative with the above).
const P_ANONYMOUS_CUM: f64 = 0.30;
/// Registered people who also buy in store (≈ 4 % of all people).
const P_REGISTERED_STORE: f64 = 0.058;
/// Registered people who give a junk email instead of theirs.
const P_JUNK_EMAIL: f64 = 0.015;
/// Registered people with a phone trait.
const P_PHONE: f64 = 0.45;
/// Web devices using the RudderStack SDK (identify email in `context.traits`).
const P_RUDDER_WEB: f64 = 0.15;
/// First logins preceded by an `alias` call.
const P_ALIAS: f64 = 0.04;
/// People who belong to a B2B account (`group` call after first login).
const P_GROUP: f64 = 0.05;
/// People with a session in the last two days.
const P_RECENT: f64 = 0.2;
/// Store rows carrying a junk email typed by the cashier.
const P_STORE_JUNK: f64 = 0.08;
/// One shared device per this many profiles.
const PROFILES_PER_SHARED_DEVICE: u64 = 400;

const SITE: &str = "https://shop.keystone.example";
const SITE_NAME: &str = "Keystone Shop";
const MS_PER_DAY: i64 = 86_400_000;

/// Relative traffic per hour of day (UTC).
const HOUR_WEIGHTS: [u32; 24] = [
    2, 1, 1, 1, 1, 1, 2, 4, 6, 7, 8, 9, 10, 9, 8, 8, 9, 10, 12, 14, 15, 13, 8, 4,
];

/// One offline purchase row.
#[derive(Debug, Clone)]
pub(crate) struct StoreRow {
    pub receipt_id: String,
    pub purchased_at: String,
    pub email: String,
    pub store_id: &'static str,
    pub amount: String,
    pub currency: &'static str,
    pub category: &'static str,
    pub sku: String,
}

/// Everything a chunk of people produced.
#[derive(Debug, Default)]
pub(crate) struct ChunkOut {
    pub events: Vec<u8>,
    pub event_count: u64,
    pub store: Vec<StoreRow>,
    pub truth: Truth,
    pub junk_used: [bool; JUNK_EMAILS.len()],
}

/// A kiosk / family tablet used by several logged-in people.
#[derive(Debug)]
pub(crate) struct SharedDevice {
    pub anonymous_id: uuid::Uuid,
    pub device_id: String,
    model: usize,
    ip: String,
}

/// Seed-derived state shared by all people.
#[derive(Debug)]
pub(crate) struct World {
    key: [u8; 32],
    start_ms: i64,
    end_ms: i64,
    days: u32,
    pub width: usize,
    catalog: Catalog,
    pub shared: Vec<SharedDevice>,
    shared_users: BTreeMap<u64, Vec<usize>>,
    groups: u64,
}

impl World {
    /// `start_ms` is midnight UTC of the first day, `end_ms` midnight after the last one.
    pub(crate) fn new(profiles: u64, seed: u64, start_ms: i64, end_ms: i64, days: u32) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let key: [u8; 32] = rng.random();
        let digits = profiles.saturating_sub(1).max(1).ilog10() as usize + 1;
        let width = digits.max(6);

        let n_shared = if profiles >= 50 {
            (profiles / PROFILES_PER_SHARED_DEVICE).clamp(1, 5000)
        } else {
            0
        };
        let mut shared = Vec::new();
        let mut shared_users: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for s in 0..n_shared as usize {
            let anonymous_id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
            let device_id = format!("{:016x}", rng.random::<u64>());
            let model = rng.random_range(0..TABLET_MODELS.len());
            let ip = random_ip(&mut rng);
            shared.push(SharedDevice {
                anonymous_id,
                device_id,
                model,
                ip,
            });
            let users = rng.random_range(2..=5usize);
            let mut chosen: Vec<u64> = Vec::with_capacity(users);
            while chosen.len() < users {
                let p = rng.random_range(0..profiles);
                if !chosen.contains(&p) {
                    chosen.push(p);
                }
            }
            for p in chosen {
                shared_users.entry(p).or_default().push(s);
            }
        }
        World {
            key,
            start_ms,
            end_ms,
            days,
            width,
            catalog: Catalog::new(),
            shared,
            shared_users,
            groups: (profiles / 200).max(1),
        }
    }

    fn person_rng(&self, idx: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.key);
        rng.set_stream(idx.wrapping_add(1));
        rng
    }
}

fn random_ip(rng: &mut ChaCha8Rng) -> String {
    let first = IP_FIRST_OCTETS.choose(rng).copied().unwrap_or(82);
    format!(
        "{first}.{}.{}.{}",
        rng.random_range(0..=255u8),
        rng.random_range(0..=255u8),
        rng.random_range(1..=254u8)
    )
}

/// Picks an index from relative weights.
fn weighted(rng: &mut ChaCha8Rng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut roll = rng.random_range(0..total.max(1));
    for (i, &w) in weights.iter().enumerate() {
        if roll < w {
            return i;
        }
        roll -= w;
    }
    weights.len().saturating_sub(1)
}

// ---- people ------------------------------------------------------------

/// A phone number: national significant number plus country.
#[derive(Debug)]
struct Phone {
    country: Country,
    nsn: String,
    e164: String,
}

impl Phone {
    /// Unique per person: the last 8 digits are a bijection of the index
    /// (mod 10^8), so no two people share a number for < 10^8 profiles.
    fn new(rng: &mut ChaCha8Rng, country: Country, idx: u64) -> Self {
        let n = (idx % 100_000_000)
            .wrapping_mul(73_939_133)
            .wrapping_add(12_345_678)
            % 100_000_000;
        let (cc, nsn) = match country {
            Country::Fr => (
                "33",
                format!("{}{n:08}", [6, 7][rng.random_range(0..2usize)]),
            ),
            Country::Gb => (
                "44",
                format!("7{}{n:08}", [4, 5, 7, 8, 9][rng.random_range(0..5usize)]),
            ),
            Country::De => (
                "49",
                format!("15{}{n:08}", [1, 2, 7, 9][rng.random_range(0..4usize)]),
            ),
            Country::Us => {
                let areas = [
                    "212", "310", "415", "617", "646", "702", "305", "312", "206", "512",
                ];
                (
                    "1",
                    format!("{}{:07}", areas[(n / 10_000_000) as usize], n % 10_000_000),
                )
            }
        };
        let e164 = format!("+{cc}{nsn}");
        Phone { country, nsn, e164 }
    }

    /// How the person typed it this time.
    fn render(&self, rng: &mut ChaCha8Rng) -> String {
        let s = self.nsn.as_str();
        let roll = rng.random_range(0..100u32);
        match self.country {
            Country::Fr => {
                let pairs = format!("{} {} {} {}", &s[1..3], &s[3..5], &s[5..7], &s[7..9]);
                match roll {
                    0..30 => format!("+33 {} {pairs}", &s[..1]),
                    30..55 => format!("0{} {pairs}", &s[..1]),
                    55..65 => format!("0{s}"),
                    65..90 => self.e164.clone(),
                    _ => format!("0{}.{}", &s[..1], pairs.replace(' ', ".")),
                }
            }
            Country::Gb => match roll {
                0..50 => format!("+44 {} {}", &s[..4], &s[4..]),
                _ => self.e164.clone(),
            },
            Country::De => match roll {
                0..50 => format!("+49 {} {}", &s[..3], &s[3..]),
                _ => self.e164.clone(),
            },
            Country::Us => match roll {
                0..40 => format!("+1 ({}) {}-{}", &s[..3], &s[3..6], &s[6..]),
                40..70 => format!("+1 {}-{}-{}", &s[..3], &s[3..6], &s[6..]),
                _ => self.e164.clone(),
            },
        }
    }
}

#[derive(Debug)]
struct Profile {
    idx: u64,
    country: Country,
    first: &'static str,
    last: &'static str,
    /// Canonical (trimmed, lower-case) email.
    email: String,
    phone: Option<Phone>,
    plan: &'static str,
    city: &'static str,
    user_id: String,
    junk: Option<usize>,
    favourites: [usize; 2],
    /// Account creation, this long before the first session.
    created_before_ms: i64,
}

impl Profile {
    fn new(rng: &mut ChaCha8Rng, idx: u64, width: usize) -> Self {
        let country = Country::pick(rng.random());
        let first = country.first_names().choose(rng).copied().unwrap_or("Alex");
        let last = country
            .last_names()
            .choose(rng)
            .copied()
            .unwrap_or("Martin");
        let f = first.to_ascii_lowercase();
        let l = last.to_ascii_lowercase();
        // The trailing digits are the person index and names hold no digit,
        // so every person's email is unique.
        let local = match rng.random_range(0..5u32) {
            0 => format!("{f}.{l}{idx}"),
            1 => format!("{}{l}{idx}", &f[..1]),
            2 => format!("{f}_{l}{idx}"),
            3 => format!("{f}{idx}"),
            _ => format!("{l}.{f}{idx}"),
        };
        let domain = country
            .domains()
            .choose(rng)
            .copied()
            .unwrap_or("gmail.com");
        let phone = rng
            .random_bool(P_PHONE)
            .then(|| Phone::new(rng, country, idx));
        let junk = rng
            .random_bool(P_JUNK_EMAIL)
            .then(|| rng.random_range(0..JUNK_EMAILS.len()));
        let fav0 = rng.random_range(0..CATEGORY_COUNT);
        let fav1 = rng.random_range(0..CATEGORY_COUNT);
        Profile {
            idx,
            country,
            first,
            last,
            email: format!("{local}@{domain}"),
            phone,
            plan: plan(rng.random()),
            city: country.cities().choose(rng).copied().unwrap_or("Paris"),
            user_id: format!("u_{idx:0width$}"),
            junk,
            favourites: [fav0, fav1],
            created_before_ms: rng.random_range(0..400 * MS_PER_DAY),
        }
    }
}

/// `Jane.Doe12@Gmail.Com`-style capitalisation.
fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut up = true;
    for c in s.chars() {
        if up && c.is_ascii_alphabetic() {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
            up = matches!(c, '.' | '_' | '-' | '@');
        }
    }
    out
}

/// The email as typed this time: mostly canonical, sometimes with case or
/// surrounding-whitespace variations.
fn email_variant(rng: &mut ChaCha8Rng, canonical: &str, p_variant: f64) -> String {
    if !rng.random_bool(p_variant) {
        return canonical.to_string();
    }
    match rng.random_range(0..6u32) {
        0 => title_case(canonical),
        1 => canonical.to_ascii_uppercase(),
        2 => format!(" {canonical} "),
        3 => format!("{canonical} "),
        4 => format!(" {} ", title_case(canonical)),
        _ => {
            let mut s = canonical.to_string();
            if let Some(c) = s.get_mut(..1) {
                c.make_ascii_uppercase();
            }
            s
        }
    }
}

// ---- devices -----------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Web,
    Ios,
    Android,
}

#[derive(Debug)]
struct Device {
    platform: Platform,
    anonymous_id: uuid::Uuid,
    anon: String,
    device_id: Option<String>,
    ip: String,
    user_agent: String,
    library: Library,
    manufacturer: &'static str,
    model: &'static str,
    os_version: &'static str,
    /// RudderStack SDK: identify puts the email in `context.traits`.
    rudder: bool,
    logged_in: bool,
}

const APP: AppInfo = AppInfo {
    name: "Keystone",
    version: "5.4.0",
    build: "540",
    namespace: "com.keystone.shop",
};

impl Device {
    fn new(rng: &mut ChaCha8Rng, platform: Platform) -> Self {
        let anonymous_id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
        let ip = random_ip(rng);
        match platform {
            Platform::Web => {
                let rudder = rng.random_bool(P_RUDDER_WEB);
                let library = if rudder {
                    Library {
                        name: "RudderLabs JavaScript SDK",
                        version: "3.11.2",
                    }
                } else {
                    Library {
                        name: "analytics.js",
                        version: "next-1.72.0",
                    }
                };
                Device {
                    platform,
                    anonymous_id,
                    anon: anonymous_id.to_string(),
                    device_id: None,
                    ip,
                    user_agent: WEB_USER_AGENTS
                        .choose(rng)
                        .copied()
                        .unwrap_or_default()
                        .to_string(),
                    library,
                    manufacturer: "",
                    model: "",
                    os_version: "",
                    rudder,
                    logged_in: false,
                }
            }
            Platform::Ios => {
                let (model, os) = IOS_MODELS
                    .choose(rng)
                    .copied()
                    .unwrap_or(("iPhone16,2", "18.1.0"));
                // IDFV: upper-case UUID.
                let idfv = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
                let device_id = idfv.hyphenated().to_string().to_ascii_uppercase();
                Device {
                    platform,
                    anonymous_id,
                    anon: anonymous_id.to_string(),
                    device_id: Some(device_id),
                    ip,
                    user_agent: format!(
                        "Keystone/{} (com.keystone.shop; build:{}; iOS {os}) Alamofire/5.9.1",
                        APP.version, APP.build
                    ),
                    library: Library {
                        name: "analytics-ios",
                        version: "4.1.8",
                    },
                    manufacturer: "Apple",
                    model,
                    os_version: os,
                    rudder: false,
                    logged_in: false,
                }
            }
            Platform::Android => {
                let (manufacturer, model, os, build) = ANDROID_MODELS
                    .choose(rng)
                    .copied()
                    .unwrap_or(ANDROID_MODELS[0]);
                Self::android(
                    anonymous_id,
                    format!("{:016x}", rng.random::<u64>()),
                    ip,
                    (manufacturer, model, os, build),
                )
            }
        }
    }

    fn android(
        anonymous_id: uuid::Uuid,
        device_id: String,
        ip: String,
        (manufacturer, model, os, build): (&'static str, &'static str, &'static str, &'static str),
    ) -> Self {
        Device {
            platform: Platform::Android,
            anonymous_id,
            anon: anonymous_id.to_string(),
            device_id: Some(device_id),
            ip,
            user_agent: format!("Dalvik/2.1.0 (Linux; U; Android {os}; {model} Build/{build})"),
            library: Library {
                name: "analytics-android",
                version: "4.11.3",
            },
            manufacturer,
            model,
            os_version: os,
            rudder: false,
            logged_in: false,
        }
    }

    fn shared(s: &SharedDevice) -> Self {
        let model = TABLET_MODELS
            .get(s.model)
            .copied()
            .unwrap_or(TABLET_MODELS[0]);
        Self::android(s.anonymous_id, s.device_id.clone(), s.ip.clone(), model)
    }

    fn is_app(&self) -> bool {
        self.platform != Platform::Web
    }
}

// ---- emission ----------------------------------------------------------

/// Current page (web) or screen (app) within a session.
#[derive(Debug, Default)]
struct Nav {
    url: String,
    path: String,
    title: String,
    referrer: String,
    campaign: Option<Campaign>,
}

impl Nav {
    fn page(&self) -> PageInfo<'_> {
        PageInfo {
            url: &self.url,
            path: &self.path,
            referrer: &self.referrer,
            title: &self.title,
        }
    }
}

enum Body<'a> {
    Identify {
        traits: PersonTraits<'a>,
        context_email: Option<&'a str>,
    },
    Track {
        event: &'static str,
        props: Props<'a>,
    },
    Page {
        name: &'static str,
    },
    Screen {
        name: &'static str,
    },
    Group {
        group_id: &'a str,
        traits: GroupTraits<'a>,
    },
    Alias {
        previous_id: &'a str,
    },
}

struct Emitter<'w, 'o> {
    w: &'w World,
    rng: ChaCha8Rng,
    out: &'o mut ChunkOut,
    locale: &'static str,
    timezone: &'static str,
}

impl Emitter<'_, '_> {
    fn send(&mut self, dev: &Device, user_id: Option<&str>, t: i64, nav: &Nav, body: Body<'_>) {
        let mut id_buf = [0u8; 36];
        let message_id = uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .hyphenated()
            .encode_lower(&mut id_buf);
        let message_id: &str = message_id;
        let mut ts_buf = [0u8; 24];
        let timestamp = rfc3339_ms(t, &mut ts_buf);
        let mut sent_buf = [0u8; 24];
        let sent_at = if self.rng.random_bool(0.8) {
            let delay = if dev.is_app() {
                self.rng.random_range(50..30_000)
            } else {
                self.rng.random_range(3..400)
            };
            Some(rfc3339_ms(t + delay, &mut sent_buf))
        } else {
            None
        };

        let (device, os, app) = if dev.is_app() {
            let (kind, os_name) = if dev.platform == Platform::Ios {
                ("ios", "iOS")
            } else {
                ("android", "Android")
            };
            (
                dev.device_id.as_deref().map(|id| DeviceInfo {
                    id,
                    kind,
                    manufacturer: dev.manufacturer,
                    model: dev.model,
                }),
                Some(OsInfo {
                    name: os_name,
                    version: dev.os_version,
                }),
                Some(APP),
            )
        } else {
            (None, None, None)
        };
        let web = !dev.is_app();
        let context = Context {
            library: dev.library,
            app,
            device,
            os,
            ip: &dev.ip,
            user_agent: &dev.user_agent,
            locale: self.locale,
            timezone: self.timezone,
            page: web.then(|| nav.page()),
            campaign: if web { nav.campaign } else { None },
            traits: None,
        };
        let mut msg = Message {
            kind: "track",
            message_id,
            timestamp,
            sent_at,
            anonymous_id: Some(&dev.anon),
            user_id,
            previous_id: None,
            group_id: None,
            event: None,
            name: None,
            traits: None,
            properties: None,
            context,
            integrations: Integrations {},
        };
        match body {
            Body::Identify {
                traits,
                context_email,
            } => {
                msg.kind = "identify";
                msg.traits = Some(Traits::Person(traits));
                msg.context.traits = context_email.map(|email| ContextTraits { email });
            }
            Body::Track { event, props } => {
                msg.event = Some(event);
                msg.properties = Some(props);
            }
            Body::Page { name } => {
                msg.kind = "page";
                msg.name = Some(name);
                msg.properties = Some(Props::Page(nav.page()));
            }
            Body::Screen { name } => {
                msg.kind = "screen";
                msg.name = Some(name);
            }
            Body::Group { group_id, traits } => {
                msg.kind = "group";
                msg.group_id = Some(group_id);
                msg.traits = Some(Traits::Group(traits));
            }
            Body::Alias { previous_id } => {
                msg.kind = "alias";
                msg.previous_id = Some(previous_id);
            }
        }
        let len = self.out.events.len();
        if serde_json::to_writer(&mut self.out.events, &msg).is_ok() {
            self.out.events.push(b'\n');
            self.out.event_count += 1;
        } else {
            self.out.events.truncate(len);
        }
    }

    /// A session start time: uniform day, realistic hour of day.
    fn session_time(&mut self, recent: bool) -> i64 {
        let w = self.w;
        let span_days = i64::from(w.days);
        let day = if recent {
            span_days - 1 - self.rng.random_range(0..span_days.min(2))
        } else {
            self.rng.random_range(0..span_days)
        };
        let hour = weighted(&mut self.rng, &HOUR_WEIGHTS) as i64;
        let within = self.rng.random_range(0..3_600_000i64);
        (w.start_ms + day * MS_PER_DAY + hour * 3_600_000 + within).min(w.end_ms - 1)
    }

    /// Advances the clock by a human pause, never past the end of the data.
    fn tick(&mut self, t: &mut i64, min_ms: i64, max_ms: i64) {
        *t = (*t + self.rng.random_range(min_ms..max_ms)).min(self.w.end_ms - 1);
    }
}

fn user_id<'a>(p: &'a Profile, dev: &Device) -> Option<&'a str> {
    dev.logged_in.then_some(p.user_id.as_str())
}

#[derive(Debug, Clone, Copy)]
enum PageKind {
    Home,
    Category(usize),
    Product(usize),
    Search(usize, usize),
    Cart,
    Checkout,
    Login,
}

struct Session {
    t: i64,
    nav: Nav,
}

struct PersonGen<'w, 'o> {
    em: Emitter<'w, 'o>,
    p: Profile,
    email_used: bool,
    phone_used: bool,
    signed_up: bool,
    created_at: String,
}

/// Generates one person (events, store rows, truth identifiers) into `out`.
pub(crate) fn generate_person(w: &World, idx: u64, out: &mut ChunkOut) {
    let mut rng = w.person_rng(idx);
    let shared = w.shared_users.get(&idx);
    let roll: f64 = rng.random();
    let p = Profile::new(&mut rng, idx, w.width);
    let mut g = PersonGen {
        em: Emitter {
            w,
            rng,
            out,
            locale: p.country.locale(),
            timezone: p.country.timezone(),
        },
        p,
        email_used: false,
        phone_used: false,
        signed_up: false,
        created_at: String::new(),
    };
    if shared.is_some() || roll >= P_ANONYMOUS_CUM {
        g.registered(shared.map(Vec::as_slice).unwrap_or_default());
    } else if roll < P_OFFLINE_ONLY {
        g.offline_only();
    } else {
        g.anonymous();
    }
    g.finish_truth();
}

impl PersonGen<'_, '_> {
    fn person_idx(&self) -> u32 {
        u32::try_from(self.p.idx).unwrap_or(u32::MAX)
    }

    fn new_devices(&mut self, count_weights: &[u32], platform_weights: &[u32]) -> Vec<Device> {
        let n = weighted(&mut self.em.rng, count_weights) + 1;
        (0..n)
            .map(|_| {
                let platform = match weighted(&mut self.em.rng, platform_weights) {
                    0 => Platform::Web,
                    1 => Platform::Ios,
                    _ => Platform::Android,
                };
                Device::new(&mut self.em.rng, platform)
            })
            .collect()
    }

    /// Session start times (sorted) and the device used for each; every
    /// device gets at least one session.
    fn plan_sessions(&mut self, n_dev: usize, extra_weights: &[u32]) -> Vec<(i64, usize)> {
        let extra = weighted(&mut self.em.rng, extra_weights);
        let n = n_dev + extra;
        let mut times: Vec<i64> = (0..n).map(|_| self.em.session_time(false)).collect();
        if self.em.w.days >= 2 && self.em.rng.random_bool(P_RECENT) {
            times[0] = self.em.session_time(true);
        }
        times.sort_unstable();
        let mut order: Vec<usize> = (0..n_dev)
            .chain((0..extra).map(|_| self.em.rng.random_range(0..n_dev)))
            .collect();
        order.shuffle(&mut self.em.rng);
        times.into_iter().zip(order).collect()
    }

    fn registered(&mut self, shared: &[usize]) {
        let mut devices = self.new_devices(&[60, 30, 10], &[62, 20, 18]);
        let plan = self.plan_sessions(devices.len(), &[72, 21, 7]);
        let first_t = plan.first().map_or(self.em.w.start_ms, |s| s.0);
        let mut ts = [0u8; 24];
        self.created_at = rfc3339_ms(first_t - self.p.created_before_ms, &mut ts).to_string();
        let mut seen = vec![false; devices.len()];
        for (i, &(t, d)) in plan.iter().enumerate() {
            let first_on_device = !std::mem::replace(&mut seen[d], true);
            let login = i == 0
                || (first_on_device && self.em.rng.random_bool(0.8))
                || (!first_on_device && self.em.rng.random_bool(0.5));
            self.session(&mut devices[d], t, login, true);
        }
        let w = self.em.w;
        for &s in shared {
            let Some(sd) = w.shared.get(s) else { continue };
            let mut dev = Device::shared(sd);
            for _ in 0..self.em.rng.random_range(1..=2u32) {
                let t = self.em.session_time(false);
                self.session(&mut dev, t, true, true);
            }
        }
        if self.p.junk.is_none() && self.em.rng.random_bool(P_REGISTERED_STORE) {
            for k in 0..self.em.rng.random_range(1..=3u64) {
                self.store_purchase(k, true);
            }
        }
        let me = Owner::Person(self.person_idx());
        self.em.out.truth.user_ids.push(self.person_idx());
        self.device_truth(&devices, me);
    }

    fn anonymous(&mut self) {
        let mut devices = self.new_devices(&[85, 15], &[88, 6, 6]);
        let plan = self.plan_sessions(devices.len(), &[75, 18, 7]);
        for &(t, d) in &plan {
            self.session(&mut devices[d], t, false, false);
        }
        self.device_truth(&devices, Owner::Person(self.person_idx()));
    }

    fn offline_only(&mut self) {
        for k in 0..self.em.rng.random_range(1..=3u64) {
            self.store_purchase(k, false);
        }
    }

    fn device_truth(&mut self, devices: &[Device], me: Owner) {
        let truth = &mut self.em.out.truth;
        for d in devices {
            truth.anonymous_ids.push((d.anonymous_id.as_u128(), me));
            if let Some(id) = &d.device_id {
                truth.device_ids.push((padded(id), me));
            }
        }
    }

    fn finish_truth(&mut self) {
        let me = Owner::Person(self.person_idx());
        if self.email_used {
            let email = self.p.email.clone().into_boxed_str();
            self.em.out.truth.emails.push((email, me));
        }
        if self.phone_used
            && let Some(phone) = &self.p.phone
        {
            self.em.out.truth.phones.push((padded(&phone.e164), me));
        }
    }

    // ---- sessions ------------------------------------------------------

    fn visit(&mut self, dev: &Device, ses: &mut Session, kind: PageKind) {
        let catalog = &self.em.w.catalog;
        let (path, query, title, page_name, screen_name) = match kind {
            PageKind::Home => (
                "/".to_string(),
                String::new(),
                format!("{SITE_NAME} – Online store"),
                "Home",
                "Home",
            ),
            PageKind::Category(c) => (
                format!("/c/{}", Catalog::category_slug(c)),
                String::new(),
                format!("{} | {SITE_NAME}", Catalog::category_name(c)),
                "Category",
                "Category",
            ),
            PageKind::Product(i) => {
                let prod = &catalog.products[i];
                (
                    format!("/p/{}", prod.slug),
                    String::new(),
                    format!("{} | {SITE_NAME}", prod.name),
                    "Product",
                    "Product Detail",
                )
            }
            PageKind::Search(c, n) => {
                let q = Catalog::category_nouns(c)[n % 5].to_ascii_lowercase();
                (
                    "/search".to_string(),
                    format!("?q={}", q.replace(' ', "+")),
                    format!("Search results for \"{q}\" | {SITE_NAME}"),
                    "Search",
                    "Search Results",
                )
            }
            PageKind::Cart => (
                "/cart".to_string(),
                String::new(),
                format!("Your cart | {SITE_NAME}"),
                "Cart",
                "Cart",
            ),
            PageKind::Checkout => (
                "/checkout".to_string(),
                String::new(),
                format!("Checkout | {SITE_NAME}"),
                "Checkout",
                "Checkout",
            ),
            PageKind::Login => (
                "/account/login".to_string(),
                String::new(),
                format!("Sign in | {SITE_NAME}"),
                "Login",
                "Login",
            ),
        };
        let nav = &mut ses.nav;
        if nav.url.is_empty() {
            // Landing: a campaign link carries the utm parameters.
            if let Some(c) = nav.campaign {
                nav.url = format!(
                    "{SITE}{path}?utm_source={}&utm_medium={}&utm_campaign={}",
                    c.source, c.medium, c.name
                );
            } else {
                nav.url = format!("{SITE}{path}{query}");
            }
        } else {
            nav.referrer = std::mem::take(&mut nav.url);
            nav.campaign = None;
            nav.url = format!("{SITE}{path}{query}");
        }
        nav.path = path;
        nav.title = title;
        let body = if dev.is_app() {
            Body::Screen { name: screen_name }
        } else {
            Body::Page { name: page_name }
        };
        self.em
            .send(dev, user_id(&self.p, dev), ses.t, &ses.nav, body);
        self.em.tick(&mut ses.t, 300, 2_500);
    }

    fn track(&mut self, dev: &Device, ses: &mut Session, event: &'static str, props: Props<'_>) {
        self.em.send(
            dev,
            user_id(&self.p, dev),
            ses.t,
            &ses.nav,
            Body::Track { event, props },
        );
    }

    fn product_event(
        &mut self,
        dev: &Device,
        ses: &mut Session,
        event: &'static str,
        product: usize,
        quantity: Option<u32>,
    ) {
        let catalog = &self.em.w.catalog;
        let prod: &Product = &catalog.products[product];
        let props = Props::Product(ProductProps {
            product_id: &prod.id,
            sku: &prod.sku,
            category: prod.category_name(),
            name: &prod.name,
            price: money(prod.price_cents),
            quantity,
            currency: self.p.country.currency(),
        });
        self.track(dev, ses, event, props);
    }

    fn identify(&mut self, dev: &Device, ses: &Session) {
        let rng = &mut self.em.rng;
        let email = match self.p.junk {
            Some(j) => {
                self.em.out.junk_used[j] = true;
                email_variant(rng, JUNK_EMAILS[j], 0.3)
            }
            None => {
                self.email_used = true;
                email_variant(rng, &self.p.email, 0.25)
            }
        };
        let phone = match &self.p.phone {
            Some(ph) if rng.random_bool(0.8) => {
                self.phone_used = true;
                Some(ph.render(rng))
            }
            _ => None,
        };
        let traits = PersonTraits {
            email: (!dev.rudder).then_some(email.as_str()),
            first_name: self.p.first,
            last_name: self.p.last,
            phone: phone.as_deref(),
            plan: self.p.plan,
            created_at: &self.created_at,
            address: Address {
                city: self.p.city,
                country: self.p.country.code(),
            },
        };
        let body = Body::Identify {
            traits,
            context_email: dev.rudder.then_some(email.as_str()),
        };
        self.em
            .send(dev, user_id(&self.p, dev), ses.t, &ses.nav, body);
    }

    fn login(&mut self, dev: &mut Device, ses: &mut Session) {
        self.visit(dev, ses, PageKind::Login);
        self.em.tick(&mut ses.t, 5_000, 40_000);
        let first = !self.signed_up;
        dev.logged_in = true;
        if first && self.em.rng.random_bool(P_ALIAS) {
            let body = Body::Alias {
                previous_id: &dev.anon,
            };
            self.em
                .send(dev, Some(&self.p.user_id), ses.t, &ses.nav, body);
        }
        self.identify(dev, ses);
        self.em.tick(&mut ses.t, 50, 900);
        if first {
            if self.em.rng.random_bool(0.6) {
                let props = Props::Method(MethodProps { method: "email" });
                self.track(dev, ses, "Signed Up", props);
            }
            if self.em.rng.random_bool(P_GROUP) {
                self.group(dev, ses);
            }
        } else if self.em.rng.random_bool(0.4) {
            let props = Props::Method(MethodProps { method: "password" });
            self.track(dev, ses, "Signed In", props);
        }
        self.signed_up = true;
        self.em.tick(&mut ses.t, 500, 3_000);
    }

    fn group(&mut self, dev: &Device, ses: &Session) {
        let g = self.em.rng.random_range(0..self.em.w.groups);
        let stems = COMPANY_STEMS.len() as u64;
        let suffixes = COMPANY_SUFFIXES.len() as u64;
        let round = g / (stems * suffixes);
        let mut name = format!(
            "{} {}",
            COMPANY_STEMS[(g % stems) as usize],
            COMPANY_SUFFIXES[((g / stems) % suffixes) as usize]
        );
        if round > 0 {
            name.push_str(&format!(" {}", round + 1));
        }
        let group_id = format!("grp_{g:05}");
        let body = Body::Group {
            group_id: &group_id,
            traits: GroupTraits {
                name: &name,
                industry: INDUSTRIES[((g * 7 + 3) % INDUSTRIES.len() as u64) as usize],
                employees: 5 + ((g * 37) % 500) as u32,
            },
        };
        self.em
            .send(dev, user_id(&self.p, dev), ses.t, &ses.nav, body);
    }

    fn pick_product(&mut self) -> usize {
        let rng = &mut self.em.rng;
        let cat = if rng.random_bool(0.8) {
            self.p.favourites[rng.random_range(0..2usize)]
        } else {
            rng.random_range(0..CATEGORY_COUNT)
        };
        let j = rng.random_range(0..PER_CATEGORY);
        cat * PER_CATEGORY + j
    }

    /// One visit: landing, browsing, maybe cart / checkout / order, maybe login.
    fn session(&mut self, dev: &mut Device, t0: i64, login: bool, can_buy: bool) {
        let mut ses = Session {
            t: t0,
            nav: Nav::default(),
        };
        let rng = &mut self.em.rng;
        if !dev.is_app() {
            if rng.random_bool(0.25) {
                if let Some(&(source, medium, name)) = CAMPAIGNS.choose(rng) {
                    ses.nav.campaign = Some(Campaign {
                        source,
                        medium,
                        name,
                    });
                    ses.nav.referrer = match source {
                        "google" => "https://www.google.com/".to_string(),
                        "facebook" => "https://l.facebook.com/".to_string(),
                        "instagram" => "https://l.instagram.com/".to_string(),
                        "tiktok" => "https://www.tiktok.com/".to_string(),
                        _ => String::new(),
                    };
                }
            } else {
                ses.nav.referrer = REFERRERS
                    .choose(rng)
                    .copied()
                    .unwrap_or_default()
                    .to_string();
            }
        }

        // Landing.
        let landing = match weighted(rng, &[45, 30, 25]) {
            0 => PageKind::Home,
            1 => PageKind::Category(self.p.favourites[0]),
            _ => PageKind::Product(self.pick_product()),
        };
        self.visit(dev, &mut ses, landing);
        if let PageKind::Product(i) = landing {
            self.product_event(dev, &mut ses, "Product Viewed", i, None);
        }
        self.em.tick(&mut ses.t, 3_000, 60_000);

        if dev.logged_in && self.em.rng.random_bool(0.15) {
            // SDKs re-send identify on app open / page load after login.
            self.identify(dev, &ses);
            self.em.tick(&mut ses.t, 100, 1_000);
        }
        let login_early = login && !dev.logged_in && self.em.rng.random_bool(0.45);
        if login_early {
            self.login(dev, &mut ses);
        }

        // Bounces: landing only (plus a login if one is due).
        let p_bounce = if can_buy { 0.3 } else { 0.5 };
        let bounce = self.em.rng.random_bool(p_bounce);
        if !bounce && self.em.rng.random_bool(0.18) {
            let c = self.p.favourites[1];
            let n = self.em.rng.random_range(0..5usize);
            let q = Catalog::category_nouns(c)[n].to_ascii_lowercase();
            self.track(
                dev,
                &mut ses,
                "Products Searched",
                Props::Search(SearchProps { query: &q }),
            );
            self.visit(dev, &mut ses, PageKind::Search(c, n));
        }

        let n_views = if bounce {
            0
        } else {
            weighted(&mut self.em.rng, &[62, 27, 8, 3]) + 1
        };
        let mut viewed = Vec::with_capacity(n_views);
        for _ in 0..n_views {
            let i = self.pick_product();
            viewed.push(i);
            self.visit(dev, &mut ses, PageKind::Product(i));
            self.product_event(dev, &mut ses, "Product Viewed", i, None);
            self.em.tick(&mut ses.t, 8_000, 120_000);
        }

        let p_add = if can_buy { 0.42 } else { 0.22 };
        let mut cart: Vec<(usize, u32)> = Vec::new();
        if !bounce && self.em.rng.random_bool(p_add) {
            let first = viewed.last().copied().unwrap_or(0);
            cart.push((first, 1 + u32::from(self.em.rng.random_bool(0.15))));
            if self.em.rng.random_bool(0.25) {
                let second = viewed.first().copied().unwrap_or(first);
                let second = if second == first {
                    self.pick_product()
                } else {
                    second
                };
                if second != first {
                    cart.push((second, 1));
                }
            }
            for &(i, q) in &cart.clone() {
                self.product_event(dev, &mut ses, "Product Added", i, Some(q));
                self.em.tick(&mut ses.t, 2_000, 30_000);
            }
        }

        if !cart.is_empty() {
            self.visit(dev, &mut ses, PageKind::Cart);
            self.em.tick(&mut ses.t, 5_000, 60_000);
            if can_buy && self.em.rng.random_bool(0.6) {
                if !dev.logged_in {
                    self.login(dev, &mut ses);
                }
                self.checkout(dev, &mut ses, &cart);
            }
            // Otherwise: abandoned cart.
        }

        if login && !dev.logged_in {
            self.login(dev, &mut ses);
        }
    }

    fn checkout(&mut self, dev: &Device, ses: &mut Session, cart: &[(usize, u32)]) {
        let catalog = &self.em.w.catalog;
        let order_id = format!("{:016x}", self.em.rng.random::<u64>());
        let items: Vec<LineItem<'_>> = cart
            .iter()
            .map(|&(i, quantity)| {
                let prod = &catalog.products[i];
                LineItem {
                    product_id: &prod.id,
                    sku: &prod.sku,
                    category: prod.category_name(),
                    name: &prod.name,
                    price: money(prod.price_cents),
                    quantity,
                }
            })
            .collect();
        let revenue_cents: u64 = cart
            .iter()
            .map(|&(i, q)| catalog.products[i].price_cents * u64::from(q))
            .sum();
        let shipping_cents = if revenue_cents >= 5_000 { 0 } else { 499 };
        let currency = self.p.country.currency();
        let started = OrderProps {
            order_id: &order_id,
            value: Some(money(revenue_cents)),
            total: None,
            revenue: money(revenue_cents),
            shipping: None,
            currency,
            products: &items,
        };
        self.track(dev, ses, "Checkout Started", Props::Order(started));
        self.em.tick(&mut ses.t, 1_000, 5_000);
        self.visit(dev, ses, PageKind::Checkout);
        self.em.tick(&mut ses.t, 30_000, 240_000);
        if self.em.rng.random_bool(0.75) {
            let completed = OrderProps {
                order_id: &order_id,
                value: None,
                total: Some(money(revenue_cents + shipping_cents)),
                revenue: money(revenue_cents),
                shipping: Some(money(shipping_cents)),
                currency,
                products: &items,
            };
            self.track(dev, ses, "Order Completed", Props::Order(completed));
            self.em.tick(&mut ses.t, 1_000, 5_000);
        }
    }

    // ---- offline -------------------------------------------------------

    fn store_purchase(&mut self, k: u64, allow_junk: bool) {
        let w = self.em.w;
        let day = self.em.rng.random_range(0..i64::from(w.days));
        let secs = self.em.rng.random_range(9 * 3600..20 * 3600i64);
        let t = w.start_ms + day * MS_PER_DAY + secs * 1000;
        let (store_id, currency) = if self.p.country == Country::Gb {
            (
                GBP_STORES
                    .choose(&mut self.em.rng)
                    .copied()
                    .unwrap_or("S101"),
                "GBP",
            )
        } else {
            (
                EUR_STORES
                    .choose(&mut self.em.rng)
                    .copied()
                    .unwrap_or("S001"),
                "EUR",
            )
        };
        let product = self.pick_product();
        let prod = &w.catalog.products[product];
        let quantity = weighted(&mut self.em.rng, &[75, 20, 5]) as u64 + 1;
        let email = if allow_junk && self.em.rng.random_bool(P_STORE_JUNK) {
            let j = self.em.rng.random_range(0..JUNK_EMAILS.len());
            self.em.out.junk_used[j] = true;
            email_variant(&mut self.em.rng, JUNK_EMAILS[j], 0.3)
        } else {
            self.email_used = true;
            email_variant(&mut self.em.rng, &self.p.email, 0.35)
        };
        let row = StoreRow {
            receipt_id: format!("{store_id}-{}-{:07}", compact_date(t), self.p.idx * 4 + k),
            purchased_at: sql_datetime(t),
            email,
            store_id,
            amount: money_str(prod.price_cents * quantity),
            currency,
            category: prod.category_name(),
            sku: prod.sku.clone(),
        };
        self.em.out.store.push(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_unique_per_index_and_e164() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for idx in 0..5000 {
            let c = Country::pick(rng.random());
            let p = Phone::new(&mut rng, c, idx);
            assert!(p.e164.starts_with('+'));
            assert!(p.e164[1..].bytes().all(|b| b.is_ascii_digit()));
            assert!(seen.insert(p.e164.clone()), "duplicate {}", p.e164);
        }
    }

    #[test]
    fn french_phone_renderings_include_national_and_spaced_formats() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let p = Phone::new(&mut rng, Country::Fr, 123);
        let forms: std::collections::BTreeSet<String> =
            (0..200).map(|_| p.render(&mut rng)).collect();
        assert!(forms.iter().any(|f| f.starts_with("+33 ")));
        assert!(forms.iter().any(|f| f.starts_with('0') && f.contains(' ')));
        assert!(forms.contains(&p.e164));
    }

    #[test]
    fn email_variants_normalise_back_to_canonical() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let canonical = "jane.doe12@gmail.com";
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let v = email_variant(&mut rng, canonical, 0.5);
            assert_eq!(v.trim().to_ascii_lowercase(), canonical);
            distinct.insert(v);
        }
        assert!(distinct.len() >= 5, "{distinct:?}");
        assert_eq!(title_case(canonical), "Jane.Doe12@Gmail.Com");
    }
}
