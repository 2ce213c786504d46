//! Twilio REST client for the Calls resource (protocols.md §1): create, update
//! (hang up, cancel, replace the TwiML) and fetch a call. The forms and
//! resources it sends and reads are the wire crate's.

use std::fmt;
use std::time::Duration;

pub use voice_agent_wire::twilio::rest::*;

fn from_reqwest(e: reqwest::Error) -> TwilioError {
    if e.is_timeout() {
        return TwilioError::Timeout;
    }
    // Drop the URL: it names the account, and the error text is shown to users.
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    TwilioError::Transport(text)
}

/// Builds an [`TwilioError::Api`] from a non-2xx answer.
fn api_error(http_status: u16, body: &[u8]) -> TwilioError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (code, message, more_info) = match parsed {
        Some(b) => (b.code, b.message.or(b.detail), b.more_info),
        None => (None, None, None),
    };
    let message = message.filter(|m| !m.trim().is_empty()).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(200).collect();
        if text.is_empty() {
            http::StatusCode::from_u16(http_status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_string()
        } else {
            text
        }
    });
    TwilioError::Api {
        http_status,
        code,
        message,
        more_info,
    }
}

/// Twilio's Calls API over HTTPS with Basic auth (§1.1).
#[derive(Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    base_url: String,
    account_sid: String,
    auth_token: String,
}

impl fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the auth token.
        f.debug_struct("TwilioClient")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

