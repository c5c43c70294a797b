//! Sign-in, sign-out, sessions and passwords: `POST/DELETE /api/v1/sessions…`, `/api/v1/me/sessions…`,
//! `/api/v1/me/password`, and the user administrators' `/api/v1/users/{address}/sessions` and `…/password`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pchat_api_types::{
    self as api, Page, PasswordChange, PasswordSet, Problem, SessionInfo, SessionRequest, SessionResponse,
};
use pchat_service::SessionView;
use pchat_service::records::{NEVER, SessionRecord};

use crate::error::ApiError;
use crate::extract::{Auth, Client, Json, Path};
use crate::{AppState, wire};

type ApiResult<T> = Result<T, ApiError>;

fn session_info(record: &SessionRecord, current: bool) -> SessionInfo {
    SessionInfo {
        id: record.id.clone(),
        created_at: wire::format_micros(record.created_at),
        last_used_at: wire::format_micros(record.last_used_at),
        expires_at: (record.expires_at != NEVER).then(|| wire::format_micros(record.expires_at)),
        client: record.client.clone(),
        current,
    }
}

/// Sign in. Failed attempts are throttled per account and per client address (429 with Retry-After); when too
/// many password checks are already waiting, 503 with Retry-After.
#[utoipa::path(
    post,
    path = "/api/v1/sessions",
    tag = "sessions",
    request_body = SessionRequest,
    responses(
        (status = 201, body = SessionResponse),
        (status = 400, description = "Malformed or over-long user or password", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong user or password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed sign-ins: retry after Retry-After seconds", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many sign-ins in progress", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn sign_in(
    State(s): State<AppState>,
    Client(client): Client,
    Json(body): Json<SessionRequest>,
) -> ApiResult<Response> {
    let (token, session, user) = s.service.sign_in(&body.user, &body.password, &client).await.map_err(|e| match e {
        pchat_service::ServiceError::Unauthenticated => {
            ApiError::new(StatusCode::UNAUTHORIZED, api::codes::UNAUTHENTICATED, "wrong user or password")
        }
        other => other.into(),
    })?;
    let body = SessionResponse { token, user: wire::user(&user), session: session_info(&session, true) };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Sign out: the token stops working and the session's live connections close.
#[utoipa::path(
    delete,
    path = "/api/v1/sessions/current",
    tag = "sessions",
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub(crate) async fn sign_out(State(s): State<AppState>, Auth(_, session): Auth) -> ApiResult<Response> {
    s.service.sign_out(&session.token).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The caller's own sessions, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/me/sessions",
    tag = "sessions",
    responses(
        (status = 200, body = Page<SessionInfo>),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub(crate) async fn my_sessions(State(s): State<AppState>, Auth(caller, session): Auth) -> ApiResult<Response> {
    let sessions = s.service.my_sessions(&caller, &session.record).await?;
    let items = sessions.iter().map(|SessionView { record, current }| session_info(record, *current)).collect();
    Ok(axum::Json(Page { items, next_cursor: None }).into_response())
}

/// Ends one of the caller's own sessions; its live connections close.
#[utoipa::path(
    delete,
    path = "/api/v1/me/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "A session id from GET /api/v1/me/sessions")),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session of the caller", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub(crate) async fn end_my_session(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    s.service.end_my_session(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Changes the caller's password (the current one is required); every other session of the caller ends.
#[utoipa::path(
    put,
    path = "/api/v1/me/password",
    tag = "sessions",
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Wrong current password, or a new one outside the length limits", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong current passwords", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub(crate) async fn change_my_password(
    State(s): State<AppState>,
    Auth(caller, session): Auth,
    Client(client): Client,
    Json(body): Json<PasswordChange>,
) -> ApiResult<Response> {
    s.service.change_my_password(&caller, &session.record, &body.current_password, &body.new_password, &client).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Ends every session of a user (user_admin); their live connections close.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{address}/sessions",
    tag = "directory",
    params(("address" = String, Path, description = "User address")),
    responses(
        (status = 204, description = "Every session ended"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a user administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub(crate) async fn end_sessions_of(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(address): Path<String>,
) -> ApiResult<Response> {
    s.service.end_sessions_of(&caller, &address).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Sets a user's password (user_admin); every session of the user ends.
#[utoipa::path(
    put,
    path = "/api/v1/users/{address}/password",
    tag = "directory",
    params(("address" = String, Path, description = "User address")),
    request_body = PasswordSet,
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "A password outside the length limits", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a user administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub(crate) async fn set_password(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(address): Path<String>,
    Json(body): Json<PasswordSet>,
) -> ApiResult<Response> {
    s.service.set_password(&caller, &address, &body.password).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
