"""The helper against the real server binary: started on 127.0.0.1 with PORT=0, its built-in Twilio and AI
emulators, a temporary SQLite file and an API token. Run by tests/run.sh (see clients/python/README.md):

    VOICE_AGENT_SERVER_BIN=target/debug/voice-agent-server python -m unittest discover -s tests -v
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import unittest
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc

from voice_agent_client import Call, VoiceAgentClient, VoiceAgentError, pb

REPO = Path(__file__).resolve().parents[3]
TOKEN = "python-client-test-token"


class Server:
    """The real server in its own process; its log is kept for failure messages."""

    def __init__(self) -> None:
        binary = str(Path(os.environ.get("VOICE_AGENT_SERVER_BIN", REPO / "target" / "debug" / "voice-agent-server")).resolve())
        if not Path(binary).exists():
            raise RuntimeError(f"no server binary at {binary}: cargo build -p voice-agent-server first")
        self.dir = tempfile.TemporaryDirectory()
        # Only what this test sets: no credentials from the caller's environment or a .env (cwd is the
        # temporary directory), so every call goes to the emulators.
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env.update(
            PORT="0",
            HOST="127.0.0.1",
            DATABASE_URL=f"sqlite://{self.dir.name}/calls.db",
            API_TOKEN=TOKEN,
            RUST_LOG="info",
        )
        self.proc = subprocess.Popen(
            [binary],
            cwd=self.dir.name,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.log: list[str] = []
        found = threading.Event()
        self.target = ""

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.append(line)
                m = re.search(r"listening on http://([0-9.]+:[0-9]+)", line)
                if m and not self.target:
                    self.target = m.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(60):
            self.stop()
            raise RuntimeError("the server did not start:\n" + "".join(self.log))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.dir.cleanup()


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of the server whose connections the test can cut, as a network
    failure would: the client sees its stream break and must reconnect."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.connections = 0
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.connections += 1
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def cut(self) -> None:
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.open = []

    def close(self) -> None:
        self.listener.close()
        self.cut()


class LiveServerTest(unittest.TestCase):
    server: Server
    client: VoiceAgentClient

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = Server()
        cls.client = VoiceAgentClient(cls.server.target, token=TOKEN)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()
        cls.server.stop()

    def log_tail(self) -> str:
        return "".join(self.server.log[-40:])

    def test_an_emulated_call_is_placed_and_watched_to_completed(self) -> None:
        info = self.client.server_info()
        self.assertTrue(info.telephony_emulated)
        placed = self.client.place_call("+15550199", metadata={"client": "python"}, max_duration=120)
        self.assertTrue(placed.call_id.startswith("call_"), placed)
        self.assertTrue(placed.emulated)
        events = list(self.client.watch(placed.call_id))
        statuses = [e.status.status for e in events if e.WhichOneof("kind") == "status"]
        self.assertEqual(statuses[-1], pb.CALL_STATUS_COMPLETED, self.log_tail())
        self.assertIn(pb.CALL_STATUS_IN_PROGRESS, statuses)
        agent = [e.transcript.text for e in events if e.WhichOneof("kind") == "transcript"]
        self.assertTrue(agent, "the conversation had no transcript")
        self.assertEqual([e.sequence for e in events], list(range(1, len(events) + 1)), "gapless from 1")

        call = self.client.get_call(placed.call_id)
        self.assertEqual(call.status_name, "CALL_STATUS_COMPLETED")
        self.assertTrue(call.is_terminal)
        self.assertEqual(call.event_count, len(events))
        self.assertEqual(call.metadata, {"client": "python"})
        # `from` is a keyword: the helper's from_ and getattr on the message agree.
        self.assertRegex(call.from_, r"^\+[0-9]{8,15}$")
        self.assertEqual(call.from_, getattr(call.proto, "from"))

        # Resuming: after_sequence gives exactly the rest, as a reconnecting watcher would get it.
        middle = len(events) // 2
        rest = list(self.client.watch(placed.call_id, after_sequence=middle))
        self.assertEqual([e.sequence for e in rest], [e.sequence for e in events[middle:]])
        self.assertEqual(rest[-1], events[-1])

    def test_a_dropped_watch_reconnects_and_resumes_without_gaps(self) -> None:
        proxy = CuttableProxy(self.server.target)
        self.addCleanup(proxy.close)
        with VoiceAgentClient(proxy.address, token=TOKEN) as client:
            placed = client.place_call("+15550199")
            seen = []
            for event in client.watch(placed.call_id):
                seen.append(event.sequence)
                if len(seen) == 2:
                    proxy.cut()  # the network drops under the stream
        self.assertGreaterEqual(proxy.connections, 2, "the helper reconnected")
        self.assertEqual(seen, list(range(1, len(seen) + 1)), "no event skipped or repeated")
        call = self.client.get_call(placed.call_id)
        self.assertEqual(call.status_name, "CALL_STATUS_COMPLETED")
        self.assertEqual(seen[-1], call.event_count)

    def test_a_refused_call_names_the_stored_call_and_the_providers_code(self) -> None:
        with self.assertRaises(VoiceAgentError) as caught:
            self.client.place_call("+15005550001")
        e = caught.exception
        self.assertEqual(e.code, grpc.StatusCode.INVALID_ARGUMENT, e)
        self.assertEqual(e.reason, "TWILIO_ERROR")
        self.assertEqual(e.domain, "voice-agent")
        self.assertEqual(e.metadata.get("provider_code"), "21211")
        self.assertEqual(e.metadata.get("code"), "twilio_21211")
        self.assertIsNotNone(e.call_id)
        stored = self.client.get_call(e.call_id or "")
        self.assertEqual(stored.status, pb.CALL_STATUS_FAILED)
        listed = list(self.client.list_calls(statuses=[pb.CALL_STATUS_FAILED], to="+15005550001"))
        self.assertIn(e.call_id, [c.call_id for c in listed])
        self.assertTrue(all(c.to == "+15005550001" and c.status == pb.CALL_STATUS_FAILED for c in listed))

    def test_bad_input_names_the_field(self) -> None:
        with self.assertRaises(VoiceAgentError) as caught:
            self.client.place_call("5550100")
        e = caught.exception
        self.assertEqual((e.code, e.reason), (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"))
        self.assertEqual([f for f, _ in e.field_violations], ["to"])
        with self.assertRaises(VoiceAgentError) as caught:
            now = datetime.now(timezone.utc)
            list(self.client.list_calls(created_after=now, created_before=now - timedelta(hours=1)))
        self.assertEqual([f for f, _ in caught.exception.field_violations], ["created_before"])
        with self.assertRaises(VoiceAgentError) as caught:
            self.client.get_call("call_" + "0" * 32)
        self.assertEqual((caught.exception.code, caught.exception.reason), (grpc.StatusCode.NOT_FOUND, "CALL_NOT_FOUND"))

    def test_the_token_is_required(self) -> None:
        with VoiceAgentClient(self.server.target) as anonymous:
            with self.assertRaises(VoiceAgentError) as caught:
                anonymous.server_info()
        self.assertEqual(caught.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(caught.exception.reason, "UNAUTHENTICATED")

    def test_hanging_up_a_ringing_call_cancels_it(self) -> None:
        placed = self.client.place_call("+15550103")  # rings, nobody answers
        events = self.client.watch(placed.call_id)
        for event in events:
            if event.WhichOneof("kind") == "status" and event.status.status == pb.CALL_STATUS_RINGING:
                break
        call = self.client.hang_up(placed.call_id)
        self.assertIsInstance(call, Call)
        last = None
        for event in events:
            last = event
        self.assertIsNotNone(last)
        assert last is not None
        self.assertEqual(last.status.status, pb.CALL_STATUS_CANCELED, self.log_tail())
        self.assertEqual(self.client.get_call(placed.call_id).status_name, "CALL_STATUS_CANCELED")


if __name__ == "__main__":
    sys.exit(unittest.main())
