//! Fuzz targets (property tests, stable toolchain) for every parser and
//! builder of this crate that a peer's bytes reach: the Twilio media parsers
//! (general and hot path), the realtime server-event parsers in every dialect,
//! the TwiML builders from arbitrary strings, and signature validation.
//! docs/fuzzing.md has the targets, the long run's figures and what they found.
//!
//! `cargo test -p voice-agent-wire fuzz` runs them with [`CASES`] inputs each;
//! `PROPTEST_CASES=200000 cargo test --release -p voice-agent-wire fuzz` is the long run.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::realtime::{Dialect, ItemKind, ServerEvent, parse_audio_delta, parse_server_event, server_names};
use crate::twilio::media::{
    HotInbound, InboundMedia, InboundMessage, MarkBody, MediaFormat, StartMeta, StopBody, clear_message, mark_message,
    media_message, parse_hot, parse_inbound, parse_outbound,
};
use crate::twilio::signature::{compute, url_variants, validate};
use crate::twilio::twiml::{connect_stream, is_xml_char, say_and_hang_up};
use crate::twilio::{TwilioInbound, TwilioOutbound};

/// Inputs per target in the test command (a few seconds for the whole set in
/// debug); `PROPTEST_CASES` overrides it.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    // `ProptestConfig::default()` reads PROPTEST_CASES; only without it is ours the default.
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = CASES;
    }
    c
}

/// Any string, control characters and astral planes included.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[\\x00-\\x1f\"\\\\<>&'a-z ]{0,24}",
    ]
}

