//! Twilio Media Streams messages (protocols.md §5), both directions, as plain
//! serde types with no socket code.
//!
//! * Twilio → us: the wire type [`InboundMessage`] (the emulator serialises
//!   it) and the parsed view [`TwilioInbound`] returned by [`parse_inbound`]
//!   (what the bridge reads).
//! * Us → Twilio: the builders [`media_message`], [`mark_message`] and
//!   [`clear_message`] write JSON text directly (no `serde_json::Value`: one
//!   `media` message goes out per agent audio delta), and the wire type
//!   [`OutboundMessage`] / view [`TwilioOutbound`] from [`parse_outbound`] is
//!   what the emulator reads.
//!
//! Numeric-looking fields (`sequenceNumber`, `chunk`, `timestamp`) are strings
//! on the wire (§5.1) and are kept as strings here.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// A message Twilio sends on the media WebSocket (§5.2), as on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum InboundMessage {
    /// First message: `{"event":"connected","protocol":"Call","version":"1.0.0"}`.
    Connected {
        /// Always "Call".
        #[serde(default)]
        protocol: String,
        /// Protocol version, "1.0.0".
        #[serde(default)]
        version: String,
    },
    /// Stream metadata, once, right after `connected`.
    #[serde(rename_all = "camelCase")]
    Start {
        /// "1" on `start` (§5.1).
        #[serde(default)]
        sequence_number: Option<String>,
        /// The metadata.
        start: StartMeta,
        /// MZ… id of the stream.
        #[serde(default)]
        stream_sid: String,
    },
    /// One chunk of the callee's audio.
    #[serde(rename_all = "camelCase")]
    Media {
        /// Per-message counter.
        #[serde(default)]
        sequence_number: Option<String>,
        /// The audio.
        media: InboundMedia,
        /// MZ… id of the stream.
        #[serde(default)]
        stream_sid: String,
    },
    /// A key press on the callee's phone.
    #[serde(rename_all = "camelCase")]
    Dtmf {
        /// Per-message counter.
        #[serde(default)]
        sequence_number: Option<String>,
        /// The digit.
        dtmf: DtmfBody,
        /// MZ… id of the stream.
        #[serde(default)]
        stream_sid: String,
    },
    /// Echo of a mark we sent: the audio before it has played (or was cleared).
    #[serde(rename_all = "camelCase")]
    Mark {
        /// Per-message counter.
        #[serde(default)]
        sequence_number: Option<String>,
        /// The mark's name.
        mark: MarkBody,
        /// MZ… id of the stream.
        #[serde(default)]
        stream_sid: String,
    },
    /// The stream stopped or the call ended.
    #[serde(rename_all = "camelCase")]
    Stop {
        /// Per-message counter.
        #[serde(default)]
        sequence_number: Option<String>,
        /// Which call.
        #[serde(default)]
        stop: StopBody,
        /// MZ… id of the stream.
        #[serde(default)]
        stream_sid: String,
    },
    /// Any event this code does not know (Twilio adds events without notice).
    #[serde(other)]
    Unknown,
}

/// The `start` object (§5.2).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartMeta {
    /// AC… account.
    #[serde(default)]
    pub account_sid: String,
    /// MZ… stream.
    #[serde(default)]
    pub stream_sid: String,
    /// CA… call.
    #[serde(default)]
    pub call_sid: String,
    /// `["inbound"]` for a bidirectional stream.
    #[serde(default)]
    pub tracks: Vec<String>,
    /// Always μ-law 8 kHz mono.
    #[serde(default)]
    pub media_format: MediaFormat,
    /// The `<Parameter>`s of the TwiML `<Stream>`.
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
}

/// `start.mediaFormat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    /// "audio/x-mulaw".
    pub encoding: String,
    /// 8000.
    pub sample_rate: u32,
    /// 1.
    pub channels: u32,
}

impl Default for MediaFormat {
    fn default() -> Self {
        Self {
            encoding: "audio/x-mulaw".into(),
            sample_rate: 8000,
            channels: 1,
        }
    }
}

/// The `media` object of an inbound message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InboundMedia {
    /// "inbound".
    #[serde(default)]
    pub track: String,
    /// Per-track counter from "1".
    #[serde(default)]
    pub chunk: String,
    /// Milliseconds from the start of the stream.
    #[serde(default)]
    pub timestamp: String,
    /// Base64 of raw μ-law bytes.
    pub payload: String,
}

/// The `dtmf` object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DtmfBody {
    /// Always "inbound_track".
    #[serde(default)]
    pub track: String,
    /// "0"–"9", "*", "#".
    pub digit: String,
}

