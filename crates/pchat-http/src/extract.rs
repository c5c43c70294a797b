//! Request extractors: strict JSON bodies (the offending field is named), bearer authentication, query values.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use pchat_api_types::codes;
use pchat_service::records::SessionRecord;
use pchat_service::{Caller, ClientInfo};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;
use crate::tls::ConnectionState;

/// A JSON body: `application/json`, within the body limit, matching `T` exactly (unknown fields rejected).
pub(crate) struct Json<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json =
            req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
                v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, codes::PAYLOAD_TOO_LARGE, "the request body is too large")
            } else {
                ApiError::validation("body", format!("cannot read the body: {e}"))
            }
        })?;
        if !is_json {
            return Err(ApiError::validation("body", "Content-Type must be application/json"));
        }
        parse_json(&bytes).map(Json)
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`, anything else is parsed like [`Json`].
pub(crate) struct OptionalJson<T>(pub(crate) T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let empty = req.headers().get(axum::http::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() == b"0")
            || (req.headers().get(axum::http::header::CONTENT_LENGTH).is_none()
                && req.headers().get(axum::http::header::TRANSFER_ENCODING).is_none());
        if empty {
            return Ok(Self(T::default()));
        }
        // `null` stands for "no body" too.
        let Json(value) = Json::<Option<T>>::from_request(req, state).await?;
        Ok(Self(value.unwrap_or_default()))
    }
}

/// Parses JSON strictly, naming the field at fault. The body must be an object (or `null` where that is allowed);
/// a number with an integral value is an integer wherever one is expected (`60.0` is `60`, as JSON Schema says).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::validation("body", format!("malformed JSON: {e}"))
        } else {
            ApiError::validation("body", format!("invalid JSON: {e}"))
        }
    })?;
    if !(value.is_object() || value.is_null()) {
        return Err(ApiError::validation("body", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(integral(value)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // A syntax error is the body's fault, not a field's.
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::validation("body", format!("malformed JSON: {inner}"));
        }
        let message = inner.to_string();
        let field = match unknown_field(&message) {
            Some(f) if path == "." || path == f || path.ends_with(&format!(".{f}")) => {
                if path == "." {
                    f
                } else {
                    path
                }
            }
            Some(f) => format!("{path}.{f}"),
            None if path == "." => "body".to_owned(),
            None => path,
        };
        ApiError::validation(&field, format!("invalid JSON: {message}"))
    })
}

/// Turns every floating-point number with an integral value (within the range of an i64) into an integer.
fn integral(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&f) => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, integral(v))).collect()),
        other => other,
    }
}

/// Extracts the name from serde's "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next().map(str::to_owned)
}

/// The signed-in caller, from `Authorization: Bearer …`, and their session. A token in the query string is
/// accepted only by the stream endpoint (browsers cannot set headers on a WebSocket): elsewhere it would end up in
/// access logs, proxies and browser history.
pub(crate) struct Auth(pub(crate) Caller, pub(crate) Session);

/// The session a request was authenticated with.
pub(crate) struct Session {
    pub(crate) token: String,
    pub(crate) record: SessionRecord,
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer(&parts.headers) else {
            return Err(ApiError::unauthenticated());
        };
        let (caller, record) = authenticate(state, parts, &token).await?;
        Ok(Self(caller, Session { token, record }))
    }
}

/// Resolves a token; an authenticated request takes its connection out of the unauthenticated bound.
pub(crate) async fn authenticate(
    state: &AppState,
    parts: &Parts,
    token: &str,
) -> Result<(Caller, SessionRecord), ApiError> {
    let resolved = state.service.authenticate(token).await.map_err(|e| match e {
        pchat_service::ServiceError::Unauthenticated => ApiError::unauthenticated(),
        other => other.into(),
    })?;
    if let Some(connection) = parts.extensions.get::<ConnectionState>() {
        connection.authenticated();
    }
    Ok(resolved)
}

/// Where the request comes from: the peer address (or, behind a trusted proxy, the client it names in
/// `X-Forwarded-For`) and the user agent.
pub(crate) struct Client(pub(crate) ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = crate::tls::peer(parts).map(|p| p.ip());
        let address = match peer {
            Some(p) if state.limits.trusted_proxies.contains(&p) => forwarded_for(&parts.headers).or(peer),
            other => other,
        };
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(512)
            .collect();
        Ok(Self(ClientInfo { address, user_agent }))
    }
}

/// The client a trusted proxy names: the last address of `X-Forwarded-For` (the one the proxy appended).
fn forwarded_for(headers: &axum::http::HeaderMap) -> Option<std::net::IpAddr> {
    let header = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).next_back()?;
    header.rsplit(',').next().and_then(|a| a.trim().parse().ok())
}

/// The bearer token of the `Authorization` header, if there is a non-empty one.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())?;
    let token = header.strip_prefix("Bearer ").map(str::trim)?;
    (!token.is_empty()).then(|| token.to_owned())
}

/// `If-Match: "N"`: the version an edit was computed from (`*` or no header: any). A stale version makes the
/// edit fail with 412 and change nothing.
pub(crate) struct IfMatch(pub(crate) Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(axum::http::header::IF_MATCH) else { return Ok(Self(None)) };
        let value = value.to_str().map(str::trim).unwrap_or("");
        if value == "*" {
            return Ok(Self(None));
        }
        value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| Self(Some(v)))
            .ok_or_else(|| ApiError::validation("If-Match", "must be an ETag of this object, like \"3\", or *"))
    }
}

/// Path parameters; a path that does not decode (invalid percent-encoding or UTF-8) is a problem document, not
/// axum's plain-text rejection.
pub(crate) struct Path<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| {
                ApiError::validation("path", format!("the path cannot be read: {}", rejection.body_text()))
            })
    }
}

/// Query parameters, read by name so that each error names its parameter.
pub(crate) struct QueryMap(pub(crate) HashMap<String, Vec<String>>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Self::parse(parts.uri.query().unwrap_or(""))
    }
}

impl QueryMap {
    /// Decodes a query string; a name or value that is not UTF-8 once decoded is a validation error naming it.
    pub(crate) fn parse(query: &str) -> Result<Self, ApiError> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded_pairs(query) {
            let key = k.map_err(|_| ApiError::validation("query", "a parameter name is not valid UTF-8"))?;
            let value = v.map_err(|_| ApiError::validation(&key, "is not valid UTF-8 once percent-decoded"))?;
            map.entry(key).or_default().push(value);
        }
        Ok(Self(map))
    }

    pub(crate) fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.first()).map(String::as_str)
    }

    /// Every value of a repeated parameter.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0.get(name).cloned().unwrap_or_default()
    }

    pub(crate) fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.str(name)
            .map(|v| v.parse::<i64>().map_err(|_| ApiError::validation(name, "must be an integer")))
            .transpose()
    }

    pub(crate) fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.str(name)
            .map(|v| match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::validation(name, "must be true or false")),
            })
            .transpose()
    }

    /// The filters and page of an event list (compliance events, the audit trail): `from`, `to` (RFC 3339),
    /// `room`, `user`, `type`, `limit` (1–1000, default 100) and `cursor`. Asks for one more than `limit`, which
    /// is returned too, so that the caller can tell whether there is a next page.
    pub(crate) fn event_query(&self) -> Result<(pchat_service::records::EventQuery, u32), ApiError> {
        let time = |name: &str| {
            self.str(name)
                .map(|v| {
                    pchat_service::time::parse_micros(name, v).map_err(|e| ApiError::validation(name, e.to_string()))
                })
                .transpose()
        };
        let max = pchat_service::compliance::MAX_EVENTS_PAGE;
        let limit = match self.int("limit")? {
            None => 100,
            Some(n) if (1..=i64::from(max)).contains(&n) => n as u32,
            Some(_) => return Err(ApiError::validation("limit", format!("must be between 1 and {max}"))),
        };
        let after_id = match self.str("cursor") {
            Some(c) => pchat_service::decode_cursor(c)?
                .parse()
                .map_err(|_| ApiError::validation("cursor", "is not a cursor of this list"))?,
            None => 0,
        };
        let query = pchat_service::records::EventQuery {
            pool: None,
            after_id,
            from_ts: time("from")?,
            to_ts: time("to")?,
            room_id: self.str("room").map(str::to_owned),
            actor: self.str("user").map(str::to_owned),
            kind: self.str("type").map(str::to_owned),
            limit: limit + 1,
        };
        Ok((query, limit))
    }

    /// `limit`: default 50, 1–500.
    pub(crate) fn limit(&self) -> Result<u32, ApiError> {
        match self.int("limit")? {
            None => Ok(50),
            Some(n) if (1..=500).contains(&n) => Ok(n as u32),
            Some(_) => Err(ApiError::validation("limit", "must be between 1 and 500")),
        }
    }
}

/// Splits and percent-decodes `a=b&c=d` (with `+` as space); each part is an error if it is not UTF-8 once
/// decoded.
fn form_urlencoded_pairs(query: &str) -> Vec<(Result<String, ()>, Result<String, ()>)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(raw: &str) -> Result<String, ()> {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        let pairs = form_urlencoded_pairs("q=a+b&name=%E2%9C%93&bad=%zz&x&broken=%FF");
        assert_eq!(pairs[0], (Ok("q".into()), Ok("a b".into())));
        assert_eq!(pairs[1], (Ok("name".into()), Ok("✓".into())));
        assert_eq!(pairs[2], (Ok("bad".into()), Ok("%zz".into())));
        assert_eq!(pairs[3], (Ok("x".into()), Ok("".into())));
        assert_eq!(pairs[4], (Ok("broken".into()), Err(())));
        let err = QueryMap::parse("limit=5&query=%C3%28").err().unwrap();
        assert_eq!(err.field.as_deref(), Some("query"));
    }

    #[test]
    fn names_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            name: String,
            n: Option<u32>,
        }
        assert_eq!(parse_json::<T>(br#"{"name": 5}"#).unwrap_err().field.as_deref(), Some("name"));
        assert_eq!(parse_json::<T>(br#"{"name": "a", "zzz": 1}"#).unwrap_err().field.as_deref(), Some("zzz"));
        assert_eq!(parse_json::<T>(br#"{"name": "a", "n": -1}"#).unwrap_err().field.as_deref(), Some("n"));
        assert_eq!(parse_json::<T>(b"{not json").unwrap_err().code, "validation_failed");
        assert!(parse_json::<T>(br#"{"name": "a"}"#).is_ok());
    }
}
