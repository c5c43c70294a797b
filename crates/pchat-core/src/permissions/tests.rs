//! The table of PRODUCT.md §3, one row per (privacy, type, relation), checked against `decide`.

use super::*;
use crate::names::Address;

/// How the test user relates to the room and its category.
#[derive(Debug, Clone, Copy)]
enum Rel {
    /// On the member list and in scope.
    Member,
    /// In the category scope, on no list.
    InScope,
    /// Not in the category scope.
    OutOfScope,
    /// On the member list, but a deny entry of the category covers them (ethical wall).
    DeniedMember,
    /// On the manager list only.
    ManagerOnly,
    /// On the presenter list.
    Presenter,
    /// Administrator, on no list and out of scope.
    Admin,
}

const USER: &str = "u@example.com";

fn decide_for(privacy: Privacy, room_type: RoomType, disabled: bool, rel: Rel) -> Access {
    let p = |s: &str| Principal::parse("p", s).unwrap();
    let user = p(USER);
    let mut scope = Scope { allowed: vec![p("domain:example.com")], denied: vec![] };
    let (mut members, mut managers, mut presenters) =
        (vec![p("other@example.com")], vec![p("boss@example.com")], vec![]);
    let mut is_admin = false;
    let mut address = USER;
    match rel {
        Rel::Member => members.push(user),
        Rel::InScope => {}
        Rel::OutOfScope => address = "u@elsewhere.org",
        Rel::DeniedMember => {
            members.push(user.clone());
            scope.denied.push(user);
        }
        Rel::ManagerOnly => managers.push(user),
        Rel::Presenter => presenters.push(user),
        Rel::Admin => {
            is_admin = true;
            address = "admin@elsewhere.org";
        }
    }
    let who = Identity::new(Address::parse("a", address).unwrap(), []);
    let acl = RoomAcl { privacy, room_type, disabled, members: &members, managers: &managers, presenters: &presenters };
    decide(&who, is_admin, &scope, &acl)
}

/// Expected access as a four-letter string: S(ee) R(ead) P(ost) M(anage), '-' where denied.
fn check(privacy: Privacy, room_type: RoomType, disabled: bool, rel: Rel, expect: &str) {
    let a = decide_for(privacy, room_type, disabled, rel);
    let got: String = [(a.see, 'S'), (a.read, 'R'), (a.post, 'P'), (a.manage, 'M')]
        .iter()
        .map(|&(b, c)| if b { c } else { '-' })
        .collect();
    assert_eq!(got, expect, "{privacy:?} {room_type:?} disabled={disabled} {rel:?}");
}

