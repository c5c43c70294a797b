//! The routes of API.md and their handlers: each parses its input, calls the service once or twice, and
//! converts the result to its wire shape.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use pchat_api_types::{self as api, *};
use pchat_service::{RoomFilter, decode_cursor, encode_cursor};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::{Auth, IfMatch, Json, OptionalJson, Path, QueryMap};
use crate::{AppState, account, audit, stream, wire};

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
}

pub(crate) fn ok<T: serde::Serialize>(value: &T) -> ApiResult<Response> {
    Ok(json(StatusCode::OK, value))
}

pub(crate) fn created<T: serde::Serialize>(value: &T) -> ApiResult<Response> {
    Ok(json(StatusCode::CREATED, value))
}

/// A JSON body with the object's version as its `ETag`.
fn versioned<T: serde::Serialize>(status: StatusCode, value: &T, version: i64) -> ApiResult<Response> {
    let mut response = json(status, value);
    if let Ok(etag) = axum::http::HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(axum::http::header::ETAG, etag);
    }
    Ok(response)
}

pub(crate) fn no_content() -> ApiResult<Response> {
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) fn page<T: serde::Serialize>(items: Vec<T>, next_cursor: Option<String>) -> ApiResult<Response> {
    ok(&api::Page { items, next_cursor })
}

/// Pages a list already sorted by `key`: items after the `cursor`'s key, at most `limit` of them.
pub(crate) fn paged<T: serde::Serialize>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    q: &QueryMap,
) -> ApiResult<Response> {
    let limit = q.limit()? as usize;
    let after = q.str("cursor").map(decode_cursor).transpose()?;
    let mut rest: Vec<T> = items.into_iter().filter(|i| after.as_ref().is_none_or(|a| key(i) > *a)).collect();
    let next = (rest.len() > limit).then(|| {
        rest.truncate(limit);
        rest.last().map(|i| encode_cursor(&key(i)))
    });
    page(rest, next.flatten())
}

/// The OpenAPI document's frame: title, the bearer scheme, and schemas not reachable from a path (stream frames).
#[derive(OpenApi)]
#[openapi(
    info(title = "pchat", description = "The pchat persistent group chat API (API.md). Live events: WebSocket GET /api/v1/stream with ClientFrame and ServerFrame JSON text frames."),
    modifiers(&BearerScheme),
    components(schemas(api::ClientFrame, api::ServerFrame, api::Problem))
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        openapi.components.get_or_insert_with(Default::default).add_security_scheme("bearer", scheme);
    }
}

/// The API routes, each registered together with its OpenAPI description, and the document they form.
pub(crate) fn api_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(account::sign_in))
        .routes(routes!(account::sign_out))
        .routes(routes!(account::my_sessions))
        .routes(routes!(account::end_my_session))
        .routes(routes!(account::change_my_password))
        .routes(routes!(account::end_sessions_of))
        .routes(routes!(account::set_password))
        .routes(routes!(me))
        .routes(routes!(search_users, create_user))
        .routes(routes!(import_users))
        .routes(routes!(get_user, delete_user))
        .routes(routes!(effective_policy))
        .routes(routes!(list_groups, create_group))
        .routes(routes!(get_group, update_group, delete_group))
        .routes(routes!(list_admins, grant_admin))
        .routes(routes!(revoke_admin))
        .routes(routes!(get_policy, put_policy, delete_policy))
        .routes(routes!(get_config, put_config, delete_config))
        .routes(routes!(list_categories, create_category))
        .routes(routes!(get_category, update_category, delete_category))
        .routes(routes!(list_addins, create_addin))
        .routes(routes!(get_addin, update_addin, delete_addin))
        .routes(routes!(list_rooms, create_room))
        .routes(routes!(get_room, update_room, delete_room))
        .routes(routes!(participants))
        .routes(routes!(history, post_message))
        .routes(routes!(remove_messages))
        .routes(routes!(clear_room))
        .routes(routes!(my_rooms))
        .routes(routes!(follow, unfollow))
        .routes(routes!(mark_read))
        .routes(routes!(invitations))
        .routes(routes!(stream::upgrade))
        .routes(routes!(pool_servers))
        .routes(routes!(set_active_servers))
        .routes(routes!(get_compliance_config, put_compliance_config))
        .routes(routes!(compliance_events))
        .routes(routes!(audit::audit_events))
        .routes(routes!(crate::search::search))
        .routes(routes!(crate::feeds::list_feeds, crate::feeds::create_feed))
        .routes(routes!(crate::feeds::get_feed, crate::feeds::update_feed, crate::feeds::delete_feed))
        .routes(routes!(crate::feeds::feed_messages))
        .routes(routes!(crate::files::upload))
        .routes(routes!(crate::files::download))
        .routes(routes!(crate::files::link))
        .routes(routes!(verify_compliance))
        .routes(routes!(export_compliance))
        .split_for_parts()
}

