//! Call recordings: a stereo WAV per recorded call ([`wav`]: 8 kHz 16-bit
//! PCM, left the callee as received from Twilio, right the agent exactly as
//! the callee heard it), written while the call runs, served by
//! `GET /recordings/{call_id}.wav` ([`crate::http`]) and deleted after
//! `RECORDING_RETENTION`.
//!
//! - [`wav`] — the file format (wire format, pure).
//! - [`timeline`] — where each side's audio lands, a `clear` included (pure).
//! - this module — the I/O: a [`Recorder`] per call, whose task owns the
//!   file, and the retention sweep.
//!
//! The media path is never held up by a recording: the bridge hands each
//! frame to the call's [`Recorder`] with `try_send` on a bounded queue and
//! goes on. The recorder's own task decodes, places and writes. A full queue
//! (the disk cannot keep up), a write error or a full disk ends the
//! recording, with the reason on the call record ([`RecordingState::Failed`])
//! and, while the call is live, as an event; the call goes on. What was
//! written until then stays playable: the header's sizes are patched after
//! every second of audio, so a crash, too, leaves a file that plays up to its
//! last second.
//!
//! Files are `RECORDINGS_DIR/{call_id}.wav`: the name is made from a parsed
//! [`CallId`] only, so no request can name another path. Replicas must share
//! the directory (one volume mounted by all): a call is recorded by the
//! replica that runs its media, and fetched from any.

pub mod timeline;
pub mod wav;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncSeek, AsyncSeekExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::call::hub::CallHub;
use crate::call::{CallId, RecordingInfo, RecordingState, lifecycle};
use timeline::Timeline;

/// Frames queued for a recorder before the recording is given up: 10 s of
/// both directions at 50 frames a second each. The bridge never waits for
/// room (the call matters more than its recording).
pub const QUEUE: usize = 1000;
/// Most agent audio that may wait to be played, in samples (2 minutes): an AI
/// sends faster than real time, but a reply is not longer than that.
pub const MAX_AHEAD: usize = 120 * wav::SAMPLE_RATE as usize;
/// How long a call's end waits for its recorder to close the file and
/// report; past it the recorder finishes on its own.
pub const FINISH_WAIT: Duration = Duration::from_secs(5);
/// How often the retention sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// A recording is at most the call's longest duration and this much more
/// (the greeting and the goodbye around it).
const LENGTH_SLACK: Duration = Duration::from_secs(120);

/// The recordings directory and how long recordings are kept.
#[derive(Clone, Debug)]
pub struct Recordings {
    dir: PathBuf,
    retention: Duration,
}

impl Recordings {
    /// Recordings in `dir`, kept for `retention` (zero: for ever).
    pub fn new(dir: PathBuf, retention: Duration) -> Self {
        Self { dir, retention }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of call `id`'s recording.
    pub fn path(&self, id: &CallId) -> PathBuf {
        self.dir.join(format!("{id}.wav"))
    }

    /// Starts recording call `id` (at most `max_duration` long, plus slack):
    /// the file is created by the recorder's task, which reports the
    /// recording's state on the call through `hub`.
    pub fn start(&self, hub: CallHub, id: CallId, max_duration: Duration) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let max_samples = (max_duration + LENGTH_SLACK).as_secs() * u64::from(wav::SAMPLE_RATE);
        let job = Job {
            path: self.path(&id),
            dir: self.dir.clone(),
            max_samples,
            overflowed: overflowed.clone(),
        };
        let task = tokio::spawn(async move {
            let report = Reporter { hub, id };
            job.run(rx, &report).await;
        });
        Recorder {
            tx: Some(tx),
            overflowed,
            task,
        }
    }

