//! The gRPC connection: a lazily connecting channel plus an interceptor that
//! adds `authorization: Bearer <token>` to every request.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use voice_agent_proto::v1::voice_agent_service_client::VoiceAgentServiceClient;

/// The generated client with the auth interceptor in front of the channel.
pub type Client = VoiceAgentServiceClient<InterceptedService<Channel, BearerAuth>>;

/// Adds the API token to each request's metadata (the server checks it when
/// it runs with `API_TOKEN`; see the service comment in voice_agent.proto).
#[derive(Clone)]
pub struct BearerAuth {
    header: Option<MetadataValue<Ascii>>,
}

impl BearerAuth {
    /// No header for `None` or an empty token (an empty `API_TOKEN` in the
    /// environment means "no auth" on the server as well).
    pub fn new(token: Option<&str>) -> Result<BearerAuth, String> {
        let header = match token {
            Some(t) if !t.is_empty() => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| "the token may only contain visible ASCII characters".to_string())?,
            ),
            _ => None,
        };
        Ok(BearerAuth { header })
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.header {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Builds the client without touching the network: the first RPC connects,
/// so an unreachable server surfaces as an ordinary `UNAVAILABLE` status
/// (one error format for everything) and a watch can retry it.
pub fn connect(server: &str, token: Option<&str>) -> Result<Client, String> {
    let mut endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|e| format!("--server {server:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        // A call can be silent for minutes; pings notice a dead connection
        // (e.g. a NAT that forgot us) so the watcher can reconnect.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    if server.starts_with("https://") {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_webpki_roots())
            .map_err(|e| format!("--server {server:?}: TLS setup failed: {e}"))?;
    }
    let auth = BearerAuth::new(token)?;
    Ok(VoiceAgentServiceClient::with_interceptor(endpoint.connect_lazy(), auth))
}

/// `NOT_FOUND: call abc does not exist` — the gRPC code as its canonical
/// name (what grpcurl and the gRPC docs use), then the message on one line.
pub fn describe_status(status: &tonic::Status) -> String {
    let mut message = status.message().trim().to_string();
    // Transport failures carry the useful part ("Connection refused") only
    // in the source chain, e.g. "tcp connect error" → io::Error.
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message = if message.is_empty() {
                text
            } else {
                format!("{message}: {text}")
            };
        }
        source = cause.source();
    }
    let message = crate::render::sanitize(&message);
    if message.is_empty() {
        code_name(status.code()).to_string()
    } else {
        format!("{}: {message}", code_name(status.code()))
    }
}

/// The `google.rpc` details of an error status, one line each, for the
/// lines after [`describe_status`]: the ErrorInfo's reason (and domain when it
/// is not ours) with its metadata, then each BadRequest field violation.
/// Empty when the status has none (an older server, a transport error).
pub fn describe_details(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    let clean = crate::render::sanitize;
    // Details that do not decode are left out: the first line already says
    // what failed, and the status message carries the same text.
    let Ok(details) = status.check_error_details() else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    if let Some(info) = details.error_info() {
        let mut line = format!("reason: {}", clean(&info.reason));
        if info.domain != "voice-agent" {
            line.push_str(&format!(" ({})", clean(&info.domain)));
        }
        let mut metadata: Vec<_> = info.metadata.iter().collect();
        metadata.sort();
        for (key, value) in metadata {
            line.push_str(&format!(" {}={}", clean(key), clean(value)));
        }
        lines.push(line);
    }
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            lines.push(format!("field {}: {}", clean(&v.field), clean(&v.description)));
        }
    }
    lines
}

/// The canonical upper-case name of a gRPC status code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_becomes_a_bearer_header() {
        let mut auth = BearerAuth::new(Some("s3cret")).unwrap();
        let request = auth.call(tonic::Request::new(())).unwrap();
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer s3cret");
    }

    #[test]
    fn no_or_empty_token_sends_no_header() {
        for token in [None, Some("")] {
            let mut auth = BearerAuth::new(token).unwrap();
            let request = auth.call(tonic::Request::new(())).unwrap();
            assert!(request.metadata().get("authorization").is_none());
        }
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused() {
        assert!(BearerAuth::new(Some("bad\ntoken")).is_err());
    }

    #[test]
    fn statuses_read_as_code_then_message() {
        let s = tonic::Status::not_found("call abc does not exist\n");
        assert_eq!(describe_status(&s), "NOT_FOUND: call abc does not exist");
        let s = tonic::Status::invalid_argument("to: expected E.164\nlike +14155551212");
        assert_eq!(
            describe_status(&s),
            "INVALID_ARGUMENT: to: expected E.164 like +14155551212"
        );
        assert_eq!(describe_status(&tonic::Status::unauthenticated("")), "UNAUTHENTICATED");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let mut s = tonic::Status::unavailable("tcp connect error");
        s.set_source(std::sync::Arc::new(refused));
        assert_eq!(
            describe_status(&s),
            "UNAVAILABLE: tcp connect error: Connection refused"
        );
    }

    #[test]
    fn details_are_shown_one_line_each() {
        use tonic_types::{ErrorDetails, StatusExt};
        let mut details = ErrorDetails::new();
        details.set_error_info(
            "TWILIO_ERROR",
            "voice-agent",
            [
                ("provider_code".to_string(), "21211".to_string()),
                ("call_id".to_string(), "call_1\n".to_string()),
            ],
        );
        details.add_bad_request_violation("to", "must be E.164");
        let s = tonic::Status::with_error_details(tonic::Code::InvalidArgument, "refused", details);
        assert_eq!(
            describe_details(&s),
            [
                "reason: TWILIO_ERROR call_id=call_1  provider_code=21211",
                "field to: must be E.164"
            ]
        );
        assert!(describe_details(&tonic::Status::not_found("x")).is_empty());
    }

    #[tokio::test]
    async fn connecting_is_lazy() {
        // Nothing listens on port 1; building the client must still succeed.
        assert!(connect("http://127.0.0.1:1", None).is_ok());
        assert!(connect("https://example.invalid", Some("t")).is_ok());
    }
}
