//! Finishing the generated OpenAPI document so that it says what the server enforces: every error response is an
//! `application/problem+json` Problem, every operation lists the errors it can really give (from one rule each,
//! not repeated per handler), list parameters carry their ranges, and request fields carry the patterns, lengths
//! and enums of the validators in `pchat-core` (the table [`FIELD_RULES`], checked against the document by a
//! test so that a renamed field cannot silently lose its rule).

use pchat_core::config::{
    DEFAULT_CHAT_HISTORY_RANGE, MAX_FILE_SIZE_KB_RANGE, MAX_MESSAGE_BYTES_RANGE, PARTICIPANT_UPDATE_LIMIT_RANGE,
};
use serde_json::{Map, Value, json};

/// A name (category, room, group, add-in, scope name): 1–256 characters once trimmed, no control characters.
pub(crate) const NAME: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";
/// A description: at most 256 characters, no control characters but line breaks and tabs.
pub(crate) const DESCRIPTION: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";
/// A user address (`user@domain`, ASCII, an optional `sip:` prefix and surrounding spaces).
pub(crate) const ADDRESS: &str = concat!(
    r"^\s*(sip:|SIP:)?[A-Za-z0-9._+'-]+@",
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\s*$"
);
/// A principal: `*`, `group:NAME`, `domain:DOMAIN` or a user address.
pub(crate) const PRINCIPAL: &str = concat!(
    r"^\s*(\*|group:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*",
    r"|domain:[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
    r"|(sip:|SIP:)?[A-Za-z0-9._+'-]+@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)\s*$"
);
/// A member of a group: a user address or `group:NAME`.
pub(crate) const GROUP_MEMBER: &str = concat!(
    r"^\s*(group:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*",
    r"|(sip:|SIP:)?[A-Za-z0-9._+'-]+@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)\s*$"
);
/// A policy scope: `global`, `site:NAME`, `pool:NAME`, `user:ADDRESS`.
pub(crate) const POLICY_SCOPE: &str = concat!(
    r"^(global|(site|pool):[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*",
    r"|user:\s*(sip:|SIP:)?[A-Za-z0-9._+'-]+@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\s*)$"
);
/// A configuration scope: `global`, `site:NAME`, `pool:NAME`.
pub(crate) const CONFIG_SCOPE: &str =
    r"^(global|(site|pool):[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*)$";
/// A compliance configuration scope: `global`, `pool:NAME`.
pub(crate) const COMPLIANCE_SCOPE: &str =
    r"^(global|pool:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*)$";
/// An http(s) URL: a host after the scheme, no whitespace or control characters (surrounding spaces are trimmed).
pub(crate) const HTTP_URL: &str = r"^\s*https?://[^/?#\s\x00-\x1f\x7f-\x9f][^\s\x00-\x1f\x7f-\x9f]*\s*$";
/// Empty, or an http(s) URL.
pub(crate) const OPTIONAL_HTTP_URL: &str = r"^\s*(https?://[^/?#\s\x00-\x1f\x7f-\x9f][^\s\x00-\x1f\x7f-\x9f]*)?\s*$";
/// A message's text: not blank, no control characters but line breaks and tabs. (Its size limit is configurable,
/// so it is not in the schema: over it, 413.)
pub(crate) const MESSAGE_TEXT: &str =
    r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";
/// An uploaded file's name: no path separators or control characters, a character other than dots and spaces.
pub(crate) const FILE_NAME: &str = r"^[^/\\\x00-\x1f\x7f-\x9f]*[^\s./\\\x00-\x1f\x7f-\x9f][^/\\\x00-\x1f\x7f-\x9f]*$";
/// A cursor of a list ordered by name: hex pairs.
pub(crate) const NAME_CURSOR: &str = r"^([0-9a-f]{2})*$";
/// A cursor of search results (and a topic feed's matches): `ts.room.seq` of the last result.
pub(crate) const SEARCH_CURSOR: &str = r"^-?[0-9]{1,18}\.-?[0-9]{1,18}\.-?[0-9]{1,18}$";
/// A cursor of a list ordered by numeric id: the hex of its decimal digits.
pub(crate) const ID_CURSOR: &str = r"^(3[0-9]){1,18}$";

