//! The telephony provider: who dials, hangs up and speaks on a live call.
//! [`Telephony`] is the role; [`twilio`] holds Twilio's REST client, webhook
//! signatures, Media Streams messages and TwiML.

pub mod provider;
pub mod twilio;

use std::time::Duration;

use async_trait::async_trait;

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
}