pub(crate) fn routes() -> Router<AppState> {
    let (api, document) = api_routes();
    let mut document = serde_json::to_value(&document).unwrap_or_default();
    crate::openapi::finish(&mut document);
    let document = Bytes::from(serde_json::to_vec_pretty(&document).unwrap_or_default());
    Router::new()
        .route("/", get(index))
        .route("/manage/", get(manage))
        .route("/assets/{version}/{file}", get(crate::web::asset))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], document) }
            }),
        )
        .merge(api)
        .fallback(|| async { ApiError::not_found("resource") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                api::codes::VALIDATION_FAILED,
                "method not allowed on this resource",
            )
        })
}

async fn index() -> Response {
    crate::web::page()
}

async fn manage(State(s): State<AppState>) -> Response {
    match s.service.management_url().await {
        Some(url) => Redirect::temporary(&url).into_response(),
        None => crate::web::page(),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    if !s.service.is_active() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: this server is not active in its pool").into_response();
    }
    match s.service.ready().await {
        // Problems that do not stop this server from serving are shown, one per line.
        Ok(()) => {
            let warnings: String = s.service.warnings().iter().map(|w| format!("\nwarning: {w}")).collect();
            (StatusCode::OK, format!("ready{warnings}")).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")).into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], s.service.metrics_text()).into_response()
}

#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "sessions",
    summary = "The caller, their chat enablement and roles",
    responses((status = 200, body = Me)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "directory",
    summary = "Search users by address or display name",
    description = "With `category`, only users in that category's scope (the principal picker of room \
        management): for administrators, the category's creators and managers of its rooms (403 otherwise; 404 for a \
        category the caller cannot see). A scoped search examines at most 1,000 users per request, so a page can be \
        short, even empty, and still have a `next_cursor`.",
    params(
        ("query" = Option<String>, Query, description = "Words that start words of the address or display name; at most 256 characters"),
        ("category" = Option<String>, Query, description = "Only users in this category's scope: id or name:NAME"),
        ("cursor" = Option<String>, Query, description = "Opaque cursor from next_cursor"),
        ("limit" = Option<u32>, Query, description = "Page size, 1-500 (default 50)")
    ),
    responses((status = 200, body = Page<User>)),
    security(("bearer" = []))
)]
async fn search_users(State(s): State<AppState>, Auth(caller, _): Auth, q: QueryMap) -> ApiResult<Response> {
    let limit = q.limit()?;
    let after = q.str("cursor").map(decode_cursor).transpose()?;
    let query = q.str("query").unwrap_or("");
    let (users, next) = s.service.search_users(&caller, query, after.as_deref(), limit, q.str("category")).await?;
    page(users.iter().map(wire::user).collect(), next.map(|a| encode_cursor(&a)))
}

#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "directory",
    summary = "Create a user (user_admin)",
    request_body = NewUser,
    responses(
        (status = 201, body = User),
        (status = 409, description = "Name taken or category not empty", body = Problem)
    ),
    security(("bearer" = []))
)]
async fn create_user(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::NewUser>,
) -> ApiResult<Response> {
    created(&wire::user(&s.service.create_user(&caller, body).await?))
}

/// Creates up to 1,000 users at once with password hashes made elsewhere (Argon2id, at least m=19456, t=2), all
/// or none. Nothing is hashed, so provisioning thousands of users takes seconds.
#[utoipa::path(
    post,
    path = "/api/v1/users/import",
    tag = "directory",
    summary = "Import users with their password hashes (user_admin)",
    request_body = UserImport,
    responses(
        (status = 200, body = UsersImported),
        (status = 409, description = "An address is taken, or repeated in the import", body = Problem)
    ),
    security(("bearer" = []))
)]
async fn import_users(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::UserImport>,
) -> ApiResult<Response> {
    let created = s.service.import_users(&caller, body).await?;
    Ok(json(StatusCode::OK, &api::UsersImported { created }))
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{address}",
    tag = "directory",
    summary = "A user",
    params(("address" = String, Path, description = "User address")),
    responses((status = 200, body = User)),
    security(("bearer" = []))
)]
async fn get_user(State(s): State<AppState>, Auth(_, _): Auth, Path(address): Path<String>) -> ApiResult<Response> {
    ok(&wire::user(&s.service.get_user(&address).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{address}",
    tag = "directory",
    summary = "Delete a user (user_admin)",
    params(("address" = String, Path, description = "User address")),
    responses((status = 204)),
    security(("bearer" = []))
)]
async fn delete_user(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(address): Path<String>,
) -> ApiResult<Response> {
    s.service.delete_user(&caller, &address).await?;
    no_content()
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{address}/effective-policy",
    tag = "policy",
    summary = "The policy in force for a user and where it comes from",
    params(("address" = String, Path, description = "User address")),
    responses((status = 200, body = EffectivePolicy)),
    security(("bearer" = []))
)]
async fn effective_policy(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(address): Path<String>,
) -> ApiResult<Response> {
    ok(&s.service.effective_policy(&caller, &address).await?)
}

