//! The media stream of a `<Connect><Stream>` (protocols.md §5) and the
//! scripted callee on it.
//!
//! [`Session`] is the callee and its phone, with no I/O: it turns our
//! server's messages and the 20 ms clock into the messages Twilio would send.
//! [`CallActor::run_stream`] owns the WebSocket and drives it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::call::{CallActor, Ending, Interrupt};
use super::report::{CalleeUtterance, EndCause, HeardAudio, MarkEcho, ServerMessage, StreamEnd, StreamReport};
use super::{CALLEE_CLIPS, CALLEE_LINES, CallSlot, ScenarioOpts, TwilioEmulatorConfig, new_sid};
use crate::twilio::twiml::StreamSpec;
use voice_agent_wire::twilio::media::{
    DtmfBody, InboundMedia, InboundMessage, MarkBody, MediaFormat, StartMeta, StopBody, TwilioOutbound, parse_outbound,
};
use voice_agent_wire::twilio::signature;

/// One inbound media frame: 20 ms of μ-law 8 kHz (§5.4).
const FRAME_MS: u64 = 20;
const FRAME_BYTES: usize = 160;
/// μ-law silence (§5.4: `lin2ulaw(0)` = 0xFF).
const SILENCE: u8 = 0xFF;
/// Gap between DTMF key presses.
const DTMF_GAP_MS: u64 = 250;
/// How far into the agent's reply the +15550105 callee hangs up.
const HANG_UP_INTO_REPLY_MS: u64 = 800;
/// Longest text kept in the report for one malformed or unknown message.
const REPORT_TEXT_MAX: usize = 200;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the callee is doing.
#[derive(Debug)]
enum Phase {
    /// Waiting for the floor to say line `next`.
    Waiting { next: usize },
    /// Pressing keys.
    Dtmf { digits: VecDeque<char>, next_at_ms: u64 },
    /// Saying `line`; `pos` bytes of its clip sent.
    Speaking { line: usize, pos: usize },
    /// Said everything; stays on the line.
    Done,
    /// Stopped reading the stream (`stall_after_first_line`); stays on the line.
    Stalled,
    /// An answering machine's greeting; `pos` bytes of it sent.
    MachineGreeting { pos: usize },
    /// Its beep; `pos` bytes sent.
    Beep { pos: usize },
    /// Recording after the beep (silence from the machine).
    Recording,
}

/// Twilio's default `MachineDetectionSpeechThreshold`: speech longer than
/// this is a machine.
const AMD_SPEECH_THRESHOLD_MS: u64 = 2400;
/// Twilio's default `MachineDetectionSpeechEndThreshold`: the quiet that ends speech.
const AMD_SPEECH_END_MS: u64 = 1200;
/// Twilio's default `MachineDetectionSilenceTimeout`: initial silence → `unknown`.
const AMD_SILENCE_TIMEOUT_MS: u64 = 5000;
/// The machine's beep: 1 kHz for this long.
const BEEP_MS: u64 = 500;

/// The machine's greeting: the callee's first two lines.
fn machine_greeting() -> impl Iterator<Item = u8> {
    CALLEE_CLIPS[0].iter().chain(CALLEE_CLIPS[1].iter()).copied()
}

fn machine_greeting_len() -> usize {
    CALLEE_CLIPS[0].len() + CALLEE_CLIPS[1].len()
}

/// Byte `i` of the beep: a 1 kHz sine at 8 kHz (8 samples a period), μ-law.
fn beep_byte(i: usize) -> u8 {
    const PERIOD: [i16; 8] = [0, 5792, 8191, 5792, 0, -5792, -8191, -5792];
    voice_agent_audio::linear_to_ulaw(PERIOD[i % 8])
}

enum Queued {
    /// Agent audio and how much of it has played.
    Audio(Vec<u8>, usize),
    Mark(String),
}

/// What one tick of the 20 ms clock produced.
pub(super) struct Tick {
    /// Messages to send, in order.
    pub(super) out: Vec<String>,
    /// The callee hangs up.
    pub(super) hang_up: Option<EndCause>,
    /// Answering-machine detection's result (`AnsweredBy`), once, and the
    /// stream time it took, ms.
    pub(super) amd: Option<(String, u64)>,
}

/// The callee's phone on one media stream.
pub(super) struct Session {
    slot: Arc<CallSlot>,
    index: usize,
    stream_sid: String,
    account_sid: String,
    call_sid: String,
    custom_parameters: BTreeMap<String, String>,
    opts: ScenarioOpts,
    reply_gap_ms: u64,
    idle_ms: u64,
    barge_in_ms: u64,
    /// Last `sequenceNumber` sent (`start` is 1, §5.1).
    seq: u64,
    /// Last `chunk` sent.
    chunk: u64,
    /// Stream time of the current tick.
    now_ms: u64,
    queue: VecDeque<Queued>,
    queued_audio: usize,
    /// Marks passed while draining the last tick: echoed at the next one,
    /// when the audio before them has finished playing.
    due_marks: Vec<String>,
    drained_last_tick: bool,
    played_total: u64,
    last_agent_ms: u64,
    last_callee_ms: u64,
    phase: Phase,
    /// First agent audio played since the callee's last line ended.
    reply_started_ms: Option<u64>,
    dtmf_done: bool,
    /// Answering-machine detection asked for (`Some(detect_message_end)`), until reported.
    amd: Option<bool>,
    /// When the callee's first line ended (human detection).
    first_line_ended_ms: Option<u64>,
}

