//! Resolution rules: which identifiers count, how many of each type a profile
//! may hold, and which one yields first when a merge would break a limit.

use std::collections::BTreeMap;

use crate::extract::Identifier;
use crate::graph::CutRule;

/// Identifier types Keystone extracts by itself.
pub const USER_ID: &str = "user_id";
pub const EMAIL: &str = "email";
pub const PHONE: &str = "phone";
pub const ANONYMOUS_ID: &str = "anonymous_id";
pub const DEVICE_ID: &str = "device_id";

/// The rules of resolution (defaults after Segment Unify).
#[derive(Debug, Clone)]
pub struct Rules {
    /// Most identifiers of a type one profile may hold (default 5; `user_id` 1).
    pub limits: BTreeMap<String, usize>,
    /// Default limit for types not in `limits`.
    pub default_limit: usize,
    /// Types from highest to lowest priority; types not listed come after, alphabetically.
    pub priority: Vec<String>,
    /// Values never used to link (compared lower-cased), besides `^[0-]*$`.
    pub blocked: Vec<String>,
    /// Longest identifier kept, in bytes.
    pub max_len: usize,
    /// Most merges one profile may absorb.
    pub max_merges: usize,
    /// Most identifiers one profile may hold.
    pub max_identifiers: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            limits: BTreeMap::from([(USER_ID.to_string(), 1)]),
            default_limit: 5,
            priority: vec![USER_ID.into(), EMAIL.into(), PHONE.into()],
            blocked: [
                "-1",
                "null",
                "anonymous",
                "undefined",
                "none",
                "nil",
                "nan",
                "unknown",
            ]
            .map(String::from)
            .to_vec(),
            max_len: 1024,
            max_merges: 100,
            max_identifiers: 1000,
        }
    }
}

impl Rules {
    /// The limit for identifiers of `kind` in one profile.
    pub fn limit(&self, kind: &str) -> usize {
        self.limits.get(kind).copied().unwrap_or(self.default_limit)
    }

    /// Sort key of a type: lower is higher priority.
    pub fn rank(&self, kind: &str) -> (usize, String) {
        match self.priority.iter().position(|p| p == kind) {
            Some(i) => (i, String::new()),
            None => (self.priority.len(), kind.to_string()),
        }
    }

    /// Check one identifier: `Err` names the rule that cuts it.
    pub fn admit(&self, id: &Identifier) -> Result<(), CutRule> {
        let v = id.value.trim();
        if v.is_empty() {
            return Err(CutRule::Empty);
        }
        if v.len() > self.max_len {
            return Err(CutRule::TooLong);
        }
        if v.chars().all(|c| c == '0' || c == '-') {
            return Err(CutRule::Blocked);
        }
        let lower = v.to_lowercase();
        if self.blocked.iter().any(|b| b.eq_ignore_ascii_case(&lower)) {
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
}
