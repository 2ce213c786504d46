//! The `code` of the error and notice events clients see (`CallError.code`,
//! `Notice.code`). Every code the server emits is a variant here, spelled once
//! in [`ErrorCode::as_str`] / [`NoticeCode::as_str`]: clients match on these
//! strings, so they must never change.

use std::borrow::Cow;
use std::fmt;

/// The stable code of an [`crate::call::EventKind::Error`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Twilio reported an error of its own (REST or status callback):
    /// `twilio_{code}`. Kept as Twilio sent it (digits, e.g. `21211`), so the
    /// text on the wire is exactly Twilio's code.
    Twilio(String),
    /// The telephony provider failed without a code of its own: `telephony_error`.
    Telephony,
    /// Twilio sent no `start` in time after the media upgrade: `media_no_start`.
    MediaNoStart,
    /// The media stream closed before `start`: `media_closed`.
    MediaClosed,
    /// The media stream's `start` named another call or carried a wrong secret: `media_refused`.
    MediaRefused,
    /// Reading or writing the media stream failed: `media_socket_error`.
    MediaSocketError,
    /// Twilio sent a message we could not read: `media_malformed`.
    MediaMalformed,
    /// The realtime AI refused our credentials: `ai_auth_failed`.
    AiAuthFailed,
    /// The realtime AI refused the session: `ai_refused`.
    AiRefused,
    /// The realtime AI could not be reached or timed out: `ai_unavailable`.
    AiUnavailable,
    /// The realtime AI closed the connection mid-call: `ai_disconnected`.
    AiDisconnected,
    /// The realtime AI's socket stopped taking data: `ai_socket_error`.
    AiSocketError,
    /// The callee's words could not be transcribed: `ai_transcription_failed`.
    AiTranscriptionFailed,
    /// An `error` event of the realtime AI: `ai_` + its code (or its type when
    /// it has no code), e.g. `ai_invalid_request_error`.
    Ai(String),
}

impl ErrorCode {
    /// The code of a telephony failure: Twilio's own code when it gave one
    /// (an empty one counts as none), `telephony_error` otherwise.
    pub fn from_provider(provider_code: Option<&str>) -> Self {
        match provider_code {
            Some(code) if !code.is_empty() => Self::Twilio(code.to_string()),
            _ => Self::Telephony,
        }
    }

    /// The `reason` of the `google.rpc.ErrorInfo` an API error caused by
    /// this failure carries: the code in UPPER_SNAKE with the provider's own
    /// part left out (it goes to the ErrorInfo metadata, see
    /// [`ErrorCode::provider_code`]), so the set of reasons stays fixed.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Twilio(_) => "TWILIO_ERROR",
            Self::Ai(_) => "AI_ERROR",
            Self::Telephony => "TELEPHONY_ERROR",
            Self::MediaNoStart => "MEDIA_NO_START",
            Self::MediaClosed => "MEDIA_CLOSED",
            Self::MediaRefused => "MEDIA_REFUSED",
            Self::MediaSocketError => "MEDIA_SOCKET_ERROR",
            Self::MediaMalformed => "MEDIA_MALFORMED",
            Self::AiAuthFailed => "AI_AUTH_FAILED",
            Self::AiRefused => "AI_REFUSED",
            Self::AiUnavailable => "AI_UNAVAILABLE",
            Self::AiDisconnected => "AI_DISCONNECTED",
            Self::AiSocketError => "AI_SOCKET_ERROR",
            Self::AiTranscriptionFailed => "AI_TRANSCRIPTION_FAILED",
        }
    }

    /// The provider's own code inside this one (Twilio's `21211`, the AI's
    /// `invalid_request_error`), if any.
    pub fn provider_code(&self) -> Option<&str> {
        match self {
            Self::Twilio(code) | Self::Ai(code) => Some(code),
            _ => None,
        }
    }

    /// The text clients see.
    pub fn as_str(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Self::Twilio(code) => return Cow::Owned(format!("twilio_{code}")),
            Self::Ai(code) => return Cow::Owned(format!("ai_{code}")),
            Self::Telephony => "telephony_error",
            Self::MediaNoStart => "media_no_start",
            Self::MediaClosed => "media_closed",
            Self::MediaRefused => "media_refused",
            Self::MediaSocketError => "media_socket_error",
            Self::MediaMalformed => "media_malformed",
            Self::AiAuthFailed => "ai_auth_failed",
            Self::AiRefused => "ai_refused",
            Self::AiUnavailable => "ai_unavailable",
            Self::AiDisconnected => "ai_disconnected",
            Self::AiSocketError => "ai_socket_error",
            Self::AiTranscriptionFailed => "ai_transcription_failed",
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> Self {
        code.as_str().into_owned()
    }
}

