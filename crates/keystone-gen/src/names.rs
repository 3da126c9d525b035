//! Static vocabularies: names, email domains, cities, user agents, campaigns.
//!
//! Everything here is plain ASCII so that lower-casing an email is a byte
//! operation and the ground truth is unambiguous.

/// Countries the synthetic customers live in. Drives names, locale, phone
/// numbering plan, currency and email domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Country {
    Fr,
    Gb,
    De,
    Us,
}

impl Country {
    /// Cumulative weights: 75 % France, 10 % UK, 8 % Germany, 7 % US.
    pub(crate) fn pick(roll: f64) -> Self {
        if roll < 0.75 {
            Self::Fr
        } else if roll < 0.85 {
            Self::Gb
        } else if roll < 0.93 {
            Self::De
        } else {
            Self::Us
        }
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::Fr => "FR",
            Self::Gb => "GB",
            Self::De => "DE",
            Self::Us => "US",
        }
    }

    pub(crate) fn locale(self) -> &'static str {
        match self {
            Self::Fr => "fr-FR",
            Self::Gb => "en-GB",
            Self::De => "de-DE",
            Self::Us => "en-US",
        }
    }

    pub(crate) fn timezone(self) -> &'static str {
        match self {
            Self::Fr => "Europe/Paris",
            Self::Gb => "Europe/London",
            Self::De => "Europe/Berlin",
            Self::Us => "America/New_York",
        }
    }

    pub(crate) fn currency(self) -> &'static str {
        match self {
            Self::Fr | Self::De => "EUR",
            Self::Gb => "GBP",
            Self::Us => "USD",
        }
    }

    pub(crate) fn first_names(self) -> &'static [&'static str] {
        match self {
            Self::Fr => FR_FIRST,
            Self::Gb | Self::Us => EN_FIRST,
            Self::De => DE_FIRST,
        }
    }

    pub(crate) fn last_names(self) -> &'static [&'static str] {
        match self {
            Self::Fr => FR_LAST,
            Self::Gb | Self::Us => EN_LAST,
            Self::De => DE_LAST,
        }
    }

    pub(crate) fn domains(self) -> &'static [&'static str] {
        match self {
            Self::Fr => FR_DOMAINS,
            Self::Gb => GB_DOMAINS,
            Self::De => DE_DOMAINS,
            Self::Us => US_DOMAINS,
        }
    }

    pub(crate) fn cities(self) -> &'static [&'static str] {
        match self {
            Self::Fr => &[
                "Paris",
                "Lyon",
                "Marseille",
                "Toulouse",
                "Nantes",
                "Bordeaux",
                "Lille",
                "Strasbourg",
                "Rennes",
                "Nice",
            ],
            Self::Gb => &["London", "Manchester", "Bristol", "Leeds", "Edinburgh"],
            Self::De => &["Berlin", "Hamburg", "Munich", "Cologne", "Frankfurt"],
            Self::Us => &["New York", "Boston", "Chicago", "Austin", "Seattle"],
        }
    }
}

const FR_FIRST: &[&str] = &[
    "Camille",
    "Lea",
    "Manon",
    "Chloe",
    "Emma",
    "Ines",
    "Sarah",
    "Julie",
    "Lucie",
    "Marie",
    "Claire",
    "Pauline",
    "Anais",
    "Elodie",
    "Margaux",
    "Thomas",
    "Nicolas",
    "Julien",
    "Maxime",
    "Antoine",
    "Hugo",
    "Lucas",
    "Louis",
    "Alexandre",
    "Romain",
    "Mathieu",
    "Pierre",
    "Quentin",
    "Baptiste",
    "Jean-Marc",
    "Anne-Sophie",
    "Guillaume",
];

const FR_LAST: &[&str] = &[
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
    "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "David", "Bertrand", "Roux",
    "Vincent", "Fournier", "Morel", "Girard", "Andre", "Mercier", "Dupont", "Lambert", "Bonnet",
    "Francois", "Martinez", "Legrand", "Garnier", "Faure",
];

const EN_FIRST: &[&str] = &[
    "Olivia", "Amelia", "Isla", "Ava", "Emily", "Sophie", "Grace", "Jessica", "Hannah", "Jane",
    "Oliver", "George", "Harry", "Jack", "Jacob", "Noah", "Charlie", "James", "William", "Daniel",
];

const EN_LAST: &[&str] = &[
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson",
    "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood",
    "Jackson", "Clarke", "Doe",
];

const DE_FIRST: &[&str] = &[
    "Mia",
    "Hannah",
    "Emilia",
    "Lena",
    "Anna",
    "Leonie",
    "Lukas",
    "Leon",
    "Finn",
    "Jonas",
    "Paul",
    "Felix",
    "Maximilian",
    "Elias",
];

const DE_LAST: &[&str] = &[
    "Mueller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Koch",
    "Richter",
    "Klein",
    "Wolf",
];