impl TwilioClient {
    /// A client of `base_url` (e.g. `https://api.twilio.com` or the
    /// emulator's); every request gives up after `timeout`.
    pub fn new(base_url: &str, account_sid: &str, auth_token: &str, timeout: Duration) -> Result<Self, TwilioError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| TwilioError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
        })
    }

    /// The account the client acts for.
    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }

    fn calls_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls.json",
            self.base_url,
            self.path_segment(&self.account_sid)
        )
    }

    fn call_url(&self, sid: &str) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls/{}.json",
            self.base_url,
            self.path_segment(&self.account_sid),
            self.path_segment(sid)
        )
    }

    /// Percent-encodes an id for a path (ids are alphanumeric; this only
    /// matters for garbage, which must not change the path).
    fn path_segment(&self, s: &str) -> String {
        form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    fn post(&self, url: String, form: &[(&str, String)]) -> reqwest::RequestBuilder {
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form {
            body.append_pair(k, v);
        }
        self.http
            .post(url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.finish())
    }

    /// Sends a request in a client span named `name` (docs/observability.md
    /// "Traces"), carrying the trace context in `traceparent`.
    async fn send(&self, req: reqwest::RequestBuilder, name: &'static str) -> Result<CallResource, TwilioError> {
        use tracing::Instrument as _;
        let span = tracing::info_span!(
            "twilio_rest",
            otel.name = name,
            otel.kind = "client",
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let sent = async {
            let mut trace = http::HeaderMap::new();
            crate::telemetry::inject(&mut trace);
            let resp = req.headers(trace).send().await.map_err(from_reqwest)?;
            let status = resp.status();
            tracing::Span::current().record("http.response.status_code", status.as_u16());
            let body = resp.bytes().await.map_err(from_reqwest)?;
            if !status.is_success() {
                return Err(api_error(status.as_u16(), &body));
            }
            serde_json::from_slice(&body).map_err(|e| TwilioError::Decode(e.to_string()))
        };
        let result = sent.instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    /// `POST …/Calls.json`: places a call (201 + the call, status `queued`).
    pub async fn create_call(&self, call: &CreateCall) -> Result<CallResource, TwilioError> {
        self.send(self.post(self.calls_url(), &call.form()), "Twilio POST Calls")
            .await
    }

    /// `POST …/Calls/{sid}.json`: hangs up, cancels or redirects a call.
    pub async fn update_call(&self, sid: &str, update: &UpdateCall) -> Result<CallResource, TwilioError> {
        self.send(self.post(self.call_url(sid), &update.form()), "Twilio POST Calls/{sid}")
            .await
    }

    /// `GET …/Calls/{sid}.json`.
    pub async fn fetch_call(&self, sid: &str) -> Result<CallResource, TwilioError> {
        let req = self
            .http
            .get(self.call_url(sid))
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .header(http::header::ACCEPT, "application/json");
        self.send(req, "Twilio GET Calls/{sid}").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;

    /// A call to a test number; what the fake Twilio below receives.
    fn sample_create() -> CreateCall {
        CreateCall {
            to: "+14155551212".into(),
            from: "+15005550006".into(),
            url: "https://bridge.example.com/twilio/twiml?call_id=abc".into(),
            status_callback: "https://bridge.example.com/twilio/status?call_id=abc".into(),
            timeout: Duration::from_millis(30_500),
            time_limit: Duration::from_secs(600),
            async_amd: None,
        }
    }
    #[test]
    fn error_bodies_are_read_in_both_shapes() {
        let e = api_error(400, br#"{"code": 21211, "message": "Invalid 'To'", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#);
        assert_eq!(
            e,
            TwilioError::Api {
                http_status: 400,
                code: Some(21211),
                message: "Invalid 'To'".into(),
                more_info: Some("https://www.twilio.com/docs/errors/21211".into()),
            }
        );
        let e = api_error(
            400,
            br#"{"type":"t","title":"Bad","status":400,"code":21211,"detail":"details here"}"#,
        );
        assert!(e.to_string().contains("details here"), "{e}");
        let e = api_error(502, b"<html>bad gateway</html>");
        assert!(e.to_string().contains("bad gateway"));
        let e = api_error(503, b"");
        assert!(e.to_string().contains("Service Unavailable"));
    }

    type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

    async fn fake_twilio(seen: Seen, status: StatusCode, body: &'static str, delay: Duration) -> String {
        let app = Router::new().fallback(post(move |headers: HeaderMap, body_in: Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((headers, body_in));
                tokio::time::sleep(delay).await;
                (status, [("content-type", "application/json")], body).into_response()
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn create_call_sends_basic_auth_and_repeated_events() {
        let seen: Seen = Arc::default();
        let base = fake_twilio(
            seen.clone(),
            StatusCode::CREATED,
            r#"{"sid":"CA11111111111111111111111111111111","status":"queued","direction":"outbound-api","duration":null}"#,
            Duration::ZERO,
        )
        .await;
        let client = TwilioClient::new(
            &base,
            "AC00000000000000000000000000000000",
            "tok",
            Duration::from_secs(5),
        )
        .unwrap();
        let call = client.create_call(&sample_create()).await.unwrap();
        assert_eq!(call.sid, "CA11111111111111111111111111111111");
        assert_eq!(call.status, "queued");
        let (headers, body) = seen.lock().unwrap()[0].clone();
        use base64::Engine as _;
        let expected = base64::engine::general_purpose::STANDARD.encode("AC00000000000000000000000000000000:tok");
        assert_eq!(headers["authorization"], format!("Basic {expected}"));
        assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
        let pairs: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        assert_eq!(pairs.iter().filter(|(k, _)| k == "StatusCallbackEvent").count(), 4);
        assert!(pairs.contains(&("To".into(), "+14155551212".into())));
        assert!(String::from_utf8_lossy(&body).contains("To=%2B14155551212"));
        assert!(!format!("{client:?}").contains("tok"));
    }

    #[tokio::test]
    async fn api_errors_and_timeouts_are_classified() {
        let seen: Seen = Arc::default();
        let base = fake_twilio(
            seen.clone(),
            StatusCode::BAD_REQUEST,
            r#"{"code":21211,"message":"Invalid 'To' Phone Number","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
            Duration::ZERO,
        )
        .await;
        let client = TwilioClient::new(&base, "AC0", "t", Duration::from_secs(5)).unwrap();
        let e = client.update_call("CA1", &UpdateCall::Complete).await.unwrap_err();
        assert_eq!(e.code(), Some(21211));
        assert_eq!(e.class(), ErrorClass::InvalidArgument);
        assert!(
            e.to_string()
                .starts_with("Twilio error 21211: Invalid 'To' Phone Number")
        );

        let slow = fake_twilio(seen.clone(), StatusCode::CREATED, "{}", Duration::from_secs(30)).await;
        let client = TwilioClient::new(&slow, "AC0", "t", Duration::from_millis(200)).unwrap();
        assert_eq!(
            client.create_call(&sample_create()).await.unwrap_err(),
            TwilioError::Timeout
        );

        let bad = fake_twilio(seen, StatusCode::OK, "not json", Duration::ZERO).await;
        let client = TwilioClient::new(&bad, "AC0", "t", Duration::from_secs(5)).unwrap();
        assert!(matches!(
            client.update_call("CA1", &UpdateCall::Cancel).await,
            Err(TwilioError::Decode(_))
        ));

        // Nothing listens on port 9 of localhost: a connect error.
        let client = TwilioClient::new("http://127.0.0.1:9", "AC0", "t", Duration::from_secs(5)).unwrap();
        let e = client.fetch_call("CA1").await.unwrap_err();
        assert!(matches!(e, TwilioError::Transport(_)), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Unavailable);
    }
}
