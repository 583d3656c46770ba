//! The web dashboard's files (`ui/dist`, built by `ui/build.sh` and kept in the repository),
//! embedded in the binary and served at `/ui/`. They hold no data, so they need no credentials:
//! every API call the page makes is authenticated like any other. A strict Content-Security-Policy
//! lets the page run only its own script and style and talk only to its own origin.

use std::sync::OnceLock;

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// What the page may load and reach: its own files and its own origin's API, nothing inline,
/// no frames around it.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Revalidated on every load (cheap with the ETag): the file names carry no version, so a
/// browser must not keep an old `app.js` beside a new `index.html`.
const CACHE_CONTROL_VALUE: &str = "no-cache";

struct Asset {
    body: &'static [u8],
    content_type: &'static str,
}

const INDEX_HTML: Asset = Asset {
    body: include_bytes!("../../../ui/dist/index.html"),
    content_type: "text/html; charset=utf-8",
};
const APP_JS: Asset = Asset {
    body: include_bytes!("../../../ui/dist/app.js"),
    content_type: "text/javascript; charset=utf-8",
};
const APP_CSS: Asset = Asset {
    body: include_bytes!("../../../ui/dist/app.css"),
    content_type: "text/css; charset=utf-8",
};

/// `GET /ui`: to `/ui/`, relative so that a path prefix in front (an API Gateway stage) is kept.
pub async fn redirect() -> Response {
    let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static("ui/"));
    with_security_headers(response)
}

/// `GET /ui/`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX_HTML, etags().index.as_str(), &headers)
}

/// `GET /ui/app.js`.
pub async fn app_js(headers: HeaderMap) -> Response {
    serve(&APP_JS, etags().app_js.as_str(), &headers)
}

/// `GET /ui/app.css`.
pub async fn app_css(headers: HeaderMap) -> Response {
    serve(&APP_CSS, etags().app_css.as_str(), &headers)
}

struct Etags {
    index: String,
    app_js: String,
    app_css: String,
}

/// Each file's strong ETag, its SHA-256's first 16 bytes, computed once per process.
fn etags() -> &'static Etags {
    static ETAGS: OnceLock<Etags> = OnceLock::new();
    ETAGS.get_or_init(|| Etags {
        index: etag_of(INDEX_HTML.body),
        app_js: etag_of(APP_JS.body),
        app_css: etag_of(APP_CSS.body),
    })
}

fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn serve(asset: &Asset, etag: &str, request: &HeaderMap) -> Response {
    let unchanged = request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*");
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = asset.body.into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        response
    };
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL_VALUE));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(ETAG, value);
    }
    with_security_headers(response)
}

fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_page_loads_only_its_own_script_and_style() {
        let page = std::str::from_utf8(INDEX_HTML.body).unwrap_or_default();

        assert!(page.contains(r#"src="app.js""#), "{page}");
        assert!(page.contains(r#"href="app.css""#), "{page}");
        assert!(
            !page.contains("<script>") && !page.contains("<style") && !page.contains("style="),
            "the page must have no inline script or style, which the CSP refuses: {page}"
        );
    }

    #[test]
    fn an_etag_is_quoted_and_changes_with_the_content() {
        let a = etag_of(b"a");

        assert!(
            a.starts_with('"') && a.ends_with('"') && a.len() == 34,
            "{a}"
        );
        assert_ne!(a, etag_of(b"b"));
    }
}
