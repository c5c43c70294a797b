//! `GET /api/v1/search`: history search across the rooms the caller may read.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use pchat_api_types::{Problem, RoomRef, SearchHit, SearchResults, TextRange};
use pchat_service::SearchInput;

use crate::error::ApiError;
use crate::extract::{Auth, QueryMap};
use crate::{AppState, wire};

/// Messages matching the query in every room the caller may read now (or in the rooms named), newest first, each
/// with a highlight around the match. Words match whole and ignore case and Latin accents unless
/// `case_sensitive`; a string of two or more Chinese, Japanese or Korean characters matches wherever it occurs.
/// Records a BACKCHAT compliance event per room with results.
#[utoipa::path(
    get,
    path = "/api/v1/search",
    tag = "search",
    params(
        ("q" = String, Query, description = "The words to find (1 to 1000 characters)", min_length = 1, max_length = 1000),
        ("match" = Option<String>, Query, description = "all (every word, the default), any (one word), exact (the phrase)"),
        ("case_sensitive" = Option<bool>, Query, description = "Match case and accents exactly"),
        ("author" = Option<String>, Query, description = "Only messages by this user"),
        ("from" = Option<String>, Query, description = "RFC 3339 time, inclusive", format = DateTime),
        ("to" = Option<String>, Query, description = "RFC 3339 time, inclusive", format = DateTime),
        ("room" = Option<Vec<String>>, Query, description = "Only these rooms (ids or name:NAME), at most 50; repeat the parameter"),
        ("limit" = Option<u32>, Query, description = "Page size, 1-500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")
    ),
    responses(
        (status = 200, body = SearchResults),
        (status = 400, description = "Invalid query or filter", body = Problem)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn search(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let input = SearchInput {
        q: q.str("q").unwrap_or_default().to_owned(),
        match_mode: q.str("match").map(str::to_owned),
        case_sensitive: q.bool("case_sensitive")?.unwrap_or(false),
        author: q.str("author").map(str::to_owned),
        from: q.str("from").map(str::to_owned),
        to: q.str("to").map(str::to_owned),
        rooms: q.all("room"),
        limit: q.limit()?,
        cursor: q.str("cursor").map(str::to_owned),
    };
    let results = s.service.search(&caller, input).await?;
    Ok(axum::Json(results_page(results)).into_response())
}

/// The wire form of a page of results (search, and a topic feed's past matches).
pub(crate) fn results_page(results: pchat_service::SearchResults) -> SearchResults {
    let items = results.hits.into_iter().map(hit).collect();
    SearchResults { items, next_cursor: results.next_cursor, total_estimate: results.total_estimate }
}

/// The wire form of one result (also of a `feed_match` frame's contents).
pub(crate) fn hit(hit: pchat_service::SearchHit) -> SearchHit {
    SearchHit {
        message: wire::message(&hit.message),
        room: RoomRef { id: hit.message.room_id.clone(), name: hit.room_name },
        highlight: hit.highlight,
        highlight_ranges: hit
            .highlight_ranges
            .iter()
            .map(|&(start, end)| TextRange { start: start as u32, end: end as u32 })
            .collect(),
        highlight_field: hit.highlight_field.as_str().to_owned(),
    }
}