#[test]
fn permission_table() {
    use Privacy::*;
    use Rel::*;
    use RoomType::*;
    #[rustfmt::skip]
    let table: &[(Privacy, RoomType, Rel, &str)] = &[
        // Open: anyone in scope finds, reads and posts; no member list matters.
        (Open,   Normal,     Member,       "SRP-"),
        (Open,   Normal,     InScope,      "SRP-"),
        (Open,   Normal,     OutOfScope,   "----"),
        (Open,   Normal,     DeniedMember, "----"),
        (Open,   Normal,     ManagerOnly,  "SRPM"),
        (Open,   Normal,     Presenter,    "SRP-"),
        (Open,   Normal,     Admin,        "S--M"),
        (Open,   Auditorium, Member,       "SR--"),
        (Open,   Auditorium, InScope,      "SR--"),
        (Open,   Auditorium, OutOfScope,   "----"),
        (Open,   Auditorium, DeniedMember, "----"),
        (Open,   Auditorium, ManagerOnly,  "SR-M"),
        (Open,   Auditorium, Presenter,    "SRP-"),
        (Open,   Auditorium, Admin,        "S--M"),
        // Closed: anyone in scope finds it; members and presenters enter; managers only manage.
        (Closed, Normal,     Member,       "SRP-"),
        (Closed, Normal,     InScope,      "S---"),
        (Closed, Normal,     OutOfScope,   "----"),
        (Closed, Normal,     DeniedMember, "----"),
        (Closed, Normal,     ManagerOnly,  "S--M"),
        (Closed, Normal,     Presenter,    "SRP-"),
        (Closed, Normal,     Admin,        "S--M"),
        (Closed, Auditorium, Member,       "SR--"),
        (Closed, Auditorium, InScope,      "S---"),
        (Closed, Auditorium, OutOfScope,   "----"),
        (Closed, Auditorium, DeniedMember, "----"),
        (Closed, Auditorium, ManagerOnly,  "S--M"),
        (Closed, Auditorium, Presenter,    "SRP-"),
        (Closed, Auditorium, Admin,        "S--M"),
        // Secret: only its members, presenters and managers know it exists.
        (Secret, Normal,     Member,       "SRP-"),
        (Secret, Normal,     InScope,      "----"),
        (Secret, Normal,     OutOfScope,   "----"),
        (Secret, Normal,     DeniedMember, "----"),
        (Secret, Normal,     ManagerOnly,  "S--M"),
        (Secret, Normal,     Presenter,    "SRP-"),
        (Secret, Normal,     Admin,        "S--M"),
        (Secret, Auditorium, Member,       "SR--"),
        (Secret, Auditorium, InScope,      "----"),
        (Secret, Auditorium, OutOfScope,   "----"),
        (Secret, Auditorium, DeniedMember, "----"),
        (Secret, Auditorium, ManagerOnly,  "S--M"),
        (Secret, Auditorium, Presenter,    "SRP-"),
        (Secret, Auditorium, Admin,        "S--M"),
    ];
    assert_eq!(table.len(), Privacy::ALL.len() * RoomType::ALL.len() * 7);
    for &(privacy, room_type, rel, expect) in table {
        check(privacy, room_type, false, rel, expect);
    }
}

#[test]
fn disabled_rooms_are_hidden_and_silent() {
    for &privacy in Privacy::ALL {
        for &room_type in RoomType::ALL {
            for rel in [Rel::Member, Rel::InScope, Rel::OutOfScope, Rel::DeniedMember, Rel::Presenter] {
                check(privacy, room_type, true, rel, "----");
            }
            check(privacy, room_type, true, Rel::ManagerOnly, "S--M");
            check(privacy, room_type, true, Rel::Admin, "S--M");
        }
    }
}

#[test]
fn creators() {
    let p = |s: &str| Principal::parse("p", s).unwrap();
    let scope = Scope { allowed: vec![p("*")], denied: vec![p("group:analysts")] };
    let creators = vec![p("group:leads")];
    let lead = Identity::new(Address::parse("a", "l@example.com").unwrap(), ["leads".to_owned()]);
    let walled =
        Identity::new(Address::parse("a", "w@example.com").unwrap(), ["leads".to_owned(), "analysts".to_owned()]);
    let plain = Identity::new(Address::parse("a", "p@example.com").unwrap(), []);
    assert!(may_create_room(&lead, false, &scope, &creators));
    assert!(!may_create_room(&walled, false, &scope, &creators), "deny wins over creator");
    assert!(!may_create_room(&plain, false, &scope, &creators));
    assert!(may_create_room(&plain, true, &scope, &creators));
}

#[test]
fn roster_hysteresis() {
    // (suppressed before, participants, limit) -> suppressed after
    let cases = [
        (false, 75, 75, false),
        (false, 76, 75, true),
        (true, 76, 75, true),
        (true, 61, 75, true),
        (true, 60, 75, true), // 60 is exactly 80 % of 75: not yet below it
        (true, 59, 75, false),
        (false, 59, 75, false),
        (true, 79, 100, false),
        (true, 80, 100, true),
    ];
    for (before, n, limit, after) in cases {
        assert_eq!(roster_suppressed(before, n, limit), after, "{before} {n} {limit}");
    }
}
