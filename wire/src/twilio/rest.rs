//! Twilio REST API for the Calls resource (protocols.md §1), as data: the
//! create and update forms, the call resource, error bodies and their classes.
//! The HTTP client is the server's (`telephony::twilio::rest`); the emulator
//! serves the same shapes.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The call-progress events we ask for (§1.2, enum `call_enum_event`); sent
/// as one `StatusCallbackEvent` form field per value.
pub const STATUS_CALLBACK_EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

/// Twilio caps `Timeout` at 600 seconds (§1.2).
const MAX_RING_TIMEOUT_SECS: u64 = 600;
/// Twilio's longest call, 4 hours; also its `TimeLimit` default.
const MAX_TIME_LIMIT_SECS: u64 = 4 * 3600;

/// What to dial (form fields of `CreateCall`, §1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateCall {
    /// Number to call, E.164.
    pub to: String,
    /// Caller id, E.164.
    pub from: String,
    /// Where Twilio fetches the TwiML (POST) once the call is answered.
    pub url: String,
    /// Where Twilio posts status callbacks; empty = none.
    pub status_callback: String,
    /// How long the phone may ring (`Timeout`, whole seconds, 1–600).
    pub timeout: Duration,
    /// Longest answered duration (`TimeLimit`, whole seconds, 1–14400).
    pub time_limit: Duration,
    /// Asynchronous answering-machine detection; `None` = no detection.
    pub async_amd: Option<AsyncAmd>,
}

/// Asynchronous answering-machine detection (§1.2 `MachineDetection`,
/// `AsyncAmd`, `AsyncAmdStatusCallback`; the result: §2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsyncAmd {
    /// `DetectMessageEnd` (report a machine once its greeting ended, the
    /// beep: needed to leave a message) rather than `Enable`.
    pub detect_message_end: bool,
    /// `AsyncAmdStatusCallback`, posted the result.
    pub callback: String,
    /// `MachineDetectionTimeout`, whole seconds.
    pub timeout_secs: u64,
}

fn whole_seconds(d: Duration, max: u64) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.clamp(1, max).to_string()
}

impl CreateCall {
    /// The form fields in the order sent; `StatusCallbackEvent` repeats once
    /// per event (§1.2).
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("To", self.to.clone()),
            ("From", self.from.clone()),
            ("Url", self.url.clone()),
            ("Method", "POST".to_string()),
        ];
        if !self.status_callback.is_empty() {
            f.push(("StatusCallback", self.status_callback.clone()));
            f.push(("StatusCallbackMethod", "POST".to_string()));
            for e in STATUS_CALLBACK_EVENTS {
                f.push(("StatusCallbackEvent", e.to_string()));
            }
        }
        f.push(("Timeout", whole_seconds(self.timeout, MAX_RING_TIMEOUT_SECS)));
        f.push(("TimeLimit", whole_seconds(self.time_limit, MAX_TIME_LIMIT_SECS)));
        if let Some(amd) = &self.async_amd {
            let mode = if amd.detect_message_end {
                "DetectMessageEnd"
            } else {
                "Enable"
            };
            f.push(("MachineDetection", mode.to_string()));
            f.push(("MachineDetectionTimeout", amd.timeout_secs.clamp(3, 59).to_string()));
            f.push(("AsyncAmd", "true".to_string()));
            f.push(("AsyncAmdStatusCallback", amd.callback.clone()));
            f.push(("AsyncAmdStatusCallbackMethod", "POST".to_string()));
        }
        f
    }
}

/// A change to a live call (`UpdateCall`, §1.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateCall {
    /// `Status=completed`: hang up an answered call.
    Complete,
    /// `Status=canceled`: cancel a call still queued or ringing.
    Cancel,
    /// `Twiml=…`: replace what the call does (this ends a `<Connect><Stream>`).
    Twiml(String),
}

impl UpdateCall {
    /// The form fields sent.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        match self {
            UpdateCall::Complete => vec![("Status", "completed".into())],
            UpdateCall::Cancel => vec![("Status", "canceled".into())],
            UpdateCall::Twiml(t) => vec![("Twiml", t.clone())],
        }
    }
}

