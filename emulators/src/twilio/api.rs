//! The emulated REST Calls API (protocols.md §1).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot, watch};

use super::call::{AmdRequest, CallActor, CreateParams};
use super::report::EmulatedCallReport;
use super::{CallSlot, CallState, Command, Scenario, Shared, TwimlSource, new_sid, rfc2822_now};
use voice_agent_wire::twilio::rest::CallResource;

/// §1.2: inline TwiML is limited to 4000 characters (error 32018).
const MAX_TWIML_CHARS: usize = 4000;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/2010-04-01/Accounts/{account}/Calls.json", post(create))
        .route("/2010-04-01/Accounts/{account}/Calls/{file}", post(update).get(fetch))
        .fallback(unknown_resource)
        .with_state(shared)
}

/// A Twilio error in the 2010 API's shape (§1.5).
struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            20404,
            format!("The requested resource {path} was not found"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Exactly the four documented keys: code, message, more_info, status.
        let body = serde_json::json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status.as_u16(),
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"Twilio API\""),
            );
        }
        r
    }
}

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

fn not_found(path: &str) -> Response {
    ApiError::not_found(path).into_response()
}

async fn unknown_resource(uri: axum::http::Uri) -> Response {
    not_found(uri.path())
}

/// Basic auth with the account SID and auth token (§1.1), and the path's
/// account must be the authenticated one.
fn authorize(shared: &Shared, headers: &HeaderMap, account: &str, path: &str) -> Result<(), ApiError> {
    let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    let Some(credentials) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| B64.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return Err(unauthorized());
    };
    let Some((user, password)) = credentials.split_once(':') else {
        return Err(unauthorized());
    };
    let config = &shared.config;
    let user_ok = user.as_bytes().ct_eq(config.account_sid.as_bytes());
    let password_ok = password.as_bytes().ct_eq(config.auth_token.as_bytes());
    if !bool::from(user_ok & password_ok) {
        return Err(unauthorized());
    }
    if account != config.account_sid {
        return Err(ApiError::not_found(path));
    }
    Ok(())
}

fn form(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn first<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// E.164-ish: `+` then 7–15 digits, the first not 0 (§1.2 `To`), or a
/// client/SIP address.
fn valid_to(to: &str) -> bool {
    if to.starts_with("client:") || to.starts_with("sip:") {
        return to.len() > 4;
    }
    let Some(digits) = to.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

fn valid_url(u: &str) -> bool {
    url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// "(415) 555-1212" for NANP numbers, as Twilio formats `to_formatted`.
fn formatted(number: &str) -> String {
    match number.strip_prefix("+1") {
        Some(d) if d.len() == 10 && d.bytes().all(|b| b.is_ascii_digit()) => {
            format!("({}) {}-{}", &d[..3], &d[3..6], &d[6..])
        }
        _ => number.to_string(),
    }
}

fn integer(form: &[(String, String)], name: &str) -> Result<Option<u64>, ApiError> {
    match first(form, name) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            ApiError::bad_request(
                21218,
                format!("Invalid value '{v}' for parameter {name}: must be an integer"),
            )
        }),
    }
}

fn method_of(form: &[(String, String)], name: &str) -> Result<String, ApiError> {
    match first(form, name).map(str::to_ascii_uppercase) {
        None => Ok("POST".into()),
        Some(m) if m == "GET" || m == "POST" => Ok(m),
        Some(m) => Err(ApiError::bad_request(
            21218,
            format!("Invalid value '{m}' for parameter {name}: must be GET or POST"),
        )),
    }
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Path(account): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = authorize(&shared, &headers, &account, uri.path()) {
        return e.into_response();
    }
    let form = form(&body);
    match validate_create(&shared, &form) {
        Ok(params) if params.scenario == Scenario::NoResponse => {
            // The request hangs: only the client giving up (which drops this
            // future) or shutdown ends it.
            shared.cancel.cancelled().await;
            error(StatusCode::SERVICE_UNAVAILABLE, 20503, "Service unavailable")
        }
        Ok(params) => {
            // Recorded for tests of trace propagation (the real API ignores it).
            let traceparent = headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            start_call(&shared, params, traceparent)
        }
        Err(e) => e.into_response(),
    }
}

