//! Files in rooms: `POST /api/v1/rooms/{id}/files?name=` streams the request body into the file store, and
//! `GET /api/v1/files/{id}` streams a file back to a reader of its room, as an attachment.

use axum::body::Body;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pchat_api_types::{FileInfo, FileLink, FileUploaded, Problem};

use crate::error::ApiError;
use crate::extract::{Auth, Path, QueryMap, authenticate, bearer};
use crate::handlers::{ApiResult, json};
use crate::{AppState, wire};

/// Uploads a file into a room (posters of the room, where its category allows file upload). The body is the
/// file's bytes, any content type, streamed to the file store and never held whole in memory; over the
/// configuration's `max_file_size_kb` the upload stops and nothing is kept (413). A message announcing the file is
/// posted in the room and captured as FILEUPLOAD.
#[utoipa::path(
    post,
    path = "/api/v1/rooms/{id}/files",
    tag = "files",
    params(
        ("id" = String, Path, description = "Room id or name:NAME"),
        ("name" = String, Query, description = "The file's name: 1 to 255 characters, no / or \\, no control characters", min_length = 1, max_length = 255)
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"),
    responses(
        (status = 201, body = FileUploaded),
        (status = 403, description = "Not a poster of the room, or file upload is off in its category", body = Problem),
        (status = 413, description = "Larger than max_file_size_kb", body = Problem)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn upload(
    State(s): State<AppState>,
    Auth(caller, _): Auth,
    Path(id): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let uploaded = s.service.upload_file(&caller, &id, q.str("name"), declared, body.into_data_stream()).await?;
    let f = &uploaded.file;
    let answer = FileUploaded {
        file: FileInfo {
            id: f.id.clone(),
            name: f.name.clone(),
            size: f.size,
            content_type: f.content_type.clone(),
            sha256: f.sha256.clone(),
        },
        message: wire::message(&uploaded.message),
    };
    Ok(json(StatusCode::CREATED, &answer))
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266): an ASCII fallback without quotes or backslashes,
/// and the exact name percent-encoded.
fn disposition(name: &str) -> String {
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// A short-lived link to download a file without an `Authorization` header, so that a browser can navigate to it
/// and stream the file to disk instead of fetching it into memory. For readers of the file's room (404 otherwise,
/// as for a file that does not exist); valid for 60 seconds and only while the caller's session lasts; access is
/// checked again when it is used.
#[utoipa::path(
    post,
    path = "/api/v1/files/{id}/link",
    tag = "files",
    params(("id" = String, Path, description = "File id")),
    responses((status = 200, body = FileLink)),
    security(("bearer" = []))
)]
pub(crate) async fn link(
    State(s): State<AppState>,
    Auth(caller, session): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (link, expires_at) = s.service.file_link(&caller, &session.record, &id).await?;
    // `id` names a stored file (a UUID), so it needs no escaping in the path.
    let url = format!("/api/v1/files/{id}?link={link}");
    Ok(json(StatusCode::OK, &FileLink { url, expires_at: wire::format_micros(expires_at) }))
}

/// A file's bytes, for readers of its room, always as an attachment with a content type that cannot run in the
/// browser (and `nosniff`). A file the caller may not see is 404, as one that does not exist. Records FILEDOWNLOAD.
/// Authenticated by the bearer token, or by a `link` from `POST /api/v1/files/{id}/link`.
#[utoipa::path(
    get,
    path = "/api/v1/files/{id}",
    tag = "files",
    params(
        ("id" = String, Path, description = "File id"),
        ("link" = Option<String>, Query, description = "A download link's token, instead of the bearer token")
    ),
    responses(
        (status = 200, description = "The file's bytes, Content-Disposition: attachment", content_type = "*/*")
    ),
    security(("bearer" = []))
)]
pub(crate) async fn download(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: QueryMap,
    parts: Parts,
) -> ApiResult<Response> {
    let caller = match q.str("link") {
        Some(link) => s.service.authenticate_file_link(&id, link).await.map_err(|e| match e {
            pchat_service::ServiceError::Unauthenticated => ApiError::unauthenticated(),
            other => other.into(),
        })?,
        None => {
            let token = bearer(&parts.headers).ok_or_else(ApiError::unauthenticated)?;
            authenticate(&s, &parts, &token).await?.0
        }
    };
    let download = s.service.download_file(&caller, &id).await?;
    let f = &download.file;
    let mut response = Body::from_stream(download.content).into_response();
    let headers = response.headers_mut();
    let value =
        |v: &str| HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, value(&f.content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(f.size.max(0) as u64));
    headers.insert(header::CONTENT_DISPOSITION, value(&disposition(&f.name)));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    headers.insert("x-file-sha256", value(&f.sha256));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::disposition;

    #[test]
    fn dispositions_are_quoted_safely() {
        assert_eq!(disposition("a b.pdf"), "attachment; filename=\"a b.pdf\"; filename*=UTF-8''a%20b.pdf");
        let tricky = disposition("x\"; evil=\"1\\报告.pdf");
        assert!(tricky.starts_with("attachment; filename=\"x_; evil=_1___.pdf\";"), "{tricky}");
        assert!(tricky.ends_with("%E6%8A%A5%E5%91%8A.pdf"), "{tricky}");
    }
}
