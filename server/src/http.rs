//! HTTP routes beside gRPC: Twilio's webhooks and media WebSocket (each
//! checks `X-Twilio-Signature`, protocols.md §3), `/metrics` and
//! `/recordings/{call_id}.wav` (behind `API_TOKEN`), the probes ([`crate::health`]), the web UI ([`crate::ui`]),
//! and plain 404s.
//!
//! Handlers only authenticate ([`SignedTwilioForm`], [`SignedTwilioUpgrade`]),
//! parse and hand over: decisions about a call live in
//! [`crate::call::lifecycle`] (applied by the [`crate::call`] hub) and the
//! [`crate::bridge`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::AppState;
use crate::call::hub::HubError;
use crate::call::lifecycle::amd::{self, AmdIgnored, AmdReport};
use crate::call::lifecycle::{self, Ignored, ProviderStatus, Reported};
use crate::call::{CallId, CallStatus, VoicemailMode};
use crate::telephony::twilio::{signature, twiml};

/// Largest Media Streams message we accept (issue: over 1 MiB closes the socket).
pub const MAX_MEDIA_MESSAGE: usize = 1 << 20;

/// The HTTP router.
pub fn router(state: Arc<AppState>) -> Router {
    let ui = crate::ui::Source::of(state.config.web_dir.as_deref());
    Router::new()
        .route("/twilio/twiml", post(twiml_webhook))
        .route("/twilio/status", post(status_webhook))
        .route("/twilio/connect-action", post(connect_action_webhook))
        .route("/twilio/dial-action", post(dial_action_webhook))
        .route("/twilio/amd", post(amd_webhook))
        .route("/ws/media/{call_id}", get(media_upgrade))
        .route("/metrics", get(metrics))
        .route("/recordings/{file}", get(recording))
        .with_state(state.clone())
        .merge(crate::health::router(state))
        .fallback_service(crate::ui::service(ui))
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

#[derive(Deserialize)]
struct CallIdQuery {
    call_id: Option<String>,
}

fn forbidden(url: &str, why: &str) -> Response {
    tracing::warn!(url, why, "refused a Twilio request");
    forbidden_response()
}

fn forbidden_response() -> Response {
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

/// The `X-Twilio-Signature` header, if present and text.
fn given_signature(headers: &HeaderMap) -> Option<&str> {
    headers.get(signature::HEADER).and_then(|v| v.to_str().ok())
}

fn check_signature(state: &AppState, given: Option<&str>, url: &str, params: &[(String, String)]) -> bool {
    given.is_some_and(|given| signature::validate(state.twilio_auth_token.expose(), url, params, given))
}

/// The form of a request Twilio signed: extracting it checks
/// `X-Twilio-Signature` over the PUBLIC_URL form of the request URL and the
/// form's parameters (protocols.md §3.1, §3.4); a bad or missing signature is
/// a 403 before the handler runs, so nothing changes. Without the header the
/// body is not read at all; with one, it is read only up to
/// `WEBHOOK_MAX_BODY` (413) and within `HTTP_BODY_TIMEOUT` (408), so an
/// unsigned or forged request cannot make the server hold a large body.
pub struct SignedTwilioForm(pub Vec<(String, String)>);

impl FromRequest<Arc<AppState>> for SignedTwilioForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let url = signed_url(state, req.uri(), false);
        let Some(given) = given_signature(req.headers()).map(str::to_owned) else {
            return Err(forbidden(&url, "missing X-Twilio-Signature"));
        };
        let body = read_webhook_body(req, state.config.limits.webhook_max_body).await?;
        let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        if !check_signature(state, Some(&given), &url, &params) {
            return Err(forbidden(&url, "bad X-Twilio-Signature"));
        }
        Ok(Self(params))
    }
}

/// A webhook's body, at most `limit` bytes.
async fn read_webhook_body(req: Request, limit: usize) -> Result<Bytes, Response> {
    use http_body_util::BodyExt as _;
    let too_large = || (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) if crate::listener::is_body_timeout(&*e) => {
            Err((StatusCode::REQUEST_TIMEOUT, "request body not received in time\n").into_response())
        }
        Err(e) => Err((StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}\n")).into_response()),
    }
}

/// A WebSocket upgrade Twilio signed: the signature covers the ws(s):// form
/// of the URL and no parameters (§3.3); the signature module also tries the
/// trailing-slash variant. A bad or missing one is a 403.
pub struct SignedTwilioUpgrade;