    /// Deletes the recordings whose file was last written more than the
    /// retention ago (a recording's file is last written when its call ends),
    /// and marks their calls' recordings deleted. Returns how many it deleted.
    pub async fn sweep(&self, hub: &CallHub) -> usize {
        if self.retention.is_zero() {
            return 0;
        }
        let Some(cutoff) = SystemTime::now().checked_sub(self.retention) else {
            return 0;
        };
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the recordings");
                return 0;
            }
        };
        let mut deleted = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name();
            // Only files named like ours; anything else in the directory is left alone.
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wav"))
                .and_then(CallId::parse)
            else {
                continue;
            };
            let old = match entry.metadata().await.and_then(|m| m.modified()) {
                Ok(modified) => modified < cutoff,
                Err(_) => false,
            };
            if !old {
                continue;
            }
            match tokio::fs::remove_file(entry.path()).await {
                Ok(()) => {}
                // Another replica's sweep was first (replicas share the directory).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(call_id = %id, error = %e, "cannot delete an expired recording");
                    continue;
                }
            }
            deleted += 1;
            let update = hub
                .update(&id, |r| {
                    let duration_ms = r.recording.as_ref().map_or(0, |i| i.duration_ms);
                    lifecycle::recording_changed(
                        r,
                        RecordingInfo {
                            state: RecordingState::Deleted,
                            error: String::new(),
                            duration_ms,
                            file: false,
                        },
                    )
                })
                .await;
            if let Err(e) = update {
                // A file whose call is gone from the store is deleted all the same.
                tracing::debug!(call_id = %id, error = %e, "deleted recording's call not updated");
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "deleted recordings past RECORDING_RETENTION");
        }
        deleted
    }

    /// Runs [`Recordings::sweep`] now and every [`SWEEP_EVERY`] until `stop`.
    pub fn spawn_sweep(&self, hub: CallHub, stop: CancellationToken) {
        if self.retention.is_zero() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {
                        this.sweep(&hub).await;
                    }
                }
            }
        });
    }
}

/// What the bridge hands a recorder.
#[derive(Debug)]
enum Input {
    /// A `media.payload` from Twilio (base64 μ-law), decoded off the media path.
    Callee(String),
    /// Agent audio sent to Twilio (μ-law).
    Agent(Vec<u8>),
    /// A `clear` sent to Twilio.
    Clear,
}

/// One call's recorder, held by its media bridge. Every method returns at
/// once: a frame that finds the queue full ends the recording (the task is
/// told why) rather than waiting.
pub struct Recorder {
    tx: Option<mpsc::Sender<Input>>,
    overflowed: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Callee audio as received (`media.payload`, base64 μ-law).
    pub fn callee(&mut self, payload: &str) {
        if self.tx.is_some() {
            self.send(Input::Callee(payload.to_string()));
        }
    }

    /// Agent audio as sent to Twilio (μ-law).
    pub fn agent(&mut self, ulaw: Vec<u8>) {
        self.send(Input::Agent(ulaw));
    }

    /// A `clear` was sent to Twilio: what it had not played is dropped.
    pub fn clear(&mut self) {
        self.send(Input::Clear);
    }

    /// True while frames are still taken.
    pub fn active(&self) -> bool {
        self.tx.is_some()
    }

    fn send(&mut self, input: Input) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(input) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Dropping the sender ends the task's queue; the flag tells it why.
                self.overflowed.store(true, Ordering::Release);
                self.tx = None;
            }
            // The task ended the recording itself (a write error).
            Err(mpsc::error::TrySendError::Closed(_)) => self.tx = None,
        }
    }

    /// The call's media ended: the recorder writes what is left, closes the
    /// file and reports, waited for at most [`FINISH_WAIT`].
    pub async fn finish(mut self) {
        self.tx = None;
        if tokio::time::timeout(FINISH_WAIT, &mut self.task).await.is_err() {
            tracing::warn!("the recorder is still closing its file; the call ends without waiting");
        }
    }
}

/// Tells the call how its recording is going.
struct Reporter {
    hub: CallHub,
    id: CallId,
}

impl Reporter {
    async fn report(&self, info: RecordingInfo) {
        if let Err(e) = self
            .hub
            .update(&self.id, move |r| lifecycle::recording_changed(r, info))
            .await
        {
            tracing::error!(call_id = %self.id, error = %e, "the recording's state was not stored");
        }
    }
}

/// One recording's task.
struct Job {
    path: PathBuf,
    dir: PathBuf,
    max_samples: u64,
    overflowed: Arc<AtomicBool>,
}

/// How a recording ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The call's media ended.
    Complete,
    /// Stopped early, for this reason.
    Failed(String),
}

