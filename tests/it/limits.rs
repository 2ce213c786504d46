//! Connection-level limits over real sockets (issue 12, findings 1, 2 and 6):
//! no body read without a signature, bounded webhook bodies, header, body and
//! idle timeouts, the connection cap, and one media stream per call. Each
//! configures short limits; the bounds waited for are generous, and only say
//! "closed or answered at all", never how fast.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use voice_agent_proto::v1 as pb;
use voice_agent_server::config::Config;
use voice_agent_tests::*;

/// How long anything that should happen "at once" or "after a 1 s limit" may take.
const BOUND: Duration = Duration::from_secs(10);

const CHUNKED_STATUS_POST: &[u8] = b"POST /twilio/status?call_id=x HTTP/1.1\r\nHost: 127.0.0.1\r\n\
Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n";

/// One chunk of a chunked body.
fn chunk(len: usize) -> Vec<u8> {
    let mut out = format!("{len:x}\r\n").into_bytes();
    out.extend(std::iter::repeat_n(b'a', len));
    out.extend(b"\r\n");
    out
}

/// The status line of the response, if one arrives within `within`.
async fn status_line(tcp: &mut TcpStream, within: Duration) -> Option<String> {
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(2).any(|w| w == b"\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&got)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        Some(line)
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

/// Reads (and ignores) until the server closes the connection; false if it
/// is still open after `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

/// A complete keep-alive request to /metrics; the whole response is read.
async fn get_metrics(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before the whole response: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_string)
                    })
                    .and_then(|v| v.trim().parse().ok())
                    .expect("a content-length");
                if body.len() >= len {
                    return text.into_owned();
                }
            }
        }
    };
    tokio::time::timeout(BOUND, read).await.expect("a response")
}

fn limits(config: &mut Config, header: u64, body: u64, idle: u64) {
    config.limits.header_timeout = Duration::from_secs(header);
    config.limits.body_timeout = Duration::from_secs(body);
    config.limits.idle_timeout = Duration::from_secs(idle);
}

/// Finding 1: 300 never-finishing unsigned bodies took 586 MB, read whole
/// before the signature was looked at.
#[tokio::test]
async fn unsigned_webhooks_are_refused_without_reading_the_body() {
    let mut config = Config::for_tests();
    // Long, so that only the missing signature can answer.
    limits(&mut config, 300, 300, 300);
    let server = TestServer::with_config(config).await;
    let mut sockets = Vec::new();
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(CHUNKED_STATUS_POST).await.unwrap();
        tcp.write_all(b"\r\n").await.unwrap();
        tcp.write_all(&chunk(32 * 1024)).await.unwrap();
        sockets.push(tcp);
    }
    for tcp in &mut sockets {
        assert_eq!(
            status_line(tcp, BOUND).await.as_deref(),
            Some("HTTP/1.1 403 Forbidden"),
            "refused before the body ends"
        );
        assert!(
            closed_within(tcp, BOUND).await,
            "the rest of the body is not waited for"
        );
    }
    server.stop().await;
}

/// With a (wrong) signature the body is read, but only so much and so long.
#[tokio::test]
async fn signed_webhook_bodies_are_bounded_in_size_and_time() {
    let mut config = Config::for_tests();
    limits(&mut config, 300, 1, 300);
    let server = TestServer::with_config(config).await;
    let max = server.state.config.limits.webhook_max_body;

    // Declared too large: refused before any of it is read.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /twilio/status?call_id=x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Twilio-Signature: bm90IGEgc2lnbmF0dXJl\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        max + 1
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(
        status_line(&mut tcp, BOUND).await.as_deref(),
        Some("HTTP/1.1 413 Payload Too Large")
    );

    // Chunked past the limit.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(CHUNKED_STATUS_POST).await.unwrap();
    tcp.write_all(b"X-Twilio-Signature: bm90IGEgc2lnbmF0dXJl\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&chunk(max + 1)).await.unwrap();
    assert_eq!(
        status_line(&mut tcp, BOUND).await.as_deref(),
        Some("HTTP/1.1 413 Payload Too Large")
    );

    // Trickled: given up on after the body timeout (1 s).
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(CHUNKED_STATUS_POST).await.unwrap();
    tcp.write_all(b"X-Twilio-Signature: bm90IGEgc2lnbmF0dXJl\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&chunk(10)).await.unwrap();
    assert_eq!(
        status_line(&mut tcp, BOUND).await.as_deref(),
        Some("HTTP/1.1 408 Request Timeout")
    );
    server.stop().await;
}

/// Finding 2: connections trickling headers stayed open as long as the probe ran.
#[tokio::test]
async fn a_connection_trickling_headers_is_closed_after_the_header_timeout() {
    let mut config = Config::for_tests();
    limits(&mut config, 1, 300, 300);
    let server = TestServer::with_config(config).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = tcp.into_split();
    let trickle = tokio::spawn(async move {
        write.write_all(b"GET /metrics HTTP/1.1\r\n").await?;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            write.write_all(b"X-Slow: 1\r\n").await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    let closed = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = read.read(&mut buf).await
            && n > 0
        {}
    })
    .await;
    trickle.abort();
    assert!(closed.is_ok(), "still open while headers trickle in");
    server.stop().await;
}

/// Finding 2: idle connections (new, or between requests) stayed open for
/// ever, until descriptors ran out.
#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let mut config = Config::for_tests();
    limits(&mut config, 300, 300, 1);
    let server = TestServer::with_config(config).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut used = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_metrics(&mut used).await.starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut silent, BOUND).await,
        "a connection that never sent anything"
    );
    assert!(
        closed_within(&mut used, BOUND).await,
        "a keep-alive connection between requests"
    );
    server.stop().await;
}