#[utoipa::path(
    get,
    path = "/api/v1/groups",
    tag = "directory",
    summary = "All groups",
    params(
        ("cursor" = Option<String>, Query, description = "Opaque cursor from next_cursor"),
        ("limit" = Option<u32>, Query, description = "Page size, 1-500 (default 50)")
    ),
    responses((status = 200, body = Page<NewGroup>)),
    security(("bearer" = []))
)]
async fn list_groups(State(s): State<AppState>, Auth(caller, _): Auth, q: QueryMap) -> ApiResult<Response> {
    let groups = s.service.list_groups(&caller).await?.into_iter().map(|name| api::NewGroup { name });
    paged(groups.collect(), |g| g.name.clone(), &q)
}

#[utoipa::path(
    post,
    path = "/api/v1/groups",
    tag = "directory",
    summary = "Create a group (user_admin)",
    request_body = NewGroup,
    responses(
        (status = 201, body = Group),
        (status = 409, description = "Name taken or category not empty", body = Problem)
    ),
    security(("bearer" = []))
)]
async fn create_group(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::NewGroup>,
) -> ApiResult<Response> {
    created(&s.service.create_group(&caller, body).await?)
}

#[utoipa::path(
    get,
    path = "/api/v1/groups/{name}",
    tag = "directory",
    summary = "A group and its direct members",
    params(("name" = String, Path, description = "Group name")),
    responses((status = 200, body = Group)),
    security(("bearer" = []))
)]
async fn get_group(State(s): State<AppState>, Auth(caller, _): Auth, Path(name): Path<String>) -> ApiResult<Response> {
    ok(&s.service.get_group(&caller, &name).await?)
}

#[utoipa::path(
    patch,
    path = "/api/v1/groups/{name}",
    tag = "directory",
    summary = "Add, remove or replace members (cycles rejected)",
    params(("name" = String, Path, description = "Group name")),
    request_body = GroupPatch,
    responses((status = 200, body = Group)),
    security(("bearer" = []))
)]
async fn update_group(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(name): Path<String>,
    Json(body): Json<api::GroupPatch>,
) -> ApiResult<Response> {
    ok(&s.service.update_group(&caller, &name, body).await?)
}

#[utoipa::path(
    delete,
    path = "/api/v1/groups/{name}",
    tag = "directory",
    summary = "Delete a group (user_admin)",
    params(("name" = String, Path, description = "Group name")),
    responses((status = 204)),
    security(("bearer" = []))
)]
async fn delete_group(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    s.service.delete_group(&caller, &name).await?;
    no_content()
}

#[utoipa::path(
    get,
    path = "/api/v1/admins",
    tag = "directory",
    summary = "Administrative role grants (admin)",
    params(
        ("cursor" = Option<String>, Query, description = "Opaque cursor from next_cursor"),
        ("limit" = Option<u32>, Query, description = "Page size, 1-500 (default 50)")
    ),
    responses((status = 200, body = Page<RoleGrant>)),
    security(("bearer" = []))
)]
async fn list_admins(State(s): State<AppState>, Auth(caller, _): Auth, q: QueryMap) -> ApiResult<Response> {
    paged(s.service.list_roles(&caller).await?, |g| format!("{}\n{}", g.user, g.role), &q)
}

#[utoipa::path(
    post,
    path = "/api/v1/admins",
    tag = "directory",
    summary = "Grant admin or user_admin (admin)",
    request_body = RoleGrant,
    responses((status = 201, body = RoleGrant)),
    security(("bearer" = []))
)]
async fn grant_admin(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::RoleGrant>,
) -> ApiResult<Response> {
    s.service.set_role(&caller, &body.user, &body.role, true).await?;
    created(&body)
}

