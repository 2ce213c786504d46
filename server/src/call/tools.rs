//! The call's tools (functions the agent may call, answered by the calling
//! service) and the desk that keeps this process's pending tool calls.
//!
//! A tool call is answered exactly once: by SubmitToolResult, by the tool's
//! URL, by its timeout, or cancelled when the call (or its AI session) ends.
//! Every one of those goes through [`ToolDesk::resolve`], which settles the
//! race under one lock: the first wins and hands its output to the call's
//! media bridge; the others learn what happened, so SubmitToolResult can say
//! "already answered" or "too late" instead of guessing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::call::CallId;

/// Most tools a call may declare.
pub const MAX_TOOLS: usize = 16;
/// Longest tool name (the APIs' limit), bytes.
pub const MAX_NAME: usize = 64;
/// Longest description, bytes.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest `parameters_json`, bytes.
pub const MAX_PARAMETERS: usize = 8192;
/// Longest URL, bytes.
pub const MAX_URL: usize = 2048;
/// Tool timeout when PlaceCall sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds of PlaceCall's `tool_timeout`.
pub const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(120));
/// Names of the server's own tools, which a call's tool may not take.
pub const BUILT_IN: [&str; 2] = ["end_call", "transfer_call"];
/// Tool calls tracked per call: an AI calling tools in a loop cannot grow
/// the desk without bound; past it, a call gets an error output at once.
pub const MAX_CALLS_PER_CALL: usize = 256;

/// What the AI hears when a tool did not answer in time.
pub const TIMED_OUT_OUTPUT: &str =
    r#"{"error":"the tool did not answer in time; tell the caller you could not get this information now"}"#;

/// A tool of one call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Function name.
    pub name: String,
    /// What it does, for the AI.
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: serde_json::Value,
    /// Where it is answered: `None` = SubmitToolResult, else this URL.
    #[serde(default)]
    pub url: Option<String>,
}

/// How a tool call was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolOutcome {
    /// SubmitToolResult, or the URL with a 2xx status.
    Answered,
    /// No answer within the tool timeout.
    TimedOut,
    /// The URL failed; the output says how.
    Failed,
    /// The call or its AI session ended first.
    Canceled,
}

/// Whether `name` is a valid function name: `^[a-zA-Z0-9_-]{1,64}$`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a tool URL: https, or http to a loopback host (a service on the
/// same machine, and the tests); no credentials in it (they would be logged
/// with the URL and sent unsigned).
pub fn check_url(raw: &str) -> Result<url::Url, String> {
    if raw.len() > MAX_URL {
        return Err(format!("at most {MAX_URL} bytes"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err("must be https:// (http:// only to a loopback host: 127.0.0.1, ::1, localhost)".into()),
        _ => Err("must be an https:// URL".into()),
    }
}

/// An answer for the call's media bridge.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolAnswer {
    /// The tool call.
    pub tool_call_id: String,
    /// What the AI gets.
    pub output: String,
    /// How.
    pub outcome: ToolOutcome,
}

/// Why [`ToolDesk::resolve`] did not take an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// This process runs no media bridge for the call.
    NotHere,
    /// The call made no such tool call (that this process knows of).
    Unknown,
    /// Answered before: the first output stays.
    AlreadyAnswered,
    /// Timed out, failed or cancelled before.
    Expired,
    /// The tool has a URL, which answers it.
    ByUrl,
}

/// Who is answering: SubmitToolResult may not answer a URL tool's call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answerer {
    /// SubmitToolResult.
    Client,
    /// The server itself (the URL, the timeout, the end of the call).
    Server,
}

#[derive(Debug)]
enum Slot {
    Pending { by_url: bool },
    Resolved(ToolOutcome),
}

struct CallDesk {
    tx: mpsc::UnboundedSender<ToolAnswer>,
    slots: HashMap<String, Slot>,
}

/// This process's pending tool calls, per call with a media bridge here. Cheap to clone.
#[derive(Clone, Default)]
pub struct ToolDesk {
    calls: Arc<Mutex<HashMap<CallId, CallDesk>>>,
}

