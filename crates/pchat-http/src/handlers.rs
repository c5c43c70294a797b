//! The routes of API.md and their handlers: each parses its input, calls the service once or twice, and
//! converts the result to its wire shape.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use pchat_api_types as api;
use pchat_service::{RoomFilter, decode_cursor, encode_cursor};

use crate::error::ApiError;
use crate::extract::{Auth, Json, QueryMap};
use crate::{AppState, stream, wire};

type ApiResult<T> = Result<T, ApiError>;

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
}

fn ok<T: serde::Serialize>(value: &T) -> ApiResult<Response> {
    Ok(json(StatusCode::OK, value))
}

fn created<T: serde::Serialize>(value: &T) -> ApiResult<Response> {
    Ok(json(StatusCode::CREATED, value))
}

fn no_content() -> ApiResult<Response> {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn page<T: serde::Serialize>(items: Vec<T>, next_cursor: Option<String>) -> ApiResult<Response> {
    ok(&api::Page { items, next_cursor })
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/manage/", get(manage))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/sessions", post(sign_in))
        .route("/api/v1/sessions/current", axum::routing::delete(sign_out))
        .route("/api/v1/me", get(me))
        .route("/api/v1/users", get(search_users).post(create_user))
        .route("/api/v1/users/{address}", get(get_user).delete(delete_user))
        .route("/api/v1/users/{address}/effective-policy", get(effective_policy))
        .route("/api/v1/groups", get(list_groups).post(create_group))
        .route("/api/v1/groups/{name}", get(get_group).patch(update_group).delete(delete_group))
        .route("/api/v1/admins", get(list_admins).post(grant_admin))
        .route("/api/v1/admins/{user}/{role}", axum::routing::delete(revoke_admin))
        .route("/api/v1/policies/{scope}", get(get_policy).put(put_policy).delete(delete_policy))
        .route("/api/v1/configuration/{scope}", get(get_config).put(put_config).delete(delete_config))
        .route("/api/v1/categories", get(list_categories).post(create_category))
        .route("/api/v1/categories/{id}", get(get_category).patch(update_category).delete(delete_category))
        .route("/api/v1/addins", get(list_addins).post(create_addin))
        .route("/api/v1/addins/{name}", get(get_addin).patch(update_addin).delete(delete_addin))
        .route("/api/v1/rooms", get(list_rooms).post(create_room))
        .route("/api/v1/rooms/{id}", get(get_room).patch(update_room).delete(delete_room))
        .route("/api/v1/rooms/{id}/participants", get(participants))
        .route("/api/v1/rooms/{id}/messages", get(history).post(post_message))
        .route("/api/v1/rooms/{id}/messages/remove", post(remove_messages))
        .route("/api/v1/rooms/{id}/clear", post(clear_room))
        .route("/api/v1/me/rooms", get(my_rooms))
        .route("/api/v1/me/follows/{room}", put(follow).delete(unfollow))
        .route("/api/v1/me/read", post(mark_read))
        .route("/api/v1/me/invitations", get(invitations))
        .route("/api/v1/stream", get(stream::upgrade))
        .fallback(|| async { ApiError::not_found("resource") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                api::codes::VALIDATION_FAILED,
                "method not allowed on this resource",
            )
        })
}

async fn index() -> Html<&'static str> {
    Html(include_str!("index.html"))
}

