"""A thin typed helper over the generated stubs of voiceagent.v1.VoiceAgentService.

    from voice_agent_client import VoiceAgentClient, VoiceAgentError

    with VoiceAgentClient("127.0.0.1:8000", token=None) as client:
        placed = client.place_call("+15550100")
        for event in client.watch(placed.call_id):   # resumes after the last sequence if the stream drops
            print(event.sequence, event.WhichOneof("kind"))
        call = client.get_call(placed.call_id)
        print(call.status_name, call.from_)           # `from` is a Python keyword: see Call.from_

Everything the generated code offers stays reachable: `voiceagent.v1.voice_agent_pb2` (messages, enums) and
`voiceagent.v1.voice_agent_pb2_grpc.VoiceAgentServiceStub`; `Call.proto` is the message itself.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
from google.protobuf import duration_pb2
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from voiceagent.v1 import voice_agent_pb2 as pb
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc

__all__ = [
    "Call",
    "PlacedCall",
    "VoiceAgentClient",
    "VoiceAgentError",
    "TERMINAL_STATUSES",
    "pb",
]

#: Statuses after which a call never changes again.
TERMINAL_STATUSES = frozenset(
    {
        pb.CALL_STATUS_COMPLETED,
        pb.CALL_STATUS_BUSY,
        pb.CALL_STATUS_NO_ANSWER,
        pb.CALL_STATUS_CANCELED,
        pb.CALL_STATUS_FAILED,
    }
)

#: The ErrorInfo domain of this server's errors.
ERROR_DOMAIN = "voice-agent"

# Codes after which a dropped WatchCall stream is worth resuming (the CLI's rule).
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


class VoiceAgentError(Exception):
    """A failed RPC with the server's `google.rpc` error details.

    `reason` is the stable UPPER_SNAKE reason of the ErrorInfo (e.g. "INVALID_ARGUMENT", "TWILIO_ERROR",
    "CALL_NOT_FOUND"; empty when the server sent none, e.g. a transport failure), `metadata` its metadata
    (e.g. `provider_code`, `call_id`), `field_violations` the BadRequest's (field, description) pairs.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        domain: str = "",
        metadata: Optional[Mapping[str, str]] = None,
        field_violations: Sequence[Tuple[str, str]] = (),
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.field_violations: List[Tuple[str, str]] = list(field_violations)
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))

    @property
    def call_id(self) -> Optional[str]:
        """The call the error concerns, if any: for a PlaceCall the provider refused, the stored FAILED call."""
        return self.metadata.get("call_id")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "VoiceAgentError":
        """Reads the details out of `grpc-status-details-bin` (grpcio-status)."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        reason = domain = ""
        metadata: Dict[str, str] = {}
        violations: List[Tuple[str, str]] = []
        try:
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
        except ValueError:
            # The details disagree with the status code or message: keep what the status line says.
            status = None
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend((v.field, v.description) for v in bad.field_violations)
        return cls(code, message or "", reason, domain, metadata, violations)


@dataclass(frozen=True)
class PlacedCall:
    """What PlaceCall answered."""

    call_id: str
    provider_call_id: str
    status: int
    emulated: bool


@dataclass(frozen=True)
class Call:
    """A call record. `from_` is the proto's `from` (a Python keyword; on the message it is
    `getattr(call.proto, "from")`, and the generated .pyi leaves it out)."""

    proto: pb.Call = field(repr=False)

    @property
    def call_id(self) -> str:
        return self.proto.call_id

    @property
    def to(self) -> str:
        return self.proto.to

    @property
    def from_(self) -> str:
        return getattr(self.proto, "from")

    @property
    def status(self) -> int:
        return self.proto.status

    @property
    def status_name(self) -> str:
        """E.g. "CALL_STATUS_COMPLETED"."""
        return pb.CallStatus.Name(self.proto.status)

    @property
    def is_terminal(self) -> bool:
        return self.proto.status in TERMINAL_STATUSES

    @property
    def end_reason(self) -> str:
        return self.proto.end_reason

    @property
    def emulated(self) -> bool:
        return self.proto.emulated

    @property
    def event_count(self) -> int:
        return self.proto.event_count

    @property
    def created_at(self) -> _dt.datetime:
        return self.proto.created_at.ToDatetime(tzinfo=_dt.timezone.utc)

    @property
    def metadata(self) -> Dict[str, str]:
        return dict(self.proto.metadata)


Seconds = Union[int, float, _dt.timedelta]


def _duration(value: Seconds) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(value if isinstance(value, _dt.timedelta) else _dt.timedelta(seconds=value))
    return d


def _timestamp(value: _dt.datetime) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None:
        raise ValueError("give an aware datetime (e.g. datetime.now(timezone.utc)), not a naive one")
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(value)
    return t


class VoiceAgentClient:
    """A connection to one voice-agent server.

    `target` is `host:port`; `token` the server's API_TOKEN (sent as `authorization: Bearer …`);
    `credentials` makes the channel TLS (`grpc.ssl_channel_credentials()`), else it is cleartext h2c.
    Every method raises VoiceAgentError on a failed RPC.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:8000",
        *,
        token: Optional[str] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        timeout: float = 30.0,
    ) -> None:
        if credentials is not None:
            self._channel = grpc.secure_channel(target, credentials)
        else:
            self._channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.VoiceAgentServiceStub(self._channel)
        self._metadata: Tuple[Tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "VoiceAgentClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, method, request):  # type: ignore[no-untyped-def]
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as e:
            raise VoiceAgentError.from_rpc_error(e) from None

    def server_info(self) -> pb.GetServerInfoResponse:
        return self._unary(self.stub.GetServerInfo, pb.GetServerInfoRequest())

    def place_call(
        self,
        to: str,
        *,
        backend: int = pb.BACKEND_UNSPECIFIED,
        instructions: str = "",
        voice: str = "",
        greeting: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        max_duration: Optional[Seconds] = None,
        record: Optional[bool] = None,
    ) -> PlacedCall:
        """Places a call. `greeting=None` is the server's default greeting, "" none at all. `record=None`
        is the server's RECORD_CALLS; a recorded call's `recording_url` is on its record (GetCall). A call the
        provider refused raises VoiceAgentError whose `call_id` names the stored (FAILED) call."""
        request = pb.PlaceCallRequest(
            to=to, backend=backend, instructions=instructions, voice=voice, metadata=dict(metadata or {})
        )
        if greeting is not None:
            request.greeting = greeting
        if max_duration is not None:
            request.max_duration.CopyFrom(_duration(max_duration))
        if record is not None:
            request.record = record
        r = self._unary(self.stub.PlaceCall, request)
        return PlacedCall(r.call_id, r.provider_call_id, r.status, r.emulated)

    def get_call(self, call_id: str) -> Call:
        return Call(self._unary(self.stub.GetCall, pb.GetCallRequest(call_id=call_id)).call)

    def hang_up(self, call_id: str) -> Call:
        """Ends the call (cancels it when not answered yet); the record turns terminal once the provider
        confirms (watch it to see that)."""
        return Call(self._unary(self.stub.HangUpCall, pb.HangUpCallRequest(call_id=call_id)).call)

    def list_calls(
        self,
        *,
        statuses: Sequence[int] = (),
        to: str = "",
        created_after: Optional[_dt.datetime] = None,
        created_before: Optional[_dt.datetime] = None,
        oldest_first: bool = False,
        page_size: int = 0,
    ) -> Iterator[Call]:
        """Every call the filters select, page after page (the page token is handled here)."""
        request = pb.ListCallsRequest(
            page_size=page_size,
            statuses=list(statuses),
            to=to,
            order=pb.LIST_CALLS_ORDER_OLDEST_FIRST if oldest_first else pb.LIST_CALLS_ORDER_UNSPECIFIED,
        )
        if created_after is not None:
            request.created_after.CopyFrom(_timestamp(created_after))
        if created_before is not None:
            request.created_before.CopyFrom(_timestamp(created_before))
        while True:
            page = self._unary(self.stub.ListCalls, request)
            for call in page.calls:
                yield Call(call)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def watch(self, call_id: str, *, after_sequence: int = 0, reconnect_tries: int = 5) -> Iterator[pb.CallEvent]:
        """The call's events after `after_sequence`, in order, until the terminal status event.

        When the stream drops (a retryable code), it is opened again with `after_sequence` = the last
        sequence seen, after a short backoff, up to `reconnect_tries` times in a row; no event is seen
        twice or skipped. A refusal (NOT_FOUND, UNAUTHENTICATED, …) raises VoiceAgentError at once.
        """
        last = after_sequence
        failures = 0
        while True:
            stream = self.stub.WatchCall(
                pb.WatchCallRequest(call_id=call_id, after_sequence=last), metadata=self._metadata
            )
            try:
                for response in stream:
                    event = response.event
                    if event.sequence <= last:
                        continue  # already delivered before a reconnect
                    last = event.sequence
                    failures = 0
                    yield event
                    if event.WhichOneof("kind") == "status" and event.status.status in TERMINAL_STATUSES:
                        stream.cancel()
                        return
                # The server ends the stream only after the terminal event; an early OK end is a drop.
                error: Optional[VoiceAgentError] = VoiceAgentError(
                    grpc.StatusCode.UNAVAILABLE, "the stream ended before the call did"
                )
            except grpc.RpcError as e:
                error = VoiceAgentError.from_rpc_error(e)
                if error.code not in _RETRYABLE:
                    raise error from None
            finally:
                stream.cancel()
            failures += 1
            if failures > reconnect_tries:
                raise error
            time.sleep(min(0.25 * 2 ** (failures - 1), 4.0))
