//! The web client, embedded at build time from `web/` (see `build.rs`): the page at `/` and `/manage/`, its
//! modules and styles under `/assets/<version>/`. Strict Content-Security-Policy: scripts, styles and connections
//! only from this server, no inline script, no framing of the client; add-ins (any http/https URL an
//! administrator registered) may be framed by it.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The policy every page and asset is served with.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     connect-src 'self'; font-src 'self'; manifest-src 'self'; frame-src http: https:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page, pointing at this build's assets.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    let raw = ASSETS.iter().find(|a| a.0 == "index.html").map_or(&b""[..], |a| a.1);
    String::from_utf8_lossy(raw).replace("{{ASSETS}}", &format!("/assets/{ASSETS_VERSION}"))
});

fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The client's page (never cached: it names the current assets).
pub(crate) fn page() -> Response {
    secured(
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], PAGE.as_str())
            .into_response(),
    )
}

/// One asset of this build; another version's (or an unknown file) is 404.
pub(crate) async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    match ASSETS.iter().find(|a| a.0 == file && file != "index.html") {
        Some(&(_, bytes, kind)) if version == ASSETS_VERSION => secured(
            ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")], bytes)
                .into_response(),
        ),
        _ => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_this_builds_assets_and_every_module_it_loads_exists() {
        assert!(PAGE.contains(&format!("/assets/{ASSETS_VERSION}/app.js")), "{}", PAGE.as_str());
        assert!(!PAGE.contains("{{"), "a placeholder is left in the page");
        for a in ASSETS.iter().filter(|a| a.0.ends_with(".js")) {
            let text = String::from_utf8_lossy(a.1);
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line.rsplit_once("from \"./").map(|(_, t)| t.trim_end_matches("\";"));
                if let Some(target) = target {
                    assert!(ASSETS.iter().any(|b| b.0 == target), "{} imports a missing {target}", a.0);
                }
            }
        }
    }
}
