"""The framing codec for the parent <-> worker pipes. Sans-I/O: bytes in, messages out.

Theory of operation
-------------------
Every message travels as one *frame*::

    header (24 bytes, network byte order, struct "!4sBBHQQ")
        magic      4s  b"PLT1"; anything else means the stream is not ours or lost sync
        kind       B   a MessageKind (0 is never valid, so zeroed memory is refused)
        flags      B   reserved, must be 0 (a newer peer would set bits we cannot read)
        nbuffers   H   how many buffer descriptors open the body
        call_id    Q   which call the message belongs to (0 for READY / SHUTDOWN)
        body_len   Q   bytes after the header: descriptors + payload
    body
        nbuffers descriptors, each "!QQB" (offset, size, BufferKind)
        payload    opaque bytes (a pickle produced elsewhere), up to the end of the body

The descriptors locate the pickle protocol 5 out-of-band buffers of the payload inside
one shared-memory segment that travels beside the frame (as a file descriptor passed
with the frame's first byte, see ``_channel.py``); the big bytes never pass through the
stream. The codec only checks that each descriptor is well formed; the receiver checks
them against the segment it got.

This module does no I/O and no pickling. ``encode`` turns a :class:`Message` into bytes
(or into chunks for ``os.writev``, so a large payload is not copied), and a
:class:`Decoder` is fed whatever the pipe produced, split anywhere, and hands back
complete messages.

Guarantees of the decoder:

- *One copy.* As soon as a header is complete the decoder allocates one ``bytearray``
  for the whole body and copies incoming bytes straight into it; the message's payload
  is a read-only ``memoryview`` of that array. A 64 MiB payload is copied exactly once,
  from the caller's chunk into its body, however the stream was split. (Rejected:
  accumulating everything in one growing buffer and slicing messages out of it, which
  copies a large payload again on every resize and once more on the way out.)
- *Bounded memory.* A header announcing a body above ``max_frame_size`` is refused
  before anything is allocated for it; otherwise the decoder holds at most one partial
  frame plus the complete messages it was fed and not yet asked for.
- *Errors in stream order.* Garbage is refused with a :class:`WireError` naming what was
  wrong. ``feed`` never raises for the bytes it is given: messages that arrived before
  the garbage are delivered first, then ``next_message`` (and iteration) raise. Once
  failed, the decoder stays failed: a byte stream has no way to resynchronise.
- ``eof()`` says the stream ended; it raises if the stream stopped inside a frame.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER",
    "MAGIC",
    "MAX_BUFFERS",
    "BufferKind",
    "BufferRef",
    "Decoder",
    "Message",
    "MessageKind",
    "Payload",
    "WireError",
    "encode",
    "encode_chunks",
]

MAGIC = b"PLT1"
HEADER = struct.Struct("!4sBBHQQ")
_DESCRIPTOR = struct.Struct("!QQB")
FAST_FRAME_SIZE = 1 << 16  # a frame this small that arrives whole is copied out at once
DEFAULT_MAX_FRAME_SIZE = 1 << 30  # 1 GiB; big buffers go through shared memory anyway
MAX_BUFFERS = (1 << 16) - 1
_U64 = (1 << 64) - 1

Payload = bytes | bytearray | memoryview


class WireError(ValueError):
    """The byte stream is not a valid sequence of plait frames (or a message cannot be one)."""


class MessageKind(enum.IntEnum):
    """What a frame carries. 0 is deliberately unused."""

    CALL = 1  # parent -> worker: run this pickled call
    RESULT = 2  # worker -> parent: the pickled return value
    ERROR = 3  # worker -> parent: the pickled exception and remote traceback
    INIT = 4  # parent -> worker, first: sys.path, the initializer and its arguments
    READY = 5  # worker -> parent: initialised, waiting for calls
    SHUTDOWN = 6  # parent -> worker: exit cleanly


_KINDS = {kind.value: kind for kind in MessageKind}


class BufferKind(enum.IntEnum):
    """What the receiver makes of a buffer (the object the pickle expects there)."""

    VIEW = 0  # a view of the mapped segment (numpy arrays, memoryviews): no copy
    BYTES = 1  # a bytes object read out of the segment
    BYTEARRAY = 2  # a bytearray read out of the segment


@dataclass(frozen=True, slots=True)
class BufferRef:
    """Where one pickle protocol 5 out-of-band buffer lies in the message's segment,
    and what the receiver should make of it."""

    offset: int
    size: int
    kind: BufferKind = BufferKind.VIEW

    def __post_init__(self) -> None:
        for field in ("offset", "size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"BufferRef.{field} must be an int, got {value!r}")
            if not 0 <= value <= _U64:
                raise ValueError(f"BufferRef.{field} must be in 0..2**64-1, got {value}")
        if self.offset + self.size > _U64:
            raise ValueError(
                f"BufferRef ends past 2**64-1 (offset {self.offset} + size {self.size})"
            )
        if not isinstance(self.kind, BufferKind):
            raise TypeError(f"BufferRef.kind must be a BufferKind, got {self.kind!r}")

    @property
    def end(self) -> int:
        return self.offset + self.size


_BUFFER_KINDS = {kind.value: kind for kind in BufferKind}


@dataclass(frozen=True, slots=True)
class Message:
    """One frame's worth of content.

    ``payload`` is opaque; a decoded message's payload is a read-only ``memoryview``
    (compare it with ``==`` or ``bytes(...)``; it is equal to the bytes that were sent).
    """

    kind: MessageKind
    call_id: int
    payload: Payload = b""
    buffers: tuple[BufferRef, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.kind, MessageKind):
            raise TypeError(f"Message.kind must be a MessageKind, got {self.kind!r}")
        if isinstance(self.call_id, bool) or not isinstance(self.call_id, int):
            raise TypeError(f"Message.call_id must be an int, got {self.call_id!r}")
        if not 0 <= self.call_id <= _U64:
            raise ValueError(f"Message.call_id must be in 0..2**64-1, got {self.call_id}")
        if not isinstance(self.payload, bytes | bytearray | memoryview):
            raise TypeError(
                "Message.payload must be bytes, bytearray or memoryview, "
                f"got {type(self.payload).__name__}"
            )
        buffers = tuple(self.buffers)
        for ref in buffers:
            if not isinstance(ref, BufferRef):
                raise TypeError(f"Message.buffers must hold BufferRef objects, got {ref!r}")
        if len(buffers) > MAX_BUFFERS:
            raise ValueError(
                f"a message can carry at most {MAX_BUFFERS} buffers, got {len(buffers)}"
            )
        object.__setattr__(self, "buffers", buffers)

    @classmethod
    def trusted(
        cls,
        kind: MessageKind,
        call_id: int,
        payload: Payload = b"",
        buffers: tuple[BufferRef, ...] = (),
    ) -> Message:
        """Make a message from fields known to be valid, skipping the checks (the
        decoder's output, and messages the pool builds; it is on the hot path)."""
        message = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(message, "kind", kind)
        setattr_(message, "call_id", call_id)
        setattr_(message, "payload", payload)
        setattr_(message, "buffers", buffers)
        return message


def _payload_view(payload: Payload) -> memoryview:
    view = memoryview(payload)
    if not view.c_contiguous:
        raise WireError("Message.payload must be a contiguous buffer; pass bytes(payload)")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def encode_chunks(
    message: Message, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> list[bytes | memoryview]:
    """Encode ``message`` as chunks to write in order (``os.writev``), without copying
    the payload: the header and descriptors, then the payload (omitted when empty)."""
    parts = [b""]
    parts.extend(_DESCRIPTOR.pack(ref.offset, ref.size, ref.kind) for ref in message.buffers)
    payload = _payload_view(message.payload)
    body_len = sum(map(len, parts)) + payload.nbytes
    if body_len > max_frame_size:
        raise WireError(
            f"{message.kind.name} message for call {message.call_id} needs a "
            f"{body_len}-byte frame, above the {max_frame_size}-byte limit; large buffers "
            "must travel out of band through shared memory"
        )
    parts[0] = HEADER.pack(MAGIC, message.kind, 0, len(message.buffers), message.call_id, body_len)
    head = b"".join(parts)
    return [head, payload] if payload.nbytes else [head]


def encode(message: Message, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Encode ``message`` as one frame. Copies the payload; see :func:`encode_chunks`."""
    return b"".join(encode_chunks(message, max_frame_size=max_frame_size))


class Decoder:
    """Turns a byte stream, fed in pieces of any size, into :class:`Message` objects.

    Typical use::

        decoder.feed(os.read(fd, 65536))   # b"" is fine; call decoder.eof() at EOF
        for message in decoder:
            ...
    """

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if isinstance(max_frame_size, bool) or not isinstance(max_frame_size, int):
            raise TypeError(f"max_frame_size must be an int, got {max_frame_size!r}")
        if not 0 < max_frame_size <= _U64:
            raise ValueError(f"max_frame_size must be in 1..2**64-1, got {max_frame_size}")
        self._max = max_frame_size
        # Invariant: exactly one of these describes the frame in progress. While
        # self._body is None we are reading a header (len(self._head) < HEADER.size);
        # otherwise the header is parsed into self._frame and self._filled bytes of
        # self._body have arrived (self._filled < len(self._body)).
        self._head = bytearray()
        self._body: memoryview | None = None  # over a bytearray of the body's size
        self._filled = 0
        self._frame: tuple[MessageKind, int, int] = (MessageKind.CALL, 0, 0)
        self._ready: deque[Message] = deque()
        self._error: WireError | None = None  # raised once self._ready is drained
        self._eof = False

    @property
    def max_frame_size(self) -> int:
        return self._max

    @property
    def in_frame(self) -> bool:
        """True if the stream stopped part-way through a frame."""
        return self._body is not None or bool(self._head)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes read from the stream. Copies them at most once, into a frame body.

        Raises WireError only if the decoder already failed or ``eof()`` was called;
        garbage in ``data`` is reported by ``next_message`` after the messages before it.
        """
        if self._eof:
            raise WireError("feed() after eof(): the stream has already ended")
        if self._error is not None:
            raise WireError(f"the stream is already broken: {self._error}")
        view = memoryview(data).cast("B")
        try:
            self._consume(view)
        except WireError as exc:
            self._error = exc
            self._head.clear()
            self._body = None

    def next_message(self) -> Message | None:
        """The next complete message, or None if more bytes are needed.

        Raises WireError when the stream turns out to be broken or truncated.
        """
        if self._ready:
            return self._ready.popleft()
        if self._error is not None:
            raise self._error
        return None

    def __iter__(self) -> Iterator[Message]:
        """Yield the complete messages available now."""
        while (message := self.next_message()) is not None:
            yield message

    def eof(self) -> None:
        """Record that the stream ended. Complete messages stay available.

        Raises WireError if the stream is broken or ended inside a frame.
        """
        if self._error is None and not self._eof and self.in_frame:
            if self._body is None:
                got, want, what = len(self._head), HEADER.size, "header"
            else:
                got, want, what = self._filled, len(self._body), "body"
            kind, call_id, _ = self._frame
            where = f" of a {kind.name} frame for call {call_id}" if what == "body" else ""
            self._error = WireError(
                f"stream ended inside a frame: got {got} of {want} {what} bytes{where}; "
                "the peer died or closed its end mid-message"
            )
            self._head.clear()
            self._body = None
        self._eof = True
        if self._error is not None:
            raise self._error

    # -- parsing ---------------------------------------------------------------

    def _consume(self, view: memoryview) -> None:
        pos, end = 0, len(view)
        while pos < end:
            body = self._body
            if body is None and not self._head and end - pos >= HEADER.size:
                # Fast path: a whole header here. If the whole (small) frame is here
                # too, copy its body out at once; else start it as usual.
                kind, call_id, nbuffers, body_len = self._parse_header(view, pos)
                start = pos + HEADER.size
                if body_len <= FAST_FRAME_SIZE and end - start >= body_len:
                    self._frame = (kind, call_id, nbuffers)
                    self._finish_frame(memoryview(bytes(view[start : start + body_len])))
                    pos = start + body_len
                    continue
                self._head += view[pos:start]
                pos = start
                self._start_frame()
            elif body is None:
                take = min(HEADER.size - len(self._head), end - pos)
                self._head += view[pos : pos + take]
                pos += take
                if not self._head.startswith(MAGIC[: len(self._head)]):
                    self._bad_magic()
                if len(self._head) == HEADER.size:
                    self._start_frame()
            else:
                take = min(len(body) - self._filled, end - pos)
                body[self._filled : self._filled + take] = view[pos : pos + take]
                self._filled += take
                pos += take
                if self._filled == len(body):
                    self._finish_frame()

    def _bad_magic(self) -> None:
        raise WireError(
            f"bad magic {bytes(self._head[: len(MAGIC)])!r}, expected {MAGIC!r}: the peer "
            "is not a plait worker, or something else wrote to the pipe and the stream "
            "lost sync"
        )

    def _start_frame(self) -> None:
        kind, call_id, nbuffers, body_len = self._parse_header(self._head, 0)
        self._head.clear()
        self._frame = (kind, call_id, nbuffers)
        # Writes go through a memoryview: assigning a memoryview to a bytearray slice
        # would first copy it into a temporary bytearray.
        self._body = memoryview(bytearray(body_len))
        self._filled = 0
        if body_len == 0:
            self._finish_frame()

    def _parse_header(
        self, data: bytes | bytearray | memoryview, pos: int
    ) -> tuple[MessageKind, int, int, int]:
        """Check the header at ``data[pos:]``; return (kind, call_id, nbuffers, body_len)."""
        magic, kind_byte, flags, nbuffers, call_id, body_len = HEADER.unpack_from(data, pos)
        if magic != MAGIC:
            self._head[:] = data[pos : pos + len(MAGIC)]
            self._bad_magic()
        kind = _KINDS.get(kind_byte)
        if kind is None:
            raise WireError(
                f"unknown message kind {kind_byte} in frame for call {call_id}; valid kinds "
                f"are {', '.join(f'{k.value} ({k.name})' for k in MessageKind)}"
            )
        if flags:
            raise WireError(
                f"{kind.name} frame for call {call_id} sets unknown flags {flags:#04x}; "
                "parent and worker run different plait versions"
            )
        if body_len > self._max:
            raise WireError(
                f"{kind.name} frame for call {call_id} announces a {body_len}-byte body, "
                f"above max_frame_size={self._max}; refusing it before reading it"
            )
        if body_len < nbuffers * _DESCRIPTOR.size:
            raise WireError(
                f"{kind.name} frame for call {call_id} announces {nbuffers} buffers but "
                f"its body is only {body_len} bytes"
            )
        return kind, call_id, nbuffers, body_len

    def _finish_frame(self, body: memoryview | None = None) -> None:
        if body is None:
            body = self._body
            assert body is not None
            self._body = None
        kind, call_id, nbuffers = self._frame
        pos = nbuffers * _DESCRIPTOR.size  # (_start_frame checked that they fit)
        buffers: list[BufferRef] = []
        for index in range(nbuffers):
            offset, size, kind_byte = _DESCRIPTOR.unpack_from(body, index * _DESCRIPTOR.size)
            if offset + size > _U64:
                raise WireError(
                    f"{kind.name} frame for call {call_id}: buffer descriptor {index} ends "
                    f"past 2**64-1 (offset {offset} + size {size})"
                )
            buffer_kind = _BUFFER_KINDS.get(kind_byte)
            if buffer_kind is None:
                raise WireError(
                    f"{kind.name} frame for call {call_id}: buffer descriptor {index} has "
                    f"unknown kind {kind_byte}"
                )
            buffers.append(BufferRef(offset, size, buffer_kind))
        payload: Payload = body[pos:].toreadonly() if pos < len(body) else b""
        self._ready.append(Message.trusted(kind, call_id, payload, tuple(buffers)))
