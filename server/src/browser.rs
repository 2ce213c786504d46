//! What web browsers may do with this server: which pages may call the API
//! (CORS, off unless `CORS_ALLOWED_ORIGINS` lists origins), which `Host` and
//! `Origin` an open API answers (DNS rebinding, other pages), and the security
//! headers of the web UI.
//!
//! Without `API_TOKEN` the API is open to whoever reaches the port, which on
//! the loopback default means: the operator's own programs, and any web page
//! the operator's browser has open. A page from another origin can send
//! requests without reading the answers (no CORS), and a page on a rebound
//! DNS name reaches 127.0.0.1 under its own origin. [`guard`] refuses both
//! before any handler runs. With a token set the checks are off: a page
//! cannot present the token (browsers never attach it on their own), and a
//! reverse proxy that rewrites `Host` keeps working.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};
use url::Url;

use crate::config::Config;

/// The web UI's Content-Security-Policy. The built UI is one module script
/// and one stylesheet from `/assets/`, talks grpc-web to its own origin, and
/// its icon is `data:,`; nothing inline, nothing from elsewhere, no framing.
/// It plays a call's recording from a `blob:` URL (fetched with the API
/// token, which an `<audio src>` could not send), hence `media-src blob:`.
pub const UI_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; \
connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Paths that carry their own authentication (Twilio's signature over the
/// PUBLIC_URL form of the URL), so the `Host` a tunnel or proxy forwards does
/// not matter to them, and a page could not forge the signature anyway.
const SIGNED_PREFIXES: [&str; 2] = ["/twilio/", "/ws/media/"];

/// The gRPC response headers a cross-origin grpc-web client must be able to read.
const EXPOSED: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// The request headers grpc-web clients send (connect-web, grpc-web).
const ALLOWED_HEADERS: [&str; 5] = [
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
];

/// The CORS layer for the gRPC routes: `None` (no CORS headers at all, so
/// browsers keep other origins out) unless `CORS_ALLOWED_ORIGINS` lists some.
pub fn cors(allowed: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = allowed.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods(AllowMethods::list([Method::POST, Method::OPTIONS]))
            .allow_headers(AllowHeaders::list(ALLOWED_HEADERS.map(HeaderName::from_static)))
            .expose_headers(ExposeHeaders::list(EXPOSED.map(HeaderName::from_static)))
            .max_age(Duration::from_secs(24 * 3600)),
    )
}

/// Which `Host` and `Origin` values the server answers as its own.
#[derive(Debug)]
pub struct OriginPolicy {
    /// Off when an API token is set.
    enforce: bool,
    /// PUBLIC_URL's host, lower case (the tunnel's or proxy's name).
    public_host: Option<String>,
    /// PUBLIC_URL's origin.
    public_origin: String,
    /// `CORS_ALLOWED_ORIGINS`.
    allowed: Vec<String>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The `Host` names neither this machine by address nor `localhost` nor PUBLIC_URL's host.
    #[error(
        "refused: the Host header names another server (DNS rebinding protection); use this server's address, localhost or PUBLIC_URL's host, or set API_TOKEN"
    )]
    Host,
    /// The `Origin` is another site's (or `null`).
    #[error(
        "refused: requests from another web origin are not allowed; list that origin in CORS_ALLOWED_ORIGINS, or set API_TOKEN"
    )]
    Origin,
}

impl OriginPolicy {
    /// The policy of a server with `config`, reached at `public_url` (the
    /// configured PUBLIC_URL, else the bound address).
    pub fn new(config: &Config, public_url: &Url) -> Self {
        Self {
            enforce: config.api_token.is_none(),
            public_host: public_url.host_str().map(str::to_ascii_lowercase),
            public_origin: public_url.origin().ascii_serialization(),
            allowed: config.cors_allowed_origins.clone(),
        }
    }

    /// Checks one request's path, `Host` (or HTTP/2 `:authority`) and `Origin`.
    pub fn check(&self, path: &str, authority: Option<&str>, origin: Option<&[u8]>) -> Result<(), Refusal> {
        // The probes tell nothing and change nothing; a kubelet or load
        // balancer sends them to the pod's or instance's IP or any name.
        if !self.enforce || SIGNED_PREFIXES.iter().any(|p| path.starts_with(p)) || crate::health::PATHS.contains(&path)
        {
            return Ok(());
        }
        let authority = authority.map(str::to_ascii_lowercase);
        // No Host at all is HTTP/1.0 from a program; browsers always send one.
        if let Some(authority) = &authority
            && !self.own_host(authority)
        {
            return Err(Refusal::Host);
        }
        // No Origin: not a cross-origin browser request (browsers send it on
        // every POST, CORS request and WebSocket); programs seldom send one.
        let Some(origin) = origin else {
            return Ok(());
        };
        let origin = std::str::from_utf8(origin)
            .map_err(|_| Refusal::Origin)?
            .to_ascii_lowercase();
        let same_origin = authority
            .as_deref()
            .is_some_and(|a| origin == format!("http://{a}") || origin == format!("https://{a}"));
        if same_origin || origin == self.public_origin || self.allowed.contains(&origin) {
            Ok(())
        } else {
            Err(Refusal::Origin)
        }
    }