/// An Argon2id PHC string (its cost is checked by the server: at least m=19456, t=2).
pub(crate) const ARGON2ID_PHC: &str =
    r"^\$argon2id\$v=19\$m=[0-9]{1,9},t=[0-9]{1,9},p=[0-9]{1,3}\$[A-Za-z0-9+/]{11,64}\$[A-Za-z0-9+/]{16,86}$";

/// The longest URL, as the validator counts it.
const MAX_URL: u32 = pchat_core::config::MAX_URL_CHARS as u32;

/// Constraints of request fields: (schema, property, JSON merged into the property's schema). For a list
/// property, the constraint applies to its items.
pub(crate) const FIELD_RULES: &[(&str, &str, Rule)] = &[
    ("NewUser", "address", Rule::Pattern(ADDRESS, 256)),
    ("NewUser", "display_name", Rule::Pattern(NAME, 256)),
    ("NewUser", "password", Rule::Length(8, 1024)),
    ("ImportedUser", "address", Rule::Pattern(ADDRESS, 256)),
    ("ImportedUser", "display_name", Rule::Pattern(NAME, 256)),
    ("ImportedUser", "password_hash", Rule::Pattern(ARGON2ID_PHC, 1024)),
    ("NewGroup", "name", Rule::Pattern(NAME, 256)),
    ("RoleGrant", "user", Rule::Pattern(ADDRESS, 256)),
    ("RoleGrant", "role", Rule::Enum(&["admin", "user_admin"])),
    ("NewCategory", "name", Rule::Pattern(NAME, 256)),
    ("NewCategory", "description", Rule::Pattern(DESCRIPTION, 256)),
    ("NewCategory", "allowed_members", Rule::Items(PRINCIPAL)),
    ("NewCategory", "denied_members", Rule::Items(PRINCIPAL)),
    ("NewCategory", "creators", Rule::Items(PRINCIPAL)),
    ("CategoryPatch", "name", Rule::Pattern(NAME, 256)),
    ("CategoryPatch", "description", Rule::Pattern(DESCRIPTION, 256)),
    ("NewRoom", "name", Rule::Pattern(NAME, 256)),
    ("NewRoom", "description", Rule::Pattern(DESCRIPTION, 256)),
    ("NewRoom", "privacy", Rule::Enum(&["open", "closed", "secret"])),
    ("NewRoom", "type", Rule::Enum(&["normal", "auditorium"])),
    ("NewRoom", "invitations", Rule::Enum(&["inherit", "off"])),
    ("NewRoom", "members", Rule::Items(PRINCIPAL)),
    ("NewRoom", "managers", Rule::Items(PRINCIPAL)),
    ("NewRoom", "presenters", Rule::Items(PRINCIPAL)),
    ("RoomPatch", "name", Rule::Pattern(NAME, 256)),
    ("RoomPatch", "description", Rule::Pattern(DESCRIPTION, 256)),
    ("RoomPatch", "privacy", Rule::Enum(&["open", "closed", "secret"])),
    ("RoomPatch", "type", Rule::Enum(&["normal", "auditorium"])),
    ("RoomPatch", "invitations", Rule::Enum(&["inherit", "off"])),
    ("Addin", "name", Rule::Pattern(NAME, 256)),
    ("Addin", "url", Rule::Pattern(HTTP_URL, MAX_URL)),
    ("AddinPatch", "name", Rule::Pattern(NAME, 256)),
    ("AddinPatch", "url", Rule::Pattern(HTTP_URL, MAX_URL)),
    ("ConfigurationPut", "default_chat_history", Rule::Range(DEFAULT_CHAT_HISTORY_RANGE)),
    ("ConfigurationPut", "max_file_size_kb", Rule::Range(MAX_FILE_SIZE_KB_RANGE)),
    ("ConfigurationPut", "participant_update_limit", Rule::Range(PARTICIPANT_UPDATE_LIMIT_RANGE)),
    ("ConfigurationPut", "max_message_bytes", Rule::Range(MAX_MESSAGE_BYTES_RANGE)),
    ("ConfigurationPut", "room_management_url", Rule::Pattern(OPTIONAL_HTTP_URL, MAX_URL)),
    ("ComplianceConfiguration", "adapter", Rule::Enum(&["xml", "csv", "jsonl"])),
    ("ComplianceConfiguration", "output_dir", Rule::Pattern(r"^(/.*)?$", 4096)),
    ("ComplianceConfiguration", "run_interval_secs", Rule::Range((60, 30 * 24 * 3600))),
    ("ComplianceConfiguration", "retention_days", Rule::Range((0, 36_500))),
    ("MarkRead", "seq", Rule::Minimum(0)),
    ("PostMessage", "text", Rule::Pattern(MESSAGE_TEXT, u32::MAX)),
    ("RemoveMessages", "replace_with", Rule::Pattern(DESCRIPTION, 1024)),
    ("PostMessage", "story_title", Rule::Pattern(NAME, 256)),
    ("PostMessage", "client_id", Rule::Pattern(r"^[^\x00-\x1f\x7f-\x9f]+$", 128)),
    ("ClearRoom", "end_date", Rule::DateTime),
    ("RemoveMessages", "author", Rule::Pattern(ADDRESS, 256)),
    ("RemoveMessages", "start_date", Rule::DateTime),
    ("RemoveMessages", "end_date", Rule::DateTime),
    ("RemoveMessages", "match", Rule::Enum(&["all", "any", "exact"])),
    ("PasswordSet", "password", Rule::Length(8, 1024)),
    ("PasswordChange", "new_password", Rule::Length(8, 1024)),
    ("PasswordChange", "current_password", Rule::Length(0, 1024)),
    ("SessionRequest", "user", Rule::Pattern(ADDRESS, 320)),
    ("NewFeed", "name", Rule::Pattern(NAME, 256)),
    ("NewFeed", "keywords", Rule::Length(1, 1000)),
    ("NewFeed", "match", Rule::Enum(&["all", "any", "exact"])),
    ("NewFeed", "authors", Rule::Items(ADDRESS)),
    ("FeedPatch", "name", Rule::Pattern(NAME, 256)),
    ("FeedPatch", "keywords", Rule::Length(1, 1000)),
    ("FeedPatch", "match", Rule::Enum(&["all", "any", "exact"])),
    ("FeedPatch", "authors", Rule::Items(ADDRESS)),
    ("SessionRequest", "password", Rule::Length(0, 1024)),
];

