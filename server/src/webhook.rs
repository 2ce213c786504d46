//! Outcome webhooks: the worker that delivers the store's outbox (I/O).
//!
//! The messages are written by the store in the transaction of the status
//! change they report ([`payload`]); this worker (one per process) claims
//! due ones, POSTs each signed with `WEBHOOK_SECRET`
//! ([`crate::webhook_signing`]; the `webhook-id` is the message's, the same
//! on every attempt), and records how it went: delivered on a 2xx, else
//! retried with exponential backoff or given up on ([`retry`]). At least
//! once: a worker that dies between the POST and recording it leaves the
//! delivery claimed until its lease expires, and it is sent again.
//!
//! Per call and URL, messages go in order: the store hands out only the
//! oldest pending one of each. The worker is woken by the store on every
//! commit that stored messages (the first attempt goes out at once), and
//! polls for retries and for other replicas' messages.
//!
//! A receiver is never trusted: redirects are not followed, its answer's
//! body is never read, every attempt is bounded by `WEBHOOK_TIMEOUT`, and
//! nothing here touches a call.

pub mod payload;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{AttemptRecord, Delivery, DeliveryState, Store};
use crate::webhook_signing::{self, SigningKey};
use retry::{Attempt, RetryPolicy, Verdict};

/// Deliveries claimed at once (sent concurrently: each is of another call or URL).
const BATCH: usize = 16;
/// Longest wait between two looks at the outbox when nothing wakes the worker.
const MAX_POLL: Duration = Duration::from_secs(1);

/// The delivery worker of one process.
pub struct Sender {
    client: reqwest::Client,
    key: SigningKey,
    policy: RetryPolicy,
    store: Store,
    metrics: Arc<Metrics>,
    /// Who claims (the replica's id).
    owner: String,
}

impl Sender {
    /// A worker signing with `key`.
    pub fn new(store: Store, key: SigningKey, policy: RetryPolicy, metrics: Arc<Metrics>, owner: String) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            .user_agent(concat!("voice-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with no custom TLS always builds");
        Self {
            client,
            key,
            policy,
            store,
            metrics,
            owner,
        }
    }

    /// Runs until `stop`: claims, delivers, records, waits.
    pub fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.run(stop).await })
    }

    async fn run(self, stop: CancellationToken) {
        let wake = self.store.outbox_wake();
        let poll = self.policy.base.min(MAX_POLL).max(Duration::from_millis(50));
        // Long enough for one attempt and recording it; a worker gone for
        // longer loses its claim and the delivery is sent again.
        let lease = self.policy.timeout * 2 + Duration::from_secs(5);
        while !stop.is_cancelled() {
            let mut claimed = 0;
            match self.store.claim_deliveries(&self.owner, lease, BATCH).await {
                Ok(batch) => {
                    claimed = batch.len();
                    futures_util::future::join_all(batch.iter().map(|d| self.deliver(d))).await;
                }
                Err(e) => tracing::warn!(error = %e, "webhook outbox: could not claim deliveries"),
            }
            if let Ok(counts) = self.store.outbox_counts().await {
                self.metrics.webhooks_pending.set(counts.pending as i64);
                self.metrics.webhooks_dead_letters.set(counts.dead as i64);
            }
            if claimed == BATCH {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = wake.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One attempt at one delivery, recorded.
    async fn deliver(&self, d: &Delivery) {
        let attempt = self.post(d).await;
        let attempts = d.attempts + 1;
        let verdict = self.policy.judge(&attempt, attempts, rand::random::<f64>());
        let (http_status, error) = match &attempt {
            Attempt::Answered(s) if (200..300).contains(s) => (*s, String::new()),
            Attempt::Answered(s) => (*s, format!("the receiver answered HTTP {s}")),
            Attempt::NoAnswer(why) => (0, why.clone()),
        };
        if http_status != 0 && (200..300).contains(&http_status) {
            self.metrics.webhook_attempts_ok.inc();
        } else {
            self.metrics.webhook_attempts_failed.inc();
        }
        let now = Utc::now();
        let (state, next) = match verdict {
            Verdict::Delivered => (DeliveryState::Delivered, now),
            Verdict::Dead => (DeliveryState::Dead, now),
            Verdict::RetryAfter(wait) => (
                DeliveryState::Pending,
                now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
            ),
        };
        let record = AttemptRecord {
            state,
            http_status,
            error: error.clone(),
            next_attempt_at: next,
        };
        // Counted as finished only when recorded: an unrecorded attempt is
        // made again (by this worker or another), and counted then.
        match self.store.record_attempt(d.id, &self.owner, &record).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(message_id = %d.message_id, "webhook delivery claimed by another worker meanwhile");
                return;
            }
            Err(e) => {
                tracing::warn!(message_id = %d.message_id, error = %e, "webhook delivery: could not record the attempt");
                return;
            }
        }
        match state {
            DeliveryState::Delivered => self.metrics.webhooks_delivered.inc(),
            DeliveryState::Dead => {
                self.metrics.webhooks_dead.inc();
                tracing::warn!(call_id = %d.call_id, message_id = %d.message_id, event_type = %d.event_type,
                    attempts, error = %error, "webhook message dead-lettered");
            }
            DeliveryState::Pending => tracing::info!(call_id = %d.call_id, message_id = %d.message_id,
                attempts, error = %error, "webhook delivery failed; retrying"),
        }
    }

    /// POSTs the message, signed now; the answer's status, or why there was none.
    async fn post(&self, d: &Delivery) -> Attempt {
        let timestamp = Utc::now().timestamp();
        let signature = self.key.sign(&d.message_id, timestamp, d.body.as_bytes());
        let sent = self
            .client
            .post(&d.url)
            .header("content-type", "application/json")
            .header(webhook_signing::ID_HEADER, &d.message_id)
            .header(webhook_signing::TIMESTAMP_HEADER, timestamp.to_string())
            .header(webhook_signing::SIGNATURE_HEADER, signature)
            .body(d.body.clone())
            .send();
        // The body of the answer is never read: dropping it closes the
        // connection, so a huge or endless answer costs nothing.
        match tokio::time::timeout(self.policy.timeout, sent).await {
            Ok(Ok(response)) => Attempt::Answered(response.status().as_u16()),
            // Without the URL: reqwest's message names it (it may carry a token).
            Ok(Err(e)) if e.is_timeout() => Attempt::NoAnswer(self.timed_out()),
            Ok(Err(e)) if e.is_connect() => Attempt::NoAnswer("the receiver could not be reached".into()),
            Ok(Err(_)) => Attempt::NoAnswer("the request to the receiver failed".into()),
            Err(_) => Attempt::NoAnswer(self.timed_out()),
        }
    }

    fn timed_out(&self) -> String {
        format!(
            "no answer within {} ms (WEBHOOK_TIMEOUT)",
            self.policy.timeout.as_millis()
        )
    }
}

/// A URL as shown (GetCall, logs): without its query and fragment, which
/// may carry a token.
pub fn shown_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shown_urls_lose_query_and_fragment() {
        assert_eq!(
            super::shown_url("https://h.example/hook?token=s3cret#x"),
            "https://h.example/hook"
        );
        assert_eq!(super::shown_url("not a url"), "");
    }
}
