//! Policy and configuration scopes and their resolution (most specific scope wins), and the validated
//! chat configuration of PRODUCT.md §2 (Lync's `CsPersistentChatConfiguration`).

use std::fmt;

use crate::names::{Address, Name, ValidationError};

/// Where a policy (`enable_persistent_chat`) is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyScope {
    Global,
    Site(Name),
    Pool(Name),
    User(Address),
}

/// Where a chat configuration is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfigScope {
    Global,
    Site(Name),
    Pool(Name),
}

impl PolicyScope {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if let Some(user) = raw.strip_prefix("user:") {
            return Ok(Self::User(Address::parse("scope", user)?));
        }
        Ok(match ConfigScope::parse(raw)? {
            ConfigScope::Global => Self::Global,
            ConfigScope::Site(n) => Self::Site(n),
            ConfigScope::Pool(n) => Self::Pool(n),
        })
    }

    /// The scopes that apply to a user on a server of `site` / `pool`, most specific first.
    pub fn chain(user: &Address, site: &Name, pool: &Name) -> [Self; 4] {
        [Self::User(user.clone()), Self::Pool(pool.clone()), Self::Site(site.clone()), Self::Global]
    }
}

impl ConfigScope {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw == "global" {
            return Ok(Self::Global);
        }
        if let Some(site) = raw.strip_prefix("site:") {
            return Ok(Self::Site(Name::parse("scope", site)?));
        }
        if let Some(pool) = raw.strip_prefix("pool:") {
            return Ok(Self::Pool(Name::parse("scope", pool)?));
        }
        Err(ValidationError::new("scope", format!("'{raw}' is not a scope (global, site:NAME, pool:NAME)")))
    }

    /// The scopes that apply on a server of `site` / `pool`, most specific first.
    pub fn chain(site: &Name, pool: &Name) -> [Self; 3] {
        [Self::Pool(pool.clone()), Self::Site(site.clone()), Self::Global]
    }
}

impl fmt::Display for PolicyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Site(n) => write!(f, "site:{n}"),
            Self::Pool(n) => write!(f, "pool:{n}"),
            Self::User(a) => write!(f, "user:{a}"),
        }
    }
}

impl fmt::Display for ConfigScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Site(n) => write!(f, "site:{n}"),
            Self::Pool(n) => write!(f, "pool:{n}"),
        }
    }
}

/// Picks the first scope of `chain` (most specific first) for which `lookup` has a value.
pub fn resolve<S: Clone, T>(chain: &[S], mut lookup: impl FnMut(&S) -> Option<T>) -> Option<(S, T)> {
    chain.iter().find_map(|s| lookup(s).map(|v| (s.clone(), v)))
}

/// The chat configuration of one scope. Built only through [`ChatConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    /// Messages delivered on join (Lync `DefaultChatHistory`, 1–500).
    pub default_chat_history: u32,
    /// Largest file a room accepts (Lync `MaxFileSizeKB`).
    pub max_file_size_kb: u32,
    /// Above this many connected participants roster updates stop (Lync `ParticipantUpdateLimit`).
    pub participant_update_limit: u32,
    /// Empty: the built-in room management app.
    pub room_management_url: String,
    /// Largest message text in bytes (UTF-8).
    pub max_message_bytes: u32,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            default_chat_history: 30,
            max_file_size_kb: 20_000,
            participant_update_limit: 75,
            room_management_url: String::new(),
            max_message_bytes: 32_768,
        }
    }
}

/// Allowed ranges, inclusive. Upper bounds beyond Lync's are chosen to keep one message or file within what
/// one request can carry (a message up to 1 MiB, a file up to 2 GiB).
pub const DEFAULT_CHAT_HISTORY_RANGE: (u32, u32) = (1, 500);
pub const MAX_FILE_SIZE_KB_RANGE: (u32, u32) = (1, 2_097_152);
pub const PARTICIPANT_UPDATE_LIMIT_RANGE: (u32, u32) = (1, 1_000_000);
pub const MAX_MESSAGE_BYTES_RANGE: (u32, u32) = (1, 1_048_576);

impl ChatConfig {
    pub fn validate(
        default_chat_history: i64,
        max_file_size_kb: i64,
        participant_update_limit: i64,
        room_management_url: String,
        max_message_bytes: i64,
    ) -> Result<Self, ValidationError> {
        fn range(field: &str, v: i64, (lo, hi): (u32, u32)) -> Result<u32, ValidationError> {
            if v < i64::from(lo) || v > i64::from(hi) {
                return Err(ValidationError::new(field, format!("must be between {lo} and {hi}")));
            }
            Ok(v as u32)
        }
        let url = match http_url(&room_management_url) {
            Some(url) => url,
            None if room_management_url.trim().is_empty() && room_management_url.chars().count() <= MAX_URL_CHARS => {
                String::new()
            }
            None => {
                return Err(ValidationError::new(
                    "room_management_url",
                    "must be empty or an http:// or https:// URL of at most 2048 characters",
                ));
            }
        };
        Ok(Self {
            default_chat_history: range("default_chat_history", default_chat_history, DEFAULT_CHAT_HISTORY_RANGE)?,
            max_file_size_kb: range("max_file_size_kb", max_file_size_kb, MAX_FILE_SIZE_KB_RANGE)?,
            participant_update_limit: range(
                "participant_update_limit",
                participant_update_limit,
                PARTICIPANT_UPDATE_LIMIT_RANGE,
            )?,
            room_management_url: url,
            max_message_bytes: range("max_message_bytes", max_message_bytes, MAX_MESSAGE_BYTES_RANGE)?,
        })
    }
}

