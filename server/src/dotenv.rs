//! `.env` files as python-dotenv 1.x reads them (the seed Python sample loaded
//! its `.env` with `load_dotenv()`, so a `.env` written for it must mean the
//! same here). A wire-format module: text in, variables out, no I/O; `main`
//! reads the file and sets the variables.
//!
//! The rules, those of python-dotenv's `parser.py` and `main.py`:
//! - one binding per line: `KEY=value`, optionally after `export `; blank
//!   lines and lines starting with `#` are skipped; a key may be single-quoted
//!   (`'KEY'=v`); `KEY` alone (no `=`) sets nothing;
//! - an unquoted value runs to the end of the line, loses a trailing comment
//!   (whitespace then `#`) and trailing whitespace, and may contain spaces
//!   (`SYSTEM_PROMPT=You are a helpful assistant.`): dotenvy refuses that;
//! - `'single'` values keep everything but `\\` and `\'`; `"double"` values
//!   also decode `\"` `\a` `\b` `\f` `\n` `\r` `\t` `\v`; both may span lines;
//!   after the closing quote only whitespace and a comment may follow;
//! - `${NAME}` and `${NAME:-default}` are expanded in every value (quoted or
//!   not), from the process environment first, then from the bindings above
//!   (`load_dotenv(override=False)`); `$NAME` without braces is left as it is;
//! - a variable already set in the environment keeps its value.
//!
//! One difference, on purpose: python-dotenv warns about a line it cannot
//! parse and goes on; here it is an error naming the line and, when it got
//! that far, the variable, so a typo in a secret's quoting stops the start
//! instead of leaving the variable unset.

use std::fmt;

/// One `KEY=value` of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The variable.
    pub key: String,
    /// Its value as written (quotes and escapes decoded, not yet expanded);
    /// `None` for a bare `KEY` line, which sets nothing.
    pub value: Option<String>,
    /// 1-based line the binding starts on.
    pub line: usize,
}

/// A statement that python-dotenv could not parse either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line the statement starts on.
    pub line: usize,
    /// The variable, when the key was read before the fault.
    pub variable: Option<String>,
    /// What is wrong.
    pub problem: String,
}

impl std::error::Error for ParseError {}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.variable {
            Some(v) => write!(f, "line {}: {v}: {}", self.line, self.problem),
            None => write!(f, "line {}: {}", self.line, self.problem),
        }
    }
}

/// The bindings of a `.env` text, in file order.
pub fn parse(text: &str) -> Result<Vec<Binding>, ParseError> {
    // python-dotenv reads with encoding utf-8, where a BOM would become part of
    // the first key; editors on Windows write one, and no key starts with it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader { text, pos: 0 };
    let mut out = Vec::new();
    loop {
        reader.skip_while(char::is_whitespace);
        if reader.at_end() {
            return Ok(out);
        }
        let line = reader.line();
        if let Some(binding) = parse_binding(&mut reader, line)? {
            out.push(binding);
        }
    }
}

