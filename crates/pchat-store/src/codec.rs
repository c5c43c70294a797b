//! How every backend stores values that have no native column type: principal lists as one principal per line
//! (a principal cannot contain a line break), and server time. Shared so that backends agree exactly.

use std::time::{SystemTime, UNIX_EPOCH};

use pchat_core::{Principal, ValidationError};

/// Principals, one per line.
pub fn join_principals(list: &[Principal]) -> String {
    list.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// The inverse of [`join_principals`]; an invalid line means the stored data is corrupt.
pub fn split_principals(raw: &str) -> Result<Vec<Principal>, ValidationError> {
    raw.lines().filter(|l| !l.is_empty()).map(|l| Principal::parse("principal", l)).collect()
}

/// Server time in microseconds since the Unix epoch. Message times are `max(now, the room's last time)`, so they
/// never go backwards within a room even if the clock (or, in a pool, another server's clock) does.
pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// A case-insensitive "contains" pattern for `LIKE … ESCAPE '\'`: `%`, `_` and `\` in the query are escaped.
pub fn like_pattern(query: &str) -> String {
    let mut out = String::from("%");
    for c in query.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("A_b%c\\"), "%a\\_b\\%c\\\\%");
    }

    #[test]
    fn principal_lists_round_trip() {
        let list = Principal::parse_list("p", ["*", "group:a b", "domain:example.com", "u@example.com"]).unwrap();
        assert_eq!(split_principals(&join_principals(&list)).unwrap(), list);
        assert!(split_principals("").unwrap().is_empty());
        assert!(split_principals("not a principal").is_err());
    }
}