/// The `mark` object (both directions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MarkBody {
    /// Label chosen by the sender of the mark.
    pub name: String,
}

/// The `stop` object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopBody {
    /// AC… account.
    #[serde(default)]
    pub account_sid: String,
    /// CA… call.
    #[serde(default)]
    pub call_sid: String,
}

/// What the bridge needs from a Twilio message.
#[derive(Clone, Debug, PartialEq)]
pub enum TwilioInbound {
    /// The socket is up.
    Connected,
    /// Stream metadata (stream sid, call sid, custom parameters).
    Start(StartMeta),
    /// Callee audio.
    Media(InboundMedia),
    /// A mark we sent was reached (or cleared); its name.
    Mark(String),
    /// The callee pressed a key; the digit.
    Dtmf(String),
    /// The stream ended.
    Stop,
    /// An event we ignore.
    Unknown,
}

/// A message that is not a Media Streams message.
#[derive(Debug, thiserror::Error)]
#[error("not a Media Streams message: {0}")]
pub struct MediaError(#[from] serde_json::Error);

/// Parses a text frame from Twilio. Unknown events are `Unknown`, not errors.
pub fn parse_inbound(text: &str) -> Result<TwilioInbound, MediaError> {
    Ok(match serde_json::from_str::<InboundMessage>(text)? {
        InboundMessage::Connected { .. } => TwilioInbound::Connected,
        InboundMessage::Start { start, stream_sid, .. } => {
            let mut start = start;
            // `streamSid` appears both inside `start` and at the top (§5.2).
            if start.stream_sid.is_empty() {
                start.stream_sid = stream_sid;
            }
            TwilioInbound::Start(start)
        }
        InboundMessage::Media { media, .. } => TwilioInbound::Media(media),
        InboundMessage::Dtmf { dtmf, .. } => TwilioInbound::Dtmf(dtmf.digit),
        InboundMessage::Mark { mark, .. } => TwilioInbound::Mark(mark.name),
        InboundMessage::Stop { .. } => TwilioInbound::Stop,
        InboundMessage::Unknown => TwilioInbound::Unknown,
    })
}

/// The two messages that arrive many times a second per call, borrowed
/// from the text: callee audio (every 20 ms) and mark echoes.
#[derive(Debug, PartialEq)]
pub enum HotInbound<'a> {
    /// `media.payload`: base64 μ-law.
    Media(Cow<'a, str>),
    /// `mark.name`.
    Mark(Cow<'a, str>),
}

#[derive(Deserialize)]
struct HotEnvelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    media: Option<HotMedia<'a>>,
    #[serde(borrow, default)]
    mark: Option<HotName<'a>>,
}

#[derive(Deserialize)]
struct HotMedia<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
struct HotName<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// `media` and `mark` in one pass with no copies (the general
/// [`parse_inbound`] buffers an internally tagged enum and copies every
/// field); `None` for anything else, which [`parse_inbound`] then reads.
pub fn parse_hot(text: &str) -> Option<HotInbound<'_>> {
    let env: HotEnvelope<'_> = serde_json::from_str(text).ok()?;
    match env.event.as_ref() {
        "media" => env.media.map(|m| HotInbound::Media(m.payload)),
        "mark" => env.mark.map(|m| HotInbound::Mark(m.name)),
        _ => None,
    }
}

/// A message we send to Twilio on a bidirectional stream (§5.3), as on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum OutboundMessage {
    /// Audio to play: base64 μ-law 8 kHz, any length, no header.
    #[serde(rename_all = "camelCase")]
    Media {
        /// MZ… stream.
        #[serde(default)]
        stream_sid: String,
        /// The audio.
        media: OutboundMedia,
    },
    /// Ask for an echo once the audio sent before it has played.
    #[serde(rename_all = "camelCase")]
    Mark {
        /// MZ… stream.
        #[serde(default)]
        stream_sid: String,
        /// The label.
        mark: MarkBody,
    },
    /// Drop buffered audio; pending marks are echoed at once.
    #[serde(rename_all = "camelCase")]
    Clear {
        /// MZ… stream.
        #[serde(default)]
        stream_sid: String,
    },
    /// Anything else.
    #[serde(other)]
    Unknown,
}

/// The `media` object of an outbound message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboundMedia {
    /// Base64 of raw μ-law bytes.
    pub payload: String,
}

