//! `GET /api/v1/audit`: the audit trail of administrative actions, for administrators.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use pchat_api_types::{AuditEvent, Page, Problem};
use pchat_service::encode_cursor;

use crate::error::ApiError;
use crate::extract::{Auth, QueryMap};
use crate::{AppState, wire};

/// Administrative actions (who, when, what, before and after), oldest first. Kept whether or not compliance capture
/// is on; paged and filtered like the compliance events.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(
        ("from" = Option<String>, Query, description = "RFC 3339 time, inclusive", format = DateTime),
        ("to" = Option<String>, Query, description = "RFC 3339 time, inclusive", format = DateTime),
        ("room" = Option<String>, Query, description = "Room id"),
        ("user" = Option<String>, Query, description = "Who acted"),
        ("type" = Option<String>, Query, description = "Action type, e.g. ROOM_CHANGED"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")
    ),
    responses(
        (status = 200, body = Page<AuditEvent>),
        (status = 400, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an administrator", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub(crate) async fn audit_events(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let (query, limit) = q.event_query()?;
    let mut records = s.service.audit_events(&caller, query).await?;
    let next = (records.len() > limit as usize).then(|| {
        records.truncate(limit as usize);
        records.last().map(|r| encode_cursor(&r.id.to_string()))
    });
    let items = records.iter().map(wire::audit_event).collect();
    Ok(axum::Json(Page { items, next_cursor: next.flatten() }).into_response())
}