/// The `domain` of every `google.rpc.ErrorInfo` the API sends.
pub const ERROR_DOMAIN: &str = "voice-agent";

/// The `reason` of the `google.rpc.ErrorInfo` on an API error status
/// (UPPER_SNAKE; clients match on it, so a reason never changes meaning).
/// Failures of a call's telephony carry their [`ErrorCode`]'s reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorReason {
    /// A request field is wrong; a `google.rpc.BadRequest` names it: `INVALID_ARGUMENT`.
    InvalidArgument,
    /// No call has this id: `CALL_NOT_FOUND`.
    CallNotFound,
    /// The API token is missing or wrong: `UNAUTHENTICATED`.
    Unauthenticated,
    /// The Host/Origin guard refused a browser request: `PERMISSION_DENIED`.
    PermissionDenied,
    /// The backend asked for is not offered by this server: `BACKEND_NOT_AVAILABLE`.
    BackendNotAvailable,
    /// The call store failed: `STORE_FAILED`.
    StoreFailed,
    /// The call store could not be reached in time (no connection, a broken
    /// one, a busy database); retrying may succeed: `STORE_UNAVAILABLE`.
    StoreUnavailable,
    /// This server is draining or shutting down and takes no new call: `SERVER_STOPPING`.
    ServerStopping,
    /// A PlaceCall's `request_id` belongs to a call placed by a different request: `REQUEST_ID_REUSED`.
    RequestIdReused,
    /// SubmitToolResult named a tool call the call never made: `TOOL_CALL_NOT_FOUND`.
    ToolCallNotFound,
    /// SubmitToolResult for a tool call that already has its output (the
    /// first stays): `TOOL_RESULT_ALREADY_SUBMITTED`.
    ToolResultAlreadySubmitted,
    /// SubmitToolResult after the tool call timed out, was cancelled or the
    /// call ended: `TOOL_CALL_EXPIRED`.
    ToolCallExpired,
    /// SubmitToolResult for a tool answered by its URL: `TOOL_ANSWERED_BY_URL`.
    ToolAnsweredByUrl,
    /// SubmitToolResult reached a replica that does not run the call's media: `TOOL_CALL_ELSEWHERE`.
    ToolCallElsewhere,
    /// TransferCall on a call that is not in progress, is ending, or is
    /// being transferred already: `CALL_NOT_LIVE`.
    CallNotLive,
    /// A failure with a code of a call's event log (telephony): its reason.
    Call(ErrorCode),
}

impl ErrorReason {
    /// The text clients see.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::CallNotFound => "CALL_NOT_FOUND",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::BackendNotAvailable => "BACKEND_NOT_AVAILABLE",
            Self::StoreFailed => "STORE_FAILED",
            Self::StoreUnavailable => "STORE_UNAVAILABLE",
            Self::ServerStopping => "SERVER_STOPPING",
            Self::RequestIdReused => "REQUEST_ID_REUSED",
            Self::ToolCallNotFound => "TOOL_CALL_NOT_FOUND",
            Self::ToolResultAlreadySubmitted => "TOOL_RESULT_ALREADY_SUBMITTED",
            Self::ToolCallExpired => "TOOL_CALL_EXPIRED",
            Self::ToolAnsweredByUrl => "TOOL_ANSWERED_BY_URL",
            Self::ToolCallElsewhere => "TOOL_CALL_ELSEWHERE",
            Self::CallNotLive => "CALL_NOT_LIVE",
            Self::Call(code) => code.reason(),
        }
    }
}

/// The stable code of an [`crate::call::EventKind::Notice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoticeCode {
    /// The call went to a built-in emulator: `emulated`.
    Emulated,
    /// The realtime AI dropped and the call carried on with a new session: `ai_reconnected`.
    AiReconnected,
}

