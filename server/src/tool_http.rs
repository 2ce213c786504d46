//! Edge: the HTTPS request that asks a tool's URL for its output. One POST
//! per tool call, signed with `WEBHOOK_SECRET` ([`crate::webhook_signing`]),
//! JSON body `{"call_id","tool_call_id","name","arguments"}` (`arguments` is
//! the AI's JSON, parsed; the raw text when it is not JSON). A 2xx response
//! whose body is JSON of at most [`TOOL_OUTPUT`] bytes is the output; any
//! other answer is an error output the AI hears, saying what went wrong
//! without the URL (it may carry a token in its path).
//!
//! Redirects are not followed: the signature is for the URL the caller
//! gave, and a redirect could point the signed request anywhere. The
//! caller bounds the whole exchange with the tool's timeout.

use crate::call::payload_caps::TOOL_OUTPUT;
use crate::call::tools::ToolOutcome;
use crate::webhook_signing::{self, SigningKey};

/// What the tool's URL is asked.
#[derive(Debug)]
pub struct ToolRequest<'a> {
    /// Our call id.
    pub call_id: &'a str,
    /// The AI's tool call id.
    pub tool_call_id: &'a str,
    /// The tool.
    pub name: &'a str,
    /// The AI's arguments (JSON text).
    pub arguments: &'a str,
}

/// The client that asks tool URLs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ToolHttp {
    client: reqwest::Client,
    key: Option<SigningKey>,
}

impl ToolHttp {
    /// A client signing with `secret` (`None`: no URL tool is accepted, so
    /// nothing is ever sent unsigned).
    pub fn new(secret: Option<&str>) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("voice-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with no custom TLS always builds");
        Self {
            client,
            key: secret.and_then(|s| SigningKey::from_secret(s).ok()),
        }
    }

    /// Whether URL tools can be served (a signing key is configured).
    pub fn signs(&self) -> bool {
        self.key.is_some()
    }

    /// POSTs the tool call to `url`; the output and how it went. No timeout
    /// of its own: the caller races it against the tool's timeout.
    pub async fn ask(&self, url: &str, req: &ToolRequest<'_>) -> (String, ToolOutcome) {
        let Some(key) = &self.key else {
            return failed("the server has no WEBHOOK_SECRET to sign tool requests with");
        };
        let arguments = serde_json::from_str::<serde_json::Value>(req.arguments)
            .unwrap_or_else(|_| serde_json::Value::String(req.arguments.to_string()));
        let body = serde_json::json!({
            "call_id": req.call_id,
            "tool_call_id": req.tool_call_id,
            "name": req.name,
            "arguments": arguments,
        })
        .to_string();
        let id = webhook_signing::new_message_id();
        let timestamp = chrono::Utc::now().timestamp();
        let signature = key.sign(&id, timestamp, body.as_bytes());
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(webhook_signing::ID_HEADER, &id)
            .header(webhook_signing::TIMESTAMP_HEADER, timestamp.to_string())
            .header(webhook_signing::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            // Without the URL: reqwest's message names it.
            Err(e) if e.is_connect() => return failed("the tool's endpoint could not be reached"),
            Err(_) => return failed("the request to the tool's endpoint failed"),
        };
        let status = response.status();
        if !status.is_success() {
            return failed(&format!("the tool's endpoint answered HTTP {}", status.as_u16()));
        }
        if response.content_length().is_some_and(|n| n > TOOL_OUTPUT as u64) {
            return failed(&format!("the tool's answer is over {TOOL_OUTPUT} bytes"));
        }
        // Read at most the cap, whatever the length header said.
        let mut body = Vec::new();
        let mut response = response;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(_) => return failed("the tool's answer broke off"),
            };
            if body.len() + chunk.len() > TOOL_OUTPUT {
                return failed(&format!("the tool's answer is over {TOOL_OUTPUT} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        match String::from_utf8(body) {
            Ok(text) if serde_json::from_str::<serde_json::Value>(&text).is_ok() => (text, ToolOutcome::Answered),
            _ => failed("the tool's answer is not JSON"),
        }
    }
}

/// An error output for the AI: it tells the caller the tool failed.
fn failed(why: &str) -> (String, ToolOutcome) {
    (
        serde_json::json!({"error": format!("the tool failed: {why}")}).to_string(),
        ToolOutcome::Failed,
    )
}