impl FromRequestParts<Arc<AppState>> for SignedTwilioUpgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let url = signed_url(state, &parts.uri, true);
        if !check_signature(state, given_signature(&parts.headers), &url, &[]) {
            return Err(forbidden(
                &url,
                "bad or missing x-twilio-signature on the WebSocket upgrade",
            ));
        }
        Ok(Self)
    }
}

fn twiml_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

fn bad_call_id() -> Response {
    (StatusCode::BAD_REQUEST, "missing or malformed call_id\n").into_response()
}

/// `POST /twilio/twiml?call_id=…`: what Twilio does once the callee answers.
async fn twiml_webhook(
    State(state): State<Arc<AppState>>,
    Query(q): Query<CallIdQuery>,
    SignedTwilioForm(params): SignedTwilioForm,
) -> Response {
    let Some(id) = q.call_id.as_deref().and_then(CallId::parse) else {
        return bad_call_id();
    };
    let record = match state.hub.get(&id).await {
        Ok(r) => r,
        Err(_) => return twiml_response(twiml::hangup()),
    };
    let params: HashMap<_, _> = params.into_iter().collect();
    if params.get("CallSid").is_some_and(|s| record.is_another_calls_sid(s)) {
        tracing::warn!(call_id = %id, "refused a TwiML request: its CallSid does not belong to this call");
        return forbidden_response();
    }
    if record.status.is_terminal() {
        return twiml_response(twiml::hangup());
    }
    // With answering-machine detection the stream starts at once and the
    // agent speaks the greeting itself once a person is known to be there
    // (call::lifecycle::amd): a <Say> here would play to machines too.
    let greeting = (!record.greeting.is_empty() && record.voicemail.mode == VoicemailMode::Off)
        .then_some(record.greeting.as_str());
    twiml_response(stream_twiml(&state, &record, greeting))
}

/// The `<Connect><Stream>` of a call (its secret as a parameter), after
/// `greeting` if any.
fn stream_twiml(state: &AppState, record: &crate::call::CallRecord, greeting: Option<&str>) -> String {
    let id = &record.call_id;
    let base = signed_url(state, &Uri::from_static("/"), true);
    let stream_url = format!("{}ws/media/{}", base, id);
    let params = [("call_id", id.as_str()), ("secret", record.stream_secret.as_str())];
    // With replicas, a stream that closes may have lost its bridge with a
    // killed replica: Twilio then asks the action URL, through the load
    // balancer, and a survivor decides. One process alone has nobody else
    // to ask (and during its own shutdown the request could not land), so
    // there the call hangs up as the stream closes, as before.
    if state.hub.store().shared() {
        let action = format!(
            "{}twilio/connect-action?call_id={}",
            signed_url(state, &Uri::from_static("/"), false),
            id
        );
        twiml::connect_stream_with_action(greeting, &stream_url, &params, &action)
    } else {
        twiml::connect_stream(greeting, &stream_url, &params)
    }
}