#[utoipa::path(
    delete,
    path = "/api/v1/admins/{user}/{role}",
    tag = "directory",
    summary = "Revoke a role (admin)",
    params(
        ("user" = String, Path, description = "User address"),
        ("role" = String, Path, description = "admin or user_admin")
    ),
    responses((status = 204)),
    security(("bearer" = []))
)]
async fn revoke_admin(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path((user, role)): Path<(String, String)>,
) -> ApiResult<Response> {
    // The user is in the path here: one that does not exist is not found (in a grant's body it is invalid input).
    s.service.get_user(&user).await?;
    s.service.set_role(&caller, &user, &role, false).await?;
    no_content()
}

#[utoipa::path(
    get,
    path = "/api/v1/policies/{scope}",
    tag = "policy",
    summary = "A scope's policy",
    params(("scope" = String, Path, description = "global, site:NAME, pool:NAME or user:ADDRESS")),
    responses((status = 200, body = Policy)),
    security(("bearer" = []))
)]
async fn get_policy(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
) -> ApiResult<Response> {
    ok(&s.service.get_policy(&caller, &scope).await?)
}

#[utoipa::path(
    put,
    path = "/api/v1/policies/{scope}",
    tag = "policy",
    summary = "Set a scope's policy (user_admin)",
    params(("scope" = String, Path, description = "global, site:NAME, pool:NAME or user:ADDRESS")),
    request_body = PolicyPut,
    responses((status = 200, body = Policy)),
    security(("bearer" = []))
)]
async fn put_policy(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
    Json(body): Json<api::PolicyPut>,
) -> ApiResult<Response> {
    ok(&s.service.put_policy(&caller, &scope, body).await?)
}

#[utoipa::path(
    delete,
    path = "/api/v1/policies/{scope}",
    tag = "policy",
    summary = "Remove a scope's policy; global resets to off",
    params(("scope" = String, Path, description = "global, site:NAME, pool:NAME or user:ADDRESS")),
    responses((status = 204)),
    security(("bearer" = []))
)]
async fn delete_policy(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
) -> ApiResult<Response> {
    s.service.delete_policy(&caller, &scope).await?;
    no_content()
}

#[utoipa::path(
    get,
    path = "/api/v1/configuration/{scope}",
    tag = "configuration",
    summary = "A scope's chat configuration (admin)",
    params(("scope" = String, Path, description = "global, site:NAME or pool:NAME")),
    responses((status = 200, body = Configuration)),
    security(("bearer" = []))
)]
async fn get_config(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
) -> ApiResult<Response> {
    ok(&s.service.get_configuration(&caller, &scope).await?)
}

#[utoipa::path(
    put,
    path = "/api/v1/configuration/{scope}",
    tag = "configuration",
    summary = "Store a scope's configuration; omitted fields take defaults (admin)",
    params(("scope" = String, Path, description = "global, site:NAME or pool:NAME")),
    request_body = ConfigurationPut,
    responses((status = 200, body = Configuration)),
    security(("bearer" = []))
)]
async fn put_config(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
    Json(body): Json<api::ConfigurationPut>,
) -> ApiResult<Response> {
    ok(&s.service.put_configuration(&caller, &scope, body).await?)
}

#[utoipa::path(
    delete,
    path = "/api/v1/configuration/{scope}",
    tag = "configuration",
    summary = "Remove a scope's configuration (admin)",
    params(("scope" = String, Path, description = "global, site:NAME or pool:NAME")),
    responses((status = 204)),
    security(("bearer" = []))
)]
async fn delete_config(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
) -> ApiResult<Response> {
    s.service.delete_configuration(&caller, &scope).await?;
    no_content()
}

#[utoipa::path(
    get,
    path = "/api/v1/categories",
    tag = "categories",
    summary = "Categories (admins: all; others: those in whose scope they are)",
    params(
        ("creatable" = Option<bool>, Query, description = "Only categories where the caller may create rooms"),
        ("cursor" = Option<String>, Query, description = "Opaque cursor from next_cursor"),
        ("limit" = Option<u32>, Query, description = "Page size, 1-500 (default 50)")
    ),
    responses((status = 200, body = Page<Category>)),
    security(("bearer" = []))
)]
async fn list_categories(State(s): State<AppState>, Auth(caller, _): Auth, q: QueryMap) -> ApiResult<Response> {
    let creatable = q.bool("creatable")?.unwrap_or(false);
    let categories = s.service.list_categories(&caller, creatable).await?;
    paged(categories.iter().map(wire::category).collect(), |c| c.name.clone(), &q)
}

