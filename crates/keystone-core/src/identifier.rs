//! Identifier normalisation: the same person must give the same identifier
//! however an app or a store till spelled it.

/// Normalise an email: trimmed and lower-cased. Returns `None` for a value
/// that is empty after trimming or has no `@` between two non-empty parts.
///
/// ```
/// use keystone_core::identifier::normalize_email;
/// assert_eq!(normalize_email(" Jane.Doe@Example.COM "), Some("jane.doe@example.com".into()));
/// assert_eq!(normalize_email("not-an-email"), None);
/// ```
pub fn normalize_email(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let (local, domain) = trimmed.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || trimmed.chars().any(char::is_whitespace) {
        return None;
    }
    Some(trimmed.to_lowercase())
}

/// Normalise a phone number as far as it can be without a region: spaces,
/// dots, dashes and parentheses removed, a leading `00` turned into `+`.
/// Returns `None` when fewer than 6 digits remain or other characters appear.
///
/// ```
/// use keystone_core::identifier::normalize_phone;
/// assert_eq!(normalize_phone("+33 6 12-34.56 78"), Some("+33612345678".into()));
/// assert_eq!(normalize_phone("0033 612345678"), Some("+33612345678".into()));
/// assert_eq!(normalize_phone("call me"), None);
/// ```
pub fn normalize_phone(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    for (i, c) in raw.trim().chars().enumerate() {
        match c {
            '0'..='9' => out.push(c),
            '+' if i == 0 => out.push(c),
            ' ' | '.' | '-' | '(' | ')' => {}
            _ => return None,
        }
    }
    if let Some(rest) = out.strip_prefix("00") {
        out = format!("+{rest}");
    }
    let digits = out.chars().filter(char::is_ascii_digit).count();
    (digits >= 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_variants_normalise_to_one_value() {
        let variants = ["jane@x.org", " JANE@x.org", "Jane@X.Org  "];
        for v in variants {
            assert_eq!(normalize_email(v).as_deref(), Some("jane@x.org"), "{v:?}");
        }
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for v in ["", "   ", "@x.org", "jane@", "ja ne@x.org", "plain"] {
            assert_eq!(normalize_email(v), None, "{v:?}");
        }
    }

    #[test]
    fn phone_keeps_local_format_without_region() {
        assert_eq!(
            normalize_phone("06 12 34 56 78").as_deref(),
            Some("0612345678")
        );
        assert_eq!(normalize_phone("12"), None);
        assert_eq!(
            normalize_phone("+1 (555) 010-9999").as_deref(),
            Some("+15550109999")
        );
    }
}
