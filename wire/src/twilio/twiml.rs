//! TwiML: what we answer Twilio's voice webhook with (protocols.md §4). The
//! emulator's reader of these documents is `voice_agent_emulators::twilio::twiml`.

pub const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// Whether XML 1.0 can carry `c` at all (§2.2 `Char`: tab, line feed,
/// carriage return, and U+0020 up, except U+FFFE and U+FFFF; a `str` holds no
/// surrogates). Not even a character reference can carry the others.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes text for XML content and attribute values. Characters XML 1.0
/// cannot carry (C0 controls other than tab and line ends, U+FFFE, U+FFFF)
/// are dropped: a greeting like "hi\x01\x0b" would otherwise make the whole
/// document unreadable for Twilio (issue 12, finding 7), and no reference can
/// stand for them. Tab and line ends are written as character references so
/// that a parser's end-of-line and attribute-value normalisation (XML §2.11,
/// §3.3.3) hands them back unchanged.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if !is_xml_char(c) => {}
            c => out.push(c),
        }
    }
    out
}

fn push_say(out: &mut String, text: Option<&str>) {
    // What XML cannot carry goes before trimming, so that a greeting of
    // spaces and control characters gives no empty `<Say>`.
    let carried: Option<String> = text.map(|t| t.chars().filter(|c| is_xml_char(*c)).collect());
    if let Some(t) = carried.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        out.push_str("<Say>");
        out.push_str(&escape(t));
        out.push_str("</Say>");
    }
}

/// The call's instructions: an optional `<Say>` greeting (omitted when empty),
/// then a bidirectional `<Connect><Stream>` to `stream_url` carrying `params`
/// as `<Parameter>`s. §4.2: the URL must be `wss://` (ws:// only works with
/// the emulator) and carries no query string, hence the parameters; nothing
/// follows `</Connect>`, so the call hangs up when our server closes the socket.
pub fn connect_stream(greeting: Option<&str>, stream_url: &str, params: &[(&str, &str)]) -> String {
    render_connect(greeting, stream_url, params, None)
}

/// [`connect_stream`] with `<Connect action="…">` (method POST): when the
/// stream's socket closes and the call goes on, Twilio requests `action` and
/// runs the TwiML it answers instead of what follows `</Connect>`
/// (protocols.md §4). It lets a replica that did not run the stream decide
/// what happens next (its own bridge vanished with a killed replica).
pub fn connect_stream_with_action(
    greeting: Option<&str>,
    stream_url: &str,
    params: &[(&str, &str)],
    action: &str,
) -> String {
    render_connect(greeting, stream_url, params, Some(action))
}

fn render_connect(greeting: Option<&str>, stream_url: &str, params: &[(&str, &str)], action: Option<&str>) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(XML_DECL);
    out.push_str("<Response>");
    push_say(&mut out, greeting);
    match action {
        Some(action) => {
            out.push_str("<Connect action=\"");
            out.push_str(&escape(action));
            out.push_str("\" method=\"POST\">");
        }
        None => out.push_str("<Connect>"),
    }
    out.push_str("<Stream url=\"");
    out.push_str(&escape(stream_url));
    out.push_str("\">");
    for (name, value) in params {
        out.push_str("<Parameter name=\"");
        out.push_str(&escape(name));
        out.push_str("\" value=\"");
        out.push_str(&escape(value));
        out.push_str("\"/>");
    }
    out.push_str("</Stream></Connect></Response>");
    out
}

/// `<Response><Hangup/></Response>`: for a call we no longer want.
pub fn hangup() -> String {
    format!("{XML_DECL}<Response><Hangup/></Response>")
}

/// Speak `text`, then hang up (a REST `Twiml=` redirect of a live call).
pub fn say_and_hang_up(text: &str) -> String {
    let mut out = String::from(XML_DECL);
    out.push_str("<Response>");
    push_say(&mut out, Some(text));
    out.push_str("<Hangup/></Response>");
    out
}

/// Hand the live call to `number` (a call transfer, by a REST `Twiml=`
/// redirect): `<Dial callerId timeout action method="POST"><Number>`.
/// Twilio requests `action` when the dial is over, with `DialCallStatus`
/// (completed, answered, busy, no-answer, failed, canceled), and runs the
/// TwiML it answers; the rest of this document is never reached.
pub fn dial(number: &str, caller_id: &str, timeout_secs: u32, action: &str) -> String {
    let mut out = String::from(XML_DECL);
    out.push_str("<Response><Dial callerId=\"");
    out.push_str(&escape(caller_id));
    out.push_str("\" timeout=\"");
    out.push_str(&timeout_secs.to_string());
    out.push_str("\" action=\"");
    out.push_str(&escape(action));
    out.push_str("\" method=\"POST\"><Number>");
    out.push_str(&escape(number));
    out.push_str("</Number></Dial></Response>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_greeting_stream_and_escaped_parameters() {
        let x = connect_stream(
            Some("Hi & <welcome> \"you\""),
            "wss://h.example/ws/media/c1",
            &[("call_id", "c1"), ("secret", "a&b\"c")],
        );
        assert!(x.starts_with(XML_DECL));
        assert!(x.contains("<Say>Hi &amp; &lt;welcome&gt; &quot;you&quot;</Say><Connect>"));
        assert!(x.contains(r#"<Parameter name="secret" value="a&amp;b&quot;c"/>"#));
        assert!(x.ends_with("</Stream></Connect></Response>"));
    }

    #[test]
    fn the_action_url_is_an_escaped_attribute_of_connect() {
        let x = connect_stream_with_action(
            None,
            "wss://h/ws",
            &[],
            "https://h/twilio/connect-action?call_id=c1&x=1",
        );
        assert!(
            x.contains(r#"<Connect action="https://h/twilio/connect-action?call_id=c1&amp;x=1" method="POST"><Stream url="wss://h/ws">"#),
            "{x}"
        );
    }

    #[test]
    fn a_dial_names_the_number_caller_id_timeout_and_escaped_action() {
        let x = dial(
            "+15550120",
            "+15005550006",
            20,
            "https://h/twilio/dial-action?call_id=c1&x=1",
        );
        assert_eq!(
            x,
            format!(
                r#"{XML_DECL}<Response><Dial callerId="+15005550006" timeout="20" action="https://h/twilio/dial-action?call_id=c1&amp;x=1" method="POST"><Number>+15550120</Number></Dial></Response>"#
            )
        );
    }

    #[test]
    fn characters_xml_cannot_carry_are_dropped_and_line_ends_kept() {
        // Issue 12, finding 7: a greeting with \x01\x0b broke the document.
        let x = connect_stream(Some("Hi\x01\x0b there\u{FFFF}"), "wss://h/ws", &[("p", "a\nb\x00")]);
        assert!(x.contains("<Say>Hi there</Say>"), "{x}");
        assert!(x.contains(r#"<Parameter name="p" value="a&#10;b"/>"#), "{x}");
        assert!(!say_and_hang_up(" \x01 ").contains("<Say>"));
        assert!(say_and_hang_up("line\r\nbreak").contains("<Say>line&#13;&#10;break</Say>"));
    }
}