/// The Call resource (§1.3); every field but `sid` may be null or absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallResource {
    /// CA… id.
    pub sid: String,
    /// `queued | ringing | in-progress | completed | busy | failed | no-answer | canceled`.
    #[serde(default)]
    pub status: String,
    /// AC… account.
    #[serde(default)]
    pub account_sid: Option<String>,
    /// Called number.
    #[serde(default)]
    pub to: Option<String>,
    /// Called number, formatted.
    #[serde(default)]
    pub to_formatted: Option<String>,
    /// Caller id.
    #[serde(default)]
    pub from: Option<String>,
    /// Caller id, formatted.
    #[serde(default)]
    pub from_formatted: Option<String>,
    /// `outbound-api` for calls we create.
    #[serde(default)]
    pub direction: Option<String>,
    /// "2010-04-01".
    #[serde(default)]
    pub api_version: Option<String>,
    /// RFC 2822.
    #[serde(default)]
    pub date_created: Option<String>,
    /// RFC 2822.
    #[serde(default)]
    pub date_updated: Option<String>,
    /// RFC 2822, when answered.
    #[serde(default)]
    pub start_time: Option<String>,
    /// RFC 2822, when ended.
    #[serde(default)]
    pub end_time: Option<String>,
    /// Seconds, as a string.
    #[serde(default)]
    pub duration: Option<String>,
    /// Cost, as a string.
    #[serde(default)]
    pub price: Option<String>,
    /// Currency of `price`.
    #[serde(default)]
    pub price_unit: Option<String>,
    /// AMD result.
    #[serde(default)]
    pub answered_by: Option<String>,
    /// Parent leg.
    #[serde(default)]
    pub parent_call_sid: Option<String>,
    /// PN… of `from`.
    #[serde(default)]
    pub phone_number_sid: Option<String>,
    /// Forwarding number.
    #[serde(default)]
    pub forwarded_from: Option<String>,
    /// Group.
    #[serde(default)]
    pub group_sid: Option<String>,
    /// Caller name lookup.
    #[serde(default)]
    pub caller_name: Option<String>,
    /// Milliseconds queued, as a string.
    #[serde(default)]
    pub queue_time: Option<String>,
    /// Trunk.
    #[serde(default)]
    pub trunk_sid: Option<String>,
    /// Path of this resource.
    #[serde(default)]
    pub uri: Option<String>,
    /// Paths of sub-resources.
    #[serde(default)]
    pub subresource_uris: Option<BTreeMap<String, String>>,
}

/// The 2010 API's JSON error body (§1.5).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Twilio error number.
    #[serde(default)]
    pub code: Option<u32>,
    /// Readable text.
    #[serde(default)]
    pub message: Option<String>,
    /// `https://www.twilio.com/docs/errors/{code}`.
    #[serde(default)]
    pub more_info: Option<String>,
    /// HTTP status.
    #[serde(default)]
    pub status: Option<u16>,
    /// RFC 9457 bodies of newer APIs carry the text here (§1.5).
    #[serde(default)]
    pub detail: Option<String>,
}

/// A failed Twilio request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TwilioError {
    /// Twilio answered with an error status.
    Api {
        /// HTTP status.
        http_status: u16,
        /// Twilio error number, e.g. 21211.
        code: Option<u32>,
        /// Twilio's text.
        message: String,
        /// Link to the error's page.
        more_info: Option<String>,
    },
    /// No answer within the client's timeout.
    Timeout,
    /// Twilio could not be reached (DNS, connect, TLS, reset).
    Transport(String),
    /// Twilio answered 2xx with a body we cannot read.
    Decode(String),
}

/// How a failure maps to the API (contract §1 "Errors").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request was wrong (bad or unreachable number).
    InvalidArgument,
    /// Twilio refused for a reason the operator can fix (credentials, account, call state).
    FailedPrecondition,
    /// Twilio could not be reached, timed out or is overloaded; retrying may work.
    Unavailable,
    /// Anything else.
    Internal,
}

/// Errors about the number being called: the caller of `PlaceCall` can fix them.
const NUMBER_ERRORS: &[u32] = &[
    13223, // Dial: invalid phone number format
    13224, // Dial: invalid phone number
    21201, // No 'To' number specified
    21211, // Invalid 'To' phone number
    21214, // 'To' phone number cannot be reached
    21217, // Phone number does not appear to be valid
    21401, // Invalid phone number
    21407, // This phone number type does not support voice
    21421, // PhoneNumber is invalid
    21612, // Cannot route to this number
    21614, // 'To' number is not a valid mobile number
];