fn validate_create(shared: &Arc<Shared>, form: &[(String, String)]) -> Result<CreateParams, ApiError> {
    let bad = ApiError::bad_request;
    let to = first(form, "To").map(str::trim).unwrap_or_default().to_string();
    if to.is_empty() {
        return Err(bad(21201, "No 'To' number is specified".into()));
    }
    let from = first(form, "From").map(str::trim).unwrap_or_default().to_string();
    if from.is_empty() {
        return Err(bad(21213, "No 'From' number is specified".into()));
    }
    let url = first(form, "Url").filter(|u| !u.is_empty()).map(str::to_string);
    let twiml = first(form, "Twiml").filter(|t| !t.is_empty()).map(str::to_string);
    // §1.2: "If both twiml and url are provided then twiml … will be ignored."
    let source = match (url, twiml) {
        (Some(u), _) if !valid_url(&u) => return Err(bad(21205, format!("Url is not a valid URL: {u}"))),
        (Some(u), _) => TwimlSource::Fetch {
            url: u,
            method: method_of(form, "Method")?,
        },
        (None, Some(t)) if t.chars().count() > MAX_TWIML_CHARS => {
            return Err(bad(
                32018,
                "Twiml size exceeded maximum allowed value of 4000 characters".into(),
            ));
        }
        (None, Some(t)) => TwimlSource::Inline(t),
        (None, None) => return Err(bad(21205, "A 'Url' or 'Twiml' parameter is required".into())),
    };
    let status_callback = first(form, "StatusCallback")
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    if let Some(u) = &status_callback
        && !valid_url(u)
    {
        return Err(bad(21609, format!("StatusCallback is not a valid URL: {u}")));
    }
    let status_callback_method = method_of(form, "StatusCallbackMethod")?;
    // Validated even when `Twiml` makes it unused, as the API does.
    method_of(form, "Method")?;
    let events: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "StatusCallbackEvent")
        .flat_map(|(_, v)| v.split([' ', ',']).map(str::to_string).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
        .collect();
    if let Some(e) = events
        .iter()
        .find(|e| !voice_agent_wire::twilio::rest::STATUS_CALLBACK_EVENTS.contains(&e.as_str()))
    {
        return Err(bad(21626, format!("Invalid StatusCallbackEvent value: {e}")));
    }
    // §1.2: Timeout default 60, max 600; TimeLimit default (and max) 4 hours.
    let timeout = integer(form, "Timeout")?.unwrap_or(60).clamp(1, 600);
    let time_limit = integer(form, "TimeLimit")?.unwrap_or(14_400).clamp(1, 14_400);

    let amd = match first(form, "MachineDetection").filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => {
            // UNVERIFIED: the error code Twilio gives a bad MachineDetection
            // value; the emulator refuses it (the strict choice) with 20001
            // ("Invalid parameter").
            let detect_message_end = match m {
                "Enable" => false,
                "DetectMessageEnd" => true,
                other => return Err(bad(20001, format!("Invalid MachineDetection value: {other}"))),
            };
            integer(form, "MachineDetectionTimeout")?;
            let asynchronous = match first(form, "AsyncAmd").unwrap_or("false") {
                "true" => true,
                "false" => false,
                other => return Err(bad(20001, format!("Invalid AsyncAmd value: {other}"))),
            };
            let callback = first(form, "AsyncAmdStatusCallback")
                .filter(|u| !u.is_empty())
                .map(str::to_string);
            if let Some(u) = &callback
                && !valid_url(u)
            {
                return Err(bad(21609, format!("AsyncAmdStatusCallback is not a valid URL: {u}")));
            }
            if !asynchronous {
                // Synchronous AMD delays the TwiML request until detection
                // ends and adds AnsweredBy to it; the product never asks for it.
                return Err(bad(
                    20001,
                    "the emulator runs answering-machine detection only with AsyncAmd=true".into(),
                ));
            }
            Some(AmdRequest {
                detect_message_end,
                callback,
                callback_method: method_of(form, "AsyncAmdStatusCallbackMethod")?,
            })
        }
    };

    let scenario = shared.config.scenario_for(&to);
    if scenario == Scenario::InvalidNumber || !valid_to(&to) {
        return Err(bad(21211, format!("Invalid 'To' Phone Number: {to}")));
    }
    Ok(CreateParams {
        to,
        from,
        source,
        status_callback,
        status_callback_method,
        events,
        timeout,
        time_limit,
        scenario,
        amd,
    })
}

fn call_resource(account: &str, sid: &str, to: &str, from: &str) -> CallResource {
    let now = rfc2822_now();
    let base = format!("/2010-04-01/Accounts/{account}/Calls/{sid}");
    let subresources: BTreeMap<String, String> = [
        ("notifications", "Notifications"),
        ("recordings", "Recordings"),
        ("streams", "Streams"),
        ("events", "Events"),
    ]
    .iter()
    .map(|(key, name)| (key.to_string(), format!("{base}/{name}.json")))
    .collect();
    CallResource {
        sid: sid.to_string(),
        status: "queued".into(),
        account_sid: Some(account.to_string()),
        to: Some(to.to_string()),
        to_formatted: Some(formatted(to)),
        from: Some(from.to_string()),
        from_formatted: Some(formatted(from)),
        direction: Some("outbound-api".into()),
        api_version: Some("2010-04-01".into()),
        date_created: Some(now.clone()),
        date_updated: Some(now),
        price_unit: Some("USD".into()),
        phone_number_sid: Some(super::new_sid("PN")),
        queue_time: Some("0".into()),
        uri: Some(format!("{base}.json")),
        subresource_uris: Some(subresources),
        ..CallResource::default()
    }
}