#[utoipa::path(
    post,
    path = "/api/v1/categories",
    tag = "categories",
    summary = "Create a category (admin)",
    request_body = NewCategory,
    responses(
        (status = 201, body = Category),
        (status = 409, description = "Name taken or category not empty", body = Problem)
    ),
    security(("bearer" = []))
)]
async fn create_category(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::NewCategory>,
) -> ApiResult<Response> {
    created(&wire::category(&s.service.create_category(&caller, body).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/categories/{id}",
    tag = "categories",
    summary = "A category",
    params(("id" = String, Path, description = "Category id or name:NAME")),
    responses((status = 200, body = Category)),
    security(("bearer" = []))
)]
async fn get_category(State(s): State<AppState>, Auth(caller, _): Auth, Path(id): Path<String>) -> ApiResult<Response> {
    let category = s.service.get_category(&caller, &id).await?;
    versioned(StatusCode::OK, &wire::category(&category), category.version)
}

#[utoipa::path(
    patch,
    path = "/api/v1/categories/{id}",
    tag = "categories",
    summary = "Change a category (admin)",
    params(("id" = String, Path, description = "Category id or name:NAME")),
    request_body = CategoryPatch,
    responses(
        (status = 200, body = Category),
        (status = 409, description = "Name taken or category not empty", body = Problem)
    ),
    security(("bearer" = []))
)]
async fn update_category(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    IfMatch(version): IfMatch,
    Json(body): Json<api::CategoryPatch>,
) -> ApiResult<Response> {
    let category = s.service.update_category(&caller, &id, body, version).await?;
    versioned(StatusCode::OK, &wire::category(&category), category.version)
}

#[utoipa::path(
    delete,
    path = "/api/v1/categories/{id}",
    tag = "categories",
    summary = "Delete an empty category (admin)",
    params(("id" = String, Path, description = "Category id or name:NAME")),
    responses(
        (status = 204),
        (status = 409, description = "Name taken or category not empty", body = Problem)
    ),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/addins",
    tag = "addins",
    summary = "Registered add-ins",
    params(
        ("cursor" = Option<String>, Query, description = "Opaque cursor from next_cursor"),
        ("limit" = Option<u32>, Query, description = "Page size, 1-500 (default 50)")
    ),
    responses((status = 200, body = Page<Addin>)),
    security(("bearer" = []))
)]
async fn list_addins(State(s): State<AppState>, Auth(caller, _): Auth, q: QueryMap) -> ApiResult<Response> {
    paged(s.service.list_addins(&caller).await?.iter().map(addin).collect(), |a| a.name.clone(), &q)
}

#[utoipa::path(
    post,
    path = "/api/v1/addins",
    tag = "addins",
    summary = "Register an add-in (admin)",
    request_body = Addin,
    responses(
        (status = 201, body = Addin),
        (status = 409, description = "Name taken or category not empty", body = Problem)
    ),
    security(("bearer" = []))
)]
async fn create_addin(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::Addin>,
) -> ApiResult<Response> {
    created(&addin(&s.service.create_addin(&caller, body).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/addins/{name}",
    tag = "addins",
    summary = "An add-in",
    params(("name" = String, Path, description = "Add-in name")),
    responses((status = 200, body = Addin)),
    security(("bearer" = []))
)]
async fn get_addin(State(s): State<AppState>, Auth(caller, _): Auth, Path(name): Path<String>) -> ApiResult<Response> {
    ok(&addin(&s.service.get_addin(&caller, &name).await?))
}

#[utoipa::path(
    patch,
    path = "/api/v1/addins/{name}",
    tag = "addins",
    summary = "Change an add-in (admin)",
    params(("name" = String, Path, description = "Add-in name")),
    request_body = AddinPatch,
    responses(
        (status = 200, body = Addin),
        (status = 409, description = "Name taken or category not empty", body = Problem)
    ),
    security(("bearer" = []))
)]
async fn update_addin(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(name): Path<String>,
    Json(body): Json<api::AddinPatch>,
) -> ApiResult<Response> {
    ok(&addin(&s.service.update_addin(&caller, &name, body).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/addins/{name}",
    tag = "addins",
    summary = "Remove an add-in and unlink it from rooms (admin)",
    params(("name" = String, Path, description = "Add-in name")),
    responses((status = 204)),
    security(("bearer" = []))
)]
async fn delete_addin(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    s.service.delete_addin(&caller, &name).await?;
    no_content()
}

#[utoipa::path(
    get,
    path = "/api/v1/rooms",
    tag = "rooms",
    summary = "The room directory: rooms the caller may see",
    params(
        ("query" = Option<String>, Query, description = "Words that start words of the name (CJK: any part); at most 256 characters"),
        ("category" = Option<String>, Query, description = "Category id or name:NAME"),
        ("search_description" = Option<bool>, Query, description = "Match the description too"),
        ("disabled" = Option<bool>, Query, description = "Only disabled or only enabled rooms"),
        ("managed" = Option<bool>, Query, description = "Only rooms the caller may manage (administrators: all)"),
        ("cursor" = Option<String>, Query, description = "Opaque cursor from next_cursor"),
        ("limit" = Option<u32>, Query, description = "Page size, 1-500 (default 50)")
    ),
    responses((status = 200, body = Page<Room>)),
    security(("bearer" = []))
)]
async fn list_rooms(State(s): State<AppState>, Auth(caller, _): Auth, q: QueryMap) -> ApiResult<Response> {
    let filter = RoomFilter {
        query: q.str("query").map(str::to_owned),
        category: q.str("category").map(str::to_owned),
        search_description: q.bool("search_description")?.unwrap_or(false),
        disabled: q.bool("disabled")?,
        managed: q.bool("managed")?.unwrap_or(false),
    };
    let (rooms, next) = s.service.list_rooms(&caller, &filter, q.str("cursor"), q.limit()?).await?;
    let domain = &s.service.settings().domain;
    page(rooms.iter().map(|v| wire::room(domain, &v.room)).collect(), next)
}