/// Errors about our account or configuration, or the call's state.
const ACCOUNT_ERRORS: &[u32] = &[
    20003, // Authentication failed
    20005, // Account not active
    21210, // 'From' phone number not verified
    21212, // Invalid 'From' phone number
    21213, // 'From' phone number is required
    21215, // Geo permissions: account not authorised to call this number
    21216, // Account not allowed to call this number
    21219, // Trial account: 'To' number not verified
    21220, // Invalid call state (e.g. redirecting an ended call)
    21606, // 'From' number is not a valid phone number for this account
    21608, // Trial account: unverified number
];

impl TwilioError {
    /// How this failure maps to the API.
    pub fn class(&self) -> ErrorClass {
        match self {
            TwilioError::Timeout | TwilioError::Transport(_) => ErrorClass::Unavailable,
            TwilioError::Decode(_) => ErrorClass::Internal,
            TwilioError::Api { http_status, code, .. } => {
                if *http_status == 429 || *http_status >= 500 {
                    return ErrorClass::Unavailable;
                }
                match code {
                    Some(c) if NUMBER_ERRORS.contains(c) => return ErrorClass::InvalidArgument,
                    Some(c) if ACCOUNT_ERRORS.contains(c) => return ErrorClass::FailedPrecondition,
                    _ => {}
                }
                match http_status {
                    400 | 422 => ErrorClass::InvalidArgument,
                    401..=499 => ErrorClass::FailedPrecondition,
                    _ => ErrorClass::Internal,
                }
            }
        }
    }

    /// Twilio's error number, if it sent one.
    pub fn code(&self) -> Option<u32> {
        match self {
            TwilioError::Api { code, .. } => *code,
            _ => None,
        }
    }
}

impl fmt::Display for TwilioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TwilioError::Api {
                http_status,
                code: Some(code),
                message,
                ..
            } => write!(f, "Twilio error {code}: {message} (HTTP {http_status})"),
            TwilioError::Api {
                http_status, message, ..
            } => write!(f, "Twilio HTTP {http_status}: {message}"),
            TwilioError::Timeout => f.write_str("Twilio did not answer in time"),
            TwilioError::Transport(e) => write!(f, "cannot reach Twilio: {e}"),
            TwilioError::Decode(e) => write!(f, "unreadable Twilio response: {e}"),
        }
    }
}

