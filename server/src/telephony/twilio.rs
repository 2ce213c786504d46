//! Twilio for the server: the REST client ([`rest`]); the wire formats it
//! shares with the emulator (Media Streams messages, TwiML, signatures) are in
//! the `voice-agent-wire` crate, re-exported here.
//!
//! Protocol facts are in `docs/protocols.md` §1–§5; comments cite it.

pub mod rest;

pub use rest::{CallResource, CreateCall, ErrorClass, TwilioClient, TwilioError, UpdateCall};
pub use voice_agent_wire::twilio::{
    TwilioInbound, TwilioOutbound, media, parse_inbound, parse_outbound, signature, twiml,
};