impl Job {
    async fn run(self, rx: mpsc::Receiver<Input>, report: &Reporter) {
        let file = match self.create().await {
            Ok(f) => f,
            Err(e) => {
                let error = format!(
                    "cannot create the recording in RECORDINGS_DIR ({}): {e}; the call goes on unrecorded",
                    self.dir.display()
                );
                tracing::warn!(call_id = %report.id, error, "recording failed");
                report
                    .report(RecordingInfo {
                        state: RecordingState::Failed,
                        error,
                        duration_ms: 0,
                        file: false,
                    })
                    .await;
                return;
            }
        };
        let started = RecordingInfo {
            state: RecordingState::Recording,
            error: String::new(),
            duration_ms: 0,
            file: true,
        };
        report.report(started).await;
        let (end, samples) = record(file, rx, self.max_samples, &self.overflowed).await;
        let duration_ms = samples / u64::from(wav::SAMPLE_RATE / 1000);
        let info = match end {
            End::Complete => RecordingInfo {
                state: RecordingState::Complete,
                error: String::new(),
                duration_ms,
                file: true,
            },
            End::Failed(error) => {
                tracing::warn!(call_id = %report.id, error, "recording stopped early; the call goes on");
                RecordingInfo {
                    state: RecordingState::Failed,
                    error,
                    duration_ms,
                    file: true,
                }
            }
        };
        report.report(info).await;
    }

    async fn create(&self) -> std::io::Result<tokio::fs::File> {
        tokio::fs::create_dir_all(&self.dir).await?;
        // One media stream per call, so one recording: a file left by an
        // earlier attempt of the same call would be stale.
        tokio::fs::File::create(&self.path).await
    }
}

/// A WAV file being written: the data is appended, the header patched.
struct WavFile<W> {
    sink: W,
    /// Data bytes written.
    data: u64,
}

impl<W: AsyncWrite + AsyncSeek + Unpin> WavFile<W> {
    async fn start(mut sink: W) -> std::io::Result<Self> {
        sink.write_all(&wav::header(0)).await?;
        Ok(Self { sink, data: 0 })
    }

    async fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sink.write_all(bytes).await?;
        self.data += bytes.len() as u64;
        Ok(())
    }

    /// Makes the header describe everything appended so far.
    async fn patch(&mut self) -> std::io::Result<()> {
        self.sink.flush().await?;
        self.sink.seek(std::io::SeekFrom::Start(0)).await?;
        self.sink.write_all(&wav::header(self.data as u32)).await?;
        self.sink.seek(std::io::SeekFrom::End(0)).await?;
        self.sink.flush().await
    }
}

fn write_failed(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::StorageFull {
        format!("the disk is full; the recording stopped ({e})")
    } else {
        format!("writing the recording failed: {e}")
    }
}

