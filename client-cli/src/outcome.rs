//! How following a call ended, and the process exit status that reports it.

use voice_agent_proto::v1::CallStatus;

/// Exit status: the call completed, or a non-watch command succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit status: an RPC failed, the server is unreachable, or output failed.
pub const EXIT_ERROR: u8 = 1;
/// Exit status: bad command line (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the watched call ended FAILED.
pub const EXIT_FAILED: u8 = 3;
/// Exit status: the watched call ended BUSY.
pub const EXIT_BUSY: u8 = 4;
/// Exit status: the watched call ended NO_ANSWER.
pub const EXIT_NO_ANSWER: u8 = 5;
/// Exit status: the watched call ended CANCELED.
pub const EXIT_CANCELED: u8 = 6;
/// Exit status: the event stream broke (and reconnecting failed) before the
/// call reached a terminal status; the call itself may still be going on.
pub const EXIT_STREAM_BROKE: u8 = 7;

/// Shown in `--help`; kept next to the constants so the two cannot drift.
pub const EXIT_HELP: &str = "\
Exit status of `watch` and `call --watch` (the outcome of the call):
  0  COMPLETED
  3  FAILED
  4  BUSY
  5  NO_ANSWER
  6  CANCELED
  7  the event stream broke before the call ended (reconnecting did not help)
Any command: 1 on an error (on stderr: `error: <gRPC code>: <message>`, then the server's error
details indented, if any: `reason: <REASON> key=value…` and `field <path>: <problem>`), 2 on a usage error.";

/// How following a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The call reached this terminal status.
    Ended(CallStatus),
    /// The stream could not be kept up; `last_sequence` is the last event
    /// seen (resume with `watch --after`), `reason` the last failure.
    StreamBroke { last_sequence: u64, reason: String },
}

impl Outcome {
    /// The process exit status for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Ended(status) => status_exit_code(*status),
            Outcome::StreamBroke { .. } => EXIT_STREAM_BROKE,
        }
    }
}

/// True for the statuses after which a call never changes again.
pub fn is_terminal(status: CallStatus) -> bool {
    matches!(
        status,
        CallStatus::Completed | CallStatus::Busy | CallStatus::NoAnswer | CallStatus::Canceled | CallStatus::Failed
    )
}

/// The exit status for a call that ended with `status`. Non-terminal statuses
/// never end a watch; should one get here it counts as a broken stream.
pub fn status_exit_code(status: CallStatus) -> u8 {
    match status {
        CallStatus::Completed => EXIT_OK,
        CallStatus::Failed => EXIT_FAILED,
        CallStatus::Busy => EXIT_BUSY,
        CallStatus::NoAnswer => EXIT_NO_ANSWER,
        CallStatus::Canceled => EXIT_CANCELED,
        CallStatus::Unspecified
        | CallStatus::Queued
        | CallStatus::Initiated
        | CallStatus::Ringing
        | CallStatus::InProgress => EXIT_STREAM_BROKE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_terminal_status_has_its_own_code() {
        let terminal = [
            CallStatus::Completed,
            CallStatus::Failed,
            CallStatus::Busy,
            CallStatus::NoAnswer,
            CallStatus::Canceled,
        ];
        let codes: Vec<u8> = terminal.iter().map(|s| status_exit_code(*s)).collect();
        assert_eq!(codes, vec![0, 3, 4, 5, 6]);
        for s in terminal {
            assert!(is_terminal(s), "{s:?}");
            let code = status_exit_code(s);
            assert!(code != EXIT_ERROR && code != EXIT_USAGE && code != EXIT_STREAM_BROKE);
        }
    }

    #[test]
    fn live_statuses_are_not_terminal() {
        for s in [
            CallStatus::Unspecified,
            CallStatus::Queued,
            CallStatus::Initiated,
            CallStatus::Ringing,
            CallStatus::InProgress,
        ] {
            assert!(!is_terminal(s), "{s:?}");
            assert_eq!(status_exit_code(s), EXIT_STREAM_BROKE);
        }
    }

    #[test]
    fn a_broken_stream_has_its_own_code() {
        let broke = Outcome::StreamBroke {
            last_sequence: 4,
            reason: "UNAVAILABLE: gone".into(),
        };
        assert_eq!(broke.exit_code(), EXIT_STREAM_BROKE);
        assert_eq!(Outcome::Ended(CallStatus::Busy).exit_code(), EXIT_BUSY);
    }

    #[test]
    fn help_lists_every_code() {
        for code in [
            EXIT_OK,
            EXIT_FAILED,
            EXIT_BUSY,
            EXIT_NO_ANSWER,
            EXIT_CANCELED,
            EXIT_STREAM_BROKE,
        ] {
            assert!(EXIT_HELP.contains(&format!("  {code}  ")), "{code} missing from help");
        }
    }
}