#[utoipa::path(
    post,
    path = "/api/v1/rooms",
    tag = "rooms",
    summary = "Create a room (category creators and admins)",
    request_body = NewRoom,
    responses(
        (status = 201, body = Room),
        (status = 409, description = "Name taken or category not empty", body = Problem)
    ),
    security(("bearer" = []))
)]
async fn create_room(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::NewRoom>,
) -> ApiResult<Response> {
    let room = s.service.create_room(&caller, body).await?;
    created(&wire::room(&s.service.settings().domain, &room))
}

#[utoipa::path(
    get,
    path = "/api/v1/rooms/{id}",
    tag = "rooms",
    summary = "A room",
    params(("id" = String, Path, description = "Room id or name:NAME")),
    responses((status = 200, body = Room)),
    security(("bearer" = []))
)]
async fn get_room(State(s): State<AppState>, Auth(caller, _): Auth, Path(id): Path<String>) -> ApiResult<Response> {
    let view = s.service.get_room(&caller, &id).await?;
    versioned(StatusCode::OK, &wire::room(&s.service.settings().domain, &view.room), view.room.version)
}

#[utoipa::path(
    patch,
    path = "/api/v1/rooms/{id}",
    tag = "rooms",
    summary = "Change a room (managers and admins)",
    params(("id" = String, Path, description = "Room id or name:NAME")),
    request_body = RoomPatch,
    responses(
        (status = 200, body = Room),
        (status = 409, description = "Name taken or category not empty", body = Problem)
    ),
    security(("bearer" = []))
)]
async fn update_room(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    IfMatch(version): IfMatch,
    Json(body): Json<api::RoomPatch>,
) -> ApiResult<Response> {
    let room = s.service.update_room(&caller, &id, body, version).await?;
    versioned(StatusCode::OK, &wire::room(&s.service.settings().domain, &room), room.version)
}

#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{id}",
    tag = "rooms",
    summary = "Delete a room and its content (admin)",
    params(("id" = String, Path, description = "Room id or name:NAME")),
    responses((status = 204)),
    security(("bearer" = []))
)]
async fn delete_room(State(s): State<AppState>, Auth(caller, _): Auth, Path(id): Path<String>) -> ApiResult<Response> {
    s.service.delete_room(&caller, &id).await?;
    no_content()
}

#[utoipa::path(
    get,
    path = "/api/v1/rooms/{id}/participants",
    tag = "rooms",
    summary = "Who is connected (suppressed above the participant update limit)",
    params(("id" = String, Path, description = "Room id or name:NAME")),
    responses((status = 200, body = Participants)),
    security(("bearer" = []))
)]
async fn participants(State(s): State<AppState>, Auth(caller, _): Auth, Path(id): Path<String>) -> ApiResult<Response> {
    let (list, suppressed) = s.service.participants(&caller, &id).await?;
    let participants = list.into_iter().map(|(address, display_name)| api::User { address, display_name }).collect();
    ok(&api::Participants { participants, suppressed })
}

