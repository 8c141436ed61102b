"""Pickling for the process pool, and the shared-memory segment beside a frame.

Used by both ends: the pool (imported as ``plait._processes._serial``) and the worker
(which runs ``_worker.py`` as a script and imports this file as the top-level module
``_serial``, so that starting a worker does not import all of plait). For the same
reason nothing here may be pickled *by reference*: reduce functions are builtins.

Theory of operation
-------------------
*Pickling.* Calls, results and errors are pickled with ``cloudpickle`` at protocol 5, so
lambdas, closures and functions defined in ``__main__`` or inside functions travel by
value (their captured variables as they are at the moment of the call). A
``buffer_callback`` takes every out-of-band buffer of 1 MiB or more (``THRESHOLD``) out
of the pickle; smaller ones stay in it. numpy arrays offer their memory as out-of-band
buffers themselves; ``bytes``, ``bytearray`` and ``memoryview`` do not, so
:class:`_Pickler` reduces large ones to ``PickleBuffer`` objects (and makes every
``memoryview`` picklable, which pickle alone refuses). The C pickler does not let us
see ``bytes`` and ``bytearray`` objects, so :func:`_lift` first swaps the large ones
for markers it does let us see.

*The segment.* A message's out-of-band buffers are written, one after the other at
64-byte aligned offsets, into one anonymous shared-memory file (``memfd_create``; an
unlinked temporary file where that is missing), and its file descriptor travels over the
Unix socket with the frame (``SCM_RIGHTS``, attached to the frame's first byte). The
receiver maps it copy-on-write and unpickles against views of the mapping: a numpy array
arrives without a copy (and is writable, privately), ``bytes`` and ``bytearray`` are
copied once out of the mapping. The file has no name, so nothing can be left behind in
``/dev/shm``: the kernel frees it when the last descriptor and mapping are gone, and that
includes a crash of either side, or a descriptor still in flight in a socket that closes.
One segment per message (not one per buffer) because a message may carry thousands of
buffers and a single ``sendmsg`` can pass at most 253 descriptors on Linux.

*Inbox.* Descriptors arrive through ``recvmsg`` as ancillary data, before or with the
frame they belong to (Linux never lets one ``recvmsg`` read past a message that carries
descriptors, so two messages' descriptors cannot be confused). :class:`Inbox` keeps them
in a queue and hands each complete message that announces buffers the next descriptor.
"""

from __future__ import annotations

import array
import io
import mmap
import operator
import os
import pickle
import socket
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

if __package__:
    from ._wire import (
        DEFAULT_MAX_FRAME_SIZE,
        BufferKind,
        BufferRef,
        Decoder,
        Message,
        WireError,
        encode_chunks,
    )
else:  # running in a worker, as a top-level module
    from _wire import (  # type: ignore[import-not-found,no-redef]
        DEFAULT_MAX_FRAME_SIZE,
        BufferKind,
        BufferRef,
        Decoder,
        Message,
        WireError,
        encode_chunks,
    )

__all__ = [
    "MAX_PAYLOAD",
    "THRESHOLD",
    "Inbox",
    "check_size",
    "dumps",
    "dumps_inband",
    "explain_unpicklable",
    "layout",
    "loads",
    "new_segment_fd",
    "outgoing",
    "read_segment",
    "segment_writer",
    "unpicklable_call",
    "unsent",
]

THRESHOLD = 1 << 20  # out-of-band buffers this large go through shared memory
MAX_PAYLOAD = DEFAULT_MAX_FRAME_SIZE - (1 << 20)  # (room for the buffer descriptors)
ALIGN = 64
WRITE_CHUNK = 8 << 20  # write a segment in pieces this large (the pool checkpoints between)
RECV_SIZE = 64 * 1024
_FD_SIZE = array.array("i").itemsize
ANCILLARY_SPACE = socket.CMSG_SPACE(_FD_SIZE * 4)
RECV_FLAGS = getattr(socket, "MSG_CMSG_CLOEXEC", 0)

Buffer = tuple[pickle.PickleBuffer, "BufferKind"]
"""An out-of-band buffer and what the receiver must make of it."""


