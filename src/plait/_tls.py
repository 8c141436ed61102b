"""TLS over any plait stream: :class:`SSLStream`. Layer L5.

Theory of operation. The standard library's ``ssl.SSLObject`` is OpenSSL with its I/O
replaced by two in-memory buffers (``MemoryBIO``): ciphertext for the peer piles up in
``_outgoing``, ciphertext from the peer is fed into ``_incoming``. Each SSLObject call
(``do_handshake``, ``read``, ``write``, ``unwrap``) either finishes or raises
``SSLWantReadError``, meaning "feed me more ciphertext, then call me again with the same
arguments"; either way it may have queued bytes for the peer. :meth:`SSLStream._run`
turns one such call into an awaitable: call it, send whatever it queued, or else read
more from the transport, and repeat until it finishes.

Any call may need either direction (a handshake sends and receives; a ``read`` may
have to answer a TLS 1.3 ``KeyUpdate``), so the sending task and the receiving task can
both want the transport's send side, or its receive side, at once. Two FIFO locks
serialise them. The send lock is taken in the order the bytes left ``_outgoing`` (the
take and the queueing happen with no suspension in between), so records reach the wire
in sequence. A task that waited for the receive lock does not read the transport
itself if another task fed ``_incoming`` meanwhile (``_fills`` changed): it retries its
SSLObject call first, since the data it needed may have arrived.

Cancellation. Bytes taken from ``_outgoing`` are owed to the peer; if a cancellation
(or an error) strikes before they are all on the wire, the TLS record sequence is
corrupt and the stream is broken for good (every later operation raises
``BrokenResourceError``). That is what a cancelled ``send_all`` usually does. A
cancellation that strikes while a task only *waits* (for ciphertext, for a lock, for
another task's handshake) loses nothing: OpenSSL keeps its progress, and the stream
stays usable, handshake included.

Closing. ``aclose`` sends ``close_notify`` and waits, at most ``close_timeout``
seconds, for the peer's own ``close_notify`` (draining whatever the peer still sends):
closing a TCP socket with unread data in it makes the kernel send a reset, which can
destroy the peer's copy of our last bytes. A transport EOF with no ``close_notify``
before it may be a truncation attack, so ``receive_some`` raises
``BrokenResourceError`` unless ``https_compatible=True`` (for protocols that frame
their own messages, like HTTP, whose peers often skip ``close_notify``).

Half-closing. TLS 1.3 lets a side send ``close_notify`` and go on receiving, and so
does ``send_eof``. ``SSLObject.unwrap`` fails, and wrecks the connection, if decrypted
records are still waiting to be read, so ``send_eof`` first reads them out into
``_plain``, which receiving drains before asking OpenSSL for more.

Rejected: letting OpenSSL drive a socket itself (``SSLContext.wrap_socket``): it ties
TLS to sockets (no TLS over pipes, or over another TLS stream) and retries behind the
reactor's back. Rejected too: breaking the stream on every cancellation (simpler, but
then a receive with a timeout would kill a healthy connection).
"""

from __future__ import annotations

import enum
import re
import ssl as _ssl
from collections.abc import Callable
from typing import Any

from ._core._traps import checkpoint, schedule_point
from ._exceptions import (
    BrokenResourceError,
    BusyResourceError,
    Cancelled,
    ClosedResourceError,
    WouldBlock,
)
from ._socket import _raise_if_cancelled
from ._streams import Stream
from ._sync import Event, Lock
from ._timeouts import move_on_after
from ._util import check_seconds, describe, public

__all__ = ["SSLStream"]

# Ciphertext read from the transport per call.
_TRANSPORT_RECEIVE_SIZE = 65536
# Plaintext handed to SSLObject.write per call: bounds the ciphertext buffered in memory
# for one huge send_all (a TLS record holds 16 KiB, so this is 16 records).
_WRITE_CHUNK = 262144
# Plaintext asked of SSLObject.read per call: one TLS record's worth. (It allocates the
# whole size asked for before shrinking the result, and returns one record at most.)
_RECORD_SIZE = 16384


class _State(enum.Enum):
    OPEN = "open"
    BROKEN = "broken"
    CLOSED = "closed"


