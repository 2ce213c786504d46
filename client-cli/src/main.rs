//! `voice-agent`: the command-line client of VoiceAgentService (generated
//! tonic client). Places calls, follows them live, hangs up, lists.
//!
//! Exit status of `watch` and `call --watch` (the call's outcome):
//! 0 completed, 3 failed, 4 busy, 5 no answer, 6 canceled, 7 the stream broke
//! before the call ended. Other errors: 1; usage errors: 2.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use voice_agent_proto::v1 as pb;
use voice_agent_proto::v1::voice_agent_service_client::VoiceAgentServiceClient;

/// Place outbound phone calls answered by a realtime AI, and follow them live.
#[derive(Parser)]
#[command(name = "voice-agent", version, about, after_help = EXIT_HELP)]
struct Cli {
    /// Server address.
    #[arg(
        long,
        global = true,
        env = "VOICE_AGENT_SERVER",
        default_value = "http://127.0.0.1:8000"
    )]
    server: String,
    /// API token (sent as 'authorization: Bearer <token>').
    #[arg(long, global = true, env = "API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

const EXIT_HELP: &str = "Exit status of watch / call --watch: 0 completed, 3 failed, 4 busy, 5 no answer, \
6 canceled, 7 stream broke before the end; 1 other errors, 2 usage errors.";

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    VoiceLive,
    GptRealtime,
}