class _Big:
    """Stands for a large ``bytes`` or ``bytearray`` while pickling (see :func:`_lift`)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, plus large ``bytes``/``bytearray`` and every ``memoryview`` as
    pickle buffers (so that the large ones can go out of band)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # id(PickleBuffer) -> (what the receiver must make of it, the buffer), for the
        # buffers made here; the others (numpy's) are views.
        self.marked: dict[int, tuple[BufferKind, pickle.PickleBuffer]] = {}

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is _Big:
            data = obj.data
            buffer = pickle.PickleBuffer(data)
            if type(data) is bytes:
                # Out of band, the receiver puts a bytes object copied out of the
                # segment where this buffer was, and bytes() returns it as it is.
                self.marked[id(buffer)] = (BufferKind.BYTES, buffer)
                return bytes, (buffer,)
            # Item 0 of a 1-tuple holding the buffer: out of band, the bytearray the
            # receiver copied out of the segment, as it is (bytearray() would copy it
            # once more); in band, pickle's own copy of it.
            self.marked[id(buffer)] = (BufferKind.BYTEARRAY, buffer)
            return operator.getitem, ((buffer,), 0)
        if kind is memoryview:
            return _reduce_memoryview(obj)
        return super().reducer_override(obj)


_LIFT_DEPTH = 8
_LIFT_BUDGET = 10_000


def _lift(obj: Any, depth: int = _LIFT_DEPTH) -> Any:
    """``obj`` with its large ``bytes`` and ``bytearray`` replaced by :class:`_Big`
    markers.

    The C pickler never consults ``reducer_override`` for exact ``bytes`` and
    ``bytearray`` (nor for lists, tuples and dicts), so a large one can only be taken
    out of band by replacing it before pickling. This looks through the containers where arguments
    and results usually keep them -- tuples, lists and dict values, up to
    ``_LIFT_DEPTH`` containers deep in an argument or result and
    ``_LIFT_BUDGET`` items in all -- and copies only the
    containers on the way to a replaced one. A large ``bytes`` elsewhere (an
    attribute of an object) still travels, inside the pickle.
    """
    if not _has_big(obj, depth):
        return obj  # the usual case: nothing to replace, nothing copied
    return _lift_into(obj, depth, {}, [_LIFT_BUDGET])


def _lift_into(item: Any, depth: int, memo: dict[int, Any], budget: list[int]) -> Any:
    # (A module-level function: a recursive closure would be a reference cycle.)
    kind = type(item)
    if kind is bytes or kind is bytearray:
        if len(item) < THRESHOLD:
            return item
    elif (kind is not tuple and kind is not list and kind is not dict) or depth <= 0:
        return item
    key = id(item)
    if key in memo:
        return memo[key]
    if kind is bytes or kind is bytearray:
        memo[key] = big = _Big(item)  # (one marker per object: pickled once)
        return big
    memo[key] = item  # (a cycle back to it is left alone)
    budget[0] -= len(item)
    if budget[0] < 0:
        return item
    depth -= 1
    if kind is dict:
        changed = {
            k: v2 for k, v in item.items() if (v2 := _lift_into(v, depth, memo, budget)) is not v
        }
        result = {**item, **changed} if changed else item
    else:
        new = [_lift_into(element, depth, memo, budget) for element in item]
        if all(a is b for a, b in zip(new, item, strict=True)):
            result = item
        else:
            result = tuple(new) if kind is tuple else new
    memo[key] = result
    return result


def _reduce_memoryview(view: memoryview) -> Any:
    if not view.c_contiguous:
        view = memoryview(view.tobytes()).cast(view.format, view.shape)  # type: ignore[call-overload]
    if view.format == "B" and view.ndim == 1:
        if view.nbytes >= THRESHOLD:
            return memoryview, (pickle.PickleBuffer(view),)
        # Small: in-band, as bytes (read-only) or bytearray; memoryview() views that.
        return memoryview, ((view.tobytes() if view.readonly else bytearray(view)),)
    try:
        memoryview(b"").cast(view.format)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise pickle.PicklingError(
            f"cannot send a memoryview of format {view.format!r}: only the native "
            "single-character formats of the struct module can be rebuilt; send "
            "view.cast('B') or view.tobytes() instead"
        ) from None
    # The inner view (format "B") pickles through the branch above; cast() rebuilds.
    return memoryview.cast, (view.cast("B"), view.format, view.shape)


def _has_big(obj: Any, depth: int) -> bool:
    """Whether :func:`_lift` would replace something in ``obj`` (a quick scan)."""
    kind = type(obj)
    if kind is bytes or kind is bytearray:
        return len(obj) >= THRESHOLD
    if (kind is not tuple and kind is not list and kind is not dict) or depth <= 0:
        return False
    if len(obj) > _LIFT_BUDGET:
        return False
    for item in obj.values() if kind is dict else obj:
        inner = type(item)
        if inner is bytes or inner is bytearray:
            if len(item) >= THRESHOLD:
                return True
        elif (inner is tuple or inner is list or inner is dict) and _has_big(item, depth - 1):
            return True
    return False


class _Dumper(threading.local):
    """A pickler kept for reuse by each thread (making one costs more than a small
    dump), and the out-of-band buffers of the dump in progress."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.buffers: list[Buffer] = []
        self.pickler = _Pickler(self.out, protocol=5, buffer_callback=self._take)
        self.busy = False

    def _take(self, buffer: pickle.PickleBuffer) -> bool:
        with buffer.raw() as raw:
            if raw.nbytes < THRESHOLD:
                return True  # in band
        marked = self.pickler.marked.get(id(buffer))
        self.buffers.append((buffer, BufferKind.VIEW if marked is None else marked[0]))
        return False

    def dump(self, obj: Any) -> tuple[bytes, list[Buffer]]:
        if self.busy:  # re-entered (from a __reduce__): use a fresh one
            return _Dumper().dump(obj)
        self.busy = True
        out, pickler = self.out, self.pickler
        try:
            pickler.dump(obj)
            return out.getvalue(), self.buffers
        finally:
            # Keep nothing of obj alive between dumps.
            pickler.clear_memo()
            pickler.globals_ref.clear()
            pickler.marked.clear()
            out.seek(0)
            out.truncate()
            self.buffers = []
            self.busy = False