/// Whole schemas replaced because their rules span fields: a list change is either `replace` or `add` /
/// `remove`; choosing active servers is exactly one of `add`/`remove` (at least one name), `replace`, `swap`;
/// removing messages needs at least one criterion.
fn schema_overrides() -> Vec<(&'static str, Value)> {
    let list_change = |item: &str| {
        let items = json!({ "type": "array", "items": { "type": "string", "pattern": item } });
        json!({
            "description": "Lync's list-modifier idiom: {\"add\": [...], \"remove\": [...]} or {\"replace\": [...]}",
            "oneOf": [
                { "type": "object", "properties": { "replace": items }, "required": ["replace"], "additionalProperties": false },
                { "type": "object", "properties": { "add": items, "remove": items, "replace": { "type": "null" } },
                  "additionalProperties": false }
            ]
        })
    };
    let names = json!({ "type": "array", "items": { "type": "string" } });
    let some_names = json!({ "type": "array", "items": { "type": "string" }, "minItems": 1 });
    let not_swap = json!({ "type": "boolean", "const": false });
    // `replace` is the one field the server reads `null` in as absent.
    let no_replace = json!({ "type": "null" });
    vec![
        ("ListChange", list_change(PRINCIPAL)),
        ("GroupMemberChange", list_change(GROUP_MEMBER)),
        (
            "ActiveServers",
            json!({
                "description": "Exactly one of: add and/or remove (server names), replace (the active set), swap",
                "oneOf": [
                    { "type": "object", "additionalProperties": false, "required": ["swap"],
                      "properties": { "swap": { "type": "boolean", "const": true }, "replace": no_replace } },
                    { "type": "object", "additionalProperties": false, "required": ["replace"],
                      "properties": { "replace": names, "swap": not_swap } },
                    { "type": "object", "additionalProperties": false,
                      "properties": { "add": names, "remove": names, "swap": not_swap, "replace": no_replace },
                      "anyOf": [
                          { "required": ["add"], "properties": { "add": some_names } },
                          { "required": ["remove"], "properties": { "remove": some_names } }
                      ] }
                ]
            }),
        ),
    ]
}