impl NoticeCode {
    /// The text clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Emulated => "emulated",
            Self::AiReconnected => "ai_reconnected",
        }
    }
}

impl fmt::Display for NoticeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<NoticeCode> for String {
    fn from(code: NoticeCode) -> Self {
        code.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_the_strings_clients_see() {
        let table = [
            (ErrorCode::Twilio("21211".into()), "twilio_21211"),
            (ErrorCode::Twilio("30008".into()), "twilio_30008"),
            (ErrorCode::Telephony, "telephony_error"),
            (ErrorCode::MediaNoStart, "media_no_start"),
            (ErrorCode::MediaClosed, "media_closed"),
            (ErrorCode::MediaRefused, "media_refused"),
            (ErrorCode::MediaSocketError, "media_socket_error"),
            (ErrorCode::MediaMalformed, "media_malformed"),
            (ErrorCode::AiAuthFailed, "ai_auth_failed"),
            (ErrorCode::AiRefused, "ai_refused"),
            (ErrorCode::AiUnavailable, "ai_unavailable"),
            (ErrorCode::AiDisconnected, "ai_disconnected"),
            (ErrorCode::AiSocketError, "ai_socket_error"),
            (ErrorCode::AiTranscriptionFailed, "ai_transcription_failed"),
            (
                ErrorCode::Ai("invalid_request_error".into()),
                "ai_invalid_request_error",
            ),
        ];
        for (code, text) in table {
            assert_eq!(code.as_str(), text);
            assert_eq!(code.to_string(), text);
            assert_eq!(String::from(code), text);
        }
    }

    #[test]
    fn reasons_are_upper_snake_and_leave_the_provider_code_to_the_metadata() {
        let codes = [
            ErrorCode::Twilio("21211".into()),
            ErrorCode::Telephony,
            ErrorCode::MediaNoStart,
            ErrorCode::MediaClosed,
            ErrorCode::MediaRefused,
            ErrorCode::MediaSocketError,
            ErrorCode::MediaMalformed,
            ErrorCode::AiAuthFailed,
            ErrorCode::AiRefused,
            ErrorCode::AiUnavailable,
            ErrorCode::AiDisconnected,
            ErrorCode::AiSocketError,
            ErrorCode::AiTranscriptionFailed,
            ErrorCode::Ai("invalid_request_error".into()),
        ];
        for code in codes {
            let reason = code.reason();
            assert!(reason.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{reason}");
            match code.provider_code() {
                // The code without its provider part, upper-cased.
                Some(own) => {
                    let prefix = code
                        .as_str()
                        .strip_suffix(own)
                        .map(|p| p.trim_end_matches('_').to_owned());
                    assert_eq!(
                        prefix.map(|p| format!("{}_ERROR", p.to_uppercase())).as_deref(),
                        Some(reason)
                    );
                }
                None => assert_eq!(code.as_str().to_uppercase(), reason),
            }
        }
        assert_eq!(ErrorCode::Twilio("21211".into()).provider_code(), Some("21211"));
        assert_eq!(ErrorReason::Call(ErrorCode::Telephony).as_str(), "TELEPHONY_ERROR");
        assert_eq!(ErrorReason::CallNotFound.as_str(), "CALL_NOT_FOUND");
    }

    #[test]
    fn provider_failures_carry_twilios_code_or_the_generic_one() {
        assert_eq!(
            ErrorCode::from_provider(Some("21211")),
            ErrorCode::Twilio("21211".into())
        );
        assert_eq!(ErrorCode::from_provider(Some("21211")).as_str(), "twilio_21211");
        assert_eq!(ErrorCode::from_provider(Some("")).as_str(), "telephony_error");
        assert_eq!(ErrorCode::from_provider(None).as_str(), "telephony_error");
    }

    #[test]
    fn notice_codes_are_the_strings_clients_see() {
        assert_eq!(NoticeCode::Emulated.as_str(), "emulated");
        assert_eq!(NoticeCode::AiReconnected.to_string(), "ai_reconnected");
        assert_eq!(String::from(NoticeCode::Emulated), "emulated");
    }
}