class _Handshake(enum.Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    DONE = "done"


# OpenSSL reason codes, with what they usually mean for the person reading the error.
_HINTS = {
    "WRONG_VERSION_NUMBER": "the peer does not seem to speak TLS (plain text, wrong port?)",
    "HTTP_REQUEST": "the peer sent plain HTTP to a TLS port",
    "HTTPS_PROXY_REQUEST": "the peer sent a plain HTTP proxy request to a TLS port",
    "PACKET_LENGTH_TOO_LONG": "the peer does not seem to speak TLS (plain text, wrong port?)",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the CA that signed our certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer rejected our certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer rejected our certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer says our certificate has expired",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version both sides accept",
    "UNSUPPORTED_PROTOCOL": "no TLS version both sides accept",
    "NO_PROTOCOLS_AVAILABLE": "no TLS version both sides accept",
    "NO_SHARED_CIPHER": "no cipher suite both sides accept (or no server certificate)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the peer found no parameters both sides accept",
    "NO_APPLICATION_PROTOCOL": "no ALPN protocol both sides accept",
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": "no ALPN protocol both sides accept",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": (
        "the client sent no certificate and this server requires one"
    ),
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
        "the server requires a client certificate: load one with ssl_context.load_cert_chain()"
    ),
}

_UNTRUSTED_CODES = frozenset({2, 18, 19, 20, 21})  # X509_V_ERR_*: no trusted issuer
_SSL_TEXT = re.compile(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$")


def _ssl_text(exc: _ssl.SSLError) -> str:
    """The human part of an SSLError's message, with OpenSSL's reason code."""
    text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else str(exc)
    text = _SSL_TEXT.sub("", text) or str(exc)
    reason = getattr(exc, "reason", None)
    return f"{text} ({reason})" if reason else text


def _peer_vanished(exc: _ssl.SSLError) -> bool:
    """True if OpenSSL saw the transport end without a close_notify."""
    if isinstance(exc, _ssl.SSLEOFError | _ssl.SSLSyscallError):
        return True
    return "UNEXPECTED_EOF" in str(exc)


def _explain_handshake(exc: _ssl.SSLError, hostname: str | None) -> str:
    if isinstance(exc, _ssl.SSLCertVerificationError):
        code, detail = exc.verify_code, exc.verify_message or _ssl_text(exc)
        if code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            return (
                f"certificate is not valid for {hostname!r}; connect with a name the "
                "certificate lists (server_hostname=), or fix the server's certificate"
            )
        if code in _UNTRUSTED_CODES:
            return (
                f"the certificate is not signed by a CA this SSLContext trusts ({detail}); "
                "load the CA that signed it with ssl_context.load_verify_locations()"
            )
        if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return f"the certificate has expired ({detail})"
        return f"the certificate was rejected ({detail})"
    if _peer_vanished(exc):
        return (
            "the peer closed the connection during the handshake (does it speak TLS? did "
            "it reject our certificate, TLS version or server name?)"
        )
    return _explain(exc)


def _explain(exc: _ssl.SSLError) -> str:
    hint = _HINTS.get(getattr(exc, "reason", None) or "")
    return f"{_ssl_text(exc)}: {hint}" if hint else _ssl_text(exc)


@public
class SSLStream(Stream):
    """A :class:`Stream` that encrypts with TLS over another plait stream.

    Args:
        stream: the transport, any plait :class:`Stream` (usually a ``SocketStream``).
        ssl_context: an ``ssl.SSLContext`` (``ssl.create_default_context()`` for a
            client; ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`` plus
            ``load_cert_chain()`` for a server).
        server_side: True for the server end.
        server_hostname: the name the server's certificate must match (SNI too);
            required for a client whose context checks host names.
        https_compatible: treat a transport EOF without ``close_notify`` as a normal
            EOF instead of a possible truncation attack, and do not wait for the
            peer's ``close_notify`` in :meth:`aclose`.
        close_timeout: the most :meth:`aclose` spends on a clean goodbye (sending
            ``close_notify``, then waiting for the peer's); 0 closes at once, without
            ``close_notify``.

    The handshake happens on the first send or receive, or explicitly with
    :meth:`do_handshake`. One task may send while another receives. A cancelled
    ``send_all`` (or a cancelled operation that was sending TLS data on its behalf)
    leaves the stream broken: later operations raise ``BrokenResourceError``. A
    cancellation that only interrupted a wait keeps the stream usable.
    """

    __slots__ = (
        "_close_timeout",
        "_eof_received",
        "_eof_sent",
        "_fills",
        "_handshake",
        "_handshake_done",
        "_held",
        "_https_compatible",
        "_incoming",
        "_outgoing",
        "_plain",
        "_receiving",
        "_recv_lock",
        "_send_lock",
        "_sending",
        "_ssl",
        "_state",
        "_transport",
        "_vanished",
        "_why_broken",
    )

    def __init__(
        self,
        stream: Stream,
        ssl_context: _ssl.SSLContext,
        server_side: bool = False,
        server_hostname: str | None = None,
        https_compatible: bool = False,
        *,
        close_timeout: float = 1.0,
    ) -> None:
        if not isinstance(stream, Stream):
            raise TypeError(
                f"SSLStream needs a plait Stream to run over, got {describe(stream)}; "
                "e.g. plait.SocketStream(sock) or await plait.open_tcp_stream(host, port)"
            )
        if not isinstance(ssl_context, _ssl.SSLContext):
            raise TypeError(
                f"SSLStream needs an ssl.SSLContext, got {describe(ssl_context)}; make one "
                "with ssl.create_default_context()"
            )
        self._close_timeout = check_seconds(close_timeout, "SSLStream(close_timeout)")
        if not server_side and server_hostname is None and ssl_context.check_hostname:
            # SSLObject would not check it; OpenSSL would accept any trusted certificate.
            raise ValueError(
                "a client SSLStream needs server_hostname= (the name the server's "
                "certificate must match) because ssl_context.check_hostname is True"
            )
        self._incoming = _ssl.MemoryBIO()
        self._outgoing = _ssl.MemoryBIO()
        self._ssl = ssl_context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=bool(server_side),
            server_hostname=server_hostname,
        )
        self._transport = stream
        self._https_compatible = bool(https_compatible)
        self._rbuf = bytearray()
        # Decrypted data send_eof() had to read out of OpenSSL before shutting down its
        # sending half; receive hands it out before anything OpenSSL still holds.
        self._plain = bytearray()
        # Ciphertext held back until the next send (TLS 1.3 session tickets, see _run).
        self._held = b""
        # Invariant: _state only moves OPEN -> BROKEN -> CLOSED or OPEN -> CLOSED;
        # _why_broken says why whenever it is BROKEN.
        self._state = _State.OPEN
        self._why_broken = ""
        # Invariant: RUNNING while exactly one task runs the handshake; the others
        # wait for _handshake_done, which is set when that attempt ends (DONE, or back
        # to NOT_STARTED after a cancellation or a failure).
        self._handshake = _Handshake.NOT_STARTED
        self._handshake_done: Event | None = None
        self._vanished = False  # the handshake failed because the transport ended
        self._send_lock = Lock()
        self._recv_lock = Lock()
        self._fills = 0  # times ciphertext was fed into _incoming
        self._sending = False
        self._receiving = False
        self._eof_sent = False  # our close_notify is queued: no more sending
        self._eof_received = False  # receive reported EOF: it always will from now on

    def __repr__(self) -> str:
        side = "server" if self._ssl.server_side else f"client of {self._ssl.server_hostname!r}"
        version = self._ssl.version() if self._handshake is _Handshake.DONE else None
        state = self._state.value if version is None else f"{self._state.value} {version}"
        return f"<plait.SSLStream {side} {state} over {self._transport!r}>"

    # -- information ---------------------------------------------------------------

    @property
    def transport_stream(self) -> Stream:
        """The stream the ciphertext travels over."""
        return self._transport

    @property
    def server_side(self) -> bool:
        return self._ssl.server_side

    @property
    def server_hostname(self) -> str | None:
        return self._ssl.server_hostname

    @property
    def ssl_object(self) -> _ssl.SSLObject:
        """The underlying ``ssl.SSLObject``, for what the methods below do not cover
        (``session``, ``shared_ciphers()``, ``get_channel_binding()``, ...). Do not do
        I/O on it."""
        return self._ssl

    def selected_alpn_protocol(self) -> str | None:
        """The protocol ALPN settled on, or None (none negotiated, or no handshake yet)."""
        return self._ssl.selected_alpn_protocol()

    def version(self) -> str | None:
        """The TLS version in use, e.g. ``"TLSv1.3"`` (None before the handshake)."""
        return self._ssl.version()

    def cipher(self) -> tuple[str, str, int] | None:
        """``(name, protocol, secret_bits)`` of the cipher in use (None before the
        handshake)."""
        return self._ssl.cipher()

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate as ``ssl.SSLSocket.getpeercert`` returns it."""
        if self._handshake is not _Handshake.DONE:
            raise ValueError(
                "the TLS handshake has not completed, so there is no peer certificate yet; "
                "await stream.do_handshake() first"
            )
        return self._ssl.getpeercert(binary_form)

    # -- state ---------------------------------------------------------------------

    def _unusable(self, what: str) -> Exception:
        if self._state is _State.CLOSED:
            return ClosedResourceError(f"{what} on an SSLStream that was closed (aclose())")
        return BrokenResourceError(
            f"{what} on a broken SSLStream: {self._why_broken}; all that is left to do is "
            "aclose() it"
        )

    def _set_broken(self, why: str) -> None:
        if self._state is _State.OPEN:
            self._state = _State.BROKEN
            self._why_broken = why

    def _peer(self) -> str:
        if not self._ssl.server_side and self._ssl.server_hostname:
            return repr(self._ssl.server_hostname)
        who = "the client" if self._ssl.server_side else "the server"
        sock = getattr(self._transport, "socket", None)
        try:
            address = sock.getpeername() if sock is not None else None
        except (OSError, AttributeError):
            address = None
        if isinstance(address, tuple) and len(address) >= 2:
            host = str(address[0])
            return (
                f"{who} at [{host}]:{address[1]}"
                if ":" in host
                else f"{who} at {host}:{address[1]}"
            )
        return who

    def _ssl_failed(self, exc: _ssl.SSLError, what: str, handshake: bool) -> str:
        """Mark the stream broken by ``exc``; the message for the error to raise."""
        vanished = _peer_vanished(exc)
        if handshake:
            why = (
                f"TLS handshake with {self._peer()} failed: "
                f"{_explain_handshake(exc, self._ssl.server_hostname)}"
            )
            self._vanished = vanished
        elif vanished:
            why = (
                "the peer closed the connection without a TLS close_notify, so the data may "
                "have been cut short (a truncation attack, or a peer that does not close TLS "
                "properly); if the protocol on top marks the end of its messages itself, as "
                "HTTP does, pass https_compatible=True to take this as a normal EOF"
            )
        else:
            why = f"TLS error during {what}: {_explain(exc)}"
        self._set_broken(why)
        return why

    def _transport_failed(self, exc: BaseException, what: str, handshake: bool) -> Exception:
        if self._state is _State.CLOSED:
            return ClosedResourceError(
                f"{what} failed: the SSLStream was closed (aclose()) while it was in progress"
            )
        if handshake:
            why = f"TLS handshake with {self._peer()} failed: {exc}"
        else:
            why = f"the transport under the SSLStream failed during {what}: {exc}"
        self._set_broken(why)
        if isinstance(exc, ClosedResourceError):
            return ClosedResourceError(why)
        return BrokenResourceError(why)

    # -- the engine ----------------------------------------------------------------

    async def _run(
        self, op: Callable[[Any], Any], arg: Any, what: str, handshake: bool = False
    ) -> Any:
        """Call ``op(arg)`` (an SSLObject operation) until it finishes, doing the
        transport I/O it asks for. A checkpoint if the caller already checked for
        cancellation: it always ends with a schedule point or a transport operation."""
        outgoing = self._outgoing
        yielded = False
        while True:
            try:
                result = op(arg)
            except _ssl.SSLWantReadError:
                done = False
            except _ssl.SSLError as exc:
                why = self._ssl_failed(exc, what, handshake)
                if handshake:
                    await self._send_alert()
                raise BrokenResourceError(why) from exc
            else:
                done = True
            out = outgoing.read() if outgoing.pending else b""
            if (
                done
                and handshake
                and out
                and self._ssl.server_side
                and self._ssl.version() == "TLSv1.3"
            ):
                # Discussion: OpenSSL emits the TLS 1.3 session tickets as the server
                # handshake completes. Sent now, they sit unread in a client that only
                # sends, and its close then resets the connection, destroying data in
                # flight. Held back, they go out with our first bytes.
                self._held += out
                out = b""
            try:
                if out:
                    yielded = True
                    await self._flush(out)
                    if done:
                        return result
                elif done:
                    if not yielded:
                        await schedule_point()
                    return result
                else:
                    yielded = True
                    await self._fill()
            except (BrokenResourceError, ClosedResourceError, BusyResourceError, OSError) as exc:
                raise self._transport_failed(exc, what, handshake) from exc
            if self._state is not _State.OPEN:
                raise self._unusable(what)

    async def _flush(self, out: bytes) -> None:
        """Send ciphertext taken from ``_outgoing``. The stream breaks if not all of it
        reaches the transport (the peer would see a gap in the record sequence)."""
        if self._held:
            out = self._held + out
            self._held = b""
        lock = self._send_lock
        try:
            try:
                lock.acquire_nowait()
            except WouldBlock:
                await lock.acquire()
            try:
                await self._transport.send_all(out)
            finally:
                lock.release()
        except BaseException as exc:
            if isinstance(exc, Cancelled):
                self._set_broken(
                    "an operation was cancelled while it was sending TLS data, so part of a "
                    "TLS record may be missing"
                )
            raise

    async def _fill(self) -> None:
        """Feed ciphertext from the transport into ``_incoming`` (b"" becomes an EOF).
        Cancellation loses nothing: the transport's receive is cancel-safe."""
        lock = self._recv_lock
        seen = self._fills
        try:
            lock.acquire_nowait()
        except WouldBlock:
            await lock.acquire()
        try:
            if seen != self._fills or self._state is not _State.OPEN:
                return  # another task fed _incoming (or closed us): retry the call first
            if self._incoming.eof:  # pragma: no cover - OpenSSL reports EOF, never WantRead
                raise BrokenResourceError("the peer closed the connection")
            data = await self._transport.receive_some(_TRANSPORT_RECEIVE_SIZE)
            self._fills += 1
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()
        finally:
            lock.release()

    async def _send_alert(self) -> None:
        """After a failed handshake, tell the peer why (best effort, bounded)."""
        out = self._outgoing.read() if self._outgoing.pending else b""
        if not out or self._send_lock.locked():
            return
        with move_on_after(self._close_timeout):
            try:
                self._send_lock.acquire_nowait()
            except WouldBlock:  # pragma: no cover - checked just above
                return
            try:
                await self._transport.send_all(out)
            except (BrokenResourceError, ClosedResourceError, BusyResourceError, OSError):
                pass
            finally:
                self._send_lock.release()

    def _handshake_op(self, _: object) -> None:
        self._ssl.do_handshake()

    def _read_op(self, max_bytes: int) -> bytes:
        plain = self._plain
        if plain:
            data = bytes(plain[:max_bytes])
            del plain[:max_bytes]
            return data
        try:
            return self._ssl.read(max_bytes if max_bytes < _RECORD_SIZE else _RECORD_SIZE)
        except _ssl.SSLZeroReturnError:  # the peer's close_notify
            return b""
        except (_ssl.SSLEOFError, _ssl.SSLSyscallError):
            if self._https_compatible:
                self._outgoing.read()  # OpenSSL's alert: nobody is left to read it
                return b""
            raise

    def _unwrap_op(self, _: object) -> None:
        try:
            self._ssl.unwrap()
        except _ssl.SSLWantReadError:
            pass  # our close_notify is queued; the peer's comes later, to receive

    def _drain(self, keep: bool) -> None:
        """Read out whatever complete records OpenSSL can decrypt now (into ``_plain``
        if ``keep``). ``unwrap`` must find none: it fails on unread application data."""
        while True:
            try:
                data = self._ssl.read(_RECORD_SIZE)
            except _ssl.SSLError:
                return  # nothing complete, or a problem the next read meets again
            if not data:
                return
            if keep:
                self._plain += data

    async def _ensure_handshake(self, what: str) -> None:
        """Run the handshake, or wait for the task running it. A cancelled handshake
        can be resumed by the next caller (OpenSSL keeps its progress) unless the
        cancellation broke the stream."""
        while self._handshake is not _Handshake.DONE:
            if self._state is not _State.OPEN:
                raise self._unusable(what)
            if self._handshake is _Handshake.RUNNING:
                assert self._handshake_done is not None
                await self._handshake_done.wait()
                continue
            self._handshake = _Handshake.RUNNING
            done = self._handshake_done = Event()
            try:
                await self._run(self._handshake_op, None, what, handshake=True)
                self._handshake = _Handshake.DONE
            finally:
                if self._handshake is _Handshake.RUNNING:
                    self._handshake = _Handshake.NOT_STARTED
                done.set()

    # -- the Stream interface ------------------------------------------------------

    async def do_handshake(self) -> None:
        """Complete the TLS handshake (done automatically by the first send or
        receive; call it to check the peer before talking to it). Waits if another
        task is running it; returns at once if it is done. A checkpoint.

        Raises ``BrokenResourceError`` whose message says why the handshake failed (its
        ``__cause__`` is the ``ssl.SSLError``). A cancelled handshake can be resumed
        unless it was cancelled while sending (then the stream is broken)."""
        if self._state is not _State.OPEN:
            raise self._unusable("do_handshake()")
        if self._handshake is _Handshake.DONE:
            await checkpoint()
            return
        _raise_if_cancelled("SSLStream.do_handshake()")
        await self._ensure_handshake("do_handshake()")

    async def send_all(self, data: Any) -> None:
        """Encrypt and send every byte of ``data``. A checkpoint.

        Cancelling it once it has started sending breaks the stream (the peer cannot
        be told where the data stopped): later operations raise
        ``BrokenResourceError``. ``BusyResourceError`` if another task is sending,
        ``ClosedResourceError`` after ``aclose()`` or ``send_eof()``."""
        if self._sending:
            raise BusyResourceError(
                "another task is already sending on this SSLStream; use one sending task "
                "(or a Lock) per stream"
            )
        if self._state is not _State.OPEN:
            raise self._unusable("send_all()")
        if self._eof_sent:
            raise ClosedResourceError("send_all() after send_eof(): this side is shut down")
        if data.__class__ is not bytes:
            try:
                memoryview(data).release()
            except TypeError:
                raise TypeError(
                    f"send_all() needs a bytes-like object, got {describe(data)}"
                ) from None
        _raise_if_cancelled("SSLStream.send_all()")
        self._sending = True
        try:
            if self._handshake is not _Handshake.DONE:
                await self._ensure_handshake("send_all()")
                # Nothing is sent yet: a cancellation now must not break the stream.
                _raise_if_cancelled("SSLStream.send_all()")
            write = self._ssl.write
            if data.__class__ is bytes and 0 < len(data) <= _WRITE_CHUNK:
                await self._run(write, data, "send_all()")
                return
            with memoryview(data) as view, view.cast("B") as raw:
                total = len(raw)
                if not total:
                    await schedule_point()
                    return
                sent = 0
                while sent < total:
                    sent += await self._run(write, raw[sent : sent + _WRITE_CHUNK], "send_all()")
        finally:
            self._sending = False

    async def _receive(self, max_bytes: int) -> bytes:
        if self._receiving:
            raise BusyResourceError(
                "another task is already receiving on this SSLStream; use one receiving "
                "task per stream"
            )
        if self._state is _State.CLOSED or (
            self._state is _State.BROKEN and not self._eof_received
        ):
            raise self._unusable("receiving")
        if self._eof_received:
            await checkpoint()
            return b""
        _raise_if_cancelled("SSLStream.receive_some()")
        self._receiving = True
        try:
            if self._handshake is not _Handshake.DONE:
                try:
                    await self._ensure_handshake("receiving")
                except BrokenResourceError:
                    if self._https_compatible and self._vanished:
                        self._eof_received = True  # the peer left without a word
                        return b""
                    raise
            data: bytes = await self._run(self._read_op, max_bytes, "receiving")
            if not data:
                self._eof_received = True
                return data
            got = len(data)
            if got < max_bytes and (self._plain or self._incoming.pending or self._ssl.pending()):
                # One TLS record holds at most 16 KiB: gather what is already here.
                parts = [data]
                while got < max_bytes:
                    try:
                        more = self._read_op(max_bytes - got)
                    except _ssl.SSLError:
                        break  # nothing complete yet, or an error the next call meets
                    if not more:
                        self._eof_received = True  # reported by the next call
                        break
                    parts.append(more)
                    got += len(more)
                data = b"".join(parts)
            return data
        finally:
            self._receiving = False

    async def send_eof(self) -> None:
        """Send ``close_notify``: the peer receives EOF, and this side can still
        receive. TLS 1.3 only (RFC 8446 section 6.1). A checkpoint.

        ``NotImplementedError`` on TLS 1.2 and older: there a peer must answer
        ``close_notify`` by closing the whole connection (RFC 5246 section 7.2.1), so
        half-closing cannot work."""
        if self._sending:
            raise BusyResourceError("send_eof() while another task is sending on this stream")
        if self._state is not _State.OPEN:
            raise self._unusable("send_eof()")
        _raise_if_cancelled("SSLStream.send_eof()")
        if self._eof_sent:
            await schedule_point()
            return
        self._sending = True
        try:
            if self._handshake is not _Handshake.DONE:
                await self._ensure_handshake("send_eof()")
                _raise_if_cancelled("SSLStream.send_eof()")
            version = self._ssl.version()
            if version != "TLSv1.3":
                raise NotImplementedError(
                    f"send_eof() needs TLS 1.3, and this connection uses {version}: before "
                    "1.3 a peer must answer close_notify by closing the whole connection, so "
                    "TLS cannot half-close. Use aclose(), or require TLS 1.3 "
                    "(ssl_context.minimum_version = ssl.TLSVersion.TLSv1_3)"
                )
            self._drain(keep=True)
            self._eof_sent = True
            await self._run(self._unwrap_op, None, "send_eof()")
        finally:
            self._sending = False

    async def aclose(self) -> None:
        """Close the stream and the transport under it (idempotent). A checkpoint.

        Unless the stream is broken or its handshake never completed, first sends
        ``close_notify`` and waits up to ``close_timeout`` seconds for the peer's (not
        with ``https_compatible``). The transport is closed even if the caller is
        cancelled (then no ``close_notify`` is sent, and ``Cancelled`` is raised).
        Tasks blocked in this stream get ``ClosedResourceError``."""
        if self._state is _State.CLOSED:
            await checkpoint()
            return
        transport = self._transport
        try:
            _raise_if_cancelled("SSLStream.aclose()")
        except Cancelled:
            self._state = _State.CLOSED
            await transport.aclose()  # closes, then raises Cancelled again (a checkpoint)
            raise
        graceful = self._state is _State.OPEN and self._handshake is _Handshake.DONE
        self._state = _State.CLOSED
        try:
            if graceful:
                with move_on_after(self._close_timeout):
                    await self._say_goodbye()
        finally:
            await transport.aclose()

    async def _say_goodbye(self) -> None:
        transport = self._transport
        try:
            if not self._eof_sent:
                self._eof_sent = True
                self._drain(keep=False)
                try:
                    self._ssl.unwrap()
                except _ssl.SSLError:
                    pass  # SSLWantReadError: the peer's close_notify is still to come
                out = self._held + self._outgoing.read()
                self._held = b""
                if out:
                    async with self._send_lock:
                        await transport.send_all(out)
            if self._https_compatible or self._eof_received:
                return
            async with self._recv_lock:
                while True:
                    try:
                        if not self._ssl.read(_RECORD_SIZE):
                            return  # the peer's close_notify
                    except _ssl.SSLWantReadError:
                        data = await transport.receive_some(_TRANSPORT_RECEIVE_SIZE)
                        if not data:
                            return
                        self._incoming.write(data)
                    except _ssl.SSLError:
                        return  # SSLZeroReturnError (close_notify), or nothing to wait for
        except (BrokenResourceError, ClosedResourceError, BusyResourceError, OSError):
            pass  # the peer is gone already: there is no one left to say goodbye to
