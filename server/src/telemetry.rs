//! Logs and traces (docs/observability.md): the process-wide tracing
//! subscriber, which writes log lines as text or JSON (`LOG_FORMAT`) and,
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, exports spans over OTLP/HTTP;
//! the W3C trace context taken from requests and passed on to the requests
//! we make; and the span (and RPC metrics) of every gRPC request and every
//! request of Twilio's.
//!
//! Without `OTEL_EXPORTER_OTLP_ENDPOINT` there is no OpenTelemetry layer,
//! no exporter thread, no propagator: [`inject`] and the extraction return
//! at once, and spans cost what `tracing` spans cost.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderMap;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::FilterExt as _;

use crate::AppState;
use crate::call::CallId;
use crate::config::var;
use crate::metrics::Metrics;

/// Whether spans are exported (set once, by [`init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The `service.name` when neither `OTEL_SERVICE_NAME` nor
/// `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "voice-agent";

/// How log lines are written (`LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event; colour only on a terminal.
    Text,
    /// One JSON object per line, with the fields of the event and of its spans.
    Json,
}

impl LogFormat {
    /// Parses `LOG_FORMAT` (unset: text).
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") => Ok(Self::Text),
            Some(v) if v.eq_ignore_ascii_case("text") => Ok(Self::Text),
            Some(v) if v.eq_ignore_ascii_case("json") => Ok(Self::Json),
            Some(v) => Err(format!("{}: expected text or json, got {v:?}", var::LOG_FORMAT.0)),
        }
    }
}

/// What [`init`] set up; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter. Call it
    /// outside the async runtime (the exporter's HTTP client blocks).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing the OpenTelemetry spans failed: {e}");
        }
    }
}

/// Crates whose logs below INFO print what crosses the wire: request and
/// response headers (the AI's `authorization: Bearer …`, Twilio's basic auth)
/// or whole messages (the media stream's `start` with its stream secret).
/// They are capped at INFO whatever `RUST_LOG` says, so no secret reaches the
/// log at any level. (A directive in the `EnvFilter` would not do: a more
/// specific one such as `tungstenite::protocol=trace` would win over it.)
/// The exporter's own crates are capped too: they would log every export.
const WIRE_LOGGING_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "tonic",
    "tower",
    "tower_http",
    "axum",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry_http",
];

/// The filter that caps [`WIRE_LOGGING_CRATES`], applied beside the user's `RUST_LOG`.
pub fn wire_logging_cap() -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    WIRE_LOGGING_CRATES
        .iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, c| {
            t.with_target(*c, LevelFilter::INFO)
        })
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Installs the process-wide subscriber: log lines to stdout in `format`,
/// filtered by `RUST_LOG` (`filter`); and, when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans of INFO and above
/// exported over OTLP/HTTP whatever `RUST_LOG` says. Call it before the
/// async runtime starts (the exporter's HTTP client is a blocking one, which
/// must not be built inside it).
pub fn init(format: LogFormat, filter: &str) -> Result<Telemetry, String> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let user = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|e| {
            // As before LOG_FORMAT: a filter that does not parse falls back to the default.
            eprintln!("warning: {}: {e}; logging at {}", var::RUST_LOG.0, var::RUST_LOG.2);
            tracing_subscriber::EnvFilter::new(var::RUST_LOG.2)
        })
        .and(wire_logging_cap());
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let log: BoxedLayer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(colour)
            .with_filter(user)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(user)
            .boxed(),
    };
    let mut layers = vec![log];
    let provider = tracer_provider()?;
    if let Some(provider) = &provider {
        let tracer = provider.tracer("voice-agent");
        let spans = tracing_subscriber::filter::LevelFilter::INFO.and(wire_logging_cap());
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(spans)
                .boxed(),
        );
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        EXPORTING.store(true, Ordering::Release);
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(Telemetry { provider })
}

/// The span exporter the standard `OTEL_*` variables describe, or `None`
/// when no endpoint is set. The exporter reads the endpoint, headers and
/// timeout itself, the batch processor its `OTEL_BSP_*`, the resource
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, the sampler
/// `OTEL_TRACES_SAMPLER(_ARG)`.
fn tracer_provider() -> Result<Option<SdkTracerProvider>, String> {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if set(var::OTEL_EXPORTER_OTLP_ENDPOINT.0).is_none() && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
        return Ok(None);
    }
    if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    // Only OTLP/HTTP with protobuf bodies is built in (the protocol the
    // specification makes the default); say so rather than send something else.
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", var::OTEL_EXPORTER_OTLP_PROTOCOL.0] {
        if let Some(p) = set(name)
            && p.trim() != "http/protobuf"
        {
            return Err(format!(
                "{name}: only http/protobuf is supported (an OTLP/HTTP endpoint such as http://collector:4318), got {p:?}"
            ));
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("{}: {e}", var::OTEL_EXPORTER_OTLP_ENDPOINT.0))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = set("OTEL_SERVICE_NAME").is_some()
        || set("OTEL_RESOURCE_ATTRIBUTES")
            .is_some_and(|a| a.split(',').any(|kv| kv.trim().starts_with("service.name=")));
    if !named {
        resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// Makes the trace context in `headers` (W3C `traceparent`, `tracestate`),
/// if any, the parent of `span`. Nothing when spans are not exported.
pub fn set_remote_parent(span: &tracing::Span, headers: &HeaderMap) -> bool {
    if !EXPORTING.load(Ordering::Acquire) || !headers.contains_key("traceparent") {
        return false;
    }
    let cx =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&opentelemetry_http::HeaderExtractor(headers)));
    span.set_parent(cx).is_ok()
}