#[utoipa::path(
    get,
    path = "/api/v1/rooms/{id}/messages",
    tag = "messages",
    summary = "History: the latest default_chat_history messages, or a page before/after a seq",
    params(
        ("id" = String, Path, description = "Room id or name:NAME"),
        ("before_seq" = Option<i64>, Query, description = "Messages before this seq"),
        ("after_seq" = Option<i64>, Query, description = "Messages after this seq"),
        ("limit" = Option<u32>, Query, description = "Page size, 1-500")
    ),
    responses((status = 200, body = Page<Message>)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/rooms/{id}/messages",
    tag = "messages",
    summary = "Post; answered after the durable commit",
    params(("id" = String, Path, description = "Room id or name:NAME")),
    request_body = PostMessage,
    responses(
        (status = 201, description = "Posted", body = Message),
        (status = 200, description = "The original message of a repeated client_id", body = Message),
        (status = 413, description = "Too large", body = Problem),
        (status = 429, description = "Posting too fast", body = Problem)
    ),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/rooms/{id}/clear",
    tag = "messages",
    summary = "Delete every message up to end_date (admin)",
    params(("id" = String, Path, description = "Room id or name:NAME")),
    request_body = ClearRoom,
    responses((status = 200, body = Cleared)),
    security(("bearer" = []))
)]
async fn clear_room(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    Json(body): Json<api::ClearRoom>,
) -> ApiResult<Response> {
    ok(&api::Cleared { removed: s.service.clear_room(&caller, &id, body).await? })
}

#[utoipa::path(
    post,
    path = "/api/v1/rooms/{id}/messages/remove",
    tag = "messages",
    summary = "Remove or replace messages by author, dates and keywords (admin)",
    params(("id" = String, Path, description = "Room id or name:NAME")),
    request_body = RemoveMessages,
    responses((status = 200, body = Affected)),
    security(("bearer" = []))
)]
async fn remove_messages(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    Json(body): Json<api::RemoveMessages>,
) -> ApiResult<Response> {
    ok(&api::Affected { affected: s.service.remove_messages(&caller, &id, body).await? })
}

#[utoipa::path(
    get,
    path = "/api/v1/me/rooms",
    tag = "me",
    summary = "Rooms the caller belongs to or follows, with unread counts",
    params(
        ("cursor" = Option<String>, Query, description = "Opaque cursor from next_cursor"),
        ("limit" = Option<u32>, Query, description = "Page size, 1-500 (default 50)")
    ),
    responses((status = 200, body = Page<MyRoom>)),
    security(("bearer" = []))
)]
async fn my_rooms(State(s): State<AppState>, Auth(caller, _): Auth, q: QueryMap) -> ApiResult<Response> {
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
    paged(rooms, |r| r.room.name.clone(), &q)
}

#[utoipa::path(
    put,
    path = "/api/v1/me/follows/{room}",
    tag = "me",
    summary = "Follow a room",
    params(("room" = String, Path, description = "Room id or name:NAME")),
    responses((status = 204)),
    security(("bearer" = []))
)]
async fn follow(State(s): State<AppState>, Auth(caller, _): Auth, Path(room): Path<String>) -> ApiResult<Response> {
    s.service.set_follow(&caller, &room, true).await?;
    no_content()
}

#[utoipa::path(
    delete,
    path = "/api/v1/me/follows/{room}",
    tag = "me",
    summary = "Stop following a room",
    params(("room" = String, Path, description = "Room id or name:NAME")),
    responses((status = 204)),
    security(("bearer" = []))
)]
async fn unfollow(State(s): State<AppState>, Auth(caller, _): Auth, Path(room): Path<String>) -> ApiResult<Response> {
    s.service.set_follow(&caller, &room, false).await?;
    no_content()
}

#[utoipa::path(
    post,
    path = "/api/v1/me/read",
    tag = "me",
    summary = "Mark a room read up to a seq",
    request_body = MarkRead,
    responses((status = 204)),
    security(("bearer" = []))
)]
async fn mark_read(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::MarkRead>,
) -> ApiResult<Response> {
    s.service.mark_read(&caller, &body.room, body.seq).await?;
    no_content()
}

#[utoipa::path(
    get,
    path = "/api/v1/me/invitations",
    tag = "me",
    summary = "Invitations after an id",
    params(
        ("after" = Option<i64>, Query, description = "Only invitations with a larger id"),
        ("limit" = Option<u32>, Query, description = "Page size, 1-500")
    ),
    responses((status = 200, body = Invitations)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/pool/servers",
    tag = "pool",
    summary = "The pool's servers: state, active, connections (admin)",
    responses((status = 200, body = Page<Server>)),
    security(("bearer" = []))
)]
async fn pool_servers(State(s): State<AppState>, Auth(caller, _): Auth) -> ApiResult<Response> {
    page(s.service.pool_status(&caller).await?.iter().map(wire::server).collect(), None)
}

