//! One emulated call from dialling to hang-up: status callbacks (§2.1), the
//! TwiML request (§2.2) and running the TwiML's verbs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::report::{EndCause, PostedCallback, TwimlFetch};
use super::{CallSlot, Command, Scenario, Shared, TwimlSource, rfc2822_now};
use crate::twilio::twiml::{self, Verb};
use voice_agent_wire::twilio::signature;

/// A validated create request.
#[derive(Clone, Debug)]
pub(super) struct CreateParams {
    pub(super) to: String,
    pub(super) from: String,
    pub(super) source: TwimlSource,
    pub(super) status_callback: Option<String>,
    pub(super) status_callback_method: String,
    /// Requested `StatusCallbackEvent`s; empty = only `completed` (§2.1).
    pub(super) events: Vec<String>,
    /// Ring timeout, seconds.
    pub(super) timeout: u64,
    /// Longest answered duration, seconds.
    pub(super) time_limit: u64,
    pub(super) scenario: Scenario,
    /// Answering-machine detection requested (`MachineDetection`).
    pub(super) amd: Option<AmdRequest>,
}

/// What the create request asked of answering-machine detection (§1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct AmdRequest {
    /// `DetectMessageEnd` (else `Enable`).
    pub(super) detect_message_end: bool,
    /// `AsyncAmdStatusCallback` (with `AsyncAmd=true`).
    pub(super) callback: Option<String>,
    /// `AsyncAmdStatusCallbackMethod`.
    pub(super) callback_method: String,
}

/// How and why a call ends, and the REST request waiting for it (if any).
pub(super) struct Ending {
    pub(super) status: &'static str,
    pub(super) cause: EndCause,
    pub(super) reply: Option<oneshot::Sender<()>>,
}

impl Ending {
    pub(super) fn new(status: &'static str, cause: EndCause) -> Self {
        Self {
            status,
            cause,
            reply: None,
        }
    }

    pub(super) fn completed(cause: EndCause) -> Self {
        Self::new("completed", cause)
    }
}

/// Something that stops the verb being run.
pub(super) enum Interrupt {
    /// The call ends.
    End(Ending),
    /// Run other TwiML (REST update with `Twiml`/`Url`).
    Redirect(TwimlSource, oneshot::Sender<()>),
}

enum Dial {
    Answered,
    Ended(Ending),
}

/// A status callback waiting to be posted.
struct PendingCallback {
    status: String,
    sequence_number: u32,
    params: Vec<(String, String)>,
}

/// The task of one call; its state is also mirrored in the [`CallSlot`].
pub(super) struct CallActor {
    pub(super) shared: Arc<Shared>,
    pub(super) slot: Arc<CallSlot>,
    pub(super) sid: String,
    pub(super) params: CreateParams,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) cancel: CancellationToken,
    /// When `TimeLimit` ends the call (set at answer).
    pub(super) deadline: Option<Instant>,
    /// URL of the TwiML being run, for relative `<Stream url>`s.
    pub(super) twiml_base: Option<String>,
    finished: watch::Sender<bool>,
    callbacks: Option<mpsc::UnboundedSender<PendingCallback>>,
    callback_task: Option<JoinHandle<()>>,
    next_sequence: u32,
    answered_at: Option<Instant>,
}

impl CallActor {
    pub(super) fn new(
        shared: Arc<Shared>,
        slot: Arc<CallSlot>,
        sid: String,
        params: CreateParams,
        commands: mpsc::Receiver<Command>,
        finished: watch::Sender<bool>,
    ) -> Self {
        let cancel = shared.cancel.child_token();
        Self {
            shared,
            slot,
            sid,
            params,
            commands,
            cancel,
            deadline: None,
            twiml_base: None,
            finished,
            callbacks: None,
            callback_task: None,
            next_sequence: 0,
            answered_at: None,
        }
    }

