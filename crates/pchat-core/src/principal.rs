//! Principals (what access lists hold) and scope matching: `user@domain`, `group:NAME`, `domain:DOMAIN`, `*`.

use std::collections::BTreeSet;
use std::fmt;

use crate::names::{Address, Name, ValidationError, validate_domain};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    User(Address),
    Group(Name),
    Domain(String),
    Everyone,
}

impl Principal {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        if raw == "*" {
            return Ok(Self::Everyone);
        }
        if let Some(group) = raw.strip_prefix("group:") {
            return Ok(Self::Group(Name::parse(field, group)?));
        }
        if let Some(domain) = raw.strip_prefix("domain:") {
            let domain = domain.to_lowercase();
            validate_domain(field, &domain)?;
            return Ok(Self::Domain(domain));
        }
        Address::parse(field, raw).map(Self::User).map_err(|_| {
            ValidationError::new(
                field,
                format!("'{raw}' is not a principal (user@domain, group:NAME, domain:DOMAIN or *)"),
            )
        })
    }

    /// Parses a list, naming the field and rejecting duplicates silently (they collapse).
    pub fn parse_list<'a>(field: &str, raw: impl IntoIterator<Item = &'a str>) -> Result<Vec<Self>, ValidationError> {
        let set: BTreeSet<Self> = raw.into_iter().map(|r| Self::parse(field, r)).collect::<Result<_, _>>()?;
        Ok(set.into_iter().collect())
    }

    /// Whether this principal designates the user described by `who`.
    pub fn matches(&self, who: &Identity) -> bool {
        match self {
            Self::Everyone => true,
            Self::User(a) => *a == who.address,
            Self::Domain(d) => who.address.domain() == d,
            Self::Group(g) => who.groups.contains(g.as_str()),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(a) => write!(f, "{a}"),
            Self::Group(g) => write!(f, "group:{g}"),
            Self::Domain(d) => write!(f, "domain:{d}"),
            Self::Everyone => f.write_str("*"),
        }
    }
}

/// A signed-in user as access rules see them: the address and every group they belong to,
/// directly or through nesting (resolved by the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub address: Address,
    pub groups: BTreeSet<String>,
}

impl Identity {
    pub fn new(address: Address, groups: impl IntoIterator<Item = String>) -> Self {
        Self { address, groups: groups.into_iter().collect() }
    }

    pub fn matches_any(&self, list: &[Principal]) -> bool {
        list.iter().any(|p| p.matches(self))
    }
}

/// A category's scope: who may be placed on its rooms' role lists and who may find its rooms.
/// Deny wins over allow (ethical walls).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub allowed: Vec<Principal>,
    pub denied: Vec<Principal>,
}

impl Scope {
    pub fn contains(&self, who: &Identity) -> bool {
        who.matches_any(&self.allowed) && !who.matches_any(&self.denied)
    }

    /// Whether the scope names a group, so that deciding [`Scope::contains`] needs a user's groups.
    pub fn names_groups(&self) -> bool {
        self.allowed.iter().chain(&self.denied).any(|p| matches!(p, Principal::Group(_)))
    }

    /// Whether a principal may be written onto a role list of a room in this scope. A user is judged with
    /// their resolved groups (`identity`); a group, domain or `*` must itself be covered by an allowed entry
    /// (`*`, the same entry, or for a user its domain) and by no denied entry. A domain-wide allow therefore
    /// does not admit a group, whose members the rule cannot see: the administrator lists the group explicitly.
    pub fn admits(&self, principal: &Principal, identity: Option<&Identity>) -> bool {
        if let (Principal::User(_), Some(who)) = (principal, identity) {
            return self.contains(who);
        }
        self.allowed.iter().any(|e| covers(e, principal)) && !self.denied.iter().any(|e| covers(e, principal))
    }
}

/// Whether `entry` covers every user that `p` designates.
fn covers(entry: &Principal, p: &Principal) -> bool {
    match (entry, p) {
        (Principal::Everyone, _) => true,
        (a, b) if a == b => true,
        (Principal::Domain(d), Principal::User(u)) => u.domain() == d,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(addr: &str, groups: &[&str]) -> Identity {
        Identity::new(Address::parse("a", addr).unwrap(), groups.iter().map(|g| (*g).to_owned()))
    }

    fn list(items: &[&str]) -> Vec<Principal> {
        Principal::parse_list("list", items.iter().copied()).unwrap()
    }

    #[test]
    fn parse_and_display_round_trip() {
        for raw in ["*", "group:traders", "domain:example.com", "alice@example.com"] {
            assert_eq!(Principal::parse("p", raw).unwrap().to_string(), raw);
        }
        for bad in ["group:", "domain:", "domain:bad domain", "nobody", "", "group:a\u{1}b"] {
            assert!(Principal::parse("p", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        let alice = who("alice@example.com", &["traders"]);
        let check =
            |p: &str, expect: bool| assert_eq!(Principal::parse("p", p).unwrap().matches(&alice), expect, "{p}");
        check("*", true);
        check("alice@example.com", true);
        check("bob@example.com", false);
        check("domain:example.com", true);
        check("domain:other.com", false);
        check("group:traders", true);
        check("group:analysts", false);
    }

    #[test]
    fn deny_wins() {
        let scope = Scope { allowed: list(&["domain:example.com"]), denied: list(&["group:analysts"]) };
        assert!(scope.contains(&who("t@example.com", &["traders"])));
        assert!(!scope.contains(&who("a@example.com", &["analysts", "traders"])));
        assert!(!scope.contains(&who("x@other.com", &[])));
        assert!(!Scope::default().contains(&who("t@example.com", &[])), "a new category has an empty scope");
    }

    #[test]
    fn admits_principals() {
        let scope =
            Scope { allowed: list(&["domain:example.com", "group:ops"]), denied: list(&["domain:bad.example.com"]) };
        let p = |s: &str| Principal::parse("p", s).unwrap();
        assert!(scope.admits(&p("group:ops"), None));
        assert!(!scope.admits(&p("group:other"), None));
        assert!(!scope.admits(&p("*"), None));
        assert!(scope.admits(&p("domain:example.com"), None));
        assert!(!scope.admits(&p("domain:bad.example.com"), None));
        assert!(scope.admits(&p("u@example.com"), Some(&who("u@example.com", &[]))));
        assert!(!scope.admits(&p("u@other.com"), Some(&who("u@other.com", &[]))));
    }
}
