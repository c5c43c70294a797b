//! The web client, embedded at build time from `web/` (see `build.rs`): the page at `/` and `/manage/`, its
//! modules and styles under `/assets/<version>/`. Strict Content-Security-Policy: scripts, styles and connections
//! only from this server, no inline script, no framing of the client; add-ins (any http/https URL an
//! administrator registered) may be framed by it.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
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

/// Whether the request accepts gzip (`Accept-Encoding` naming it, or `*`, without `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused =
                parts.any(|p| p.replace(' ', "").strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()) == Some(0.0));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        },
    )
}

/// One asset of this build, gzip-compressed when the browser accepts it; another version's (or an unknown file)
/// is 404.
pub(crate) async fn asset(Path((version, file)): Path<(String, String)>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.0 == file && file != "index.html") {
        Some(&(_, bytes, kind, gz)) if version == ASSETS_VERSION => {
            let cache = (header::CACHE_CONTROL, "public, max-age=31536000, immutable");
            let vary = (header::VARY, "accept-encoding");
            let response = match gz {
                Some(packed) if accepts_gzip(&headers) => {
                    ([(header::CONTENT_TYPE, kind), cache, vary, (header::CONTENT_ENCODING, "gzip")], packed)
                        .into_response()
                }
                _ => ([(header::CONTENT_TYPE, kind), cache, vary], bytes).into_response(),
            };
            secured(response)
        }
        _ => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn text_assets_are_sent_gzipped_to_browsers_that_accept_it() {
        use std::io::Read;
        let app = ASSETS.iter().find(|a| a.0 == "app.js").expect("app.js is embedded");
        let get = |accept: &str| {
            let mut headers = HeaderMap::new();
            if !accept.is_empty() {
                headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(accept).unwrap());
            }
            asset(Path((ASSETS_VERSION.to_owned(), "app.js".to_owned())), headers)
        };
        let packed = get("gzip, deflate, br").await;
        assert_eq!(packed.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(packed.headers()[header::VARY], "accept-encoding");
        let body = axum::body::to_bytes(packed.into_body(), usize::MAX).await.unwrap();
        assert!(body.len() * 2 < app.1.len(), "{} bytes compressed from {}", body.len(), app.1.len());
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut unpacked).unwrap();
        assert_eq!(unpacked, app.1);
        for refused in ["", "br", "gzip;q=0", "gzip; q=0.0"] {
            let plain = get(refused).await;
            assert!(plain.headers().get(header::CONTENT_ENCODING).is_none(), "{refused:?}");
            let body = axum::body::to_bytes(plain.into_body(), usize::MAX).await.unwrap();
            assert_eq!(&body[..], app.1, "{refused:?}");
        }
        let stale = asset(Path(("0".to_owned(), "app.js".to_owned())), HeaderMap::new()).await;
        assert_eq!(stale.status(), StatusCode::NOT_FOUND);
    }

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
