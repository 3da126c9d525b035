//! Resolution rules: which identifiers count, how many of each type a profile
//! may hold, and which one yields first when a merge would break a limit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::extract::Identifier;
use crate::graph::CutRule;

/// Identifier types Keystone extracts by itself.
pub const USER_ID: &str = "user_id";
pub const EMAIL: &str = "email";
pub const PHONE: &str = "phone";
pub const ANONYMOUS_ID: &str = "anonymous_id";
pub const DEVICE_ID: &str = "device_id";

/// Values never used to link, whatever the configuration (compared
/// case-insensitively), besides anything matching `^[0-]*$`.
pub const DEFAULT_BLOCKED: &[&str] = &[
    "-1",
    "null",
    "anonymous",
    "undefined",
    "none",
    "nil",
    "nan",
    "unknown",
];

/// The rules of resolution (defaults after Segment Unify), as written in the
/// `[identity]` section of `keystone.toml`.
///
/// ```toml
/// [identity]
/// default_region = "FR"                  # national phone numbers are French
/// limits = { email = 3 }                 # user_id stays 1, others 5
/// priority = ["user_id", "email", "phone"]
/// blocked = ["test@test.com"]            # added to the built-in blocked values
/// property_ids = { loyalty_card = "properties.loyalty_card" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Most identifiers of a type one profile may hold (`user_id` 1 unless set here).
    pub limits: BTreeMap<String, usize>,
    /// Limit for types not in `limits` (default 5).
    pub default_limit: usize,
    /// Types from highest to lowest priority; types not listed come after, alphabetically.
    pub priority: Vec<String>,
    /// Values never used to link, besides [`DEFAULT_BLOCKED`] (compared case-insensitively).
    pub blocked: Vec<String>,
    /// Longest identifier kept, in bytes.
    pub max_len: usize,
    /// Most merges one profile may absorb.
    pub max_merges: usize,
    /// Most identifiers one profile may hold.
    pub max_identifiers: usize,
    /// Region whose calling code completes national phone numbers (`FR`, `US`, …).
    pub default_region: Option<String>,
    /// Offline identifiers read from a JSON path of the event: type → path,
    /// the path starting with `properties`, `traits` or `context`
    /// (e.g. `loyalty_card = "properties.loyalty_card"`).
    pub property_ids: BTreeMap<String, String>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            limits: BTreeMap::new(),
            default_limit: 5,
            priority: vec![USER_ID.into(), EMAIL.into(), PHONE.into()],
            blocked: Vec::new(),
            max_len: 1024,
            max_merges: 100,
            max_identifiers: 1000,
            default_region: None,
            property_ids: BTreeMap::new(),
        }
    }
}

impl Rules {
    /// The limit for identifiers of `kind` in one profile.
    pub fn limit(&self, kind: &str) -> usize {
        match self.limits.get(kind) {
            Some(&n) => n,
            None if kind == USER_ID => 1,
            None => self.default_limit,
        }
    }

