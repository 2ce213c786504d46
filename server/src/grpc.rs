//! The `VoiceAgentService` implementation: validates requests, delegates to
//! the [`crate::call`] hub and the telephony provider, and converts between the
//! domain and the protobuf types. Errors become `Status` only here.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use voice_agent_proto::v1 as pb;

use crate::AppState;
use crate::call::{
    Backend, CallEvent, CallId, CallRecord, CallStatus, ErrorCode, ErrorReason, EventKind, RecordingInfo,
    RecordingState, Speaker, Voicemail, VoicemailMode, lifecycle, template, tools,
};
use crate::config::{AudioMode, Config, DEFAULT_GREETING, is_e164};
use crate::store::{Inserted, RequestKey};
use crate::telephony::{DialRequest, MachineDetection};

pub mod errors;
mod list;

use errors::{hub_status, invalid, telephony_status};

/// Longest `instructions`, bytes.
pub const MAX_INSTRUCTIONS: usize = 16 * 1024;
/// Longest `voice`, bytes.
pub const MAX_VOICE: usize = 128;
/// Longest `greeting`, bytes.
pub const MAX_GREETING: usize = 1000;
/// Most `metadata` entries.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// Longest metadata key, bytes.
pub const MAX_METADATA_KEY: usize = 64;
/// Longest metadata value, bytes.
pub const MAX_METADATA_VALUE: usize = 512;
/// Bounds of `max_duration`.
pub const MAX_DURATION_RANGE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(4 * 3600));
/// Fewest and most digits after the `+` of `to` (published in GetServerInfo).
pub use crate::config::E164_DIGITS;

/// Longest `request_id`, bytes.
pub const MAX_REQUEST_ID: usize = 128;

/// How much longer than `max_duration` the provider's own limit is.
pub const TIME_LIMIT_MARGIN: Duration = Duration::from_secs(15);

/// The gRPC service.
#[derive(Clone)]
pub struct VoiceAgent {
    state: Arc<AppState>,
}

