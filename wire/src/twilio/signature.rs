//! `X-Twilio-Signature`: computing it (the emulator signs its requests) and
//! validating it (our webhooks and the media WebSocket upgrade), protocols.md §3.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Header carrying the signature. HTTP header names are case-insensitive; on
/// the WebSocket upgrade Twilio sends it all lowercase (§3.3).
pub const HEADER: &str = "x-twilio-signature";

/// The signature Twilio sends for a request to `url` with form `params`
/// (§3.1): HMAC-SHA1 keyed with the auth token over the URL followed by every
/// `name` + `value`, sorted by name in byte order, base64.
///
/// Repeated names are signed with their values de-duplicated and sorted
/// (twilio-python and twilio-node do this, §3.1 step 3), which is the same as
/// sorting the (name, value) pairs and dropping exact duplicates.
/// A GET request or the WebSocket upgrade passes no params (§3.3).
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.sort_unstable();
    pairs.dedup();
    // HMAC accepts keys of any length, so this constructor cannot fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(url.as_bytes());
    for (name, value) in pairs {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    B64.encode(mac.finalize().into_bytes())
}

/// True when `header` is Twilio's signature of a request to `url` with
/// `params`. Tries the URL variants Twilio may have signed (§3.1 "Ports",
/// §3.3): as given, with the scheme's default port added or removed, user
/// info dropped, and for `ws`/`wss` with and without a trailing slash.
/// Comparison is constant-time.
pub fn validate(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let header = header.trim().as_bytes();
    if header.is_empty() {
        return false;
    }
    url_variants(url)
        .iter()
        .any(|candidate| bool::from(compute(auth_token, candidate, params).as_bytes().ct_eq(header)))
}