    /// Runs the call to its end.
    pub(super) async fn run(mut self) {
        if let Some(url) = self.params.status_callback.clone() {
            let (tx, rx) = mpsc::unbounded_channel();
            self.callbacks = Some(tx);
            let method = self.params.status_callback_method.clone();
            self.callback_task = Some(tokio::spawn(post_callbacks(
                self.shared.clone(),
                self.slot.clone(),
                url,
                method,
                rx,
                self.cancel.clone(),
            )));
        }
        let ending = match self.dial().await {
            Dial::Answered => self.converse().await,
            Dial::Ended(e) => e,
        };
        self.finish(ending).await;
    }

    fn set_status(&self, status: &str) {
        let now = rfc2822_now();
        let mut state = self.slot.lock();
        state.resource.status = status.to_string();
        state.resource.date_updated = Some(now.clone());
        if status == "in-progress" {
            state.resource.start_time = Some(now);
        }
        state.report.status = status.to_string();
    }

    /// Parameters every request about this call carries (§2.1, §2.2).
    fn base_params(&self, status: &str) -> Vec<(String, String)> {
        let p = &self.params;
        [
            ("AccountSid", self.shared.config.account_sid.as_str()),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", self.sid.as_str()),
            ("CallStatus", status),
            ("Called", p.to.as_str()),
            ("Caller", p.from.as_str()),
            ("Direction", "outbound-api"),
            ("From", p.from.as_str()),
            ("To", p.to.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Queues the status callback for `status` if it was asked for (§2.1:
    /// event `answered` → `in-progress`, every terminal status is `completed`).
    fn fire(&mut self, status: &str, extra: &[(&str, String)]) {
        let event = match status {
            "initiated" | "ringing" => status,
            "in-progress" => "answered",
            _ => "completed",
        };
        let wanted = if self.params.events.is_empty() {
            event == "completed"
        } else {
            self.params.events.iter().any(|e| e == event)
        };
        if !wanted {
            return;
        }
        let Some(tx) = &self.callbacks else { return };
        // UNVERIFIED (§2.1 only says "order events were fired, starting at
        // 0"): whether events not subscribed to use up numbers. We number the
        // callbacks actually sent, so the first one is always 0.
        let mut params = self.base_params(status);
        params.push(("CallbackSource".into(), "call-progress-events".into()));
        params.push(("SequenceNumber".into(), self.next_sequence.to_string()));
        params.push(("Timestamp".into(), rfc2822_now()));
        params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let _ = tx.send(PendingCallback {
            status: status.to_string(),
            sequence_number: self.next_sequence,
            params,
        });
        self.next_sequence += 1;
    }

    /// Waits `d` before the answer. A hang-up request cancels the call
    /// (`Status=completed` on an unanswered call cancels it too: "attempt to
    /// hang up a call even if it's already in progress"); a redirect replaces
    /// the TwiML run at answer.
    async fn ring_wait(&mut self, d: Duration) -> Option<Ending> {
        let until = Instant::now() + d;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Some(Ending::new("canceled", EndCause::Shutdown)),
                _ = tokio::time::sleep_until(until) => return None,
                Some(cmd) = self.commands.recv() => match cmd {
                    Command::Hangup { reply, .. } => {
                        let mut e = Ending::new("canceled", EndCause::RestUpdate);
                        e.reply = Some(reply);
                        return Some(e);
                    }
                    Command::Redirect { source, reply } => {
                        self.params.source = source;
                        let _ = reply.send(());
                    }
                },
            }
        }
    }

    async fn dial(&mut self) -> Dial {
        // Twilio answers the create request before dialling.
        if let Some(e) = self.ring_wait(Duration::from_millis(50)).await {
            return Dial::Ended(e);
        }
        self.fire("initiated", &[]);
        if let Some(e) = self.ring_wait(Duration::from_millis(100)).await {
            return Dial::Ended(e);
        }
        self.set_status("ringing");
        self.fire("ringing", &[]);
        let config = &self.shared.config;
        let timeout = Duration::from_secs(self.params.timeout);
        let (ring_for, outcome) = match &self.params.scenario {
            Scenario::Busy => (config.ring_time, Some(("busy", EndCause::Busy))),
            Scenario::Failed => (config.ring_time, Some(("failed", EndCause::Failed))),
            Scenario::NoAnswer => (Duration::from_secs(2), Some(("no-answer", EndCause::NoAnswer))),
            Scenario::NoAnswerAtTimeout => (timeout, Some(("no-answer", EndCause::NoAnswer))),
            _ => (config.ring_time, None),
        };
        let (ring_for, outcome) = if ring_for > timeout {
            (timeout, Some(("no-answer", EndCause::NoAnswer)))
        } else {
            (ring_for, outcome)
        };
        if let Some(e) = self.ring_wait(ring_for).await {
            return Dial::Ended(e);
        }
        match outcome {
            Some((status, cause)) => Dial::Ended(Ending::new(status, cause)),
            None => Dial::Answered,
        }
    }

    async fn converse(&mut self) -> Ending {
        let now = Instant::now();
        self.answered_at = Some(now);
        self.deadline = Some(now + Duration::from_secs(self.params.time_limit));
        self.set_status("in-progress");
        self.fire("in-progress", &[]);
        let source = self.params.source.clone();
        let mut program = match self.load(source).await {
            Ok(p) => p,
            Err(e) => return e,
        };
        loop {
            let Some(verb) = program.pop_front() else {
                return Ending::completed(EndCause::TwimlEnded);
            };
            let interrupt = match verb {
                Verb::Say(text) => {
                    let d = self.say_duration(&text);
                    self.slot.report(|r| r.said.push(text));
                    self.wait(d).await
                }
                Verb::Pause(secs) => self.wait(Duration::from_secs(secs.into())).await,
                Verb::Hangup => return Ending::completed(EndCause::TwimlHangup),
                Verb::Connect(Some(stream)) => match self.run_stream(&stream).await {
                    // The socket closed and the call goes on: with an
                    // `action`, Twilio requests it and runs what it answers
                    // instead of the rest of this document (protocols.md §4);
                    // its failure is an application error that ends the call.
                    None => match &stream.connect_action {
                        Some((url, method)) => {
                            let source = match self.action_url(url) {
                                Ok(url) => TwimlSource::Fetch {
                                    url,
                                    method: method.clone(),
                                },
                                Err(e) => {
                                    self.slot.report(|r| r.errors.push(e.clone()));
                                    return Ending::completed(EndCause::ApplicationError(e));
                                }
                            };
                            program = match self.load(source).await {
                                Ok(p) => p,
                                Err(e) => return e,
                            };
                            continue;
                        }
                        None => None,
                    },
                    interrupt => interrupt,
                },
                Verb::Connect(None) => None,
                Verb::Dial(spec) => match self.run_dial(&spec).await {
                    Err(interrupt) => Some(interrupt),
                    // Over: with an `action`, Twilio requests it (with the
                    // outcome) and runs what it answers; else the document goes on.
                    Ok(outcome) => match &spec.action {
                        Some((url, method)) => {
                            let source = match self.action_url(url) {
                                Ok(url) => TwimlSource::Fetch {
                                    url,
                                    method: method.clone(),
                                },
                                Err(e) => {
                                    self.slot.report(|r| r.errors.push(e.clone()));
                                    return Ending::completed(EndCause::ApplicationError(e));
                                }
                            };
                            program = match self.load_with(source, &outcome).await {
                                Ok(p) => p,
                                Err(e) => return e,
                            };
                            continue;
                        }
                        None => None,
                    },
                },
                Verb::Other(name) => {
                    self.slot
                        .report(|r| r.errors.push(format!("the emulator does not run <{name}>; skipped")));
                    None
                }
            };
            match interrupt {
                None => {}
                Some(Interrupt::End(e)) => return e,
                Some(Interrupt::Redirect(source, reply)) => {
                    // Twilio answers the update at once, then fetches the new TwiML.
                    let _ = reply.send(());
                    program = match self.load(source).await {
                        Ok(p) => p,
                        Err(e) => return e,
                    };
                }
            }
        }
    }

    /// Runs a `<Dial>`: the number's scenario decides (busy, no answer,
    /// failed, or answered and talking for `dial_talk`). The `action`
    /// parameters of the outcome (`DialCallStatus`, `DialCallSid`,
    /// `DialCallDuration`), or what interrupted the dial (a hang-up, a
    /// redirect, the time limit: the call goes that way, no action).
    async fn run_dial(&mut self, spec: &twiml::DialSpec) -> Result<Vec<(String, String)>, Interrupt> {
        let config = &self.shared.config;
        let index = self.slot.lock().report.dials.len();
        self.slot.report(|r| {
            r.dials.push(super::DialReport {
                number: spec.number.clone(),
                caller_id: spec.caller_id.clone().unwrap_or_else(|| self.params.from.clone()),
                timeout: spec.timeout,
                ..Default::default()
            })
        });
        let timeout = Duration::from_secs(spec.timeout.into());
        let (ring, status, talk) = match config.scenario_for(&spec.number) {
            super::Scenario::Busy => (config.ring_time, "busy", None),
            super::Scenario::NoAnswer => (Duration::from_secs(2).min(timeout), "no-answer", None),
            super::Scenario::NoAnswerAtTimeout => (timeout, "no-answer", None),
            super::Scenario::Failed => (config.ring_time, "failed", None),
            super::Scenario::InvalidNumber | super::Scenario::ServerError | super::Scenario::NoResponse => {
                (Duration::ZERO, "failed", None)
            }
            super::Scenario::Answer(_) if config.ring_time > timeout => (timeout, "no-answer", None),
            super::Scenario::Answer(_) => (config.ring_time, "completed", Some(config.dial_talk)),
        };
        let set = |slot: &CallSlot, status: &str, secs: u64| {
            slot.report(|r| {
                if let Some(d) = r.dials.get_mut(index) {
                    d.status = status.to_string();
                    d.duration_secs = secs;
                }
            })
        };
        if let Some(i) = self.wait(ring).await {
            set(&self.slot, "canceled", 0);
            return Err(i);
        }
        let mut secs = 0;
        if let Some(talk) = talk {
            if let Some(i) = self.wait(talk).await {
                set(&self.slot, "completed", talk.as_secs());
                return Err(i);
            }
            secs = talk.as_secs().max(1);
        }
        set(&self.slot, status, secs);
        let dial_sid = format!("CA{:032x}", rand::random::<u128>());
        Ok(vec![
            ("DialCallStatus".into(), status.into()),
            ("DialCallSid".into(), dial_sid),
            ("DialCallDuration".into(), secs.to_string()),
        ])
    }

    /// A `<Connect action>` URL: absolute, or relative to the TwiML's URL.
    fn action_url(&self, url: &str) -> Result<String, String> {
        if url.contains("://") {
            return Ok(url.to_string());
        }
        let base = self
            .twiml_base
            .as_deref()
            .ok_or_else(|| format!("11200 HTTP retrieval failure: relative action {url} in inline TwiML"))?;
        url::Url::parse(base)
            .and_then(|b| b.join(url))
            .map(String::from)
            .map_err(|e| format!("11200 HTTP retrieval failure: action {url}: {e}"))
    }

    /// How long `<Say>` takes at the configured speed.
    fn say_duration(&self, text: &str) -> Duration {
        let words = text.split_whitespace().count().max(1) as u64;
        let wpm = u64::from(self.shared.config.words_per_minute.max(1));
        Duration::from_millis((words * 60_000 / wpm).max(300))
    }

    /// What a hang-up or redirect request does to an answered call.
    pub(super) fn on_answered_command(&mut self, cmd: Command) -> Option<Interrupt> {
        match cmd {
            // "canceled … will not affect calls already in progress" (§1.4).
            Command::Hangup { complete: false, reply } => {
                let _ = reply.send(());
                None
            }
            Command::Hangup { complete: true, reply } => {
                let mut e = Ending::completed(EndCause::RestUpdate);
                e.reply = Some(reply);
                Some(Interrupt::End(e))
            }
            Command::Redirect { source, reply } => Some(Interrupt::Redirect(source, reply)),
        }
    }

    pub(super) fn time_limit_deadline(&self) -> Instant {
        self.deadline
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(self.params.time_limit))
    }

    /// Waits `d` while answered, watching for requests and the time limit.
    async fn wait(&mut self, d: Duration) -> Option<Interrupt> {
        let until = Instant::now() + d;
        let deadline = self.time_limit_deadline();
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Some(Interrupt::End(Ending::completed(EndCause::Shutdown))),
                _ = tokio::time::sleep_until(deadline) => {
                    return Some(Interrupt::End(Ending::completed(EndCause::TimeLimit)));
                }
                _ = tokio::time::sleep_until(until) => return None,
                Some(cmd) = self.commands.recv() => {
                    if let Some(i) = self.on_answered_command(cmd) {
                        return Some(i);
                    }
                }
            }
        }
    }

    /// The verbs of `source`; a TwiML that cannot be fetched or parsed ends
    /// the call (Twilio says "an application error has occurred" and hangs up).
    async fn load(&mut self, source: TwimlSource) -> Result<VecDeque<Verb>, Ending> {
        self.load_with(source, &[]).await
    }

    /// [`CallActor::load`], with `extra` parameters in the request (an action's).
    async fn load_with(&mut self, source: TwimlSource, extra: &[(String, String)]) -> Result<VecDeque<Verb>, Ending> {
        let app_error = |slot: &CallSlot, text: String| {
            slot.report(|r| r.errors.push(text.clone()));
            Ending::completed(EndCause::ApplicationError(text))
        };
        let text = match source {
            TwimlSource::Inline(t) => {
                self.slot.report(|r| r.inline_twiml.push(t.clone()));
                t
            }
            TwimlSource::Fetch { url, method } => {
                let mut params = self.base_params("in-progress");
                params.extend(extra.iter().cloned());
                let sent = signed_request(&self.shared, &method, &url, &params, &self.cancel).await;
                let mut fetch = TwimlFetch {
                    url: sent.url,
                    method,
                    params,
                    response_status: None,
                    body: None,
                    error: None,
                };
                let outcome = match sent.result {
                    Ok((status, body)) if (200..300).contains(&status) => {
                        fetch.response_status = Some(status);
                        fetch.body = Some(body.clone());
                        Ok(body)
                    }
                    Ok((status, body)) => {
                        fetch.response_status = Some(status);
                        fetch.body = Some(body);
                        Err(format!("11200 HTTP retrieval failure: {url} answered HTTP {status}"))
                    }
                    Err(e) => Err(format!("11200 HTTP retrieval failure: {url}: {e}")),
                };
                fetch.error = outcome.as_ref().err().cloned();
                self.slot.report(|r| r.twiml_fetches.push(fetch));
                self.twiml_base = Some(url);
                match outcome {
                    Ok(body) => body,
                    Err(e) => return Err(app_error(&self.slot, e)),
                }
            }
        };
        match twiml::parse(&text) {
            Ok(verbs) => Ok(verbs.into()),
            Err(e) => Err(app_error(&self.slot, format!("12100 Document parse failure: {e}"))),
        }
    }

    async fn finish(mut self, ending: Ending) {
        // Requests that arrive from now on see the ended call.
        self.commands.close();
        while self.commands.try_recv().is_ok() {}
        let call_secs = self.answered_at.map_or(0, |t| {
            let d = t.elapsed();
            d.as_secs() + u64::from(d.subsec_nanos() > 0)
        });
        let status = ending.status;
        {
            let now = rfc2822_now();
            let mut state = self.slot.lock();
            state.resource.status = status.to_string();
            state.resource.end_time = Some(now.clone());
            state.resource.date_updated = Some(now);
            state.resource.duration = Some(call_secs.to_string());
            state.report.status = status.to_string();
            state.report.end_cause = Some(ending.cause.clone());
        }
        if let Some(reply) = ending.reply {
            let _ = reply.send(());
        }
        if ending.cause != EndCause::Shutdown {
            // §2.1: CallDuration on every terminal event; Duration (minutes,
            // billed) on completed; SipResponseCode on terminal events.
            let mut extra = vec![("CallDuration", call_secs.to_string())];
            if status == "completed" {
                extra.push(("Duration", call_secs.div_ceil(60).max(1).to_string()));
            }
            let sip = match status {
                "completed" => "200",
                "busy" => "486",
                "no-answer" | "canceled" => "487",
                _ => "404",
            };
            extra.push(("SipResponseCode", sip.to_string()));
            self.fire(status, &extra);
        }
        self.callbacks = None;
        if let Some(task) = self.callback_task.take() {
            let _ = task.await;
        }
        self.slot.report(|r| r.finished = true);
        let _ = self.finished.send(true);
    }
}

