//! The web console's assets, embedded in the binary and served at `/` (the page) and
//! `/console/…` (its scripts, styles and the vendored libraries), with the headers a browser
//! needs to keep it safe: a Content-Security-Policy with no inline script, no framing, no
//! sniffing, no referrer. Assets are revalidated by ETag (their SHA-256).

use axum::{
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "console/"]
struct Assets;

/// The console's policy: scripts, styles, images and connections (fetch and WebSocket) from
/// this origin only; styles may also be set inline (the editor and charts style elements).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self'; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes, compressed for browsers that accept gzip (the vendored libraries are
/// about 450 KB, 140 KB gzipped).
pub(crate) fn routes() -> axum::Router<crate::AppState> {
    axum::Router::new()
        .route("/", axum::routing::get(index))
        .route("/console/{*path}", axum::routing::get(file))
        .layer(tower_http::compression::CompressionLayer::new())
}

/// `GET /`: the console's page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    asset("app/index.html", &headers)
}

/// `GET /console/{*path}`: one of the console's assets.
pub(crate) async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    asset(&path, &headers)
}

fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return crate::ApiError::not_found("no such console file").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        file.data.into_owned().into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(file.metadata.mimetype()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidated on every load: a new binary serves new assets at the same paths.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if path.ends_with(".html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    response
}

/// Adds the headers every response carries: no MIME sniffing, no framing, no referrer.
pub(crate) async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_modules_are_embedded() {
        let page = Assets::get("app/index.html").expect("index.html is embedded");
        let page = std::str::from_utf8(&page.data).expect("utf-8");
        // No inline script: every script is a module file from this origin.
        assert!(!page.contains("<script>"), "inline script in index.html");
        for src in page
            .split("src=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
        {
            let path = src.strip_prefix("/console/").expect("a console path");
            assert!(Assets::get(path).is_some(), "{src} is not embedded");
        }
        assert!(Assets::get("vendor/vendor.js").is_some());
    }
}