#[utoipa::path(
    patch,
    path = "/api/v1/pool/servers/active",
    tag = "pool",
    summary = "Choose which servers accept new connections (admin)",
    request_body = ActiveServers,
    responses((status = 200, body = Page<Server>)),
    security(("bearer" = []))
)]
async fn set_active_servers(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Json(body): Json<api::ActiveServers>,
) -> ApiResult<Response> {
    page(s.service.set_active_servers(&caller, body).await?.iter().map(wire::server).collect(), None)
}

#[utoipa::path(
    get,
    path = "/api/v1/compliance/configuration/{scope}",
    tag = "compliance",
    summary = "A scope's compliance configuration (admin)",
    params(("scope" = String, Path, description = "global or pool:NAME")),
    responses((status = 200, body = ComplianceConfiguration)),
    security(("bearer" = []))
)]
async fn get_compliance_config(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
) -> ApiResult<Response> {
    ok(&s.service.compliance_config(&caller, &scope).await?)
}

#[utoipa::path(
    put,
    path = "/api/v1/compliance/configuration/{scope}",
    tag = "compliance",
    summary = "Store a scope's compliance configuration; invalid input keeps the previous one (admin)",
    params(("scope" = String, Path, description = "global or pool:NAME")),
    request_body = ComplianceConfiguration,
    responses((status = 200, body = ComplianceConfiguration)),
    security(("bearer" = []))
)]
async fn put_compliance_config(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(scope): Path<String>,
    Json(body): Json<api::ComplianceConfiguration>,
) -> ApiResult<Response> {
    ok(&s.service.put_compliance_config(&caller, &scope, body).await?)
}

#[utoipa::path(
    get,
    path = "/api/v1/compliance/events",
    tag = "compliance",
    summary = "Archived compliance events, oldest first (admin)",
    params(
        ("from" = Option<String>, Query, description = "RFC 3339 time, inclusive"),
        ("to" = Option<String>, Query, description = "RFC 3339 time, inclusive"),
        ("room" = Option<String>, Query, description = "room id"),
        ("user" = Option<String>, Query, description = "who acted"),
        ("type" = Option<String>, Query, description = "event type, e.g. CHAT"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 100"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")
    ),
    responses((status = 200, body = Page<ComplianceEvent>)),
    security(("bearer" = []))
)]
async fn compliance_events(State(s): State<AppState>, Auth(caller, _): Auth, q: QueryMap) -> ApiResult<Response> {
    let (query, limit) = q.event_query()?;
    let mut events = s.service.compliance_events(&caller, query).await?;
    let next = (events.len() > limit as usize).then(|| {
        events.truncate(limit as usize);
        events.last().map(|e| encode_cursor(&e.id.to_string()))
    });
    page(events.iter().map(wire::compliance_event).collect(), next.flatten())
}

#[utoipa::path(
    post,
    path = "/api/v1/compliance/verify",
    tag = "compliance",
    summary = "Recompute the archive's hash chains, check them against the witnesses kept outside the archive, and name what does not hold (admin)",
    request_body(content = Option<VerifyRequest>, description = "Optional: further witnesses, e.g. an export copy's *.chain.json files"),
    responses(
        (status = 200, body = VerifyReport),
        (status = 400, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
async fn verify_compliance(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    OptionalJson(body): OptionalJson<api::VerifyRequest>,
) -> ApiResult<Response> {
    let extra = body
        .witnesses
        .into_iter()
        .map(|w| pchat_service::witness::Witness { pool: w.pool, id: w.id, hash: w.hash, tag: w.tag })
        .collect();
    ok(&s.service.verify_archive(&caller, extra).await?)
}

#[utoipa::path(
    post,
    path = "/api/v1/compliance/export",
    tag = "compliance",
    summary = "Run the periodic compliance export now, whatever the interval (admin)",
    responses(
        (status = 200, body = ExportReport),
        (status = 400, description = "No output directory configured", body = Problem),
        (status = 503, description = "The output directory cannot be written; nothing was lost, the export is retried", body = Problem)
    ),
    security(("bearer" = []))
)]
async fn export_compliance(State(s): State<AppState>, Auth(caller, _): Auth) -> ApiResult<Response> {
    ok(&s.service.export_now(&caller).await?)
}
