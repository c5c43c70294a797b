//! The one place where errors become HTTP responses: RFC 9457 problem documents with stable codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pchat_api_types::{Problem, codes};
use pchat_service::ServiceError;
use tracing::warn;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub field: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), field: None, retry_after: None }
    }

    pub fn validation(field: &str, detail: impl Into<String>) -> Self {
        Self { field: Some(field.to_owned()), ..Self::new(StatusCode::BAD_REQUEST, codes::VALIDATION_FAILED, detail) }
    }

    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, codes::UNAUTHENTICATED, "a valid bearer token is required")
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, format!("{what} not found"))
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!("https://pchat.dev/problems/{}", self.code.replace('_', "-")),
            title: self.status.canonical_reason().unwrap_or("error").to_owned(),
            status: self.status.as_u16(),
            code: self.code.to_owned(),
            detail: self.detail.clone(),
            field: self.field.clone(),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let field = e.field().map(str::to_owned);
        let detail = e.to_string();
        let (status, code) = match &e {
            ServiceError::Unauthenticated => (StatusCode::UNAUTHORIZED, codes::UNAUTHENTICATED),
            ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, codes::FORBIDDEN),
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, codes::NOT_FOUND),
            ServiceError::ChatDisabled => (StatusCode::FORBIDDEN, codes::CHAT_DISABLED_BY_POLICY),
            ServiceError::Validation(_) => (StatusCode::BAD_REQUEST, codes::VALIDATION_FAILED),
            ServiceError::NameTaken { .. } => (StatusCode::CONFLICT, codes::NAME_TAKEN),
            ServiceError::OutOfScope { .. } => (StatusCode::BAD_REQUEST, codes::PRINCIPAL_OUT_OF_SCOPE),
            ServiceError::CategoryNotEmpty => (StatusCode::CONFLICT, codes::CATEGORY_NOT_EMPTY),
            ServiceError::RoomDisabled => (StatusCode::FORBIDDEN, codes::ROOM_DISABLED),
            ServiceError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, codes::PAYLOAD_TOO_LARGE),
            ServiceError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, codes::RATE_LIMITED),
            ServiceError::Conflict(_) => (StatusCode::CONFLICT, codes::CONFLICT),
            ServiceError::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, codes::CONFLICT),
            ServiceError::LastAdministrator => (StatusCode::CONFLICT, codes::LAST_ADMINISTRATOR),
            ServiceError::LimitReached(_) => (StatusCode::CONFLICT, codes::LIMIT_REACHED),
            ServiceError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE),
            ServiceError::Unavailable(cause) => {
                warn!(%cause, "storage unavailable");
                return Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::UNAVAILABLE,
                    "the service is temporarily unavailable",
                );
            }
        };
        let retry_after = match e {
            ServiceError::RateLimited { retry_after_secs } | ServiceError::Busy { retry_after_secs } => {
                Some(retry_after_secs)
            }
            _ => None,
        };
        Self { status, code, detail, field, retry_after }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The safety net: an error response that is not a problem document already (a rejection of an extractor pchat
/// does not wrap, say) becomes one, with the code its status implies. The original text becomes the detail.
pub(crate) async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let code = match status {
        StatusCode::UNAUTHORIZED => codes::UNAUTHENTICATED,
        StatusCode::FORBIDDEN => codes::FORBIDDEN,
        StatusCode::NOT_FOUND => codes::NOT_FOUND,
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => codes::CONFLICT,
        StatusCode::PAYLOAD_TOO_LARGE => codes::PAYLOAD_TOO_LARGE,
        StatusCode::TOO_MANY_REQUESTS => codes::RATE_LIMITED,
        s if s.is_server_error() => codes::UNAVAILABLE,
        _ => codes::VALIDATION_FAILED,
    };
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    let detail = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    let mut problem = ApiError::new(status, code, detail);
    if code == codes::VALIDATION_FAILED {
        problem.field = Some("request".to_owned());
    }
    let mut response = problem.into_response();
    if let Some(v) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}