/// Arbitrary JSON whose keys are often the ones the parsers look for, so that
/// the inputs reach past the first `type`/`event` check with wrong types,
/// nulls, nesting and duplicates.
fn json_like(keys: &'static [&'static str], tags: &'static [&'static str]) -> impl Strategy<Value = String> {
    let key = prop_oneof![4 => proptest::sample::select(keys).prop_map(str::to_string), 1 => any::<String>()];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        proptest::sample::select(tags).prop_map(Value::from),
        any_text().prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(4, 48, 6, move |inner| {
        let key = prop_oneof![4 => proptest::sample::select(keys).prop_map(str::to_string), 1 => any::<String>()];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((key, inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    proptest::collection::vec((key, value), 0..8).prop_map(|kv| {
        // Objects as raw text so that a key may repeat (a Map would dedupe it).
        let fields: Vec<String> = kv
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", fields.join(","))
    })
}

const MEDIA_KEYS: &[&str] = &[
    "event",
    "media",
    "payload",
    "mark",
    "name",
    "start",
    "streamSid",
    "sequenceNumber",
    "dtmf",
    "digit",
    "stop",
    "track",
    "chunk",
    "timestamp",
    "customParameters",
    "mediaFormat",
    "tracks",
    "callSid",
    "accountSid",
    "sampleRate",
    "channels",
    "encoding",
    "protocol",
    "version",
];
const MEDIA_EVENTS: &[&str] = &["media", "mark", "start", "stop", "dtmf", "connected", "clear", "other"];

const REALTIME_KEYS: &[&str] = &[
    "type",
    "delta",
    "item_id",
    "response_id",
    "previous_item_id",
    "transcript",
    "audio_start_ms",
    "audio_end_ms",
    "audio_offset_ms",
    "audio_duration_ms",
    "text",
    "call_id",
    "name",
    "arguments",
    "item",
    "response",
    "error",
    "warning",
    "id",
    "status",
    "status_details",
    "reason",
    "code",
    "message",
    "param",
    "event_id",
];
const REALTIME_TYPES: &[&str] = &[
    "response.output_audio.delta",
    "response.audio.delta",
    "session.created",
    "session.updated",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "response.created",
    "response.output_item.added",
    "response.output_audio.done",
    "response.audio.done",
    "response.output_audio_transcript.delta",
    "response.audio_transcript.delta",
    "response.output_audio_transcript.done",
    "response.audio_transcript.done",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    "response.function_call_arguments.done",
    "response.done",
    "conversation.item.truncated",
    "response.audio_timestamp.delta",
    "error",
    "warning",
    "message",
    "function_call",
];

// ---- Twilio Media Streams -------------------------------------------------

/// Valid inbound messages as Twilio sends them, with arbitrary strings.
fn inbound_message() -> impl Strategy<Value = InboundMessage> {
    let seq = proptest::option::of("[0-9]{1,6}");
    prop_oneof![
        (any_text(), any_text(), any_text(), any_text(), seq.clone()).prop_map(|(payload, sid, chunk, ts, seq)| {
            InboundMessage::Media {
                sequence_number: seq,
                media: InboundMedia {
                    track: "inbound".into(),
                    chunk,
                    timestamp: ts,
                    payload,
                },
                stream_sid: sid,
            }
        }),
        (any_text(), any_text(), seq.clone()).prop_map(|(name, sid, seq)| InboundMessage::Mark {
            sequence_number: seq,
            mark: MarkBody { name },
            stream_sid: sid,
        }),
        (any_text(), any_text(), seq.clone()).prop_map(|(digit, sid, seq)| InboundMessage::Dtmf {
            sequence_number: seq,
            dtmf: crate::twilio::media::DtmfBody {
                track: "inbound_track".into(),
                digit,
            },
            stream_sid: sid,
        }),
        (
            any_text(),
            any_text(),
            proptest::collection::btree_map(any_text(), any_text(), 0..4),
            seq.clone()
        )
            .prop_map(|(sid, call, params, seq)| InboundMessage::Start {
                sequence_number: seq,
                start: StartMeta {
                    account_sid: "AC0".into(),
                    stream_sid: sid.clone(),
                    call_sid: call,
                    tracks: vec!["inbound".into()],
                    media_format: MediaFormat::default(),
                    custom_parameters: params,
                },
                stream_sid: sid,
            }),
        (any_text(), seq).prop_map(|(call, seq)| InboundMessage::Stop {
            sequence_number: seq,
            stop: StopBody {
                account_sid: "AC0".into(),
                call_sid: call,
            },
            stream_sid: "MZ1".into(),
        }),
        Just(InboundMessage::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into()
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_media_parsers_never_panic_on_any_text(text in any_text()) {
        let _ = parse_inbound(&text);
        let _ = parse_hot(&text);
        let _ = parse_outbound(&text);
    }

    #[test]
    fn fuzz_media_parsers_never_panic_on_json_like_input(text in json_like(MEDIA_KEYS, MEDIA_EVENTS)) {
        let general = parse_inbound(&text);
        // Whenever the hot path reads a message, the general parser reads the same.
        match parse_hot(&text) {
            Some(HotInbound::Media(p)) => {
                if let Ok(TwilioInbound::Media(m)) = &general {
                    prop_assert_eq!(&m.payload, p.as_ref());
                }
            }
            Some(HotInbound::Mark(n)) => {
                if let Ok(TwilioInbound::Mark(m)) = &general {
                    prop_assert_eq!(m, n.as_ref());
                }
            }
            None => {}
        }
    }

    #[test]
    fn fuzz_media_hot_path_agrees_with_the_general_parser(msg in inbound_message()) {
        let text = serde_json::to_string(&msg).expect("serialisable");
        let general = parse_inbound(&text).expect("a valid message parses");
        match (&msg, parse_hot(&text), &general) {
            (InboundMessage::Media { media, .. }, Some(HotInbound::Media(p)), TwilioInbound::Media(m)) => {
                prop_assert_eq!(p.as_ref(), media.payload.as_str());
                prop_assert_eq!(m, media);
            }
            (InboundMessage::Mark { mark, .. }, Some(HotInbound::Mark(n)), TwilioInbound::Mark(m)) => {
                prop_assert_eq!(n.as_ref(), mark.name.as_str());
                prop_assert_eq!(m, &mark.name);
            }
            (InboundMessage::Media { .. } | InboundMessage::Mark { .. }, hot, general) => {
                prop_assert!(false, "hot {:?} / general {:?} for {}", hot, general, text);
            }
            (InboundMessage::Dtmf { dtmf, .. }, None, TwilioInbound::Dtmf(d)) => prop_assert_eq!(d, &dtmf.digit),
            (InboundMessage::Start { start, .. }, None, TwilioInbound::Start(s)) => prop_assert_eq!(s, start),
            (InboundMessage::Stop { .. }, None, TwilioInbound::Stop) => {}
            (InboundMessage::Connected { .. }, None, TwilioInbound::Connected) => {}
            (_, hot, general) => prop_assert!(false, "hot {:?} / general {:?} for {}", hot, general, text),
        }
    }

    #[test]
    fn fuzz_media_builders_round_trip_any_text(sid in any_text(), payload in any_text(), name in any_text()) {
        prop_assert_eq!(
            parse_outbound(&media_message(&sid, &payload)).expect("our media parses"),
            TwilioOutbound::Media { stream_sid: sid.clone(), payload }
        );
        prop_assert_eq!(
            parse_outbound(&mark_message(&sid, &name)).expect("our mark parses"),
            TwilioOutbound::Mark { stream_sid: sid.clone(), name }
        );
        prop_assert_eq!(
            parse_outbound(&clear_message(&sid)).expect("our clear parses"),
            TwilioOutbound::Clear { stream_sid: sid }
        );
    }
}

// ---- Realtime server events -----------------------------------------------

const DIALECTS: [Dialect; 3] = [Dialect::VoiceLive, Dialect::OpenAiGa, Dialect::OpenAiPreview];

/// A valid server event of any kind we decode, with arbitrary strings and numbers.
fn server_event() -> impl Strategy<Value = ServerEvent> {
    let t = any_text;
    let opt = || proptest::option::of(any_text());
    prop_oneof![
        Just(ServerEvent::SessionCreated),
        Just(ServerEvent::SessionUpdated),
        (any::<u64>(), t()).prop_map(|(audio_start_ms, item_id)| ServerEvent::SpeechStarted {
            audio_start_ms,
            item_id
        }),
        (any::<u64>(), t()).prop_map(|(audio_end_ms, item_id)| ServerEvent::SpeechStopped { audio_end_ms, item_id }),
        (t(), opt()).prop_map(|(item_id, previous_item_id)| ServerEvent::Committed {
            item_id,
            previous_item_id
        }),
        t().prop_map(|response_id| ServerEvent::ResponseCreated { response_id }),
        (t(), t(), 0..3u8, opt(), opt()).prop_map(|(response_id, item_id, k, name, call_id)| {
            ServerEvent::OutputItemAdded {
                response_id,
                item_id,
                kind: [ItemKind::Message, ItemKind::FunctionCall, ItemKind::Other][k as usize].clone(),
                name,
                call_id,
            }
        }),
        (t(), t(), t()).prop_map(|(response_id, item_id, delta)| ServerEvent::AudioDelta {
            response_id,
            item_id,
            delta
        }),
        (t(), t()).prop_map(|(response_id, item_id)| ServerEvent::AudioDone { response_id, item_id }),
        (t(), t()).prop_map(|(item_id, delta)| ServerEvent::TranscriptDelta { item_id, delta }),
        (t(), t(), t()).prop_map(|(response_id, item_id, transcript)| ServerEvent::TranscriptDone {
            response_id,
            item_id,
            transcript
        }),
        (t(), t()).prop_map(|(item_id, transcript)| ServerEvent::InputTranscriptionCompleted { item_id, transcript }),
        (t(), t()).prop_map(|(item_id, error)| ServerEvent::InputTranscriptionFailed { item_id, error }),
        (t(), t(), t(), t(), t()).prop_map(|(response_id, item_id, call_id, name, arguments)| {
            ServerEvent::FunctionCallArgumentsDone {
                response_id,
                item_id,
                call_id,
                name,
                arguments,
            }
        }),
        (t(), t(), opt()).prop_map(|(response_id, status, reason)| ServerEvent::ResponseDone {
            response_id,
            status,
            reason
        }),
        (t(), any::<u64>()).prop_map(|(item_id, audio_end_ms)| ServerEvent::ItemTruncated { item_id, audio_end_ms }),
        (t(), t(), any::<u64>(), any::<u64>()).prop_map(|(item_id, text, audio_offset_ms, audio_duration_ms)| {
            ServerEvent::WordTimestamp {
                item_id,
                text,
                audio_offset_ms,
                audio_duration_ms,
            }
        }),
        (t(), opt(), t(), opt(), opt()).prop_map(|(r#type, code, message, param, event_id)| ServerEvent::Error {
            r#type,
            code,
            message,
            param,
            event_id
        }),
        (t(), opt()).prop_map(|(message, code)| ServerEvent::Warning { message, code }),
        "[a-z_.]{1,40}"
            .prop_filter("not a type we decode", |s| !REALTIME_TYPES.contains(&s.as_str()))
            .prop_map(ServerEvent::Other),
    ]
}

/// `event` as the service of `dialect` writes it (protocols.md §7), with an
/// event id and the fields we do not read, as the vendors send them.
fn render(event: &ServerEvent, dialect: Dialect) -> Value {
    let names = server_names(dialect);
    let mut v = match event.clone() {
        ServerEvent::SessionCreated => json!({"type": "session.created", "session": {"id": "sess_1"}}),
        ServerEvent::SessionUpdated => json!({"type": "session.updated", "session": {"id": "sess_1"}}),
        ServerEvent::SpeechStarted {
            audio_start_ms,
            item_id,
        } => {
            json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": audio_start_ms, "item_id": item_id})
        }
        ServerEvent::SpeechStopped { audio_end_ms, item_id } => {
            json!({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_end_ms, "item_id": item_id})
        }
        ServerEvent::Committed {
            item_id,
            previous_item_id,
        } => {
            json!({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous_item_id})
        }
        ServerEvent::ResponseCreated { response_id } => {
            json!({"type": "response.created", "response": {"id": response_id, "status": "in_progress", "output": []}})
        }
        ServerEvent::OutputItemAdded {
            response_id,
            item_id,
            kind,
            name,
            call_id,
        } => {
            let kind = match kind {
                ItemKind::Message => "message",
                ItemKind::FunctionCall => "function_call",
                ItemKind::Other => "mcp_call",
            };
            let mut item = json!({"id": item_id, "type": kind, "status": "in_progress"});
            if let Some(n) = name {
                item["name"] = n.into();
            }
            if let Some(c) = call_id {
                item["call_id"] = c.into();
            }
            json!({"type": "response.output_item.added", "response_id": response_id, "output_index": 0, "item": item})
        }
        ServerEvent::AudioDelta {
            response_id,
            item_id,
            delta,
        } => json!({"type": names.audio_delta,
            "response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0, "delta": delta}),
        ServerEvent::AudioDone { response_id, item_id } => {
            json!({"type": names.audio_done, "response_id": response_id, "item_id": item_id})
        }
        ServerEvent::TranscriptDelta { item_id, delta } => {
            json!({"type": names.transcript_delta, "response_id": "r", "item_id": item_id, "delta": delta})
        }
        ServerEvent::TranscriptDone {
            response_id,
            item_id,
            transcript,
        } => json!({"type": names.transcript_done,
            "response_id": response_id, "item_id": item_id, "transcript": transcript}),
        ServerEvent::InputTranscriptionCompleted { item_id, transcript } => json!({
            "type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
            "content_index": 0, "transcript": transcript}),
        ServerEvent::InputTranscriptionFailed { item_id, error } => json!({
            "type": "conversation.item.input_audio_transcription.failed", "item_id": item_id,
            "error": {"type": "transcription_error", "message": error}}),
        ServerEvent::FunctionCallArgumentsDone {
            response_id,
            item_id,
            call_id,
            name,
            arguments,
        } => json!({
            "type": "response.function_call_arguments.done", "response_id": response_id, "item_id": item_id,
            "call_id": call_id, "name": name, "arguments": arguments}),
        ServerEvent::ResponseDone {
            response_id,
            status,
            reason,
        } => {
            let mut response = json!({"id": response_id, "status": status, "output": []});
            if let Some(r) = reason {
                response["status_details"] = json!({"type": status, "reason": r});
            }
            json!({"type": "response.done", "response": response})
        }
        ServerEvent::ItemTruncated { item_id, audio_end_ms } => json!({"type": "conversation.item.truncated",
            "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms}),
        ServerEvent::WordTimestamp {
            item_id,
            text,
            audio_offset_ms,
            audio_duration_ms,
        } => json!({
            "type": "response.audio_timestamp.delta", "item_id": item_id, "text": text,
            "audio_offset_ms": audio_offset_ms, "audio_duration_ms": audio_duration_ms}),
        ServerEvent::Error {
            r#type,
            code,
            message,
            param,
            event_id,
        } => json!({"type": "error",
            "error": {"type": r#type, "code": code, "message": message, "param": param, "event_id": event_id}}),
        ServerEvent::Warning { message, code } => {
            json!({"type": "warning", "warning": {"message": message, "code": code}})
        }
        ServerEvent::Other(kind) => json!({"type": kind, "something": [1, {"x": null}]}),
    };
    v["event_id"] = "event_1".into();
    v
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_realtime_parsers_never_panic_on_any_text(text in any_text()) {
        let _ = parse_server_event(&text);
        let _ = parse_audio_delta(&text);
    }

    #[test]
    fn fuzz_realtime_parsers_never_panic_on_json_like_input(text in json_like(REALTIME_KEYS, REALTIME_TYPES)) {
        let general = parse_server_event(&text);
        if let Some(hot) = parse_audio_delta(&text) {
            // The hot path reads nothing the general parser reads differently.
            match general {
                Ok(ServerEvent::AudioDelta { response_id, item_id, delta }) => {
                    prop_assert_eq!(hot.response_id.as_ref(), response_id.as_str());
                    prop_assert_eq!(hot.item_id.as_ref(), item_id.as_str());
                    prop_assert_eq!(hot.delta.as_ref(), delta.as_str());
                }
                // The general parser reads every field (and so refuses more shapes).
                Err(_) => {}
                Ok(other) => prop_assert!(false, "hot path read a delta, general {:?}", other),
            }
        }
    }

    #[test]
    fn fuzz_realtime_valid_events_round_trip_in_every_dialect(event in server_event(), d in 0..3usize) {
        let text = render(&event, DIALECTS[d]).to_string();
        prop_assert_eq!(parse_server_event(&text).expect("a valid event parses"), event.clone());
        match (&event, parse_audio_delta(&text)) {
            (ServerEvent::AudioDelta { response_id, item_id, delta }, Some(hot)) => {
                prop_assert_eq!(hot.response_id.as_ref(), response_id.as_str());
                prop_assert_eq!(hot.item_id.as_ref(), item_id.as_str());
                prop_assert_eq!(hot.delta.as_ref(), delta.as_str());
            }
            (ServerEvent::AudioDelta { .. }, None) => prop_assert!(false, "hot path missed {}", text),
            (_, Some(_)) => prop_assert!(false, "hot path read a delta from {}", text),
            (_, None) => {}
        }
    }
}

// ---- TwiML --------------------------------------------------------------------

/// What a reader of our TwiML gets back: `<Say>` texts, the stream URL and
/// its parameters, whether it hangs up.
#[derive(Debug, Default, PartialEq)]
struct Read {
    says: Vec<String>,
    url: Option<String>,
    params: Vec<(String, String)>,
    hangup: bool,
}

/// Reads `xml` with quick-xml, strictly: well-formed, one root, references resolved.
fn read_twiml(xml: &str) -> Result<Read, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut read = Read::default();
    let mut say: Option<String> = None;
    let mut depth = 0usize;
    let attr = |e: &quick_xml::events::BytesStart<'_>, key: &[u8]| -> Result<Option<String>, String> {
        for a in e.attributes().with_checks(true) {
            let a = a.map_err(|e| e.to_string())?;
            if a.key.as_ref() == key {
                return Ok(Some(a.unescape_value().map_err(|e| e.to_string())?.into_owned()));
            }
        }
        Ok(None)
    };
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                depth += 1;
                match e.name().as_ref() {
                    b"Say" => say = Some(String::new()),
                    b"Stream" => read.url = attr(&e, b"url")?,
                    _ => {}
                }
            }
            Event::Empty(e) => match e.name().as_ref() {
                b"Parameter" => read.params.push((
                    attr(&e, b"name")?.ok_or("no name")?,
                    attr(&e, b"value")?.ok_or("no value")?,
                )),
                b"Hangup" => read.hangup = true,
                _ => {}
            },
            Event::End(e) => {
                depth = depth.checked_sub(1).ok_or("unbalanced")?;
                if e.name().as_ref() == b"Say" {
                    read.says.push(say.take().ok_or("</Say> without <Say>")?);
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| e.to_string())?;
                match say.as_mut() {
                    Some(s) => s.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(format!("text outside <Say>: {text:?}")),
                }
            }
            Event::GeneralRef(r) => {
                let s = say.as_mut().ok_or("reference outside <Say>")?;
                let name = r.decode().map_err(|e| e.to_string())?;
                let resolved = if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
                    c.to_string()
                } else {
                    quick_xml::escape::unescape(&format!("&{name};"))
                        .map_err(|e| e.to_string())?
                        .into_owned()
                };
                s.push_str(&resolved);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unclosed element".into());
    }
    Ok(read)
}

/// The text a reader must get back for `s`: what XML 1.0 can carry.
fn carried(s: &str) -> String {
    s.chars().filter(|c| is_xml_char(*c)).collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_twiml_from_any_strings_is_xml_and_round_trips(
        greeting in proptest::option::of(any_text()),
        url in any_text(),
        params in proptest::collection::vec((any_text(), any_text()), 0..4),
    ) {
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let xml = connect_stream(greeting.as_deref(), &url, &pairs);
        // Every character is one XML 1.0 may carry (§2.2 `Char`); the reader
        // below does not check that itself. Line ends and tabs are references,
        // so neither end-of-line nor attribute-value normalisation alters them.
        prop_assert!(xml.chars().all(|c| is_xml_char(c) && !matches!(c, '\t' | '\n' | '\r')), "{:?}", xml);
        let read = read_twiml(&xml).map_err(|e| TestCaseError::fail(format!("{e}: {xml:?}")))?;
        let expected_say: Vec<String> = greeting
            .iter()
            .map(|g| carried(g).trim().to_string())
            .filter(|g| !g.is_empty())
            .collect();
        prop_assert_eq!(read.says, expected_say);
        prop_assert_eq!(read.url, Some(carried(&url)));
        let expected: Vec<(String, String)> = params.iter().map(|(k, v)| (carried(k), carried(v))).collect();
        prop_assert_eq!(read.params, expected);
        prop_assert!(!read.hangup);
    }

    #[test]
    fn fuzz_twiml_say_and_hang_up_is_xml_and_round_trips(text in any_text()) {
        let xml = say_and_hang_up(&text);
        prop_assert!(xml.chars().all(|c| is_xml_char(c) && !matches!(c, '\t' | '\n' | '\r')), "{:?}", xml);
        let read = read_twiml(&xml).map_err(|e| TestCaseError::fail(format!("{e}: {xml:?}")))?;
        let said = carried(&text).trim().to_string();
        prop_assert_eq!(read.says, if said.is_empty() { vec![] } else { vec![said] });
        prop_assert!(read.hangup);
    }
}

// ---- Signatures -----------------------------------------------------------------

/// Replaces the byte at `at` (an ASCII position of `s`, if any) with another ASCII byte.
fn change_one_byte(s: &str, at: usize, to: u8) -> Option<String> {
    let positions: Vec<usize> = s.char_indices().filter(|(_, c)| c.is_ascii()).map(|(i, _)| i).collect();
    let i = *positions.get(at % positions.len().max(1))?;
    let mut bytes = s.as_bytes().to_vec();
    let new = to % 128;
    if bytes[i] == new {
        return None;
    }
    bytes[i] = new;
    String::from_utf8(bytes).ok()
}

fn url() -> impl Strategy<Value = String> {
    prop_oneof![
        any_text(),
        (
            proptest::sample::select(&["https", "http", "wss", "ws", "HTTPS", "ftp"][..]),
            "([a-z]{1,3}(:[a-z]{0,3})?@)?[a-z0-9.\\[\\]:-]{0,16}(:[0-9]{0,5})?",
            "(/[a-zA-Z0-9%+._~-]{0,8}){0,3}/?(\\?[a-z=&%+]{0,12})?(#[a-z]{0,4})?",
        )
            .prop_map(|(s, a, p)| format!("{s}://{a}{p}")),
    ]
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(("[A-Za-z]{1,8}", any_text()), 0..6)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_signature_never_panics_on_any_input(token in any_text(), url in url(), params in params(), header in any_text()) {
        let variants = url_variants(&url);
        prop_assert_eq!(variants.first(), Some(&url));
        let _ = validate(&token, &url, &params, &header);
    }

    #[test]
    fn fuzz_signature_valid_ones_verify_and_any_single_byte_change_fails(
        token in "[ -~]{1,40}",
        url in url(),
        params in params(),
        which in 0..3u8,
        at in any::<usize>(),
        to in any::<u8>(),
    ) {
        let sig = compute(&token, &url, &params);
        prop_assert!(validate(&token, &url, &params, &sig));
        match which {
            0 => {
                if let Some(bad) = change_one_byte(&sig, at, to) {
                    prop_assert!(!validate(&token, &url, &params, &bad), "changed signature {} verified", bad);
                }
            }
            1 => {
                if let Some(bad) = change_one_byte(&url, at, to) {
                    prop_assert!(!validate(&token, &bad, &params, &sig), "changed URL {:?} verified", bad);
                }
            }
            _ => {
                let mut flat: BTreeMap<usize, (usize, bool)> = BTreeMap::new();
                for (i, (k, v)) in params.iter().enumerate() {
                    flat.insert(flat.len(), (i, true));
                    if !v.is_empty() || k.is_empty() {
                        flat.insert(flat.len(), (i, false));
                    }
                }
                if let Some(&(i, is_name)) = flat.get(&(at % flat.len().max(1))) {
                    let mut bad = params.clone();
                    let field = if is_name { &mut bad[i].0 } else { &mut bad[i].1 };
                    if let Some(changed) = change_one_byte(field, at / 7, to) {
                        *field = changed;
                        prop_assert!(!validate(&token, &url, &bad, &sig), "changed params {:?} verified", bad);
                    }
                }
            }
        }
    }
}
