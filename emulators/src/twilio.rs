//! A Twilio emulator that speaks Twilio's real wire protocols over real
//! sockets (protocols.md §1–§5): the REST Calls API, signed status callbacks
//! and TwiML requests, and a scripted callee on the Media Streams WebSocket.
//! The product uses it when no Twilio credentials are configured; tests use it
//! to run every production code path.
//!
//! # REST API (§1)
//!
//! * `POST /2010-04-01/Accounts/{AccountSid}/Calls.json` — create (201 + Call
//!   resource, status `queued`). Basic auth (`AccountSid:AuthToken`) is
//!   checked (401, code 20003); `To`, `From` and `Url` or `Twiml` are required
//!   (21201, 21213, 21205); `To` must look like E.164 (or `client:`/`sip:`),
//!   else 21211.
//! * `POST …/Calls/{Sid}.json` — update: `Status=canceled` cancels a queued or
//!   ringing call and does nothing to an answered one; `Status=completed` hangs
//!   up (a not yet answered call ends `canceled`); `Twiml=` or `Url=` replaces
//!   what the call does (a running stream gets `stop` and is closed first);
//!   redirecting an ended call is 400 code 21220. Updating the status of an
//!   ended call returns it unchanged.
//! * `GET …/Calls/{Sid}.json` — fetch. Unknown sid or path: 404 code 20404.
//!
//! Errors use the 2010 API's JSON shape (§1.5):
//! `{"code":…,"message":…,"more_info":"https://www.twilio.com/docs/errors/…","status":…}`.
//!
//! # Scenarios, chosen by the `To` number
//!
//! | `To`           | What happens |
//! |----------------|--------------|
//! | `+15005550001` | create answers 400, code 21211 (invalid `To`) |
//! | `+15005550500` | create answers 500, code 20500 |
//! | `+15005550408` | create never answers (until the client gives up) |
//! | `+15550102`    | initiated, ringing, then `busy` (CallDuration=0) |
//! | `+15550103`    | rings ~2 s, then `no-answer` |
//! | `+15550104`    | initiated, ringing, then `failed` |
//! | `+15550105`    | answers; says line 1; hangs up ~0.8 s into the agent's reply (`completed`) |
//! | `+15550106`    | answers; presses DTMF `1`, `2`, `#` when it first gets the floor, then converses |
//! | `+15550107`    | rings for the request's `Timeout` seconds, then `no-answer` |
//! | `+15550100`, `+15550108` | answers; barges in: starts line 2 ~1.5 s into the agent's reply to line 1 (the README demo) |
//! | `+15550110`    | an answering machine answers: greeting (~5 s), beep, then silence while it records |
//! | `+15550120`    | answers (as a `<Dial>` target: talks for `dial_talk`, ~3 s, then hangs up: `DialCallStatus=completed`) |
//! | `+15550122`    | like `+15550102`: busy (as a `<Dial>` target: `DialCallStatus=busy`) |
//! | `+15550123`    | like `+15550103`: rings ~2 s, no answer (as a `<Dial>` target: `DialCallStatus=no-answer`) |
//! | anything else  | answers after `ring_time` and converses (the three [`CALLEE_LINES`]) |
//!
//! More numbers can be mapped with [`TwilioEmulatorConfig::numbers`].
//!
//! A `<Dial>` (a transfer redirected into the call) dials its number with
//! the same table: busy, no-answer (ringing ~2 s, or the `<Dial timeout>` for
//! `+15550107`), failed, or answered; an answering target talks for
//! `dial_talk` and hangs up. Then the `action` URL is requested with
//! `DialCallStatus` (`completed`, `busy`, `no-answer`, `failed`, or
//! `canceled` when a REST update interrupted the dial), `DialCallSid` and
//! `DialCallDuration`, and its TwiML runs; without an `action` the document
//! goes on. A redirect (REST update) during `<Connect><Stream>` closes the
//! stream without requesting the `<Connect action>`: the new TwiML replaces
//! the document.
//!
//! # A call
//!
//! Status callbacks (§2.1) go to `StatusCallback`, signed (§3), one request
//! at a time in `SequenceNumber` order from 0, for the requested
//! `StatusCallbackEvent`s (only the terminal one if none): `initiated`,
//! `ringing`, `in-progress`, then the terminal status with `CallDuration`
//! (and `Duration` in minutes on `completed`). When answered, the TwiML is
//! fetched from `Url` (signed, §2.2) or taken from `Twiml`, and run: `<Say>`
//! takes as long as the text at `words_per_minute`; `<Pause>`; `<Hangup/>`;
//! `<Connect><Stream>` opens the media WebSocket with a signed upgrade (§3.3,
//! `ws://` is accepted too, for local servers) and sends `connected`, `start`
//! (the `<Parameter>`s as `customParameters`), then one 20 ms, 160-byte μ-law
//! `media` frame every 20 ms in real time (silence is `0xFF`). When our server
//! closes the socket the TwiML continues after `</Connect>`; with nothing
//! left the call completes. `TimeLimit` is enforced from the answer.
//!
//! Agent audio is played at 8 bytes/ms; a mark is echoed once the audio sent
//! before it has played (at once when nothing is buffered); `clear` drops
//! buffered audio and echoes pending marks in order (§5.3).
//!
//! # Answering-machine detection
//!
//! With `MachineDetection` (`Enable` or `DetectMessageEnd`) and
//! `AsyncAmd=true` the stream starts at once and the result is posted,
//! signed, to `AsyncAmdStatusCallback` (§2.3: `AccountSid`, `CallSid`,
//! `AnsweredBy`, `MachineDetectionDuration`). A person: `human` once its
//! first line is followed by 1.2 s of quiet (Twilio's speech-end
//! threshold), `unknown` after 5 s of initial silence. A machine:
//! `machine_start` once its greeting has run 2.4 s (Twilio's speech
//! threshold) with `Enable`; `machine_end_beep` when its beep ends with
//! `DetectMessageEnd`. Synchronous AMD is refused (the product never uses it).
//!
//! # The callee
//!
//! It speaks when it has the floor: our side has nothing buffered and no
//! agent audio arrived or played for `reply_gap` (~700 ms). Its first line
//! needs no prompt; each later line waits for an agent reply first. After
//! its last line it stays until our server hangs up or closes the stream;
//! after `idle_hangup` with nothing happening it hangs up itself.

