//! [`Telephony`] over Twilio's REST API (the real service or the built-in
//! emulator: the same client, only the base URL and credentials differ).

use async_trait::async_trait;

use crate::telephony::twilio::rest::{AsyncAmd, CreateCall, ErrorClass, TwilioClient, TwilioError, UpdateCall};
use crate::telephony::twilio::twiml;
use crate::telephony::{DialRequest, Dialed, FailureClass, Telephony, TelephonyError, TransferRequest};

/// Twilio as the telephony provider.
pub struct Twilio {
    client: TwilioClient,
}

impl Twilio {
    /// A provider over a REST client.
    pub fn new(client: TwilioClient) -> Self {
        Self { client }
    }
}

fn convert(e: TwilioError) -> TelephonyError {
    let class = match e.class() {
        ErrorClass::InvalidArgument => FailureClass::InvalidArgument,
        ErrorClass::FailedPrecondition => FailureClass::FailedPrecondition,
        ErrorClass::Unavailable => FailureClass::Unavailable,
        ErrorClass::Internal => FailureClass::Internal,
    };
    TelephonyError {
        class,
        provider_code: e.code().map(|c| c.to_string()),
        message: e.to_string(),
    }
}

#[async_trait]
impl Telephony for Twilio {
    async fn dial(&self, req: &DialRequest) -> Result<Dialed, TelephonyError> {
        let call = CreateCall {
            to: req.to.clone(),
            from: req.from.clone(),
            url: req.twiml_url.clone(),
            status_callback: req.status_callback_url.clone(),
            timeout: req.ring_timeout,
            time_limit: req.time_limit,
            async_amd: req.machine_detection.as_ref().map(|m| AsyncAmd {
                detect_message_end: m.until_message_end,
                callback: m.callback_url.clone(),
                timeout_secs: crate::call::lifecycle::amd::PROVIDER_TIMEOUT_SECS,
            }),
        };
        let created = self.client.create_call(&call).await.map_err(convert)?;
        Ok(Dialed {
            provider_call_id: created.sid,
        })
    }

    async fn hang_up(&self, provider_call_id: &str, answered: bool) -> Result<(), TelephonyError> {
        // `canceled` only applies while queued or ringing, `completed` after
        // the answer (protocols.md §1.4).
        let update = if answered {
            UpdateCall::Complete
        } else {
            UpdateCall::Cancel
        };
        match self.client.update_call(provider_call_id, &update).await {
            // `canceled` does not touch a call that was answered meanwhile
            // (it answers 200 with the call unchanged): complete it instead.
            Ok(call) if !answered && call.status == "in-progress" => self
                .client
                .update_call(provider_call_id, &UpdateCall::Complete)
                .await
                .map(|_| ())
                .map_err(convert),
            Ok(_) => Ok(()),
            // The call moved on (e.g. it was answered while we cancelled):
            // completing it is what the caller meant.
            Err(TwilioError::Api { .. }) if !answered => self
                .client
                .update_call(provider_call_id, &UpdateCall::Complete)
                .await
                .map(|_| ())
                .map_err(convert),
            Err(e) => Err(convert(e)),
        }
    }

    async fn say_and_hang_up(&self, provider_call_id: &str, text: &str) -> Result<(), TelephonyError> {
        self.client
            .update_call(provider_call_id, &UpdateCall::Twiml(twiml::say_and_hang_up(text)))
            .await
            .map(|_| ())
            .map_err(convert)
    }

    async fn transfer(&self, provider_call_id: &str, req: &TransferRequest) -> Result<(), TelephonyError> {
        let twiml = twiml::dial(&req.to, &req.caller_id, req.ring_timeout_secs, &req.action_url);
        self.client
            .update_call(provider_call_id, &UpdateCall::Twiml(twiml))
            .await
            .map(|_| ())
            .map_err(convert)
    }
}
