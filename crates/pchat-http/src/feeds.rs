//! Topic feeds (`/api/v1/me/feeds`): the caller's saved searches and their past matches.

use axum::extract::State;
use axum::response::Response;
use pchat_api_types::{Feed, FeedPatch, NewFeed, Page, Problem, SearchResults};
use pchat_service::records::FeedRecord;

use crate::extract::{Auth, Json, Path, QueryMap};
use crate::handlers::{ApiResult, created, no_content, ok, paged};
use crate::{AppState, wire};

fn feed(f: &FeedRecord) -> Feed {
    Feed {
        id: f.id.clone(),
        name: f.name.clone(),
        keywords: f.keywords.clone(),
        match_: f.match_mode.clone(),
        case_sensitive: f.case_sensitive,
        authors: f.authors.clone(),
        rooms: f.rooms.clone(),
        created_at: wire::format_micros(f.created_at),
    }
}

/// The caller's topic feeds, by name.
#[utoipa::path(
    get,
    path = "/api/v1/me/feeds",
    tag = "feeds",
    params(
        ("cursor" = Option<String>, Query, description = "Opaque cursor from next_cursor"),
        ("limit" = Option<u32>, Query, description = "Page size, 1-500 (default 50)")
    ),
    responses((status = 200, body = Page<Feed>)),
    security(("bearer" = []))
)]
pub(crate) async fn list_feeds(State(s): State<AppState>, Auth(caller, _): Auth, q: QueryMap) -> ApiResult<Response> {
    let mut feeds: Vec<Feed> = s.service.list_feeds(&caller).await?.iter().map(feed).collect();
    feeds.sort_by(|a, b| a.name.cmp(&b.name));
    paged(feeds, |f| f.name.clone(), &q)
}

/// Saves a search as a topic feed (at most 100 per user; 409 `limit_reached` beyond). From now on a new message
/// that matches it, in a room the caller may read, is sent to the caller's stream as `feed_match`.
#[utoipa::path(
    post,
    path = "/api/v1/me/feeds",
    tag = "feeds",
    request_body = NewFeed,
    responses(
        (status = 201, body = Feed),
        (status = 409, description = "A feed with this name exists (name_taken), or the caller has 100 (limit_reached)", body = Problem)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_feed(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<NewFeed>,
) -> ApiResult<Response> {
    created(&feed(&s.service.create_feed(&caller, body).await?))
}

/// One of the caller's feeds (another user's is 404, as for one that does not exist).
#[utoipa::path(
    get,
    path = "/api/v1/me/feeds/{id}",
    tag = "feeds",
    params(("id" = String, Path, description = "Feed id")),
    responses((status = 200, body = Feed)),
    security(("bearer" = []))
)]
pub(crate) async fn get_feed(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    ok(&feed(&s.service.get_feed(&caller, &id).await?))
}

/// Changes a feed: the fields given replace the feed's.
#[utoipa::path(
    patch,
    path = "/api/v1/me/feeds/{id}",
    tag = "feeds",
    params(("id" = String, Path, description = "Feed id")),
    request_body = FeedPatch,
    responses(
        (status = 200, body = Feed),
        (status = 409, description = "Another of the caller's feeds has this name", body = Problem)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update_feed(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    Json(body): Json<FeedPatch>,
) -> ApiResult<Response> {
    ok(&feed(&s.service.update_feed(&caller, &id, body).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/me/feeds/{id}",
    tag = "feeds",
    params(("id" = String, Path, description = "Feed id")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = []))
)]
pub(crate) async fn delete_feed(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    s.service.delete_feed(&caller, &id).await?;
    no_content()
}

/// The feed's past matches, newest first, in the rooms the caller may read now; paged like search.
#[utoipa::path(
    get,
    path = "/api/v1/me/feeds/{id}/messages",
    tag = "feeds",
    params(
        ("id" = String, Path, description = "Feed id"),
        ("limit" = Option<u32>, Query, description = "Page size, 1-500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")
    ),
    responses((status = 200, body = SearchResults)),
    security(("bearer" = []))
)]
pub(crate) async fn feed_messages(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    q: QueryMap,
) -> ApiResult<Response> {
    let results = s.service.feed_matches(&caller, &id, q.str("cursor"), q.limit()?).await?;
    ok(&crate::search::results_page(results))
}
