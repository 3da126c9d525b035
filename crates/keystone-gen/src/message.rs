//! Segment-spec message shapes (serialised with borrowed fields, so writing
//! an event allocates little) and fast timestamp formatting.

use serde::Serialize;

/// `context.library`.
#[derive(Serialize, Clone, Copy, Debug)]
pub(crate) struct Library {
    pub name: &'static str,
    pub version: &'static str,
}

/// `context.page` and the properties of a `page` call.
#[derive(Serialize, Clone, Copy, Debug)]
pub(crate) struct PageInfo<'a> {
    pub url: &'a str,
    pub path: &'a str,
    pub referrer: &'a str,
    pub title: &'a str,
}

/// `context.device` (mobile apps only).
#[derive(Serialize, Debug)]
pub(crate) struct DeviceInfo<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub manufacturer: &'static str,
    pub model: &'static str,
}

/// `context.os` (mobile apps only).
#[derive(Serialize, Debug)]
pub(crate) struct OsInfo {
    pub name: &'static str,
    pub version: &'static str,
}

/// `context.app` (mobile apps only).
#[derive(Serialize, Debug)]
pub(crate) struct AppInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub build: &'static str,
    pub namespace: &'static str,
}

/// `context.campaign`, parsed from the landing URL's `utm_*` parameters.
#[derive(Serialize, Clone, Copy, Debug)]
pub(crate) struct Campaign {
    pub source: &'static str,
    pub medium: &'static str,
    pub name: &'static str,
}

/// `context.traits` as RudderStack SDKs send it on identify.
#[derive(Serialize, Debug)]
pub(crate) struct ContextTraits<'a> {
    pub email: &'a str,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Context<'a> {
    pub library: Library,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<AppInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceInfo<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<OsInfo>,
    pub ip: &'a str,
    pub user_agent: &'a str,
    pub locale: &'static str,
    pub timezone: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<PageInfo<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<Campaign>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traits: Option<ContextTraits<'a>>,
}

/// Properties of `Product Viewed` / `Product Added`.
#[derive(Serialize, Debug)]
pub(crate) struct ProductProps<'a> {
    pub product_id: &'a str,
    pub sku: &'a str,
    pub category: &'a str,
    pub name: &'a str,
    pub price: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
    pub currency: &'static str,
}

/// One entry of `properties.products`.
#[derive(Serialize, Debug)]
pub(crate) struct LineItem<'a> {
    pub product_id: &'a str,
    pub sku: &'a str,
    pub category: &'a str,
    pub name: &'a str,
    pub price: f64,
    pub quantity: u32,
}

/// Properties of `Checkout Started` / `Order Completed`.
#[derive(Serialize, Debug)]
pub(crate) struct OrderProps<'a> {
    pub order_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    pub revenue: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping: Option<f64>,
    pub currency: &'static str,
    pub products: &'a [LineItem<'a>],
}

#[derive(Serialize, Debug)]
pub(crate) struct SearchProps<'a> {
    pub query: &'a str,
}

#[derive(Serialize, Debug)]
pub(crate) struct MethodProps {
    pub method: &'static str,
}