/// `POST /twilio/connect-action?call_id=…`: the call's media stream closed
/// and the call goes on; Twilio asks what next (`<Connect action>`,
/// protocols.md §4). Any replica answers: [`lifecycle::on_stream_ended`]
/// decides from the stored call. A live call that nothing ended resumes: a
/// new `<Connect><Stream>` with a fresh secret, whose commit frees the old
/// stream's media claim at once (its replica died, or Twilio closed its
/// socket), so the new stream is claimed on whichever replica it reaches.
async fn connect_action_webhook(
    State(state): State<Arc<AppState>>,
    Query(q): Query<CallIdQuery>,
    SignedTwilioForm(params): SignedTwilioForm,
) -> Response {
    let Some(id) = q.call_id.as_deref().and_then(CallId::parse) else {
        return bad_call_id();
    };
    let sid = params.into_iter().find(|(k, _)| k == "CallSid").map(|(_, v)| v);
    let secret = crate::grpc::random_secret();
    let after = Arc::new(std::sync::Mutex::new(lifecycle::AfterStream::HangUp));
    let decided = after.clone();
    let result = state
        .hub
        .update_record(&id, move |rec| {
            if sid.as_deref().is_some_and(|s| rec.is_another_calls_sid(s)) {
                tracing::warn!(call_id = %rec.call_id, "connect action for another CallSid ignored");
                return vec![];
            }
            let (next, events) = lifecycle::on_stream_ended(rec);
            if next == lifecycle::AfterStream::Resume {
                lifecycle::resume_stream(rec, secret, chrono::Utc::now());
            }
            *decided.lock().unwrap_or_else(|p| p.into_inner()) = next;
            events
        })
        .await;
    let next = std::mem::replace(
        &mut *after.lock().unwrap_or_else(|p| p.into_inner()),
        lifecycle::AfterStream::HangUp,
    );
    match (result, next) {
        (Ok((rec, _)), lifecycle::AfterStream::Resume) => {
            tracing::info!(call_id = %id, from = %rec.resuming.as_ref().map(|r| r.from.as_str()).unwrap_or_default(), generation = rec.stream_generation, "the call's media stream closed with the call live; resuming it on a new stream");
            twiml_response(stream_twiml(&state, &rec, None))
        }
        (Err(HubError::NotFound), _) => (StatusCode::NOT_FOUND, "unknown call\n").into_response(),
        // A transfer under way was recorded before its redirect: the
        // `<Dial>` goes on whatever this request could store.
        (result, lifecycle::AfterStream::Transfer(target)) => {
            if let Err(e) = result {
                tracing::error!(call_id = %id, error = %e, "the closed stream of a call being transferred was not recorded");
            }
            twiml_response(dial_twiml(&state, &id, &target))
        }
        (Ok(_), _) => twiml_response(twiml::hangup()),
        // Hanging up is right whatever the store says: nothing serves the
        // call's media now, and nothing was stored to serve it.
        (Err(e), _) => {
            tracing::error!(call_id = %id, error = %e, "what follows the closed stream of a call was not stored; hanging up");
            twiml_response(twiml::hangup())
        }
    }
}

/// The `<Dial>` that hands call `id` to `target` (the transfer's redirect).
pub(crate) fn dial_twiml(state: &AppState, id: &CallId, target: &str) -> String {
    let req = transfer_request(state, id, target);
    twiml::dial(&req.to, &req.caller_id, req.ring_timeout_secs, &req.action_url)
}

/// What the provider is asked to do to hand call `id` to `target`.
pub(crate) fn transfer_request(state: &AppState, id: &CallId, target: &str) -> crate::telephony::TransferRequest {
    crate::telephony::TransferRequest::for_call(state.public_url.as_str(), &state.from_number, id, target)
}

/// `POST /twilio/dial-action?call_id=…`: a transfer's `<Dial>` is over;
/// `DialCallStatus` says how it went (protocols.md §4.3). Any replica
/// answers: [`lifecycle::transfer::on_dial_result`] records the outcome and
/// the end reason, and says what the callee hears next.
async fn dial_action_webhook(
    State(state): State<Arc<AppState>>,
    Query(q): Query<CallIdQuery>,
    SignedTwilioForm(params): SignedTwilioForm,
) -> Response {
    let Some(id) = q.call_id.as_deref().and_then(CallId::parse) else {
        return bad_call_id();
    };
    let mut params: HashMap<String, String> = params.into_iter().collect();
    let sid = params.remove("CallSid");
    let dial_status = params.remove("DialCallStatus").unwrap_or_default();
    let after = Arc::new(std::sync::Mutex::new(lifecycle::transfer::AfterDial::HangUp));
    let decided = after.clone();
    let result = state
        .hub
        .update(&id, move |rec| {
            if sid.as_deref().is_some_and(|s| rec.is_another_calls_sid(s)) {
                tracing::warn!(call_id = %rec.call_id, "dial action for another CallSid ignored");
                return vec![];
            }
            let (next, events) = lifecycle::transfer::on_dial_result(rec, &dial_status);
            *decided.lock().unwrap_or_else(|p| p.into_inner()) = next;
            events
        })
        .await;
    match result {
        Ok(_) => {}
        Err(HubError::NotFound) => return (StatusCode::NOT_FOUND, "unknown call\n").into_response(),
        // The callee is still told something: the apology is right when in doubt.
        Err(e) => {
            tracing::error!(call_id = %id, error = %e, "a transfer's outcome was not stored");
            *after.lock().unwrap_or_else(|p| p.into_inner()) = lifecycle::transfer::AfterDial::Apologise;
        }
    }
    let next = *after.lock().unwrap_or_else(|p| p.into_inner());
    match next {
        lifecycle::transfer::AfterDial::HangUp => twiml_response(twiml::hangup()),
        lifecycle::transfer::AfterDial::Apologise => {
            twiml_response(twiml::say_and_hang_up(lifecycle::transfer::APOLOGY))
        }
    }
}

