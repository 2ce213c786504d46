//! voice-agent: places outbound phone calls answered by a realtime
//! speech-to-speech AI, and streams their status and transcripts.
//!
//! # Layout
//!
//! ```text
//! main.rs      reads `.env` (dotenv.rs), the config, sets up logging, calls `Server::start` + `run`
//! build.rs     (beside src/) builds web-client/ when stale and npm is there; copies its dist for ui.rs to embed
//! lib.rs       this map; `Server`: one listener for gRPC, grpc-web and HTTP; start-up and shutdown wiring
//! listener.rs  the accept loop: connection cap, header/body/idle timeouts, graceful shutdown
//! state.rs     AppState: what every part shares (imports no edge and no emulator)
//! config.rs    `Config` from the environment / `.env` (docs/contract.md §3); every default declared once
//! dotenv.rs    wire format: `.env` text → variables, python-dotenv's rules (the seed's `.env` as it is)
//! summary.rs   the start-up summary: telephony, backends and their auth, store, audio, API auth, CORS, UI (no secrets)
//! browser.rs   what browsers may do: CORS allow-list, Host/Origin guard (DNS rebinding), UI security headers
//! grpc.rs      edge: VoiceAgentService — validation, domain ↔ protobuf, limits in GetServerInfo, auth interceptor
//!   grpc/errors  error statuses with google.rpc ErrorInfo / BadRequest (tonic-types), everything echoed bounded
//!   grpc/list    ListCalls: filters and order validated into a store query, filter-bound page tokens
//! http.rs      edge: Twilio webhooks (status, TwiML, connect and dial actions, AMD result; signed-request extractors), media WebSocket upgrade, /metrics, 404s
//! health.rs    edge: /healthz (alive) and /readyz (not stopping, store answers): open, cheap, bounded
//! ui.rs        edge: the web UI at / — embedded at build time (rust-embed), or WEB_DIR, or a how-to-build page
//! call.rs      domain types: CallId, CallStatus, CallRecord, EventKind
//!   call/lifecycle  every status transition and end reason, and the events they make (pure)
//!     lifecycle/amd  answering-machine detection results and the voicemail policy's decisions (pure)
//!     lifecycle/transfer  hand-off to a person: when a transfer may start, its dial outcome, end reasons (pure)
//!   call/template   `{{name}}` placeholders filled from PlaceCall's variables (pure)
//!   call/error      ErrorCode / NoticeCode / ErrorReason: the codes and error reasons clients see, spelled once
//!   call/tools      the call's tools, their limits, and the desk of pending tool calls (first answer wins)
//!   call/hub        live calls: commit-then-broadcast fan-out, WatchCall streams, media leases, status-change logs
//! store.rs     the call store seam: SQLite (one process) or PostgreSQL (replicas, docs/deploy.md); CallFilter
//!   store/sqlite    SQLite with migrations; append-only event log
//!   store/postgres  PostgreSQL: pool, row-locked changes, migrations under an advisory lock, LISTEN/NOTIFY
//! telephony.rs trait Telephony (dial, hang up, say-and-hang-up, transfer)
//!   telephony/twilio   the Twilio REST client (wire formats re-exported from `voice-agent-wire`)
//!   telephony/provider `Telephony` implemented over the Twilio REST client
//! realtime.rs  RealtimeBackends: connecting a call to its AI (the socket, auth headers)
//!   realtime/backend   the backend seam: one table of backends and the services that serve them
//!   realtime/{voice_live, azure_openai, openai}  one module per service: variables, defaults, URL, auth, dialect
//!   realtime/entra     Microsoft Entra ID tokens (azure_identity credentials, chain, per-scope cache)
//! bridge.rs    per-call media bridge: Twilio media ↔ realtime AI, events
//!   bridge/conversation  the call's conversation as a state machine (no I/O)
//!   bridge/shell         sockets, timers, provider requests around it
//!   bridge/writer        the call's one ordered path to the hub (events, end reason)
//!   bridge/frames        the per-frame conversions (transcode, base64, message text)
//! recording.rs call recordings: a per-call recorder task fed by the bridge through a bounded queue, the
//!              retention sweep (I/O); GET /recordings/{call_id}.wav is served by http.rs
//!   recording/wav       wire format: the stereo 8 kHz 16-bit PCM WAV, header patched as it grows
//!   recording/timeline  where each side's audio lands (the callee's audio is the clock; clears cut), pure
//! metrics.rs   lock-free counters and histograms (media path, RPCs, call outcomes, provider errors,
//!              build, process), exposed through prometheus-client (GET /metrics)
//! telemetry.rs logs (text/JSON), OpenTelemetry spans over OTLP, W3C trace context in and out,
//!              the span and RPC metrics of every gRPC request and Twilio request (docs/observability.md)
//! redact.rs    phone numbers as logs and spans show them (+1***23), pure
//! tool_http.rs edge: POSTs a tool call to the tool's URL, signed (webhook_signing), bounded; output or error output
//! webhook.rs   outcome webhooks: the worker delivering the store's outbox, signed, retried, dead-lettered (I/O)
//!   webhook/payload  wire format: call.status_changed / call.ended bodies, bounded (the store enqueues them)
//!   webhook/retry    the backoff schedule and how an attempt is judged (pure)
//! webhook_signing.rs wire format: Standard Webhooks signatures (webhook-id/-timestamp/-signature), no I/O
//! ```
//!
//! Re-exported crates (walls the compiler checks; see docs/architecture.md):
//! `audio` is `voice-agent-audio` (μ-law, resamplers), `emulator` is
//! `voice-agent-emulators`, `realtime::protocol` and `telephony::twilio::{media,
//! twiml, signature}` are `voice-agent-wire`. Protocol facts cite
//! `docs/protocols.md` by section (§).
//!
//! Data flow: `PlaceCall` stores the call, then dials through [`telephony`].
//! Twilio's webhooks land in [`http`], which only checks signatures and
//! translates. The media WebSocket is handed to a [`bridge`] actor that owns
//! both sockets. Every event goes through the [`call::hub`]: committed to the
//! [`store`] first, then broadcast to `WatchCall` streams (and, on PostgreSQL,
//! announced to the other replicas, whose watchers re-read the store).

