//! The emulator's reader of TwiML: the verbs our server answers with
//! (`voice_agent_wire::twilio::twiml` builds them; protocols.md §4), parsed
//! the way Twilio runs them.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
#[cfg(test)]
use voice_agent_wire::twilio::twiml::{connect_stream, connect_stream_with_action, dial, hangup, say_and_hang_up};

/// One TwiML verb, as the emulator runs it.
#[derive(Clone, Debug, PartialEq)]
pub enum Verb {
    /// `<Say>text</Say>`.
    Say(String),
    /// `<Pause length="n"/>` (default 1 second).
    Pause(u32),
    /// `<Connect>` with its `<Stream>` (none when `<Connect>` holds something else).
    Connect(Option<StreamSpec>),
    /// `<Hangup/>`.
    Hangup,
    /// `<Dial>` of one number (`<Number>` or the bare text).
    Dial(DialSpec),
    /// A verb the emulator does not run (its element name).
    Other(String),
}

/// A `<Stream>` inside `<Connect>`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamSpec {
    /// The `url` attribute.
    pub url: String,
    /// The `name` attribute.
    pub name: Option<String>,
    /// `<Parameter name value>` children, in order.
    pub parameters: Vec<(String, String)>,
    /// The enclosing `<Connect>`'s `action` URL and `method` (POST unless
    /// given): requested when the stream's socket closes while the call goes on.
    pub connect_action: Option<(String, String)>,
}

/// A `<Dial>`: connect the call to another number (a transfer).
#[derive(Clone, Debug, PartialEq)]
pub struct DialSpec {
    /// The number (the first `<Number>`, or the verb's own text).
    pub number: String,
    /// `callerId`: what the dialled party sees (the call's `From` when unset).
    pub caller_id: Option<String>,
    /// `timeout`: how long it may ring, seconds (Twilio's default 30).
    pub timeout: u32,
    /// `action` and `method` (POST unless given): requested when the dial
    /// is over, with `DialCallStatus`; without one the document goes on.
    pub action: Option<(String, String)>,
}

/// TwiML the parser refuses.
#[derive(Debug, thiserror::Error)]
pub enum TwimlError {
    /// Not well-formed XML.
    #[error("malformed TwiML: {0}")]
    Xml(String),
    /// The root element is not `<Response>`.
    #[error("TwiML root element must be <Response>, found <{0}>")]
    NotResponse(String),
    /// A verb is missing something it needs.
    #[error("invalid TwiML: {0}")]
    Invalid(String),
}

fn xml_err(e: impl std::fmt::Display) -> TwimlError {
    TwimlError::Xml(e.to_string())
}

fn name_of(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
}

fn attr(e: &BytesStart<'_>, key: &str) -> Result<Option<String>, TwimlError> {
    for a in e.attributes() {
        let a = a.map_err(xml_err)?;
        if a.key.local_name().as_ref() == key.as_bytes() {
            return Ok(Some(a.unescape_value().map_err(xml_err)?.into_owned()));
        }
    }
    Ok(None)
}

