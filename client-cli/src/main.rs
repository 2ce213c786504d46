//! `voice-agent`: the command-line client of `voiceagent.v1.VoiceAgentService`
//! (the generated tonic client). Places calls, follows them live, hangs up,
//! shows and lists call records, and shows what the server offers.
//!
//! Layout: `args` parses values, `client` builds the connection (auth
//! interceptor, gRPC error text), `watch` follows a call with reconnects,
//! `render` and `json` turn records into text lines or proto3 JSON, and
//! `outcome` maps a call's end to the exit status. This file wires them up.

mod args;
mod client;
mod json;
mod outcome;
mod render;
mod tools;
mod watch;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use voice_agent_proto::v1 as pb;

use crate::client::{Client, describe_details, describe_status};
use crate::outcome::{EXIT_ERROR, EXIT_HELP, EXIT_OK, EXIT_USAGE, Outcome};
use crate::render::Palette;
use crate::watch::WatchError;

/// Place outbound phone calls answered by a realtime speech-to-speech AI, and follow them live.
#[derive(Debug, Parser)]
#[command(name = "voice-agent", version, after_help = EXIT_HELP)]
struct Cli {
    /// Server URL (http:// is assumed for a bare host:port).
    #[arg(
        long,
        global = true,
        env = "VOICE_AGENT_SERVER",
        default_value = args::DEFAULT_SERVER,
        value_parser = args::parse_server
    )]
    server: String,
    /// API token, sent as `authorization: Bearer <token>`; needed when the server runs with API_TOKEN.
    #[arg(long, global = true, env = "API_TOKEN", hide_env_values = true, value_parser = args::parse_token)]
    token: Option<String>,
    /// Print one JSON object per line (proto3 JSON field names, enums by name) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Place a call; prints its call id (and, with --watch, follows it).
    #[command(after_help = EXIT_HELP)]
    Call(CallArgs),
    /// Follow a call live: status changes, transcript, errors, key presses, turn latency.
    #[command(after_help = EXIT_HELP)]
    Watch {
        /// The call id.
        call_id: String,
        /// Show only events after this sequence number (resume an earlier watch).
        #[arg(long, default_value_t = 0, value_name = "N")]
        after: u64,
        #[command(flatten)]
        reconnect: Reconnect,
    },
    /// Hand a live call over to a person: the AI leaves and NUMBER is dialled (our number as caller id);
    /// prints the record. Follow the outcome with `watch`.
    Transfer {
        /// The call id.
        call_id: String,
        /// Number to transfer to, E.164.
        number: String,
    },
    /// Hang up a call (cancels it if it has not been answered); prints the record.
    Hangup {
        /// The call id.
        call_id: String,
    },
    /// Show one call record.
    Get {
        /// The call id.
        call_id: String,
    },
    /// List call records, newest first (filters combine with AND).
    List {
        /// Only calls in this status; repeat for several.
        #[arg(long = "status", value_enum, value_name = "STATUS")]
        statuses: Vec<StatusArg>,
        /// Only calls to exactly this number (E.164).
        #[arg(long, value_name = "NUMBER")]
        to: Option<String>,
        /// Only calls created at or after this time: RFC 3339 (2026-12-02T15:00:00Z) or a duration ago (90m, 2h).
        #[arg(long, value_parser = args::parse_time, value_name = "TIME")]
        since: Option<prost_types::Timestamp>,
        /// Only calls created before this time: RFC 3339 or a duration ago.
        #[arg(long, value_parser = args::parse_time, value_name = "TIME")]
        until: Option<prost_types::Timestamp>,
        /// Oldest first instead of newest first.
        #[arg(long)]
        oldest_first: bool,
        /// Calls per page, 1 to 100 (default: the server's, 20).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        page_size: Option<u32>,
        /// Start at this page (the token printed after the previous page).
        #[arg(long, default_value = "")]
        page_token: String,
        /// Fetch every page, not just one.
        #[arg(long)]
        all: bool,
    },
    /// Show what the server offers: its backends (and which are emulated), the call defaults, its version.
    Info,
}