/// Result of a signed request to our server.
struct Sent {
    url: String,
    signature: String,
    result: Result<(u16, String), String>,
}

/// `application/x-www-form-urlencoded` of `params` (a plain function: the
/// serializer is not `Send`, so it must not live across an await).
fn encode_form(params: &[(String, String)]) -> String {
    let mut encoded = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        encoded.append_pair(k, v);
    }
    encoded.finish()
}

/// A request signed like Twilio's (§3.1): POST with the params as a form, or
/// GET with them in the query string (signed over the full URL, no params).
async fn signed_request(
    shared: &Shared,
    method: &str,
    url: &str,
    params: &[(String, String)],
    cancel: &CancellationToken,
) -> Sent {
    let encoded = encode_form(params);
    let token = &shared.config.auth_token;
    let (url, signature, request) = if method == "GET" {
        let sep = if url.contains('?') { '&' } else { '?' };
        let full = format!("{url}{sep}{encoded}");
        let sig = signature::compute(token, &full, &[]);
        let req = shared.http.get(&full);
        (full, sig, req)
    } else {
        let sig = signature::compute(token, url, params);
        let req = shared
            .http
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(encoded);
        (url.to_string(), sig, req)
    };
    let request = request.header(signature::HEADER, &signature);
    let exchange = async {
        let resp = request.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        Ok((status, body))
    };
    let result = tokio::select! {
        r = exchange => r,
        _ = cancel.cancelled() => Err("the emulator shut down".to_string()),
    };
    Sent { url, signature, result }
}

