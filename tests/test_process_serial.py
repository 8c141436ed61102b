"""The process pool's pickling and shared-memory segments (``plait._processes._serial``),
tested without processes: what goes out of band, what comes back, and the errors."""

from __future__ import annotations

import array
import os
import pickle
import socket
import threading
from typing import Any

import pytest

from plait._processes import _serial
from plait._processes._wire import BufferKind, BufferRef, Message, MessageKind, WireError

BIG = _serial.THRESHOLD


def roundtrip(obj: Any) -> tuple[Any, list[BufferRef]]:
    """Pickle, write the segment, read it back, unpickle: what the receiver gets."""
    payload, buffers = _serial.dumps(obj)
    if not buffers:
        return _serial.loads(payload, []), []
    refs, size = _serial.layout(buffers)
    fd = _serial.new_segment_fd(size)
    for _ in _serial.segment_writer(fd, buffers, refs):
        pass
    return _serial.loads(payload, _serial.read_segment(fd, tuple(refs))), refs


class TestOutOfBand:
    def test_small_values_stay_in_band(self) -> None:
        value = (b"x" * (BIG - 1), bytearray(10), [1, "a"], {"k": b"v"})
        back, refs = roundtrip(value)
        assert back == value
        assert refs == []

    def test_large_bytes_come_back_as_bytes(self) -> None:
        data = os.urandom(BIG)
        back, refs = roundtrip(data)
        assert type(back) is bytes
        assert back == data
        assert [ref.kind for ref in refs] == [BufferKind.BYTES]

    def test_large_bytearray_comes_back_writable(self) -> None:
        data = bytearray(os.urandom(BIG + 1))
        back, refs = roundtrip(data)
        assert type(back) is bytearray
        assert back == data
        back[0] ^= 1  # writable
        assert [ref.kind for ref in refs] == [BufferKind.BYTEARRAY]

    def test_large_memoryview_is_a_view(self) -> None:
        data = array.array("d", range(BIG // 8 + 1))
        view = memoryview(data)
        back, refs = roundtrip(view)
        assert isinstance(back, memoryview)
        assert back.format == "d"
        assert back.shape == view.shape
        assert back.tolist() == data.tolist()
        assert [ref.kind for ref in refs] == [BufferKind.VIEW]

    def test_small_and_readonly_memoryviews(self) -> None:
        back, _ = roundtrip(memoryview(b"abc"))
        assert back.readonly
        assert bytes(back) == b"abc"
        back, _ = roundtrip(memoryview(bytearray(b"abc")))
        assert not back.readonly
        back, _ = roundtrip(memoryview(array.array("i", [1, 2, 3])))
        assert back.tolist() == [1, 2, 3]

    def test_non_contiguous_memoryview(self) -> None:
        view = memoryview(bytes(range(100)))[::3]
        back, _ = roundtrip(view)
        assert bytes(back) == bytes(view)

    def test_unsupported_memoryview_format_names_the_fix(self) -> None:
        np = pytest.importorskip("numpy")
        view = memoryview(np.zeros(2, dtype=[("a", "i4"), ("b", "f8")]))
        with pytest.raises(pickle.PicklingError, match=r"view.cast\('B'\)"):
            _serial.dumps(view)

    def test_numpy_arrays_arrive_as_writable_views(self) -> None:
        np = pytest.importorskip("numpy")
        array_ = np.arange(BIG // 8 * 2, dtype=np.float64).reshape(2, -1)
        back, refs = roundtrip(array_)
        assert back.dtype == array_.dtype
        assert back.shape == array_.shape
        assert (back == array_).all()
        assert back.flags.writeable
        back[0, 0] = -1.0  # private to the receiver
        assert [ref.kind for ref in refs] == [BufferKind.VIEW]

    def test_big_bytes_inside_containers(self) -> None:
        data = os.urandom(BIG)
        value = {"a": [1, (data, 2)], "b": data, "c": 3}
        back, refs = roundtrip(value)
        assert back == value
        assert back["a"][1][0] is back["b"]  # the same object: sent once
        assert len(refs) == 1

    def test_containers_without_big_bytes_are_not_copied(self) -> None:
        value = [1, (2, 3), {"x": b"y"}]
        assert _serial._lift(value) is value

    def test_too_deep_bytes_still_travel_in_band(self) -> None:
        data = b"z" * BIG
        value = [[[[[[[[[data]]]]]]]]]
        back, refs = roundtrip(value)
        assert back == value
        assert refs == []

    def test_cyclic_container(self) -> None:
        data = b"q" * BIG
        value: list[Any] = [data]
        value.append(value)
        back, _ = roundtrip(value)
        assert back[0] == data
        assert back[1][0] == data

    def test_closure_captures_by_value(self) -> None:
        counter = [1]

        def read() -> int:
            return counter[0]

        payload, _ = _serial.dumps(read)
        counter[0] = 2
        assert _serial.loads(payload, [])() == 1

    def test_pickler_keeps_nothing_alive(self) -> None:
        class Marker:
            pass

        marker = Marker()
        _serial.dumps([marker])
        import weakref

        ref = weakref.ref(marker)
        del marker
        assert ref() is None


class TestExplain:
    def test_picklable_gives_none(self) -> None:
        assert _serial.explain_unpicklable([1, 2], "x") is None

    def test_finds_the_innermost_culprit(self) -> None:
        lock = threading.Lock()
        found = _serial.explain_unpicklable({"a": 1, "b": [2, lock]}, "argument 1")
        assert found is not None
        path, part, reason = found
        assert path == "argument 1['b'][1]"
        assert part is lock
        assert "lock" in reason

    def test_names_captured_variables(self) -> None:
        lock = threading.Lock()

        def uses() -> object:
            return lock

        found = _serial.explain_unpicklable(uses, "the function")
        assert found is not None
        assert "captured variable 'lock'" in found[0]

    def test_names_attributes(self) -> None:
        class Holder:
            def __init__(self) -> None:
                self.sock = socket.socket()

        holder = Holder()
        try:
            found = _serial.explain_unpicklable(holder, "argument 2")
            assert found is not None
            assert found[0] == "argument 2.sock"
        finally:
            holder.sock.close()


class TestSegments:
    def test_descriptor_past_the_segment_is_refused(self) -> None:
        fd = _serial.new_segment_fd(100)
        with pytest.raises(WireError, match="lies past the end of its 100-byte"):
            _serial.read_segment(fd, (BufferRef(64, 64),))
        with pytest.raises(OSError):
            os.fstat(fd)  # closed anyway

    def test_empty_segment(self) -> None:
        fd = _serial.new_segment_fd(0)
        [view] = _serial.read_segment(fd, (BufferRef(0, 0),))
        assert bytes(view) == b""

    def test_layout_aligns(self) -> None:
        buffers = [
            (pickle.PickleBuffer(b"a" * 10), BufferKind.VIEW),
            (pickle.PickleBuffer(b"b" * 3), BufferKind.BYTES),
        ]
        refs, size = _serial.layout(buffers)
        assert refs == [BufferRef(0, 10), BufferRef(64, 3, BufferKind.BYTES)]
        assert size == 128

    def test_nothing_in_dev_shm(self) -> None:
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm here")
        before = set(os.listdir("/dev/shm"))
        roundtrip(b"m" * BIG)
        assert set(os.listdir("/dev/shm")) == before


class TestInbox:
    def test_descriptor_travels_with_its_frame(self) -> None:
        a, b = socket.socketpair()
        try:
            payload, buffers = _serial.dumps(b"s" * BIG)
            refs, size = _serial.layout(buffers)
            fd = _serial.new_segment_fd(size)
            for _ in _serial.segment_writer(fd, buffers, refs):
                pass
            first = Message(MessageKind.RESULT, 7, payload, tuple(refs))
            chunks, ancdata = _serial.outgoing(first, fd)
            sent = a.sendmsg(chunks, ancdata)
            os.close(fd)
            for chunk in _serial.unsent(chunks, sent):
                a.sendall(chunk)
            chunks, _ = _serial.outgoing(Message(MessageKind.READY, 0), None)
            a.sendall(b"".join(chunks))
            inbox = _serial.Inbox()
            got: list[Any] = []
            while len(got) < 2:
                data, anc, flags, _ = b.recvmsg(
                    _serial.RECV_SIZE, _serial.ANCILLARY_SPACE, _serial.RECV_FLAGS
                )
                inbox.feed(data, anc, flags)
                while (item := inbox.next()) is not None:
                    got.append(item)
            (message, views), (ready, none) = got
            assert message.call_id == 7
            assert _serial.loads(message.payload, views) == b"s" * BIG
            assert ready.kind is MessageKind.READY
            assert none == []
            inbox.close()
        finally:
            a.close()
            b.close()

    def test_buffers_without_a_descriptor(self) -> None:
        inbox = _serial.Inbox()
        chunks, _ = _serial.outgoing(Message(MessageKind.CALL, 3, b"p", (BufferRef(0, 1),)), None)
        inbox.feed(b"".join(chunks), [], 0)
        with pytest.raises(WireError, match="no shared-memory segment came with it"):
            inbox.next()

    def test_unused_descriptors_are_closed(self) -> None:
        fd = _serial.new_segment_fd(1)
        inbox = _serial.Inbox()
        blob = array.array("i", [fd]).tobytes()
        inbox.feed(b"", [(socket.SOL_SOCKET, socket.SCM_RIGHTS, blob)], 0)
        inbox.close()
        with pytest.raises(OSError):
            os.fstat(fd)

    def test_unsent(self) -> None:
        chunks: list[bytes | memoryview] = [b"abc", memoryview(b"defg")]
        assert [bytes(c) for c in _serial.unsent(chunks, 0)] == [b"abc", b"defg"]
        assert [bytes(c) for c in _serial.unsent(chunks, 4)] == [b"efg"]
        assert list(_serial.unsent(chunks, 7)) == []
