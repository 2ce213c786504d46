//! Call recordings over real sockets: whole calls through the Twilio emulator
//! and the realtime-AI emulator, the WAV fetched over HTTP and its channels
//! compared with what the emulated callee sent (left) and heard (right), one
//! call cut by a barge-in; and a recording that cannot be written, which must
//! leave the call as it would have been.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use voice_agent_proto::v1 as pb;
use voice_agent_server::audio::ulaw_to_linear;
use voice_agent_server::config::{AudioMode, Config, Secret};
use voice_agent_server::emulator::twilio::{CALLEE_CLIPS, StreamReport};
use voice_agent_server::recording::wav;
use voice_agent_tests::*;

type Client = pb::voice_agent_service_client::VoiceAgentServiceClient<tonic::transport::Channel>;

const LIMIT: Duration = Duration::from_secs(90);
const TOKEN: &str = "recording-test-token";
/// One media frame: 20 ms of 8 kHz audio.
const FRAME: usize = 160;
/// How far a heard stretch may sit from where the emulator played it, and
/// how much of its end may differ at a cut: the media frames in flight
/// between the emulator and the bridge when the audio (or the `clear`) went
/// out. The recorder's clock is the callee audio the bridge has *read*; the
/// emulator's is what it has *sent*. On an idle machine they agree exactly;
/// a loaded one may have a few frames on the wire.
const IN_FLIGHT: usize = 25 * FRAME;

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("va-rec-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Places a recorded call to `to`, waits for its end and for its recording to
/// be complete; the call record and the emulator's account of the stream.
async fn recorded_call(server: &TestServer, to: &str) -> (pb::Call, StreamReport) {
    let mut client = server.client().await;
    let placed = client
        .place_call(with_token(
            pb::PlaceCallRequest {
                record: Some(true),
                ..place(to)
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut stream = client
        .watch_call(with_token(
            pb::WatchCallRequest {
                call_id: placed.call_id.clone(),
                after_sequence: 0,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    // Written as the call goes: mid-call, the file is already a valid WAV
    // holding the call so far (its header is patched every second).
    let mut events = watch_until(&mut stream, LIMIT, is_transcript).await;
    let url = format!("/recordings/{}.wav", placed.call_id);
    let so_far = fetch(server, &url, Some(TOKEN)).await.bytes().await.unwrap();
    let so_far = wav::decode(&so_far).expect("a valid WAV while the call runs");
    assert!(
        so_far.left.len() >= 8000,
        "a second or more already: {}",
        so_far.left.len()
    );
    events.extend(watch_rest(&mut stream, LIMIT).await);
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    assert!(errors(&events).is_empty(), "no errors: {:?}", errors(&events));
    let started = events.iter().find_map(|e| match &e.kind {
        Some(pb::call_event::Kind::Recording(r)) => Some(r.state),
        _ => None,
    });
    assert_eq!(
        started,
        Some(pb::RecordingState::Recording as i32),
        "the start is an event"
    );
    // The recording closes as the media ends, which may be just after the
    // call's terminal status: then only the record says so.
    let call = tokio::time::timeout(LIMIT, async {
        loop {
            let call = client
                .get_call(with_token(
                    pb::GetCallRequest {
                        call_id: placed.call_id.clone(),
                    },
                    TOKEN,
                ))
                .await
                .unwrap()
                .into_inner()
                .call
                .unwrap();
            if call
                .recording
                .as_ref()
                .is_some_and(|r| r.state != pb::RecordingState::Recording as i32)
            {
                return call;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the recording is closed");
    let report = server
        .emulators
        .twilio
        .as_ref()
        .unwrap()
        .call(&placed.provider_call_id)
        .unwrap();
    (call, report.stream().unwrap().clone())
}

/// What the emulated callee sent, as μ-law: silence, and each line's clip
/// from the 20 ms frame it started in.
fn sent_by_callee(stream: &StreamReport) -> Vec<u8> {
    let mut sent = vec![0xFFu8; stream.media_frames_sent as usize * FRAME];
    for line in &stream.callee_lines {
        let at = line.started_ms as usize * 8;
        let clip = CALLEE_CLIPS[line.line];
        let n = clip.len().min(sent.len().saturating_sub(at));
        sent[at..at + n].copy_from_slice(&clip[..n]);
    }
    sent
}

fn linear(ulaw: &[u8]) -> Vec<i16> {
    ulaw.iter().map(|b| ulaw_to_linear(*b)).collect()
}

/// Checks the right channel against what the callee heard: every stretch
/// the emulator played is in the recording, sample for sample, within
/// [`IN_FLIGHT`] of where it was played (its last `IN_FLIGHT` samples may
/// differ where a `clear` cut it); everything else is silence, so audio the
/// callee never heard (what a `clear` dropped) is not there.
fn check_agent_channel(right: &[i16], stream: &StreamReport) {
    let mut allowed = vec![false; right.len()];
    for (i, h) in stream.heard.iter().enumerate() {
        let at = h.at_ms as usize * 8;
        let sure = h.ulaw.len().saturating_sub(IN_FLIGHT);
        let want = linear(&h.ulaw[..sure]);
        let found = (at.saturating_sub(IN_FLIGHT)..=at + IN_FLIGHT)
            .find(|&p| right.get(p..p + sure) == Some(&want[..]))
            .unwrap_or_else(|| {
                panic!(
                    "heard stretch {i} ({} bytes at {} ms) is not in the recording near there",
                    h.ulaw.len(),
                    h.at_ms
                )
            });
        let end = (found + h.ulaw.len() + IN_FLIGHT).min(right.len());
        for a in &mut allowed[found..end] {
            *a = true;
        }
    }
    let stray = right
        .iter()
        .zip(&allowed)
        .enumerate()
        .find(|(_, (s, ok))| **s != 0 && !**ok);
    assert!(
        stray.is_none(),
        "agent audio the callee never heard, at sample {:?}",
        stray.map(|(i, _)| i)
    );
}

async fn fetch(server: &TestServer, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("{}{path}", server.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

fn recording_config(dir: &std::path::Path, mode: AudioMode) -> Config {
    let mut config = Config::for_tests();
    config.api_token = Some(Secret::new(TOKEN));
    config.recordings_dir = dir.to_path_buf();
    config.audio_mode = mode;
    config
}

async fn channels_are_what_each_side_heard(to: &str, mode: AudioMode) -> StreamReport {
    let dir = temp_dir("heard");
    let server = TestServer::with_config(recording_config(&dir, mode)).await;
    let (call, stream) = recorded_call(&server, to).await;
    let recording = call.recording.clone().unwrap();
    assert_eq!(recording.state, pb::RecordingState::Complete as i32, "{recording:?}");
    assert!(recording.error.is_empty());
    let url = format!("/recordings/{}.wav", call.call_id);
    assert_eq!(call.recording_url, url);

    // The API's token rule.
    assert_eq!(fetch(&server, &url, None).await.status(), 401);
    assert_eq!(fetch(&server, &url, Some("wrong")).await.status(), 401);
    let answer = fetch(&server, &url, Some(TOKEN)).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "audio/wav");
    let file = answer.bytes().await.unwrap();
    let wav = wav::decode(&file).unwrap();
    assert_eq!(wav.left.len() as u64 / 8, recording.duration_ms);

    // Left: the callee as sent, from the first frame on, sample for sample
    // (frames still on the wire when the call ended are not in it).
    let sent = linear(&sent_by_callee(&stream));
    assert!(wav.left.len() <= sent.len());
    assert_eq!(
        wav.left[..],
        sent[..wav.left.len()],
        "the callee's channel is what the callee sent"
    );
    let last_line = stream.callee_lines.last().unwrap();
    assert!(
        wav.left.len() >= last_line.ended_ms.unwrap() as usize * 8,
        "the recording holds the callee's last line"
    );

    // Right: the agent as heard, and nothing else.
    assert!(stream.heard_bytes().len() > 8000 * 3, "the agent spoke");
    check_agent_channel(&wav.right, &stream);
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
    stream
}

#[tokio::test]
async fn the_channels_are_what_the_callee_sent_and_heard() {
    let stream = channels_are_what_each_side_heard("+15550199", AudioMode::Transcode).await;
    assert!(stream.clears_ms.is_empty(), "no barge-in on this number");
}

#[tokio::test]
async fn a_barge_in_cuts_the_agent_channel_where_the_callee_stopped_hearing() {
    let stream = channels_are_what_each_side_heard("+15550108", AudioMode::Passthrough).await;
    assert_eq!(stream.clears_ms.len(), 1, "one barge-in");
    // What the clear dropped reaches well past the tolerance after the cut,
    // so the check that the recording holds only heard audio had something
    // to find.
    assert!(
        stream.audio_cleared_bytes as usize > 2 * IN_FLIGHT,
        "{} bytes cleared",
        stream.audio_cleared_bytes
    );
}

#[tokio::test]
async fn a_recording_that_cannot_be_written_leaves_the_call_alone() {
    // A directory under a regular file cannot be created, whoever runs the test.
    let dir = temp_dir("unwritable");
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let server = TestServer::with_config(recording_config(&blocker.join("recordings"), AudioMode::Transcode)).await;
    let mut client = server.client().await;
    let placed = client
        .place_call(with_token(
            pb::PlaceCallRequest {
                record: Some(true),
                ..place("+15550199")
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut watch = client
        .watch_call(with_token(
            pb::WatchCallRequest {
                call_id: placed.call_id.clone(),
                after_sequence: 0,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let events = watch_rest(&mut watch, LIMIT).await;

    // The call ran as an unrecorded one does: every status, every line, no error.
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    assert!(errors(&events).is_empty(), "no errors: {:?}", errors(&events));
    let lines = transcripts(&events);
    assert!(
        lines.iter().filter(|(s, _, _)| *s == pb::Speaker::Callee).count() >= 3,
        "{lines:?}"
    );
    let report = server
        .emulators
        .twilio
        .as_ref()
        .unwrap()
        .call(&placed.provider_call_id)
        .unwrap();
    let stream = report.stream().unwrap();
    assert_eq!(stream.callee_lines.len(), 3, "the callee said its three lines");
    assert!(stream.heard_bytes().len() > 8000 * 3, "and heard the agent");

    // The recording's failure is told, with why, as an event and on the record.
    let failed: Vec<&pb::Recording> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::Recording(r)) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].state, pb::RecordingState::Failed as i32);
    assert!(
        failed[0].error.contains("cannot create the recording"),
        "{}",
        failed[0].error
    );
    let call = get_call_with(&mut client, &placed.call_id).await;
    assert_eq!(call.recording.unwrap().state, pb::RecordingState::Failed as i32);
    assert!(call.recording_url.is_empty(), "nothing to fetch");
    let url = format!("/recordings/{}.wav", placed.call_id);
    assert_eq!(fetch(&server, &url, Some(TOKEN)).await.status(), 404);
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn calls_are_not_recorded_unless_asked_and_names_cannot_escape_the_directory() {
    let dir = temp_dir("off");
    let server = TestServer::with_config(recording_config(&dir, AudioMode::Passthrough)).await;
    let mut client = server.client().await;
    let placed = client
        .place_call(with_token(place("+15550105"), TOKEN))
        .await
        .unwrap()
        .into_inner();
    let mut watch = client
        .watch_call(with_token(
            pb::WatchCallRequest {
                call_id: placed.call_id.clone(),
                after_sequence: 0,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let events = watch_rest(&mut watch, LIMIT).await;
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    let call = get_call_with(&mut client, &placed.call_id).await;
    assert!(call.recording.is_none() && call.recording_url.is_empty());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no file was written");

    // Only `{call id}.wav` names a recording; everything else is not found.
    std::fs::write(dir.join("secret.wav"), b"x").unwrap();
    for path in [
        "/recordings/secret.wav",
        "/recordings/..%2Fsecret.wav",
        "/recordings/%2E%2E%2Fa-file",
        &format!("/recordings/{}", placed.call_id),
        &format!("/recordings/{}.wav", placed.call_id),
        "/recordings/call_0123456789abcdef0123456789ABCDEF.wav",
    ] {
        assert_eq!(fetch(&server, path, Some(TOKEN)).await.status(), 404, "{path}");
    }
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn get_call_with(client: &mut Client, id: &str) -> pb::Call {
    client
        .get_call(with_token(pb::GetCallRequest { call_id: id.into() }, TOKEN))
        .await
        .unwrap()
        .into_inner()
        .call
        .unwrap()
}
