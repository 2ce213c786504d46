//! Wire format: Standard Webhooks signatures (standardwebhooks.com, spec
//! v1.0.0), no I/O. A request carries `webhook-id` (unique per message),
//! `webhook-timestamp` (Unix seconds) and `webhook-signature`: `v1,` and the
//! base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`, keyed with the
//! base64-decoded part of the secret after `whsec_`. The signature header may
//! list several space-separated signatures (key rotation); one match is
//! enough. Used by the HTTPS tools (bridge) and reusable by any other
//! outgoing webhook.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::hmac;

/// Header names.
pub const ID_HEADER: &str = "webhook-id";
/// Unix seconds of the signing.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// `v1,<base64>` (space-separated when several).
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// How far a receiver accepts a timestamp from its clock (the spec's
/// recommended tolerance: 5 minutes), against replays.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// A signing key from a `whsec_…` secret.
#[derive(Clone)]
pub struct SigningKey(hmac::Key);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

/// Why a secret or a signature is not acceptable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// The secret is not `whsec_` + base64 of at least 16 bytes.
    #[error("must be whsec_ followed by the base64 of a key of 16 to 256 bytes")]
    BadSecret,
    /// A header is missing.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// `webhook-timestamp` is not Unix seconds.
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    /// The timestamp is too far from now.
    #[error("webhook-timestamp is more than {TOLERANCE_SECS} s away from now")]
    Stale,
    /// No signature matches.
    #[error("no webhook-signature matches")]
    Mismatch,
}

impl SigningKey {
    /// The key of a `whsec_<base64>` secret. The prefix is required: it is
    /// how the spec tells a secret from other strings, and a bare base64
    /// string is most likely a mistake in a configuration.
    pub fn from_secret(secret: &str) -> Result<Self, SigningError> {
        let b64 = secret.strip_prefix("whsec_").ok_or(SigningError::BadSecret)?;
        let key = B64.decode(b64).map_err(|_| SigningError::BadSecret)?;
        if !(16..=256).contains(&key.len()) {
            return Err(SigningError::BadSecret);
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }

    /// The `webhook-signature` value (`v1,<base64>`) of a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = hmac::sign(&self.0, &signed_content(id, timestamp, body));
        format!("v1,{}", B64.encode(tag.as_ref()))
    }

    /// Checks a received message: `signature` is the header's value (one or
    /// more space-separated `v1,…`), `now` the receiver's Unix seconds.
    /// Constant-time comparison (ring's verify).
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), SigningError> {
        let ts: i64 = timestamp.trim().parse().map_err(|_| SigningError::BadTimestamp)?;
        if (now - ts).abs() > TOLERANCE_SECS {
            return Err(SigningError::Stale);
        }
        let content = signed_content(id, ts, body);
        let ok = signature
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b64| B64.decode(b64).ok())
            .any(|tag| hmac::verify(&self.0, &content, &tag).is_ok());
        if ok { Ok(()) } else { Err(SigningError::Mismatch) }
    }
}

fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + body.len() + 24);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// A fresh message id (`msg_` + a UUIDv7: unique, and sortable by time).
pub fn new_message_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The published vector of the Standard Webhooks reference library,
    /// copied into specs/ (its README names the source).
    fn vectors() -> Value {
        let path = voice_agent_wire::specs::spec_path("standard_webhooks_test_vectors.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("the vector file")).expect("JSON")
    }

    #[test]
    fn signs_the_published_test_vector() {
        let v = vectors();
        for case in v["vectors"].as_array().expect("vectors") {
            let key = SigningKey::from_secret(case["secret"].as_str().expect("secret")).expect("key");
            let ts = case["webhook_timestamp"].as_i64().expect("timestamp");
            let id = case["webhook_id"].as_str().expect("id");
            let body = case["body"].as_str().expect("body").as_bytes();
            let expected = case["signature"].as_str().expect("signature");
            assert_eq!(key.sign(id, ts, body), expected);
            let now = ts + 10;
            assert_eq!(key.verify(id, &ts.to_string(), expected, body, now), Ok(()));
            // Several signatures (rotation): one match is enough.
            let several = format!("v1,AAAA {expected}");
            assert_eq!(key.verify(id, &ts.to_string(), &several, body, now), Ok(()));
            for wrong in v["wrong_signatures"].as_array().expect("wrong") {
                let wrong = wrong.as_str().expect("text");
                assert_eq!(
                    key.verify(id, &ts.to_string(), wrong, body, now),
                    Err(SigningError::Mismatch)
                );
            }
            // A changed body, id or timestamp breaks it.
            assert_eq!(
                key.verify(id, &ts.to_string(), expected, b"{}", now),
                Err(SigningError::Mismatch)
            );
            assert_eq!(
                key.verify("msg_other", &ts.to_string(), expected, body, now),
                Err(SigningError::Mismatch)
            );
            assert_eq!(
                key.verify(id, &(ts + 1).to_string(), expected, body, now),
                Err(SigningError::Mismatch)
            );
            // Replays outside the tolerance are refused.
            assert_eq!(
                key.verify(id, &ts.to_string(), expected, body, ts + TOLERANCE_SECS + 1),
                Err(SigningError::Stale)
            );
            assert_eq!(
                key.verify(id, "soon", expected, body, now),
                Err(SigningError::BadTimestamp)
            );
        }
    }

    #[test]
    fn secrets_need_the_prefix_and_a_real_key() {
        assert!(SigningKey::from_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_ok());
        assert_eq!(
            SigningKey::from_secret("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").err(),
            Some(SigningError::BadSecret)
        );
        assert_eq!(SigningKey::from_secret("whsec_!!").err(), Some(SigningError::BadSecret));
        assert_eq!(
            SigningKey::from_secret("whsec_AAAA").err(),
            Some(SigningError::BadSecret)
        );
        assert!(
            format!(
                "{:?}",
                SigningKey::from_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
            )
            .contains('…')
        );
        assert!(new_message_id().starts_with("msg_"));
    }
}
