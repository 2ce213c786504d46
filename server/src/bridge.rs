//! The per-call media bridge: one actor owns the Twilio Media Streams socket
//! and the realtime-AI socket of a call, moves audio both ways, and turns what
//! happens into call events (transcripts, errors, DTMF, turn metrics).
//!
//! # The split
//!
//! - [`conversation`] — **what happens**: a state machine without I/O. It
//!   takes parsed inputs (Twilio media, marks, DTMF, stop; AI events; the
//!   timer; cancellation; socket losses) with the time they arrived, and
//!   returns [`conversation::Action`]s: messages for either socket, call
//!   events, the end reason, provider requests, a reconnect, a timer, the
//!   end. Playback and marks, barge-in and truncation, transcripts and their
//!   heard part, turn metrics, `end_call`, the reconnect's bookkeeping and how
//!   each kind of end winds the call up live here, and are unit-tested
//!   there without sockets or a clock.
//! - `shell` — **doing it**: [`serve_media`] checks the stream's `start`,
//!   opens the AI socket and runs a `select!` (biased: the AI, then Twilio,
//!   then cancellation and the timer, then writing) over both sockets; it
//!   parses what arrives (zero-copy for media, marks and audio deltas), feeds
//!   the conversation, and carries out its actions in order: writes are fed
//!   as produced and flushed in one go once nothing more is ready to read, so
//!   a barge-in's `clear` is never behind audio of ours. It is generic over
//!   both sockets (`Sink + Stream` of WebSocket messages), so the tests in
//!   `bridge/tests.rs` run whole calls over in-memory channels on a paused
//!   clock. Write stalls ([`WRITE_STALL`]), the reconnect, provider requests
//!   and closing the sockets are here.
//! - `writer` — **the record**: every store write of a call (events, the end
//!   reason, the end at shutdown) goes through one per-call queue, applied
//!   in order by its own task, so a slow commit never holds up audio. The
//!   shell waits for it (settles) before anything outside can see the call
//!   end (a provider request, closing the stream), so the first end reason
//!   stored is ours when it is ours.
//! - [`frames`] — the per-frame conversions (transcode, base64, message
//!   text), benchmarked on their own (`benches/hot_path.rs`).
//!
//! Where to change what: a new reaction to an AI or Twilio event, a new
//! call event or end reason → `conversation.rs` (plus its tests); a new
//! socket, timer or provider call → `shell.rs` (an [`conversation::Action`]
//! to carry it out); how writes reach the hub → `writer.rs`.
//!
//! What the callee has *heard* is known from mark acknowledgements
//! (protocols.md §5.3): every audio chunk sent to Twilio is followed by a mark
//! carrying the item's byte position; Twilio echoes it once that audio played.

pub mod conversation;
pub mod frames;
mod shell;
#[cfg(test)]
mod tests;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocket;

use crate::AppState;
use crate::call::CallRecord;

/// How long Twilio has to send `start` after the upgrade.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Spoken when the AI cannot be reached or fails for good.
pub const APOLOGY: &str = "Sorry, our assistant is not available right now. Please try again later. Goodbye.";
/// Spoken when the call reaches its maximum duration.
pub const TIME_LIMIT_GOODBYE: &str = "We have reached the time limit for this call. Thank you for your time. Goodbye.";
/// How long reconnecting to a dropped AI may take (issue: within 2 s).
pub const RECONNECT_WITHIN: Duration = Duration::from_secs(2);
/// A socket that takes nothing for this long is treated as gone.
pub const WRITE_STALL: Duration = Duration::from_secs(5);
/// The end reason of a call the server stopped under.
pub const SHUTDOWN_REASON: &str = "the server is shutting down";

/// Runs the media side of one call on an upgraded Twilio WebSocket.
pub async fn serve_media(state: Arc<AppState>, record: CallRecord, socket: WebSocket) {
    let env = shell::Env {
        hub: &state.hub,
        telephony: &*state.telephony,
        metrics: &state.metrics,
        shutdown: &state.shutdown,
        handover: &state.handover,
        audio_mode: state.config.audio_mode,
        ai: shell::Realtime {
            backends: &state.realtime,
            backend: record.backend,
        },
        recordings: Some(&state.recordings),
        tool_desk: &state.tool_desk,
        tool_http: &state.tool_http,
        public_url: state.public_url.as_str(),
        from_number: &state.from_number,
    };
    // The bridge's span is a child of the call's (docs/observability.md
    // "Traces"): the AI session's spans are its children.
    let span = match state.hub.call_span(&record.call_id) {
        Some(call) => tracing::info_span!(parent: &call, "media_bridge", call_id = %record.call_id),
        None => tracing::info_span!("media_bridge", call_id = %record.call_id),
    };
    tracing::Instrument::instrument(shell::run_media(&env, record, socket), span).await;
}
