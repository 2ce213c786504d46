//! Following a call: WatchCall until the terminal status, reconnecting with
//! backoff and resuming after the last sequence seen when the stream drops.

use std::time::Duration;

use voice_agent_proto::v1 as pb;

use crate::client::{Client, describe_status};
use crate::outcome::{Outcome, is_terminal};

/// Why following a call stopped without an outcome.
#[derive(Debug)]
pub enum WatchError {
    /// The server refused the watch (NOT_FOUND, UNAUTHENTICATED, …);
    /// retrying would not help.
    Refused(tonic::Status),
    /// Writing an event failed (e.g. stdout is a closed pipe).
    Output(std::io::Error),
}

/// Codes worth a reconnect: the connection or the server went away, or the
/// stream was cut. Anything else is the server's considered answer.
pub fn is_retryable(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Aborted | Code::Cancelled | Code::DeadlineExceeded
    )
}

/// Delay before reconnect number `attempt` (1-based): 250 ms, doubling, at
/// most 4 s — a restarting server gets about 8 s over the default 5 tries.
pub fn retry_delay(attempt: u32) -> Duration {
    let factor = 1u64 << attempt.saturating_sub(1).min(4);
    Duration::from_millis(250 * factor)
}

/// What a sequence number tells about the stream, given the last one seen.
#[derive(Debug, PartialEq, Eq)]
pub enum Sequencing {
    /// The next event: show it.
    Next,
    /// Already shown (a resumed stream repeated it): skip it.
    Duplicate,
    /// Later than expected: events in between were never delivered. Show it
    /// and warn; the contract promises no gaps, so this is a server bug.
    Gap {
        /// First missing sequence.
        from: u64,
        /// Last missing sequence.
        to: u64,
    },
}

/// Classifies `sequence` against the last one seen (`0` before any event).
pub fn sequencing(last: u64, sequence: u64) -> Sequencing {
    if sequence <= last {
        Sequencing::Duplicate
    } else if sequence == last + 1 {
        Sequencing::Next
    } else {
        Sequencing::Gap {
            from: last + 1,
            to: sequence - 1,
        }
    }
}

/// The status an event ends the call with, if it is a terminal status change.
pub fn terminal_status(event: &pb::CallEvent) -> Option<pb::CallStatus> {
    match &event.kind {
        Some(pb::call_event::Kind::Status(s)) => pb::CallStatus::try_from(s.status).ok().filter(|st| is_terminal(*st)),
        _ => None,
    }
}

/// Follows `call_id` from after `after` until its terminal status, handing
/// every event (once, in order) to `on_event`. Up to `tries` reconnects in a
/// row; an event received resets the count. Progress notes go to stderr.
pub async fn follow(
    client: &mut Client,
    call_id: &str,
    after: u64,
    tries: u32,
    mut on_event: impl FnMut(&pb::CallEvent) -> std::io::Result<()>,
) -> Result<Outcome, WatchError> {
    let mut last = after;
    let mut failures: u32 = 0;
    loop {
        let request = pb::WatchCallRequest {
            call_id: call_id.to_string(),
            after_sequence: last,
        };
        let reason = match client.watch_call(request).await {
            Err(status) if !is_retryable(status.code()) => return Err(WatchError::Refused(status)),
            Err(status) => describe_status(&status),
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(pb::WatchCallResponse { event: Some(event) })) => {
                            match sequencing(last, event.sequence) {
                                Sequencing::Duplicate => continue,
                                Sequencing::Next => {}
                                Sequencing::Gap { from, to } => {
                                    eprintln!("warning: the server skipped events {from} to {to}");
                                }
                            }
                            last = event.sequence;
                            failures = 0;
                            on_event(&event).map_err(WatchError::Output)?;
                            if let Some(status) = terminal_status(&event) {
                                // The server ends the stream right after this
                                // event; nothing more to wait for.
                                return Ok(Outcome::Ended(status));
                            }
                        }
                        Ok(Some(pb::WatchCallResponse { event: None })) => continue,
                        // An OK end before the terminal status: e.g. the
                        // server shut down gracefully. Resuming is safe.
                        Ok(None) => break "the server ended the stream before the call ended".to_string(),
                        Err(status) if !is_retryable(status.code()) => return Err(WatchError::Refused(status)),
                        Err(status) => break describe_status(&status),
                    }
                }
            }
        };
        failures += 1;
        if failures > tries {
            return Ok(Outcome::StreamBroke {
                last_sequence: last,
                reason,
            });
        }
        let delay = retry_delay(failures);
        eprintln!(
            "watch: {reason}; reconnecting in {} ms (try {failures} of {tries}), resuming after event {last}",
            delay.as_millis()
        );
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let ms: Vec<u128> = (1..=7).map(|a| retry_delay(a).as_millis()).collect();
        assert_eq!(ms, vec![250, 500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(retry_delay(u32::MAX).as_millis(), 4000);
    }

    #[test]
    fn only_transport_failures_are_retried() {
        assert!(is_retryable(tonic::Code::Unavailable));
        assert!(is_retryable(tonic::Code::Unknown));
        assert!(is_retryable(tonic::Code::Cancelled));
        assert!(!is_retryable(tonic::Code::NotFound));
        assert!(!is_retryable(tonic::Code::Unauthenticated));
        assert!(!is_retryable(tonic::Code::InvalidArgument));
        assert!(!is_retryable(tonic::Code::PermissionDenied));
    }

    #[test]
    fn only_terminal_status_events_end_the_watch() {
        let status = |s: pb::CallStatus| pb::CallEvent {
            sequence: 1,
            time: None,
            kind: Some(pb::call_event::Kind::Status(pb::StatusChanged {
                status: s as i32,
                detail: String::new(),
            })),
        };
        assert_eq!(
            terminal_status(&status(pb::CallStatus::Busy)),
            Some(pb::CallStatus::Busy)
        );
        assert_eq!(terminal_status(&status(pb::CallStatus::InProgress)), None);
        let text = pb::CallEvent {
            sequence: 2,
            time: None,
            kind: Some(pb::call_event::Kind::Dtmf(pb::Dtmf { digit: "1".into() })),
        };
        assert_eq!(terminal_status(&text), None);
    }

    #[test]
    fn sequences_are_deduplicated_and_gaps_found() {
        assert_eq!(sequencing(0, 1), Sequencing::Next);
        assert_eq!(sequencing(4, 5), Sequencing::Next);
        assert_eq!(sequencing(5, 5), Sequencing::Duplicate);
        assert_eq!(sequencing(5, 2), Sequencing::Duplicate);
        assert_eq!(sequencing(5, 9), Sequencing::Gap { from: 6, to: 8 });
    }
}