/// A silent connection is also a header that does not arrive.
#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let mut config = Config::for_tests();
    limits(&mut config, 1, 300, 300);
    let server = TestServer::with_config(config).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut silent, BOUND).await);
    server.stop().await;
}

/// Requests in progress are not idle: a WatchCall that waits longer than the
/// idle timeout, and a whole call (its media WebSocket), run to their end.
#[tokio::test]
async fn the_idle_timeout_cuts_no_stream_in_progress() {
    let mut config = Config::for_tests();
    // Not 1 s: the emulator's webhooks come a second apart on a pooled
    // connection, and a close at that very moment would race a reuse.
    limits(&mut config, 3, 1, 3);
    config.ring_timeout = Duration::from_secs(6);
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    // Rings for 6 s, never answered: the stream is silent for seconds at a time.
    let (_, events) = call_and_watch(&mut client, place("+15550107"), Duration::from_secs(60)).await;
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::NoAnswer));
    let mut client = server.client().await;
    let (_, events) = call_and_watch(&mut client, place("+15550199"), Duration::from_secs(90)).await;
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    assert!(transcripts(&events).len() >= 4, "{events:?}");
    server.stop().await;
}

/// Finding 2: past MAX_CONNECTIONS a connection is closed at once and counted;
/// the open ones keep working, and a freed place is taken again.
#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let mut config = Config::for_tests();
    config.limits.max_connections = 3;
    let server = TestServer::with_config(config).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        assert!(get_metrics(&mut tcp).await.starts_with("HTTP/1.1 200"));
        open.push(tcp);
    }
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    let _ = over
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    assert_eq!(status_line(&mut over, BOUND).await, None, "no answer over the cap");
    assert!(closed_within(&mut over, BOUND).await, "closed at once");
    assert!(server.state.metrics.connections_refused.get() >= 1);
    let text = get_metrics(&mut open[0]).await;
    assert!(text.starts_with("HTTP/1.1 200"), "the open ones keep working");
    assert!(metric(&text, "voice_agent_connections_refused_total") >= 1.0, "{text}");
    drop(open.pop());
    let served_again = tokio::time::timeout(BOUND, async {
        loop {
            let mut tcp = TcpStream::connect(server.addr).await.unwrap();
            let _ = tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
            if status_line(&mut tcp, BOUND).await.as_deref() == Some("HTTP/1.1 200 OK") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(served_again.is_ok(), "a place freed is taken again");
    server.stop().await;
}

/// A signed upgrade request for the media stream of `call_id`.
fn media_request(server: &TestServer, call_id: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!("ws://{}/ws/media/{call_id}", server.addr);
    let token = server.state.twilio_auth_token.expose().to_string();
    let signature = voice_agent_server::telephony::twilio::signature::compute(&token, &url, &[]);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut()
        .insert("x-twilio-signature", signature.parse().unwrap());
    req
}

/// Finding 6: 2000 sockets were accepted for one call, each added an error
/// event, and a refused `start` left the call IN_PROGRESS with an end reason.
#[tokio::test]
async fn one_media_stream_per_call_and_a_refused_one_ends_the_call() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut config = Config::for_tests();
    config.ring_timeout = Duration::from_secs(60);
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    // Never answered: no stream of the emulator's own.
    let placed = client.place_call(place("+15550107")).await.unwrap().into_inner();
    let id = voice_agent_server::call::CallId::parse(&placed.call_id).unwrap();
    // Ringing first, so that no status callback lands among the refusals.
    let mut stream = watch(&mut client, &placed.call_id, 0).await;
    watch_until(
        &mut stream,
        Duration::from_secs(30),
        |ev| matches!(&ev.kind, Some(pb::call_event::Kind::Status(s)) if s.status() == pb::CallStatus::Ringing),
    )
    .await;
    let (mut first, _) = tokio_tungstenite::connect_async(media_request(&server, &placed.call_id))
        .await
        .expect("the first stream is accepted");
    let before = server.state.hub.get(&id).await.unwrap();
    for _ in 0..20 {
        match tokio_tungstenite::connect_async(media_request(&server, &placed.call_id)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 409),
            other => panic!("a second stream must be refused: {other:?}"),
        }
    }
    let after = server.state.hub.get(&id).await.unwrap();
    assert_eq!(after.event_count, before.event_count, "the refusals touched nothing");
    assert!(after.end_reason.is_empty(), "{}", after.end_reason);

    // The one stream's start is refused: the call ends, with that reason.
    let start = serde_json::json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ00000000000000000000000000000001",
        "start": {"accountSid": "AC00000000000000000000000000000000", "streamSid": "MZ00000000000000000000000000000001",
                  "callSid": placed.provider_call_id, "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": {"call_id": placed.call_id, "secret": "wrong"}}});
    first.send(Message::Text(start.to_string().into())).await.unwrap();
    let events = watch_all(&mut client, &placed.call_id, 0, Duration::from_secs(30)).await;
    let status = *statuses(&events).last().unwrap();
    assert!(
        matches!(status, pb::CallStatus::Canceled | pb::CallStatus::Completed),
        "the call ended: {status:?}"
    );
    let codes: Vec<String> = errors(&events).into_iter().map(|(c, _)| c).collect();
    assert_eq!(codes, ["media_refused"], "one error for the one stream");
    let call = get_call(&mut client, &placed.call_id).await;
    assert!(call.end_reason.contains("secret"), "{}", call.end_reason);
    server.stop().await;
}
