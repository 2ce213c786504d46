//! HTTP routes beside gRPC: Twilio's webhooks and media WebSocket (each
//! checks `X-Twilio-Signature`, protocols.md §3), `/metrics` (behind
//! `API_TOKEN`), the web UI, and plain 404s.
//!
//! Handlers only check, translate and hand over: decisions about a call live
//! in the [`crate::call`] hub and the [`crate::bridge`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::AppState;
use crate::call::{CallId, CallStatus, EventKind};
use crate::telephony::twilio::{signature, twiml};

/// Largest Media Streams message we accept (issue: over 1 MiB closes the socket).
pub const MAX_MEDIA_MESSAGE: usize = 1 << 20;

/// The HTTP router.
pub fn router(state: Arc<AppState>) -> Router {
    let web_dir = state.config.web_dir.clone();
    let mut router = Router::new()
        .route("/twilio/twiml", post(twiml_webhook))
        .route("/twilio/status", post(status_webhook))
        .route("/ws/media/{call_id}", get(media_upgrade))
        .route("/metrics", get(metrics))
        .with_state(state);
    router = match web_dir {
        Some(dir) if dir.join("index.html").is_file() => {
            let index = dir.join("index.html");
            router.fallback_service(
                tower_http::services::ServeDir::new(&dir).not_found_service(tower::service_fn(
                    move |req: axum::extract::Request| {
                        let index = index.clone();
                        async move { Ok::<_, std::convert::Infallible>(spa_or_404(req, &index).await) }
                    },
                )),
            )
        }
        _ => router.fallback(not_found),
    };
    router
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Client-side routes of the UI (`/calls/…`) get `index.html`; anything else
/// unknown is a plain 404 (never a grpc-web error).
async fn spa_or_404(req: axum::extract::Request, index: &std::path::Path) -> Response {
    let path = req.uri().path();
    let is_ui_route = req.method() == axum::http::Method::GET && (path == "/" || path.starts_with("/calls"));
    if is_ui_route && let Ok(html) = tokio::fs::read(index).await {
        return ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    }
    not_found().await
}

#[derive(Deserialize)]
struct CallIdQuery {
    call_id: Option<String>,
}

fn forbidden(why: &str) -> Response {
    tracing::warn!(why, "refused a Twilio request");
    (StatusCode::FORBIDDEN, "invalid Twilio signature\n").into_response()
}

/// The URL Twilio signed: the public base URL plus the path and query Twilio
/// requested (protocols.md §3.4: never the local address, which differs behind
/// tunnels and proxies).
fn signed_url(state: &AppState, uri: &Uri, websocket: bool) -> String {
    let base = state.public_url.as_str().trim_end_matches('/');
    let base = if websocket {
        // §3.3: the upgrade is signed over the ws(s):// URL from the TwiML.
        if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_string()
        }
    } else {
        base.to_string()
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{base}{path}")
}

fn check_signature(state: &AppState, headers: &HeaderMap, url: &str, params: &[(String, String)]) -> bool {
    let Some(given) = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    signature::validate(state.twilio_auth_token.expose(), url, params, given)
}

fn form(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn twiml_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

/// `POST /twilio/twiml?call_id=…`: what Twilio does once the callee answers.
async fn twiml_webhook(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<CallIdQuery>,
    body: Bytes,
) -> Response {
    let params = form(&body);
    if !check_signature(&state, &headers, &signed_url(&state, &uri, false), &params) {
        return forbidden("twiml: bad or missing X-Twilio-Signature");
    }
    let Some(id) = q.call_id.as_deref().and_then(CallId::parse) else {
        return (StatusCode::BAD_REQUEST, "missing or malformed call_id\n").into_response();
    };
    let record = match state.hub.get(&id).await {
        Ok(r) => r,
        Err(_) => return twiml_response(twiml::hangup()),
    };
    let params: HashMap<_, _> = params.into_iter().collect();
    if let Some(sid) = params.get("CallSid")
        && !record.provider_call_id.is_empty()
        && *sid != record.provider_call_id
    {
        return forbidden("twiml: CallSid does not belong to this call");
    }
    if record.status.is_terminal() {
        return twiml_response(twiml::hangup());
    }
    let base = signed_url(&state, &Uri::from_static("/"), true);
    let stream_url = format!("{}ws/media/{}", base, id);
    let greeting = (!record.greeting.is_empty()).then_some(record.greeting.as_str());
    twiml_response(twiml::connect_stream(
        greeting,
        &stream_url,
        &[("call_id", id.as_str()), ("secret", record.stream_secret.as_str())],
    ))
}

/// `POST /twilio/status?call_id=…`: Twilio's call-progress callbacks (§2.1).
async fn status_webhook(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<CallIdQuery>,
    body: Bytes,
) -> Response {
    let params = form(&body);
    if !check_signature(&state, &headers, &signed_url(&state, &uri, false), &params) {
        return forbidden("status: bad or missing X-Twilio-Signature");
    }
    let params: HashMap<String, String> = params.into_iter().collect();
    let Some(id) = q.call_id.as_deref().and_then(CallId::parse) else {
        return (StatusCode::BAD_REQUEST, "missing or malformed call_id\n").into_response();
    };
    let Some(status) = params.get("CallStatus").and_then(|s| CallStatus::from_twilio(s)) else {
        return (StatusCode::BAD_REQUEST, "missing or unknown CallStatus\n").into_response();
    };
    let sid = params.get("CallSid").cloned().unwrap_or_default();
    let seq: Option<u64> = params.get("SequenceNumber").and_then(|s| s.parse().ok());
    let duration: Option<u32> = params.get("CallDuration").and_then(|s| s.parse().ok());
    let answered_by = params.get("AnsweredBy").cloned();
    let error_code = params.get("ErrorCode").cloned().filter(|c| !c.is_empty());
    let sip = params.get("SipResponseCode").cloned();

    let result = state
        .hub
        .update(&id, |rec| {
            if !rec.provider_call_id.is_empty() && !sid.is_empty() && sid != rec.provider_call_id {
                tracing::warn!(call_id = %rec.call_id, "status callback for another CallSid ignored");
                return vec![];
            }
            if rec.provider_call_id.is_empty() {
                rec.provider_call_id = sid.clone();
            }
            // Data that only ever grows is kept even from late callbacks.
            if let Some(d) = duration {
                rec.duration_seconds = rec.duration_seconds.max(d);
            }
            if let Some(a) = &answered_by {
                rec.answered_by = a.clone();
            }
            if let Some(c) = &error_code {
                rec.provider_error_code = c.clone();
            }
            // Callbacks are separate requests with no arrival-order guarantee
            // (§2.1): a duplicate or older one changes nothing, and statuses
            // only move forward; terminal ones are final.
            if let (Some(s), Some(last)) = (seq, rec.last_provider_sequence)
                && s <= last
            {
                return vec![];
            }
            if let Some(s) = seq {
                rec.last_provider_sequence = Some(s);
            }
            if rec.status.is_terminal() || status.rank() <= rec.status.rank() {
                return vec![];
            }
            let detail = status_detail(status, error_code.as_deref(), sip.as_deref(), &rec.end_reason);
            let mut events = Vec::new();
            if let Some(code) = &error_code {
                events.push(EventKind::Error {
                    code: format!("twilio_{code}"),
                    message: format!("Twilio reported error {code} for this call"),
                });
            }
            if status.is_terminal() && rec.end_reason.is_empty() {
                rec.end_reason = detail.clone();
            }
            events.push(EventKind::Status { status, detail });
            events
        })
        .await;
    match result {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(crate::call::hub::HubError::NotFound) => (StatusCode::NOT_FOUND, "unknown call\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "status callback not stored");
            // 5xx makes Twilio retry later, which is what we want.
            (StatusCode::SERVICE_UNAVAILABLE, "not stored\n").into_response()
        }
    }
}

fn status_detail(status: CallStatus, error: Option<&str>, sip: Option<&str>, end_reason: &str) -> String {
    let base = match status {
        CallStatus::Initiated => "dialling".to_string(),
        CallStatus::Ringing => "ringing".to_string(),
        CallStatus::InProgress => "answered".to_string(),
        CallStatus::Completed if !end_reason.is_empty() => end_reason.to_string(),
        CallStatus::Completed => "call ended".to_string(),
        CallStatus::Busy => "the line was busy".to_string(),
        CallStatus::NoAnswer => "nobody answered".to_string(),
        CallStatus::Canceled if !end_reason.is_empty() => end_reason.to_string(),
        CallStatus::Canceled => "canceled before it was answered".to_string(),
        CallStatus::Failed => "the call could not be connected".to_string(),
        CallStatus::Queued => "queued".to_string(),
    };
    match (error, sip) {
        (Some(e), _) => format!("{base} (Twilio error {e})"),
        (None, Some(s)) if status == CallStatus::Failed => format!("{base} (SIP {s})"),
        _ => base,
    }
}

/// `GET /metrics`: the media path's latency histograms and frame counters
/// (Prometheus text format). Behind `API_TOKEN` like the gRPC API, since
/// call volume is nobody else's business.
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config.api_token {
        let given = crate::grpc::bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
        if !crate::grpc::token_matches(given, token.expose()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or invalid 'authorization: Bearer <API_TOKEN>'\n",
            )
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /ws/media/{call_id}`: Twilio opens the Media Streams WebSocket.
async fn media_upgrade(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // §3.3: signed over the wss:// URL with no params; try the trailing-slash
    // variant too (the signature module does).
    if !check_signature(&state, &headers, &signed_url(&state, &uri, true), &[]) {
        return forbidden("media: bad or missing x-twilio-signature on the WebSocket upgrade");
    }
    let Some(id) = CallId::parse(&call_id) else {
        return not_found().await;
    };
    let record = match state.hub.get(&id).await {
        Ok(r) if !r.status.is_terminal() => r,
        Ok(_) => return (StatusCode::GONE, "the call has ended\n").into_response(),
        Err(_) => return not_found().await,
    };
    // Tracked, so that a shutdown waits for the bridge to record how the call ended.
    let bridges = state.bridges.clone();
    ws.max_message_size(MAX_MEDIA_MESSAGE)
        .max_frame_size(MAX_MEDIA_MESSAGE)
        .read_buffer_size(crate::realtime::WS_READ_BUFFER)
        .on_upgrade(move |socket| bridges.track_future(crate::bridge::serve_media(state, record, socket)))
}
