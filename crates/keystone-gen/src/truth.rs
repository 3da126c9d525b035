//! Ground-truth accumulation (compact, so millions of identifiers fit in
//! memory) and the sorted `truth.csv` writer.

use std::io::Write;

/// Who an identifier belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Person(u32),
    SharedDevice,
    JunkEmail,
}

impl Owner {
    fn kind(self) -> &'static str {
        match self {
            Self::Person(_) => "person",
            Self::SharedDevice => "shared_device",
            Self::JunkEmail => "junk_email",
        }
    }
}

/// Identifiers collected while generating; merged chunk by chunk.
#[derive(Debug, Default)]
pub(crate) struct Truth {
    /// Person indexes that have a user id (`u_<idx>`); ascending when
    /// chunks are merged in order.
    pub user_ids: Vec<u32>,
    pub emails: Vec<(Box<str>, Owner)>,
    /// E.164 strings, NUL-padded (sorts like the string).
    pub phones: Vec<([u8; 16], Owner)>,
    /// UUIDs as integers: numeric order equals lower-case hyphenated text order.
    pub anonymous_ids: Vec<(u128, Owner)>,
    /// Device ids, NUL-padded.
    pub device_ids: Vec<([u8; 36], Owner)>,
}

/// Copies `s` into a NUL-padded fixed array (truncating, which never
/// happens for the identifiers the generator makes).
pub(crate) fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

fn unpadded(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).unwrap_or_default()
}

impl Truth {
    pub(crate) fn append(&mut self, other: &mut Truth) {
        self.user_ids.append(&mut other.user_ids);
        self.emails.append(&mut other.emails);
        self.phones.append(&mut other.phones);
        self.anonymous_ids.append(&mut other.anonymous_ids);
        self.device_ids.append(&mut other.device_ids);
    }

    /// Sorts, de-duplicates and writes `identifier_type,identifier,person_id,kind`
    /// rows ordered by (identifier_type, identifier). Returns the row count.
    pub(crate) fn write_csv<W: Write>(mut self, out: W, width: usize) -> std::io::Result<u64> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(["identifier_type", "identifier", "person_id", "kind"])?;
        let mut rows = 0u64;
        let mut person_buf = String::new();
        let mut emit = |w: &mut csv::Writer<W>, ty: &str, id: &str, owner: Owner| {
            person_buf.clear();
            if let Owner::Person(p) = owner {
                person_buf.push_str(&format!("p_{p:0width$}"));
            }
            rows += 1;
            w.write_record([ty, id, person_buf.as_str(), owner.kind()])
        };

        // Alphabetical identifier_type order:
        // anonymous_id < device_id < email < phone < user_id.
        self.anonymous_ids.sort_unstable_by_key(|r| r.0);
        self.anonymous_ids.dedup_by_key(|r| r.0);
        let mut ubuf = [0u8; 36];
        for (id, owner) in &self.anonymous_ids {
            let s = uuid::Uuid::from_u128(*id)
                .hyphenated()
                .encode_lower(&mut ubuf);
            emit(&mut w, "anonymous_id", s, *owner)?;
        }

        self.device_ids.sort_unstable_by_key(|r| r.0);
        self.device_ids.dedup_by_key(|r| r.0);
        for (id, owner) in &self.device_ids {
            emit(&mut w, "device_id", unpadded(id), *owner)?;
        }

        self.emails.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.emails.dedup_by(|a, b| a.0 == b.0);
        for (id, owner) in &self.emails {
            emit(&mut w, "email", id, *owner)?;
        }

        self.phones.sort_unstable_by_key(|r| r.0);
        self.phones.dedup_by_key(|r| r.0);
        for (id, owner) in &self.phones {
            emit(&mut w, "phone", unpadded(id), *owner)?;
        }

        self.user_ids.sort_unstable();
        self.user_ids.dedup();
        for p in &self.user_ids {
            let uid = format!("u_{p:0width$}");
            emit(&mut w, "user_id", &uid, Owner::Person(*p))?;
        }
        w.flush()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_arrays_sort_like_strings() {
        let mut v = [
            "+447700900123",
            "+33612345678",
            "+3361234567",
            "+14155550123",
        ];
        let mut p: Vec<[u8; 16]> = v.iter().map(|s| padded(s)).collect();
        v.sort_unstable();
        p.sort_unstable();
        let back: Vec<&str> = p.iter().map(|a| unpadded(a)).collect();
        assert_eq!(back, v);
    }

    #[test]
    fn uuid_integer_order_is_text_order() {
        let ids = [
            u128::MAX,
            0,
            0xa000_0000_0000_0000_0000_0000_0000_0000,
            0x9fff,
        ];
        let mut as_int = ids.to_vec();
        as_int.sort_unstable();
        let mut as_text: Vec<String> = ids
            .iter()
            .map(|i| uuid::Uuid::from_u128(*i).hyphenated().to_string())
            .collect();
        as_text.sort_unstable();
        let from_int: Vec<String> = as_int
            .iter()
            .map(|i| uuid::Uuid::from_u128(*i).hyphenated().to_string())
            .collect();
        assert_eq!(from_int, as_text);
    }

    #[test]
    fn rows_are_sorted_typed_and_deduplicated() {
        let t = Truth {
            user_ids: vec![3, 1],
            emails: vec![
                ("b@x.org".into(), Owner::Person(1)),
                ("a@x.org".into(), Owner::Person(3)),
                ("test@test.com".into(), Owner::JunkEmail),
                ("a@x.org".into(), Owner::Person(3)),
            ],
            device_ids: vec![(padded("DEV"), Owner::SharedDevice)],
            ..Truth::default()
        };
        let mut out = Vec::new();
        let n = t.write_csv(&mut out, 6).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(n, 6);
        assert_eq!(
            text,
            "identifier_type,identifier,person_id,kind\n\
             device_id,DEV,,shared_device\n\
             email,a@x.org,p_000003,person\n\
             email,b@x.org,p_000001,person\n\
             email,test@test.com,,junk_email\n\
             user_id,u_000001,p_000001,person\n\
             user_id,u_000003,p_000003,person\n"
        );
    }
}