    /// A DNS name can be rebound to 127.0.0.1; an address cannot. So an IP
    /// literal, `localhost` (resolved by the browser itself) and PUBLIC_URL's
    /// host are ours, any other name is not. The port is not compared: it is
    /// not part of rebinding, and port forwarding (`docker -p 9000:8000`)
    /// changes it legitimately.
    fn own_host(&self, authority: &str) -> bool {
        let host = match authority.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((addr, _port)) => return addr.parse::<std::net::Ipv6Addr>().is_ok(),
                None => return false,
            },
            None => authority.rsplit_once(':').map_or(authority, |(h, _port)| h),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        host.parse::<IpAddr>().is_ok() || host == "localhost" || self.public_host.as_deref() == Some(host)
    }
}

/// Middleware over every route: refuses what [`OriginPolicy::check`] refuses.
/// gRPC and grpc-web requests get `PERMISSION_DENIED` (readable by a
/// grpc-web client that is allowed to read at all, e.g. the UI behind the
/// dev server's proxy), anything else a plain 403.
pub async fn guard(State(policy): State<Arc<OriginPolicy>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let origin = headers.get(header::ORIGIN).map(HeaderValue::as_bytes);
    match policy.check(req.uri().path(), authority, origin) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::debug!(path = req.uri().path(), ?refusal, "refused a browser request");
            refuse(headers, refusal)
        }
    }
}

fn refuse(headers: &HeaderMap, refusal: Refusal) -> Response {
    let grpc_type = headers
        .get(header::CONTENT_TYPE)
        .filter(|t| t.as_bytes().starts_with(b"application/grpc"))
        .cloned();
    match grpc_type {
        Some(content_type) => {
            let mut resp = crate::grpc::errors::permission_denied(&refusal.to_string()).into_http::<axum::body::Body>();
            resp.headers_mut().insert(header::CONTENT_TYPE, content_type);
            resp
        }
        None => (StatusCode::FORBIDDEN, format!("{refusal}\n")).into_response(),
    }
}

/// Adds the UI's security headers to a response of the static web UI.
pub async fn ui_headers<B>(mut resp: axum::http::Response<B>) -> axum::http::Response<B> {
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(UI_CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(token: bool, public: &str, allowed: &[&str]) -> OriginPolicy {
        let mut config = Config::for_tests();
        config.api_token = token.then(|| crate::config::Secret::new("t"));
        config.cors_allowed_origins = allowed.iter().map(|s| s.to_string()).collect();
        OriginPolicy::new(&config, &Url::parse(public).unwrap())
    }

    const API: &str = "/voiceagent.v1.VoiceAgentService/PlaceCall";

    #[test]
    fn own_hosts_are_addresses_localhost_and_public_url() {
        let p = policy(false, "https://abc.ngrok.app", &[]);
        for host in [
            "127.0.0.1:8000",
            "127.0.0.1",
            "localhost:8000",
            "LOCALHOST",
            "[::1]:8000",
            "192.168.1.5:9000",
            "abc.ngrok.app",
            "abc.ngrok.app:443",
        ] {
            assert_eq!(p.check(API, Some(host), None), Ok(()), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8000",
            "127.0.0.1.evil.example",
            "[::1",
            "localhost.evil",
        ] {
            assert_eq!(p.check(API, Some(host), None), Err(Refusal::Host), "{host}");
        }
        assert_eq!(p.check(API, None, None), Ok(()));
    }

    #[test]
    fn origins_are_same_origin_public_or_allowed() {
        let p = policy(false, "http://127.0.0.1:8000", &["http://localhost:5173"]);
        let host = Some("127.0.0.1:8000");
        for origin in ["http://127.0.0.1:8000", "http://localhost:5173"] {
            assert_eq!(p.check(API, host, Some(origin.as_bytes())), Ok(()), "{origin}");
        }
        assert_eq!(
            p.check(API, Some("localhost:9000"), Some(b"http://localhost:9000")),
            Ok(())
        );
        for origin in [
            "http://evil.example",
            "null",
            "http://localhost:3000",
            "http://127.0.0.1:8001",
        ] {
            assert_eq!(
                p.check(API, host, Some(origin.as_bytes())),
                Err(Refusal::Origin),
                "{origin}"
            );
        }
        assert_eq!(p.check(API, host, Some(b"\xff")), Err(Refusal::Origin));
    }

    #[test]
    fn a_token_or_a_signed_route_turns_the_checks_off() {
        let p = policy(true, "http://127.0.0.1:8000", &[]);
        assert_eq!(p.check(API, Some("evil.example"), Some(b"null")), Ok(()));
        let p = policy(false, "http://127.0.0.1:8000", &[]);
        for path in [
            "/twilio/status",
            "/twilio/twiml",
            "/twilio/connect-action",
            "/twilio/dial-action",
            "/ws/media/call_0",
        ] {
            assert_eq!(p.check(path, Some("evil.example"), Some(b"null")), Ok(()), "{path}");
        }
        assert_eq!(p.check("/metrics", Some("evil.example"), None), Err(Refusal::Host));
        for path in ["/healthz", "/readyz"] {
            assert_eq!(p.check(path, Some("10.1.2.3:8000"), None), Ok(()), "{path}");
            assert_eq!(
                p.check(path, Some("svc.cluster.local"), Some(b"null")),
                Ok(()),
                "{path}"
            );
        }
        assert_eq!(p.check("/readyz/x", Some("evil.example"), None), Err(Refusal::Host));
    }

    #[test]
    fn no_cors_unless_origins_are_listed() {
        assert!(cors(&[]).is_none());
        assert!(cors(&["http://localhost:5173".into()]).is_some());
    }
}