mod api;
mod call;
mod callee;
pub mod report;
pub mod twiml;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub use report::{
    CalleeUtterance, DialReport, EmulatedCallReport, EndCause, HeardAudio, MarkEcho, PostedCallback, ServerMessage,
    StreamEnd, StreamReport, TwimlFetch,
};
use voice_agent_wire::twilio::rest::CallResource;

/// What the callee says, in order. The realtime-AI emulator "transcribes"
/// the callee's n-th utterance as line n, so these must match the clips.
pub const CALLEE_LINES: [&str; 3] = [
    "Hello? Yes, this is Sam speaking.",
    "I'd like to move my appointment to Friday afternoon.",
    "Three o'clock works. Thank you, goodbye.",
];

/// The lines as μ-law 8 kHz mono (made by `assets/speech/generate_callee.sh`).
pub const CALLEE_CLIPS: [&[u8]; 3] = [
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/speech/callee_1.ulaw")),
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/speech/callee_2.ulaw")),
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/speech/callee_3.ulaw")),
];

/// How the callee of an answered call behaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScenarioOpts {
    /// Hang up shortly into the agent's reply to line 1 (instead of line 2).
    pub hang_up_after_first_line: bool,
    /// DTMF digits pressed when the callee first gets the floor, before line 1.
    pub dtmf: String,
    /// Start line 2 while the agent is still replying to line 1, `barge_in_after` into its reply.
    pub barge_in: bool,
    /// After line 1, stop reading the media stream, as a stuck Twilio would:
    /// our server's writes back up in the socket buffers. The callee then
    /// only sends silence, and never hangs up by itself.
    pub stall_after_first_line: bool,
    /// An answering machine picks up: it plays its greeting at once (the
    /// callee's first two lines, standing in for "leave a message…"), then
    /// a beep, then records in silence; it never speaks again.
    pub machine: bool,
}

/// What happens to a call, chosen by its `To` number (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Create answers 400, code 21211.
    InvalidNumber,
    /// Create answers 500, code 20500.
    ServerError,
    /// Create never answers.
    NoResponse,
    /// Rings, then busy.
    Busy,
    /// Rings about 2 s, then no-answer.
    NoAnswer,
    /// Rings, then failed.
    Failed,
    /// Rings for the request's `Timeout`, then no-answer.
    NoAnswerAtTimeout,
    /// Answers and converses.
    Answer(ScenarioOpts),
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::Answer(ScenarioOpts::default())
    }
}