_dumper = _Dumper()


def dumps(obj: Any, *, depth: int = 0) -> tuple[bytes, list[Buffer]]:
    """Pickle ``obj``; return the pickle and its out-of-band buffers (each >= 1 MiB).
    ``depth``: how many levels of containers wrap the value whose large ``bytes`` are
    looked for (2 for a call: ``(fn, args)``). Raises what pickling raised (see
    :func:`explain_unpicklable`)."""
    return _dumper.dump(_lift(obj, _LIFT_DEPTH + depth))


def check_size(payload: bytes, what: str) -> None:
    """``ValueError`` if ``payload`` is too big to travel in one frame."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(
            f"{what} pickles to {len(payload)} bytes, above the {MAX_PAYLOAD}-byte limit of "
            "what travels through the pipe; large data should be bytes, bytearray, "
            "memoryview or numpy arrays (which travel through shared memory, whatever "
            "their size), or be split into several calls"
        )


def dumps_inband(obj: Any) -> bytes:
    """Pickle ``obj`` with every buffer inside the pickle (for small messages)."""
    out = io.BytesIO()
    _Pickler(out, protocol=5).dump(obj)
    return out.getvalue()


def loads(payload: bytes | bytearray | memoryview, buffers: list[Any]) -> Any:
    return pickle.loads(payload, buffers=buffers)


def explain_unpicklable(obj: Any, where: str, depth: int = 0) -> tuple[str, Any, str] | None:
    """Find the innermost part of ``obj`` that cannot be pickled: ``(path, part,
    reason)``, or None if ``obj`` pickles. ``where`` names ``obj`` in the path."""
    try:
        dumps(obj)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
    else:
        return None
    if depth < 8:
        for path, part in _parts(obj, where):
            found = explain_unpicklable(part, path, depth + 1)
            if found is not None:
                return found
    return where, obj, reason


def unpicklable_call(
    name: str, fn: Any, args: tuple[Any, ...], *, to: str, remedy: str
) -> pickle.PicklingError | None:
    """The error for a call ``name()`` that could not be sent ``to`` a worker because
    pickling failed: it names the part of ``fn`` or ``args`` that does not pickle, then
    gives ``remedy``. None if no part fails to pickle on its own."""
    found = explain_unpicklable(fn, f"the function {name}")
    for index, arg in enumerate(args):
        if found is not None:
            break
        found = explain_unpicklable(arg, f"argument {index + 1}")
    if found is None:
        return None
    path, part, reason = found
    return pickle.PicklingError(
        f"cannot send the call {name}() to {to}: {path} (a {type(part).__qualname__}) "
        f"cannot be pickled: {reason}. {remedy}"
    )


def _parts(obj: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, list | tuple | set | frozenset):
        if isinstance(obj, set | frozenset):
            obj = list(obj)
        for index, item in enumerate(obj[:1000]):
            yield f"{where}[{index}]", item
    elif isinstance(obj, dict):
        for count, (key, value) in enumerate(obj.items()):
            if count >= 1000:
                break
            yield f"{where}[{key!r}]", value
    else:
        closure = getattr(obj, "__closure__", None)
        code = getattr(obj, "__code__", None)
        if closure and code is not None:
            for name, cell in zip(code.co_freevars, closure, strict=False):
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                yield f"{where} (captured variable {name!r})", value
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict) and not isinstance(obj, type):
            for key, value in list(state.items())[:1000]:
                yield f"{where}.{key}", value


# -- the shared-memory segment ---------------------------------------------------------


def new_segment_fd(size: int) -> int:
    """An anonymous shared-memory file of ``size`` bytes (close-on-exec)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("plait-buffers", os.MFD_CLOEXEC)
    else:  # pragma: no cover - no memfd (macOS): an unlinked temporary file
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd = tempfile.mkstemp(prefix="plait-buffers-", dir=shm)[0]
        with open(fd, closefd=False):
            pass
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def layout(buffers: list[Buffer]) -> tuple[list[BufferRef], int]:
    """Where each buffer goes in the segment, and the segment's size."""
    refs = []
    offset = 0
    for buffer, kind in buffers:
        with buffer.raw() as raw:
            size = raw.nbytes
        refs.append(BufferRef(offset, size, kind))
        offset = -(-(offset + size) // ALIGN) * ALIGN
    return refs, offset


def segment_writer(fd: int, buffers: list[Buffer], refs: list[BufferRef]) -> Iterator[None]:
    """Copy ``buffers`` into the segment, yielding after every ``WRITE_CHUNK`` bytes
    (so that the pool can let other tasks run during a long copy)."""
    for (buffer, _), ref in zip(buffers, refs, strict=True):
        with buffer.raw() as raw:
            done = 0
            while done < ref.size:
                step = min(WRITE_CHUNK, ref.size - done)
                done += os.pwrite(fd, raw[done : done + step], ref.offset + done)
                yield


def outgoing(
    message: Message, fd: int | None
) -> tuple[list[bytes | memoryview], list[tuple[int, int, bytes]]]:
    """The chunks of ``message``'s frame, and the ancillary data that passes ``fd``
    (to send with the frame's first byte)."""
    chunks = encode_chunks(message)
    if fd is None:
        return chunks, []
    return chunks, [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]


def unsent(chunks: list[bytes | memoryview], sent: int) -> Iterator[memoryview]:
    """What is left of ``chunks`` once the first ``sent`` bytes have gone."""
    for chunk in chunks:
        view = memoryview(chunk)
        if sent >= view.nbytes:
            sent -= view.nbytes
            continue
        yield view[sent:]
        sent = 0


def read_segment(fd: int, refs: tuple[BufferRef, ...]) -> list[Any]:
    """The buffers of a received segment, each as its :class:`BufferKind` says: a view
    of the segment mapped copy-on-write (no copy: the mapping lives as long as a view
    does, and writes to it stay private), or a ``bytes``/``bytearray`` copied out of
    it. Takes ownership of ``fd`` (closes it).

    Rejected: reading ``bytes`` with ``pread`` instead of mapping and copying (it
    saves the page faults on the mapping, but measured slower here)."""
    try:
        size = os.fstat(fd).st_size
        for index, ref in enumerate(refs):
            if ref.end > size:
                raise WireError(
                    f"buffer {index} ({ref.size} bytes at offset {ref.offset}) lies past "
                    f"the end of its {size}-byte shared-memory segment"
                )
        whole = memoryview(mmap.mmap(fd, size, access=mmap.ACCESS_COPY) if size else b"")
    finally:
        os.close(fd)
    out: list[Any] = []
    with whole:
        for ref in refs:
            view = whole[ref.offset : ref.end]
            if ref.kind is BufferKind.BYTES:
                with view:
                    out.append(view.tobytes())
            elif ref.kind is BufferKind.BYTEARRAY:
                with view:
                    out.append(bytearray(view))
            else:
                out.append(view)
    return out


class Inbox:
    """Messages and the descriptors that came with them, from ``recvmsg`` results."""

    def __init__(self) -> None:
        self.decoder = Decoder()
        self._fds: deque[int] = deque()

    def feed(self, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int) -> None:
        for level, kind, blob in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(blob) - len(blob) % _FD_SIZE
                self._fds.extend(array.array("i", blob[:usable]))
        if flags & getattr(socket, "MSG_CTRUNC", 0):
            raise WireError("a message carried more file descriptors than expected")
        self.decoder.feed(data)

    def next(self) -> tuple[Message, list[Any]] | None:
        """The next complete message and views of its buffers, or None."""
        message = self.decoder.next_message()
        if message is None:
            return None
        if not message.buffers:
            return message, []
        if not self._fds:
            raise WireError(
                f"{message.kind.name} message for call {message.call_id} announces "
                f"{len(message.buffers)} buffers, but no shared-memory segment came with it"
            )
        return message, read_segment(self._fds.popleft(), message.buffers)

    def close(self) -> None:
        """Close the descriptors received and not used."""
        while self._fds:
            os.close(self._fds.popleft())
