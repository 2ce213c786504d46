//! The state every part of a running server shares: configuration, the call
//! hub (store + fan-out), the telephony provider, the realtime backends,
//! shutdown and metrics. It imports no edge (gRPC, HTTP) and no emulator, so
//! the media bridge and the domain can take it without reaching them; the
//! server's wiring (`lib.rs`) builds it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::call::Backend;
use crate::call::hub::CallHub;
use crate::config::{Config, Secret};
use crate::metrics;
use crate::realtime::RealtimeBackends;
use crate::telephony::Telephony;

/// State shared by the gRPC service and the HTTP handlers.
pub struct AppState {
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// Base URL Twilio reaches (callback URLs, stream URL, signature checks).
    pub public_url: Url,
    /// Live calls and the store.
    pub hub: CallHub,
    /// Who dials.
    pub telephony: Arc<dyn Telephony>,
    /// True when `telephony` is the built-in emulator.
    pub emulated_telephony: bool,
    /// Key that signs Twilio's webhooks (the emulator's own when emulated).
    pub twilio_auth_token: Secret,
    /// Caller id.
    pub from_number: String,
    /// The realtime AIs calls are bridged to.
    pub realtime: RealtimeBackends,
    /// Server-wide cancellation (shutdown).
    pub shutdown: CancellationToken,
    /// Cancelled when a draining replica hands its live calls over (shared
    /// store only, issue #17): each bridge closes its media stream at a
    /// clean point without ending the call, and new media streams are
    /// refused, so the provider's `<Connect action>` brings each call to a
    /// survivor.
    pub handover: CancellationToken,
    /// The running media bridges: a shutdown waits for them to record how
    /// their calls ended before it ends the watchers and closes the store.
    pub bridges: TaskTracker,
    /// Latency and frame counters of the media path, RPCs, call outcomes,
    /// provider failures (shared with the hub and the telephony provider).
    pub metrics: Arc<metrics::Metrics>,
    /// Whether this instance takes new work (`/readyz`, the gRPC health service).
    pub readiness: Readiness,
    /// Where call recordings are written and served from.
    pub recordings: crate::recording::Recordings,
    /// The pending tool calls of the calls whose media runs here.
    pub tool_desk: crate::call::tools::ToolDesk,
    /// Asks tool URLs (signed with `WEBHOOK_SECRET`).
    pub tool_http: crate::tool_http::ToolHttp,
}

/// Whether this instance should be sent new work. `/readyz` answers 503 and
/// the gRPC health service reports `NOT_SERVING` from the moment one part
/// calls [`Readiness::stop`] (the shutdown at its start; a drain before it),
/// so load balancers and kubelets stop routing here while the calls already
/// running end on their own. One-way: an instance that stopped taking work
/// never takes it again. (Whether the store answers is checked per probe by
/// `/readyz`, not recorded here.)
#[derive(Debug)]
pub struct Readiness {
    stopped: tokio::sync::watch::Sender<Option<&'static str>>,
}

impl Readiness {
    /// The reason `/readyz` gives once shutdown has started.
    pub const SHUTTING_DOWN: &'static str = "the server is shutting down";
    /// The reason `/readyz` gives while the server drains before stopping.
    pub const DRAINING: &'static str = "the server is draining: no new calls";

    /// Ready.
    pub fn new() -> Self {
        Self {
            stopped: tokio::sync::watch::Sender::new(None),
        }
    }

    /// From now on this instance is not ready, for `reason` (the first reason
    /// given is kept).
    pub fn stop(&self, reason: &'static str) {
        self.stopped
            .send_if_modified(|r| r.is_none() && r.replace(reason).is_none());
    }

    /// Why the instance is not ready, or `None` while it is.
    pub fn stopped(&self) -> Option<&'static str> {
        *self.stopped.borrow()
    }

    /// Changes of [`Self::stopped`] (the gRPC health service follows them).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<&'static str>> {
        self.stopped.subscribe()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl AppState {
    /// True when calls on `backend` are answered by the realtime-AI emulator.
    pub fn ai_emulated(&self, backend: Backend) -> bool {
        !self.config.backend_configured(backend)
    }

    /// One line saying what is emulated, for the call's first events.
    pub fn emulation_summary(&self, backend: Backend) -> String {
        match (self.emulated_telephony, self.ai_emulated(backend)) {
            (true, true) => "emulated call: the built-in Twilio emulator and realtime-AI emulator answer it; no real phone is dialled".into(),
            (true, false) => "emulated call: the built-in Twilio emulator answers it; no real phone is dialled".into(),
            (false, true) => "the realtime-AI emulator answers this call (no AI credentials are configured)".into(),
            (false, false) => String::new(),
        }
    }
}