impl Scenario {
    /// The built-in table of the module doc.
    pub fn for_number(to: &str) -> Scenario {
        match to {
            "+15005550001" => Scenario::InvalidNumber,
            "+15005550500" => Scenario::ServerError,
            "+15005550408" => Scenario::NoResponse,
            "+15550102" | "+15550122" => Scenario::Busy,
            "+15550103" | "+15550123" => Scenario::NoAnswer,
            "+15550104" => Scenario::Failed,
            "+15550105" => Scenario::Answer(ScenarioOpts {
                hang_up_after_first_line: true,
                ..ScenarioOpts::default()
            }),
            "+15550106" => Scenario::Answer(ScenarioOpts {
                dtmf: "12#".into(),
                ..ScenarioOpts::default()
            }),
            "+15550107" => Scenario::NoAnswerAtTimeout,
            "+15550110" => Scenario::Answer(ScenarioOpts {
                machine: true,
                ..ScenarioOpts::default()
            }),
            // The README's demo number shows the whole repertoire: a barge-in
            // on the agent's first reply, and the agent's end_call at the end.
            "+15550100" | "+15550108" => Scenario::Answer(ScenarioOpts {
                barge_in: true,
                ..ScenarioOpts::default()
            }),
            _ => Scenario::default(),
        }
    }
}

/// Settings of the emulator. `Default` makes a random account and token.
#[derive(Clone, Debug)]
pub struct TwilioEmulatorConfig {
    /// `AC` + 32 hex digits.
    pub account_sid: String,
    /// Signs the webhooks and authenticates the REST API.
    pub auth_token: String,
    /// Extra `To` numbers and their scenarios (checked before the built-in table).
    pub numbers: HashMap<String, Scenario>,
    /// How long an answering callee's phone rings.
    pub ring_time: Duration,
    /// Quiet from the agent the callee waits for before speaking.
    pub reply_gap: Duration,
    /// With nothing happening this long, the callee hangs up.
    pub idle_hangup: Duration,
    /// How far into the agent's reply a barging-in callee starts talking.
    pub barge_in_after: Duration,
    /// Speed of `<Say>`.
    pub words_per_minute: u32,
    /// How long an answering `<Dial>` target talks before it hangs up.
    pub dial_talk: Duration,
    /// Timeout of each webhook request and of the WebSocket connect (Twilio uses 15 s).
    pub http_timeout: Duration,
}

impl Default for TwilioEmulatorConfig {
    fn default() -> Self {
        let mut rng = rand::rng();
        Self {
            account_sid: format!("AC{:032x}", rng.random::<u128>()),
            auth_token: format!("{:032x}", rng.random::<u128>()),
            numbers: HashMap::new(),
            ring_time: Duration::from_millis(1000),
            reply_gap: Duration::from_millis(700),
            idle_hangup: Duration::from_secs(20),
            barge_in_after: Duration::from_millis(1500),
            words_per_minute: 150,
            dial_talk: Duration::from_secs(3),
            http_timeout: Duration::from_secs(15),
        }
    }
}

impl TwilioEmulatorConfig {
    fn scenario_for(&self, to: &str) -> Scenario {
        self.numbers
            .get(to)
            .cloned()
            .unwrap_or_else(|| Scenario::for_number(to))
    }
}

/// A request to a running call from the REST API.
enum Command {
    /// `Status=completed` (`complete`) or `Status=canceled`.
    Hangup {
        complete: bool,
        reply: tokio::sync::oneshot::Sender<()>,
    },
    /// `Twiml=` or `Url=`.
    Redirect {
        source: TwimlSource,
        reply: tokio::sync::oneshot::Sender<()>,
    },
}

/// Where a call's TwiML comes from.
#[derive(Clone, Debug)]
enum TwimlSource {
    Inline(String),
    Fetch { url: String, method: String },
}

/// State of one call shared by the REST handlers, the call's task and the handle.
struct CallState {
    resource: CallResource,
    report: EmulatedCallReport,
}

struct CallSlot {
    state: Mutex<CallState>,
    commands: mpsc::Sender<Command>,
    finished: watch::Receiver<bool>,
}

impl CallSlot {
    /// The state; a poisoned lock only means a task panicked mid-update, and
    /// the data is still the best record of what happened.
    fn lock(&self) -> MutexGuard<'_, CallState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn report<R>(&self, f: impl FnOnce(&mut EmulatedCallReport) -> R) -> R {
        f(&mut self.lock().report)
    }
}