#[derive(Debug, Args)]
struct CallArgs {
    /// Number to call, E.164: '+' then 8 to 15 digits, e.g. +14155551212.
    number: String,
    /// Realtime AI that answers (default: the server's DEFAULT_BACKEND).
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// System instructions for the agent (default: the server's SYSTEM_PROMPT).
    #[arg(long)]
    instructions: Option<String>,
    /// Voice of the agent (default: the server's).
    #[arg(long)]
    voice: Option<String>,
    /// Spoken before the AI joins; --greeting "" for none (default: the server's greeting).
    #[arg(long)]
    greeting: Option<String>,
    /// Longest the answered call may last, e.g. 90s, 5m, 1h30m (default: the server's MAX_CALL_DURATION).
    #[arg(long, value_parser = args::parse_duration, value_name = "DURATION")]
    max_duration: Option<Duration>,
    /// Label echoed on the call record, as key=value; repeat for more.
    #[arg(long, value_parser = args::parse_key_value, value_name = "KEY=VALUE")]
    metadata: Vec<(String, String)>,
    /// Idempotency key (e.g. a UUID): a retry with the same id returns the same call and never dials twice.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Record the call (a stereo WAV of what was heard, linked from `get`); --record=false to not record
    /// (default: the server's RECORD_CALLS).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    record: Option<bool>,
    /// Tools the agent may call: a JSON file with an array of {"name", "description", "parameters", "url"}.
    #[arg(long, value_name = "FILE")]
    tools: Option<std::path::PathBuf>,
    /// Answer each tool call with this shell command (sh -c): arguments on stdin, output from stdout;
    /// VOICE_AGENT_CALL_ID, VOICE_AGENT_TOOL_CALL_ID, VOICE_AGENT_TOOL_NAME set. Implies --watch.
    #[arg(long, value_name = "CMD")]
    tool_handler: Option<String>,
    /// How long a tool call waits for its answer, e.g. 10s (default: the server's, 10 s).
    #[arg(long, value_parser = args::parse_duration, value_name = "DURATION")]
    tool_timeout: Option<Duration>,
    /// Value of a {{NAME}} placeholder in the instructions, greeting or voicemail message; repeat for more.
    #[arg(long = "var", value_parser = args::parse_key_value, value_name = "NAME=VALUE")]
    variables: Vec<(String, String)>,
    /// A person the agent may hand the call to (offered as its transfer_call tool), as NUMBER=DESCRIPTION;
    /// repeat for more.
    #[arg(long = "transfer-target", value_parser = args::parse_key_value, value_name = "NUMBER=DESCRIPTION")]
    transfer_targets: Vec<(String, String)>,
    /// Answering-machine detection: hang up on a machine, or leave --voicemail-message after the beep.
    #[arg(long, value_enum)]
    voicemail: Option<VoicemailArg>,
    /// What the agent says on an answering machine (with --voicemail leave-message).
    #[arg(long, value_name = "TEXT", requires = "voicemail")]
    voicemail_message: Option<String>,
    /// Also POST this call's outcome webhooks (status changes, the end) here, signed with the server's
    /// WEBHOOK_SECRET; https://, or http:// to a loopback host.
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    /// Follow the call until it ends (exit status = its outcome, see below).
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    reconnect: Reconnect,
}

/// A voicemail policy, as `call --voicemail` takes it.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum VoicemailArg {
    /// No detection.
    Off,
    /// Hang up when a machine answers.
    HangUp,
    /// Leave --voicemail-message after the beep, then hang up.
    LeaveMessage,
}

#[derive(Debug, Clone, Copy, Args)]
struct Reconnect {
    /// How many times in a row to reconnect a dropped event stream (0 = never).
    #[arg(long, default_value_t = 5, value_name = "N")]
    reconnect_tries: u32,
}

