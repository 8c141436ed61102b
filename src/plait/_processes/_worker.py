"""The main loop of a process-pool worker.

The pool starts ``python _worker.py SOCKET_FD LIFELINE_FD`` (a fresh interpreter, not a
fork, so it is safe in a parent that has threads), with this file's directory first on
``sys.path`` so that ``_wire`` and ``_serial`` import as top-level modules without
importing the rest of plait. Then:

1. The parent sends INIT: its ``sys.path`` (which replaces ours, so that functions
   pickled by reference import the same modules), the initializer and its arguments.
   The worker runs the initializer and answers READY, or ERROR (call 0) if it failed.
2. Calls, one at a time, on the main thread: CALL in, RESULT or ERROR out. An ERROR
   carries the exception's type name, message and formatted traceback as text, and
   the exception itself pickled separately (so that one the parent cannot unpickle
   still reports what happened).
3. SHUTDOWN, or the end of the stream (the parent closed its end): exit 0.

A daemon thread blocks reading the lifeline pipe, whose write end only the parent holds:
when the parent dies, even by SIGKILL, the read returns and the worker exits at once,
even in the middle of a long call, so no worker outlives its parent. SIGINT is ignored:
Ctrl-C in a terminal reaches the whole process group, and it is for the parent to decide
what to do with its workers.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import threading
import traceback
from typing import Any

if __package__:
    from . import _serial, _wire
else:  # run as a script: the normal case
    import _serial  # type: ignore[import-not-found,no-redef]
    import _wire  # type: ignore[import-not-found,no-redef]

EXIT_ORPHANED = 70  # the parent died (the lifeline pipe closed)
EXIT_PROTOCOL = 71  # the parent sent something we cannot read

Kind = _wire.MessageKind


def _watch_lifeline(fd: int) -> None:
    try:
        while os.read(fd, 1):
            pass
    finally:
        os._exit(EXIT_ORPHANED)


class Connection:
    """The worker's blocking end of the socket to the parent."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = _serial.Inbox()

    def receive(self) -> tuple[_wire.Message, list[Any]] | None:
        """The next message, or None once the parent has closed its end."""
        while True:
            got = self.inbox.next()
            if got is not None:
                return got
            data, ancdata, flags, _ = self.sock.recvmsg(
                _serial.RECV_SIZE, _serial.ANCILLARY_SPACE, _serial.RECV_FLAGS
            )
            if not data:
                self.inbox.decoder.eof()  # raises if it stopped inside a frame
                return None
            self.inbox.feed(data, ancdata, flags)

    def send(
        self,
        kind: _wire.MessageKind,
        call_id: int,
        payload: bytes,
        buffers: list[_serial.Buffer] | None = None,
    ) -> None:
        fd = None
        refs: list[_wire.BufferRef] = []
        if buffers:
            refs, size = _serial.layout(buffers)
            fd = _serial.new_segment_fd(size)
        try:
            if fd is not None:
                for _ in _serial.segment_writer(fd, buffers or [], refs):
                    pass
            chunks, ancdata = _serial.outgoing(
                _wire.Message.trusted(kind, call_id, payload, tuple(refs)), fd
            )
            sent = self.sock.sendmsg(chunks, ancdata)
        finally:
            if fd is not None:
                os.close(fd)  # the one in flight is the parent's now
        for chunk in _serial.unsent(chunks, sent):
            self.sock.sendall(chunk)

    def send_error(self, call_id: int, exc: BaseException, summary: str | None = None) -> None:
        text = "".join(traceback.format_exception(exc))
        try:
            pickled: bytes | None = _serial.dumps_inband(exc)
        except Exception:
            pickled = None
        message = summary if summary is not None else str(exc)
        report = (type(exc).__module__, type(exc).__qualname__, message, text, pickled)
        self.send(Kind.ERROR, call_id, _serial.dumps_inband(report))


def _name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or fn)


def _run_call(conn: Connection, message: _wire.Message, views: list[Any]) -> None:
    call_id = message.call_id
    try:
        fn, args = _serial.loads(message.payload, views)
    except BaseException as exc:
        conn.send_error(
            call_id, exc, f"the worker could not unpickle the call: {type(exc).__name__}: {exc}"
        )
        return
    finally:
        del views, message
    try:
        result = fn(*args)
    except BaseException as exc:
        if isinstance(exc, SystemExit | KeyboardInterrupt):
            exc = RuntimeError(f"{_name(fn)} raised {type(exc).__name__}({exc})")
        conn.send_error(call_id, exc)
        return
    finally:
        del args
    try:
        payload, buffers = _serial.dumps(result)
    except Exception as exc:
        found = _serial.explain_unpicklable(result, "the result")
        where = ""
        if found is not None:
            path, part, reason = found
            where = f"{path} (a {type(part).__qualname__}): {reason}"
        error = pickle.PicklingError(
            f"the result of {_name(fn)} cannot be sent back from the worker process: "
            f"{where or exc}; return picklable data instead"
        )
        conn.send_error(call_id, error)
        return
    del result
    try:
        _serial.check_size(payload, f"the result of {_name(fn)}")
    except ValueError as exc:
        conn.send_error(call_id, exc)
        return
    conn.send(Kind.RESULT, call_id, payload, buffers)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def serve(conn: Connection) -> int:
    """Set up from INIT, then run calls until told to stop; return the exit status."""
    got = conn.receive()
    if got is None:
        return 0
    message, _ = got
    if message.kind is not Kind.INIT:
        return EXIT_PROTOCOL
    # sys.path first: an initializer pickled by name may need it to be unpickled.
    path, setup = _serial.loads(message.payload, [])
    sys.path[:] = path
    try:
        initializer, initargs = _serial.loads(setup, [])
        if initializer is not None:
            initializer(*initargs)
    except BaseException as exc:
        conn.send_error(0, exc)
        _flush()
        return 1
    del initializer, initargs, setup, message
    conn.send(Kind.READY, 0, b"")
    while True:
        got = conn.receive()
        if got is None:
            return 0
        message, views = got
        if message.kind is Kind.SHUTDOWN:
            return 0
        if message.kind is not Kind.CALL:
            return EXIT_PROTOCOL
        _run_call(conn, message, views)
        del message, views
        _flush()


def main(argv: list[str]) -> int:
    sock_fd, lifeline_fd = int(argv[1]), int(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_watch_lifeline, args=(lifeline_fd,), name="plait-lifeline", daemon=True
    ).start()
    conn = Connection(socket.socket(fileno=sock_fd))
    conn.sock.setblocking(True)
    try:
        return serve(conn)
    except (ConnectionResetError, BrokenPipeError):
        return 0  # the parent closed its end mid-message: it no longer wants us
    except _wire.WireError:
        return EXIT_PROTOCOL
    finally:
        conn.inbox.close()
        conn.sock.close()


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        del sys.path[0]  # (INIT replaces sys.path anyway; _wire and _serial are loaded)
    for _module in ("_wire", "_serial"):
        sys.modules.pop(_module, None)  # a user module of that name must not be shadowed
    sys.exit(main(sys.argv))