/// Records the trace id of `span` in its `trace_id` field (declared empty),
/// so that log lines inside it name their trace. Nothing when spans are not
/// exported.
pub fn record_trace_id(span: &tracing::Span) {
    if !EXPORTING.load(Ordering::Acquire) {
        return;
    }
    use opentelemetry::trace::TraceContextExt as _;
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
}

/// Adds the current span's trace context (W3C `traceparent`) to the headers
/// of a request we make (Twilio's REST API, the AI's WebSocket handshake).
/// Nothing when spans are not exported.
pub fn inject(headers: &mut HeaderMap) {
    if !EXPORTING.load(Ordering::Acquire) {
        return;
    }
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers));
    });
}

/// The `grpc-status` in `headers`, if any.
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// The gRPC codes that make a server span an error (OpenTelemetry's
/// semantic conventions for RPC: the server's own faults, not the client's).
fn server_fault(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Middleware of the gRPC services (inside grpc-web's translation, so it
/// sees gRPC's trailers): one span per request, a child of the caller's
/// `traceparent`, that lasts until the response (or stream) ends; and the
/// request's count by method and code, and its duration.
pub async fn grpc_requests(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = metrics.grpc.method_index(req.uri().path());
    let name = metrics.grpc.method_name(method);
    let (service, rpc) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!(
        "grpc_request",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = rpc,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    set_remote_parent(&span, req.headers());
    record_trace_id(&span);
    let response = next.run(req).instrument(span.clone()).await;
    let mut finish = Finish {
        metrics,
        method,
        started,
        span,
        code: None,
    };
    // A trailers-only response (every error) has its status in the headers:
    // it is recorded now, before the client can see it.
    if let Some(code) = grpc_status(response.headers()) {
        finish.code = Some(code);
        return response;
    }
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(ObservedBody {
            inner: body,
            finish: Some(finish),
        }),
    )
}

/// Records a gRPC request when its response ends (or is dropped).
struct Finish {
    metrics: Arc<Metrics>,
    method: usize,
    started: Instant,
    span: tracing::Span,
    code: Option<u32>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        // No status at all: the client went away before the end (CANCELLED).
        let code = self.code.unwrap_or(1);
        self.metrics.grpc.record(self.method, code, self.started.elapsed());
        self.span.record("rpc.grpc.status_code", code);
        if server_fault(code) {
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

/// A response body that watches for the `grpc-status` trailer.
struct ObservedBody {
    inner: Body,
    finish: Option<Finish>,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                // Recorded as the trailers leave, before the client can see the end.
                if let Some(code) = frame.trailers_ref().and_then(grpc_status)
                    && let Some(mut finish) = self.finish.take()
                {
                    finish.code = Some(code);
                }
            }
            Poll::Ready(None) => {
                self.finish.take();
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The call a Twilio request is about: `?call_id=` (webhooks) or the last
/// path segment (`/ws/media/{call_id}`).
fn twilio_call_id(req: &Request) -> Option<CallId> {
    let uri = req.uri();
    if let Some(id) = uri.path().strip_prefix("/ws/media/") {
        return CallId::parse(id);
    }
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == "call_id")
        .and_then(|(_, v)| CallId::parse(&v))
}

/// Middleware of the HTTP routes: Twilio's requests (the webhooks, the
/// media WebSocket upgrade) get a span, a child of the call's span (or of a
/// `traceparent` they carry), so a call's trace shows what Twilio told us.
/// Other routes pass untouched.
pub async fn twilio_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let route = if path.starts_with("/twilio/") {
        path.to_string()
    } else if path.starts_with("/ws/media/") {
        "/ws/media/{call_id}".to_string()
    } else {
        return next.run(req).await;
    };
    let call = twilio_call_id(&req);
    let method = req.method().clone();
    let parent = call.as_ref().and_then(|id| state.hub.call_span(id));
    let span = tracing::info_span!(
        parent: parent.as_ref().and_then(tracing::Span::id),
        "twilio_request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        call_id = call.as_ref().map(CallId::as_str).unwrap_or(""),
        http.response.status_code = tracing::field::Empty,
    );
    set_remote_parent(&span, req.headers());
    let response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn wire_crates_are_capped_at_info_whatever_the_target_path() {
        let cap = wire_logging_cap();
        for target in [
            "tungstenite::handshake::client",
            "tungstenite::protocol",
            "hyper::proto::h1",
            "h2::codec",
            "opentelemetry_otlp::exporter::http",
        ] {
            assert!(!cap.would_enable(target, &Level::DEBUG), "{target}");
            assert!(!cap.would_enable(target, &Level::TRACE), "{target}");
            assert!(cap.would_enable(target, &Level::INFO), "{target}");
        }
        assert!(cap.would_enable("voice_agent_server::bridge", &Level::TRACE));
    }

    #[test]
    fn log_format_is_text_unless_json_is_asked_for() {
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("text")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("JSON")), Ok(LogFormat::Json));
        let err = LogFormat::parse(Some("logfmt")).unwrap_err();
        assert!(err.contains("LOG_FORMAT") && err.contains("logfmt"), "{err}");
    }

    #[test]
    fn nothing_is_injected_or_extracted_when_spans_are_not_exported() {
        // No test of this binary installs an exporter.
        let mut headers = HeaderMap::new();
        inject(&mut headers);
        assert!(headers.is_empty());
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert!(!set_remote_parent(&tracing::Span::none(), &headers));
    }

    #[test]
    fn grpc_status_is_read_from_headers_or_trailers() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(grpc_status(&h), Some(5));
        assert!(server_fault(13) && server_fault(14) && !server_fault(0) && !server_fault(3) && !server_fault(5));
    }
}