fn start_call(shared: &Arc<Shared>, params: CreateParams, traceparent: Option<String>) -> Response {
    if params.scenario == Scenario::ServerError {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            20500,
            "An internal server error has occurred",
        );
    }
    let sid = new_sid("CA");
    let resource = call_resource(&shared.config.account_sid, &sid, &params.to, &params.from);
    let report = EmulatedCallReport {
        sid: sid.clone(),
        to: params.to.clone(),
        from: params.from.clone(),
        scenario: params.scenario.clone(),
        status: "queued".into(),
        create_traceparent: traceparent,
        ..EmulatedCallReport::default()
    };
    let (commands_tx, commands_rx) = mpsc::channel(8);
    let (finished_tx, finished_rx) = watch::channel(false);
    let slot = Arc::new(CallSlot {
        state: Mutex::new(CallState {
            resource: resource.clone(),
            report,
        }),
        commands: commands_tx,
        finished: finished_rx,
    });
    shared
        .calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(sid.clone(), slot.clone());
    let actor = CallActor::new(shared.clone(), slot, sid, params, commands_rx, finished_tx);
    shared.spawn(actor.run());
    (StatusCode::CREATED, axum::Json(resource)).into_response()
}

/// `Calls/{Sid}.json` → the sid (the emulator only speaks JSON).
fn sid_of(file: &str) -> Option<&str> {
    file.strip_suffix(".json")
}

async fn fetch(
    State(shared): State<Arc<Shared>>,
    Path((account, file)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&shared, &headers, &account, uri.path()) {
        return e.into_response();
    }
    let Some(slot) = sid_of(&file).and_then(|sid| shared.call(sid)) else {
        return not_found(uri.path());
    };
    let resource = slot.lock().resource.clone();
    axum::Json(resource).into_response()
}

async fn update(
    State(shared): State<Arc<Shared>>,
    Path((account, file)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = authorize(&shared, &headers, &account, uri.path()) {
        return e.into_response();
    }
    let Some(slot) = sid_of(&file).and_then(|sid| shared.call(sid)) else {
        return not_found(uri.path());
    };
    let form = form(&body);
    slot.report(|r| r.updates.push(form.clone()));
    let status = first(&form, "Status");
    let url = first(&form, "Url").filter(|u| !u.is_empty());
    let twiml = first(&form, "Twiml").filter(|t| !t.is_empty());
    let (reply_tx, reply_rx) = oneshot::channel();
    let command = match (status, url, twiml) {
        (Some(s), _, _) if s == "completed" || s == "canceled" => Command::Hangup {
            complete: s == "completed",
            reply: reply_tx,
        },
        (Some(s), _, _) => {
            return error(
                StatusCode::BAD_REQUEST,
                21218,
                format!("Invalid value '{s}' for parameter Status: must be canceled or completed"),
            );
        }
        (None, Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                21218,
                "Twiml and Url parameters are mutually exclusive",
            );
        }
        (None, Some(u), None) => {
            if !valid_url(u) {
                return error(StatusCode::BAD_REQUEST, 21205, format!("Url is not a valid URL: {u}"));
            }
            let method = match method_of(&form, "Method") {
                Ok(m) => m,
                Err(e) => return e.into_response(),
            };
            Command::Redirect {
                source: TwimlSource::Fetch {
                    url: u.to_string(),
                    method,
                },
                reply: reply_tx,
            }
        }
        (None, None, Some(t)) => {
            if t.chars().count() > MAX_TWIML_CHARS {
                return error(
                    StatusCode::BAD_REQUEST,
                    32018,
                    "Twiml size exceeded maximum allowed value of 4000 characters",
                );
            }
            Command::Redirect {
                source: TwimlSource::Inline(t.to_string()),
                reply: reply_tx,
            }
        }
        (None, None, None) => {
            // Nothing to change (e.g. only StatusCallback): the call as it is.
            let resource = slot.lock().resource.clone();
            return axum::Json(resource).into_response();
        }
    };
    let terminal = is_terminal(&slot.lock().resource.status);
    if terminal {
        return match command {
            // Hanging up an ended call changes nothing.
            Command::Hangup { .. } => axum::Json(slot.lock().resource.clone()).into_response(),
            Command::Redirect { .. } => error(
                StatusCode::BAD_REQUEST,
                21220,
                "Call is not in-progress. Cannot redirect.",
            ),
        };
    }
    // The call's task applies the change and answers; if it ended meanwhile,
    // the reply is dropped and the call is returned as it is.
    if slot.commands.send(command).await.is_ok() {
        let _ = reply_rx.await;
    }
    let resource = slot.lock().resource.clone();
    axum::Json(resource).into_response()
}

pub(super) fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "busy" | "failed" | "no-answer" | "canceled")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_urls() {
        assert!(valid_to("+14155551212"));
        assert!(valid_to("+15550102"));
        assert!(valid_to("client:alice"));
        assert!(!valid_to("14155551212"));
        assert!(!valid_to("+1555"));
        assert!(!valid_to("+0123456789"));
        assert!(!valid_to("+1415555121a"));
        assert!(valid_url("http://127.0.0.1:8000/twilio/twiml?call_id=x"));
        assert!(!valid_url("/relative"));
        assert!(!valid_url("ftp://x/y"));
        assert_eq!(formatted("+14155551212"), "(415) 555-1212");
        assert_eq!(formatted("+15550102"), "+15550102");
    }
}