/// The variables `load_dotenv()` would set: each binding with a value, `${…}`
/// expanded, except those `env` already has (the environment wins). A later
/// binding of the same key replaces an earlier one.
pub fn resolve(bindings: &[Binding], env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    // What the file defined so far, for expansion (None: a bare `KEY`).
    let mut seen: Vec<(String, Option<String>)> = Vec::new();
    for b in bindings {
        let value = b
            .value
            .as_deref()
            .map(|v| expand(v, &|name: &str| lookup(name, env, &seen)));
        match seen.iter_mut().find(|(k, _)| *k == b.key) {
            Some(slot) => slot.1 = value,
            None => seen.push((b.key.clone(), value)),
        }
    }
    seen.into_iter()
        .filter(|(k, _)| env(k).is_none())
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// `${name}` as python-dotenv resolves it with `override=False`: the
/// environment, else the file so far; `Some(None)` when the file has the key
/// without a value (which then expands to "", not to the default).
fn lookup(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    seen: &[(String, Option<String>)],
) -> Option<Option<String>> {
    env(name)
        .map(Some)
        .or_else(|| seen.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
}

/// Expands `${NAME}` and `${NAME:-default}` (python-dotenv's `_posix_variable`:
/// a name is any run of characters but `}` and `:`); anything else is literal.
fn expand(value: &str, lookup: &dyn Fn(&str) -> Option<Option<String>>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match variable(after) {
            Some((name, default, used)) => {
                let value = match lookup(name) {
                    Some(v) => v.unwrap_or_default(),
                    None => default.unwrap_or("").to_string(),
                };
                out.push_str(&value);
                rest = &after[used..];
            }
            None => {
                out.push('$');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// After `${`: the name, the default and how many bytes up to and including `}`.
fn variable(s: &str) -> Option<(&str, Option<&str>, usize)> {
    let name_end = s.find(['}', ':'])?;
    let name = &s[..name_end];
    if s[name_end..].starts_with('}') {
        return Some((name, None, name_end + 1));
    }
    let default_start = name_end + ":-".len();
    if !s[name_end..].starts_with(":-") {
        return None;
    }
    let default_len = s[default_start..].find('}')?;
    Some((
        name,
        Some(&s[default_start..default_start + default_len]),
        default_start + default_len + 1,
    ))
}

struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl Reader<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    /// 1-based line of the current position (`\r\n`, `\n` and `\r` end lines).
    fn line(&self) -> usize {
        let before = &self.text[..self.pos];
        1 + before.matches('\n').count() + before.matches('\r').count() - before.matches("\r\n").count()
    }
    fn skip_while(&mut self, f: impl Fn(char) -> bool) -> &str {
        let start = self.pos;
        let len: usize = self.rest().chars().take_while(|c| f(*c)).map(char::len_utf8).sum();
        self.pos += len;
        &self.text[start..self.pos]
    }
    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }
    /// Skips spaces and tabs, never a line end.
    fn horizontal_space(&mut self) -> &str {
        self.skip_while(is_horizontal_space)
    }
}

/// Whitespace that does not end a line (`[^\S\r\n]`).
fn is_horizontal_space(c: char) -> bool {
    c.is_whitespace() && c != '\r' && c != '\n'
}

fn parse_binding(reader: &mut Reader<'_>, line: usize) -> Result<Option<Binding>, ParseError> {
    let fail = |variable: Option<&str>, problem: &str| ParseError {
        line,
        variable: variable.map(str::to_string),
        problem: problem.to_string(),
    };
    // `export` then at least one space; `exportFOO` and `export=` are keys.
    if reader.rest().starts_with("export") && reader.rest()["export".len()..].starts_with(is_horizontal_space) {
        reader.pos += "export".len();
        reader.horizontal_space();
    }
    let key = match reader.peek() {
        Some('#') => None,
        Some('\'') => {
            reader.pos += 1;
            let key = reader.skip_while(|c| c != '\'').to_string();
            if key.is_empty() || !reader.eat("'") {
                return Err(fail(None, "a quoted variable name needs its closing quote"));
            }
            Some(key)
        }
        _ => {
            let key = reader
                .skip_while(|c| c != '=' && c != '#' && !c.is_whitespace())
                .to_string();
            if key.is_empty() {
                return Err(fail(None, "expected a variable name before '='"));
            }
            Some(key)
        }
    };
    reader.horizontal_space();
    let value = if key.is_some() && reader.eat("=") {
        reader.horizontal_space();
        Some(parse_value(reader).map_err(|problem| fail(key.as_deref(), &problem))?)
    } else {
        None
    };
    // An optional comment, then the end of the line.
    reader.horizontal_space();
    if reader.peek() == Some('#') {
        reader.skip_while(|c| c != '\r' && c != '\n');
    }
    if !(reader.eat("\r\n") || reader.eat("\n") || reader.eat("\r") || reader.at_end()) {
        let problem = match &value {
            Some(_) => "unexpected text after the closing quote (quote the whole value, or leave it unquoted)",
            None => "expected '=' after the variable name",
        };
        return Err(fail(key.as_deref(), problem));
    }
    Ok(key.map(|key| Binding { key, value, line }))
}

fn parse_value(reader: &mut Reader<'_>) -> Result<String, String> {
    match reader.peek() {
        Some(quote @ ('\'' | '"')) => {
            reader.pos += 1;
            let raw = quoted(reader, quote)?;
            Ok(if quote == '"' {
                unescape(raw, "\\'\"abfnrtv")
            } else {
                unescape(raw, "\\'")
            })
        }
        None | Some('\r' | '\n') => Ok(String::new()),
        Some(_) => {
            let raw = reader.skip_while(|c| c != '\r' && c != '\n');
            Ok(strip_comment(raw).trim_end().to_string())
        }
    }
}

/// The raw text of a quoted value up to its closing quote, which the reader
/// passes. Like python-dotenv's regex `'((?:\\'|[^'])*)'`: a backslash before
/// the quote escapes it, and when no unescaped quote follows, the regex
/// backtracks to the last escaped one, which then closes the value (so
/// `'abc\'` is `abc\`).
fn quoted<'a>(reader: &mut Reader<'a>, quote: char) -> Result<&'a str, String> {
    let text: &'a str = reader.text;
    let start = reader.pos;
    let mut i = start;
    let mut last_escaped_quote = None;
    while i < text.len() {
        let rest = &text[i..];
        if rest.starts_with('\\') && rest[1..].starts_with(quote) {
            last_escaped_quote = Some(i + 1);
            i += 2;
        } else if rest.starts_with(quote) {
            reader.pos = i + 1;
            return Ok(&text[start..i]);
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    match last_escaped_quote {
        Some(close) => {
            reader.pos = close + 1;
            Ok(&text[start..close])
        }
        None => Err(format!("the value's {quote} quote is never closed")),
    }
}

/// Decodes `\x` for each `x` in `escapes` (python's unicode-escape of one
/// such pair); other backslashes stay as they are.
fn unescape(raw: &str, escapes: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(&next)) if escapes.contains(next) => {
                chars.next();
                out.push(match next {
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'v' => '\u{b}',
                    other => other,
                });
            }
            _ => out.push(c),
        }
    }
    out
}