const FR_DOMAINS: &[&str] = &[
    "gmail.com",
    "gmail.com",
    "gmail.com",
    "yahoo.fr",
    "hotmail.fr",
    "hotmail.com",
    "outlook.fr",
    "orange.fr",
    "free.fr",
    "laposte.net",
    "wanadoo.fr",
    "icloud.com",
    "sfr.fr",
];

const GB_DOMAINS: &[&str] = &[
    "gmail.com",
    "gmail.com",
    "outlook.com",
    "hotmail.co.uk",
    "yahoo.co.uk",
    "btinternet.com",
    "icloud.com",
];

const DE_DOMAINS: &[&str] = &[
    "gmail.com",
    "gmx.de",
    "web.de",
    "t-online.de",
    "outlook.de",
    "posteo.de",
];

const US_DOMAINS: &[&str] = &[
    "gmail.com",
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "aol.com",
    "icloud.com",
    "proton.me",
];

/// Desktop and mobile browser user agents (web devices).
pub(crate) const WEB_USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36 Edg/129.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.86 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
];

/// iOS devices: (model identifier, iOS version).
pub(crate) const IOS_MODELS: &[(&str, &str)] = &[
    ("iPhone16,2", "18.1.0"),
    ("iPhone15,3", "18.0.1"),
    ("iPhone14,5", "17.6.1"),
    ("iPhone13,2", "17.5.1"),
    ("iPhone17,1", "18.1.0"),
    ("iPad13,18", "18.0.0"),
];

/// Android devices: (manufacturer, model, Android version, build id).
pub(crate) const ANDROID_MODELS: &[(&str, &str, &str, &str)] = &[
    ("samsung", "SM-S921B", "14", "UP1A.231005.007"),
    ("samsung", "SM-A546B", "14", "UP1A.231005.007"),
    ("Google", "Pixel 8", "15", "AP3A.241005.015"),
    ("Google", "Pixel 7a", "14", "AP2A.240905.003"),
    ("Xiaomi", "23049PCD8G", "13", "TKQ1.221114.001"),
    ("OnePlus", "CPH2581", "14", "UKQ1.230924.001"),
];

/// Shared tablets (kiosks in stores, family tablets): (manufacturer, model, OS version, build).
pub(crate) const TABLET_MODELS: &[(&str, &str, &str, &str)] = &[
    ("samsung", "SM-X210", "14", "UP1A.231005.007"),
    ("Lenovo", "TB-X606F", "10", "QP1A.190711.020"),
    ("samsung", "SM-T505", "12", "SP1A.210812.016"),
];

/// Marketing campaigns: (utm_source, utm_medium, utm_campaign).
pub(crate) const CAMPAIGNS: &[(&str, &str, &str)] = &[
    ("google", "cpc", "brand_search"),
    ("google", "cpc", "autumn_sale_2026"),
    ("newsletter", "email", "weekly_digest"),
    ("newsletter", "email", "black_friday_teaser"),
    ("facebook", "social", "retargeting_cart"),
    ("instagram", "social", "influencer_oct"),
    ("tiktok", "paid_social", "new_collection"),
    ("criteo", "display", "retargeting"),
];

/// Organic referrers (empty string = direct traffic).
pub(crate) const REFERRERS: &[&str] = &[
    "",
    "",
    "",
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.google.fr/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
    "https://www.instagram.com/",
    "https://www.pinterest.fr/",
];

/// B2B accounts referenced by `group` calls.
pub(crate) const COMPANY_STEMS: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Vandelay",
    "Soylent",
    "Tyrell",
    "Cyberdyne",
    "Wonka",
    "Gringotts",
    "Oceanic",
    "Massive",
    "Dunder",
];

pub(crate) const COMPANY_SUFFIXES: &[&str] = &[
    "SAS",
    "Ltd",
    "GmbH",
    "Inc",
    "Group",
    "Industries",
    "Partners",
    "Labs",
];

pub(crate) const INDUSTRIES: &[&str] = &[
    "Retail",
    "Technology",
    "Hospitality",
    "Healthcare",
    "Finance",
    "Education",
    "Manufacturing",
    "Media",
    "Logistics",
];

/// Plans in identify traits with cumulative weights: free 60 %, plus 30 %, premium 10 %.
pub(crate) fn plan(roll: f64) -> &'static str {
    if roll < 0.6 {
        "free"
    } else if roll < 0.9 {
        "plus"
    } else {
        "premium"
    }
}

/// First octets of plausible residential / mobile public IPv4 ranges.
pub(crate) const IP_FIRST_OCTETS: &[u8] = &[
    2, 37, 78, 80, 81, 82, 86, 88, 90, 92, 109, 176, 185, 193, 212, 217,
];

/// Offline stores: (store id, currency). London stores sell in GBP.
pub(crate) const EUR_STORES: &[&str] = &[
    "S001", "S002", "S003", "S004", "S005", "S006", "S007", "S008", "S009", "S010", "S011", "S012",
    "S013", "S014", "S015", "S016", "S017", "S018", "S019", "S020",
];
pub(crate) const GBP_STORES: &[&str] = &["S101", "S102", "S103"];
