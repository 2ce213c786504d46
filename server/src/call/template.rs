//! `{{name}}` placeholders in a call's instructions, greeting and voicemail
//! message, filled from PlaceCall's `variables` (pure text → text).
//!
//! A placeholder is `{{`, optional spaces, a name (a letter or `_`, then
//! letters, digits or `_`, at most [`MAX_NAME`] bytes), optional spaces,
//! `}}`. Anything else, `{{` included, is literal text, so prompts that
//! show JSON or code keep working. Values are inserted as text: no
//! placeholder inside a value is expanded (a value cannot reach another
//! variable), and each output escapes them for its own format (TwiML escapes
//! the greeting, the AI's JSON escapes the instructions).

use std::collections::BTreeMap;

/// Most variables a call may have.
pub const MAX_VARIABLES: usize = 32;
/// Longest variable name, bytes.
pub const MAX_NAME: usize = 64;
/// Longest variable value, bytes.
pub const MAX_VALUE: usize = 1024;

/// Whether `name` may name a variable.
pub fn is_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= MAX_NAME
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A placeholder with no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing(pub String);

/// `text` with every placeholder replaced by its value; the first
/// placeholder without a value is the error.
pub fn render(text: &str, variables: &BTreeMap<String, String>) -> Result<String, Missing> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match placeholder(after) {
            Some((name, len)) => {
                let value = variables.get(name).ok_or_else(|| Missing(name.to_string()))?;
                out.push_str(value);
                rest = &after[len..];
            }
            None => {
                // Literal: keep one brace and look again from the next one,
                // so `{{{name}}` still finds the placeholder.
                out.push('{');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The name of a placeholder whose `{{` was just consumed, and the bytes it
/// takes up to and including `}}`.
fn placeholder(after: &str) -> Option<(&str, usize)> {
    let trimmed = after.trim_start_matches(' ');
    let lead = after.len() - trimmed.len();
    let name_len = trimmed
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    let name = &trimmed[..name_len];
    if !is_name(name) {
        return None;
    }
    let tail = &trimmed[name_len..];
    let spaces = tail.len() - tail.trim_start_matches(' ').len();
    tail[spaces..]
        .starts_with("}}")
        .then_some((name, lead + name_len + spaces + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn fills_placeholders_and_keeps_everything_else() {
        let v = vars(&[("name", "Sam"), ("day", "Friday")]);
        assert_eq!(
            render("Hi {{name}}, see you {{ day }}.", &v).unwrap(),
            "Hi Sam, see you Friday."
        );
        assert_eq!(render("no placeholders", &v).unwrap(), "no placeholders");
        assert_eq!(
            render(r#"JSON {{"a": 1}} and {{ }} and {{9x}}"#, &v).unwrap(),
            r#"JSON {{"a": 1}} and {{ }} and {{9x}}"#
        );
        assert_eq!(render("{{{name}}}", &v).unwrap(), "{Sam}");
        assert_eq!(render("trailing {{", &v).unwrap(), "trailing {{");
        assert_eq!(render("é{{name}}é", &v).unwrap(), "éSamé");
    }

    #[test]
    fn a_missing_value_names_the_placeholder() {
        assert_eq!(render("Hi {{ who }}", &vars(&[])), Err(Missing("who".into())));
    }

    #[test]
    fn values_are_not_expanded_again() {
        let v = vars(&[("a", "{{b}}"), ("b", "secret")]);
        assert_eq!(render("{{a}}", &v).unwrap(), "{{b}}");
    }

    #[test]
    fn names() {
        assert!(is_name("first_name") && is_name("_x") && is_name("A1"));
        assert!(!is_name("") && !is_name("1a") && !is_name("a-b") && !is_name(&"a".repeat(65)));
    }
}
