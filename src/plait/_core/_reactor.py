"""The reactor: which file descriptors are ready. Layer L2.

Theory of operation: each fd has at most one reader and one writer (an opaque object the
loop dispatches: a callback handle or a parked task). The reactor keeps two masks per fd:
``want`` (what somebody waits for now) and ``registered`` (what epoll knows). Adding
interest updates epoll at once; dropping interest only clears ``want``. The epoll mask
is narrowed lazily, when an event arrives that nobody wants. A task that waits on the
same socket over and over therefore costs one ``epoll_ctl`` instead of two per wait.

Level-triggered epoll is used (not edge-triggered): a reader that does not drain the fd
is called again, exactly like ``asyncio``'s ``add_reader``.

Regular files cannot be registered with epoll (``EPERM``); POSIX says they are always
ready, so they are kept in a side table and reported ready on every poll. On systems
without epoll the ``selectors`` module is used instead.
"""

from __future__ import annotations

import errno
import select
import selectors
from typing import Any

__all__ = ["READABLE", "WRITABLE", "Reactor"]

READABLE = 1
WRITABLE = 2

_HAS_EPOLL = hasattr(select, "epoll")
if _HAS_EPOLL:
    _EP_IN = select.EPOLLIN
    _EP_OUT = select.EPOLLOUT
    _EP_ERR = select.EPOLLERR | select.EPOLLHUP


def _fileno(fd: Any) -> int:
    if isinstance(fd, int):
        if fd < 0:
            raise ValueError(f"invalid file descriptor {fd}: file descriptors are >= 0")
        return fd
    try:
        number = fd.fileno()
    except AttributeError:
        raise TypeError(
            f"expected a file descriptor (int) or an object with a fileno() method, got {fd!r}"
        ) from None
    return _fileno(int(number))


class _FdState:
    __slots__ = ("reader", "registered", "token", "want", "writer")

    def __init__(self) -> None:
        self.reader: Any = None
        self.writer: Any = None
        # Invariant: want == (READABLE if reader else 0) | (WRITABLE if writer else 0).
        self.want = 0
        # What the OS poller currently watches; may be wider than ``want`` (lazily narrowed).
        self.registered = 0
        # Who registered it (see Reactor.set); 0: somebody we cannot trust to tell us
        # before the fd is closed.
        self.token = 0