/// What the emulator needs from a message our server sent.
#[derive(Clone, Debug, PartialEq)]
pub enum TwilioOutbound {
    /// Audio to queue (still base64).
    Media {
        /// The stream it names.
        stream_sid: String,
        /// Base64 μ-law.
        payload: String,
    },
    /// A mark to echo after the queued audio.
    Mark {
        /// The stream it names.
        stream_sid: String,
        /// The label.
        name: String,
    },
    /// Flush queued audio.
    Clear {
        /// The stream it names.
        stream_sid: String,
    },
    /// An unknown event.
    Unknown,
}

/// Parses a text frame our server sent (the emulator's side).
pub fn parse_outbound(text: &str) -> Result<TwilioOutbound, MediaError> {
    Ok(match serde_json::from_str::<OutboundMessage>(text)? {
        OutboundMessage::Media { stream_sid, media } => TwilioOutbound::Media {
            stream_sid,
            payload: media.payload,
        },
        OutboundMessage::Mark { stream_sid, mark } => TwilioOutbound::Mark {
            stream_sid,
            name: mark.name,
        },
        OutboundMessage::Clear { stream_sid } => TwilioOutbound::Clear { stream_sid },
        OutboundMessage::Unknown => TwilioOutbound::Unknown,
    })
}

/// Appends `s` as a JSON string literal (quotes and escapes included).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"event":"media","streamSid":…,"media":{"payload":…}}` from an already
/// base64-encoded payload (the AI's audio deltas arrive as base64).
pub fn media_message(stream_sid: &str, payload_b64: &str) -> String {
    let mut out = String::with_capacity(64 + stream_sid.len() + payload_b64.len());
    out.push_str(r#"{"event":"media","streamSid":"#);
    push_json_str(&mut out, stream_sid);
    out.push_str(r#","media":{"payload":"#);
    push_json_str(&mut out, payload_b64);
    out.push_str("}}");
    out
}

/// Like [`media_message`] from raw μ-law bytes, base64-encoded in place.
pub fn media_message_from_ulaw(stream_sid: &str, ulaw: &[u8]) -> String {
    let mut out = String::with_capacity(64 + stream_sid.len() + ulaw.len().div_ceil(3) * 4);
    out.push_str(r#"{"event":"media","streamSid":"#);
    push_json_str(&mut out, stream_sid);
    out.push_str(r#","media":{"payload":""#);
    B64.encode_string(ulaw, &mut out);
    out.push_str("\"}}");
    out
}

/// `{"event":"mark","streamSid":…,"mark":{"name":…}}`.
pub fn mark_message(stream_sid: &str, name: &str) -> String {
    let mut out = String::with_capacity(64 + stream_sid.len() + name.len());
    out.push_str(r#"{"event":"mark","streamSid":"#);
    push_json_str(&mut out, stream_sid);
    out.push_str(r#","mark":{"name":"#);
    push_json_str(&mut out, name);
    out.push_str("}}");
    out
}

/// `{"event":"clear","streamSid":…}`.
pub fn clear_message(stream_sid: &str) -> String {
    let mut out = String::with_capacity(48 + stream_sid.len());
    out.push_str(r#"{"event":"clear","streamSid":"#);
    push_json_str(&mut out, stream_sid);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shapes of protocols.md §5.2 / §5.6.
    const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC0","streamSid":"MZ2","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"session":"7f3c","call_id":"abc"}},"streamSid":"MZ2"}"#;

    #[test]
    fn parses_every_inbound_event() {
        assert_eq!(
            parse_inbound(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#).unwrap(),
            TwilioInbound::Connected
        );
        let TwilioInbound::Start(s) = parse_inbound(START).unwrap() else {
            panic!("not start")
        };
        assert_eq!((s.stream_sid.as_str(), s.call_sid.as_str()), ("MZ2", "CA1"));
        assert_eq!(s.custom_parameters.get("session").map(String::as_str), Some("7f3c"));
        assert_eq!(s.media_format, MediaFormat::default());
        let m = parse_inbound(r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"/w=="},"streamSid":"MZ2"}"#).unwrap();
        let TwilioInbound::Media(m) = m else {
            panic!("not media")
        };
        assert_eq!(
            (m.chunk.as_str(), m.timestamp.as_str(), m.payload.as_str()),
            ("2", "5", "/w==")
        );
        assert_eq!(
            parse_inbound(r##"{"event":"dtmf","streamSid":"MZ2","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"#"}}"##).unwrap(),
            TwilioInbound::Dtmf("#".into())
        );
        assert_eq!(
            parse_inbound(r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ2","mark":{"name":"a \"b\""}}"#)
                .unwrap(),
            TwilioInbound::Mark("a \"b\"".into())
        );
        assert_eq!(
            parse_inbound(
                r#"{"event":"stop","sequenceNumber":"5","stop":{"accountSid":"AC0","callSid":"CA1"},"streamSid":"MZ2"}"#
            )
            .unwrap(),
            TwilioInbound::Stop
        );
        assert_eq!(
            parse_inbound(r#"{"event":"someday","x":1}"#).unwrap(),
            TwilioInbound::Unknown
        );
        assert!(parse_inbound("not json").is_err());
        assert!(parse_inbound(r#"{"event":"media"}"#).is_err());
    }

    #[test]
    fn the_hot_path_reads_media_and_marks_like_the_general_parser() {
        let media = r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"/w=="},"streamSid":"MZ2"}"#;
        // Field order and whitespace do not matter; escapes are decoded.
        let reordered =
            r#"{ "streamSid" : "MZ2", "media" : { "payload" : "/w==", "track" : "inbound" }, "event" : "media" }"#;
        let mark = r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ2","mark":{"name":"a \"b\""}}"#;
        for text in [media, reordered] {
            assert_eq!(parse_hot(text), Some(HotInbound::Media("/w==".into())));
            let TwilioInbound::Media(m) = parse_inbound(text).unwrap() else {
                panic!("not media")
            };
            assert_eq!(m.payload, "/w==");
        }
        assert_eq!(parse_hot(mark), Some(HotInbound::Mark("a \"b\"".into())));
        assert_eq!(parse_inbound(mark).unwrap(), TwilioInbound::Mark("a \"b\"".into()));
        // Everything else, and broken messages, go to the general parser.
        for other in [
            START,
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
            r##"{"event":"dtmf","streamSid":"MZ2","dtmf":{"track":"inbound_track","digit":"#"}}"##,
            r#"{"event":"stop","stop":{"callSid":"CA1"},"streamSid":"MZ2"}"#,
            r#"{"event":"media"}"#,
            r#"{"event":"media","media":{"payload":7}}"#,
            "not json",
        ] {
            assert_eq!(parse_hot(other), None, "{other}");
        }
    }

    #[test]
    fn start_without_inner_stream_sid_takes_the_outer_one() {
        let t = r#"{"event":"start","start":{"callSid":"CA1"},"streamSid":"MZ9"}"#;
        let TwilioInbound::Start(s) = parse_inbound(t).unwrap() else {
            panic!()
        };
        assert_eq!(s.stream_sid, "MZ9");
    }

    #[test]
    fn inbound_round_trips_with_wire_names() {
        let msg = InboundMessage::Media {
            sequence_number: Some("2".into()),
            media: InboundMedia {
                track: "inbound".into(),
                chunk: "1".into(),
                timestamp: "20".into(),
                payload: "AAA=".into(),
            },
            stream_sid: "MZ2".into(),
        };
        let v: serde_json::Value = serde_json::to_value(&msg).unwrap();
        assert_eq!(v["event"], "media");
        assert_eq!(v["sequenceNumber"], "2");
        assert_eq!(v["streamSid"], "MZ2");
        assert_eq!(v["media"]["chunk"], "1");
        let back: InboundMessage = serde_json::from_value(v).unwrap();
        assert_eq!(back, msg);
        let v = serde_json::to_value(serde_json::from_str::<InboundMessage>(START).unwrap()).unwrap();
        assert_eq!(v["start"]["mediaFormat"]["sampleRate"], 8000);
        assert_eq!(v["start"]["customParameters"]["call_id"], "abc");
    }

    #[test]
    fn builders_produce_what_the_parser_and_serde_expect() {
        let media = media_message("MZ2", "no+Jhg==");
        assert_eq!(
            media,
            r#"{"event":"media","streamSid":"MZ2","media":{"payload":"no+Jhg=="}}"#
        );
        assert_eq!(
            parse_outbound(&media).unwrap(),
            TwilioOutbound::Media {
                stream_sid: "MZ2".into(),
                payload: "no+Jhg==".into()
            }
        );
        let raw = media_message_from_ulaw("MZ2", &[0x9e, 0x8f, 0x89, 0x86]);
        assert_eq!(raw, media);
        let weird = "a\"b\\c\nd\u{1}é";
        let mark = mark_message("MZ2", weird);
        assert_eq!(
            parse_outbound(&mark).unwrap(),
            TwilioOutbound::Mark {
                stream_sid: "MZ2".into(),
                name: weird.into()
            }
        );
        let v: serde_json::Value = serde_json::from_str(&clear_message("MZ2")).unwrap();
        assert_eq!(v, serde_json::json!({"event":"clear","streamSid":"MZ2"}));
        assert_eq!(parse_outbound(r#"{"event":"bogus"}"#).unwrap(), TwilioOutbound::Unknown);
        assert!(parse_outbound("{").is_err());
    }
}