/// A constraint on a request field.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rule {
    /// A pattern and the longest length.
    Pattern(&'static str, u32),
    /// Shortest and longest length.
    Length(u32, u32),
    /// One of these words.
    Enum(&'static [&'static str]),
    /// Every item matches the pattern.
    Items(&'static str),
    /// An RFC 3339 time.
    DateTime,
    /// An integer in this range.
    Range((u32, u32)),
    /// An integer at least this.
    Minimum(i64),
}

impl Rule {
    fn schema(self) -> Value {
        match self {
            Self::Pattern(pattern, max) => json!({ "pattern": pattern, "maxLength": max }),
            Self::Length(min, max) => json!({ "minLength": min, "maxLength": max }),
            Self::Enum(words) => json!({ "enum": words }),
            Self::Items(pattern) => json!({ "items": { "type": "string", "pattern": pattern } }),
            Self::DateTime => json!({ "format": "date-time" }),
            Self::Range((min, max)) => json!({ "minimum": min, "maximum": max }),
            Self::Minimum(min) => json!({ "minimum": min }),
        }
    }
}

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// An OpenAPI link from an operation that creates or stores an object to the operations that take it: (path,
/// method, status, parameter, where the value is in the response, operation ids).
type Link = (&'static str, &'static str, &'static str, &'static str, &'static str, &'static [&'static str]);

const LINKS: &[Link] = &[
    (
        "/api/v1/rooms",
        "post",
        "201",
        "id",
        "$response.body#/id",
        &[
            "get_room",
            "update_room",
            "delete_room",
            "history",
            "post_message",
            "participants",
            "clear_room",
            "remove_messages",
        ],
    ),
    ("/api/v1/rooms", "post", "201", "room", "$response.body#/id", &["follow", "unfollow"]),
    (
        "/api/v1/categories",
        "post",
        "201",
        "id",
        "$response.body#/id",
        &["get_category", "update_category", "delete_category"],
    ),
    (
        "/api/v1/users",
        "post",
        "201",
        "address",
        "$response.body#/address",
        &["get_user", "delete_user", "effective_policy"],
    ),
    (
        "/api/v1/me/feeds",
        "post",
        "201",
        "id",
        "$response.body#/id",
        &["get_feed", "update_feed", "delete_feed", "feed_messages"],
    ),
    ("/api/v1/groups", "post", "201", "name", "$response.body#/name", &["get_group", "update_group", "delete_group"]),
    ("/api/v1/addins", "post", "201", "name", "$response.body#/name", &["get_addin", "update_addin", "delete_addin"]),
    ("/api/v1/policies/{scope}", "put", "200", "scope", "$response.body#/scope", &["get_policy", "delete_policy"]),
    ("/api/v1/configuration/{scope}", "put", "200", "scope", "$response.body#/scope", &["get_config", "delete_config"]),
];

fn add_links(doc: &mut Value) {
    for (path, method, status, parameter, value, targets) in LINKS {
        let pointer = format!("/paths/{}/{method}/responses/{status}", path.replace('/', "~1"));
        let Some(response) = doc.pointer_mut(&pointer).and_then(Value::as_object_mut) else { continue };
        let links = response.entry("links").or_insert_with(|| json!({}));
        for target in *targets {
            links[format!("{target}_{parameter}")] =
                json!({ "operationId": target, "parameters": { *parameter: value } });
        }
    }
}

/// Finishes the document (see the module's documentation).
pub(crate) fn finish(doc: &mut Value) {
    add_links(doc);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            for method in METHODS {
                if let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) {
                    finish_operation(path, method, op);
                }
            }
        }
    }
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        for (name, schema) in schema_overrides() {
            schemas.insert(name.to_owned(), schema);
        }
        // Removing messages needs at least one criterion (blank keywords are none).
        if let Some(remove) = schemas.get_mut("RemoveMessages").and_then(Value::as_object_mut) {
            remove.insert(
                "anyOf".to_owned(),
                json!([
                    { "required": ["author"], "properties": { "author": { "type": "string" } } },
                    { "required": ["start_date"], "properties": { "start_date": { "type": "string" } } },
                    { "required": ["end_date"], "properties": { "end_date": { "type": "string" } } },
                    { "required": ["keywords"], "properties": { "keywords": { "type": "string", "pattern": r"\S" } } }
                ]),
            );
        }
        for (schema, property, rule) in FIELD_RULES {
            let Some(target) = schemas.get_mut(*schema).and_then(|s| s.pointer_mut(&format!("/properties/{property}")))
            else {
                continue;
            };
            merge_into_string_schema(target, rule.schema());
        }
    }
}

