//! The telephony provider: who dials, hangs up and speaks on a live call.
//! [`Telephony`] is the role; [`twilio`] holds Twilio's REST client, webhook
//! signatures, Media Streams messages and TwiML.

pub mod provider;
pub mod twilio;

use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;

use crate::metrics::{Metrics, ProviderError};

/// What the provider needs to dial a call.
#[derive(Clone, Debug)]
pub struct DialRequest {
    /// Number to call, E.164.
    pub to: String,
    /// Caller id, E.164.
    pub from: String,
    /// URL the provider fetches the call's instructions (TwiML) from.
    pub twiml_url: String,
    /// URL the provider posts status changes to.
    pub status_callback_url: String,
    /// How long the phone may ring.
    pub ring_timeout: Duration,
    /// Longest answered duration.
    pub time_limit: Duration,
    /// Asynchronous answering-machine detection, when the call's voicemail
    /// policy wants it.
    pub machine_detection: Option<MachineDetection>,
}

/// Asynchronous answering-machine detection of a call (protocols.md §1.2, §2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineDetection {
    /// Wait for the end of a machine's greeting (Twilio `DetectMessageEnd`)
    /// rather than report a machine as soon as it is heard (`Enable`).
    pub until_message_end: bool,
    /// Where the provider posts the result.
    pub callback_url: String,
}

/// The provider accepted the call.
#[derive(Clone, Debug)]
pub struct Dialed {
    /// The provider's id of the call.
    pub provider_call_id: String,
}

/// How a provider failure maps to the API (contract §1 "Errors").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// The request was wrong (e.g. Twilio 21211 invalid number).
    InvalidArgument,
    /// The provider refused for a reason the caller can fix (auth, permissions).
    FailedPrecondition,
    /// The provider could not be reached or timed out; retrying may work.
    Unavailable,
    /// Anything else.
    Internal,
}

/// A provider failure.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct TelephonyError {
    /// How it maps to gRPC.
    pub class: FailureClass,
    /// The provider's own code, e.g. "21211".
    pub provider_code: Option<String>,
    /// Readable text including the provider code; never contains secrets.
    pub message: String,
}

/// A telephony provider (Twilio, or the built-in emulator behind the same client).
#[async_trait]
pub trait Telephony: Send + Sync + 'static {
    /// Places an outbound call.
    async fn dial(&self, req: &DialRequest) -> Result<Dialed, TelephonyError>;
    /// Ends a call: cancels it if not answered yet, completes it otherwise.
    async fn hang_up(&self, provider_call_id: &str, answered: bool) -> Result<(), TelephonyError>;
    /// Replaces what a live call does with speaking `text` and hanging up.
    async fn say_and_hang_up(&self, provider_call_id: &str, text: &str) -> Result<(), TelephonyError>;
    /// Replaces what a live call does with dialling another number and
    /// bridging the callee to it (a transfer); the media stream ends.
    async fn transfer(&self, provider_call_id: &str, req: &TransferRequest) -> Result<(), TelephonyError>;
}

impl TransferRequest {
    /// The transfer of call `id` to `to`: our number `from` as the caller id,
    /// the ring timeout of [`crate::call::lifecycle::transfer`], and the
    /// `/twilio/dial-action` route under the public URL `public`.
    pub fn for_call(public: &str, from: &str, id: &crate::call::CallId, to: &str) -> Self {
        Self {
            to: to.to_string(),
            caller_id: from.to_string(),
            ring_timeout_secs: crate::call::lifecycle::transfer::RING_TIMEOUT_SECS,
            action_url: format!("{}/twilio/dial-action?call_id={id}", public.trim_end_matches('/')),
        }
    }
}

/// What the provider needs to hand a live call to another number.
#[derive(Clone, Debug)]
pub struct TransferRequest {
    /// Number to dial, E.164.
    pub to: String,
    /// Caller id the target sees: our number, E.164.
    pub caller_id: String,
    /// How long the target's phone may ring, seconds.
    pub ring_timeout_secs: u32,
    /// URL the provider requests when the dial is over (its outcome).
    pub action_url: String,
}

/// A provider whose failures are counted (`voice_agent_provider_errors_total`
/// with `provider="twilio"`), whoever calls it.
pub struct Metered {
    inner: Arc<dyn Telephony>,
    metrics: Arc<Metrics>,
}

impl Metered {
    /// Counts the failures of `inner` in `metrics`.
    pub fn new(inner: Arc<dyn Telephony>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn count<T>(&self, result: Result<T, TelephonyError>) -> Result<T, TelephonyError> {
        if let Err(e) = &result {
            self.metrics.provider_errors.inc(match e.class {
                FailureClass::InvalidArgument => ProviderError::TwilioInvalidArgument,
                FailureClass::FailedPrecondition => ProviderError::TwilioRefused,
                FailureClass::Unavailable => ProviderError::TwilioUnavailable,
                FailureClass::Internal => ProviderError::TwilioOther,
            });
        }
        result
    }
}

#[async_trait]
impl Telephony for Metered {
    async fn dial(&self, req: &DialRequest) -> Result<Dialed, TelephonyError> {
        self.count(self.inner.dial(req).await)
    }
    async fn hang_up(&self, provider_call_id: &str, answered: bool) -> Result<(), TelephonyError> {
        self.count(self.inner.hang_up(provider_call_id, answered).await)
    }
    async fn say_and_hang_up(&self, provider_call_id: &str, text: &str) -> Result<(), TelephonyError> {
        self.count(self.inner.say_and_hang_up(provider_call_id, text).await)
    }
    async fn transfer(&self, provider_call_id: &str, req: &TransferRequest) -> Result<(), TelephonyError> {
        self.count(self.inner.transfer(provider_call_id, req).await)
    }
}