/// A call status, as `list --status` takes it.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatusArg {
    Queued,
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    NoAnswer,
    Canceled,
    Failed,
}

impl From<StatusArg> for pb::CallStatus {
    fn from(arg: StatusArg) -> pb::CallStatus {
        match arg {
            StatusArg::Queued => pb::CallStatus::Queued,
            StatusArg::Initiated => pb::CallStatus::Initiated,
            StatusArg::Ringing => pb::CallStatus::Ringing,
            StatusArg::InProgress => pb::CallStatus::InProgress,
            StatusArg::Completed => pb::CallStatus::Completed,
            StatusArg::Busy => pb::CallStatus::Busy,
            StatusArg::NoAnswer => pb::CallStatus::NoAnswer,
            StatusArg::Canceled => pb::CallStatus::Canceled,
            StatusArg::Failed => pb::CallStatus::Failed,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendArg {
    /// Azure AI Voice Live.
    VoiceLive,
    /// gpt-realtime on Azure OpenAI or OpenAI.
    GptRealtime,
}

impl From<BackendArg> for pb::Backend {
    fn from(arg: BackendArg) -> pb::Backend {
        match arg {
            BackendArg::VoiceLive => pb::Backend::VoiceLive,
            BackendArg::GptRealtime => pb::Backend::GptRealtime,
        }
    }
}

/// Said whenever PlaceCall reports `emulated` (contract §4: the CLI says so plainly).
const EMULATED_NOTE: &str = "emulated call: no real phone is dialled";

/// Why a command failed; each prints as one line on stderr.
enum Failure {
    /// The server answered with an error status.
    Rpc(tonic::Status),
    /// A setting that clap could not check (exit status 2, like clap's own).
    Usage(String),
    /// Writing to stdout failed.
    Output(std::io::Error),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Failure {
        Failure::Rpc(status)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Output(e)
    }
}

impl From<json::JsonError> for Failure {
    fn from(e: json::JsonError) -> Failure {
        Failure::Output(e.into())
    }
}

impl From<WatchError> for Failure {
    fn from(e: WatchError) -> Failure {
        match e {
            WatchError::Refused(status) => Failure::Rpc(status),
            WatchError::Output(e) => Failure::Output(e),
        }
    }
}

/// How records are printed, chosen once from `--json` and the terminal.
#[derive(Clone, Copy)]
struct Output {
    json: bool,
    palette: Palette,
}

impl Output {
    fn event(&self, event: &pb::CallEvent) -> std::io::Result<()> {
        if self.json {
            line(&json::event_json(event)?.to_string())
        } else {
            line(&render::event_line(event, &chrono::Local, self.palette))
        }
    }

    fn call_row(&self, call: &pb::Call) -> std::io::Result<()> {
        if self.json {
            line(&json::call_json(call)?.to_string())
        } else {
            line(&render::call_row(call, &chrono::Local))
        }
    }
}

/// Writes one line and flushes it, so `watch | tee` shows events as they
/// happen. `println!` would panic on a closed pipe; this returns the error.
fn line(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

fn place_call_request(call: &CallArgs) -> pb::PlaceCallRequest {
    pb::PlaceCallRequest {
        to: call.number.clone(),
        backend: call.backend.map_or(pb::Backend::Unspecified, pb::Backend::from) as i32,
        instructions: call.instructions.clone().unwrap_or_default(),
        voice: call.voice.clone().unwrap_or_default(),
        greeting: call.greeting.clone(),
        metadata: call.metadata.iter().cloned().collect(),
        max_duration: call.max_duration.map(|d| prost_types::Duration {
            // Only absurd inputs exceed i64; saturate and let the server's
            // range check (10 s to 4 h) answer with its own message.
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        request_id: call.request_id.clone().unwrap_or_default(),
        record: call.record,
        tools: Vec::new(),
        tool_timeout: call.tool_timeout.map(|d| prost_types::Duration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        voicemail: call.voicemail.map(|v| pb::VoicemailPolicy {
            mode: match v {
                VoicemailArg::Off => pb::VoicemailMode::Off,
                VoicemailArg::HangUp => pb::VoicemailMode::HangUp,
                VoicemailArg::LeaveMessage => pb::VoicemailMode::LeaveMessage,
            } as i32,
            message: call.voicemail_message.clone().unwrap_or_default(),
        }),
        variables: call.variables.iter().cloned().collect(),
        webhook_url: call.webhook_url.clone(),
        transfer_targets: call
            .transfer_targets
            .iter()
            .map(|(number, description)| pb::TransferTarget {
                number: number.clone(),
                description: description.clone(),
            })
            .collect(),
    }
}

/// Follows a call and turns the outcome into the exit status.
async fn follow(client: &mut Client, call_id: &str, after: u64, tries: u32, out: Output) -> Result<u8, Failure> {
    let outcome = watch::follow(client, call_id, after, tries, |event| out.event(event)).await?;
    if let Outcome::StreamBroke { last_sequence, reason } = &outcome {
        eprintln!(
            "error: the event stream broke before the call ended ({reason}); the call may still be going on. \
             Resume with: voice-agent watch {call_id} --after {last_sequence}"
        );
    }
    Ok(outcome.exit_code())
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    let mut client = client::connect(&cli.server, cli.token.as_deref()).map_err(Failure::Usage)?;
    let out = Output {
        json: cli.json,
        palette: Palette::detect(std::io::stdout().is_terminal(), std::env::var_os("NO_COLOR").as_deref()),
    };
    match &cli.command {
        Command::Call(call) => {
            let mut request = place_call_request(call);
            if let Some(path) = &call.tools {
                request.tools = tools::read_tools(path).map_err(Failure::Usage)?;
            }
            let placed = client.place_call(request).await?.into_inner();
            // The id comes first and alone on its line, so scripts can take
            // `head -n1` (or use --json, where stdout stays pure JSON).
            if out.json {
                line(&json::placed_json(&placed)?.to_string())?;
                if placed.emulated {
                    eprintln!("{EMULATED_NOTE}");
                }
            } else {
                line(&placed.call_id)?;
                if placed.emulated {
                    line(EMULATED_NOTE)?;
                }
            }
            if let Some(cmd) = &call.tool_handler {
                // Each tool call the server does not answer itself goes to the handler.
                let (handler_client, call_id) = (client.clone(), placed.call_id.clone());
                let cmd = cmd.clone();
                let outcome = watch::follow(
                    &mut client,
                    &placed.call_id,
                    0,
                    call.reconnect.reconnect_tries,
                    |event| {
                        if let Some(pb::call_event::Kind::ToolCall(tool_call)) = &event.kind
                            && !tool_call.answered_by_url
                        {
                            tools::spawn_handler(
                                handler_client.clone(),
                                cmd.clone(),
                                call_id.clone(),
                                tool_call.clone(),
                            );
                        }
                        out.event(event)
                    },
                )
                .await?;
                return Ok(outcome.exit_code());
            }
            if call.watch {
                return follow(&mut client, &placed.call_id, 0, call.reconnect.reconnect_tries, out).await;
            }
            Ok(EXIT_OK)
        }
        Command::Watch {
            call_id,
            after,
            reconnect,
        } => follow(&mut client, call_id, *after, reconnect.reconnect_tries, out).await,
        Command::Transfer { call_id, number } => {
            let request = pb::TransferCallRequest {
                call_id: call_id.clone(),
                number: number.clone(),
            };
            if let Some(call) = client.transfer_call(request).await?.into_inner().call {
                out.call_row(&call)?;
            }
            Ok(EXIT_OK)
        }
        Command::Hangup { call_id } => {
            let request = pb::HangUpCallRequest {
                call_id: call_id.clone(),
            };
            if let Some(call) = client.hang_up_call(request).await?.into_inner().call {
                out.call_row(&call)?;
            }
            Ok(EXIT_OK)
        }
        Command::Get { call_id } => {
            let request = pb::GetCallRequest {
                call_id: call_id.clone(),
            };
            if let Some(call) = client.get_call(request).await?.into_inner().call {
                if out.json {
                    line(&json::call_json(&call)?.to_string())?;
                } else {
                    line(&render::call_detail(&call, &chrono::Local))?;
                }
            }
            Ok(EXIT_OK)
        }
        Command::List {
            statuses,
            to,
            since,
            until,
            oldest_first,
            page_size,
            page_token,
            all,
        } => {
            let mut token = page_token.clone();
            loop {
                let request = pb::ListCallsRequest {
                    page_size: page_size.unwrap_or(0),
                    page_token: token,
                    statuses: statuses.iter().map(|s| pb::CallStatus::from(*s) as i32).collect(),
                    to: to.clone().unwrap_or_default(),
                    created_after: *since,
                    created_before: *until,
                    order: if *oldest_first {
                        pb::ListCallsOrder::OldestFirst
                    } else {
                        pb::ListCallsOrder::Unspecified
                    } as i32,
                };
                let page = client.list_calls(request).await?.into_inner();
                for call in &page.calls {
                    out.call_row(call)?;
                }
                if page.next_page_token.is_empty() {
                    return Ok(EXIT_OK);
                }
                if !*all {
                    // stderr, so stdout holds only records (one per line).
                    eprintln!("more calls: --page-token {}", page.next_page_token);
                    return Ok(EXIT_OK);
                }
                token = page.next_page_token;
            }
        }
        Command::Info => {
            let info = client.get_server_info(pb::GetServerInfoRequest {}).await?.into_inner();
            if out.json {
                line(&json::server_info_json(&info)?.to_string())?;
            } else {
                line(&render::server_info(&info))?;
            }
            Ok(EXIT_OK)
        }
    }
}

fn main() -> ExitCode {
    // Exits with 2 and clap's message on a usage error.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Rpc(status)) => {
            eprintln!("error: {}", describe_status(&status));
            for detail in describe_details(&status) {
                eprintln!("  {detail}");
            }
            ExitCode::from(EXIT_ERROR)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        // The reader went away (`voice-agent watch … | head`): nothing to say.
        Err(Failure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(EXIT_ERROR),
        Err(Failure::Output(e)) => {
            eprintln!("error: cannot write the output: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("voice-agent").chain(args.iter().copied()))
    }

    #[test]
    fn transfer_targets_and_the_transfer_command_parse() {
        let cli = parse(&[
            "call",
            "+14155551212",
            "--transfer-target",
            "+15550120=billing desk: refunds",
            "--transfer-target",
            "+15550122=sales",
        ])
        .unwrap();
        let Command::Call(call) = cli.command else {
            panic!("not a call")
        };
        let req = place_call_request(&call);
        assert_eq!(
            req.transfer_targets
                .iter()
                .map(|t| (t.number.as_str(), t.description.as_str()))
                .collect::<Vec<_>>(),
            [("+15550120", "billing desk: refunds"), ("+15550122", "sales")]
        );
        let cli = parse(&["transfer", "call_1", "+15550120"]).unwrap();
        assert!(matches!(cli.command, Command::Transfer { ref number, .. } if number == "+15550120"));
        assert!(parse(&["transfer", "call_1"]).is_err(), "the number is required");
    }

    #[test]
    fn call_flags_become_the_request() {
        let cli = parse(&[
            "call",
            "+14155551212",
            "--backend",
            "gpt-realtime",
            "--greeting",
            "",
            "--max-duration",
            "5m",
            "--metadata",
            "team=ops",
            "--metadata",
            "ticket=42",
            "--watch",
        ])
        .unwrap();
        let Command::Call(call) = cli.command else {
            panic!("not a call: {:?}", cli.command)
        };
        assert!(call.watch);
        let req = place_call_request(&call);
        assert_eq!(req.to, "+14155551212");
        assert_eq!(req.backend, pb::Backend::GptRealtime as i32);
        assert_eq!(
            req.greeting.as_deref(),
            Some(""),
            "an empty greeting means none, not the default"
        );
        assert_eq!(req.max_duration.map(|d| d.seconds), Some(300));
        assert_eq!(req.metadata.get("ticket").map(String::as_str), Some("42"));
        assert_eq!(req.metadata.len(), 2);
    }

    #[test]
    fn record_is_a_flag_or_an_explicit_false() {
        for (args, want) in [
            (&["call", "--record", "+14155551212"][..], Some(true)),
            (&["call", "+14155551212", "--record=false"][..], Some(false)),
            (&["call", "--record=true", "+14155551212"][..], Some(true)),
        ] {
            let Command::Call(call) = parse(args).unwrap().command else {
                panic!("not a call")
            };
            assert_eq!(place_call_request(&call).record, want, "{args:?}");
            assert_eq!(call.number, "+14155551212");
        }
    }

    #[test]
    fn unset_options_leave_the_server_defaults() {
        let cli = parse(&["call", "+14155551212"]).unwrap();
        let Command::Call(call) = cli.command else {
            panic!("not a call")
        };
        let req = place_call_request(&call);
        assert_eq!(req.backend, pb::Backend::Unspecified as i32);
        assert_eq!(req.greeting, None);
        assert_eq!(req.max_duration, None);
        assert_eq!(req.record, None, "RECORD_CALLS decides");
        assert!(req.instructions.is_empty() && req.voice.is_empty());
    }

    #[test]
    fn list_flags_become_the_filters() {
        let cli = parse(&[
            "list",
            "--status",
            "busy",
            "--status",
            "no-answer",
            "--to",
            "+15550100",
            "--since",
            "2026-12-02T15:00:00Z",
            "--oldest-first",
        ])
        .unwrap();
        let Command::List {
            statuses,
            to,
            since,
            until,
            oldest_first,
            ..
        } = cli.command
        else {
            panic!("not a list")
        };
        let statuses: Vec<pb::CallStatus> = statuses.into_iter().map(pb::CallStatus::from).collect();
        assert_eq!(statuses, [pb::CallStatus::Busy, pb::CallStatus::NoAnswer]);
        assert_eq!(to.as_deref(), Some("+15550100"));
        assert_eq!(since.map(|t| t.seconds), Some(1_796_223_600));
        assert!(until.is_none() && oldest_first);
        assert!(parse(&["list", "--status", "nope"]).is_err());
        assert!(parse(&["list", "--since", "yesterday"]).is_err());
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = parse(&["watch", "c1", "--after", "12", "--json", "--server", "localhost:9000"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.server, "http://localhost:9000");
        assert!(matches!(cli.command, Command::Watch { after: 12, .. }));
    }

    #[test]
    fn usage_errors_are_reported_by_clap() {
        for args in [
            &["call"][..],
            &["call", "+1", "--backend", "nope"],
            &["call", "+1", "--max-duration", "5x"],
            &["call", "+1", "--metadata", "novalue"],
            &["list", "--page-size", "0"],
            &["list", "--page-size", "101"],
            &["watch"],
        ] {
            let err = parse(args).expect_err(&format!("{args:?} was accepted"));
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn help_documents_the_exit_statuses() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("NO_ANSWER"), "{help}");
        let mut cmd = Cli::command();
        let watch = cmd.find_subcommand_mut("watch").map(|c| c.render_help().to_string());
        assert!(watch.is_some_and(|h| h.contains("stream broke")));
    }
}