async fn manage(State(s): State<AppState>) -> Response {
    match s.service.management_url().await {
        Some(url) => Redirect::temporary(&url).into_response(),
        None => Html(include_str!("index.html")).into_response(),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.service.ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")).into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], s.service.metrics_text()).into_response()
}

async fn sign_in(State(s): State<AppState>, Json(body): Json<api::SessionRequest>) -> ApiResult<Response> {
    let (token, user) = s.service.sign_in(&body.user, &body.password).await.map_err(|e| match e {
        pchat_service::ServiceError::Unauthenticated => {
            ApiError::new(StatusCode::UNAUTHORIZED, api::codes::UNAUTHENTICATED, "wrong user or password")
        }
        other => other.into(),
    })?;
    created(&api::SessionResponse { token, user: wire::user(&user) })
}

async fn sign_out(State(s): State<AppState>, Auth(_, token): Auth) -> ApiResult<Response> {
    s.service.sign_out(&token).await?;
    no_content()
}

async fn me(Auth(caller, _): Auth) -> ApiResult<Response> {
    let mut roles = vec![];
    if caller.admin {
        roles.push("admin".to_owned());
    }
    if caller.user_admin {
        roles.push("user_admin".to_owned());
    }
    ok(&api::Me {
        user: api::User { address: caller.address().to_owned(), display_name: caller.display_name.clone() },
        chat_enabled: caller.chat_enabled,
        roles,
    })
}

async fn search_users(State(s): State<AppState>, Auth(caller, _): Auth, q: QueryMap) -> ApiResult<Response> {
    let limit = q.limit()?;
    let after = q.str("cursor").map(decode_cursor).transpose()?;
    let mut users = s.service.search_users(&caller, q.str("query").unwrap_or(""), after.as_deref(), limit + 1).await?;
    let next = (users.len() > limit as usize).then(|| {
        users.truncate(limit as usize);
        users.last().map(|u| encode_cursor(&u.address))
    });
    page(users.iter().map(wire::user).collect(), next.flatten())
}

async fn create_user(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::NewUser>,
) -> ApiResult<Response> {
    created(&wire::user(&s.service.create_user(&caller, body).await?))
}

async fn get_user(State(s): State<AppState>, Auth(_, _): Auth, Path(address): Path<String>) -> ApiResult<Response> {
    ok(&wire::user(&s.service.get_user(&address).await?))
}

async fn delete_user(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(address): Path<String>,
) -> ApiResult<Response> {
    s.service.delete_user(&caller, &address).await?;
    no_content()
}

async fn effective_policy(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(address): Path<String>,
) -> ApiResult<Response> {
    ok(&s.service.effective_policy(&caller, &address).await?)
}

async fn list_groups(State(s): State<AppState>, Auth(caller, _): Auth) -> ApiResult<Response> {
    let names = s.service.list_groups(&caller).await?;
    page(names.into_iter().map(|name| serde_json::json!({ "name": name })).collect(), None)
}

async fn create_group(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::NewGroup>,
) -> ApiResult<Response> {
    created(&s.service.create_group(&caller, body).await?)
}

async fn get_group(State(s): State<AppState>, Auth(caller, _): Auth, Path(name): Path<String>) -> ApiResult<Response> {
    ok(&s.service.get_group(&caller, &name).await?)
}

async fn update_group(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(name): Path<String>,
    Json(body): Json<api::GroupPatch>,
) -> ApiResult<Response> {
    ok(&s.service.update_group(&caller, &name, body).await?)
}

async fn delete_group(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    s.service.delete_group(&caller, &name).await?;
    no_content()
}

async fn list_admins(State(s): State<AppState>, Auth(caller, _): Auth) -> ApiResult<Response> {
    page(s.service.list_roles(&caller).await?, None)
}

async fn grant_admin(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::RoleGrant>,
) -> ApiResult<Response> {
    s.service.set_role(&caller, &body.user, &body.role, true).await?;
    created(&body)
}

async fn revoke_admin(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path((user, role)): Path<(String, String)>,
) -> ApiResult<Response> {
    s.service.set_role(&caller, &user, &role, false).await?;
    no_content()
}

async fn get_policy(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
) -> ApiResult<Response> {
    ok(&s.service.get_policy(&caller, &scope).await?)
}

async fn put_policy(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
    Json(body): Json<api::PolicyPut>,
) -> ApiResult<Response> {
    ok(&s.service.put_policy(&caller, &scope, body).await?)
}

async fn delete_policy(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
) -> ApiResult<Response> {
    s.service.delete_policy(&caller, &scope).await?;
    no_content()
}

async fn get_config(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
) -> ApiResult<Response> {
    ok(&s.service.get_configuration(&caller, &scope).await?)
}

async fn put_config(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
    Json(body): Json<api::ConfigurationPut>,
) -> ApiResult<Response> {
    ok(&s.service.put_configuration(&caller, &scope, body).await?)
}

async fn delete_config(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
) -> ApiResult<Response> {
    s.service.delete_configuration(&caller, &scope).await?;
    no_content()
}

async fn list_categories(State(s): State<AppState>, Auth(caller, _): Auth) -> ApiResult<Response> {
    page(s.service.list_categories(&caller).await?.iter().map(wire::category).collect(), None)
}

async fn create_category(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::NewCategory>,
) -> ApiResult<Response> {
    created(&wire::category(&s.service.create_category(&caller, body).await?))
}

async fn get_category(State(s): State<AppState>, Auth(caller, _): Auth, Path(id): Path<String>) -> ApiResult<Response> {
    ok(&wire::category(&s.service.get_category(&caller, &id).await?))
}

async fn update_category(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    Json(body): Json<api::CategoryPatch>,
) -> ApiResult<Response> {
    ok(&wire::category(&s.service.update_category(&caller, &id, body).await?))
}

async fn delete_category(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    s.service.delete_category(&caller, &id).await?;
    no_content()
}

fn addin(a: &pchat_service::records::AddinRecord) -> api::Addin {
    api::Addin { name: a.name.clone(), url: a.url.clone() }
}

async fn list_addins(State(s): State<AppState>, Auth(caller, _): Auth) -> ApiResult<Response> {
    page(s.service.list_addins(&caller).await?.iter().map(addin).collect(), None)
}

async fn create_addin(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::Addin>,
) -> ApiResult<Response> {
    created(&addin(&s.service.create_addin(&caller, body).await?))
}

async fn get_addin(State(s): State<AppState>, Auth(caller, _): Auth, Path(name): Path<String>) -> ApiResult<Response> {
    ok(&addin(&s.service.get_addin(&caller, &name).await?))
}

async fn update_addin(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(name): Path<String>,
    Json(body): Json<api::AddinPatch>,
) -> ApiResult<Response> {
    ok(&addin(&s.service.update_addin(&caller, &name, body).await?))
}

async fn delete_addin(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    s.service.delete_addin(&caller, &name).await?;
    no_content()
}

async fn list_rooms(State(s): State<AppState>, Auth(caller, _): Auth, q: QueryMap) -> ApiResult<Response> {
    let filter = RoomFilter {
        query: q.str("query").map(str::to_owned),
        category: q.str("category").map(str::to_owned),
        search_description: q.bool("search_description")?.unwrap_or(false),
        disabled: q.bool("disabled")?,
    };
    let (rooms, next) = s.service.list_rooms(&caller, &filter, q.str("cursor"), q.limit()?).await?;
    let domain = &s.service.settings().domain;
    page(rooms.iter().map(|v| wire::room(domain, &v.room)).collect(), next)
}

async fn create_room(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::NewRoom>,
) -> ApiResult<Response> {
    let room = s.service.create_room(&caller, body).await?;
    created(&wire::room(&s.service.settings().domain, &room))
}

async fn get_room(State(s): State<AppState>, Auth(caller, _): Auth, Path(id): Path<String>) -> ApiResult<Response> {
    let view = s.service.get_room(&caller, &id).await?;
    ok(&wire::room(&s.service.settings().domain, &view.room))
}

async fn update_room(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    Json(body): Json<api::RoomPatch>,
) -> ApiResult<Response> {
    let room = s.service.update_room(&caller, &id, body).await?;
    ok(&wire::room(&s.service.settings().domain, &room))
}

async fn delete_room(State(s): State<AppState>, Auth(caller, _): Auth, Path(id): Path<String>) -> ApiResult<Response> {
    s.service.delete_room(&caller, &id).await?;
    no_content()
}

async fn participants(State(s): State<AppState>, Auth(caller, _): Auth, Path(id): Path<String>) -> ApiResult<Response> {
    let (list, suppressed) = s.service.participants(&caller, &id).await?;
    let participants = list.into_iter().map(|(address, display_name)| api::User { address, display_name }).collect();
    ok(&api::Participants { participants, suppressed })
}

async fn history(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    q: QueryMap,
) -> ApiResult<Response> {
    let limit = if q.str("limit").is_some() { Some(q.limit()?) } else { None };
    let history = s.service.history(&caller, &id, q.int("before_seq")?, q.int("after_seq")?, limit).await?;
    let items: Vec<api::Message> = history.messages.iter().map(wire::message).collect();
    page(items, None)
}

async fn post_message(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    Json(body): Json<api::PostMessage>,
) -> ApiResult<Response> {
    let appended = s.service.post(&caller, &id, body).await?;
    let status = if appended.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, &wire::message(&appended.message)))
}