/// Writes the recording from the bridge's frames until the queue ends;
/// returns how it ended and how many samples the file holds.
async fn record<W: AsyncWrite + AsyncSeek + Unpin>(
    sink: W,
    mut rx: mpsc::Receiver<Input>,
    max_samples: u64,
    overflowed: &AtomicBool,
) -> (End, u64) {
    let mut file = match WavFile::start(sink).await {
        Ok(f) => f,
        Err(e) => return (End::Failed(write_failed(&e)), 0),
    };
    let mut timeline = Timeline::new(MAX_AHEAD);
    let (mut left, mut right, mut decoded) = (Vec::new(), Vec::new(), Vec::new());
    let mut pending = Vec::with_capacity(wav::BYTES_PER_SECOND as usize * 2);
    let max_samples = max_samples.min(wav::MAX_DATA / u64::from(wav::BLOCK_ALIGN));
    let mut end = End::Complete;
    while let Some(input) = rx.recv().await {
        match input {
            Input::Callee(payload) => {
                decoded.clear();
                // Not base64: the bridge reports it (media_malformed); nothing to place.
                if B64.decode_vec(payload.as_bytes(), &mut decoded).is_ok() {
                    timeline.callee(&decoded);
                }
            }
            Input::Agent(ulaw) => {
                if let Err(e) = timeline.agent(&ulaw) {
                    end = End::Failed(format!(
                        "the agent's audio ran more than {} s ahead of what the callee had heard; the recording stopped",
                        e.limit / wav::SAMPLE_RATE as usize
                    ));
                    break;
                }
            }
            Input::Clear => timeline.clear(),
        }
        timeline.take(&mut left, &mut right);
        let room = max_samples.saturating_sub(timeline.written() - left.len() as u64) as usize;
        let full = left.len() > room;
        left.truncate(room);
        right.truncate(room);
        wav::push_stereo(&left, &right, &mut pending);
        if full {
            end = End::Failed(format!(
                "the recording reached its longest length ({} s); the rest of the call is not recorded",
                max_samples / u64::from(wav::SAMPLE_RATE)
            ));
            break;
        }
        if pending.len() >= wav::BYTES_PER_SECOND as usize {
            if let Err(e) = async {
                file.append(&pending).await?;
                file.patch().await
            }
            .await
            {
                return (End::Failed(write_failed(&e)), file.data / u64::from(wav::BLOCK_ALIGN));
            }
            pending.clear();
        }
    }
    if end == End::Complete && overflowed.load(Ordering::Acquire) {
        end = End::Failed(format!(
            "the recorder fell behind the call (more than {QUEUE} frames waiting: the disk is too slow); the recording stopped"
        ));
    }
    let last = async {
        file.append(&pending).await?;
        file.patch().await
    };
    if let Err(e) = last.await {
        end = End::Failed(write_failed(&e));
    }
    (end, file.data / u64::from(wav::BLOCK_ALIGN))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        B64.encode(bytes)
    }

    async fn run(inputs: Vec<Input>, max_samples: u64) -> (End, u64, Vec<u8>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        for i in inputs {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        let mut sink = Cursor::new(Vec::new());
        let (end, samples) = record(&mut sink, rx, max_samples, &AtomicBool::new(false)).await;
        (end, samples, sink.into_inner())
    }

    #[tokio::test]
    async fn a_call_is_written_as_it_was_heard_and_the_header_matches() {
        let mut inputs = vec![Input::Agent(vec![0x20; 400])];
        for _ in 0..5 {
            inputs.push(Input::Callee(b64(&[0x10; 160])));
        }
        inputs.push(Input::Clear);
        inputs.push(Input::Callee(b64(&[0x11; 160])));
        let (end, samples, file) = run(inputs, 1 << 20).await;
        assert_eq!((end, samples), (End::Complete, 960));
        let d = wav::decode(&file).unwrap();
        let lin = crate::audio::ulaw_to_linear;
        assert_eq!(d.left[..800], vec![lin(0x10); 800][..]);
        assert_eq!(d.left[800..], vec![lin(0x11); 160][..]);
        assert_eq!(
            d.right[..400],
            vec![lin(0x20); 400][..],
            "all 400 played before the clear"
        );
        assert!(d.right[400..].iter().all(|s| *s == 0));
    }

    #[tokio::test]
    async fn a_long_call_is_written_in_one_second_pieces_and_described_whole() {
        let inputs = (0..(50 * 3 + 10)).map(|_| Input::Callee(b64(&[0x10; 160]))).collect();
        let (end, samples, file) = run(inputs, 1 << 20).await;
        assert_eq!((end, samples), (End::Complete, 160 * 160));
        assert_eq!(wav::decode(&file).unwrap().left.len(), 160 * 160);
    }

    #[tokio::test]
    async fn the_longest_length_ends_the_recording_with_a_reason() {
        let inputs = (0..10).map(|_| Input::Callee(b64(&[0x10; 160]))).collect();
        let (end, samples, file) = run(inputs, 1000).await;
        assert!(
            matches!(&end, End::Failed(why) if why.contains("longest length")),
            "{end:?}"
        );
        assert_eq!(samples, 1000);
        assert_eq!(wav::decode(&file).unwrap().left.len(), 1000);
    }

    /// Takes `room` bytes, then fails as a full disk does.
    struct FullDisk {
        inner: Cursor<Vec<u8>>,
        room: usize,
    }

    impl AsyncWrite for FullDisk {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let pos = self.inner.position() as usize;
            if pos + buf.len() > self.room {
                return Poll::Ready(Err(std::io::Error::from(std::io::ErrorKind::StorageFull)));
            }
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncSeek for FullDisk {
        fn start_seek(mut self: Pin<&mut Self>, pos: std::io::SeekFrom) -> std::io::Result<()> {
            Pin::new(&mut self.inner).start_seek(pos)
        }
        fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
            Pin::new(&mut self.inner).poll_complete(cx)
        }
    }

    #[tokio::test]
    async fn a_full_disk_ends_the_recording_and_keeps_what_was_written_playable() {
        let (tx, rx) = mpsc::channel(QUEUE);
        for _ in 0..(50 * 3) {
            tx.send(Input::Callee(b64(&[0x10; 160]))).await.unwrap();
        }
        drop(tx);
        // Room for the header and a bit over one second of audio.
        let mut disk = FullDisk {
            inner: Cursor::new(Vec::new()),
            room: wav::HEADER_LEN + wav::BYTES_PER_SECOND as usize + 5000,
        };
        let (end, samples) = record(&mut disk, rx, 1 << 20, &AtomicBool::new(false)).await;
        assert!(
            matches!(&end, End::Failed(why) if why.starts_with("the disk is full")),
            "{end:?}"
        );
        let d = wav::decode(disk.inner.get_ref()).unwrap();
        assert_eq!(d.left.len() as u64, samples);
        assert!(samples >= 8000, "the first second was written and described");
    }

    #[tokio::test]
    async fn a_queue_that_overflowed_is_reported_as_a_recorder_that_fell_behind() {
        let (tx, rx) = mpsc::channel(QUEUE);
        tx.send(Input::Callee(b64(&[0x10; 160]))).await.unwrap();
        drop(tx);
        let (end, samples) = record(Cursor::new(Vec::new()), rx, 1 << 20, &AtomicBool::new(true)).await;
        assert!(
            matches!(&end, End::Failed(why) if why.contains("fell behind")),
            "{end:?}"
        );
        assert_eq!(samples, 160);
    }

    #[tokio::test]
    async fn the_sweep_deletes_expired_recordings_only_and_says_so_on_the_call() {
        use crate::call::{CallRecord, CallStatus};
        use crate::config::DatabaseLocation;
        use crate::store::Store;
        let hub = CallHub::new(
            Store::open(&DatabaseLocation::Memory).await.unwrap(),
            CancellationToken::new(),
        );
        let dir = std::env::temp_dir().join(format!("va-sweep-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let recordings = Recordings::new(dir.clone(), Duration::from_secs(3600));
        let complete = RecordingInfo {
            state: RecordingState::Complete,
            error: String::new(),
            duration_ms: 5000,
            file: true,
        };
        let ended = |recording: &RecordingInfo| CallRecord {
            status: CallStatus::Completed,
            recording: Some(recording.clone()),
            event_count: 7,
            ..CallRecord::for_tests()
        };
        let (old, fresh) = (ended(&complete), ended(&complete));
        hub.create(old.clone()).await.unwrap();
        hub.create(fresh.clone()).await.unwrap();
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        let age = |path: &Path| {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(two_hours_ago)
                .unwrap();
        };
        for rec in [&old, &fresh] {
            std::fs::write(recordings.path(&rec.call_id), b"RIFF").unwrap();
        }
        age(&recordings.path(&old.call_id));
        // Not ours: left alone however old.
        std::fs::write(dir.join("notes.txt"), b"keep").unwrap();
        age(&dir.join("notes.txt"));

        assert_eq!(recordings.sweep(&hub).await, 1);
        assert!(!recordings.path(&old.call_id).exists());
        assert!(recordings.path(&fresh.call_id).exists());
        assert!(dir.join("notes.txt").exists());
        let swept = hub.get(&old.call_id).await.unwrap();
        let info = swept.recording.unwrap();
        assert_eq!(
            (info.state, info.file, info.duration_ms),
            (RecordingState::Deleted, false, 5000)
        );
        assert_eq!(info.url(&old.call_id), None, "nothing to link any more");
        assert_eq!(swept.event_count, 7, "an ended call's log gets no event after its end");
        assert_eq!(hub.get(&fresh.call_id).await.unwrap().recording, Some(complete));
        assert_eq!(
            Recordings::new(dir.clone(), Duration::ZERO).sweep(&hub).await,
            0,
            "0 keeps for ever"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