/// The URLs a validator should try for `url` (see [`validate`]); the first
/// one is `url` itself. Strings are edited as given, never re-encoded (§3.1
/// step 1: keep `%2B` etc. exactly).
pub fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // Twilio always drops user:password before signing (§3.1 "Ports").
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let (host, port) = split_port(authority);
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => Some("443"),
        "http" | "ws" => Some("80"),
        _ => None,
    };
    let mut authorities = vec![authority.to_string()];
    match (port, default_port) {
        (None, Some(d)) => authorities.push(format!("{host}:{d}")),
        (Some(p), Some(d)) if p == d => authorities.push(host.to_string()),
        _ => {}
    }
    let mut tails = vec![tail.to_string()];
    if matches!(scheme.to_ascii_lowercase().as_str(), "ws" | "wss") {
        // §3.3: "try appending a trailing / character to the URL".
        let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
        let (path, query) = tail.split_at(path_end);
        if let Some(trimmed) = path.strip_suffix('/') {
            if !trimmed.is_empty() {
                tails.push(format!("{trimmed}{query}"));
            }
        } else {
            tails.push(format!("{path}/{query}"));
        }
    }
    for a in &authorities {
        for t in &tails {
            let candidate = format!("{scheme}://{a}{t}");
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out
}

/// Splits `host[:port]` (IPv6 literals in brackets) into host and port.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let host_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |i| i + 1)
    } else {
        authority.rfind(':').unwrap_or(authority.len())
    };
    let (host, rest) = authority.split_at(host_end);
    match rest.strip_prefix(':') {
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => (host, Some(port)),
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vector {
        name: String,
        auth_token: String,
        url: String,
        params: Vec<(String, String)>,
        expected: String,
    }

    /// Every vector of `specs/twilio_signature_test_vectors.json`
    /// (params may be a string or a list of strings for repeated names).
    fn vectors() -> Vec<Vector> {
        let path = crate::specs::spec_path("twilio_signature_test_vectors.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let list = json["vectors"].as_array().unwrap();
        assert!(list.len() >= 7, "expected all vectors of protocols.md §3.6");
        list.iter()
            .map(|v| {
                let mut params = Vec::new();
                for (k, val) in v["params"].as_object().unwrap() {
                    match val {
                        serde_json::Value::String(s) => params.push((k.clone(), s.clone())),
                        serde_json::Value::Array(a) => {
                            for s in a {
                                params.push((k.clone(), s.as_str().unwrap().to_string()));
                            }
                        }
                        other => panic!("unexpected param value {other}"),
                    }
                }
                Vector {
                    name: v["name"].as_str().unwrap().into(),
                    auth_token: v["auth_token"].as_str().unwrap().into(),
                    url: v["url"].as_str().unwrap().into(),
                    params,
                    expected: v["expected_signature"].as_str().unwrap().into(),
                }
            })
            .collect()
    }

    #[test]
    fn computes_every_vector() {
        for v in vectors() {
            assert_eq!(
                compute(&v.auth_token, &v.url, &v.params),
                v.expected,
                "vector {}",
                v.name
            );
        }
    }

    #[test]
    fn validates_every_vector_and_rejects_tampering() {
        for v in vectors() {
            assert!(
                validate(&v.auth_token, &v.url, &v.params, &v.expected),
                "vector {}",
                v.name
            );
            assert!(
                !validate("wrong-token", &v.url, &v.params, &v.expected),
                "vector {}",
                v.name
            );
            let mut tampered = v.params.clone();
            tampered.push(("Extra".into(), "1".into()));
            assert!(
                !validate(&v.auth_token, &v.url, &tampered, &v.expected),
                "vector {}",
                v.name
            );
            assert!(!validate(&v.auth_token, &v.url, &v.params, ""), "vector {}", v.name);
        }
    }

    #[test]
    fn port_variants_are_accepted_both_ways() {
        let vs = vectors();
        let no_port = vs.iter().find(|v| v.name == "twilio-python-unit-test").unwrap();
        let with_port = vs
            .iter()
            .find(|v| v.name == "twilio-python-unit-test-with-port-443")
            .unwrap();
        // The request URL without a port, signed over the URL with :443.
        assert!(validate(
            &no_port.auth_token,
            &no_port.url,
            &no_port.params,
            &with_port.expected
        ));
        // And the other way round.
        assert!(validate(
            &with_port.auth_token,
            &with_port.url,
            &with_port.params,
            &no_port.expected
        ));
    }

    #[test]
    fn websocket_upgrade_accepts_trailing_slash_and_port_but_not_https() {
        let vs = vectors();
        let ws = vs.iter().find(|v| v.name == "media-stream-websocket-upgrade").unwrap();
        let tok = &ws.auth_token;
        assert!(validate(
            tok,
            "wss://example.ngrok.app/twilio/media/",
            &[],
            &ws.expected
        ));
        assert!(validate(
            tok,
            "wss://example.ngrok.app:443/twilio/media",
            &[],
            &ws.expected
        ));
        assert!(!validate(
            tok,
            "https://example.ngrok.app/twilio/media",
            &[],
            &ws.expected
        ));
        // A signature over the trailing-slash form validates against the bare URL.
        let slash = compute(tok, "wss://example.ngrok.app/twilio/media/", &[]);
        assert!(validate(tok, &ws.url, &[], &slash));
    }

    #[test]
    fn variants_keep_encoding_drop_userinfo_and_handle_ipv6() {
        let v = url_variants("https://user:pw@example.com/a%2Bb?x=%20");
        assert_eq!(v[0], "https://user:pw@example.com/a%2Bb?x=%20");
        assert!(v.contains(&"https://example.com/a%2Bb?x=%20".to_string()));
        assert!(v.contains(&"https://example.com:443/a%2Bb?x=%20".to_string()));
        let v = url_variants("http://[::1]:80/x");
        assert!(v.contains(&"http://[::1]/x".to_string()));
        // A non-default port is kept as is: Twilio signs it (§3.1).
        assert_eq!(
            url_variants("http://127.0.0.1:8000/twilio/status"),
            vec!["http://127.0.0.1:8000/twilio/status".to_string()]
        );
        assert!(
            url_variants("ws://127.0.0.1:8000/ws/media/x").contains(&"ws://127.0.0.1:8000/ws/media/x/".to_string())
        );
    }
}