/// Merges `constraint` into a property schema, which may be a plain schema or a `oneOf` / `anyOf` with null (an
/// optional field) or an array.
fn merge_into_string_schema(target: &mut Value, constraint: Value) {
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = target.get_mut(key).and_then(Value::as_array_mut) {
            for option in options.iter_mut().filter(|o| o.get("type") != Some(&json!("null"))) {
                merge_into_string_schema(option, constraint.clone());
            }
            return;
        }
    }
    if let (Some(target), Some(constraint)) = (target.as_object_mut(), constraint.as_object()) {
        // An optional field typed `["string", "null"]` keeps accepting null (absent) under an enum, which
        // otherwise would exclude it.
        let nullable = target.get("type").and_then(Value::as_array).is_some_and(|t| t.contains(&json!("null")));
        for (k, v) in constraint {
            let mut v = v.clone();
            if let (true, "enum", Some(words)) = (nullable, k.as_str(), v.as_array_mut()) {
                words.push(Value::Null);
            }
            target.insert(k.clone(), v);
        }
    }
}

fn finish_operation(path: &str, method: &str, op: &mut Map<String, Value>) {
    let secured = op.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
    let has_body = op.contains_key("requestBody");
    let has_path_params = path.contains('{');
    // Which parameters the operation takes: list pages carry ranges and cursor formats.
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for param in params.iter_mut() {
            finish_parameter(path, param);
        }
    }
    let responses = op.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else { return };
    let mut errors: Vec<(&str, &str)> = vec![
        ("400", "Invalid input: a parameter, the body or the path does not hold (problem+json names the field)"),
        ("503", "The service is unavailable (database unreachable, writes failing, or too busy: see Retry-After)"),
    ];
    if secured {
        errors.push(("401", "Not signed in, or the token expired or was revoked"));
        errors.push(("403", "Not allowed, or chat disabled by policy"));
    }
    if has_path_params || secured {
        errors.push(("404", "No such object, or not visible to the caller"));
    }
    if has_body {
        errors.push(("413", "The request body is too large"));
    }
    if method == "delete" && (path.starts_with("/api/v1/admins/") || path == "/api/v1/users/{address}") {
        errors.push(("409", "It would leave no administrator (last_administrator)"));
    }
    if (method == "post" && path.ends_with("/messages")) || path == "/api/v1/sessions" || path == "/api/v1/me/password"
    {
        errors.push(("429", "Too many requests: retry after Retry-After seconds"));
    }
    for (status, description) in errors {
        responses.entry(status.to_owned()).or_insert_with(|| json!({ "description": description }));
    }
    for (status, response) in responses.iter_mut() {
        if status.starts_with('4') || status.starts_with('5') {
            response["content"] = json!({
                "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } }
            });
        }
    }
}

