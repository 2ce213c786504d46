//! The operator web UI at `/`: built into the binary (web-client/dist,
//! embedded at build time by `server/build.rs` and rust-embed), so it is
//! served from any working directory; or, with `WEB_DIR` set, from that
//! directory (UI development: `npm run build -- --watch`). Where the binary
//! was built without Node, `/` answers a short page that says how to build
//! the UI, and the start-up summary says so too.
//!
//! Either way, client-side routes (`/`, `/calls`, `/calls/…`) answer
//! `index.html` (deep links are 200), anything else unknown is a plain 404,
//! and every answer carries the UI's security headers
//! ([`crate::browser::ui_headers`]).

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The files of web-client/dist as they were at build time (none when the
/// UI could not be built).
#[derive(rust_embed::RustEmbed)]
#[folder = "$OUT_DIR/ui"]
struct Embedded;

/// Where the UI comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `WEB_DIR`: a directory with an `index.html`.
    Dir(PathBuf),
    /// Built into the binary.
    Embedded,
    /// Neither: `/` explains how to build the UI.
    Missing,
}

impl Source {
    /// `WEB_DIR` when set, else the embedded UI if the binary has one.
    pub fn of(web_dir: Option<&Path>) -> Self {
        match web_dir {
            Some(dir) => Self::Dir(dir.to_path_buf()),
            None if Embedded::get("index.html").is_some() => Self::Embedded,
            None => Self::Missing,
        }
    }

    /// For the start-up summary.
    pub fn describe(&self) -> String {
        match self {
            Self::Dir(dir) => format!("served from WEB_DIR {}", dir.display()),
            Self::Embedded => format!("built into the binary ({} files)", Embedded::iter().count()),
            Self::Missing => format!(
                "NOT built into this binary (it was built without Node.js): / shows how to build it ({BUILD_HINT})"
            ),
        }
    }
}

const BUILD_HINT: &str = "install Node.js 20.19+ and rebuild the server, or run `cd web-client && npm ci && npm run build` and set WEB_DIR=web-client/dist";

/// True for the paths the UI routes itself (deep links get `index.html`).
fn is_ui_route(req: &Request) -> bool {
    let path = req.uri().path();
    matches!(*req.method(), Method::GET | Method::HEAD)
        && (path == "/" || path == "/calls" || path.starts_with("/calls/"))
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// The service answering every path no other route takes.
pub fn service(source: Source) -> axum::routing::MethodRouter {
    let ui = tower::service_fn(move |req: Request| {
        let source = source.clone();
        async move {
            Ok::<_, Infallible>(match source {
                Source::Dir(dir) => from_dir(&dir, req).await,
                Source::Embedded => embedded(&req),
                Source::Missing if is_ui_route(&req) => missing(),
                Source::Missing => not_found(),
            })
        }
    });
    axum::routing::any_service(
        tower::ServiceBuilder::new()
            .layer(axum::middleware::map_response(crate::browser::ui_headers))
            .service(ui),
    )
}

/// `WEB_DIR`: its files, `index.html` for the UI's routes, else 404.
async fn from_dir(dir: &Path, req: Request) -> Response {
    use tower::ServiceExt as _;
    let index = dir.join("index.html");
    let spa = tower::service_fn(move |req: Request| {
        let index = index.clone();
        async move {
            let resp = match is_ui_route(&req) {
                true => match tokio::fs::read(&index).await {
                    Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
                    Err(_) => not_found(),
                },
                false => not_found(),
            };
            Ok::<_, Infallible>(resp)
        }
    });
    // `fallback`, not `not_found_service`: the latter turns every answer into
    // a 404, deep links of the UI included.
    match tower_http::services::ServeDir::new(dir)
        .fallback(spa)
        .oneshot(req)
        .await
    {
        Ok(resp) => resp.into_response(),
        Err(never) => match never {},
    }
}

/// The embedded files: hashed `/assets/…` are immutable, `index.html` is
/// revalidated (ETag) so a new binary's UI is picked up at once.
fn embedded(req: &Request) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return not_found();
    }
    let path = req.uri().path().trim_start_matches('/');
    let (name, file) = match Embedded::get(path).filter(|_| !path.is_empty()) {
        Some(file) => (path, file),
        None if is_ui_route(req) => match Embedded::get("index.html") {
            Some(file) => ("index.html", file),
            None => return not_found(),
        },
        None => return not_found(),
    };
    let etag = format!(
        "\"{}\"",
        file.metadata.sha256_hash()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let headers = [
        (
            header::ETAG,
            HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\"")),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let content_type =
        HeaderValue::from_str(file.metadata.mimetype()).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    (headers, [(header::CONTENT_TYPE, content_type)], file.data.into_owned()).into_response()
}

/// `/` of a binary built without the UI.
fn missing() -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>voice-agent: web UI not built</title>\
<body><h1>The web UI is not built into this server</h1>\
<p>This binary was built where the web UI (<code>web-client/</code>) could not be built. The API, the CLI and \
<code>grpcurl</code> work as usual.</p><p>To get the UI: {}.</p></body></html>\n",
        BUILD_HINT.replace('`', "")
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    async fn get(source: Source, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let req = Request::get(path).body(Body::empty()).expect("a request");
        let resp = service(source).oneshot(req).await.expect("infallible");
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("a body");
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn without_a_ui_its_routes_say_how_to_build_it() {
        for path in ["/", "/calls", "/calls/call_0123456789abcdef0123456789abcdef"] {
            let (status, headers, body) = get(Source::Missing, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(body.contains("npm ci && npm run build"), "{path}: {body}");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
            assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY), "{path}");
        }
        for path in ["/assets/index.js", "/nope"] {
            assert_eq!(get(Source::Missing, path).await.0, StatusCode::NOT_FOUND, "{path}");
        }
        assert!(Source::Missing.describe().contains("NOT built"));
    }

    #[tokio::test]
    async fn web_dir_wins_over_the_embedded_ui() {
        let dir = std::env::temp_dir().join(format!("va-ui-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        std::fs::write(dir.join("index.html"), "<title>from WEB_DIR</title>").expect("index.html");
        let source = Source::of(Some(&dir));
        assert_eq!(source, Source::Dir(dir.clone()));
        let (status, _, body) = get(source, "/calls/x").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "<title>from WEB_DIR</title>"));
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