/// Posts an asynchronous answering-machine detection result (§2.3):
/// `AccountSid`, `CallSid`, `AnsweredBy`, `MachineDetectionDuration` (ms),
/// signed like every webhook.
pub(super) async fn post_amd(
    shared: Arc<Shared>,
    slot: Arc<CallSlot>,
    call_sid: String,
    request: AmdRequest,
    answered_by: String,
    duration_ms: u64,
    cancel: CancellationToken,
) {
    let Some(url) = request.callback else { return };
    let params: Vec<(String, String)> = [
        ("AccountSid", shared.config.account_sid.clone()),
        ("CallSid", call_sid),
        ("AnsweredBy", answered_by.clone()),
        ("MachineDetectionDuration", duration_ms.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let sent = signed_request(&shared, &request.callback_method, &url, &params, &cancel).await;
    let (response_status, error) = match sent.result {
        Ok((status, _)) => (Some(status), None),
        Err(e) => (None, Some(e)),
    };
    slot.report(|r| {
        r.amd_callbacks.push(PostedCallback {
            status: answered_by,
            sequence_number: 0,
            url: sent.url,
            method: request.callback_method.clone(),
            params,
            signature: sent.signature,
            response_status,
            error,
        })
    });
}

/// Posts a call's status callbacks one at a time, in order.
async fn post_callbacks(
    shared: Arc<Shared>,
    slot: Arc<CallSlot>,
    url: String,
    method: String,
    mut rx: mpsc::UnboundedReceiver<PendingCallback>,
    cancel: CancellationToken,
) {
    loop {
        let cb = tokio::select! {
            _ = cancel.cancelled() => return,
            cb = rx.recv() => match cb {
                Some(cb) => cb,
                None => return,
            },
        };
        let sent = signed_request(&shared, &method, &url, &cb.params, &cancel).await;
        let (response_status, error) = match sent.result {
            Ok((status, _)) => (Some(status), None),
            Err(e) => (None, Some(e)),
        };
        if let Some(e) = &error {
            tracing::debug!(error = %e, "emulated status callback failed");
        }
        slot.report(|r| {
            r.callbacks.push(PostedCallback {
                status: cb.status,
                sequence_number: cb.sequence_number,
                url: sent.url,
                method: method.clone(),
                params: cb.params,
                signature: sent.signature,
                response_status,
                error,
            })
        });
    }
}