/// The longest URL accepted (in characters, as given: surrounding whitespace counts, as in the OpenAPI document).
pub const MAX_URL_CHARS: usize = 2048;

/// An absolute http(s) URL with a non-empty host and no whitespace or control characters, once the surrounding
/// whitespace is trimmed; `raw` itself is at most [`MAX_URL_CHARS`] characters.
pub fn http_url(raw: &str) -> Option<String> {
    if raw.chars().count() > MAX_URL_CHARS {
        return None;
    }
    let url = raw.trim();
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    (!host.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control())).then(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The limit is on the URL as given, in characters (as JSON Schema's maxLength counts): surrounding whitespace
    /// counts, and a multi-byte character is one.
    #[test]
    fn urls_are_limited_as_given_in_characters() {
        let url = |n: usize| format!("https://ê9ý{}", "*".repeat(n - 11));
        assert_eq!(http_url(&url(2048)).map(|u| u.chars().count()), Some(2048));
        assert_eq!(http_url(&url(2049)), None);
        assert_eq!(http_url(&format!("\r\n {}", url(2046))), None, "2046 characters after 3 of whitespace");
        assert_eq!(http_url(&format!("\r\n {}", url(2045))), Some(url(2045)));
        assert_eq!(http_url(&format!("  {}  ", url(2044))), Some(url(2044)));
        assert_eq!(http_url("ftp://example.com"), None);
        assert_eq!(http_url("https:///path"), None);
        assert_eq!(http_url("https://exa mple.com"), None);
    }

    #[test]
    fn scopes_parse_and_print() {
        for raw in ["global", "site:emea", "pool:pc1", "user:alice@example.com"] {
            assert_eq!(PolicyScope::parse(raw).unwrap().to_string(), raw);
        }
        for bad in ["", "Global", "site:", "user:nobody", "tenant:x"] {
            assert!(PolicyScope::parse(bad).is_err(), "{bad}");
        }
        assert!(ConfigScope::parse("user:alice@example.com").is_err());
    }

    #[test]
    fn policy_precedence_most_specific_wins() {
        let user = Address::parse("a", "alice@example.com").unwrap();
        let (site, pool) = (Name::parse("s", "emea").unwrap(), Name::parse("p", "pc1").unwrap());
        let chain = PolicyScope::chain(&user, &site, &pool);
        let set = |entries: &[(&str, bool)]| -> HashMap<PolicyScope, bool> {
            entries.iter().map(|(s, v)| (PolicyScope::parse(s).unwrap(), *v)).collect()
        };
        let check = |entries: &[(&str, bool)], expect: Option<(&str, bool)>| {
            let map = set(entries);
            let got = resolve(&chain, |s| map.get(s).copied()).map(|(s, v)| (s.to_string(), v));
            assert_eq!(got, expect.map(|(s, v)| (s.to_owned(), v)), "{entries:?}");
        };
        check(&[], None);
        check(&[("global", true)], Some(("global", true)));
        check(&[("global", true), ("site:emea", false)], Some(("site:emea", false)));
        check(&[("global", true), ("site:other", false)], Some(("global", true)));
        check(&[("site:emea", false), ("pool:pc1", true)], Some(("pool:pc1", true)));
        check(&[("pool:pc1", true), ("user:alice@example.com", false)], Some(("user:alice@example.com", false)));
        check(&[("user:bob@example.com", true), ("global", false)], Some(("global", false)));
    }

    #[test]
    fn config_precedence() {
        let (site, pool) = (Name::parse("s", "emea").unwrap(), Name::parse("p", "pc1").unwrap());
        let chain = ConfigScope::chain(&site, &pool);
        let map: HashMap<ConfigScope, u32> =
            [(ConfigScope::Global, 30), (ConfigScope::Site(site.clone()), 50)].into_iter().collect();
        assert_eq!(resolve(&chain, |s| map.get(s).copied()), Some((ConfigScope::Site(site), 50)));
    }

    #[test]
    fn config_ranges() {
        let ok = |h, f, p, u: &str, m| ChatConfig::validate(h, f, p, u.to_owned(), m);
        assert_eq!(ok(30, 20_000, 75, "", 32_768), Ok(ChatConfig::default()));
        assert_eq!(ok(0, 1, 1, "", 1).unwrap_err().field, "default_chat_history");
        assert_eq!(ok(501, 1, 1, "", 1).unwrap_err().field, "default_chat_history");
        assert!(ok(500, 1, 1, "", 1).is_ok());
        assert_eq!(ok(1, 0, 1, "", 1).unwrap_err().field, "max_file_size_kb");
        assert_eq!(ok(1, 1, 0, "", 1).unwrap_err().field, "participant_update_limit");
        assert_eq!(ok(1, 1, 1, "ftp://x", 1).unwrap_err().field, "room_management_url");
        assert!(ok(1, 1, 1, "https://rooms.example.com/manage", 1).is_ok());
        assert_eq!(ok(1, 1, 1, "", 0).unwrap_err().field, "max_message_bytes");
        assert_eq!(ok(1, 1, 1, "", 1_048_577).unwrap_err().field, "max_message_bytes");
        assert_eq!(ok(1, 1, 1, "", -5).unwrap_err().field, "max_message_bytes");
    }
}