/// μ-law codec and resamplers (the `voice-agent-audio` crate).
pub use voice_agent_audio as audio;
pub mod bridge;
pub mod browser;
pub mod call;
pub mod config;
pub mod dotenv;
/// The built-in emulators (the `voice-agent-emulators` crate).
pub use voice_agent_emulators as emulator;
pub mod grpc;
pub mod health;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod realtime;
pub mod recording;
pub mod redact;
pub mod state;
pub mod store;
pub mod summary;
pub mod telemetry;
pub mod telephony;
pub mod tool_http;
pub mod ui;
pub mod webhook;
pub mod webhook_signing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;
use voice_agent_proto::v1::voice_agent_service_server::VoiceAgentServiceServer;

use crate::call::hub::CallHub;
use crate::config::{Config, Secret};
use crate::grpc::{AuthInterceptor, VoiceAgent};
use crate::realtime::RealtimeBackends;
use crate::realtime::entra::EntraAuth;
use crate::store::Store;
use crate::telephony::Telephony;
use crate::telephony::twilio::rest::TwilioClient;

pub use crate::state::AppState;

/// Emulators started by the server.
#[derive(Default)]
pub struct Emulators {
    /// The Twilio emulator, when no Twilio credentials are configured.
    pub twilio: Option<emulator::twilio::TwilioEmulatorHandle>,
    /// The realtime-AI emulator, when a backend has no credentials.
    pub realtime: Option<emulator::realtime::RealtimeEmulatorHandle>,
}

/// Start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding the listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("call store: {0}")]
    Store(#[from] store::StoreError),
    /// Anything else at start (emulators, reflection).
    #[error("{0}")]
    Other(String),
}

