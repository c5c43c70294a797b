//! Validated names: object names, descriptions and user addresses. Each type can only be built
//! through its `parse` constructor, so holding one proves the value is valid.

use std::fmt;

/// A validation failure: which field (as named on the wire) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Longest name or description, in characters (Lync: `nvarchar(256)`).
pub const MAX_NAME_CHARS: usize = 256;

/// The name of a category, room, add-in or group: 1–256 characters, not blank, no control characters.
/// Leading and trailing whitespace is significant only in that a name of whitespace alone is rejected;
/// the stored name is trimmed so that "Traders " and "Traders" cannot both exist.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ValidationError::new(field, "must not be empty or blank"));
        }
        // Counted as given (surrounding whitespace included), as the OpenAPI document's maxLength counts.
        if raw.chars().count() > MAX_NAME_CHARS {
            return Err(ValidationError::new(field, format!("must be at most {MAX_NAME_CHARS} characters")));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(ValidationError::new(field, "must not contain control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A free-text description: at most 256 characters; line breaks and tabs allowed, other control characters not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

impl Description {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        if raw.chars().count() > MAX_NAME_CHARS {
            return Err(ValidationError::new(field, format!("must be at most {MAX_NAME_CHARS} characters")));
        }
        if raw.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
            return Err(ValidationError::new(field, "must not contain control characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A user's address, `local@domain` (a SIP URI without `sip:`). A `sip:` prefix is stripped; the address is
/// lower-cased because SIP and mail addresses are compared case-insensitively in practice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(String);

impl Address {
    /// Parses an address of at most [`MAX_NAME_CHARS`] characters as given (surrounding spaces and a `sip:`
    /// prefix included, as the API document limits it).
    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        if raw.chars().count() > MAX_NAME_CHARS {
            return Err(ValidationError::new(field, format!("must be at most {MAX_NAME_CHARS} characters")));
        }
        let raw = raw.trim();
        let raw = raw.strip_prefix("sip:").or_else(|| raw.strip_prefix("SIP:")).unwrap_or(raw);
        let lower = raw.to_lowercase();
        let Some((local, domain)) = lower.split_once('@') else {
            return Err(ValidationError::new(field, "must be an address of the form user@domain"));
        };
        if local.is_empty() || !local.chars().all(|c| c.is_ascii_alphanumeric() || "._-+'".contains(c)) {
            return Err(ValidationError::new(field, "has an invalid user part"));
        }
        validate_domain(field, domain)?;
        if lower.len() > MAX_NAME_CHARS {
            return Err(ValidationError::new(field, format!("must be at most {MAX_NAME_CHARS} characters")));
        }
        Ok(Self(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, d)| d)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a DNS-style domain: dot-separated labels of letters, digits and hyphens.
pub fn validate_domain(field: &str, domain: &str) -> Result<(), ValidationError> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok { Ok(()) } else { Err(ValidationError::new(field, "has an invalid domain")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths are counted as given, surrounding whitespace included (as the OpenAPI document counts them).
    #[test]
    fn names_are_limited_as_given() {
        let name = format!("\u{a0}{}", "n".repeat(MAX_NAME_CHARS - 1));
        assert!(Name::parse("name", &name).is_ok());
        assert!(Name::parse("name", &format!(" {name}")).is_err());
        assert!(Address::parse("user", &format!("{}alice@example.com", " ".repeat(200))).is_ok());
        assert!(Address::parse("user", &format!("{}alice@example.com", " ".repeat(250))).is_err());
    }

    fn check_name(raw: &str, expect_ok: bool) {
        assert_eq!(Name::parse("name", raw).is_ok(), expect_ok, "{raw:?}");
    }

    #[test]
    fn names() {
        check_name("Traders", true);
        check_name("  Traders ", true);
        check_name("", false);
        check_name("   ", false);
        check_name("bad\u{7}bell", false);
        check_name("new\nline", false);
        check_name(&"x".repeat(256), true);
        check_name(&"x".repeat(257), false);
        check_name(&"é".repeat(256), true);
        assert_eq!(Name::parse("name", " a ").map(Name::into_string), Ok("a".to_owned()));
    }

    #[test]
    fn addresses() {
        let a = Address::parse("address", "sip:Alice@Example.COM").map(|a| a.as_str().to_owned());
        assert_eq!(a, Ok("alice@example.com".to_owned()));
        for bad in ["alice", "@example.com", "alice@", "alice@exa mple.com", "al ice@example.com", "a@-x.com"] {
            assert!(Address::parse("address", bad).is_err(), "{bad}");
        }
        assert_eq!(
            Address::parse("a", "bob.smith@corp.example.com").map(|a| a.domain().to_owned()),
            Ok("corp.example.com".into())
        );
    }

    #[test]
    fn descriptions() {
        assert!(Description::parse("description", "line one\nline two").is_ok());
        assert!(Description::parse("description", "nul\0").is_err());
        assert!(Description::parse("description", &"d".repeat(257)).is_err());
        assert!(Description::parse("description", "").is_ok());
    }
}
