//! Twilio's wire formats that need no server: webhook signatures
//! ([`signature`]), Media Streams messages ([`media`]) and TwiML ([`twiml`]).
//! Protocol facts are in `docs/protocols.md` §1–§5; comments cite it.

pub mod media;
pub mod rest;
pub mod signature;
pub mod twiml;

pub use media::{TwilioInbound, TwilioOutbound, parse_inbound, parse_outbound};