async fn clear_room(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    Json(body): Json<api::ClearRoom>,
) -> ApiResult<Response> {
    ok(&api::Cleared { removed: s.service.clear_room(&caller, &id, body).await? })
}

async fn remove_messages(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    Json(body): Json<api::RemoveMessages>,
) -> ApiResult<Response> {
    ok(&api::Affected { affected: s.service.remove_messages(&caller, &id, body).await? })
}

async fn my_rooms(State(s): State<AppState>, Auth(caller, _): Auth) -> ApiResult<Response> {
    let domain = &s.service.settings().domain;
    let rooms: Vec<api::MyRoom> = s
        .service
        .my_rooms(&caller)
        .await?
        .into_iter()
        .map(|m| api::MyRoom {
            room: wire::room(domain, &m.room),
            following: m.following,
            unread: m.unread,
            last_seq: m.last_seq,
        })
        .collect();
    page(rooms, None)
}

async fn follow(State(s): State<AppState>, Auth(caller, _): Auth, Path(room): Path<String>) -> ApiResult<Response> {
    s.service.set_follow(&caller, &room, true).await?;
    no_content()
}

async fn unfollow(State(s): State<AppState>, Auth(caller, _): Auth, Path(room): Path<String>) -> ApiResult<Response> {
    s.service.set_follow(&caller, &room, false).await?;
    no_content()
}

async fn mark_read(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::MarkRead>,
) -> ApiResult<Response> {
    s.service.mark_read(&caller, &body.room, body.seq).await?;
    no_content()
}

async fn invitations(State(s): State<AppState>, Auth(caller, _): Auth, q: QueryMap) -> ApiResult<Response> {
    let after = q.int("after")?.unwrap_or(0);
    let domain = &s.service.settings().domain;
    let items = s
        .service
        .invitations(&caller, after, q.limit()?)
        .await?
        .into_iter()
        .map(|(inv, room)| api::Invitation {
            id: inv.id,
            room: wire::room(domain, &room),
            created_at: pchat_service::time::format_micros(inv.created_at),
        })
        .collect();
    ok(&api::Invitations { items })
}