/// An unquoted value without its comment: python-dotenv removes `\s+#.*`,
/// i.e. from the first run of whitespace that is followed by `#`.
fn strip_comment(raw: &str) -> &str {
    let mut run_start = None;
    for (i, c) in raw.char_indices() {
        if c.is_whitespace() {
            run_start.get_or_insert(i);
        } else if c == '#'
            && let Some(start) = run_start
        {
            return &raw[..start];
        } else {
            run_start = None;
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dotenv_values()` of python-dotenv 1.2.2 on the same text (each
    /// expectation below was checked against it), with an empty environment.
    fn values(text: &str) -> Vec<(String, Option<String>)> {
        let bindings = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let resolved = resolve(&bindings, &|_| None);
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for b in bindings {
            let v = resolved.iter().find(|(k, _)| *k == b.key).map(|(_, v)| v.clone());
            out.retain(|(k, _)| *k != b.key);
            out.push((b.key, v));
        }
        out
    }

    fn one(text: &str) -> Option<String> {
        let v = values(text);
        assert_eq!(v.len(), 1, "{text:?}: {v:?}");
        v.into_iter().next().and_then(|(_, v)| v)
    }

    #[test]
    fn unquoted_values_keep_their_spaces_and_lose_comments() {
        let prompt = "You are a helpful voice assistant. Be concise and conversational.";
        assert_eq!(one(&format!("SYSTEM_PROMPT={prompt}\n")).as_deref(), Some(prompt));
        assert_eq!(one("A=val # comment\n").as_deref(), Some("val"));
        assert_eq!(one("A=a  #x # y\n").as_deref(), Some("a"));
        assert_eq!(one("A=a\t#x\n").as_deref(), Some("a"));
        assert_eq!(one("A=val#not-a-comment\n").as_deref(), Some("val#not-a-comment"));
        assert_eq!(one("A=#x\n").as_deref(), Some("#x"));
        assert_eq!(one("A= #x\n").as_deref(), Some("#x"));
        assert_eq!(one("  A  =  spaced  \n").as_deref(), Some("spaced"));
        assert_eq!(one("A=a 'b' \"c\"\n").as_deref(), Some("a 'b' \"c\""));
        assert_eq!(one("A=x\\ny\n").as_deref(), Some("x\\ny"), "no escapes unquoted");
        assert_eq!(one("A=\n").as_deref(), Some(""));
        assert_eq!(one("A=").as_deref(), Some(""));
    }

    #[test]
    fn quotes_and_their_escapes() {
        assert_eq!(one("A='single \\' q \\n x'\n").as_deref(), Some("single ' q \\n x"));
        assert_eq!(
            one("A=\"dbl \\\" q \\n x \\t y \\\\ z \\$\"\n").as_deref(),
            Some("dbl \" q \n x \t y \\ z \\$")
        );
        assert_eq!(
            one("A=\"\\a\\b\\f\\r\\v\\'\"").as_deref(),
            Some("\u{7}\u{8}\u{c}\r\u{b}'")
        );
        assert_eq!(one("A=\"x\"   \n").as_deref(), Some("x"));
        assert_eq!(one("A='x'#c\n").as_deref(), Some("x"));
        assert_eq!(one("A=\"a\" # c\n").as_deref(), Some("a"));
        assert_eq!(one("Q = 'x' \n").as_deref(), Some("x"));
        // The regex backtracks to the last escaped quote when nothing else closes.
        assert_eq!(
            values("X='abc\\'\nY=1\n"),
            [("X".into(), Some("abc\\".into())), ("Y".into(), Some("1".into()))]
        );
    }

    #[test]
    fn quoted_values_span_lines() {
        let text = "A=\"first\nsecond\"\nB='x\ny'\nC=3\n";
        let bindings = parse(text).unwrap();
        let lines: Vec<(&str, usize)> = bindings.iter().map(|b| (b.key.as_str(), b.line)).collect();
        assert_eq!(lines, [("A", 1), ("B", 3), ("C", 5)]);
        assert_eq!(bindings[0].value.as_deref(), Some("first\nsecond"));
        assert_eq!(bindings[1].value.as_deref(), Some("x\ny"));
    }

    #[test]
    fn export_comments_blank_lines_and_keys() {
        let text = "# c\n  \n\nexport A=1 # c\nexportB=2\nexport=3\nexport  E=4\n'K'=q\n#d";
        assert_eq!(
            values(text),
            [
                ("A".into(), Some("1".into())),
                ("exportB".into(), Some("2".into())),
                ("export".into(), Some("3".into())),
                ("E".into(), Some("4".into())),
                ("K".into(), Some("q".into())),
            ]
        );
        assert_eq!(values("A=1\r\nB=2\r\n").len(), 2);
        assert_eq!(values("\u{feff}A=1\n")[0].0, "A");
        // A bare key sets nothing.
        assert_eq!(values("H\n"), [("H".into(), None)]);
        assert_eq!(values("A=1\nA=2\n"), [("A".into(), Some("2".into()))]);
    }

    #[test]
    fn expansion_is_posix_braces_only() {
        assert_eq!(
            values("A=1\nB=${A}2\nC='${A}'\nD=\"${A:-d} ${NOPE:-dflt} ${NOPE}\"\nE=$A ${A\n"),
            [
                ("A".into(), Some("1".into())),
                ("B".into(), Some("12".into())),
                ("C".into(), Some("1".into())),
                ("D".into(), Some("1 dflt ".into())),
                ("E".into(), Some("$A ${A".into())),
            ]
        );
        assert_eq!(one("A=${}\n").as_deref(), Some(""));
        // A key without a value expands to "", not to the default.
        assert_eq!(values("N\nA=${N:-d}\n")[1].1.as_deref(), Some(""));
    }

    #[test]
    fn the_environment_wins_and_is_used_for_expansion() {
        let bindings = parse("HOME=/file\nA=${HOME}/x\nB=${UNSET:-u}\n").unwrap();
        let env = |k: &str| (k == "HOME").then(|| "/env".to_string());
        assert_eq!(
            resolve(&bindings, &env),
            [("A".into(), "/env/x".into()), ("B".into(), "u".into())]
        );
    }

    /// python-dotenv refuses each of these too. It reports a statement from the
    /// end of the one before (blank lines included); the line here is the
    /// statement's own.
    #[test]
    fn errors_name_the_line_and_the_variable() {
        for (text, line, variable) in [
            ("A=1\nR=\"unterminated\n", 2, Some("R")),
            ("S='x' y\n", 1, Some("S")),
            ("A=1\n\n=nokey\n", 3, None),
            ("T=\"a\"b\n", 1, Some("T")),
            ("U V=1\n", 1, Some("U")),
            ("A='''\n", 1, Some("A")),
            ("'K=1\n", 1, None),
            ("A=\"one\ntwo\"\nB='x\n", 3, Some("B")),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!((e.line, e.variable.as_deref()), (line, variable), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
        }
    }

    /// The seed's `.env.example` (tests/fixtures/seed.env.example) reads as python-dotenv reads it.
    #[test]
    fn the_seed_env_example() {
        let text = include_str!("../../tests/fixtures/seed.env.example");
        let v = values(text);
        let get = |k: &str| v.iter().find(|(key, _)| key == k).and_then(|(_, v)| v.clone());
        assert_eq!(
            get("SYSTEM_PROMPT").as_deref(),
            Some(
                "You are a helpful voice assistant. Be concise and conversational. You are speaking with someone on a phone call."
            )
        );
        assert_eq!(get("AZURE_OPENAI_API_VERSION").as_deref(), Some("2025-04-01-preview"));
        assert_eq!(
            get("PUBLIC_URL").as_deref(),
            Some("https://your-ngrok-or-public-url.ngrok-free.app")
        );
        assert_eq!(
            get("AZURE_COSMOS_DB_ENDPOINT").as_deref(),
            Some("https://<cosmosdb>.documents.azure.com:443/")
        );
        assert_eq!(v.len(), 21, "{v:?}");
    }
}
