//! The API's error statuses with their `google.rpc` details (the richer error
//! model): every error of `VoiceAgentService` carries an `ErrorInfo` (domain
//! [`ERROR_DOMAIN`], a stable [`ErrorReason`], metadata), and a bad field a
//! `BadRequest` naming it. tonic-types encodes them into
//! `grpc-status-details-bin`, which tonic-web passes on to grpc-web clients.
//!
//! Everything here that came from a request or a provider is cut short: the
//! details travel in a header (a trailer for grpc-web), and a client must not
//! be able to make us echo a megabyte back.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::call::hub::HubError;
use crate::call::{CallId, ERROR_DOMAIN, ErrorCode, ErrorReason};
use crate::telephony::{FailureClass, TelephonyError};

/// Most characters of one ErrorInfo metadata value or BadRequest text.
pub const MAX_DETAIL_CHARS: usize = 256;
/// Most characters of a status message built from a provider's text.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// `s` cut to at most `max` characters (on a character boundary), with `…`
/// when something was cut.
pub fn bounded(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// An error status with its ErrorInfo and, for each `(field, description)`
/// of `violations`, a BadRequest field violation.
pub fn api_status(
    code: Code,
    reason: &ErrorReason,
    message: impl Into<String>,
    metadata: &[(&str, &str)],
    violations: &[(&str, &str)],
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| ((*k).to_string(), bounded(v, MAX_DETAIL_CHARS)))
        .collect();
    let mut details = ErrorDetails::new();
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
    for (field, description) in violations {
        details.add_bad_request_violation(bounded(field, MAX_DETAIL_CHARS), bounded(description, MAX_DETAIL_CHARS));
    }
    Status::with_error_details(code, bounded(&message.into(), MAX_MESSAGE_CHARS), details)
}

/// INVALID_ARGUMENT for one field: the message says `field: problem`, the
/// BadRequest names the field, the ErrorInfo's metadata too.
pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    let problem = problem.to_string();
    api_status(
        Code::InvalidArgument,
        &ErrorReason::InvalidArgument,
        format!("{field}: {problem}"),
        &[("field", field)],
        &[(field, &problem)],
    )
}

/// A failure of the call hub; `call` is the call concerned, if any.
pub fn hub_status(e: HubError, call: Option<&CallId>) -> Status {
    let id = call.map(CallId::as_str).unwrap_or_default();
    match e {
        HubError::NotFound => api_status(
            Code::NotFound,
            &ErrorReason::CallNotFound,
            "call not found",
            &[("call_id", id)],
            &[],
        ),
        HubError::Store(e) if e.is_transient() => {
            tracing::warn!(error = %e, "call store unavailable");
            api_status(
                Code::Unavailable,
                &ErrorReason::StoreUnavailable,
                "the call store is unavailable; retry",
                &[("call_id", id)],
                &[],
            )
        }
        HubError::Store(e) => {
            tracing::error!(error = %e, "call store failed");
            api_status(
                Code::Internal,
                &ErrorReason::StoreFailed,
                "the call store failed; see the server log",
                &[("call_id", id)],
                &[],
            )
        }
    }
}

/// A failure of the telephony provider for the stored call `call`: the
/// reason of its [`ErrorCode`], the provider's own code and the call's id in
/// the metadata.
pub fn telephony_status(e: &TelephonyError, call: &CallId) -> Status {
    let code = match e.class {
        FailureClass::InvalidArgument => Code::InvalidArgument,
        FailureClass::FailedPrecondition => Code::FailedPrecondition,
        FailureClass::Unavailable => Code::Unavailable,
        FailureClass::Internal => Code::Internal,
    };
    let error_code = ErrorCode::from_provider(e.provider_code.as_deref());
    let text = error_code.as_str();
    api_status(
        code,
        &ErrorReason::Call(error_code.clone()),
        format!("telephony provider: {}", e.message),
        &[
            ("call_id", call.as_str()),
            ("provider_code", error_code.provider_code().unwrap_or_default()),
            ("code", &text),
        ],
        &[],
    )
}

/// UNAVAILABLE for a new call while this server stops (`reason`, from
/// [`crate::state::Readiness`]): a retry reaches another replica.
pub fn not_taking_calls(reason: &str) -> Status {
    api_status(
        Code::Unavailable,
        &ErrorReason::ServerStopping,
        format!("{reason}; retry (another replica takes the call)"),
        &[],
        &[],
    )
}

