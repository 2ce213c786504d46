//! The wire formats voice-agent speaks, both directions, as plain types and
//! functions: no sockets, no tasks, no clocks. The server's edges and media
//! bridge use one side of each; the emulators (`voice-agent-emulators`) and
//! the load generator use the other, so both are checked against the same
//! code and against the vendors' specs.
//!
//! ```text
//! twilio/media      Media Streams messages (start, media, mark, dtmf, stop; media, mark, clear)
//!                   with a zero-copy fast path for media and mark
//! twilio/twiml      the TwiML we answer the voice webhook with
//! twilio/signature  X-Twilio-Signature (HMAC-SHA1 over URL + sorted form)
//! realtime          client/server events of Voice Live and OpenAI realtime (GA, Azure preview)
//! specs             (feature `specs`, tests) loaders for the vendor specs in the repository's specs/
//! ```
//!
//! Protocol facts come from the repository's `docs/protocols.md`; comments
//! cite its sections (§).

#[cfg(test)]
mod fuzz;
pub mod realtime;
#[cfg(any(test, feature = "specs"))]
pub mod specs;
pub mod twilio;