/// Twilio's status callback parameters (§2.1) as the domain takes them;
/// `None` when `CallStatus` is missing or unknown.
pub(crate) fn provider_status(params: Vec<(String, String)>) -> Option<ProviderStatus> {
    let mut params: HashMap<String, String> = params.into_iter().collect();
    let status = params.get("CallStatus").and_then(|s| CallStatus::from_twilio(s))?;
    Some(ProviderStatus {
        call_sid: params.remove("CallSid").filter(|s| !s.is_empty()),
        status,
        sequence: params.get("SequenceNumber").and_then(|s| s.parse().ok()),
        duration_secs: params.get("CallDuration").and_then(|s| s.parse().ok()),
        answered_by: params.remove("AnsweredBy"),
        error_code: params.remove("ErrorCode").filter(|c| !c.is_empty()),
        sip_response_code: params.remove("SipResponseCode"),
    })
}

/// `POST /twilio/status?call_id=…`: Twilio's call-progress callbacks (§2.1),
/// handed to [`lifecycle::on_provider_status`].
async fn status_webhook(
    State(state): State<Arc<AppState>>,
    Query(q): Query<CallIdQuery>,
    SignedTwilioForm(params): SignedTwilioForm,
) -> Response {
    let Some(id) = q.call_id.as_deref().and_then(CallId::parse) else {
        return bad_call_id();
    };
    let Some(report) = provider_status(params) else {
        return (StatusCode::BAD_REQUEST, "missing or unknown CallStatus\n").into_response();
    };
    let result = state
        .hub
        .update(&id, move |rec| match lifecycle::on_provider_status(rec, &report) {
            Reported::Ignored(Ignored::ForeignCallSid) => {
                tracing::warn!(call_id = %rec.call_id, "status callback for another CallSid ignored");
                vec![]
            }
            reported => reported.into_events(),
        })
        .await;
    match result {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(HubError::NotFound) => (StatusCode::NOT_FOUND, "unknown call\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "status callback not stored");
            // 5xx makes Twilio retry later, which is what we want.
            (StatusCode::SERVICE_UNAVAILABLE, "not stored\n").into_response()
        }
    }
}

/// `POST /twilio/amd?call_id=…`: the asynchronous answering-machine
/// detection result (protocols.md §2.3), signed like every Twilio webhook,
/// handed to [`amd::on_result`]. The media bridge learns of it from the
/// call's events (on whichever replica runs it).
async fn amd_webhook(
    State(state): State<Arc<AppState>>,
    Query(q): Query<CallIdQuery>,
    SignedTwilioForm(params): SignedTwilioForm,
) -> Response {
    let Some(id) = q.call_id.as_deref().and_then(CallId::parse) else {
        return bad_call_id();
    };
    let mut params: HashMap<String, String> = params.into_iter().collect();
    let Some(answered_by) = params
        .remove("AnsweredBy")
        .filter(|a| amd::ANSWERED_BY.contains(&a.as_str()))
    else {
        return (StatusCode::BAD_REQUEST, "missing or unknown AnsweredBy\n").into_response();
    };
    let report = AmdReport {
        call_sid: params.remove("CallSid"),
        answered_by,
        detection_ms: params.get("MachineDetectionDuration").and_then(|d| d.parse().ok()),
    };
    let result = state
        .hub
        .update(&id, move |rec| match amd::on_result(rec, &report) {
            Ok(events) => events,
            Err(AmdIgnored::ForeignCallSid) => {
                tracing::warn!(call_id = %rec.call_id, "detection result for another CallSid ignored");
                vec![]
            }
            Err(AmdIgnored::NotWanted) => {
                tracing::info!(call_id = %rec.call_id, answered_by = %report.answered_by, "detection result not wanted (late, repeated or not asked for)");
                vec![]
            }
        })
        .await;
    match result {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(HubError::NotFound) => (StatusCode::NOT_FOUND, "unknown call\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "detection result not stored");
            (StatusCode::SERVICE_UNAVAILABLE, "not stored\n").into_response()
        }
    }
}