impl Session {
    pub(super) fn new(
        slot: Arc<CallSlot>,
        index: usize,
        ids: (String, String, String),
        custom_parameters: BTreeMap<String, String>,
        opts: ScenarioOpts,
        config: &TwilioEmulatorConfig,
    ) -> Self {
        let (stream_sid, account_sid, call_sid) = ids;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            slot,
            index,
            stream_sid,
            account_sid,
            call_sid,
            custom_parameters,
            opts,
            reply_gap_ms: ms(config.reply_gap),
            idle_ms: ms(config.idle_hangup),
            barge_in_ms: ms(config.barge_in_after),
            seq: 0,
            chunk: 0,
            now_ms: 0,
            queue: VecDeque::new(),
            queued_audio: 0,
            due_marks: Vec::new(),
            drained_last_tick: false,
            played_total: 0,
            last_agent_ms: 0,
            last_callee_ms: 0,
            phase: Phase::Waiting { next: 0 },
            reply_started_ms: None,
            dtmf_done: false,
            amd: None,
            first_line_ended_ms: None,
        }
    }

    /// Runs answering-machine detection on this stream: [`Tick::amd`]
    /// carries the result once (see the module doc of `twilio`).
    pub(super) fn detect_machine(&mut self, detect_message_end: bool) {
        self.amd = Some(detect_message_end);
    }

    /// The detection result due at this tick, if any.
    fn amd_due(&mut self) -> Option<String> {
        let detect_message_end = self.amd?;
        let now = self.now_ms;
        let result = match &self.phase {
            Phase::MachineGreeting { pos } if !detect_message_end && *pos as u64 / 8 >= AMD_SPEECH_THRESHOLD_MS => {
                "machine_start"
            }
            Phase::Recording if detect_message_end => "machine_end_beep",
            // A machine whose greeting ended before the threshold.
            Phase::Recording | Phase::Beep { .. } if !detect_message_end => "machine_start",
            Phase::MachineGreeting { .. } | Phase::Beep { .. } | Phase::Recording => return None,
            _ => match self.first_line_ended_ms {
                Some(t) if now >= t + AMD_SPEECH_END_MS => "human",
                None if now >= AMD_SILENCE_TIMEOUT_MS && !matches!(self.phase, Phase::Speaking { .. }) => "unknown",
                _ => return None,
            },
        };
        self.amd = None;
        self.rec(|s| s.amd_result = Some((result.to_string(), now)));
        Some(result.to_string())
    }

    fn rec<R>(&self, f: impl FnOnce(&mut StreamReport) -> R) -> Option<R> {
        self.slot.report(|r| r.streams.get_mut(self.index).map(f))
    }

    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    fn encode(msg: &InboundMessage) -> String {
        // Serialising these plain structs of strings and numbers cannot fail.
        serde_json::to_string(msg).unwrap_or_default()
    }

    /// False once the callee has stopped reading the stream: the socket
    /// loop then leaves our server's messages unread.
    pub(super) fn reading(&self) -> bool {
        !matches!(self.phase, Phase::Stalled)
    }

    /// `connected` then `start` (§5.2).
    pub(super) fn opening(&mut self) -> Vec<String> {
        let connected = InboundMessage::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into(),
        };
        let start = InboundMessage::Start {
            sequence_number: Some(self.next_seq()),
            start: StartMeta {
                account_sid: self.account_sid.clone(),
                stream_sid: self.stream_sid.clone(),
                call_sid: self.call_sid.clone(),
                tracks: vec!["inbound".into()],
                media_format: MediaFormat::default(),
                custom_parameters: self.custom_parameters.clone(),
            },
            stream_sid: self.stream_sid.clone(),
        };
        vec![Self::encode(&connected), Self::encode(&start)]
    }

    /// `stop` (§5.2), sent when the call ends or leaves the `<Connect>`.
    pub(super) fn stop_message(&mut self) -> String {
        let stop = InboundMessage::Stop {
            sequence_number: Some(self.next_seq()),
            stop: StopBody {
                account_sid: self.account_sid.clone(),
                call_sid: self.call_sid.clone(),
            },
            stream_sid: self.stream_sid.clone(),
        };
        Self::encode(&stop)
    }

    fn echo(&mut self, name: String, cleared: bool) -> String {
        let msg = InboundMessage::Mark {
            sequence_number: Some(self.next_seq()),
            mark: MarkBody { name: name.clone() },
            stream_sid: self.stream_sid.clone(),
        };
        let echo = MarkEcho {
            name,
            at_ms: self.now_ms,
            played_bytes: self.played_total,
            cleared,
        };
        self.rec(|s| s.marks_echoed.push(echo));
        Self::encode(&msg)
    }

    fn truncated(text: &str) -> String {
        text.chars().take(REPORT_TEXT_MAX).collect()
    }

    /// A text message from our server; returns what to send back.
    pub(super) fn on_server_text(&mut self, text: &str) -> Vec<String> {
        let now = self.now_ms;
        let msg = match parse_outbound(text) {
            Ok(m) => m,
            Err(_) => {
                let t = Self::truncated(text);
                self.rec(|s| s.malformed.push(t));
                return vec![];
            }
        };
        let named = match &msg {
            TwilioOutbound::Media { stream_sid, .. }
            | TwilioOutbound::Mark { stream_sid, .. }
            | TwilioOutbound::Clear { stream_sid } => Some(stream_sid.as_str()),
            TwilioOutbound::Unknown => None,
        };
        if named.is_some_and(|s| s != self.stream_sid) {
            self.rec(|s| s.wrong_stream_sid += 1);
            return vec![];
        }
        match msg {
            TwilioOutbound::Unknown => {
                let t = Self::truncated(text);
                self.rec(|s| s.server_messages.push(ServerMessage::Other { at_ms: now, text: t }));
                vec![]
            }
            TwilioOutbound::Media { payload, .. } => {
                let Ok(audio) = B64.decode(payload.as_bytes()) else {
                    let t = Self::truncated(text);
                    self.rec(|s| s.malformed.push(t));
                    return vec![];
                };
                let len = audio.len();
                self.rec(|s| {
                    s.server_messages.push(ServerMessage::Media { at_ms: now, bytes: len });
                    s.audio_received_bytes += len as u64;
                });
                if len > 0 {
                    self.queue.push_back(Queued::Audio(audio, 0));
                    self.queued_audio += len;
                    self.last_agent_ms = now;
                }
                vec![]
            }
            TwilioOutbound::Mark { name, .. } => {
                let n = name.clone();
                self.rec(|s| s.server_messages.push(ServerMessage::Mark { at_ms: now, name: n }));
                if !self.queue.is_empty() {
                    self.queue.push_back(Queued::Mark(name));
                    vec![]
                } else if self.drained_last_tick || !self.due_marks.is_empty() {
                    // The last audio is still playing: echo when it is done.
                    self.due_marks.push(name);
                    vec![]
                } else {
                    // §5.3: "or if there is no audio buffered".
                    vec![self.echo(name, false)]
                }
            }
            TwilioOutbound::Clear { .. } => {
                let dropped = self.queued_audio as u64;
                self.rec(|s| {
                    s.server_messages.push(ServerMessage::Clear { at_ms: now });
                    s.clears_ms.push(now);
                    s.audio_cleared_bytes += dropped;
                });
                let mut out = Vec::new();
                // Marks whose audio did play first, then the flushed ones (§5.3).
                for name in std::mem::take(&mut self.due_marks) {
                    out.push(self.echo(name, false));
                }
                for item in std::mem::take(&mut self.queue) {
                    if let Queued::Mark(name) = item {
                        out.push(self.echo(name, true));
                    }
                }
                self.queued_audio = 0;
                if dropped > 0 {
                    self.last_agent_ms = now;
                }
                out
            }
        }
    }

    /// Plays up to one frame of agent audio; returns it and the marks now due.
    fn drain(&mut self) -> (Vec<u8>, Vec<String>) {
        let mut echoes = std::mem::take(&mut self.due_marks);
        let mut played = Vec::new();
        loop {
            match self.queue.front_mut() {
                None => break,
                Some(Queued::Mark(_)) => {
                    if let Some(Queued::Mark(name)) = self.queue.pop_front() {
                        if played.is_empty() {
                            echoes.push(name);
                        } else {
                            self.due_marks.push(name);
                        }
                    }
                }
                Some(Queued::Audio(buf, pos)) => {
                    if played.len() == FRAME_BYTES {
                        break;
                    }
                    let n = (FRAME_BYTES - played.len()).min(buf.len() - *pos);
                    played.extend_from_slice(&buf[*pos..*pos + n]);
                    *pos += n;
                    let done = *pos == buf.len();
                    self.queued_audio -= n;
                    if done {
                        self.queue.pop_front();
                    }
                }
            }
        }
        (played, echoes)
    }

    fn start_line(&mut self, line: usize, barged_in: bool) {
        self.phase = Phase::Speaking { line, pos: 0 };
        let u = CalleeUtterance {
            line,
            text: CALLEE_LINES[line].to_string(),
            started_ms: self.now_ms,
            ended_ms: None,
            barged_in,
        };
        self.rec(|s| s.callee_lines.push(u));
    }

    /// One 20 ms step: play agent audio, echo marks, decide what the callee
    /// does, and send one inbound media frame.
    pub(super) fn on_tick(&mut self) -> Tick {
        let now = self.now_ms;
        let mut out = Vec::new();
        let mut hang_up = None;

        let (played, echoes) = self.drain();
        for name in echoes {
            out.push(self.echo(name, false));
        }
        if !played.is_empty() {
            self.played_total += played.len() as u64;
            self.last_agent_ms = now;
            if !matches!(self.phase, Phase::Speaking { .. }) && self.reply_started_ms.is_none() {
                self.reply_started_ms = Some(now);
            }
            let contiguous = self.drained_last_tick;
            self.rec(|s| match s.heard.last_mut() {
                Some(h) if contiguous => h.ulaw.extend_from_slice(&played),
                _ => s.heard.push(HeardAudio {
                    at_ms: now,
                    ulaw: played,
                }),
            });
            self.drained_last_tick = true;
        } else {
            self.drained_last_tick = false;
        }

        let agent_busy = !self.queue.is_empty();
        let since_activity = now.saturating_sub(self.last_agent_ms.max(self.last_callee_ms));
        let quiet = !agent_busy && since_activity >= self.reply_gap_ms;
        let reply_for = self.reply_started_ms.map(|t| now.saturating_sub(t));
        if self.opts.machine && matches!(self.phase, Phase::Waiting { next: 0 }) {
            // A machine answers with its greeting at once.
            self.phase = Phase::MachineGreeting { pos: 0 };
        }
        match &mut self.phase {
            Phase::Waiting { next } => {
                let next = *next;
                if self.opts.hang_up_after_first_line && next == 1 {
                    if reply_for.is_some_and(|r| r >= HANG_UP_INTO_REPLY_MS) || (reply_for.is_some() && quiet) {
                        hang_up = Some(EndCause::CalleeHungUp);
                    }
                } else if self.opts.barge_in
                    && next == 1
                    && agent_busy
                    && reply_for.is_some_and(|r| r >= self.barge_in_ms)
                {
                    self.start_line(next, true);
                } else if next == 0 && !self.opts.dtmf.is_empty() && !self.dtmf_done && quiet {
                    self.phase = Phase::Dtmf {
                        digits: self.opts.dtmf.chars().collect(),
                        next_at_ms: now,
                    };
                } else if (next == 0 || reply_for.is_some()) && quiet {
                    self.start_line(next, false);
                }
            }
            Phase::Dtmf { digits, next_at_ms } => {
                if now >= *next_at_ms {
                    let digit = digits.pop_front().map(String::from).unwrap_or_default();
                    *next_at_ms = now + DTMF_GAP_MS;
                    let finished = digits.is_empty();
                    if !digit.is_empty() {
                        let msg = InboundMessage::Dtmf {
                            sequence_number: Some(self.next_seq()),
                            dtmf: DtmfBody {
                                track: "inbound_track".into(),
                                digit: digit.clone(),
                            },
                            stream_sid: self.stream_sid.clone(),
                        };
                        out.push(Self::encode(&msg));
                        self.rec(|s| s.dtmf_sent.push(digit));
                        self.last_callee_ms = now;
                    }
                    if finished {
                        self.dtmf_done = true;
                        self.phase = Phase::Waiting { next: 0 };
                    }
                }
            }
            Phase::Speaking { .. }
            | Phase::Done
            | Phase::Stalled
            | Phase::MachineGreeting { .. }
            | Phase::Beep { .. }
            | Phase::Recording => {}
        }

        // The callee's microphone: its line, or silence.
        let mut frame = [SILENCE; FRAME_BYTES];
        if let Phase::Speaking { line, pos } = &mut self.phase {
            let (line, clip) = (*line, CALLEE_CLIPS[*line]);
            let n = FRAME_BYTES.min(clip.len().saturating_sub(*pos));
            frame[..n].copy_from_slice(&clip[*pos..*pos + n]);
            *pos += n;
            if *pos >= clip.len() {
                let end = now + FRAME_MS;
                self.last_callee_ms = end;
                self.reply_started_ms = None;
                self.phase = if self.opts.stall_after_first_line {
                    Phase::Stalled
                } else if line + 1 < CALLEE_LINES.len() {
                    Phase::Waiting { next: line + 1 }
                } else {
                    Phase::Done
                };
                self.rec(|s| {
                    if let Some(u) = s.callee_lines.last_mut() {
                        u.ended_ms = Some(end);
                    }
                });
                if line == 0 {
                    self.first_line_ended_ms = Some(end);
                }
            }
        } else if let Phase::MachineGreeting { pos } = &mut self.phase {
            let start = *pos;
            let n = FRAME_BYTES.min(machine_greeting_len().saturating_sub(start));
            for (dst, b) in frame.iter_mut().zip(machine_greeting().skip(start).take(n)) {
                *dst = b;
            }
            *pos += n;
            self.last_callee_ms = now + FRAME_MS;
            if *pos >= machine_greeting_len() {
                self.phase = Phase::Beep { pos: 0 };
            }
        } else if let Phase::Beep { pos } = &mut self.phase {
            let start = *pos;
            let total = (BEEP_MS * 8) as usize;
            let n = FRAME_BYTES.min(total - start);
            for (i, dst) in frame.iter_mut().take(n).enumerate() {
                *dst = beep_byte(start + i);
            }
            *pos += n;
            self.last_callee_ms = now + FRAME_MS;
            if *pos >= total {
                self.phase = Phase::Recording;
                let end = now + FRAME_MS;
                self.rec(|s| s.beep_ended_ms = Some(end));
            }
        } else if hang_up.is_none()
            && self.reading()
            && !agent_busy
            && now.saturating_sub(self.last_agent_ms.max(self.last_callee_ms)) >= self.idle_ms
        {
            hang_up = Some(EndCause::CalleeIdle);
        }

        self.chunk += 1;
        let media = InboundMessage::Media {
            sequence_number: Some(self.next_seq()),
            media: InboundMedia {
                track: "inbound".into(),
                chunk: self.chunk.to_string(),
                // As in the §5.6 transcript: the n-th frame is stamped n × 20 ms.
                timestamp: (self.chunk * FRAME_MS).to_string(),
                payload: B64.encode(frame),
            },
            stream_sid: self.stream_sid.clone(),
        };
        out.push(Self::encode(&media));
        self.rec(|s| s.media_frames_sent += 1);
        let amd = self.amd_due().map(|a| (a, now));
        self.now_ms += FRAME_MS;
        Tick { out, hang_up, amd }
    }
}

