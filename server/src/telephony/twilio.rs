//! Everything Twilio-specific that does not need a server: the REST client
//! ([`rest`]), webhook signatures ([`signature`]), Media Streams messages
//! ([`media`]) and TwiML ([`twiml`]). The built-in emulator
//! (`crate::emulator::twilio`) speaks the other side of the same types.
//!
//! Protocol facts are in `shared/docs/protocols.md` §1–§5; comments cite it.

pub mod media;
pub mod rest;
pub mod signature;
pub mod twiml;

pub use media::{TwilioInbound, TwilioOutbound, parse_inbound, parse_outbound};
pub use rest::{CallResource, CreateCall, ErrorClass, TwilioClient, TwilioError, UpdateCall};

/// Path of a file in the repository's `shared/specs/` (test fixtures): walks
/// up from the crate directory until an ancestor has `shared/specs` beside
/// it, so the same code works in the server crate and in a scratch crate.
#[cfg(test)]
pub(crate) fn shared_spec_path(name: &str) -> std::path::PathBuf {
    let start = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in start.ancestors() {
        let candidate = dir.join("shared").join("specs");
        if candidate.is_dir() {
            return candidate.join(name);
        }
    }
    panic!("no shared/specs directory above {}", start.display());
}