/// `GET /metrics`: the media path's latency histograms and frame counters
/// (Prometheus text format). Behind `API_TOKEN` like the gRPC API, since
/// call volume is nobody else's business.
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(refused) = api_token_refusal(&state, &headers) {
        return refused;
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// The gRPC API's token rule for an HTTP route: with `API_TOKEN` set, the
/// request must carry `authorization: Bearer <API_TOKEN>` (else 401).
/// Without one the route is open like the API, behind the same Host/Origin
/// guard ([`crate::browser::guard`], applied to every route).
fn api_token_refusal(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    if let Some(token) = &state.config.api_token {
        let given = crate::grpc::bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
        if !crate::grpc::token_matches(given, token.expose()) {
            return Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "missing or invalid 'authorization: Bearer <API_TOKEN>'\n",
                )
                    .into_response(),
            );
        }
    }
    None
}

/// Bytes read from a recording per chunk of the response.
const RECORDING_CHUNK: usize = 64 * 1024;

/// `GET /recordings/{call_id}.wav`: a call's recording (crate::recording),
/// behind the API token. The name must be a call id and `.wav`: the file's
/// path is built from the parsed id only, so nothing else can be named.
/// Streamed in chunks (a long call's file is hundreds of MB); a recording
/// still being written is served as far as it goes.
async fn recording(State(state): State<Arc<AppState>>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = api_token_refusal(&state, &headers) {
        return refused;
    }
    let Some(id) = file.strip_suffix(".wav").and_then(CallId::parse) else {
        return not_found().await;
    };
    let path = state.recordings.path(&id);
    let (file, len) = match tokio::fs::File::open(&path).await {
        Ok(f) => match f.metadata().await {
            Ok(m) if m.is_file() => (f, m.len()),
            _ => return not_found().await,
        },
        // No file, or no directory (RECORDINGS_DIR unusable: the recording failed and says so).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return not_found().await;
        }
        Err(e) => {
            tracing::warn!(call_id = %id, error = %e, "cannot read a recording");
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the recording\n").into_response();
        }
    };
    // Exactly `len` bytes (the file may grow while it is sent).
    let chunks = futures_util::stream::unfold((file, len), |(mut file, left)| async move {
        use tokio::io::AsyncReadExt as _;
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; RECORDING_CHUNK.min(left as usize)];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "audio/wav".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CONTENT_DISPOSITION, format!("inline; filename=\"{id}.wav\"")),
            // Call audio is personal data: no cache keeps a copy.
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

/// `GET /ws/media/{call_id}`: Twilio opens the Media Streams WebSocket.
async fn media_upgrade(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    ws: WebSocketUpgrade,
    _signed: SignedTwilioUpgrade,
) -> Response {
    let Some(id) = CallId::parse(&call_id) else {
        return not_found().await;
    };
    let record = match state.hub.get(&id).await {
        Ok(r) if !r.status.is_terminal() => r,
        Ok(_) => return (StatusCode::GONE, "the call has ended\n").into_response(),
        Err(_) => return not_found().await,
    };
    // A replica handing its calls over takes no new stream: refused, the
    // provider asks the `<Connect action>` URL again and a survivor answers.
    if state.handover.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "this replica is draining\n").into_response();
    }
    // One media stream per call (on any replica); a second connection is
    // refused before the upgrade and leaves the call as it is.
    match state.hub.claim_media(&id).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(call_id = %id, "refused a second media stream for the call");
            return (StatusCode::CONFLICT, "the call has a media stream already\n").into_response();
        }
        Err(e) => {
            tracing::error!(call_id = %id, error = %e, "the media stream could not be claimed");
            return (StatusCode::SERVICE_UNAVAILABLE, "the call store is unavailable\n").into_response();
        }
    }
    // Read again once claimed: a resumed stream's claim is freed by the
    // commit that gave the call its new secret and generation, which the
    // record read before may predate.
    let record = match state.hub.get(&id).await {
        Ok(r) => r,
        Err(_) => record,
    };
    // Tracked, so that a shutdown waits for the bridge to record how the call ended.
    let bridges = state.bridges.clone();
    ws.max_message_size(MAX_MEDIA_MESSAGE)
        .max_frame_size(MAX_MEDIA_MESSAGE)
        .read_buffer_size(crate::realtime::WS_READ_BUFFER)
        .on_upgrade(move |socket| bridges.track_future(crate::bridge::serve_media(state, record, socket)))
}