struct Shared {
    config: TwilioEmulatorConfig,
    calls: Mutex<HashMap<String, Arc<CallSlot>>>,
    http: reqwest::Client,
    cancel: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    fn call(&self, sid: &str) -> Option<Arc<CallSlot>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).get(sid).cloned()
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(fut);
    }
}

/// Starts emulators (see [`TwilioEmulator::start`]).
pub struct TwilioEmulator;

impl TwilioEmulator {
    /// Binds `127.0.0.1:0` and serves the emulated REST API.
    pub async fn start(config: TwilioEmulatorConfig) -> std::io::Result<TwilioEmulatorHandle> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::start_on(listener, config).await
    }

    /// Serves the emulated REST API on `listener`.
    pub async fn start_on(
        listener: TcpListener,
        config: TwilioEmulatorConfig,
    ) -> std::io::Result<TwilioEmulatorHandle> {
        let sid = &config.account_sid;
        if !(sid.len() == 34 && sid.starts_with("AC") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "account_sid must be AC followed by 32 hex digits",
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .user_agent("TwilioProxy/1.1")
            .build()
            .map_err(std::io::Error::other)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            calls: Mutex::new(HashMap::new()),
            http,
            cancel: CancellationToken::new(),
            tasks: Mutex::new(JoinSet::new()),
        });
        let router = api::router(shared.clone());
        let stop = shared.cancel.clone();
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::warn!(error = %e, "Twilio emulator server stopped");
            }
        });
        tracing::info!(%addr, "Twilio emulator listening");
        Ok(TwilioEmulatorHandle {
            shared,
            addr,
            server: Mutex::new(Some(server)),
        })
    }
}

/// Starts an emulator on `127.0.0.1:0` (same as [`TwilioEmulator::start`]).
pub async fn start(config: TwilioEmulatorConfig) -> std::io::Result<TwilioEmulatorHandle> {
    TwilioEmulator::start(config).await
}

/// A running emulator. Dropping it stops everything it runs (as
/// [`shutdown`](Self::shutdown) does, without waiting).
pub struct TwilioEmulatorHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl TwilioEmulatorHandle {
    /// `http://127.0.0.1:port`: use as the Twilio API base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The emulated account.
    pub fn account_sid(&self) -> &str {
        &self.shared.config.account_sid
    }

    /// The token that signs the webhooks and authenticates the REST API.
    pub fn auth_token(&self) -> &str {
        &self.shared.config.auth_token
    }

    /// Sids of every call created, in no particular order.
    pub fn call_sids(&self) -> Vec<String> {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// What has happened on call `sid` so far.
    pub fn call(&self, sid: &str) -> Option<EmulatedCallReport> {
        Some(self.shared.call(sid)?.lock().report.clone())
    }

    /// Waits until call `sid` has finished (terminal callback posted, sockets
    /// closed) and returns its report; `None` for an unknown sid.
    pub fn wait_finished(&self, sid: &str) -> impl std::future::Future<Output = Option<EmulatedCallReport>> + use<> {
        let slot = self.shared.call(sid);
        async move {
            let slot = slot?;
            let mut finished = slot.finished.clone();
            // An error means the call's task is gone, so it has finished too.
            let _ = finished.wait_for(|f| *f).await;
            Some(slot.lock().report.clone())
        }
    }

    /// Stops the server and every call (sockets closed, no more callbacks),
    /// waiting up to a few seconds for tasks to end.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = server {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        let mut tasks = std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("Twilio emulator tasks still running after 5 s; aborting them");
            tasks.abort_all();
        }
    }
}

impl Drop for TwilioEmulatorHandle {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// `AC`/`CA`/`MZ`/`PN` + 32 random hex digits.
fn new_sid(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::rng().random::<u128>())
}

/// RFC 2822 in UTC, as Twilio writes dates (§1.3, §2.1).
fn rfc2822_now() -> String {
    chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// A call slot with one empty stream report, for unit tests of the parts.
#[cfg(test)]
fn test_slot() -> Arc<CallSlot> {
    let (commands, _) = mpsc::channel(1);
    let (_, finished) = watch::channel(false);
    Arc::new(CallSlot {
        state: Mutex::new(CallState {
            resource: CallResource::default(),
            report: EmulatedCallReport {
                streams: vec![StreamReport::default()],
                ..EmulatedCallReport::default()
            },
        }),
        commands,
        finished,
    })
}