/// Why the socket loop stopped.
enum Outcome {
    ServerClosed,
    Interrupt(Interrupt),
}

async fn connect(url: &str, signature_value: &str, timeout: Duration) -> Result<Ws, String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("31923 Stream - WebSocket - Malformed URL: {e}"))?;
    let value = http::HeaderValue::from_str(signature_value).map_err(|e| e.to_string())?;
    // §3.3: all lowercase on the upgrade.
    request.headers_mut().insert(signature::HEADER, value);
    match tokio::time::timeout(timeout, tokio_tungstenite::connect_async(request)).await {
        Err(_) => Err("31901 Stream - WebSocket - Connection Timeout".into()),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => Err(format!(
            "31920 Stream - WebSocket - Handshake Error: HTTP {}",
            resp.status()
        )),
        Ok(Err(tungstenite::Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(format!("31902 Stream - WebSocket - Connection Refused: {e}"))
        }
        Ok(Err(tungstenite::Error::Url(e))) => Err(format!("31922 Stream - WebSocket - URL Schema Not Supported: {e}")),
        Ok(Err(e)) => Err(format!("31924 Stream - WebSocket - Protocol Error: {e}")),
    }
}

/// Sends `stop` (when given), closes, and waits briefly for the close reply.
async fn close(mut ws: Ws, stop: Option<String>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if let Some(stop) = stop {
            ws.send(Message::Text(stop.into())).await?;
        }
        ws.close(None).await?;
        while let Some(m) = ws.next().await {
            m?;
        }
        Ok::<(), tungstenite::Error>(())
    })
    .await;
}