impl VoiceAgent {
    /// A service over the shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// Most characters of client input an error message quotes: the message
/// goes back in `grpc-message`, a response header, so a 1 MiB argument must
/// not come back whole.
pub const MAX_QUOTED: usize = 64;

/// Client input as an error message quotes it: Debug-escaped, at most
/// [`MAX_QUOTED`] characters, and the length when it was cut.
fn quoted(s: &str) -> String {
    let prefix = truncate(s, MAX_QUOTED);
    if prefix.len() == s.len() {
        format!("{s:?}")
    } else {
        format!("{prefix:?}… ({} bytes)", s.len())
    }
}

/// Whether a character can be carried by XML 1.0 (§2.2 `Char`): the text
/// fields reach TwiML (greeting) or the AI's JSON session, and a C0 control
/// breaks the former at answer time, long after PlaceCall said yes.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Refuses text XML 1.0 cannot carry, naming the field and where.
fn check_text(field: &str, text: &str) -> Result<(), Status> {
    match text.char_indices().find(|(_, c)| !xml_char(*c)) {
        None => Ok(()),
        Some((at, c)) => Err(invalid(
            field,
            format!(
                "must not contain control characters other than tab, CR and LF (U+{:04X} at byte {at})",
                u32::from(c)
            ),
        )),
    }
}

fn parse_call_id(raw: &str) -> Result<CallId, Status> {
    if raw.is_empty() {
        return Err(invalid("call_id", "required"));
    }
    CallId::parse(raw).ok_or_else(|| {
        invalid(
            "call_id",
            format!(
                "not a call id: {} (expected call_ followed by 32 hex digits)",
                quoted(raw)
            ),
        )
    })
}

/// A PlaceCall request after validation.
struct ValidCall {
    to: String,
    backend: Backend,
    instructions: String,
    voice: String,
    greeting: String,
    metadata: BTreeMap<String, String>,
    max_duration: Duration,
    request_id: String,
    record: bool,
    tools: Vec<tools::Tool>,
    tool_timeout: Duration,
    voicemail: Voicemail,
    /// The call's own outcome webhook receiver.
    webhook_url: Option<String>,
    transfer_targets: Vec<crate::call::TransferTarget>,
    /// Kept only for the idempotency fingerprint: the texts above are filled in already.
    variables: BTreeMap<String, String>,
}

impl ValidCall {
    /// The idempotency key of the call, if the client gave one: its id, and
    /// a digest of what is asked (after defaults), which tells a retry from a
    /// different request under a reused id. (SHA-1 only tells requests apart
    /// here; a client gains nothing by colliding with its own key.)
    fn request_key(&self) -> Option<RequestKey> {
        use sha1::Digest as _;
        if self.request_id.is_empty() {
            return None;
        }
        let mut canonical = serde_json::json!([
            self.to,
            self.backend.as_str(),
            self.instructions,
            self.voice,
            self.greeting,
            self.metadata,
            self.max_duration.as_secs(),
            self.tools,
            self.tool_timeout.as_millis() as u64,
        ]);
        // Only when set, so the keys of calls stored before `record` existed
        // keep their digest.
        if self.record
            && let Some(fields) = canonical.as_array_mut()
        {
            fields.push(serde_json::json!({ "record": true }));
        }
        // Appended only when used, so the keys of requests without them keep
        // the fingerprint they had before these fields existed.
        if (self.voicemail != Voicemail::default() || !self.variables.is_empty())
            && let Some(list) = canonical.as_array_mut()
        {
            list.push(serde_json::json!(self.voicemail));
            list.push(serde_json::json!(self.variables));
        }
        // Appended only when set, as above.
        if let Some(url) = &self.webhook_url
            && let Some(list) = canonical.as_array_mut()
        {
            list.push(serde_json::json!({ "webhook_url": url }));
        }
        if !self.transfer_targets.is_empty()
            && let Some(list) = canonical.as_array_mut()
        {
            list.push(serde_json::json!({ "transfer_targets": self.transfer_targets }));
        }
        let digest = sha1::Sha1::digest(canonical.to_string().as_bytes());
        Some(RequestKey {
            id: self.request_id.clone(),
            fingerprint: digest.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

fn validate(state: &AppState, req: pb::PlaceCallRequest) -> Result<ValidCall, Status> {
    let config = &state.config;
    if req.to.is_empty() {
        return Err(invalid(
            "to",
            "required: the number to call, E.164 ('+' then 8 to 15 digits, e.g. +14155551212)",
        ));
    }
    if !is_e164(&req.to) {
        return Err(invalid(
            "to",
            format!(
                "must be E.164: '+' then 8 to 15 digits, e.g. +14155551212 (got {})",
                quoted(&req.to)
            ),
        ));
    }
    let backend = match pb::Backend::try_from(req.backend) {
        Ok(pb::Backend::Unspecified) => config.effective_default_backend(),
        Ok(pb::Backend::VoiceLive) => Backend::VoiceLive,
        Ok(pb::Backend::GptRealtime) => Backend::GptRealtime,
        Err(_) => return Err(invalid("backend", format!("unknown value {}", req.backend))),
    };
    if let Some(why) = config.backend_unavailable(backend) {
        return Err(errors::api_status(
            tonic::Code::FailedPrecondition,
            &ErrorReason::BackendNotAvailable,
            format!("backend: {why}"),
            &[("backend", backend.as_str())],
            &[],
        ));
    }
    if req.instructions.len() > MAX_INSTRUCTIONS {
        return Err(invalid(
            "instructions",
            format!("at most {MAX_INSTRUCTIONS} bytes, got {}", req.instructions.len()),
        ));
    }
    if req.voice.len() > MAX_VOICE {
        return Err(invalid(
            "voice",
            format!("at most {MAX_VOICE} bytes, got {}", req.voice.len()),
        ));
    }
    if req.voice.chars().any(|c| c.is_control()) {
        return Err(invalid("voice", "must not contain control characters"));
    }
    check_text("instructions", &req.instructions)?;
    if req.request_id.len() > MAX_REQUEST_ID
        || !req
            .request_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(invalid(
            "request_id",
            format!(
                "at most {MAX_REQUEST_ID} of A-Z a-z 0-9 . _ : - (got {})",
                quoted(&req.request_id)
            ),
        ));
    }
    let greeting = req.greeting.unwrap_or_else(|| DEFAULT_GREETING.to_string());
    if greeting.len() > MAX_GREETING {
        return Err(invalid(
            "greeting",
            format!("at most {MAX_GREETING} bytes, got {}", greeting.len()),
        ));
    }
    check_text("greeting", &greeting)?;
    if req.metadata.len() > MAX_METADATA_ENTRIES {
        return Err(invalid(
            "metadata",
            format!("at most {MAX_METADATA_ENTRIES} entries, got {}", req.metadata.len()),
        ));
    }
    for (k, v) in &req.metadata {
        if k.is_empty() || k.len() > MAX_METADATA_KEY {
            return Err(invalid(
                "metadata",
                format!("keys must be 1 to {MAX_METADATA_KEY} bytes, got {}", quoted(k)),
            ));
        }
        if k.chars().any(|c| c.is_control()) {
            return Err(invalid(
                "metadata",
                format!("key {} must not contain control characters", quoted(k)),
            ));
        }
        if v.len() > MAX_METADATA_VALUE {
            return Err(invalid(
                "metadata",
                format!("value of {} is over {MAX_METADATA_VALUE} bytes", quoted(k)),
            ));
        }
        check_text(&format!("metadata[{}]", quoted(k)), v)?;
    }
    let max_duration = match req.max_duration {
        None => config.max_call_duration,
        Some(d) => {
            let (lo, hi) = MAX_DURATION_RANGE;
            if d.seconds < 0 || d.nanos < 0 || d.seconds < lo.as_secs() as i64 || d.seconds > hi.as_secs() as i64 {
                return Err(invalid(
                    "max_duration",
                    format!(
                        "must be between {}s and {}s, got {}s",
                        lo.as_secs(),
                        hi.as_secs(),
                        d.seconds
                    ),
                ));
            }
            Duration::from_secs(d.seconds as u64)
        }
    };
    let tools = validate_tools(state, &req.tools)?;
    let transfer_targets = validate_transfer_targets(&req.transfer_targets)?;
    let tool_timeout = match req.tool_timeout {
        None => tools::DEFAULT_TIMEOUT,
        Some(d) => {
            let (lo, hi) = tools::TIMEOUT_RANGE;
            let ms = i128::from(d.seconds) * 1000 + i128::from(d.nanos) / 1_000_000;
            if d.seconds < 0 || d.nanos < 0 || ms < lo.as_millis() as i128 || ms > hi.as_millis() as i128 {
                return Err(invalid(
                    "tool_timeout",
                    format!("must be between {}s and {}s", lo.as_secs(), hi.as_secs()),
                ));
            }
            Duration::from_millis(ms as u64)
        }
    };
    let voice = if req.voice.is_empty() {
        default_voice(config, backend).to_string()
    } else {
        req.voice
    };
    let instructions = if req.instructions.is_empty() {
        config.system_prompt.clone()
    } else {
        req.instructions
    };
    let variables = validate_variables(req.variables)?;
    let voicemail = validate_voicemail(req.voicemail)?;
    // Filled in after the defaults, so SYSTEM_PROMPT and the default
    // greeting may use placeholders too; the limits apply to the result.
    let instructions = fill("instructions", &instructions, &variables, MAX_INSTRUCTIONS)?;
    let greeting = fill("greeting", &greeting, &variables, MAX_GREETING)?;
    let voicemail = Voicemail {
        message: fill(
            "voicemail.message",
            &voicemail.message,
            &variables,
            MAX_VOICEMAIL_MESSAGE,
        )?,
        ..voicemail
    };
    let webhook_url = match req.webhook_url.filter(|u| !u.is_empty()) {
        None => None,
        Some(url) => {
            tools::check_url(&url).map_err(|why| invalid("webhook_url", why))?;
            if config.webhook_secret.is_none() {
                return Err(invalid(
                    "webhook_url",
                    "this server has no WEBHOOK_SECRET to sign webhooks with",
                ));
            }
            Some(url)
        }
    };
    Ok(ValidCall {
        to: req.to,
        backend,
        instructions,
        voice,
        greeting,
        metadata: req.metadata.into_iter().collect(),
        max_duration,
        request_id: req.request_id,
        record: req.record.unwrap_or(config.record_calls),
        tools,
        tool_timeout,
        voicemail,
        webhook_url,
        transfer_targets,
        variables,
    })
}

/// A number to call or transfer to: required and E.164 (`field` names it).
fn check_number(field: &str, number: &str) -> Result<(), Status> {
    if number.is_empty() {
        return Err(invalid(
            field,
            "required: E.164 ('+' then 8 to 15 digits, e.g. +14155551212)",
        ));
    }
    if !is_e164(number) {
        return Err(invalid(
            field,
            format!(
                "must be E.164: '+' then 8 to 15 digits, e.g. +14155551212 (got {})",
                quoted(number)
            ),
        ));
    }
    Ok(())
}

/// Checks PlaceCall's `transfer_targets`: count, numbers (like `to`, and
/// unique), descriptions (required, bounded, text XML and the AI can carry).
fn validate_transfer_targets(raw: &[pb::TransferTarget]) -> Result<Vec<crate::call::TransferTarget>, Status> {
    use crate::call::lifecycle::transfer::{MAX_DESCRIPTION, MAX_TARGETS};
    if raw.len() > MAX_TARGETS {
        return Err(invalid(
            "transfer_targets",
            format!("at most {MAX_TARGETS} targets, got {}", raw.len()),
        ));
    }
    let mut out: Vec<crate::call::TransferTarget> = Vec::with_capacity(raw.len());
    for (i, t) in raw.iter().enumerate() {
        check_number(&format!("transfer_targets[{i}].number"), &t.number)?;
        if out.iter().any(|o| o.number == t.number) {
            return Err(invalid(
                &format!("transfer_targets[{i}].number"),
                format!("{} is listed twice", quoted(&t.number)),
            ));
        }
        let field = format!("transfer_targets[{i}].description");
        if t.description.trim().is_empty() {
            return Err(invalid(&field, "required: who answers there, for the AI"));
        }
        if t.description.len() > MAX_DESCRIPTION {
            return Err(invalid(
                &field,
                format!("at most {MAX_DESCRIPTION} bytes, got {}", t.description.len()),
            ));
        }
        check_text(&field, &t.description)?;
        out.push(crate::call::TransferTarget {
            number: t.number.clone(),
            description: t.description.clone(),
        });
    }
    Ok(out)
}

/// Checks PlaceCall's `tools`: names, sizes, schemas, URLs (call/tools.rs
/// has the limits), naming `tools[i].field` in the error.
fn validate_tools(state: &AppState, raw: &[pb::Tool]) -> Result<Vec<tools::Tool>, Status> {
    if raw.len() > tools::MAX_TOOLS {
        return Err(invalid(
            "tools",
            format!("at most {} tools, got {}", tools::MAX_TOOLS, raw.len()),
        ));
    }
    let mut out: Vec<tools::Tool> = Vec::with_capacity(raw.len());
    for (i, t) in raw.iter().enumerate() {
        let field = |f: &str| format!("tools[{i}].{f}");
        if !tools::valid_name(&t.name) {
            return Err(invalid(
                &field("name"),
                format!(
                    "must be 1 to {} of A-Z a-z 0-9 _ - (got {})",
                    tools::MAX_NAME,
                    quoted(&t.name)
                ),
            ));
        }
        if tools::BUILT_IN.contains(&t.name.as_str()) {
            return Err(invalid(
                &field("name"),
                format!("{} is a built-in tool of the server", quoted(&t.name)),
            ));
        }
        if out.iter().any(|o| o.name == t.name) {
            return Err(invalid(
                &field("name"),
                format!("{} is declared twice", quoted(&t.name)),
            ));
        }
        if t.description.len() > tools::MAX_DESCRIPTION {
            return Err(invalid(
                &field("description"),
                format!("at most {} bytes, got {}", tools::MAX_DESCRIPTION, t.description.len()),
            ));
        }
        check_text(&field("description"), &t.description)?;
        if t.parameters_json.len() > tools::MAX_PARAMETERS {
            return Err(invalid(
                &field("parameters_json"),
                format!(
                    "at most {} bytes, got {}",
                    tools::MAX_PARAMETERS,
                    t.parameters_json.len()
                ),
            ));
        }
        let parameters = if t.parameters_json.trim().is_empty() {
            serde_json::json!({"type": "object", "properties": {}})
        } else {
            let v: serde_json::Value = serde_json::from_str(&t.parameters_json)
                .map_err(|e| invalid(&field("parameters_json"), format!("not JSON: {e}")))?;
            check_parameters_schema(&v).map_err(|why| invalid(&field("parameters_json"), why))?;
            v
        };
        let url = if t.url.is_empty() {
            None
        } else {
            tools::check_url(&t.url).map_err(|why| invalid(&field("url"), why))?;
            if !state.tool_http.signs() {
                return Err(invalid(
                    &field("url"),
                    "this server has no WEBHOOK_SECRET to sign tool requests with; leave url empty to answer over gRPC",
                ));
            }
            Some(t.url.clone())
        };
        out.push(tools::Tool {
            name: t.name.clone(),
            description: t.description.clone(),
            parameters,
            url,
        });
    }
    Ok(out)
}

/// A tool's parameters must be a JSON Schema for an object (what the
/// realtime APIs take): an object with `"type": "object"`, whose
/// `properties`, when present, is an object of schemas and whose
/// `required`, when present, lists strings.
fn check_parameters_schema(v: &serde_json::Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("must be a JSON object (a JSON Schema)")?;
    if obj.get("type").and_then(|t| t.as_str()) != Some("object") {
        return Err("must be an object schema: {\"type\":\"object\",…}".into());
    }
    if let Some(p) = obj.get("properties") {
        let props = p.as_object().ok_or("properties must be an object")?;
        if let Some((k, _)) = props.iter().find(|(_, s)| !s.is_object() && !s.is_boolean()) {
            return Err(format!("properties.{} must be a schema (an object)", bounded_key(k)));
        }
    }
    if let Some(r) = obj.get("required")
        && !r.as_array().is_some_and(|a| a.iter().all(|x| x.is_string()))
    {
        return Err("required must be an array of property names".into());
    }
    Ok(())
}

fn bounded_key(k: &str) -> String {
    errors::bounded(k, 32)
}

/// PlaceCall's `variables`, within [`template`]'s limits.
fn validate_variables(raw: std::collections::HashMap<String, String>) -> Result<BTreeMap<String, String>, Status> {
    if raw.len() > template::MAX_VARIABLES {
        return Err(invalid(
            "variables",
            format!("at most {} entries, got {}", template::MAX_VARIABLES, raw.len()),
        ));
    }
    for (k, v) in &raw {
        if !template::is_name(k) {
            return Err(invalid(
                "variables",
                format!(
                    "names must be 1 to {} of A-Z a-z 0-9 _, not starting with a digit (got {})",
                    template::MAX_NAME,
                    quoted(k)
                ),
            ));
        }
        if v.len() > template::MAX_VALUE {
            return Err(invalid(
                "variables",
                format!("value of {} is over {} bytes", quoted(k), template::MAX_VALUE),
            ));
        }
        check_text(&format!("variables[{}]", quoted(k)), v)?;
    }
    Ok(raw.into_iter().collect())
}

/// Longest voicemail message, bytes (it is spoken like a greeting).
pub const MAX_VOICEMAIL_MESSAGE: usize = MAX_GREETING;

/// PlaceCall's `voicemail` policy (unset or UNSPECIFIED = off).
fn validate_voicemail(raw: Option<pb::VoicemailPolicy>) -> Result<Voicemail, Status> {
    let Some(raw) = raw else {
        return Ok(Voicemail::default());
    };
    let mode = match pb::VoicemailMode::try_from(raw.mode) {
        Ok(pb::VoicemailMode::Unspecified | pb::VoicemailMode::Off) => VoicemailMode::Off,
        Ok(pb::VoicemailMode::HangUp) => VoicemailMode::HangUp,
        Ok(pb::VoicemailMode::LeaveMessage) => VoicemailMode::LeaveMessage,
        Err(_) => return Err(invalid("voicemail.mode", format!("unknown value {}", raw.mode))),
    };
    if mode == VoicemailMode::LeaveMessage && raw.message.trim().is_empty() {
        return Err(invalid(
            "voicemail.message",
            "required with VOICEMAIL_MODE_LEAVE_MESSAGE: what the agent says on the machine",
        ));
    }
    if mode != VoicemailMode::LeaveMessage && !raw.message.is_empty() {
        return Err(invalid(
            "voicemail.message",
            "only VOICEMAIL_MODE_LEAVE_MESSAGE leaves a message; leave it empty",
        ));
    }
    check_text("voicemail.message", &raw.message)?;
    Ok(Voicemail {
        mode,
        message: raw.message,
        detected: false,
    })
}

/// `text` with its `{{name}}` placeholders filled; a placeholder without a
/// value, or a result over `max` bytes, is INVALID_ARGUMENT.
fn fill(field: &str, text: &str, variables: &BTreeMap<String, String>, max: usize) -> Result<String, Status> {
    let filled = template::render(text, variables).map_err(|template::Missing(name)| {
        invalid(
            "variables",
            format!("no value for the placeholder {{{{{name}}}}} in {field}"),
        )
    })?;
    if filled.len() > max {
        return Err(invalid(
            field,
            format!(
                "at most {max} bytes once the variables are filled in, got {}",
                filled.len()
            ),
        ));
    }
    Ok(filled)
}

/// The voice a call on `backend` gets when PlaceCall leaves `voice` empty.
fn default_voice(config: &Config, backend: Backend) -> &str {
    config.default_voice(backend)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A fresh per-stream secret (PlaceCall, and every resumed stream).
pub(crate) fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchCallResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::voice_agent_service_server::VoiceAgentService for VoiceAgent {
    async fn place_call(
        &self,
        request: Request<pb::PlaceCallRequest>,
    ) -> Result<Response<pb::PlaceCallResponse>, Status> {
        let state = &self.state;
        if let Some(reason) = state.readiness.stopped() {
            return Err(errors::not_taking_calls(reason));
        }
        let call = validate(state, request.into_inner())?;
        let key = call.request_key();
        let emulated = state.emulated_telephony || state.ai_emulated(call.backend);
        let record = CallRecord {
            call_id: CallId::new(),
            to: call.to.clone(),
            from: state.from_number.clone(),
            backend: call.backend,
            status: CallStatus::Queued,
            provider_call_id: String::new(),
            metadata: call.metadata,
            created_at: Utc::now(),
            answered_at: None,
            ended_at: None,
            emulated,
            end_reason: String::new(),
            instructions: call.instructions,
            voice: call.voice,
            greeting: call.greeting,
            max_duration_secs: call.max_duration.as_secs(),
            duration_seconds: 0,
            answered_by: String::new(),
            provider_error_code: String::new(),
            turn_latency_p50_ms: 0,
            turn_latency_p95_ms: 0,
            event_count: 0,
            stream_secret: random_secret(),
            last_provider_sequence: None,
            turn_latencies_ms: vec![],
            record: call.record,
            recording: None,
            tools: call.tools,
            tool_timeout_ms: call.tool_timeout.as_millis() as u64,
            voicemail: call.voicemail.clone(),
            webhooks: state
                .config
                .webhook_url
                .iter()
                .chain(call.webhook_url.iter())
                .cloned()
                .collect(),
            transfer_targets: call.transfer_targets.clone(),
            transfer: None,
            stream_generation: 0,
            resuming: None,
        };
        let id = record.call_id.clone();
        let on = |e| hub_status(e, Some(&id));
        // The call is stored before anything is dialled; with a request key,
        // only the request that stored it dials.
        match state.hub.create_once(record, key).await.map_err(on)?.0 {
            Inserted::New => {}
            Inserted::Existing(rec) => {
                tracing::info!(call_id = %rec.call_id, "PlaceCall retried with the same request_id: the same call");
                return Ok(Response::new(pb::PlaceCallResponse {
                    call_id: rec.call_id.to_string(),
                    provider_call_id: rec.provider_call_id.clone(),
                    status: status_to_pb(rec.status) as i32,
                    emulated: rec.emulated,
                }));
            }
            Inserted::Mismatch(other) => return Err(errors::request_id_reused(&other)),
        }
        let emulation = emulated.then(|| state.emulation_summary(call.backend));
        state
            .hub
            .update(&id, move |rec| lifecycle::placed(rec, emulation))
            .await
            .map_err(on)?;
        tracing::info!(call_id = %id, to = %crate::redact::phone(&call.to), backend = call.backend.as_str(), emulated, "placing call");
        state.metrics.calls_placed.inc();

        let public = state.public_url.as_str().trim_end_matches('/');
        let dial = DialRequest {
            to: call.to,
            from: state.from_number.clone(),
            twiml_url: format!("{public}/twilio/twiml?call_id={id}"),
            status_callback_url: format!("{public}/twilio/status?call_id={id}"),
            machine_detection: match call.voicemail.mode {
                VoicemailMode::Off => None,
                mode => Some(MachineDetection {
                    // The message waits for the greeting's end (the beep).
                    until_message_end: mode == VoicemailMode::LeaveMessage,
                    callback_url: format!("{public}/twilio/amd?call_id={id}"),
                }),
            },
            ring_timeout: state.config.ring_timeout,
            // A margin over max_duration: the bridge says goodbye at the limit
            // itself; Twilio's hard TimeLimit is only the backstop.
            time_limit: call.max_duration + TIME_LIMIT_MARGIN,
        };
        match state.telephony.dial(&dial).await {
            Ok(dialed) => {
                let sid = dialed.provider_call_id.clone();
                state
                    .hub
                    .update(&id, move |rec| lifecycle::dialed(rec, sid))
                    .await
                    .map_err(on)?;
                let rec = state.hub.get(&id).await.map_err(on)?;
                Ok(Response::new(pb::PlaceCallResponse {
                    call_id: id.to_string(),
                    provider_call_id: dialed.provider_call_id,
                    status: status_to_pb(rec.status) as i32,
                    emulated,
                }))
            }
            Err(e) => {
                tracing::warn!(call_id = %id, error = %e.message, "the provider refused the call");
                state
                    .hub
                    .update(&id, {
                        let (code, message) = (e.provider_code.clone(), e.message.clone());
                        move |rec| lifecycle::dial_refused(rec, code.as_deref(), &message)
                    })
                    .await
                    .map_err(on)?;
                // The call is stored (FAILED): the error names it.
                Err(telephony_status(&e, &id))
            }
        }
    }

    type WatchCallStream = EventStream;

    async fn watch_call(
        &self,
        request: Request<pb::WatchCallRequest>,
    ) -> Result<Response<Self::WatchCallStream>, Status> {
        let req = request.into_inner();
        let id = parse_call_id(&req.call_id)?;
        let rx = self
            .state
            .hub
            .watch(&id, req.after_sequence)
            .await
            .map_err(|e| hub_status(e, Some(&id)))?;
        let stream = tokio_stream::StreamExt::map(ReceiverStream::new(rx), move |item| match item {
            Ok(ev) => Ok(pb::WatchCallResponse {
                event: Some(event_to_pb(&ev)),
            }),
            Err(e) => Err(hub_status(e, Some(&id))),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn hang_up_call(
        &self,
        request: Request<pb::HangUpCallRequest>,
    ) -> Result<Response<pb::HangUpCallResponse>, Status> {
        let id = parse_call_id(&request.into_inner().call_id)?;
        let state = &self.state;
        let on = |e| hub_status(e, Some(&id));
        let rec = state.hub.get(&id).await.map_err(on)?;
        if rec.status.is_terminal() {
            return Ok(Response::new(pb::HangUpCallResponse {
                call: Some(call_to_pb(&rec)),
            }));
        }
        state.hub.update(&id, lifecycle::hang_up_requested).await.map_err(on)?;
        if rec.provider_call_id.is_empty() {
            // Still being dialled: nothing to tell the provider yet.
            state
                .hub
                .update(&id, |r| {
                    lifecycle::end(r, lifecycle::Ending::Canceled, lifecycle::HANG_UP_REASON)
                })
                .await
                .map_err(on)?;
        } else {
            let answered = rec.status == CallStatus::InProgress;
            if let Err(e) = state.telephony.hang_up(&rec.provider_call_id, answered).await {
                state
                    .hub
                    .publish(
                        &id,
                        EventKind::error(
                            ErrorCode::from_provider(e.provider_code.as_deref()),
                            format!("hang-up failed: {}", e.message),
                        ),
                    )
                    .await
                    .map_err(on)?;
                return Err(telephony_status(&e, &id));
            }
            // The media bridge stops now (on whichever replica runs it); the
            // provider's status callback brings the terminal status.
            state.hub.stop_media(&id).await.map_err(on)?;
        }
        let rec = state.hub.get(&id).await.map_err(on)?;
        Ok(Response::new(pb::HangUpCallResponse {
            call: Some(call_to_pb(&rec)),
        }))
    }

    async fn get_call(&self, request: Request<pb::GetCallRequest>) -> Result<Response<pb::GetCallResponse>, Status> {
        let id = parse_call_id(&request.into_inner().call_id)?;
        let rec = self.state.hub.get(&id).await.map_err(|e| hub_status(e, Some(&id)))?;
        let mut call = call_to_pb(&rec);
        if !rec.webhooks.is_empty() {
            let deliveries = self
                .state
                .hub
                .store()
                .deliveries(&id)
                .await
                .map_err(|e| hub_status(e.into(), Some(&id)))?;
            call.webhooks = deliveries.iter().map(delivery_to_pb).collect();
        }
        Ok(Response::new(pb::GetCallResponse { call: Some(call) }))
    }

    async fn list_calls(
        &self,
        request: Request<pb::ListCallsRequest>,
    ) -> Result<Response<pb::ListCallsResponse>, Status> {
        let query = list::parse(request.into_inner())?;
        let page = self
            .state
            .hub
            .store()
            .list_calls_matching(&query.filter, query.page_size, query.after)
            .await
            .map_err(|e| hub_status(e.into(), None))?;
        let mut calls = Vec::with_capacity(page.calls.len());
        for rec in page.calls {
            // Live calls: the hub has the newest record.
            let rec = match self.state.hub.get(&rec.call_id).await {
                Ok(live) => live,
                Err(_) => rec,
            };
            calls.push(call_to_pb(&rec));
        }
        Ok(Response::new(pb::ListCallsResponse {
            calls,
            next_page_token: page.next.map(|n| query.token(n)).unwrap_or_default(),
        }))
    }

    async fn submit_tool_result(
        &self,
        request: Request<pb::SubmitToolResultRequest>,
    ) -> Result<Response<pb::SubmitToolResultResponse>, Status> {
        let req = request.into_inner();
        let id = parse_call_id(&req.call_id)?;
        if req.tool_call_id.is_empty() || req.tool_call_id.len() > crate::call::payload_caps::CODE {
            return Err(invalid(
                "tool_call_id",
                format!(
                    "required, at most {} bytes (the ToolCall event's tool_call_id)",
                    crate::call::payload_caps::CODE
                ),
            ));
        }
        if req.output.len() > crate::call::payload_caps::TOOL_OUTPUT {
            return Err(invalid(
                "output",
                format!(
                    "at most {} bytes, got {}",
                    crate::call::payload_caps::TOOL_OUTPUT,
                    req.output.len()
                ),
            ));
        }
        let state = &self.state;
        let answer = tools::ToolAnswer {
            tool_call_id: req.tool_call_id.clone(),
            output: req.output,
            outcome: tools::ToolOutcome::Answered,
        };
        let refused = match state.tool_desk.resolve(&id, tools::Answerer::Client, answer) {
            Ok(()) => return Ok(Response::new(pb::SubmitToolResultResponse {})),
            Err(r) => r,
        };
        let meta = [("call_id", id.as_str()), ("tool_call_id", req.tool_call_id.as_str())];
        let status = |code, reason: ErrorReason, message: &str| errors::api_status(code, &reason, message, &meta, &[]);
        Err(match refused {
            tools::Refused::AlreadyAnswered => status(
                tonic::Code::AlreadyExists,
                ErrorReason::ToolResultAlreadySubmitted,
                "this tool call already has its output; the first one stays",
            ),
            tools::Refused::Expired => status(
                tonic::Code::FailedPrecondition,
                ErrorReason::ToolCallExpired,
                "too late: the tool call timed out or was cancelled, and the AI was told the tool did not answer",
            ),
            tools::Refused::ByUrl => status(
                tonic::Code::FailedPrecondition,
                ErrorReason::ToolAnsweredByUrl,
                "this tool is answered by its URL, not by SubmitToolResult",
            ),
            tools::Refused::Unknown | tools::Refused::NotHere => {
                // Not pending here: the stored log tells an unknown id from a
                // call that ended (or runs on another replica).
                let rec = state.hub.get(&id).await.map_err(|e| hub_status(e, Some(&id)))?;
                let events = tool_events(state, &id, &req.tool_call_id)
                    .await
                    .map_err(|e| hub_status(e, Some(&id)))?;
                let known = |want_result: bool| {
                    events.iter().any(|e| match &e.kind {
                        EventKind::ToolCall { tool_call_id, .. } => !want_result && *tool_call_id == req.tool_call_id,
                        EventKind::ToolResult { tool_call_id, .. } => want_result && *tool_call_id == req.tool_call_id,
                        _ => false,
                    })
                };
                let answered = events.iter().any(|e| {
                    matches!(&e.kind, EventKind::ToolResult { tool_call_id, outcome: tools::ToolOutcome::Answered, .. } if *tool_call_id == req.tool_call_id)
                });
                if !known(false) {
                    status(
                        tonic::Code::NotFound,
                        ErrorReason::ToolCallNotFound,
                        "the call made no tool call with this tool_call_id",
                    )
                } else if answered {
                    status(
                        tonic::Code::AlreadyExists,
                        ErrorReason::ToolResultAlreadySubmitted,
                        "this tool call already has its output; the first one stays",
                    )
                } else if known(true) || rec.status.is_terminal() || refused == tools::Refused::Unknown {
                    status(
                        tonic::Code::FailedPrecondition,
                        ErrorReason::ToolCallExpired,
                        "too late: the tool call is over (timed out, cancelled, or the call ended)",
                    )
                } else {
                    status(
                        tonic::Code::Unavailable,
                        ErrorReason::ToolCallElsewhere,
                        "the call's media runs on another replica; send SubmitToolResult there",
                    )
                }
            }
        })
    }

    /// TransferCall: the domain decides whether the call may be transferred
    /// (and records the start), then the provider is asked directly, from
    /// whichever replica got the request (the redirect needs no media
    /// bridge); the bridge, wherever it runs, is stopped after it.
    async fn transfer_call(
        &self,
        request: Request<pb::TransferCallRequest>,
    ) -> Result<Response<pb::TransferCallResponse>, Status> {
        use crate::call::lifecycle::transfer;
        let req = request.into_inner();
        let id = parse_call_id(&req.call_id)?;
        check_number("number", &req.number)?;
        let state = &self.state;
        let on = |e| hub_status(e, Some(&id));
        let refused = Arc::new(std::sync::Mutex::new(None));
        let (slot, target) = (refused.clone(), req.number.clone());
        state
            .hub
            .update(&id, move |rec| {
                match transfer::start(rec, &target, crate::call::TransferBy::Operator) {
                    Ok(events) => events,
                    Err(why) => {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                        vec![]
                    }
                }
            })
            .await
            .map_err(on)?;
        let why = refused.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(why) = why {
            return Err(errors::api_status(
                tonic::Code::FailedPrecondition,
                &ErrorReason::CallNotLive,
                format!("cannot transfer: {}", why.message()),
                &[("call_id", id.as_str())],
                &[],
            ));
        }
        let rec = state.hub.get(&id).await.map_err(on)?;
        let transfer_req = crate::http::transfer_request(state, &id, &req.number);
        if let Err(e) = state.telephony.transfer(&rec.provider_call_id, &transfer_req).await {
            let (message, code) = (e.message.clone(), e.provider_code.clone());
            state
                .hub
                .update(&id, move |rec| {
                    let mut events = transfer::redirect_refused(rec, &message);
                    events.push(EventKind::error(
                        ErrorCode::from_provider(code.as_deref()),
                        format!("the transfer's redirect failed: {message}"),
                    ));
                    events
                })
                .await
                .map_err(on)?;
            // The call goes on with the agent.
            return Err(telephony_status(&e, &id));
        }
        tracing::info!(call_id = %id, to = %crate::redact::phone(&req.number), "call transferred by an operator");
        // The redirect ended the media stream; the AI session closes now too.
        state.hub.stop_media(&id).await.map_err(on)?;
        let rec = state.hub.get(&id).await.map_err(on)?;
        Ok(Response::new(pb::TransferCallResponse {
            call: Some(call_to_pb(&rec)),
        }))
    }

    async fn get_server_info(
        &self,
        _request: Request<pb::GetServerInfoRequest>,
    ) -> Result<Response<pb::GetServerInfoResponse>, Status> {
        Ok(Response::new(server_info(&self.state)))
    }
}

/// What GetServerInfo says: the same decisions PlaceCall makes (which backends
/// it accepts, what the unspecified one resolves to, which defaults apply),
/// and nothing secret: no keys, endpoints or system prompt.
pub fn server_info(state: &AppState) -> pb::GetServerInfoResponse {
    let config = &state.config;
    let backends = config
        .available_backends()
        .into_iter()
        .map(|b| pb::BackendInfo {
            backend: backend_to_pb(b) as i32,
            emulated: state.ai_emulated(b),
            default_voice: default_voice(config, b).to_string(),
            display_name: b.display_name().to_string(),
        })
        .collect();
    pb::GetServerInfoResponse {
        backends,
        default_backend: backend_to_pb(config.effective_default_backend()) as i32,
        telephony_emulated: state.emulated_telephony,
        default_greeting: DEFAULT_GREETING.to_string(),
        default_max_duration: Some(prost_types::Duration {
            seconds: i64::try_from(config.max_call_duration.as_secs()).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        audio_mode: match config.audio_mode {
            AudioMode::Transcode => pb::AudioMode::Transcode,
            AudioMode::Passthrough => pb::AudioMode::Passthrough,
        } as i32,
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        limits: Some(place_call_limits()),
    }
}

/// The bounds [`validate`] enforces, as GetServerInfo publishes them.
fn place_call_limits() -> pb::PlaceCallLimits {
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let d = |v: Duration| prost_types::Duration {
        seconds: i64::try_from(v.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    };
    pb::PlaceCallLimits {
        min_to_digits: n(E164_DIGITS.0),
        max_to_digits: n(E164_DIGITS.1),
        max_instructions_bytes: n(MAX_INSTRUCTIONS),
        max_voice_bytes: n(MAX_VOICE),
        max_greeting_bytes: n(MAX_GREETING),
        max_metadata_entries: n(MAX_METADATA_ENTRIES),
        max_metadata_key_bytes: n(MAX_METADATA_KEY),
        max_metadata_value_bytes: n(MAX_METADATA_VALUE),
        shortest_max_duration: Some(d(MAX_DURATION_RANGE.0)),
        longest_max_duration: Some(d(MAX_DURATION_RANGE.1)),
    }
}

/// Domain status → protobuf.
pub fn status_to_pb(s: CallStatus) -> pb::CallStatus {
    match s {
        CallStatus::Queued => pb::CallStatus::Queued,
        CallStatus::Initiated => pb::CallStatus::Initiated,
        CallStatus::Ringing => pb::CallStatus::Ringing,
        CallStatus::InProgress => pb::CallStatus::InProgress,
        CallStatus::Completed => pb::CallStatus::Completed,
        CallStatus::Busy => pb::CallStatus::Busy,
        CallStatus::NoAnswer => pb::CallStatus::NoAnswer,
        CallStatus::Canceled => pb::CallStatus::Canceled,
        CallStatus::Failed => pb::CallStatus::Failed,
    }
}

fn backend_to_pb(b: Backend) -> pb::Backend {
    match b {
        Backend::VoiceLive => pb::Backend::VoiceLive,
        Backend::GptRealtime => pb::Backend::GptRealtime,
    }
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Domain event → protobuf.
pub fn event_to_pb(ev: &CallEvent) -> pb::CallEvent {
    use pb::call_event::Kind;
    let kind = match &ev.kind {
        EventKind::Status { status, detail } => Kind::Status(pb::StatusChanged {
            status: status_to_pb(*status) as i32,
            detail: detail.clone(),
        }),
        EventKind::Transcript {
            speaker,
            text,
            interrupted,
        } => Kind::Transcript(pb::Transcript {
            speaker: match speaker {
                Speaker::Callee => pb::Speaker::Callee,
                Speaker::Agent => pb::Speaker::Agent,
            } as i32,
            text: text.clone(),
            interrupted: *interrupted,
        }),
        EventKind::Error { code, message } => Kind::Error(pb::CallError {
            code: code.clone(),
            message: message.clone(),
        }),
        EventKind::Dtmf { digit } => Kind::Dtmf(pb::Dtmf { digit: digit.clone() }),
        EventKind::Turn {
            turn_index,
            first_audio_sent_ms,
            first_audio_heard_ms,
        } => Kind::Turn(pb::TurnMetrics {
            turn_index: *turn_index,
            first_audio_sent_ms: *first_audio_sent_ms,
            first_audio_heard_ms: *first_audio_heard_ms,
        }),
        EventKind::Notice { code, message } => Kind::Notice(pb::Notice {
            code: code.clone(),
            message: message.clone(),
        }),
        EventKind::Recording(info) => Kind::Recording(recording_to_pb(info)),
        EventKind::Migrated { from, to, gap_ms } => Kind::Migrated(pb::Migrated {
            from_replica: from.clone(),
            to_replica: to.clone(),
            gap_ms: *gap_ms,
        }),
        EventKind::ToolCall {
            tool_call_id,
            name,
            arguments,
            by_url,
        } => Kind::ToolCall(pb::ToolCall {
            tool_call_id: tool_call_id.clone(),
            name: name.clone(),
            arguments_json: arguments.clone(),
            answered_by_url: *by_url,
        }),
        EventKind::ToolResult {
            tool_call_id,
            name,
            output,
            outcome,
            wait_ms,
        } => Kind::ToolResult(pb::ToolResult {
            tool_call_id: tool_call_id.clone(),
            name: name.clone(),
            output: output.clone(),
            outcome: match outcome {
                tools::ToolOutcome::Answered => pb::ToolOutcome::Answered,
                tools::ToolOutcome::TimedOut => pb::ToolOutcome::TimedOut,
                tools::ToolOutcome::Failed => pb::ToolOutcome::Failed,
                tools::ToolOutcome::Canceled => pb::ToolOutcome::Canceled,
            } as i32,
            wait_ms: *wait_ms,
        }),
        EventKind::AnsweredBy {
            answered_by,
            detection_ms,
            action,
        } => Kind::AnsweredBy(pb::AnsweredBy {
            answered_by: answered_by.clone(),
            detection_ms: *detection_ms,
            action: action.clone(),
        }),
        EventKind::Transfer(info) => Kind::Transfer(transfer_to_pb(info)),
    };
    pb::CallEvent {
        sequence: ev.sequence,
        time: Some(ts(ev.time)),
        kind: Some(kind),
    }
}

/// Domain record → protobuf (the stream secret stays inside).
pub fn call_to_pb(rec: &CallRecord) -> pb::Call {
    pb::Call {
        call_id: rec.call_id.to_string(),
        to: rec.to.clone(),
        from: rec.from.clone(),
        backend: backend_to_pb(rec.backend) as i32,
        status: status_to_pb(rec.status) as i32,
        provider_call_id: rec.provider_call_id.clone(),
        metadata: rec.metadata.clone().into_iter().collect(),
        created_at: Some(ts(rec.created_at)),
        answered_at: rec.answered_at.map(ts),
        ended_at: rec.ended_at.map(ts),
        emulated: rec.emulated,
        end_reason: rec.end_reason.clone(),
        instructions: rec.instructions.clone(),
        voice: rec.voice.clone(),
        duration_seconds: rec.duration_seconds,
        answered_by: rec.answered_by.clone(),
        provider_error_code: rec.provider_error_code.clone(),
        turn_latency_p50_ms: rec.turn_latency_p50_ms,
        turn_latency_p95_ms: rec.turn_latency_p95_ms,
        event_count: rec.event_count,
        recording_url: rec
            .recording
            .as_ref()
            .and_then(|r| r.url(&rec.call_id))
            .unwrap_or_default(),
        recording: rec.recording.as_ref().map(recording_to_pb),
        tools: rec
            .tools
            .iter()
            .map(|t| pb::Tool {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters_json: t.parameters.to_string(),
                url: t.url.clone().unwrap_or_default(),
            })
            .collect(),
        tool_timeout: Some(prost_types::Duration {
            seconds: (effective_tool_timeout(rec).as_millis() / 1000) as i64,
            nanos: ((effective_tool_timeout(rec).as_millis() % 1000) * 1_000_000) as i32,
        }),
        voicemail: Some(pb::VoicemailPolicy {
            mode: match rec.voicemail.mode {
                VoicemailMode::Off => pb::VoicemailMode::Off,
                VoicemailMode::HangUp => pb::VoicemailMode::HangUp,
                VoicemailMode::LeaveMessage => pb::VoicemailMode::LeaveMessage,
            } as i32,
            message: rec.voicemail.message.clone(),
        }),
        // GetCall adds them (one more read of the store).
        webhooks: vec![],
        transfer_targets: rec
            .transfer_targets
            .iter()
            .map(|t| pb::TransferTarget {
                number: t.number.clone(),
                description: t.description.clone(),
            })
            .collect(),
        transfer: rec.transfer.as_ref().map(transfer_to_pb),
    }
}

fn transfer_to_pb(info: &crate::call::TransferInfo) -> pb::Transfer {
    use crate::call::{TransferBy, TransferState};
    pb::Transfer {
        target: info.target.clone(),
        state: match info.state {
            TransferState::Started => pb::TransferState::Started,
            TransferState::Answered => pb::TransferState::Answered,
            TransferState::Busy => pb::TransferState::Busy,
            TransferState::NoAnswer => pb::TransferState::NoAnswer,
            TransferState::Failed => pb::TransferState::Failed,
            TransferState::Canceled => pb::TransferState::Canceled,
        } as i32,
        by: match info.by {
            TransferBy::Agent => pb::TransferBy::Agent,
            TransferBy::Operator => pb::TransferBy::Operator,
        } as i32,
        reason: info.reason.clone(),
    }
}

fn delivery_to_pb(d: &crate::store::Delivery) -> pb::WebhookDelivery {
    use crate::store::DeliveryState;
    pb::WebhookDelivery {
        message_id: d.message_id.clone(),
        r#type: d.event_type.clone(),
        url: crate::webhook::shown_url(&d.url),
        state: match d.state {
            DeliveryState::Pending => pb::WebhookDeliveryState::Pending,
            DeliveryState::Delivered => pb::WebhookDeliveryState::Delivered,
            DeliveryState::Dead => pb::WebhookDeliveryState::Dead,
        } as i32,
        attempts: d.attempts,
        last_http_status: u32::from(d.last_status),
        last_error: d.last_error.clone(),
        next_attempt_at: (d.state == DeliveryState::Pending).then(|| ts(d.next_attempt_at)),
        created_at: Some(ts(d.created_at)),
    }
}

fn recording_to_pb(info: &RecordingInfo) -> pb::Recording {
    pb::Recording {
        state: match info.state {
            RecordingState::Recording => pb::RecordingState::Recording,
            RecordingState::Complete => pb::RecordingState::Complete,
            RecordingState::Failed => pb::RecordingState::Failed,
            RecordingState::Deleted => pb::RecordingState::Deleted,
        } as i32,
        error: info.error.clone(),
        duration_ms: info.duration_ms,
    }
}

/// The stored tool events of one tool call of a call (the log is read a
/// page at a time; only those events are kept).
async fn tool_events(
    state: &AppState,
    id: &CallId,
    tool_call_id: &str,
) -> Result<Vec<CallEvent>, crate::call::hub::HubError> {
    const PAGE: usize = 1000;
    let mut found = Vec::new();
    let mut after = 0;
    loop {
        let page = state.hub.store().events_after(id, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.sequence;
        let full = page.len() == PAGE;
        found.extend(page.into_iter().filter(|e| {
            matches!(&e.kind, EventKind::ToolCall { tool_call_id: t, .. } | EventKind::ToolResult { tool_call_id: t, .. } if t == tool_call_id)
        }));
        if !full {
            break;
        }
    }
    Ok(found)
}

/// A record's tool timeout (records stored before tools existed: the default).
pub fn effective_tool_timeout(rec: &CallRecord) -> Duration {
    if rec.tool_timeout_ms == 0 {
        tools::DEFAULT_TIMEOUT
    } else {
        Duration::from_millis(rec.tool_timeout_ms)
    }
}

/// The token of an `authorization: Bearer <token>` value ("" when absent).
pub fn bearer(authorization: Option<&str>) -> &str {
    authorization
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .unwrap_or("")
}

/// Compares a presented token with the configured one in constant time.
pub fn token_matches(given: &str, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

/// Checks `authorization: Bearer <API_TOKEN>` in constant time.
#[derive(Clone)]
pub struct AuthInterceptor {
    token: Option<Arc<str>>,
}

impl AuthInterceptor {
    /// `None` = the API is open (loopback-only default).
    pub fn new(token: Option<&str>) -> Self {
        Self {
            token: token.map(Arc::from),
        }
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(req);
        };
        let given = bearer(req.metadata().get("authorization").and_then(|v| v.to_str().ok()));
        if token_matches(given, token) {
            Ok(req)
        } else if given.is_empty() {
            Err(errors::unauthenticated(
                "missing 'authorization: Bearer <API_TOKEN>' metadata",
            ))
        } else {
            Err(errors::unauthenticated("invalid API token"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_short_and_say_how_long_the_input_was() {
        assert_eq!(quoted("call_x"), "\"call_x\"");
        let long = "é".repeat(1000);
        let q = quoted(&long);
        assert!(q.starts_with(&format!("\"{}\"…", "é".repeat(MAX_QUOTED))), "{q}");
        assert!(q.ends_with("(2000 bytes)"), "{q}");
    }

    #[test]
    fn text_is_what_xml_1_0_can_carry() {
        assert!(check_text("greeting", "Hi\tthere\r\n— ça 🙂").is_ok());
        for bad in ["\u{0}", "a\u{1}", "\u{b}", "\u{c}", "\u{1f}", "\u{fffe}", "\u{ffff}"] {
            let e = check_text("greeting", bad).unwrap_err();
            assert!(e.message().starts_with("greeting: "), "{}", e.message());
        }
    }
}