impl std::error::Error for TwilioError {}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::Value;

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

    fn spec() -> Value {
        let path = crate::specs::spec_path("twilio_api_v2010.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap();
                &spec["components"]["schemas"][name]
            }
            None => schema,
        }
    }

    /// Every field exists in the operation's form schema and has a valid value.
    fn check_against_spec(spec: &Value, operation_id: &str, form: &[(&'static str, String)]) {
        let op = spec["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|ops| ops.as_object().unwrap().values())
            .find(|op| op["operationId"] == operation_id)
            .unwrap_or_else(|| panic!("{operation_id} not in the spec"));
        let props = &op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["properties"];
        for (name, value) in form {
            let prop = resolve(spec, &props[*name]);
            assert!(prop.is_object(), "{operation_id}: {name} is not a parameter");
            let allowed = match (*name, prop["type"].as_str()) {
                // The array's items are plain strings in the spec; its enum is `call_enum_event`.
                ("StatusCallbackEvent", _) => spec["components"]["schemas"]["call_enum_event"]["enum"].clone(),
                (_, Some("integer")) => {
                    assert!(value.parse::<i64>().is_ok(), "{name}={value} is not an integer");
                    Value::Null
                }
                _ => prop["enum"].clone(),
            };
            if let Some(list) = allowed.as_array() {
                assert!(
                    list.iter().any(|v| v == value),
                    "{operation_id}: {name}={value} not in {list:?}"
                );
            }
        }
    }

    #[test]
    fn create_call_form_matches_the_openapi_spec() {
        let form = sample_create().form();
        check_against_spec(&spec(), "CreateCall", &form);
        let events: Vec<&str> = form
            .iter()
            .filter(|(k, _)| *k == "StatusCallbackEvent")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(events, STATUS_CALLBACK_EVENTS);
        let get = |k: &str| form.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("Timeout").as_deref(), Some("31"), "rounded up to whole seconds");
        assert_eq!(get("TimeLimit").as_deref(), Some("600"));
        assert_eq!(get("Method").as_deref(), Some("POST"));
        assert_eq!(get("StatusCallbackMethod").as_deref(), Some("POST"));
        assert!(get("MachineDetection").is_none(), "no detection unless asked for");
    }

    #[test]
    fn async_amd_fields_match_the_openapi_spec() {
        let spec = spec();
        for detect_message_end in [false, true] {
            let mut c = sample_create();
            c.async_amd = Some(AsyncAmd {
                detect_message_end,
                callback: "https://bridge.example.com/twilio/amd?call_id=abc".into(),
                timeout_secs: 30,
            });
            let form = c.form();
            check_against_spec(&spec, "CreateCall", &form);
            let get = |k: &str| form.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
            // The spec types MachineDetection as a plain string; its
            // description names the two values.
            let mode = get("MachineDetection").unwrap();
            let described = spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Calls.json"]["post"]["requestBody"]
                ["content"]["application/x-www-form-urlencoded"]["schema"]["properties"]["MachineDetection"]
                ["description"]
                .as_str()
                .unwrap();
            assert!(described.contains(&format!("`{mode}`")), "{mode} not in {described}");
            assert_eq!(
                mode,
                if detect_message_end {
                    "DetectMessageEnd"
                } else {
                    "Enable"
                }
            );
            assert_eq!(get("AsyncAmd").as_deref(), Some("true"));
            assert_eq!(get("AsyncAmdStatusCallbackMethod").as_deref(), Some("POST"));
            assert_eq!(get("MachineDetectionTimeout").as_deref(), Some("30"));
            assert_eq!(
                get("AsyncAmdStatusCallback").as_deref(),
                Some("https://bridge.example.com/twilio/amd?call_id=abc")
            );
        }
    }

    #[test]
    fn update_call_forms_match_the_openapi_spec() {
        let spec = spec();
        for u in [
            UpdateCall::Complete,
            UpdateCall::Cancel,
            UpdateCall::Twiml("<Response/>".into()),
        ] {
            check_against_spec(&spec, "UpdateCall", &u.form());
        }
    }

    #[test]
    fn timeouts_are_clamped() {
        let mut c = sample_create();
        c.timeout = Duration::from_secs(10_000);
        c.time_limit = Duration::ZERO;
        let f = c.form();
        assert!(f.contains(&("Timeout", "600".into())));
        assert!(f.contains(&("TimeLimit", "1".into())));
    }

    #[test]
    fn error_classes() {
        let api = |s: u16, c: Option<u32>| TwilioError::Api {
            http_status: s,
            code: c,
            message: "m".into(),
            more_info: None,
        };
        assert_eq!(api(400, Some(21211)).class(), ErrorClass::InvalidArgument);
        assert_eq!(api(400, Some(21201)).class(), ErrorClass::InvalidArgument);
        assert_eq!(api(400, Some(21217)).class(), ErrorClass::InvalidArgument);
        assert_eq!(api(400, Some(21612)).class(), ErrorClass::InvalidArgument);
        assert_eq!(api(401, Some(20003)).class(), ErrorClass::FailedPrecondition);
        assert_eq!(api(403, None).class(), ErrorClass::FailedPrecondition);
        assert_eq!(api(400, Some(21220)).class(), ErrorClass::FailedPrecondition);
        assert_eq!(api(500, Some(20500)).class(), ErrorClass::Unavailable);
        assert_eq!(api(503, None).class(), ErrorClass::Unavailable);
        assert_eq!(api(429, Some(20429)).class(), ErrorClass::Unavailable);
        assert_eq!(TwilioError::Timeout.class(), ErrorClass::Unavailable);
        assert_eq!(TwilioError::Transport("x".into()).class(), ErrorClass::Unavailable);
        assert_eq!(TwilioError::Decode("x".into()).class(), ErrorClass::Internal);
        assert_eq!(api(400, Some(21211)).to_string(), "Twilio error 21211: m (HTTP 400)");
    }
}
