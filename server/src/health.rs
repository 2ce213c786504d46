//! Probes for load balancers, kubelets and Azure Container Apps, which probe
//! over plain HTTP: `GET /healthz` (liveness: the process answers; nothing
//! else is checked, so a slow store never gets a live server restarted) and
//! `GET /readyz` (readiness: the server is not shutting down or draining,
//! [`crate::state::Readiness`], and the call store answers within
//! [`STORE_TIMEOUT`]; else 503 and the reason in one line of text).
//!
//! Both are open: no `API_TOKEN`, and the browser guard lets them through
//! whatever the `Host` (a kubelet probes the pod's IP). They tell nothing
//! but "ok" or why not, and cost a bounded amount: the store is asked at
//! most once per [`STORE_RECHECK`] however many probes arrive, and never for
//! longer than [`STORE_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::AppState;

/// The paths of the probes (the browser guard lets them through).
pub const PATHS: [&str; 2] = ["/healthz", "/readyz"];
/// Longest a readiness probe waits for the store.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one store check answers for.
pub const STORE_RECHECK: Duration = Duration::from_secs(1);

struct Probe {
    state: Arc<AppState>,
    /// The last store check: when, and its outcome. Behind an async mutex, so
    /// probes that arrive while a check runs wait for it instead of adding more.
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

/// The probe routes.
pub fn router(state: Arc<AppState>) -> Router {
    let probe = Arc::new(Probe {
        state,
        last: Mutex::new(None),
    });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(probe)
}

fn answer(status: StatusCode, text: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

async fn healthz() -> Response {
    answer(StatusCode::OK, "ok\n".into())
}

async fn readyz(State(probe): State<Arc<Probe>>) -> Response {
    let not_ready = |why: &str| answer(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"));
    if let Some(reason) = probe.state.readiness.stopped() {
        return not_ready(reason);
    }
    let store = {
        let mut last = probe.last.lock().await;
        match &*last {
            Some((at, outcome)) if at.elapsed() < STORE_RECHECK => outcome.clone(),
            _ => {
                let outcome = match tokio::time::timeout(STORE_TIMEOUT, probe.state.hub.store().ping()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("the call store failed: {e}")),
                    Err(_) => Err(format!("the call store did not answer within {STORE_TIMEOUT:?}")),
                };
                if let Err(why) = &outcome {
                    tracing::warn!(why, "readiness probe: not ready");
                }
                *last = Some((Instant::now(), outcome.clone()));
                outcome
            }
        }
    };
    // Shutdown may have started while the store was asked.
    match (probe.state.readiness.stopped(), store) {
        (Some(reason), _) => not_ready(reason),
        (None, Err(why)) => not_ready(&why),
        (None, Ok(())) => answer(StatusCode::OK, "ready\n".into()),
    }
}