    /// Sort key of a type: lower is higher priority.
    pub fn rank<'a>(&self, kind: &'a str) -> (usize, &'a str) {
        match self.priority.iter().position(|p| p == kind) {
            Some(i) => (i, ""),
            None => (self.priority.len(), kind),
        }
    }

    /// Check the rules themselves: every property path must start with a
    /// JSON column and name a field, and limits must allow one identifier.
    pub fn validate(&self) -> Result<(), String> {
        for (kind, path) in &self.property_ids {
            let mut parts = path.split('.');
            let root = parts.next().unwrap_or_default();
            if !matches!(root, "properties" | "traits" | "context") || parts.next().is_none() {
                return Err(format!(
                    "identity.property_ids.{kind} = {path:?}: a path must start with properties., traits. or context. and name a field"
                ));
            }
        }
        if let Some((kind, _)) = self.limits.iter().find(|(_, n)| **n == 0) {
            return Err(format!(
                "identity.limits.{kind} = 0: a limit must be at least 1"
            ));
        }
        if self.default_limit == 0 {
            return Err("identity.default_limit = 0: a limit must be at least 1".into());
        }
        if let Some(region) = &self.default_region
            && !crate::extract::PHONE_REGIONS.contains(&region.to_ascii_uppercase().as_str())
        {
            return Err(format!(
                "identity.default_region = {region:?}: phone numbers are read for {}",
                crate::extract::PHONE_REGIONS.join(", ")
            ));
        }
        Ok(())
    }

    /// Check one identifier: `Err` names the rule that cuts it.
    pub fn admit(&self, id: &Identifier) -> Result<(), CutRule> {
        self.admit_value(&id.value)
    }

    /// Check one identifier's value: `Err` names the rule that cuts it.
    pub fn admit_value(&self, v: &str) -> Result<(), CutRule> {
        let v = v.trim();
        if v.is_empty() {
            return Err(CutRule::Empty);
        }
        if v.len() > self.max_len {
            return Err(CutRule::TooLong);
        }
        if v.bytes().all(|c| c == b'0' || c == b'-') {
            return Err(CutRule::Blocked);
        }
        if DEFAULT_BLOCKED.iter().any(|b| b.eq_ignore_ascii_case(v))
            || self.blocked.iter().any(|b| b.eq_ignore_ascii_case(v))
        {
            return Err(CutRule::Blocked);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, value: &str) -> Identifier {
        Identifier::new(kind, value)
    }

    #[test]
    fn default_blocked_values_are_cut() {
        let r = Rules::default();
        for v in ["0", "000-000", "-1", "NULL", "anonymous", "undefined", "  "] {
            assert!(r.admit(&id(USER_ID, v)).is_err(), "{v:?}");
        }
        assert!(r.admit(&id(USER_ID, "u-1")).is_ok());
        assert_eq!(
            r.admit(&id(EMAIL, &"a".repeat(1025))),
            Err(CutRule::TooLong)
        );
    }

    #[test]
    fn priority_puts_unlisted_types_after_in_alphabetical_order() {
        let r = Rules::default();
        let mut kinds = vec![
            DEVICE_ID,
            "loyalty_card",
            ANONYMOUS_ID,
            PHONE,
            USER_ID,
            EMAIL,
        ];
        kinds.sort_by_key(|k| r.rank(k));
        assert_eq!(
            kinds,
            vec![
                USER_ID,
                EMAIL,
                PHONE,
                ANONYMOUS_ID,
                DEVICE_ID,
                "loyalty_card"
            ]
        );
        assert_eq!(r.limit(USER_ID), 1);
        assert_eq!(r.limit(EMAIL), 5);
    }

    #[test]
    fn configured_rules_add_to_the_defaults() {
        let r: Rules = toml::from_str(
            "limits = { email = 2 }\nblocked = [\"Test@Test.com\"]\nproperty_ids = { loyalty_card = \"properties.card\" }",
        )
        .unwrap();
        assert_eq!(
            (r.limit(USER_ID), r.limit(EMAIL), r.limit(PHONE)),
            (1, 2, 5)
        );
        assert_eq!(r.admit(&id(EMAIL, "test@test.com")), Err(CutRule::Blocked));
        assert_eq!(r.admit(&id(USER_ID, "null")), Err(CutRule::Blocked));
        r.validate().unwrap();
        let bad = Rules {
            property_ids: BTreeMap::from([("card".into(), "loyalty".into())]),
            ..Rules::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("identity.property_ids.card")
        );
        assert!(toml::from_str::<Rules>("limit = 3").is_err());
        let region = |r: &str| Rules {
            default_region: Some(r.into()),
            ..Rules::default()
        };
        region("fr").validate().unwrap();
        let e = region("XX").validate().unwrap_err();
        assert!(
            e.contains("identity.default_region = \"XX\"") && e.contains("FR"),
            "{e}"
        );
    }
}