async fn send_all(ws: &mut Ws, messages: Vec<String>) -> bool {
    for m in messages {
        if ws.feed(Message::Text(m.into())).await.is_err() {
            return false;
        }
    }
    ws.flush().await.is_ok()
}

impl CallActor {
    /// The stream URL: absolute as given (Twilio requires `wss://`; `ws://`
    /// is accepted for local servers), or relative to the TwiML's URL (§4.2).
    fn stream_url(&self, url: &str) -> Result<String, String> {
        if url.contains("://") {
            return Ok(url.to_string());
        }
        let base = self
            .twiml_base
            .as_deref()
            .ok_or_else(|| format!("31923 Stream - WebSocket - Malformed URL: relative {url} in inline TwiML"))?;
        let mut joined = url::Url::parse(base)
            .and_then(|b| b.join(url))
            .map_err(|e| format!("31923 Stream - WebSocket - Malformed URL: {e}"))?;
        let scheme = if joined.scheme() == "https" { "wss" } else { "ws" };
        joined
            .set_scheme(scheme)
            .map_err(|_| "31923 Stream - WebSocket - Malformed URL".to_string())?;
        Ok(joined.to_string())
    }

    /// Runs one `<Connect><Stream>` until our server closes it (`None`: the
    /// TwiML continues) or the call ends or is redirected.
    pub(super) async fn run_stream(&mut self, spec: &StreamSpec) -> Option<Interrupt> {
        let config = &self.shared.config;
        let stream_sid = new_sid("MZ");
        let custom: BTreeMap<String, String> = spec.parameters.iter().cloned().collect();
        let url = self.stream_url(&spec.url);
        let url_text = url.clone().unwrap_or_else(|_| spec.url.clone());
        let upgrade_signature = signature::compute(&config.auth_token, &url_text, &[]);
        let index = self.slot.report(|r| {
            r.streams.push(StreamReport {
                url: url_text.clone(),
                upgrade_signature: upgrade_signature.clone(),
                stream_sid: stream_sid.clone(),
                custom_parameters: custom.clone(),
                ..StreamReport::default()
            });
            r.streams.len() - 1
        });
        let connected = match url {
            Ok(u) => {
                tokio::select! {
                    r = connect(&u, &upgrade_signature, config.http_timeout) => r,
                    _ = self.cancel.cancelled() => Err("the emulator shut down".into()),
                }
            }
            Err(e) => Err(e),
        };
        let mut ws = match connected {
            Ok(ws) => ws,
            Err(e) => {
                // Twilio reports the stream error and moves past </Connect>.
                self.slot.report(|r| {
                    r.errors.push(e.clone());
                    if let Some(s) = r.streams.get_mut(index) {
                        s.connect_error = Some(e);
                        s.ended = Some(StreamEnd::ConnectFailed);
                    }
                });
                return if self.cancel.is_cancelled() {
                    Some(Interrupt::End(Ending::completed(EndCause::Shutdown)))
                } else {
                    None
                };
            }
        };
        let opts = match &self.params.scenario {
            super::Scenario::Answer(o) => o.clone(),
            _ => ScenarioOpts::default(),
        };
        let mut session = Session::new(
            self.slot.clone(),
            index,
            (stream_sid, config.account_sid.clone(), self.sid.clone()),
            custom,
            opts,
            config,
        );
        // Detection runs on the first stream of the call, from its start
        // (AsyncAmd: the call flow is not held for it).
        if index == 0
            && let Some(amd) = &self.params.amd
        {
            session.detect_machine(amd.detect_message_end);
        }
        let deadline = self.time_limit_deadline();
        let outcome = if send_all(&mut ws, session.opening()).await {
            self.stream_loop(&mut ws, &mut session, deadline).await
        } else {
            Outcome::ServerClosed
        };
        let ended = match &outcome {
            Outcome::ServerClosed => StreamEnd::ServerClosed,
            Outcome::Interrupt(_) => StreamEnd::Stopped,
        };
        session.rec(|s| s.ended = Some(ended));
        match outcome {
            Outcome::ServerClosed => {
                // UNVERIFIED (protocols.md §10.3) whether Twilio sends `stop`
                // when our side closed first; the emulator does not.
                close(ws, None).await;
                None
            }
            Outcome::Interrupt(i) => {
                let stop = session.stop_message();
                close(ws, Some(stop)).await;
                Some(i)
            }
        }
    }

