//! TwiML: what we answer Twilio's voice webhook with (protocols.md §4). The
//! emulator's reader of these documents is `voice_agent_emulators::twilio::twiml`.

pub const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// Escapes text for XML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn push_say(out: &mut String, text: Option<&str>) {
    if let Some(t) = text.map(str::trim).filter(|t| !t.is_empty()) {
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
    let mut out = String::with_capacity(256);
    out.push_str(XML_DECL);
    out.push_str("<Response>");
    push_say(&mut out, greeting);
    out.push_str("<Connect><Stream url=\"");
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
}