#[derive(Serialize, Debug)]
#[serde(untagged)]
pub(crate) enum Props<'a> {
    Page(PageInfo<'a>),
    Product(ProductProps<'a>),
    Order(OrderProps<'a>),
    Search(SearchProps<'a>),
    Method(MethodProps),
}

#[derive(Serialize, Debug)]
pub(crate) struct Address {
    pub city: &'static str,
    pub country: &'static str,
}

/// Identify traits.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PersonTraits<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    pub first_name: &'static str,
    pub last_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<&'a str>,
    pub plan: &'static str,
    pub created_at: &'a str,
    pub address: Address,
}

/// Group traits.
#[derive(Serialize, Debug)]
pub(crate) struct GroupTraits<'a> {
    pub name: &'a str,
    pub industry: &'static str,
    pub employees: u32,
}

#[derive(Serialize, Debug)]
#[serde(untagged)]
pub(crate) enum Traits<'a> {
    Person(PersonTraits<'a>),
    Group(GroupTraits<'a>),
}

/// `integrations: {}`.
#[derive(Serialize, Debug)]
pub(crate) struct Integrations {}

/// One Segment message, as an SDK would POST it.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Message<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message_id: &'a str,
    pub timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traits: Option<Traits<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Props<'a>>,
    pub context: Context<'a>,
    pub integrations: Integrations,
}

/// Money in cents as a JSON number with at most two decimals.
pub(crate) fn money(cents: u64) -> f64 {
    // Exact for any realistic amount; serde_json prints the shortest
    // round-tripping form, e.g. 5990 -> 59.9, 1299 -> 12.99.
    cents as f64 / 100.0
}

/// Money in cents as a string with exactly two decimals, e.g. `"59.90"`.
pub(crate) fn money_str(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

const MS_PER_DAY: i64 = 86_400_000;

/// Milliseconds since the Unix epoch for midnight UTC of a date.
pub(crate) fn date_ms(date: chrono::NaiveDate) -> i64 {
    use chrono::Datelike;
    i64::from(date.num_days_from_ce() - 719_163) * MS_PER_DAY
}

/// Civil date (year, month, day) from days since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn put2(buf: &mut [u8], at: usize, v: u32) {
    buf[at] = b'0' + (v / 10 % 10) as u8;
    buf[at + 1] = b'0' + (v % 10) as u8;
}

/// Writes `YYYY-MM-DD?HH:MM:SS` (19 bytes) into `buf[..19]`.
fn put_date_time(ms: i64, sep: u8, buf: &mut [u8]) -> u32 {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let y = y.clamp(0, 9999) as u32;
    put2(buf, 0, y / 100);
    put2(buf, 2, y % 100);
    buf[4] = b'-';
    put2(buf, 5, m);
    buf[7] = b'-';
    put2(buf, 8, d);
    buf[10] = sep;
    let secs = (rem / 1000) as u32;
    put2(buf, 11, secs / 3600);
    buf[13] = b':';
    put2(buf, 14, secs / 60 % 60);
    buf[16] = b':';
    put2(buf, 17, secs % 60);
    (rem % 1000) as u32
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision,
/// e.g. `2026-10-31T18:04:05.123Z`.
pub(crate) fn rfc3339_ms(ms: i64, buf: &mut [u8; 24]) -> &str {
    let millis = put_date_time(ms, b'T', buf);
    buf[19] = b'.';
    buf[20] = b'0' + (millis / 100) as u8;
    put2(buf, 21, millis % 100);
    buf[23] = b'Z';
    std::str::from_utf8(buf).unwrap_or_default()
}

/// Formats epoch milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC, seconds precision).
pub(crate) fn sql_datetime(ms: i64) -> String {
    let mut buf = [0u8; 19];
    put_date_time(ms, b' ', &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Formats epoch milliseconds as `YYYYMMDD`.
pub(crate) fn compact_date(ms: i64) -> String {
    let mut buf = [0u8; 19];
    put_date_time(ms, b' ', &mut buf);
    let mut s = String::with_capacity(8);
    for &b in buf[..10].iter().filter(|b| b.is_ascii_digit()) {
        s.push(char::from(b));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, NaiveDate};

    #[test]
    fn fast_timestamps_match_chrono() {
        let mut buf = [0u8; 24];
        let samples = [
            0i64,
            1,
            999,
            86_399_999,
            951_782_400_123, // 2000-02-29
            1_798_761_599_999,
            1_793_491_200_000,
            4_102_444_800_000,
            1_709_164_800_500, // 2024-02-29
        ];
        let mut x = 12_345u64;
        let more = (0..2000).map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 20) as i64 % 4_000_000_000_000
        });
        for ms in samples.into_iter().chain(more) {
            let dt = DateTime::from_timestamp_millis(ms).unwrap();
            let want = dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            assert_eq!(rfc3339_ms(ms, &mut buf), want);
            assert_eq!(sql_datetime(ms), dt.format("%Y-%m-%d %H:%M:%S").to_string());
            assert_eq!(compact_date(ms), dt.format("%Y%m%d").to_string());
        }
    }

    #[test]
    fn date_ms_is_midnight_utc() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let want = d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis();
        assert_eq!(date_ms(d), want);
    }

    #[test]
    fn money_has_at_most_two_decimals() {
        assert_eq!(serde_json::to_string(&money(5990)).unwrap(), "59.9");
        assert_eq!(serde_json::to_string(&money(1299)).unwrap(), "12.99");
        assert_eq!(money_str(5990), "59.90");
        assert_eq!(money_str(7), "0.07");
    }
}