/// Ways to replace parts of the server (tests, embedding).
#[derive(Default)]
pub struct Options {
    /// A telephony provider to use instead of Twilio or its emulator, with the
    /// token that signs its webhooks.
    pub telephony: Option<(Arc<dyn Telephony>, Secret)>,
    /// How long shutdown waits for connections to finish (default 5 s).
    pub grace: Option<Duration>,
    /// Microsoft Entra ID token source (default: the credential chain of the environment).
    pub entra: Option<EntraAuth>,
}

/// A started server: bound, store open, emulators running; call [`Server::run`].
pub struct Server {
    state: Arc<AppState>,
    emulators: Arc<Emulators>,
    listener: TcpListener,
    grace: Duration,
    /// Cancelled to start a drain (SIGTERM, from another task than the one
    /// that runs the server); what follows reads [`state::Readiness`].
    drain: CancellationToken,
}

impl Server {
    /// Binds `config.bind` and prepares everything.
    pub async fn start(config: Config, options: Options) -> Result<Self, StartError> {
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        Self::with_listener(config, listener, options).await
    }

    /// Prepares everything on an already bound listener.
    pub async fn with_listener(config: Config, listener: TcpListener, options: Options) -> Result<Self, StartError> {
        let local = listener.local_addr().map_err(|e| StartError::Other(e.to_string()))?;
        let public_url = match &config.public_url {
            Some(u) => u.clone(),
            None => Url::parse(&format!("http://{local}")).map_err(|e| StartError::Other(e.to_string()))?,
        };
        let store = Store::open(&config.database).await?.with_link_base(public_url.as_str());
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(metrics::Metrics::default());
        let hub = CallHub::with_metrics(store, shutdown.clone(), metrics.clone());
        let mut twilio_emulator = None;
        let injected_telephony = options.telephony.is_some();
        let (telephony, twilio_auth_token, emulated_telephony, from_number): (Arc<dyn Telephony>, _, _, _) =
            match (options.telephony, &config.twilio) {
                (Some((t, token)), _) => (t, token, false, "+15005550006".to_string()),
                (None, Some(tw)) => {
                    let client = TwilioClient::new(
                        tw.api_base_url.as_str(),
                        &tw.account_sid,
                        tw.auth_token.expose(),
                        config.twilio_http_timeout,
                    )
                    .map_err(|e| StartError::Other(format!("Twilio client: {e}")))?;
                    (
                        Arc::new(telephony::provider::Twilio::new(client)),
                        tw.auth_token.clone(),
                        false,
                        tw.phone_number.clone(),
                    )
                }
                (None, None) => {
                    let emu = emulator::twilio::TwilioEmulator::start(Default::default())
                        .await
                        .map_err(|e| StartError::Other(format!("Twilio emulator: {e}")))?;
                    let client = TwilioClient::new(
                        &emu.base_url(),
                        emu.account_sid(),
                        emu.auth_token(),
                        config.twilio_http_timeout,
                    )
                    .map_err(|e| StartError::Other(format!("Twilio client: {e}")))?;
                    let token = Secret::new(emu.auth_token());
                    twilio_emulator = Some(emu);
                    (
                        Arc::new(telephony::provider::Twilio::new(client)),
                        token,
                        true,
                        "+15005550006".to_string(),
                    )
                }
            };
        let telephony: Arc<dyn Telephony> = Arc::new(telephony::Metered::new(telephony, metrics.clone()));
        if hub.store().shared() {
            // Replicas: the other replicas' calls go on. A call whose media
            // bridge's replica died is ended once its lease expires, by
            // whichever replica sweeps first (this one included).
            // A dial takes at most TWILIO_HTTP_TIMEOUT; a call queued much
            // longer lost the replica placing it.
            hub.spawn_lease_keeping(telephony.clone(), config.twilio_http_timeout + call::hub::PLACE_MARGIN);
        } else {
            // One process: before anything is served, the calls a crash left
            // live are hung up with the provider (which needs the telephony
            // above) and marked failed.
            let recovered = hub
                .recover(telephony.as_ref())
                .await
                .map_err(|e| StartError::Other(e.to_string()))?;
            if recovered > 0 {
                tracing::warn!(
                    calls = recovered,
                    "hung up calls left live by the previous run and marked them failed"
                );
            }
        }
        // Only when no AI is configured: a backend without credentials beside
        // a configured one is not offered (Config::available_backends).
        let realtime_emulator = if !config.ai_emulated() {
            None
        } else {
            Some(
                emulator::realtime::start(Default::default())
                    .await
                    .map_err(|e| StartError::Other(format!("realtime-AI emulator: {e}")))?,
            )
        };
        let emulator_key = realtime_emulator
            .as_ref()
            .map(|e| (e.url_base(), Secret::new(e.api_key())));
        let realtime = RealtimeBackends::from_config(
            &config,
            emulator_key.as_ref().map(|(u, k)| (u, k)),
            options.entra.unwrap_or_else(EntraAuth::from_environment),
        );
        let recordings = recording::Recordings::new(config.recordings_dir.clone(), config.recording_retention);
        let tool_http = tool_http::ToolHttp::new(config.webhook_secret.as_ref().map(Secret::expose));
        let state = Arc::new(AppState {
            tool_desk: call::tools::ToolDesk::default(),
            tool_http,
            config: Arc::new(config),
            public_url,
            hub,
            telephony,
            emulated_telephony,
            twilio_auth_token,
            from_number,
            realtime,
            shutdown,
            handover: CancellationToken::new(),
            bridges: TaskTracker::new(),
            metrics,
            readiness: state::Readiness::new(),
            recordings,
        });
        state.recordings.spawn_sweep(state.hub.clone(), state.shutdown.clone());
        // Outcome webhooks: this process delivers the outbox whenever it can
        // sign, so messages a previous run (or another replica) stored go out
        // even if this one has no WEBHOOK_URL.
        if let Some(key) = state
            .config
            .webhook_secret
            .as_ref()
            .and_then(|s| webhook_signing::SigningKey::from_secret(s.expose()).ok())
        {
            webhook::Sender::new(
                state.hub.store().clone(),
                key,
                state.config.webhook_retry.clone(),
                state.metrics.clone(),
                state.hub.replica_id().to_string(),
            )
            .spawn(state.shutdown.clone());
        }
        let twilio_base = twilio_emulator.as_ref().map(|t| t.base_url());
        let realtime_base = realtime_emulator.as_ref().map(|r| r.url_base());
        let started = summary::Started {
            twilio_emulator: twilio_base.as_deref(),
            realtime_emulator: realtime_base.as_ref(),
            injected_telephony,
            ui: ui::Source::of(state.config.web_dir.as_deref()).describe(),
        };
        for line in summary::lines(&state, &started) {
            if line.warn {
                tracing::warn!("{}", line.text);
            } else {
                tracing::info!("{}", line.text);
            }
        }
        Ok(Self {
            state,
            emulators: Arc::new(Emulators {
                twilio: twilio_emulator,
                realtime: realtime_emulator,
            }),
            listener,
            grace: options.grace.unwrap_or(Duration::from_secs(5)),
            drain: CancellationToken::new(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The built-in emulators this server started (none with full credentials).
    pub fn emulators(&self) -> &Arc<Emulators> {
        &self.emulators
    }

    /// Cancelling this token shuts the server down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Cancelling this token drains the server (SIGTERM): readiness fails
    /// and new calls are refused at once, the live calls run on until they
    /// end or `DRAIN_TIMEOUT` passes, then the server shuts down as through
    /// [`Server::shutdown_token`].
    pub fn drain_token(&self) -> CancellationToken {
        self.drain.clone()
    }

    /// Serves until the shutdown token is cancelled, then stops accepting,
    /// lets the live calls' media bridges end their calls, lets watchers
    /// receive what is stored, closes the store, and returns within the
    /// grace period.
    pub async fn run(self) -> Result<(), StartError> {
        let router = router(self.state.clone()).await?;
        let addr = self.local_addr();
        tracing::info!("voice-agent listening on http://{addr} (gRPC, grpc-web, Twilio webhooks, web UI)");
        let shutdown = self.state.shutdown.clone();
        let serve = listener::serve(self.listener, router, self.state.clone(), shutdown.clone());
        let serve = tokio::spawn(serve);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.drain.cancelled() => {
                // First of all: probes and the gRPC health service say "not
                // ready", and PlaceCall is refused.
                self.state.readiness.stop(state::Readiness::DRAINING);
                drain(&self.state).await;
            }
        }
        shutdown.cancel();
        // (After a drain, the reason stays DRAINING: the first one is kept.)
        self.state.readiness.stop(state::Readiness::SHUTTING_DOWN);
        let deadline = tokio::time::Instant::now() + self.grace;
        // The bridges saw the same cancellation: each records why its call
        // ended and hangs it up. Only then are the watchers ended, so those
        // still streaming get the end of their call, not a cut-off history.
        self.state.bridges.close();
        let cancelled = async {
            // Replicas: the calls not answered yet go on; their TwiML and
            // media land on the other replicas.
            if !self.state.hub.store().shared() {
                cancel_unanswered(&self.state).await;
            }
        };
        let (bridges, cancelled) = tokio::join!(
            tokio::time::timeout_at(deadline, self.state.bridges.wait()),
            tokio::time::timeout_at(deadline, cancelled),
        );
        if bridges.is_err() {
            tracing::warn!(grace = ?self.grace, "media bridges still running after the grace period");
        }
        if cancelled.is_err() {
            tracing::warn!(grace = ?self.grace, "calls still being cancelled with the provider after the grace period");
        }
        self.state.hub.end_watchers();
        match tokio::time::timeout_at(deadline, serve).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
            Err(_) => tracing::warn!(grace = ?self.grace, "connections still open after the grace period; closing"),
        }
        if let Some(t) = &self.emulators.twilio {
            t.shutdown().await;
        }
        if let Some(r) = &self.emulators.realtime {
            r.shutdown();
        }
        self.state.hub.store().close().await?;
        Ok(())
    }
}

/// How long a draining replica waits before handing its calls over: the
/// load balancer's health checks must have seen it not ready (docs/haproxy.cfg:
/// a check every 500 ms, out after two failures), or the provider's
/// action request and the new stream could land here again.
const HANDOVER_AFTER: Duration = Duration::from_secs(2);

/// The first step of a stop (SIGTERM), after readiness has stopped (so
/// `/readyz`, gRPC health and PlaceCall refuse at once); the media bridges of this process
/// run on until they end or `DRAIN_TIMEOUT` passes. Then the shutdown ends
/// the rest with a reason.
async fn drain(state: &AppState) {
    let timeout = state.config.drain_timeout;
    if timeout.is_zero() {
        return;
    }
    tracing::info!(
        bridges = state.bridges.len(),
        ?timeout,
        handover = state.hub.store().shared(),
        "draining: no new calls; live calls run on, or are handed over to the other replicas"
    );
    // Closing only changes what `wait` waits for: a media stream that still
    // lands here (its call was answered before the load balancer noticed) is
    // tracked and waited for too.
    state.bridges.close();
    if state.hub.store().shared() {
        // Replicas: once the load balancer has seen this one not ready (so
        // what the provider asks next goes to a survivor), every bridge
        // closes its stream at a clean point, the provider asks the
        // `<Connect action>` URL, and a survivor resumes the call.
        let handover = async {
            tokio::time::sleep(HANDOVER_AFTER).await;
            tracing::info!(bridges = state.bridges.len(), "draining: handing the live calls over");
            state.handover.cancel();
            state.bridges.wait().await;
        };
        if tokio::time::timeout(timeout, handover).await.is_err() {
            tracing::warn!(
                bridges = state.bridges.len(),
                "the drain timed out; ending the calls still live"
            );
        }
        state.bridges.reopen();
        return;
    }
    if tokio::time::timeout(timeout, state.bridges.wait()).await.is_err() {
        tracing::warn!(
            bridges = state.bridges.len(),
            "the drain timed out; ending the calls still live"
        );
    }
    state.bridges.reopen();
}

/// At shutdown, the calls not answered yet (queued, dialling, ringing) are
/// cancelled with the provider and end CANCELED with the shutdown reason. Left
/// alone, the callee could still pick up, and the provider would connect them
/// to a server that is gone (Twilio then plays its application-error message).
/// Answered calls are their media bridges' to end.
async fn cancel_unanswered(state: &AppState) {
    use crate::call::{CallStatus, ErrorCode, EventKind, lifecycle};
    let unanswered = state.hub.live_records().await.into_iter().filter(|r| {
        matches!(
            r.status,
            CallStatus::Queued | CallStatus::Initiated | CallStatus::Ringing
        )
    });
    let cancels = unanswered.map(|rec| async move {
        let id = &rec.call_id;
        // Still being dialled (no provider id yet): nothing to tell the provider.
        if !rec.provider_call_id.is_empty()
            && let Err(e) = state.telephony.hang_up(&rec.provider_call_id, false).await
        {
            tracing::warn!(call_id = %id, error = %e.message, "the call could not be cancelled at shutdown");
            let error = EventKind::error(
                ErrorCode::from_provider(e.provider_code.as_deref()),
                format!("cancelling the call at shutdown failed: {}", e.message),
            );
            if let Err(e) = state.hub.publish(id, error).await {
                tracing::error!(call_id = %id, error = %e, "the failed cancel was not stored");
            }
        }
        let cancel = |r: &mut call::CallRecord| lifecycle::end(r, lifecycle::Ending::Canceled, bridge::SHUTDOWN_REASON);
        if let Err(e) = state.hub.update(id, cancel).await {
            tracing::error!(call_id = %id, error = %e, "the cancel at shutdown was not stored");
        }
    });
    futures_util::future::join_all(cancels).await;
}

/// The one router: gRPC services (with grpc-web, and CORS for the allowed
/// origins) beside the HTTP routes, behind the Host/Origin guard.
async fn router(state: Arc<AppState>) -> Result<Router, StartError> {
    let voice_agent = VoiceAgentServiceServer::with_interceptor(
        VoiceAgent::new(state.clone()),
        AuthInterceptor::new(state.config.api_token.as_ref().map(Secret::expose)),
    );
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<VoiceAgentServiceServer<VoiceAgent>>()
        .await;
    // The gRPC health service follows readiness: NOT_SERVING (the service's
    // and the server's, "") from the moment a shutdown or drain starts.
    let mut stopped = state.readiness.subscribe();
    tokio::spawn(async move {
        if stopped.wait_for(Option::is_some).await.is_ok() {
            use tonic_health::ServingStatus;
            health_reporter
                .set_not_serving::<VoiceAgentServiceServer<VoiceAgent>>()
                .await;
            health_reporter.set_service_status("", ServingStatus::NotServing).await;
        }
    });
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(voice_agent_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Other(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(voice_agent_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| StartError::Other(format!("reflection: {e}")))?;

    // Routes are added per service (as tonic's own `Routes` does) but without
    // its catch-all fallback, so unknown paths reach the HTTP router's 404.
    let mut grpc = Router::new()
        .route_service("/voiceagent.v1.VoiceAgentService/{*rest}", voice_agent)
        .route_service("/grpc.health.v1.Health/{*rest}", health)
        .route_service("/grpc.reflection.v1.ServerReflection/{*rest}", reflection_v1)
        .route_service("/grpc.reflection.v1alpha.ServerReflection/{*rest}", reflection_v1alpha)
        // Inside grpc-web's translation, so it sees gRPC's trailers.
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            telemetry::grpc_requests,
        ))
        .layer(tonic_web::GrpcWebLayer::new());
    if let Some(cors) = browser::cors(&state.config.cors_allowed_origins) {
        grpc = grpc.layer(cors);
    }
    let origins = Arc::new(browser::OriginPolicy::new(&state.config, &state.public_url));
    let twilio_spans = axum::middleware::from_fn_with_state(state.clone(), telemetry::twilio_requests);
    Ok(grpc
        .merge(http::router(state).layer(twilio_spans))
        .layer(axum::middleware::from_fn_with_state(origins, browser::guard)))
}