    async fn stream_loop(&mut self, ws: &mut Ws, session: &mut Session, deadline: Instant) -> Outcome {
        let mut clock = tokio::time::interval(Duration::from_millis(FRAME_MS));
        // Catch up after a stall, so the stream stays real time on average.
        clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let cancel = self.cancel.clone();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    return Outcome::Interrupt(Interrupt::End(Ending::completed(EndCause::Shutdown)));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Outcome::Interrupt(Interrupt::End(Ending::completed(EndCause::TimeLimit)));
                }
                Some(cmd) = self.commands.recv() => {
                    if let Some(i) = self.on_answered_command(cmd) {
                        return Outcome::Interrupt(i);
                    }
                }
                msg = ws.next(), if session.reading() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        let out = session.on_server_text(text.as_str());
                        if !out.is_empty() && !send_all(ws, out).await {
                            return Outcome::ServerClosed;
                        }
                    }
                    Some(Ok(Message::Binary(b))) => {
                        let t = format!("<binary message of {} bytes>", b.len());
                        session.rec(|s| s.malformed.push(t));
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Outcome::ServerClosed,
                    Some(Ok(_)) => {}
                },
                _ = clock.tick() => {
                    let tick = session.on_tick();
                    if let (Some((answered_by, ms)), Some(amd)) = (tick.amd, self.params.amd.clone()) {
                        // Posted beside the stream, as Twilio does: the stream goes on.
                        self.shared.spawn(super::call::post_amd(
                            self.shared.clone(),
                            self.slot.clone(),
                            self.sid.clone(),
                            amd,
                            answered_by,
                            ms,
                            self.cancel.clone(),
                        ));
                    }
                    if !send_all(ws, tick.out).await {
                        return Outcome::ServerClosed;
                    }
                    if let Some(cause) = tick.hang_up {
                        return Outcome::Interrupt(Interrupt::End(Ending::completed(cause)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voice_agent_wire::twilio::media::{TwilioInbound, clear_message, mark_message, media_message_from_ulaw};

    const SID: &str = "MZ00000000000000000000000000000001";

    fn session_with(opts: ScenarioOpts, config: TwilioEmulatorConfig) -> Session {
        let mut s = Session::new(
            super::super::test_slot(),
            0,
            (SID.into(), "AC0".into(), "CA0".into()),
            BTreeMap::from([("k".to_string(), "v".to_string())]),
            opts,
            &config,
        );
        s.opening();
        s
    }

    fn session() -> Session {
        session_with(ScenarioOpts::default(), TwilioEmulatorConfig::default())
    }

    fn report(s: &Session) -> StreamReport {
        s.rec(|r| r.clone()).unwrap()
    }

    fn events(out: &[String]) -> Vec<InboundMessage> {
        out.iter().map(|t| serde_json::from_str(t).unwrap()).collect()
    }

    fn echoed_names(out: &[String]) -> Vec<String> {
        events(out)
            .into_iter()
            .filter_map(|e| match e {
                InboundMessage::Mark { mark, .. } => Some(mark.name),
                _ => None,
            })
            .collect()
    }

    /// The payload of the tick's media frame.
    fn frame(out: &[String]) -> Vec<u8> {
        let last = events(out).pop().unwrap();
        let InboundMessage::Media { media, .. } = last else {
            panic!("a tick ends with a media frame")
        };
        B64.decode(media.payload).unwrap()
    }

    fn ticks_until(s: &mut Session, max: usize, mut done: impl FnMut(&Tick) -> bool) -> (usize, Tick) {
        for i in 0..max {
            let t = s.on_tick();
            if done(&t) {
                return (i, t);
            }
        }
        panic!("condition not reached in {max} ticks")
    }

    #[test]
    fn opening_is_connected_then_start_with_parameters() {
        let mut s = Session::new(
            super::super::test_slot(),
            0,
            (SID.into(), "AC0".into(), "CA0".into()),
            BTreeMap::from([("secret".to_string(), "x".to_string())]),
            ScenarioOpts::default(),
            &TwilioEmulatorConfig::default(),
        );
        let open = s.opening();
        assert_eq!(
            voice_agent_wire::twilio::media::parse_inbound(&open[0]).unwrap(),
            TwilioInbound::Connected
        );
        let TwilioInbound::Start(start) = voice_agent_wire::twilio::media::parse_inbound(&open[1]).unwrap() else {
            panic!("second message is start")
        };
        assert_eq!(start.stream_sid, SID);
        assert_eq!(start.call_sid, "CA0");
        assert_eq!(start.tracks, vec!["inbound"]);
        assert_eq!(start.custom_parameters.get("secret").map(String::as_str), Some("x"));
        let v: serde_json::Value = serde_json::from_str(&open[1]).unwrap();
        assert_eq!(v["sequenceNumber"], "1");
    }

    #[test]
    fn inbound_frames_are_numbered_timed_and_silent_before_the_callee_speaks() {
        let mut s = session();
        for n in 1..=3u64 {
            let out = s.on_tick().out;
            assert_eq!(out.len(), 1);
            let v: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
            assert_eq!(v["event"], "media");
            assert_eq!(v["sequenceNumber"], (n + 1).to_string());
            assert_eq!(v["media"]["chunk"], n.to_string());
            assert_eq!(v["media"]["timestamp"], (n * 20).to_string());
            assert_eq!(v["media"]["track"], "inbound");
            assert_eq!(v["streamSid"], SID);
            assert_eq!(frame(&out), vec![SILENCE; FRAME_BYTES]);
        }
        let stop: serde_json::Value = serde_json::from_str(&s.stop_message()).unwrap();
        assert_eq!(stop["event"], "stop");
        assert_eq!(stop["sequenceNumber"], "5");
        assert_eq!(stop["stop"]["callSid"], "CA0");
    }

    #[test]
    fn a_mark_is_echoed_only_after_the_audio_before_it_has_played() {
        let mut s = session();
        assert!(s.on_server_text(&media_message_from_ulaw(SID, &[0x11; 480])).is_empty());
        assert!(s.on_server_text(&mark_message(SID, "m1")).is_empty());
        // 480 bytes = 3 frames of playback; the mark comes one tick after the last.
        for _ in 0..3 {
            assert!(echoed_names(&s.on_tick().out).is_empty());
        }
        assert_eq!(echoed_names(&s.on_tick().out), vec!["m1"]);
        let r = report(&s);
        assert_eq!(r.marks_echoed.len(), 1);
        assert_eq!(r.marks_echoed[0].played_bytes, 480);
        assert!(!r.marks_echoed[0].cleared);
        assert_eq!(
            r.heard,
            vec![HeardAudio {
                at_ms: 0,
                ulaw: vec![0x11; 480]
            }]
        );
        assert_eq!(r.audio_received_bytes, 480);
    }

    #[test]
    fn playback_runs_at_160_bytes_per_tick_across_messages() {
        let mut s = session();
        s.on_server_text(&media_message_from_ulaw(SID, &[1; 100]));
        s.on_server_text(&mark_message(SID, "a"));
        s.on_server_text(&media_message_from_ulaw(SID, &[2; 100]));
        s.on_server_text(&mark_message(SID, "b"));
        let first = s.on_tick().out;
        assert!(echoed_names(&first).is_empty(), "a's audio is still playing this tick");
        // Tick 2 plays b's last 40 bytes, so b waits for tick 3.
        assert_eq!(echoed_names(&s.on_tick().out), vec!["a"]);
        assert_eq!(echoed_names(&s.on_tick().out), vec!["b"]);
        let r = report(&s);
        assert_eq!(r.heard_bytes().len(), 200);
        assert_eq!(r.heard[0].ulaw[..100], [1; 100]);
        assert_eq!(r.heard[0].ulaw[100..], [2; 100]);
        assert_eq!(r.marks_echoed[0].played_bytes, 160);
        assert_eq!(r.marks_echoed[1].played_bytes, 200);
    }

    #[test]
    fn a_mark_with_nothing_buffered_is_echoed_at_once() {
        let mut s = session();
        let out = s.on_server_text(&mark_message(SID, "now"));
        assert_eq!(echoed_names(&out), vec!["now"]);
        let v: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
        assert_eq!(v["sequenceNumber"], "2");
    }

    #[test]
    fn clear_drops_audio_and_echoes_pending_marks_in_order() {
        let mut s = session();
        s.on_server_text(&media_message_from_ulaw(SID, &[7; 1600]));
        s.on_server_text(&mark_message(SID, "a"));
        s.on_server_text(&media_message_from_ulaw(SID, &[8; 1600]));
        s.on_server_text(&mark_message(SID, "b"));
        s.on_tick();
        let out = s.on_server_text(&clear_message(SID));
        assert_eq!(echoed_names(&out), vec!["a", "b"]);
        for _ in 0..5 {
            assert!(echoed_names(&s.on_tick().out).is_empty());
        }
        let r = report(&s);
        assert_eq!(r.heard_bytes().len(), 160);
        assert_eq!(r.audio_cleared_bytes, 3200 - 160);
        assert!(r.marks_echoed.iter().all(|m| m.cleared && m.played_bytes == 160));
        assert_eq!(r.clears_ms, vec![20]);
    }

    #[test]
    fn garbage_and_other_streams_are_recorded_not_fatal() {
        let mut s = session();
        assert!(s.on_server_text("{not json").is_empty());
        assert!(
            s.on_server_text(r#"{"event":"media","streamSid":"MZ1","media":{"payload":"***"}}"#)
                .is_empty()
        );
        assert!(s.on_server_text(&mark_message("MZother", "x")).is_empty());
        assert!(s.on_server_text(r#"{"event":"hello"}"#).is_empty());
        let r = report(&s);
        assert_eq!(r.malformed.len(), 1);
        assert_eq!(r.wrong_stream_sid, 2);
        assert!(matches!(r.server_messages[..], [ServerMessage::Other { .. }]));
        s.on_tick();
    }

    fn speak_through(s: &mut Session, line: usize) {
        for _ in 0..2000 {
            s.on_tick();
            let r = report(s);
            if r.callee_lines.get(line).is_some_and(|u| u.ended_ms.is_some()) {
                return;
            }
        }
        panic!("line {line} never ended");
    }

    #[test]
    fn the_callee_speaks_line_one_after_quiet_then_waits_for_a_reply() {
        let config = TwilioEmulatorConfig::default();
        let gap_ticks = (config.reply_gap.as_millis() as u64 / FRAME_MS) as usize;
        let mut s = session_with(ScenarioOpts::default(), config);
        let (i, t) = ticks_until(&mut s, 200, |t| frame(&t.out) != vec![SILENCE; FRAME_BYTES]);
        assert_eq!(i, gap_ticks, "line 1 starts once reply_gap of quiet has passed");
        assert_eq!(frame(&t.out)[..], CALLEE_CLIPS[0][..FRAME_BYTES]);
        speak_through(&mut s, 0);
        // Without an agent reply it never says line 2.
        for _ in 0..150 {
            assert_eq!(frame(&s.on_tick().out), vec![SILENCE; FRAME_BYTES]);
        }
        // A reply, then quiet: line 2.
        s.on_server_text(&media_message_from_ulaw(SID, &[0x22; 800]));
        let (i, _) = ticks_until(&mut s, 200, |t| frame(&t.out) != vec![SILENCE; FRAME_BYTES]);
        assert_eq!(i, 5 + gap_ticks - 1, "800 bytes play in 5 ticks, then reply_gap");
        let r = report(&s);
        assert_eq!(r.callee_lines.len(), 2);
        assert_eq!(r.callee_lines[1].text, CALLEE_LINES[1]);
        assert!(!r.callee_lines[1].barged_in);
    }

    #[test]
    fn every_line_is_said_whole_and_in_order() {
        let mut s = session();
        let mut heard = Vec::new();
        for line in 0..3 {
            for _ in 0..3000 {
                let t = s.on_tick();
                heard.extend(frame(&t.out));
                if report(&s).callee_lines.get(line).is_some_and(|u| u.ended_ms.is_some()) {
                    break;
                }
            }
            s.on_server_text(&media_message_from_ulaw(SID, &[0x33; 160]));
        }
        let spoken: Vec<u8> = heard.into_iter().filter(|b| *b != SILENCE).collect();
        let expected: Vec<u8> = CALLEE_CLIPS.concat().into_iter().filter(|b| *b != SILENCE).collect();
        assert_eq!(spoken, expected);
        let r = report(&s);
        assert_eq!(
            r.callee_lines.iter().map(|u| u.text.as_str()).collect::<Vec<_>>(),
            CALLEE_LINES
        );
    }

    #[test]
    fn dtmf_keys_are_pressed_before_line_one() {
        let opts = ScenarioOpts {
            dtmf: "12#".into(),
            ..ScenarioOpts::default()
        };
        let mut s = session_with(opts, TwilioEmulatorConfig::default());
        let mut digits = Vec::new();
        let mut seqs = Vec::new();
        for _ in 0..200 {
            for e in events(&s.on_tick().out) {
                if let InboundMessage::Dtmf {
                    dtmf, sequence_number, ..
                } = e
                {
                    assert_eq!(dtmf.track, "inbound_track");
                    digits.push(dtmf.digit);
                    seqs.push(sequence_number.unwrap().parse::<u64>().unwrap());
                }
            }
        }
        assert_eq!(digits, vec!["1", "2", "#"]);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        let r = report(&s);
        assert_eq!(r.dtmf_sent, vec!["1", "2", "#"]);
        assert_eq!(r.callee_lines.len(), 1, "then it says line 1");
    }

    #[test]
    fn barge_in_starts_line_two_while_the_agent_is_still_talking() {
        let opts = ScenarioOpts {
            barge_in: true,
            ..ScenarioOpts::default()
        };
        let config = TwilioEmulatorConfig::default();
        let barge_ticks = (config.barge_in_after.as_millis() as u64 / FRAME_MS) as usize;
        let mut s = session_with(opts, config);
        speak_through(&mut s, 0);
        s.on_server_text(&media_message_from_ulaw(SID, &[0x44; 8 * 5000]));
        let (i, _) = ticks_until(&mut s, 500, |t| frame(&t.out) != vec![SILENCE; FRAME_BYTES]);
        assert_eq!(i, barge_ticks);
        let r = report(&s);
        assert!(r.callee_lines[1].barged_in);
        assert!(!s.queue.is_empty(), "the agent's audio was still playing");
    }

    #[test]
    fn hang_up_scenario_leaves_during_the_reply() {
        let opts = ScenarioOpts {
            hang_up_after_first_line: true,
            ..ScenarioOpts::default()
        };
        let mut s = session_with(opts, TwilioEmulatorConfig::default());
        speak_through(&mut s, 0);
        for _ in 0..100 {
            assert!(s.on_tick().hang_up.is_none(), "no reply yet, no hang-up");
        }
        s.on_server_text(&media_message_from_ulaw(SID, &[0x44; 8 * 3000]));
        let (i, t) = ticks_until(&mut s, 500, |t| t.hang_up.is_some());
        assert_eq!(t.hang_up, Some(EndCause::CalleeHungUp));
        assert_eq!(i as u64, HANG_UP_INTO_REPLY_MS / FRAME_MS);
        assert_eq!(report(&s).callee_lines.len(), 1);
    }

    #[test]
    fn a_stalling_callee_stops_reading_after_line_one_and_never_hangs_up() {
        let opts = ScenarioOpts {
            stall_after_first_line: true,
            ..ScenarioOpts::default()
        };
        let config = TwilioEmulatorConfig {
            idle_hangup: Duration::from_secs(2),
            ..TwilioEmulatorConfig::default()
        };
        let mut s = session_with(opts, config);
        assert!(s.reading());
        speak_through(&mut s, 0);
        assert!(!s.reading(), "it stops reading once line 1 is said");
        // Well past idle_hangup: silence, no line 2, no hang-up.
        for _ in 0..500 {
            let t = s.on_tick();
            assert!(t.hang_up.is_none());
            assert_eq!(frame(&t.out), vec![SILENCE; FRAME_BYTES]);
        }
        assert_eq!(report(&s).callee_lines.len(), 1);
    }

    #[test]
    fn an_idle_callee_hangs_up() {
        let config = TwilioEmulatorConfig {
            idle_hangup: Duration::from_secs(2),
            ..TwilioEmulatorConfig::default()
        };
        let mut s = session_with(ScenarioOpts::default(), config);
        speak_through(&mut s, 0);
        let (i, t) = ticks_until(&mut s, 500, |t| t.hang_up.is_some());
        assert_eq!(t.hang_up, Some(EndCause::CalleeIdle));
        assert_eq!(i, 100, "2 s after the end of its line");
    }

    fn machine() -> ScenarioOpts {
        ScenarioOpts {
            machine: true,
            ..ScenarioOpts::default()
        }
    }

    #[test]
    fn a_machine_greets_at_once_beeps_and_is_reported_at_the_beep_with_detect_message_end() {
        let mut s = session_with(machine(), TwilioEmulatorConfig::default());
        s.detect_machine(true);
        let first = frame(&s.on_tick().out);
        assert_ne!(first, vec![SILENCE; FRAME_BYTES], "the greeting starts at once");
        let (_, t) = ticks_until(&mut s, 2000, |t| t.amd.is_some());
        let (result, at) = t.amd.unwrap();
        assert_eq!(result, "machine_end_beep");
        let r = report(&s);
        assert_eq!(Some(at + FRAME_MS), r.beep_ended_ms, "reported as the beep ends");
        let greeting_ms = machine_greeting_len() as u64 / 8;
        assert!(at >= greeting_ms + BEEP_MS - FRAME_MS, "{at} vs {greeting_ms}");
        assert_eq!(r.amd_result, Some(("machine_end_beep".to_string(), at)));
        // Then it records in silence, and reports nothing more.
        for _ in 0..50 {
            let t = s.on_tick();
            assert!(t.amd.is_none());
            assert_eq!(frame(&t.out), vec![SILENCE; FRAME_BYTES]);
        }
    }

    #[test]
    fn a_machine_is_reported_after_the_speech_threshold_with_enable() {
        let mut s = session_with(machine(), TwilioEmulatorConfig::default());
        s.detect_machine(false);
        let (_, t) = ticks_until(&mut s, 2000, |t| t.amd.is_some());
        let (result, at) = t.amd.unwrap();
        assert_eq!(result, "machine_start");
        assert!(
            (AMD_SPEECH_THRESHOLD_MS - FRAME_MS..AMD_SPEECH_THRESHOLD_MS + FRAME_MS).contains(&at),
            "{at}"
        );
        assert!(report(&s).beep_ended_ms.is_none());
    }

    #[test]
    fn a_person_is_reported_human_after_a_short_hello_and_quiet() {
        let mut s = session_with(ScenarioOpts::default(), TwilioEmulatorConfig::default());
        s.detect_machine(true);
        let (_, t) = ticks_until(&mut s, 2000, |t| t.amd.is_some());
        let (result, at) = t.amd.unwrap();
        assert_eq!(result, "human");
        let ended = report(&s).callee_lines[0].ended_ms.unwrap();
        assert_eq!(at, ended + AMD_SPEECH_END_MS);
    }

    #[test]
    fn without_detection_nothing_is_reported() {
        let mut s = session_with(machine(), TwilioEmulatorConfig::default());
        for _ in 0..1000 {
            assert!(s.on_tick().amd.is_none());
        }
    }
}