/// ALREADY_EXISTS: the request_id of a PlaceCall belongs to `call`, placed by
/// a different request.
pub fn request_id_reused(call: &CallId) -> Status {
    let problem =
        format!("already used by call {call} for a different request; choose a new request_id for a new call");
    api_status(
        Code::AlreadyExists,
        &ErrorReason::RequestIdReused,
        format!("request_id: {problem}"),
        &[("call_id", call.as_str()), ("field", "request_id")],
        &[("request_id", &problem)],
    )
}

/// UNAUTHENTICATED (the API token is missing or wrong).
pub fn unauthenticated(message: &str) -> Status {
    api_status(Code::Unauthenticated, &ErrorReason::Unauthenticated, message, &[], &[])
}

/// PERMISSION_DENIED from the Host/Origin guard.
pub fn permission_denied(message: &str) -> Status {
    api_status(
        Code::PermissionDenied,
        &ErrorReason::PermissionDenied,
        message,
        &[],
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(status: &Status) -> tonic_types::ErrorInfo {
        status.get_error_details().error_info().cloned().expect("an ErrorInfo")
    }

    #[test]
    fn a_bad_field_has_its_reason_and_a_violation() {
        let s = invalid("to", "must be E.164");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "to: must be E.164");
        let i = info(&s);
        assert_eq!(
            (i.reason.as_str(), i.domain.as_str()),
            ("INVALID_ARGUMENT", "voice-agent")
        );
        assert_eq!(i.metadata.get("field").map(String::as_str), Some("to"));
        let bad = s.get_error_details().bad_request().cloned().expect("a BadRequest");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "to");
        assert_eq!(bad.field_violations[0].description, "must be E.164");
    }

    #[test]
    fn a_refused_call_names_the_call_and_the_providers_code() {
        let id = CallId::new();
        let e = TelephonyError {
            class: FailureClass::InvalidArgument,
            provider_code: Some("21211".into()),
            message: "Twilio error 21211: Invalid 'To'".into(),
        };
        let s = telephony_status(&e, &id);
        assert_eq!(s.code(), Code::InvalidArgument);
        let i = info(&s);
        assert_eq!(i.reason, "TWILIO_ERROR");
        assert_eq!(i.metadata.get("call_id").map(String::as_str), Some(id.as_str()));
        assert_eq!(i.metadata.get("provider_code").map(String::as_str), Some("21211"));
        assert_eq!(i.metadata.get("code").map(String::as_str), Some("twilio_21211"));
        let e = TelephonyError {
            class: FailureClass::Unavailable,
            provider_code: None,
            message: "connection refused".into(),
        };
        let i = info(&telephony_status(&e, &id));
        assert_eq!(i.reason, "TELEPHONY_ERROR");
        assert!(!i.metadata.contains_key("provider_code"), "{:?}", i.metadata);
    }

    #[test]
    fn everything_echoed_is_bounded() {
        let huge = "x".repeat(1 << 20);
        let e = TelephonyError {
            class: FailureClass::Internal,
            provider_code: Some(huge.clone()),
            message: huge.clone(),
        };
        let s = telephony_status(&e, &CallId::new());
        assert!(s.message().chars().count() <= MAX_MESSAGE_CHARS + 1);
        assert!(s.details().len() < 4096, "{} bytes of details", s.details().len());
        let s = invalid(&huge, &huge);
        assert!(s.details().len() < 4096, "{} bytes of details", s.details().len());
        assert_eq!(bounded("héllo", 2), "hé…");
        assert_eq!(bounded("hé", 2), "hé");
    }

    #[test]
    fn unknown_calls_and_store_failures_have_their_reasons() {
        let id = CallId::new();
        let i = info(&hub_status(HubError::NotFound, Some(&id)));
        assert_eq!(i.reason, "CALL_NOT_FOUND");
        assert_eq!(i.metadata.get("call_id").map(String::as_str), Some(id.as_str()));
        assert_eq!(info(&unauthenticated("no token")).reason, "UNAUTHENTICATED");
        assert_eq!(info(&permission_denied("origin")).reason, "PERMISSION_DENIED");
    }
}