#[derive(Subcommand)]
enum Command {
    /// Place a call.
    Call {
        /// Number to call, E.164 (e.g. +14155551212).
        number: String,
        /// Realtime AI backend (default: the server's).
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// Instructions for the agent (default: the server's SYSTEM_PROMPT).
        #[arg(long)]
        instructions: Option<String>,
        /// Voice of the agent.
        #[arg(long)]
        voice: Option<String>,
        /// Spoken before the AI joins ("" for none).
        #[arg(long)]
        greeting: Option<String>,
        /// Longest call, e.g. 90s, 5m, 1h.
        #[arg(long, value_parser = parse_duration)]
        max_duration: Option<Duration>,
        /// Labels echoed on the call record, key=value (repeatable).
        #[arg(long, value_parser = parse_kv)]
        metadata: Vec<(String, String)>,
        /// Follow the call until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Follow a call: status changes and transcript, live.
    Watch {
        /// The call id.
        call_id: String,
        /// Start after this event sequence.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Hang up a call.
    Hangup {
        /// The call id.
        call_id: String,
    },
    /// Show a call record.
    Get {
        /// The call id.
        call_id: String,
    },
    /// List calls, newest first.
    List {
        /// Calls per page (1-100).
        #[arg(long, default_value_t = 20)]
        page_size: u32,
        /// Token from the previous page.
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected e.g. 90s, 5m or 1h, got {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("unknown unit {unit:?}: use s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

#[derive(Clone)]
struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Client = VoiceAgentServiceClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

/// Exit codes of a watched call's outcome.
fn exit_code(status: Option<pb::CallStatus>) -> u8 {
    match status {
        Some(pb::CallStatus::Completed) => 0,
        Some(pb::CallStatus::Failed) => 3,
        Some(pb::CallStatus::Busy) => 4,
        Some(pb::CallStatus::NoAnswer) => 5,
        Some(pb::CallStatus::Canceled) => 6,
        _ => 7,
    }
}

fn short_status(s: i32) -> String {
    pb::CallStatus::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("CALL_STATUS_").to_string())
        .unwrap_or_else(|_| format!("STATUS_{s}"))
}

fn time_of(ts: &Option<prost_types::Timestamp>) -> String {
    ts.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.with_timezone(&chrono::Local).format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "--:--:--".into())
}

fn rfc3339(ts: &Option<prost_types::Timestamp>) -> Value {
    ts.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// One event as a line of text.
fn event_line(ev: &pb::CallEvent, style: &Style) -> String {
    use pb::call_event::Kind;
    let t = time_of(&ev.time);
    match &ev.kind {
        Some(Kind::Status(s)) => {
            let name = short_status(s.status);
            let detail = if s.detail.is_empty() {
                String::new()
            } else {
                format!("  ({})", s.detail)
            };
            format!(
                "{t}  {}  {}{detail}",
                style.paint("1", "status  "),
                style.paint("1", &name)
            )
        }
        Some(Kind::Transcript(tr)) => {
            let (who, code) = match pb::Speaker::try_from(tr.speaker) {
                Ok(pb::Speaker::Agent) => ("agent   ", "36"),
                Ok(pb::Speaker::Callee) => ("callee  ", "33"),
                _ => ("?       ", "0"),
            };
            let mark = if tr.interrupted { " [interrupted]" } else { "" };
            format!("{t}  {}  {}{mark}", style.paint(code, who), tr.text)
        }
        Some(Kind::Error(e)) => format!("{t}  {}  {}: {}", style.paint("31", "error   "), e.code, e.message),
        Some(Kind::Dtmf(d)) => format!("{t}  dtmf      {}", d.digit),
        Some(Kind::Turn(m)) => format!(
            "{t}  turn      #{}: first audio sent after {} ms, heard after {} ms",
            m.turn_index, m.first_audio_sent_ms, m.first_audio_heard_ms
        ),
        Some(Kind::Notice(n)) => format!("{t}  {}  {}", style.paint("2", "notice  "), n.message),
        None => format!("{t}  (empty event {})", ev.sequence),
    }
}

/// One event as proto3 JSON (as grpcurl prints it).
fn event_json(ev: &pb::CallEvent) -> Value {
    use pb::call_event::Kind;
    let mut v = json!({"sequence": ev.sequence.to_string(), "time": rfc3339(&ev.time)});
    let speaker = |s: i32| {
        pb::Speaker::try_from(s)
            .map(|s| s.as_str_name())
            .unwrap_or("SPEAKER_UNSPECIFIED")
    };
    let status = |s: i32| {
        pb::CallStatus::try_from(s)
            .map(|s| s.as_str_name())
            .unwrap_or("CALL_STATUS_UNSPECIFIED")
    };
    match &ev.kind {
        Some(Kind::Status(s)) => v["status"] = json!({"status": status(s.status), "detail": s.detail}),
        Some(Kind::Transcript(t)) => {
            v["transcript"] = json!({"speaker": speaker(t.speaker), "text": t.text, "interrupted": t.interrupted})
        }
        Some(Kind::Error(e)) => v["error"] = json!({"code": e.code, "message": e.message}),
        Some(Kind::Dtmf(d)) => v["dtmf"] = json!({"digit": d.digit}),
        Some(Kind::Turn(m)) => {
            v["turn"] = json!({"turnIndex": m.turn_index, "firstAudioSentMs": m.first_audio_sent_ms,
                               "firstAudioHeardMs": m.first_audio_heard_ms})
        }
        Some(Kind::Notice(n)) => v["notice"] = json!({"code": n.code, "message": n.message}),
        None => {}
    }
    v
}

fn call_json(c: &pb::Call) -> Value {
    json!({
        "callId": c.call_id, "to": c.to, "from": c.from,
        "backend": pb::Backend::try_from(c.backend).map(|b| b.as_str_name()).unwrap_or("BACKEND_UNSPECIFIED"),
        "status": pb::CallStatus::try_from(c.status).map(|s| s.as_str_name()).unwrap_or("CALL_STATUS_UNSPECIFIED"),
        "providerCallId": c.provider_call_id, "metadata": c.metadata, "createdAt": rfc3339(&c.created_at),
        "answeredAt": rfc3339(&c.answered_at), "endedAt": rfc3339(&c.ended_at), "emulated": c.emulated,
        "endReason": c.end_reason, "durationSeconds": c.duration_seconds,
        "turnLatencyP50Ms": c.turn_latency_p50_ms, "turnLatencyP95Ms": c.turn_latency_p95_ms,
        "eventCount": c.event_count.to_string(),
    })
}

fn call_text(c: &pb::Call) -> String {
    let mut s = format!(
        "{}  {}  {}  to {}{}",
        c.call_id,
        short_status(c.status),
        time_of(&c.created_at),
        c.to,
        if c.emulated { "  (emulated)" } else { "" }
    );
    if !c.end_reason.is_empty() {
        s.push_str(&format!("  — {}", c.end_reason));
    }
    if c.turn_latency_p50_ms > 0 {
        s.push_str(&format!(
            "  turn p50 {} ms p95 {} ms",
            c.turn_latency_p50_ms, c.turn_latency_p95_ms
        ));
    }
    s
}

async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let channel = Channel::from_shared(cli.server.clone())
        .map_err(|e| anyhow::anyhow!("--server {:?} is not a valid URL: {e}", cli.server))?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", cli.server))?;
    let auth = match &cli.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| anyhow::anyhow!("the token contains characters not allowed in a header"))?,
        ),
        None => None,
    };
    Ok(VoiceAgentServiceClient::with_interceptor(channel, Auth(auth)))
}

/// Follows a call to its end, reconnecting (resuming after the last sequence)
/// if the stream drops. Returns the exit code of the outcome.
async fn watch(client: &mut Client, call_id: &str, after: u64, json_out: bool) -> anyhow::Result<u8> {
    let style = Style {
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut last = after;
    let mut final_status = None;
    let mut failures = 0;
    loop {
        let stream = client
            .watch_call(pb::WatchCallRequest {
                call_id: call_id.to_string(),
                after_sequence: last,
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(e) if e.code() == tonic::Code::Unavailable && failures < 5 => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(200 * failures)).await;
                continue;
            }
            Err(e) => return Err(status_error(e)),
        };
        loop {
            match stream.message().await {
                Ok(Some(msg)) => {
                    let Some(ev) = msg.event else { continue };
                    if ev.sequence <= last {
                        continue;
                    }
                    last = ev.sequence;
                    failures = 0;
                    let line = if json_out {
                        event_json(&ev).to_string()
                    } else {
                        event_line(&ev, &style)
                    };
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                    if let Some(pb::call_event::Kind::Status(s)) = &ev.kind {
                        final_status = pb::CallStatus::try_from(s.status).ok();
                    }
                }
                Ok(None) => return Ok(exit_code(final_status)),
                Err(e) if failures < 5 => {
                    failures += 1;
                    eprintln!("stream interrupted ({}); resuming after event {last}", e.message());
                    tokio::time::sleep(Duration::from_millis(200 * failures)).await;
                    break;
                }
                Err(e) => return Err(status_error(e)),
            }
        }
    }
}

fn status_error(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", code_name(e.code()), e.message())
}

fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let mut client = connect(&cli).await?;
    match &cli.command {
        Command::Call {
            number,
            backend,
            instructions,
            voice,
            greeting,
            max_duration,
            metadata,
            watch: follow,
        } => {
            let req = pb::PlaceCallRequest {
                to: number.clone(),
                backend: match backend {
                    None => pb::Backend::Unspecified,
                    Some(BackendArg::VoiceLive) => pb::Backend::VoiceLive,
                    Some(BackendArg::GptRealtime) => pb::Backend::GptRealtime,
                } as i32,
                instructions: instructions.clone().unwrap_or_default(),
                voice: voice.clone().unwrap_or_default(),
                greeting: greeting.clone(),
                metadata: metadata.iter().cloned().collect(),
                max_duration: max_duration.map(|d| prost_types::Duration {
                    seconds: d.as_secs() as i64,
                    nanos: 0,
                }),
            };
            let placed = client.place_call(req).await.map_err(status_error)?.into_inner();
            if cli.json {
                println!(
                    "{}",
                    json!({"callId": placed.call_id, "providerCallId": placed.provider_call_id,
                           "status": short_status(placed.status), "emulated": placed.emulated})
                );
            } else {
                println!("call {} placed ({})", placed.call_id, short_status(placed.status));
                if placed.emulated {
                    println!("emulated call: no real phone is dialled");
                }
            }
            if *follow {
                return watch(&mut client, &placed.call_id, 0, cli.json).await;
            }
            Ok(0)
        }
        Command::Watch { call_id, after } => watch(&mut client, call_id, *after, cli.json).await,
        Command::Hangup { call_id } => {
            let resp = client
                .hang_up_call(pb::HangUpCallRequest {
                    call_id: call_id.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if let Some(c) = resp.call {
                println!(
                    "{}",
                    if cli.json {
                        call_json(&c).to_string()
                    } else {
                        call_text(&c)
                    }
                );
            }
            Ok(0)
        }
        Command::Get { call_id } => {
            let resp = client
                .get_call(pb::GetCallRequest {
                    call_id: call_id.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if let Some(c) = resp.call {
                println!(
                    "{}",
                    if cli.json {
                        call_json(&c).to_string()
                    } else {
                        call_text(&c)
                    }
                );
            }
            Ok(0)
        }
        Command::List { page_size, page_token } => {
            let resp = client
                .list_calls(pb::ListCallsRequest {
                    page_size: *page_size,
                    page_token: page_token.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            for c in &resp.calls {
                println!(
                    "{}",
                    if cli.json {
                        call_json(c).to_string()
                    } else {
                        call_text(c)
                    }
                );
            }
            if !resp.next_page_token.is_empty() && !cli.json {
                println!("more: --page-token {}", resp.next_page_token);
            }
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: pb::call_event::Kind) -> pb::CallEvent {
        pb::CallEvent {
            sequence: 7,
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            kind: Some(kind),
        }
    }

    #[test]
    fn outcomes_map_to_exit_codes() {
        assert_eq!(exit_code(Some(pb::CallStatus::Completed)), 0);
        assert_eq!(exit_code(Some(pb::CallStatus::Failed)), 3);
        assert_eq!(exit_code(Some(pb::CallStatus::Busy)), 4);
        assert_eq!(exit_code(Some(pb::CallStatus::NoAnswer)), 5);
        assert_eq!(exit_code(Some(pb::CallStatus::Canceled)), 6);
        assert_eq!(exit_code(Some(pb::CallStatus::InProgress)), 7);
        assert_eq!(exit_code(None), 7);
    }

    #[test]
    fn lines_tell_speakers_apart_and_color_only_on_request() {
        let plain = Style { color: false };
        let agent = event_line(
            &ev(pb::call_event::Kind::Transcript(pb::Transcript {
                speaker: pb::Speaker::Agent as i32,
                text: "Hi".into(),
                interrupted: true,
            })),
            &plain,
        );
        assert!(agent.contains("agent") && agent.contains("Hi") && agent.contains("[interrupted]"));
        assert!(!agent.contains('\x1b'));
        let callee = event_line(
            &ev(pb::call_event::Kind::Transcript(pb::Transcript {
                speaker: pb::Speaker::Callee as i32,
                text: "Yes".into(),
                interrupted: false,
            })),
            &Style { color: true },
        );
        assert!(callee.contains("callee") && callee.contains('\x1b'));
        let status = event_line(
            &ev(pb::call_event::Kind::Status(pb::StatusChanged {
                status: pb::CallStatus::Busy as i32,
                detail: "the line was busy".into(),
            })),
            &plain,
        );
        assert!(status.contains("BUSY") && status.contains("the line was busy"));
    }

    #[test]
    fn json_uses_proto3_names() {
        let v = event_json(&ev(pb::call_event::Kind::Status(pb::StatusChanged {
            status: pb::CallStatus::Ringing as i32,
            detail: String::new(),
        })));
        assert_eq!(v["sequence"], "7");
        assert_eq!(v["status"]["status"], "CALL_STATUS_RINGING");
        assert!(v["time"].as_str().unwrap().starts_with("2023-11-14T22:13:20"));
    }

    #[test]
    fn durations_and_metadata_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_kv("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_kv("nokey").is_err());
    }
}
