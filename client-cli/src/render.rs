//! Text output: one line per call event, call records for humans. Pure
//! functions; the time zone and colour choice come in as arguments.

use std::fmt::Display;

use chrono::{DateTime, TimeZone, Utc};
use voice_agent_proto::v1 as pb;
use voice_agent_proto::v1::call_event::Kind;

/// Whether to colour the output (ANSI SGR codes), decided once per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Palette {
    /// True: wrap labels in ANSI colour codes.
    pub color: bool,
}

impl Palette {
    /// Colour only on a terminal, and never when `NO_COLOR` is set to a
    /// non-empty value (https://no-color.org).
    pub fn detect(stdout_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> Palette {
        Palette {
            color: stdout_is_terminal && no_color.is_none_or(|v| v.is_empty()),
        }
    }

    fn paint(self, sgr: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

const BOLD: &str = "1";
const DIM: &str = "2";
const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const MAGENTA: &str = "35";
const CYAN: &str = "36";

/// Converts a protobuf timestamp; `None` when it is out of chrono's range.
pub fn to_datetime(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

fn clock<Tz: TimeZone>(ts: Option<&prost_types::Timestamp>, tz: &Tz, format: &str) -> String
where
    Tz::Offset: Display,
{
    ts.and_then(to_datetime)
        .map(|t| t.with_timezone(tz).format(format).to_string())
        .unwrap_or_else(|| "-".repeat(format.len().max(8)))
}

/// Text from the server (transcripts come from the callee and the AI) is
/// printed to a terminal: control characters such as ESC could move the
/// cursor or recolour it, and newlines would break one-event-per-line, so
/// they are replaced.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// `COMPLETED` for `CALL_STATUS_COMPLETED`; an unknown value shows its number.
pub fn status_name(raw: i32) -> String {
    match pb::CallStatus::try_from(raw) {
        Ok(s) => s.as_str_name().trim_start_matches("CALL_STATUS_").to_string(),
        Err(_) => format!("STATUS_{raw}"),
    }
}

/// `voice-live`, `gpt-realtime` (the names `--backend` takes), or `default`.
pub fn backend_name(raw: i32) -> String {
    match pb::Backend::try_from(raw) {
        Ok(pb::Backend::VoiceLive) => "voice-live".into(),
        Ok(pb::Backend::GptRealtime) => "gpt-realtime".into(),
        Ok(pb::Backend::Unspecified) => "default".into(),
        Err(_) => format!("backend-{raw}"),
    }
}

fn status_colour(raw: i32) -> &'static str {
    match pb::CallStatus::try_from(raw) {
        Ok(pb::CallStatus::Completed) => GREEN,
        Ok(pb::CallStatus::Failed | pb::CallStatus::Busy | pb::CallStatus::NoAnswer | pb::CallStatus::Canceled) => RED,
        _ => BOLD,
    }
}

/// One event as a line: `12:00:05  agent    Hi, this is …`. The label column
/// is padded before colouring so columns line up with and without colour.
pub fn event_line<Tz: TimeZone>(event: &pb::CallEvent, tz: &Tz, palette: Palette) -> String
where
    Tz::Offset: Display,
{
    let time = clock(event.time.as_ref(), tz, "%H:%M:%S");
    let label = |name: &str, sgr: &str| palette.paint(sgr, &format!("{name:<8}"));
    let body = match &event.kind {
        Some(Kind::Status(s)) => {
            let name = palette.paint(status_colour(s.status), &status_name(s.status));
            let detail = if s.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", sanitize(&s.detail))
            };
            format!("{} {name}{detail}", label("status", BOLD))
        }
        Some(Kind::Transcript(t)) => {
            let who = match pb::Speaker::try_from(t.speaker) {
                Ok(pb::Speaker::Agent) => label("agent", CYAN),
                Ok(pb::Speaker::Callee) => label("callee", YELLOW),
                _ => label("speaker?", DIM),
            };
            let cut = if t.interrupted {
                format!(" {}", palette.paint(DIM, "[interrupted]"))
            } else {
                String::new()
            };
            format!("{who} {}{cut}", sanitize(&t.text))
        }
        Some(Kind::Error(e)) => format!("{} {}", label("error", RED), code_and_message(&e.code, &e.message)),
        Some(Kind::Dtmf(d)) => format!("{} {}", label("dtmf", MAGENTA), sanitize(&d.digit)),
        Some(Kind::Turn(m)) => format!(
            "{} #{} first audio sent after {} ms, heard after {} ms",
            label("turn", DIM),
            m.turn_index,
            m.first_audio_sent_ms,
            m.first_audio_heard_ms
        ),
        Some(Kind::Notice(n)) => format!("{} {}", label("notice", DIM), code_and_message(&n.code, &n.message)),
        Some(Kind::Recording(r)) => {
            let colour = if r.state == pb::RecordingState::Failed as i32 {
                RED
            } else {
                DIM
            };
            format!("{} {}", label("record", colour), recording_text(r))
        }
        Some(Kind::ToolCall(c)) => format!(
            "{} {}({}) id {}{}",
            label("tool", MAGENTA),
            sanitize(&c.name),
            sanitize(&c.arguments_json),
            sanitize(&c.tool_call_id),
            if c.answered_by_url { " (asking its URL)" } else { "" }
        ),
        Some(Kind::ToolResult(r)) => {
            let outcome = match pb::ToolOutcome::try_from(r.outcome) {
                Ok(pb::ToolOutcome::Answered) => "answered",
                Ok(pb::ToolOutcome::TimedOut) => "timed out",
                Ok(pb::ToolOutcome::Failed) => "failed",
                Ok(pb::ToolOutcome::Canceled) => "cancelled",
                _ => "?",
            };
            format!(
                "{} {} {outcome} after {} ms: {}",
                label("result", MAGENTA),
                sanitize(&r.name),
                r.wait_ms,
                sanitize(&r.output)
            )
        }
        Some(Kind::Migrated(m)) => format!(
            "{} to another bridge after {} ms (replica {} -> {}); the call goes on",
            label("moved", MAGENTA),
            m.gap_ms,
            if m.from_replica.is_empty() {
                "?".to_string()
            } else {
                sanitize(&m.from_replica)
            },
            sanitize(&m.to_replica)
        ),
        Some(Kind::AnsweredBy(a)) => format!(
            "{} {}: {}",
            label("answered", MAGENTA),
            sanitize(&a.answered_by),
            sanitize(&a.action)
        ),
        Some(Kind::Transfer(t)) => format!("{} {}", label("transfer", MAGENTA), transfer_text(t)),
        None => format!(
            "{} #{} is of a kind this client does not know (try --json)",
            label("event", DIM),
            event.sequence
        ),
    };
    format!("{time}  {body}")
}

/// `+15550120 answered (by the agent)` / `+15550122 busy (by an operator): the line was busy`.
pub fn transfer_text(t: &pb::Transfer) -> String {
    let state = match pb::TransferState::try_from(t.state) {
        Ok(pb::TransferState::Started) => "dialling".to_string(),
        Ok(pb::TransferState::Answered) => "answered".to_string(),
        Ok(pb::TransferState::Busy) => "busy".to_string(),
        Ok(pb::TransferState::NoAnswer) => "no answer".to_string(),
        Ok(pb::TransferState::Failed) => "failed".to_string(),
        Ok(pb::TransferState::Canceled) => "cancelled".to_string(),
        _ => format!("state {}", t.state),
    };
    let by = match pb::TransferBy::try_from(t.by) {
        Ok(pb::TransferBy::Agent) => " (by the agent)",
        Ok(pb::TransferBy::Operator) => " (by an operator)",
        _ => "",
    };
    if t.reason.is_empty() {
        format!("{} {state}{by}", sanitize(&t.target))
    } else {
        format!("{} {state}{by}: {}", sanitize(&t.target), sanitize(&t.reason))
    }
}

/// `complete, 42.3 s` / `failed after 3.0 s: the disk is full`.
pub fn recording_text(r: &pb::Recording) -> String {
    let state = match pb::RecordingState::try_from(r.state) {
        Ok(pb::RecordingState::Recording) => "recording".to_string(),
        Ok(pb::RecordingState::Complete) => "complete".to_string(),
        Ok(pb::RecordingState::Failed) => "failed".to_string(),
        Ok(pb::RecordingState::Deleted) => "deleted".to_string(),
        _ => format!("state {}", r.state),
    };
    let length = if r.duration_ms > 0 {
        format!(", {:.1} s", r.duration_ms as f64 / 1000.0)
    } else {
        String::new()
    };
    if r.error.is_empty() {
        format!("{state}{length}")
    } else {
        format!("{state}{length}: {}", sanitize(&r.error))
    }
}

fn code_and_message(code: &str, message: &str) -> String {
    match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{}: {}", sanitize(code), sanitize(message)),
        (true, _) => sanitize(message),
        (false, true) => sanitize(code),
    }
}

/// One call as a line of `list` / `hangup`:
/// `<call id>  COMPLETED  2026-11-26 12:00:01  +14155551212  voice-live  emulated  callee hung up`.
pub fn call_row<Tz: TimeZone>(call: &pb::Call, tz: &Tz) -> String
where
    Tz::Offset: Display,
{
    let mut row = format!(
        "{}  {:<11}  {}  {}  {}",
        sanitize(&call.call_id),
        status_name(call.status),
        clock(call.created_at.as_ref(), tz, "%Y-%m-%d %H:%M:%S"),
        sanitize(&call.to),
        backend_name(call.backend)
    );
    if call.emulated {
        row.push_str("  emulated");
    }
    if !call.end_reason.is_empty() {
        row.push_str("  ");
        row.push_str(&sanitize(&call.end_reason));
    }
    row
}

/// A call record as `name  value` lines for `get`; empty fields are left out.
pub fn call_detail<Tz: TimeZone>(call: &pb::Call, tz: &Tz) -> String
where
    Tz::Offset: Display,
{
    let when = |ts: Option<&prost_types::Timestamp>| ts.map(|t| clock(Some(t), tz, "%Y-%m-%d %H:%M:%S%.3f %:z"));
    let mut status = status_name(call.status);
    if !call.end_reason.is_empty() {
        status = format!("{status} ({})", sanitize(&call.end_reason));
    }
    let mut metadata: Vec<String> = call
        .metadata
        .iter()
        .map(|(k, v)| format!("{}={}", sanitize(k), sanitize(v)))
        .collect();
    metadata.sort();
    let rows: Vec<(&str, Option<String>)> = vec![
        ("call id", Some(sanitize(&call.call_id))),
        ("status", Some(status)),
        ("to", Some(sanitize(&call.to))),
        ("from", non_empty(&call.from)),
        ("backend", Some(backend_name(call.backend))),
        (
            "emulated",
            Some(
                if call.emulated {
                    "yes: no real phone was dialled"
                } else {
                    "no"
                }
                .into(),
            ),
        ),
        ("provider id", non_empty(&call.provider_call_id)),
        ("created", when(call.created_at.as_ref())),
        ("answered", when(call.answered_at.as_ref())),
        ("ended", when(call.ended_at.as_ref())),
        (
            "duration",
            (call.duration_seconds > 0).then(|| format!("{} s", call.duration_seconds)),
        ),
        ("answered by", non_empty(&call.answered_by)),
        ("provider error", non_empty(&call.provider_error_code)),
        ("voice", non_empty(&call.voice)),
        ("instructions", non_empty(&call.instructions)),
        (
            "turn latency",
            (call.turn_latency_p50_ms > 0).then(|| {
                format!(
                    "p50 {} ms, p95 {} ms (first agent audio sent)",
                    call.turn_latency_p50_ms, call.turn_latency_p95_ms
                )
            }),
        ),
        ("events", Some(call.event_count.to_string())),
        ("recording", call.recording.as_ref().map(recording_text)),
        ("recording url", non_empty(&call.recording_url)),
        ("webhooks", webhooks_text(&call.webhooks)),
        ("transfer", call.transfer.as_ref().map(transfer_text)),
        (
            "transfer to",
            (!call.transfer_targets.is_empty()).then(|| {
                call.transfer_targets
                    .iter()
                    .map(|t| format!("{} ({})", sanitize(&t.number), sanitize(&t.description)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
        ),
        ("metadata", (!metadata.is_empty()).then(|| metadata.join(", "))),
    ];
    rows.into_iter()
        .filter_map(|(name, value)| value.map(|v| format!("{name:<15}{v}")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The outcome webhook deliveries in one line: counts by state, and the
/// last error of the latest one not delivered.
fn webhooks_text(deliveries: &[pb::WebhookDelivery]) -> Option<String> {
    if deliveries.is_empty() {
        return None;
    }
    let count = |s: pb::WebhookDeliveryState| deliveries.iter().filter(|d| d.state() == s).count();
    let mut text = format!(
        "{} delivered, {} pending, {} dead",
        count(pb::WebhookDeliveryState::Delivered),
        count(pb::WebhookDeliveryState::Pending),
        count(pb::WebhookDeliveryState::Dead)
    );
    if let Some(d) = deliveries
        .iter()
        .rev()
        .find(|d| d.state() != pb::WebhookDeliveryState::Delivered && !d.last_error.is_empty())
    {
        text.push_str(&format!(
            " (last error: {}, {} attempts, {})",
            d.last_error, d.attempts, d.url
        ));
    }
    Some(text)
}

/// `transcode` / `passthrough` (the `AUDIO_MODE` spelling); an unknown value shows its number.
pub fn audio_mode_name(raw: i32) -> String {
    match pb::AudioMode::try_from(raw) {
        Ok(pb::AudioMode::Transcode) => "transcode".into(),
        Ok(pb::AudioMode::Passthrough) => "passthrough".into(),
        Ok(pb::AudioMode::Unspecified) => "not reported".into(),
        Err(_) => format!("audio-mode-{raw}"),
    }
}

/// What `info` prints: `name  value` lines like `get`, one line per backend.
pub fn server_info(info: &pb::GetServerInfoResponse) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("version", non_empty(&info.server_version).unwrap_or_else(|| "-".into())),
        (
            "telephony",
            if info.telephony_emulated {
                "emulated: the built-in Twilio emulator answers; no real phone is dialled".into()
            } else {
                "Twilio: real phones are dialled".into()
            },
        ),
    ];
    if info.backends.is_empty() {
        rows.push(("backends", "none".into()));
    }
    for (i, b) in info.backends.iter().enumerate() {
        let ai = if b.emulated { "emulated" } else { "real" };
        let mut text = format!("{:<12}  {ai:<8}", backend_name(b.backend));
        if !b.default_voice.is_empty() {
            text.push_str(&format!("  voice {}", sanitize(&b.default_voice)));
        }
        // The server's name for it, when it says more than the `--backend`
        // spelling (always, for a backend newer than this build).
        let display = sanitize(&b.display_name);
        if !display.is_empty() && !display.eq_ignore_ascii_case(&backend_name(b.backend)) {
            text.push_str(&format!("  ({display})"));
        }
        rows.push((if i == 0 { "backends" } else { "" }, text.trim_end().to_string()));
    }
    rows.push(("default", backend_name(info.default_backend)));
    rows.push((
        "greeting",
        non_empty(&info.default_greeting).unwrap_or_else(|| "none".into()),
    ));
    rows.push((
        "max duration",
        info.default_max_duration
            .as_ref()
            .map_or_else(|| "-".into(), |d| format!("{} s", d.seconds)),
    ));
    rows.push(("audio mode", audio_mode_name(info.audio_mode)));
    if let Some(l) = &info.limits {
        let secs = |d: &Option<prost_types::Duration>| d.as_ref().map_or_else(|| "?".into(), |d| d.seconds.to_string());
        let limits = [
            format!("to: {} to {} digits", l.min_to_digits, l.max_to_digits),
            format!("instructions: at most {} bytes", l.max_instructions_bytes),
            format!("voice: at most {} bytes", l.max_voice_bytes),
            format!("greeting: at most {} bytes", l.max_greeting_bytes),
            format!(
                "metadata: at most {} entries, keys 1 to {} bytes, values at most {} bytes",
                l.max_metadata_entries, l.max_metadata_key_bytes, l.max_metadata_value_bytes
            ),
            format!(
                "max duration: {} to {} s",
                secs(&l.shortest_max_duration),
                secs(&l.longest_max_duration)
            ),
        ];
        for (i, text) in limits.into_iter().enumerate() {
            rows.push((if i == 0 { "limits" } else { "" }, text));
        }
    }
    rows.into_iter()
        .map(|(name, value)| format!("{name:<15}{value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| sanitize(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Palette = Palette { color: false };
    const COLOUR: Palette = Palette { color: true };

    fn event(kind: Kind) -> pb::CallEvent {
        pb::CallEvent {
            sequence: 3,
            // 2023-11-14T22:13:20Z
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            kind: Some(kind),
        }
    }

    fn transcript(speaker: pb::Speaker, text: &str, interrupted: bool) -> pb::CallEvent {
        event(Kind::Transcript(pb::Transcript {
            speaker: speaker as i32,
            text: text.into(),
            interrupted,
        }))
    }

    #[test]
    fn a_migrated_line_says_where_the_call_moved() {
        let e = event(Kind::Migrated(pb::Migrated {
            from_replica: "r1".into(),
            to_replica: "r2".into(),
            gap_ms: 640,
        }));
        assert_eq!(
            event_line(&e, &Utc, PLAIN),
            "22:13:20  moved    to another bridge after 640 ms (replica r1 -> r2); the call goes on"
        );
    }

    #[test]
    fn status_line_has_the_documented_shape() {
        let e = event(Kind::Status(pb::StatusChanged {
            status: pb::CallStatus::Ringing as i32,
            detail: String::new(),
        }));
        assert_eq!(event_line(&e, &Utc, PLAIN), "22:13:20  status   RINGING");
        let e = event(Kind::Status(pb::StatusChanged {
            status: pb::CallStatus::Completed as i32,
            detail: "callee hung up".into(),
        }));
        assert_eq!(
            event_line(&e, &Utc, PLAIN),
            "22:13:20  status   COMPLETED (callee hung up)"
        );
    }

    #[test]
    fn speakers_are_told_apart() {
        let agent = event_line(&transcript(pb::Speaker::Agent, "Hi, this is Ada", false), &Utc, PLAIN);
        let callee = event_line(&transcript(pb::Speaker::Callee, "Hello?", false), &Utc, PLAIN);
        assert_eq!(agent, "22:13:20  agent    Hi, this is Ada");
        assert_eq!(callee, "22:13:20  callee   Hello?");
    }

    #[test]
    fn interrupted_agent_lines_are_marked() {
        let line = event_line(&transcript(pb::Speaker::Agent, "Let me expl", true), &Utc, PLAIN);
        assert_eq!(line, "22:13:20  agent    Let me expl [interrupted]");
    }

    #[test]
    fn colour_only_when_asked_and_columns_survive_it() {
        let plain = event_line(&transcript(pb::Speaker::Callee, "Yes", false), &Utc, PLAIN);
        let coloured = event_line(&transcript(pb::Speaker::Callee, "Yes", false), &Utc, COLOUR);
        assert!(!plain.contains('\x1b'));
        assert!(coloured.contains("\x1b[33mcallee  \x1b[0m"), "{coloured:?}");
        let agent = event_line(&transcript(pb::Speaker::Agent, "Yes", false), &Utc, COLOUR);
        assert!(agent.contains("\x1b[36magent   \x1b[0m"), "{agent:?}");
        let stripped = coloured.replace("\x1b[33m", "").replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn no_color_and_pipes_turn_colour_off() {
        use std::ffi::OsStr;
        assert!(Palette::detect(true, None).color);
        assert!(Palette::detect(true, Some(OsStr::new(""))).color);
        assert!(!Palette::detect(true, Some(OsStr::new("1"))).color);
        assert!(!Palette::detect(false, None).color);
    }

    #[test]
    fn other_kinds_have_their_own_labels() {
        let err = event(Kind::Error(pb::CallError {
            code: "ai_unavailable".into(),
            message: "the AI did not answer".into(),
        }));
        assert_eq!(
            event_line(&err, &Utc, PLAIN),
            "22:13:20  error    ai_unavailable: the AI did not answer"
        );
        let dtmf = event(Kind::Dtmf(pb::Dtmf { digit: "5".into() }));
        assert_eq!(event_line(&dtmf, &Utc, PLAIN), "22:13:20  dtmf     5");
        let turn = event(Kind::Turn(pb::TurnMetrics {
            turn_index: 0,
            first_audio_sent_ms: 420,
            first_audio_heard_ms: 610,
        }));
        assert_eq!(
            event_line(&turn, &Utc, PLAIN),
            "22:13:20  turn     #0 first audio sent after 420 ms, heard after 610 ms"
        );
        let notice = event(Kind::Notice(pb::Notice {
            code: "ai_reconnected".into(),
            message: "the AI connection was re-established".into(),
        }));
        assert_eq!(
            event_line(&notice, &Utc, PLAIN),
            "22:13:20  notice   ai_reconnected: the AI connection was re-established"
        );
        let transfer = event(Kind::Transfer(pb::Transfer {
            target: "+15550122".into(),
            state: pb::TransferState::Busy as i32,
            by: pb::TransferBy::Agent as i32,
            reason: "the line was busy".into(),
        }));
        assert_eq!(
            event_line(&transfer, &Utc, PLAIN),
            "22:13:20  transfer +15550122 busy (by the agent): the line was busy"
        );
        let unknown = pb::CallEvent {
            sequence: 9,
            time: None,
            kind: None,
        };
        assert!(event_line(&unknown, &Utc, PLAIN).starts_with("--------  event    #9 "));
    }

    #[test]
    fn server_text_cannot_inject_terminal_codes_or_lines() {
        let line = event_line(&transcript(pb::Speaker::Callee, "a\x1b[2Jb\nc", false), &Utc, PLAIN);
        assert_eq!(line, "22:13:20  callee   a\u{fffd}[2Jb c");
    }

    #[test]
    fn unknown_enum_values_still_print() {
        assert_eq!(status_name(99), "STATUS_99");
        assert_eq!(status_name(pb::CallStatus::NoAnswer as i32), "NO_ANSWER");
        assert_eq!(backend_name(pb::Backend::VoiceLive as i32), "voice-live");
    }

    fn record() -> pb::Call {
        pb::Call {
            call_id: "c1".into(),
            to: "+14155551212".into(),
            backend: pb::Backend::VoiceLive as i32,
            status: pb::CallStatus::Completed as i32,
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            emulated: true,
            end_reason: "callee hung up".into(),
            event_count: 12,
            metadata: [("b".to_string(), "2".to_string()), ("a".to_string(), "1".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn call_rows_are_one_line() {
        assert_eq!(
            call_row(&record(), &Utc),
            "c1  COMPLETED    2023-11-14 22:13:20  +14155551212  voice-live  emulated  callee hung up"
        );
    }

    #[test]
    fn server_info_lists_each_backend_on_its_own_line() {
        let info = pb::GetServerInfoResponse {
            backends: vec![
                pb::BackendInfo {
                    backend: pb::Backend::VoiceLive as i32,
                    emulated: true,
                    default_voice: "en-US-AriaNeural".into(),
                    ..Default::default()
                },
                pb::BackendInfo {
                    backend: pb::Backend::GptRealtime as i32,
                    emulated: true,
                    default_voice: "alloy".into(),
                    ..Default::default()
                },
            ],
            default_backend: pb::Backend::VoiceLive as i32,
            telephony_emulated: true,
            default_greeting: "Hello\nthere".into(),
            default_max_duration: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
            audio_mode: pb::AudioMode::Transcode as i32,
            server_version: "0.1.0".into(),
            limits: None,
        };
        assert_eq!(
            server_info(&info),
            [
                "version        0.1.0",
                "telephony      emulated: the built-in Twilio emulator answers; no real phone is dialled",
                "backends       voice-live    emulated  voice en-US-AriaNeural",
                "               gpt-realtime  emulated  voice alloy",
                "default        voice-live",
                "greeting       Hello there",
                "max duration   600 s",
                "audio mode     transcode",
            ]
            .join("\n")
        );
        let bare = server_info(&pb::GetServerInfoResponse::default());
        assert!(bare.contains("backends       none"), "{bare}");
        assert!(
            bare.contains("telephony      Twilio: real phones are dialled"),
            "{bare}"
        );
        assert!(bare.contains("greeting       none"), "{bare}");
    }

    #[test]
    fn server_info_shows_the_servers_names_and_limits() {
        let info = pb::GetServerInfoResponse {
            backends: vec![
                pb::BackendInfo {
                    backend: pb::Backend::VoiceLive as i32,
                    display_name: "Voice Live".into(),
                    ..Default::default()
                },
                pb::BackendInfo {
                    backend: pb::Backend::GptRealtime as i32,
                    display_name: "gpt-realtime".into(),
                    ..Default::default()
                },
                pb::BackendInfo {
                    backend: 7,
                    emulated: true,
                    display_name: "Speechy\x1b[2J".into(),
                    ..Default::default()
                },
            ],
            limits: Some(pb::PlaceCallLimits {
                min_to_digits: 8,
                max_to_digits: 15,
                max_instructions_bytes: 16384,
                max_voice_bytes: 128,
                max_greeting_bytes: 1000,
                max_metadata_entries: 32,
                max_metadata_key_bytes: 64,
                max_metadata_value_bytes: 512,
                shortest_max_duration: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
                longest_max_duration: Some(prost_types::Duration {
                    seconds: 14400,
                    nanos: 0,
                }),
            }),
            ..Default::default()
        };
        let text = server_info(&info);
        assert!(
            text.contains(
                "backends       voice-live    real      (Voice Live)\n\
                 \x20              gpt-realtime  real\n\
                 \x20              backend-7     emulated  (Speechy\u{fffd}[2J)\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "limits         to: 8 to 15 digits\n\
                 \x20              instructions: at most 16384 bytes\n\
                 \x20              voice: at most 128 bytes\n\
                 \x20              greeting: at most 1000 bytes\n\
                 \x20              metadata: at most 32 entries, keys 1 to 64 bytes, values at most 512 bytes\n\
                 \x20              max duration: 10 to 14400 s"
            ),
            "{text}"
        );
    }

    #[test]
    fn call_detail_leaves_out_empty_fields() {
        let text = call_detail(&record(), &Utc);
        assert!(text.contains("status         COMPLETED (callee hung up)"), "{text}");
        assert!(text.contains("created        2023-11-14 22:13:20.000 +00:00"), "{text}");
        assert!(text.contains("metadata       a=1, b=2"), "{text}");
        assert!(text.contains("emulated       yes"), "{text}");
        assert!(!text.contains("answered"), "{text}");
        assert!(!text.contains("turn latency"), "{text}");
        assert!(!text.contains("webhooks"), "{text}");
    }

    #[test]
    fn call_detail_sums_up_webhook_deliveries_with_the_last_error() {
        let delivery = |state: pb::WebhookDeliveryState, error: &str| pb::WebhookDelivery {
            state: state as i32,
            last_error: error.into(),
            attempts: 4,
            url: "https://h.example/hook".into(),
            ..Default::default()
        };
        let call = pb::Call {
            webhooks: vec![
                delivery(pb::WebhookDeliveryState::Delivered, ""),
                delivery(pb::WebhookDeliveryState::Dead, "the receiver answered HTTP 500"),
                delivery(pb::WebhookDeliveryState::Pending, ""),
            ],
            ..record()
        };
        let text = call_detail(&call, &Utc);
        assert!(
            text.contains(
                "webhooks       1 delivered, 1 pending, 1 dead (last error: the receiver answered HTTP 500, 4 attempts, https://h.example/hook)"
            ),
            "{text}"
        );
    }
}