fn finish_parameter(path: &str, param: &mut Value) {
    let name = param.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let location = param.get("in").and_then(Value::as_str).unwrap_or_default().to_owned();
    let events = path.ends_with("/events") || path.ends_with("/audit");
    let found = path == "/api/v1/search" || path.starts_with("/api/v1/me/feeds/");
    let constraint = match (location.as_str(), name.as_str()) {
        ("query", "limit") if events => json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
        ("query", "limit") => json!({ "type": "integer", "minimum": 1, "maximum": 500 }),
        ("query", "cursor") if events || path.ends_with("/invitations") => {
            json!({ "type": "string", "pattern": ID_CURSOR })
        }
        ("query", "cursor") if found => json!({ "type": "string", "pattern": SEARCH_CURSOR }),
        ("query", "cursor") => json!({ "type": "string", "pattern": NAME_CURSOR }),
        ("query", "match") => json!({ "type": "string", "enum": ["all", "any", "exact"] }),
        ("query", "name") if path.ends_with("/files") => {
            json!({ "type": "string", "pattern": FILE_NAME, "minLength": 1, "maxLength": 255 })
        }
        ("query", "author") => json!({ "type": "string", "pattern": ADDRESS, "maxLength": 256 }),
        ("query", "from" | "to") => json!({ "type": "string", "format": "date-time" }),
        ("path", "scope") if path.contains("/policies/") => json!({ "type": "string", "pattern": POLICY_SCOPE }),
        ("path", "scope") if path.contains("/compliance/") => json!({ "type": "string", "pattern": COMPLIANCE_SCOPE }),
        ("path", "scope") => json!({ "type": "string", "pattern": CONFIG_SCOPE }),
        ("path", "role") => json!({ "type": "string", "enum": ["admin", "user_admin"] }),
        ("path", "user") if path.starts_with("/api/v1/admins/") => json!({ "type": "string", "pattern": ADDRESS }),
        _ => return,
    };
    param["schema"] = constraint;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_names_a_field_of_the_document() {
        let (_, document) = crate::handlers::api_routes();
        let mut doc = serde_json::to_value(&document).unwrap();
        finish(&mut doc);
        for (schema, property, _) in FIELD_RULES {
            assert!(
                doc.pointer(&format!("/components/schemas/{schema}/properties/{property}")).is_some(),
                "{schema}.{property} is not in the document"
            );
        }
    }

    #[test]
    fn optional_enum_fields_accept_null_and_required_ones_do_not() {
        let (_, document) = crate::handlers::api_routes();
        let mut doc = serde_json::to_value(&document).unwrap();
        finish(&mut doc);
        for (schema, property) in [("FeedPatch", "match"), ("NewFeed", "match"), ("RoomPatch", "privacy")] {
            let words = &doc["components"]["schemas"][schema]["properties"][property]["enum"];
            assert!(words.as_array().unwrap().contains(&Value::Null), "{schema}.{property}: {words}");
        }
        let role = &doc["components"]["schemas"]["RoleGrant"]["properties"]["role"]["enum"];
        assert!(!role.as_array().unwrap().contains(&Value::Null), "{role}");
    }

    #[test]
    fn every_link_starts_at_an_operation_and_names_one() {
        let (_, document) = crate::handlers::api_routes();
        let mut doc = serde_json::to_value(&document).unwrap();
        finish(&mut doc);
        let ids: Vec<String> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| {
                item.as_object().unwrap().values().filter_map(|op| op["operationId"].as_str().map(str::to_owned))
            })
            .collect();
        for (path, method, status, _, _, targets) in LINKS {
            let response = &doc["paths"][path][method]["responses"][status];
            assert!(response["links"].is_object(), "{method} {path} {status} has no response to link from");
            for target in *targets {
                assert!(ids.iter().any(|id| id == target), "no operation {target}");
            }
        }
    }

    #[test]
    fn error_responses_are_problem_documents_and_limits_have_ranges() {
        let (_, document) = crate::handlers::api_routes();
        let mut doc = serde_json::to_value(&document).unwrap();
        finish(&mut doc);
        let rooms = &doc["paths"]["/api/v1/rooms"]["get"];
        assert!(rooms["responses"]["401"]["content"]["application/problem+json"].is_object());
        assert!(rooms["responses"]["503"].is_object());
        let limit = rooms["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!((limit["schema"]["minimum"].as_i64(), limit["schema"]["maximum"].as_i64()), (Some(1), Some(500)));
    }
}
