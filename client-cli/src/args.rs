//! Parsers for command-line values. They run inside clap, so a bad value is a
//! usage error (exit status 2) with clap's message, before any RPC is made.

use std::time::Duration;

/// Parses a duration such as `90s`, `5m`, `1h30m` or `300` (seconds).
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let text = input.trim();
    let bad = || format!("expected a duration such as 90s, 5m or 1h30m, got {input:?}");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    if text.bytes().all(|b| b.is_ascii_digit()) {
        total = text.parse().map_err(|_| bad())?;
        rest = "";
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(|b| !b.is_ascii_digit()).count();
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "h" => 3600,
            "m" => 60,
            "s" => 1,
            _ => return Err(format!("unknown unit {unit:?} in {input:?}: use h, m or s")),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(scale)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(bad)?;
        rest = tail;
    }
    if total == 0 {
        return Err(format!("the duration must be more than zero, got {input:?}"));
    }
    Ok(Duration::from_secs(total))
}

/// Parses one `key=value` label; the value may contain `=`, the key may not be empty.
pub fn parse_key_value(input: &str) -> Result<(String, String), String> {
    match input.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected key=value, got {input:?}")),
    }
}

/// Where the server listens unless told otherwise (its HOST:PORT defaults).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8000";

/// Parses `--server`: an `http://` or `https://` URL; a bare `host:port`
/// means `http://host:port` (the server speaks cleartext HTTP/2 by default).
pub fn parse_server(input: &str) -> Result<String, String> {
    let text = input.trim();
    if text.is_empty() {
        // An empty VOICE_AGENT_SERVER in the environment means "not set".
        return Ok(DEFAULT_SERVER.to_string());
    }
    let url = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL ({e}): {input:?}"))?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme,
        _ => return Err(format!("use an http:// or https:// URL, got {input:?}")),
    };
    let authority = match uri.authority() {
        Some(a) if !a.host().is_empty() => a,
        _ => return Err(format!("the URL has no host: {input:?}")),
    };
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        // gRPC paths are fixed (/voiceagent.v1.VoiceAgentService/...), so a
        // path prefix would be silently dropped; refuse it instead.
        return Err(format!("the server URL cannot have a path: {input:?}"));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// Parses a point in time for `list --since/--until`: RFC 3339
/// (`2026-12-02T15:00:00Z`, any offset) or a duration before now (`90m`, `2h`).
pub fn parse_time(input: &str) -> Result<prost_types::Timestamp, String> {
    let text = input.trim();
    let at = match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.to_utc(),
        Err(_) => {
            let ago = parse_duration(text).map_err(|_| {
                format!("expected an RFC 3339 time (2026-12-02T15:00:00Z) or a duration ago (90m, 2h), got {input:?}")
            })?;
            chrono::Duration::from_std(ago)
                .ok()
                .and_then(|ago| chrono::Utc::now().checked_sub_signed(ago))
                .ok_or_else(|| format!("{input:?} is too long ago"))?
        }
    };
    Ok(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// Parses `--token`: it travels in a header, so only visible ASCII is allowed.
pub fn parse_token(input: &str) -> Result<String, String> {
    if input.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(input.to_string())
    } else {
        Err("the token may only contain visible ASCII characters (no spaces)".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_combinations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2m5s"), Ok(Duration::from_secs(125)));
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in ["", "m", "5x", "5 m", "1.5m", "0", "0s", "-5m", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn labels_split_at_the_first_equals_sign() {
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("k="), Ok(("k".into(), String::new())));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=v").is_err());
    }

    #[test]
    fn servers_default_to_http() {
        assert_eq!(parse_server("127.0.0.1:8000"), Ok("http://127.0.0.1:8000".into()));
        assert_eq!(
            parse_server("https://api.example.com/"),
            Ok("https://api.example.com".into())
        );
        assert_eq!(parse_server("http://[::1]:8000"), Ok("http://[::1]:8000".into()));
        assert!(parse_server("ftp://x").is_err());
        assert!(parse_server("http://host:8000/prefix").is_err());
        assert!(parse_server("http://").is_err());
        assert_eq!(parse_server(""), Ok(DEFAULT_SERVER.into()));
        assert!(parse_server("http://host?x=1").is_err());
    }

    #[test]
    fn times_are_rfc_3339_or_a_duration_ago() {
        let t = parse_time("2026-12-02T16:00:00.5+01:00").unwrap();
        assert_eq!((t.seconds, t.nanos), (1_796_223_600, 500_000_000));
        let now = chrono::Utc::now().timestamp();
        let ago = parse_time("2h").unwrap().seconds;
        assert!((now - 7200..=now - 7195).contains(&ago), "{ago} vs {now}");
        for bad in ["", "yesterday", "2026-12-02", "0s"] {
            assert!(parse_time(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn tokens_must_fit_in_a_header() {
        assert!(parse_token("abc-123_XYZ.=").is_ok());
        assert!(parse_token("has space").is_err());
        assert!(parse_token("new\nline").is_err());
    }
}