class Reactor:
    """Maps fds to the objects waiting on them and asks the OS which are ready."""

    __slots__ = ("_always_ready", "_epoll", "_fds", "_selector", "raw_events")

    def __init__(self) -> None:
        self._fds: dict[int, _FdState] = {}
        # How many fds the last poll reported, wanted or not (0: it timed out).
        self.raw_events = 0
        self._always_ready: set[int] = set()
        self._epoll: Any = select.epoll() if _HAS_EPOLL else None
        self._selector: selectors.BaseSelector | None = (
            None if _HAS_EPOLL else selectors.DefaultSelector()
        )

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        if self._selector is not None:
            self._selector.close()
        self._fds.clear()

    def get(self, fd: Any, which: int) -> Any:
        """The reader (``which=READABLE``) or writer registered for ``fd``, or None."""
        st = self._fds.get(_fileno(fd))
        if st is None:
            return None
        return st.reader if which == READABLE else st.writer

    def set(self, fd: Any, which: int, obj: Any, token: int = 0) -> int:
        """Make ``obj`` the reader or writer of ``fd`` (replacing any); returns the fd.

        Callers that must refuse a second waiter check :meth:`get` first.

        Fresh interest normally tells the OS again, even when the lazy registration
        seems to cover it: the fd may have been closed since and its number reused by
        a new file the OS has never heard of (one ``epoll_ctl`` per wait, not two). An
        owner that always calls :meth:`forget` before closing its fd (plait's own
        sockets) passes a ``token`` unique to it; while the registration carries the
        same token it is known to be current, and no syscall is made at all.
        """
        fdn = _fileno(fd)
        st = self._fds.get(fdn)
        if st is None:
            st = self._fds[fdn] = _FdState()
        if which == READABLE:
            st.reader = obj
        else:
            st.writer = obj
        fresh = not st.want & which
        st.want |= which
        if not st.registered & which or (fresh and (not token or st.token != token)):
            try:
                self._register(fdn, st, st.registered | which)
            except BaseException:
                # Leave no half-registration behind (e.g. the fd was not open).
                if which == READABLE:
                    st.reader = None
                else:
                    st.writer = None
                st.want &= ~which
                if not st.want and not st.registered:
                    del self._fds[fdn]
                raise
            st.token = token
        return fdn

    def clear(self, fd: Any, which: int, *, eager: bool = False) -> Any:
        """Drop the reader or writer of ``fd``; returns what was there (or None).

        With ``eager``, tell the OS now instead of lazily: the caller may close the fd
        next, and a new fd could reuse its number."""
        fd = _fileno(fd)
        st = self._fds.get(fd)
        if st is None:
            return None
        if which == READABLE:
            old, st.reader = st.reader, None
        else:
            old, st.writer = st.writer, None
        st.want &= ~which
        if fd in self._always_ready and not st.want:
            # No syscall involved: drop it now, so that a stale entry can never make
            # every poll return at once.
            self._always_ready.discard(fd)
            st.registered = 0
        elif eager and st.registered & ~st.want:
            try:
                self._register(fd, st, st.want)
            except OSError:
                st.registered = st.want  # closed already: the OS dropped it itself
        if not st.want and not st.registered:
            del self._fds[fd]
        return old

    def forget(self, fd: Any) -> None:
        """Unregister ``fd`` completely (call before closing it when it is reused)."""
        fd = _fileno(fd)
        st = self._fds.pop(fd, None)
        if st is not None and st.registered:
            self._register(fd, st, 0)

    def _register(self, fd: int, st: _FdState, mask: int) -> None:
        if fd in self._always_ready:
            st.registered = mask
            if not mask:
                self._always_ready.discard(fd)
            return
        if self._selector is not None:
            self._selector_register(fd, st, mask)
            return
        events = (_EP_IN if mask & READABLE else 0) | (_EP_OUT if mask & WRITABLE else 0)
        ep = self._epoll
        try:
            if st.registered and mask:
                try:
                    ep.modify(fd, events)
                except FileNotFoundError:
                    # The fd was closed and reopened behind our back: epoll forgot it.
                    ep.register(fd, events)
            elif mask:
                try:
                    ep.register(fd, events)
                except FileExistsError:
                    ep.modify(fd, events)
            else:
                try:
                    ep.unregister(fd)
                except (FileNotFoundError, OSError):
                    pass  # closed already: epoll dropped it by itself
        except PermissionError:
            # A regular file or another fd epoll refuses: always ready, as POSIX says.
            self._always_ready.add(fd)
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise OSError(
                    exc.errno,
                    f"file descriptor {fd} is not open; it was closed before (or while) "
                    "waiting on it. Remove the reader/writer before closing the fd.",
                ) from None
            raise
        st.registered = mask

    def _selector_register(self, fd: int, st: _FdState, mask: int) -> None:
        sel = self._selector
        assert sel is not None
        events = (selectors.EVENT_READ if mask & READABLE else 0) | (
            selectors.EVENT_WRITE if mask & WRITABLE else 0
        )
        if mask:
            if st.registered:
                # Not sel.modify(): with an unchanged mask it skips the OS call, and the
                # OS may have forgotten the fd (closed, number reused). Register anew.
                try:
                    sel.unregister(fd)
                except (KeyError, ValueError, OSError):
                    pass
            try:
                sel.register(fd, events)
            except PermissionError:
                self._always_ready.add(fd)  # as for epoll: a regular file
        else:
            try:
                sel.unregister(fd)
            except (KeyError, ValueError, OSError):
                pass
        st.registered = mask

    def poll(self, timeout: float) -> list[tuple[Any, int, int]]:
        """Wait up to ``timeout`` seconds (``inf``: no limit) for readiness.

        Returns ``(reader_or_writer, fd, READABLE|WRITABLE)`` for each ready waiter; an
        fd with both a ready reader and a ready writer yields two entries.
        """
        if self._always_ready:
            timeout = 0.0
        if timeout == float("inf"):
            timeout = -1.0
        elif timeout > 86400.0:
            timeout = 86400.0
        out: list[tuple[Any, int, int]] = []
        fds = self._fds
        if self._selector is not None:
            self._selector_poll(timeout, out)
            if self._always_ready:
                self._report_always_ready(out)
            return out
        try:
            events = self._epoll.poll(timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            events = []
        self.raw_events = len(events) + len(self._always_ready)
        for fd, ev in events:
            st = fds.get(fd)
            if st is None:
                continue
            if ev & (_EP_IN | _EP_ERR) and st.reader is not None:
                out.append((st.reader, fd, READABLE))
            if ev & (_EP_OUT | _EP_ERR) and st.writer is not None:
                out.append((st.writer, fd, WRITABLE))
            if st.registered & ~st.want:
                # Nobody wants part of what epoll watches: narrow it now.
                self._register(fd, st, st.want)
                if not st.want:
                    del fds[fd]
        if self._always_ready:
            self._report_always_ready(out)
        return out

    def _report_always_ready(self, out: list[tuple[Any, int, int]]) -> None:
        fds = self._fds
        for fd in tuple(self._always_ready):
            st = fds[fd]
            if not st.want:
                self._register(fd, st, 0)
                del fds[fd]
                continue
            if st.reader is not None:
                out.append((st.reader, fd, READABLE))
            if st.writer is not None:
                out.append((st.writer, fd, WRITABLE))

    def _selector_poll(
        self, timeout: float, out: list[tuple[Any, int, int]]
    ) -> list[tuple[Any, int, int]]:
        sel = self._selector
        assert sel is not None
        fds = self._fds
        ready = sel.select(None if timeout < 0 else timeout)
        self.raw_events = len(ready) + len(self._always_ready)
        for key, ev in ready:
            st = fds.get(key.fd)
            if st is None:
                continue
            if ev & selectors.EVENT_READ and st.reader is not None:
                out.append((st.reader, key.fd, READABLE))
            if ev & selectors.EVENT_WRITE and st.writer is not None:
                out.append((st.writer, key.fd, WRITABLE))
            if st.registered & ~st.want:
                self._register(key.fd, st, st.want)
                if not st.want:
                    del fds[key.fd]
        return out