/// Parses a `<Response>` into its top-level verbs (`<Say>`, `<Pause>`,
/// `<Connect><Stream><Parameter>`, `<Hangup>`; others become [`Verb::Other`]).
pub fn parse(xml: &str) -> Result<Vec<Verb>, TwimlError> {
    let mut reader = Reader::from_str(xml);
    let mut verbs = Vec::new();
    // Element names from the root down to the current element.
    let mut path: Vec<String> = Vec::new();
    let mut say_text: Option<String> = None;
    let mut stream: Option<StreamSpec> = None;
    let mut connect_stream: Option<StreamSpec> = None;
    let mut connect_action: Option<(String, String)> = None;
    let mut dial: Option<DialSpec> = None;
    let mut dial_text: Option<String> = None;
    let mut saw_root = false;
    loop {
        let event = reader.read_event().map_err(xml_err)?;
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            let name = name_of(&e);
            match path.len() {
                0 => {
                    if name != "Response" {
                        return Err(TwimlError::NotResponse(name));
                    }
                    saw_root = true;
                }
                1 => match name.as_str() {
                    "Say" => say_text = Some(String::new()),
                    "Pause" => {
                        let length = match attr(&e, "length")? {
                            None => 1,
                            Some(s) => s
                                .trim()
                                .parse()
                                .map_err(|_| TwimlError::Invalid(format!("<Pause length=\"{s}\">")))?,
                        };
                        verbs.push(Verb::Pause(length));
                    }
                    "Connect" => {
                        connect_stream = None;
                        connect_action = match attr(&e, "action")? {
                            Some(url) => Some((url, attr(&e, "method")?.unwrap_or_else(|| "POST".into()))),
                            None => None,
                        };
                    }
                    "Hangup" => verbs.push(Verb::Hangup),
                    "Dial" => {
                        let timeout = match attr(&e, "timeout")? {
                            None => 30,
                            Some(t) => t
                                .trim()
                                .parse()
                                .map_err(|_| TwimlError::Invalid(format!("<Dial timeout=\"{t}\">")))?,
                        };
                        dial = Some(DialSpec {
                            number: String::new(),
                            caller_id: attr(&e, "callerId")?,
                            timeout,
                            action: match attr(&e, "action")? {
                                Some(url) => Some((url, attr(&e, "method")?.unwrap_or_else(|| "POST".into()))),
                                None => None,
                            },
                        });
                        dial_text = Some(String::new());
                    }
                    other => verbs.push(Verb::Other(other.to_string())),
                },
                _ => {
                    let parent = path.last().map(String::as_str);
                    match (parent, name.as_str()) {
                        (Some("Connect"), "Stream") => {
                            let url =
                                attr(&e, "url")?.ok_or_else(|| TwimlError::Invalid("<Stream> without url".into()))?;
                            stream = Some(StreamSpec {
                                url,
                                name: attr(&e, "name")?,
                                parameters: Vec::new(),
                                connect_action: None,
                            });
                        }
                        (Some("Stream"), "Parameter") => {
                            if let (Some(s), Some(n)) = (stream.as_mut(), attr(&e, "name")?) {
                                s.parameters.push((n, attr(&e, "value")?.unwrap_or_default()));
                            }
                        }
                        _ => {}
                    }
                }
            }
            if empty {
                close(
                    &name,
                    path.len(),
                    &mut verbs,
                    &mut say_text,
                    &mut stream,
                    &mut connect_stream,
                );
                attach_action(&name, path.len(), &mut verbs, &mut connect_action);
                close_dial(&name, path.len(), &mut verbs, &mut dial, &mut dial_text)?;
            } else {
                path.push(name);
            }
            continue;
        }
        match event {
            Event::End(_) => {
                let Some(name) = path.pop() else {
                    return Err(TwimlError::Xml("unbalanced end tag".into()));
                };
                close(
                    &name,
                    path.len(),
                    &mut verbs,
                    &mut say_text,
                    &mut stream,
                    &mut connect_stream,
                );
                attach_action(&name, path.len(), &mut verbs, &mut connect_action);
                close_dial(&name, path.len(), &mut verbs, &mut dial, &mut dial_text)?;
            }
            Event::Text(t) => {
                if let Some(s) = say_text.as_mut() {
                    s.push_str(&t.decode().map_err(xml_err)?);
                }
                // The number: the first <Number>'s text, or the verb's own.
                if let Some(s) = dial_text.as_mut()
                    && s.trim().is_empty()
                {
                    s.push_str(&t.decode().map_err(xml_err)?);
                }
            }
            Event::CData(t) => {
                if let Some(s) = say_text.as_mut() {
                    s.push_str(&t.decode().map_err(xml_err)?);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(s) = say_text.as_mut() {
                    let name = r.decode().map_err(xml_err)?;
                    let reference = format!("&{name};");
                    let resolved = quick_xml::escape::unescape(&reference).map_err(xml_err)?;
                    s.push_str(&resolved);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !path.is_empty() {
        return Err(TwimlError::Xml(format!("unclosed <{}>", path.join("><"))));
    }
    if !saw_root {
        return Err(TwimlError::Xml("empty document".into()));
    }
    Ok(verbs)
}

/// Once a `<Dial>` closed, it is a verb with its number (required).
fn close_dial(
    name: &str,
    depth: usize,
    verbs: &mut Vec<Verb>,
    dial: &mut Option<DialSpec>,
    dial_text: &mut Option<String>,
) -> Result<(), TwimlError> {
    if (depth, name) != (1, "Dial") {
        return Ok(());
    }
    let number = dial_text.take().unwrap_or_default().trim().to_string();
    if number.is_empty() {
        return Err(TwimlError::Invalid("<Dial> without a number".into()));
    }
    if let Some(spec) = dial.take() {
        verbs.push(Verb::Dial(DialSpec { number, ..spec }));
    }
    Ok(())
}

/// Once a `<Connect>` closed, gives its `action` to its stream.
fn attach_action(name: &str, depth: usize, verbs: &mut [Verb], action: &mut Option<(String, String)>) {
    if (depth, name) != (1, "Connect") {
        return;
    }
    let action = action.take();
    if let Some(Verb::Connect(Some(stream))) = verbs.last_mut() {
        stream.connect_action = action;
    }
}

/// Finishes element `name` whose depth (root = 0) is `depth`.
fn close(
    name: &str,
    depth: usize,
    verbs: &mut Vec<Verb>,
    say_text: &mut Option<String>,
    stream: &mut Option<StreamSpec>,
    connect_stream: &mut Option<StreamSpec>,
) {
    match (depth, name) {
        (1, "Say") => {
            let text = say_text.take().unwrap_or_default();
            verbs.push(Verb::Say(text.split_whitespace().collect::<Vec<_>>().join(" ")));
        }
        (1, "Connect") => verbs.push(Verb::Connect(connect_stream.take())),
        // Only the first <Stream> of a <Connect> counts.
        (2, "Stream") if connect_stream.is_none() => *connect_stream = stream.take(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_exactly_what_the_builder_escaped() {
        // The builder's own escaping is tested in the wire crate; here the
        // emulator's reader must hand back exactly what we meant.
        let x = connect_stream(
            Some("Hi & <welcome> \"you\""),
            "wss://h.example/ws/media/c1",
            &[("call_id", "c1"), ("secret", "a&b\"c")],
        );
        assert_eq!(
            parse(&x).unwrap(),
            vec![
                Verb::Say("Hi & <welcome> \"you\"".into()),
                Verb::Connect(Some(StreamSpec {
                    url: "wss://h.example/ws/media/c1".into(),
                    name: None,
                    parameters: vec![("call_id".into(), "c1".into()), ("secret".into(), "a&b\"c".into())],
                    connect_action: None,
                })),
            ]
        );
    }

    #[test]
    fn the_connect_action_goes_with_its_stream() {
        let x = connect_stream_with_action(None, "wss://h/ws", &[], "https://h/a?x=1&y=2");
        let verbs = parse(&x).unwrap();
        let [Verb::Connect(Some(stream))] = verbs.as_slice() else {
            panic!("{x}");
        };
        assert_eq!(
            stream.connect_action,
            Some(("https://h/a?x=1&y=2".into(), "POST".into()))
        );
        let x = r#"<Response><Connect action="/next" method="GET"><Stream url="wss://h/ws"/></Connect><Connect><Stream url="wss://h/2"/></Connect></Response>"#;
        let verbs = parse(x).unwrap();
        assert!(
            matches!(&verbs[0], Verb::Connect(Some(s)) if s.connect_action == Some(("/next".into(), "GET".into())))
        );
        assert!(matches!(&verbs[1], Verb::Connect(Some(s)) if s.connect_action.is_none()));
    }

    #[test]
    fn empty_or_missing_greeting_has_no_say() {
        for g in [None, Some(""), Some("   ")] {
            let x = connect_stream(g, "wss://h/ws", &[]);
            assert!(!x.contains("<Say"), "{x}");
            assert_eq!(parse(&x).unwrap().len(), 1);
        }
    }

    #[test]
    fn parses_say_pause_hangup_and_unknown_verbs() {
        let x = r#"<?xml version="1.0"?>
            <Response>
              <Say voice="alice">  Please   wait. </Say>
              <Pause length="2"/>
              <Pause/>
              <Play>https://x/a.mp3</Play>
              <Say><![CDATA[Bye <now>]]></Say>
              <Hangup/>
            </Response>"#;
        assert_eq!(
            parse(x).unwrap(),
            vec![
                Verb::Say("Please wait.".into()),
                Verb::Pause(2),
                Verb::Pause(1),
                Verb::Other("Play".into()),
                Verb::Say("Bye <now>".into()),
                Verb::Hangup,
            ]
        );
        assert_eq!(
            parse(&say_and_hang_up("Sorry & bye")).unwrap(),
            vec![Verb::Say("Sorry & bye".into()), Verb::Hangup]
        );
        assert_eq!(parse(&hangup()).unwrap(), vec![Verb::Hangup]);
    }

    #[test]
    fn a_dial_reads_back_with_its_number_caller_id_timeout_and_action() {
        let x = dial(
            "+15550120",
            "+15005550006",
            20,
            "https://h/twilio/dial-action?call_id=c1&x=1",
        );
        assert_eq!(
            parse(&x).unwrap(),
            vec![Verb::Dial(DialSpec {
                number: "+15550120".into(),
                caller_id: Some("+15005550006".into()),
                timeout: 20,
                action: Some(("https://h/twilio/dial-action?call_id=c1&x=1".into(), "POST".into())),
            })]
        );
        // Bare text, Twilio's defaults, and what follows it.
        assert_eq!(
            parse("<Response><Dial> +15550122 </Dial><Say>Bye</Say></Response>").unwrap(),
            vec![
                Verb::Dial(DialSpec {
                    number: "+15550122".into(),
                    caller_id: None,
                    timeout: 30,
                    action: None,
                }),
                Verb::Say("Bye".into()),
            ]
        );
        assert!(parse("<Response><Dial></Dial></Response>").is_err());
        assert!(parse(r#"<Response><Dial timeout="x">+1</Dial></Response>"#).is_err());
    }

    #[test]
    fn refuses_bad_documents() {
        assert!(matches!(parse("<Foo/>"), Err(TwimlError::NotResponse(_))));
        assert!(parse("<Response><Say>x</Response>").is_err());
        assert!(parse("").is_err());
        assert!(matches!(
            parse("<Response><Connect><Stream/></Connect></Response>"),
            Err(TwimlError::Invalid(_))
        ));
        assert!(parse(r#"<Response><Pause length="x"/></Response>"#).is_err());
        // <Connect> without <Stream> is kept (the emulator skips it).
        assert_eq!(
            parse("<Response><Connect/></Response>").unwrap(),
            vec![Verb::Connect(None)]
        );
    }
}