impl ToolDesk {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CallId, CallDesk>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The media bridge of `call` opens its desk: answers arrive on the
    /// receiver until [`ToolDesk::close`].
    pub fn open(&self, call: &CallId) -> mpsc::UnboundedReceiver<ToolAnswer> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(
            call.clone(),
            CallDesk {
                tx,
                slots: HashMap::new(),
            },
        );
        rx
    }

    /// The bridge is done with `call`: later answers are refused as [`Refused::NotHere`].
    pub fn close(&self, call: &CallId) {
        self.lock().remove(call);
    }

    /// A new pending tool call; false when the id is known already or the
    /// call has [`MAX_CALLS_PER_CALL`] tool calls.
    pub fn register(&self, call: &CallId, tool_call_id: &str, by_url: bool) -> bool {
        let mut calls = self.lock();
        let Some(desk) = calls.get_mut(call) else {
            return false;
        };
        if desk.slots.len() >= MAX_CALLS_PER_CALL || desk.slots.contains_key(tool_call_id) {
            return false;
        }
        desk.slots.insert(tool_call_id.to_string(), Slot::Pending { by_url });
        true
    }

    /// Answers a pending tool call: the first answer wins and goes to the
    /// bridge; later ones are refused, saying why.
    pub fn resolve(&self, call: &CallId, answerer: Answerer, answer: ToolAnswer) -> Result<(), Refused> {
        let mut calls = self.lock();
        let desk = calls.get_mut(call).ok_or(Refused::NotHere)?;
        let slot = desk.slots.get_mut(&answer.tool_call_id).ok_or(Refused::Unknown)?;
        match slot {
            Slot::Resolved(ToolOutcome::Answered) => Err(Refused::AlreadyAnswered),
            Slot::Resolved(_) => Err(Refused::Expired),
            Slot::Pending { by_url: true } if answerer == Answerer::Client => Err(Refused::ByUrl),
            Slot::Pending { .. } => {
                *slot = Slot::Resolved(answer.outcome);
                // The bridge holds the receiver until it closes the desk (under this lock).
                let _ = desk.tx.send(answer);
                Ok(())
            }
        }
    }

    /// Marks every pending tool call of `call` cancelled (the bridge tells
    /// the AI and the record itself); their ids, for the record.
    pub fn cancel_pending(&self, call: &CallId) -> Vec<String> {
        let mut calls = self.lock();
        let Some(desk) = calls.get_mut(call) else {
            return vec![];
        };
        let mut ids = vec![];
        for (id, slot) in desk.slots.iter_mut() {
            if matches!(slot, Slot::Pending { .. }) {
                *slot = Slot::Resolved(ToolOutcome::Canceled);
                ids.push(id.clone());
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: &str, outcome: ToolOutcome) -> ToolAnswer {
        ToolAnswer {
            tool_call_id: id.into(),
            output: "{}".into(),
            outcome,
        }
    }

    #[test]
    fn names_follow_the_apis_pattern() {
        assert!(valid_name("order_status"));
        assert!(valid_name("a-B_9"));
        assert!(!valid_name(""));
        assert!(!valid_name("has space"));
        assert!(!valid_name("dot.ted"));
        assert!(!valid_name(&"x".repeat(65)));
        assert!(valid_name(&"x".repeat(64)));
    }

    #[test]
    fn urls_are_https_or_loopback_http() {
        assert!(check_url("https://tools.example.com/order").is_ok());
        assert!(check_url("http://127.0.0.1:8080/t").is_ok());
        assert!(check_url("http://[::1]:8080/t").is_ok());
        assert!(check_url("http://localhost/t").is_ok());
        assert!(check_url("http://tools.example.com/t").is_err());
        assert!(check_url("http://10.0.0.1/t").is_err());
        assert!(check_url("ftp://example.com/t").is_err());
        assert!(check_url("https://user:pw@example.com/t").is_err());
        assert!(check_url("not a url").is_err());
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn the_first_answer_wins_and_the_others_learn_why() {
        let desk = ToolDesk::default();
        let call = CallId::new();
        let mut rx = desk.open(&call);
        assert_eq!(
            desk.resolve(&call, Answerer::Client, answer("c1", ToolOutcome::Answered)),
            Err(Refused::Unknown)
        );
        assert!(desk.register(&call, "c1", false));
        assert!(!desk.register(&call, "c1", false), "an id is registered once");
        assert_eq!(
            desk.resolve(&call, Answerer::Client, answer("c1", ToolOutcome::Answered)),
            Ok(())
        );
        assert_eq!(rx.try_recv().map(|a| a.outcome), Ok(ToolOutcome::Answered));
        assert_eq!(
            desk.resolve(&call, Answerer::Client, answer("c1", ToolOutcome::Answered)),
            Err(Refused::AlreadyAnswered)
        );
        assert_eq!(
            desk.resolve(&call, Answerer::Server, answer("c1", ToolOutcome::TimedOut)),
            Err(Refused::AlreadyAnswered)
        );
        assert!(rx.try_recv().is_err(), "only the first answer reaches the bridge");
        // A timeout first: the late submit is expired.
        assert!(desk.register(&call, "c2", false));
        assert_eq!(
            desk.resolve(&call, Answerer::Server, answer("c2", ToolOutcome::TimedOut)),
            Ok(())
        );
        assert_eq!(
            desk.resolve(&call, Answerer::Client, answer("c2", ToolOutcome::Answered)),
            Err(Refused::Expired)
        );
        // A URL tool's call is not the client's to answer.
        assert!(desk.register(&call, "c3", true));
        assert_eq!(
            desk.resolve(&call, Answerer::Client, answer("c3", ToolOutcome::Answered)),
            Err(Refused::ByUrl)
        );
        assert_eq!(desk.cancel_pending(&call), vec!["c3".to_string()]);
        assert_eq!(
            desk.resolve(&call, Answerer::Server, answer("c3", ToolOutcome::Answered)),
            Err(Refused::Expired)
        );
        desk.close(&call);
        assert_eq!(
            desk.resolve(&call, Answerer::Client, answer("c1", ToolOutcome::Answered)),
            Err(Refused::NotHere)
        );
        assert!(!desk.register(&call, "c4", false));
    }

    #[test]
    fn a_call_tracks_a_bounded_number_of_tool_calls() {
        let desk = ToolDesk::default();
        let call = CallId::new();
        let _rx = desk.open(&call);
        for i in 0..MAX_CALLS_PER_CALL {
            assert!(desk.register(&call, &format!("c{i}"), false));
        }
        assert!(!desk.register(&call, "one_more", false));
    }
}
