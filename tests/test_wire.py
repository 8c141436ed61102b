"""Tests for plait._processes._wire: the sans-I/O framing codec of the worker pipes."""

from __future__ import annotations

import itertools
import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plait._processes._wire import (
    HEADER,
    MAGIC,
    BufferKind,
    BufferRef,
    Decoder,
    Message,
    MessageKind,
    WireError,
    encode,
    encode_chunks,
)

SAMPLES = [
    Message(MessageKind.CALL, 1, b"\x80\x05call", (BufferRef(0, 1 << 20),)),
    Message(MessageKind.RESULT, 1, b"result" * 100),
    Message(MessageKind.ERROR, 2, b"err", (BufferRef(0, 0), BufferRef(4096, 7, BufferKind.BYTES))),
    Message(MessageKind.INIT, 3),
    Message(MessageKind.READY, 0),
    Message(MessageKind.SHUTDOWN, 0),
    Message(MessageKind.CALL, 2**64 - 1, bytearray(b"max id")),
]
STREAM = b"".join(encode(m) for m in SAMPLES)


def decode_all(*chunks: bytes | memoryview) -> list[Message]:
    decoder = Decoder()
    out: list[Message] = []
    for chunk in chunks:
        decoder.feed(chunk)
        out.extend(decoder)
    decoder.eof()
    return out


def header(
    kind: int = 1, flags: int = 0, nbuffers: int = 0, call_id: int = 7, body_len: int = 0
) -> bytes:
    return HEADER.pack(MAGIC, kind, flags, nbuffers, call_id, body_len)


def failure(*chunks: bytes, max_frame_size: int = 1 << 30) -> str:
    """Feed ``chunks`` and return the message of the WireError that must follow."""
    decoder = Decoder(max_frame_size=max_frame_size)
    for chunk in chunks:
        decoder.feed(chunk)
    with pytest.raises(WireError) as info:
        list(decoder)
    return str(info.value)


class TestRoundTrip:
    @pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.kind.name)
    def test_every_kind(self, message: Message) -> None:
        [back] = decode_all(encode(message))
        assert back == message
        assert back.kind is message.kind
        assert bytes(back.payload) == bytes(message.payload)
        assert back.buffers == message.buffers

    def test_all_kinds_covered(self) -> None:
        assert {m.kind for m in SAMPLES} == set(MessageKind)

    def test_decoded_payload_is_read_only(self) -> None:
        [back] = decode_all(encode(SAMPLES[1]))
        assert isinstance(back.payload, memoryview)
        assert back.payload.readonly

    def test_empty_payload_decodes_as_empty_bytes(self) -> None:
        [back] = decode_all(encode(Message(MessageKind.READY, 0)))
        assert back.payload == b""

    def test_non_byte_memoryview_payload(self) -> None:
        view = memoryview(struct.pack("!4I", 1, 2, 3, 4)).cast("I")
        [back] = decode_all(encode(Message(MessageKind.RESULT, 5, view)))
        assert bytes(back.payload) == view.tobytes()

    def test_chunks_do_not_copy_payload(self) -> None:
        payload = bytes(1 << 20)
        chunks = encode_chunks(Message(MessageKind.CALL, 9, payload))
        assert len(chunks) == 2
        assert isinstance(chunks[1], memoryview)
        assert chunks[1].obj is payload
        assert decode_all(*chunks)[0].payload == payload

    def test_empty_payload_is_one_chunk(self) -> None:
        assert len(encode_chunks(Message(MessageKind.INIT, 9))) == 1

    def test_header_layout(self) -> None:
        frame = encode(Message(MessageKind.INIT, 258, b"ab"))
        assert (
            frame
            == MAGIC
            + bytes([4, 0, 0, 0])
            + (258).to_bytes(8, "big")
            + (2).to_bytes(8, "big")
            + b"ab"
        )


class TestSplitting:
    def test_split_at_every_boundary(self) -> None:
        for cut in range(len(STREAM) + 1):
            assert decode_all(STREAM[:cut], STREAM[cut:]) == SAMPLES, cut

    def test_two_cuts_everywhere_in_a_small_stream(self) -> None:
        stream = encode(SAMPLES[0]) + encode(SAMPLES[3])
        for i in range(len(stream) + 1):
            for j in range(i, len(stream) + 1, 3):
                assert decode_all(stream[:i], stream[i:j], stream[j:]) == [
                    SAMPLES[0],
                    SAMPLES[3],
                ]

    def test_one_byte_at_a_time(self) -> None:
        chunks = [STREAM[i : i + 1] for i in range(len(STREAM))]
        assert decode_all(*chunks) == SAMPLES

    def test_many_messages_in_one_feed(self) -> None:
        messages = [Message(MessageKind.RESULT, i, str(i).encode()) for i in range(1000)]
        assert decode_all(b"".join(map(encode, messages))) == messages

    def test_empty_feeds_are_harmless(self) -> None:
        assert decode_all(b"", STREAM, b"", b"") == SAMPLES

    def test_next_message_returns_none_until_complete(self) -> None:
        decoder = Decoder()
        frame = encode(SAMPLES[0])
        decoder.feed(frame[:-1])
        assert decoder.next_message() is None
        assert decoder.in_frame
        decoder.feed(frame[-1:])
        assert decoder.next_message() == SAMPLES[0]
        assert decoder.next_message() is None
        assert not decoder.in_frame

    def test_feed_accepts_memoryview_and_bytearray(self) -> None:
        half = len(STREAM) // 2
        assert decode_all(memoryview(STREAM)[:half], bytearray(STREAM[half:])) == SAMPLES

    def test_caller_may_reuse_its_buffer_after_feed(self) -> None:
        decoder = Decoder()
        buf = bytearray(encode(SAMPLES[1]))
        decoder.feed(buf)
        buf[:] = bytes(len(buf))
        assert decoder.next_message() == SAMPLES[1]


class TestLargePayloads:
    SIZE = 16 << 20

    def test_one_copy_of_a_large_payload(self) -> None:
        payload = bytes(range(256)) * (self.SIZE // 256)
        frame = encode(Message(MessageKind.RESULT, 1, payload))
        view = memoryview(frame)
        step = 1 << 20
        chunks = [view[i : i + step] for i in range(0, len(frame), step)]
        decoder = Decoder()
        tracemalloc.start()
        try:
            for chunk in chunks:
                decoder.feed(chunk)
            message = decoder.next_message()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert message is not None
        # One body-sized bytearray plus small change. A second copy of the payload would
        # double this; even a transient copy of each fed chunk would add `step`.
        assert peak < self.SIZE + step // 2, peak
        assert isinstance(message.payload, memoryview)
        assert isinstance(message.payload.obj, bytearray)
        assert message.payload == payload

    def test_large_payload_in_odd_chunks(self) -> None:
        payload = b"x" * (self.SIZE + 3)
        frame = encode(Message(MessageKind.CALL, 2, payload, (BufferRef(0, 1),)))
        cuts = [0, 1, 17, 100_000, len(frame) // 2, len(frame) - 1, len(frame)]
        [message] = decode_all(*(frame[a:b] for a, b in itertools.pairwise(cuts)))
        assert message.payload == payload


MESSAGES = st.builds(
    Message,
    kind=st.sampled_from(MessageKind),
    call_id=st.integers(0, 2**64 - 1),
    payload=st.binary(max_size=300),
    buffers=st.lists(
        st.builds(
            BufferRef,
            offset=st.integers(0, 2**63 - 1),
            size=st.integers(0, 2**63),
            kind=st.sampled_from(BufferKind),
        ),
        max_size=4,
    ).map(tuple),
)


class TestProperties:
    @settings(max_examples=200, deadline=None)
    @given(messages=st.lists(MESSAGES, max_size=8), data=st.data())
    def test_any_chunking_round_trips(self, messages: list[Message], data: st.DataObject) -> None:
        stream = b"".join(map(encode, messages))
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
        bounds = [0, *cuts, len(stream)]
        chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
        assert decode_all(*chunks) == messages


class TestGarbage:
    def test_bad_magic(self) -> None:
        text = failure(b"HTTP/1.1 200 OK\r\n" + bytes(20))
        assert "bad magic b'HTTP'" in text
        assert "expected b'PLT1'" in text

    def test_bad_magic_detected_from_the_first_byte(self) -> None:
        assert "bad magic b'x'" in failure(b"x")
        assert "bad magic b'PLx'" in failure(b"PL", b"x")

    def test_unknown_kind(self) -> None:
        for kind in (0, 7, 255):
            text = failure(header(kind=kind))
            assert f"unknown message kind {kind}" in text
            assert "1 (CALL)" in text

    def test_unknown_flags(self) -> None:
        assert "unknown flags 0x01" in failure(header(flags=1))

    def test_oversize_frame_refused_from_its_header(self) -> None:
        text = failure(header(body_len=2**64 - 1))
        assert "above max_frame_size=1073741824" in text
        text = failure(header(body_len=101), max_frame_size=100)
        assert "101-byte body" in text
        assert "max_frame_size=100" in text

    def test_limit_is_inclusive(self) -> None:
        frame = encode(Message(MessageKind.CALL, 1, b"x" * 100))
        decoder = Decoder(max_frame_size=100)
        decoder.feed(frame)
        assert decoder.next_message() is not None

    def test_too_many_buffers_for_body(self) -> None:
        assert "announces 3 buffers but its body is only 5 bytes" in failure(
            header(nbuffers=3, body_len=5) + bytes(5)
        )

    def test_descriptor_past_body(self) -> None:
        body = struct.pack("!QQB", 10, 10, 0) + bytes(18)  # 35 >= 2 * 17 bytes
        text = failure(header(nbuffers=3, body_len=len(body)) + body)
        assert "announces 3 buffers but its body is only 35 bytes" in text

    def test_descriptor_overflows(self) -> None:
        body = struct.pack("!QQB", 2**64 - 1, 1, 0)
        text = failure(header(nbuffers=1, body_len=len(body)) + body)
        assert "buffer descriptor 0 ends past 2**64-1" in text

    def test_descriptor_unknown_kind(self) -> None:
        body = struct.pack("!QQB", 0, 1, 9)
        text = failure(header(nbuffers=1, body_len=len(body)) + body)
        assert "buffer descriptor 0 has unknown kind 9" in text

    def test_messages_before_garbage_are_delivered_first(self) -> None:
        decoder = Decoder()
        decoder.feed(encode(SAMPLES[3]) + encode(SAMPLES[4]) + b"junk")
        assert decoder.next_message() == SAMPLES[3]
        assert decoder.next_message() == SAMPLES[4]
        with pytest.raises(WireError, match="bad magic"):
            decoder.next_message()

    def test_failure_is_permanent(self) -> None:
        decoder = Decoder()
        decoder.feed(b"junk")
        with pytest.raises(WireError, match="bad magic"):
            decoder.next_message()
        with pytest.raises(WireError, match="bad magic"):
            decoder.next_message()
        with pytest.raises(WireError, match="already broken: bad magic"):
            decoder.feed(encode(SAMPLES[3]))
        with pytest.raises(WireError, match="bad magic"):
            decoder.eof()

    def test_is_a_value_error(self) -> None:
        assert issubclass(WireError, ValueError)


class TestEof:
    def test_clean_eof(self) -> None:
        decoder = Decoder()
        decoder.feed(STREAM)
        decoder.eof()
        assert list(decoder) == SAMPLES
        assert decoder.next_message() is None

    def test_eof_inside_header(self) -> None:
        decoder = Decoder()
        decoder.feed(encode(SAMPLES[3]) + MAGIC)
        with pytest.raises(WireError, match=r"got 4 of 24 header bytes"):
            decoder.eof()
        assert decoder.next_message() == SAMPLES[3]
        with pytest.raises(WireError, match="stream ended inside a frame"):
            decoder.next_message()

    def test_eof_inside_body(self) -> None:
        frame = encode(Message(MessageKind.RESULT, 42, b"x" * 50))
        decoder = Decoder()
        decoder.feed(frame[:-8])
        with pytest.raises(
            WireError, match="got 42 of 50 body bytes of a RESULT frame for call 42"
        ):
            decoder.eof()

    def test_eof_at_every_cut_inside_a_frame(self) -> None:
        frame = encode(SAMPLES[0])
        for cut in range(1, len(frame)):
            decoder = Decoder()
            decoder.feed(frame[:cut])
            with pytest.raises(WireError, match="stream ended inside a frame"):
                decoder.eof()

    def test_feed_after_eof(self) -> None:
        decoder = Decoder()
        decoder.eof()
        decoder.eof()
        with pytest.raises(WireError, match=r"feed\(\) after eof\(\)"):
            decoder.feed(b"x")


class TestValidation:
    def test_message_kind_must_be_enum(self) -> None:
        with pytest.raises(TypeError, match="MessageKind"):
            Message(1, 0)  # type: ignore[arg-type]

    @pytest.mark.parametrize("call_id", [-1, 2**64])
    def test_call_id_range(self, call_id: int) -> None:
        with pytest.raises(ValueError, match="call_id"):
            Message(MessageKind.CALL, call_id)

    def test_payload_type(self) -> None:
        with pytest.raises(TypeError, match="payload"):
            Message(MessageKind.CALL, 0, "text")  # type: ignore[arg-type]

    def test_buffers_type_and_list_becomes_tuple(self) -> None:
        with pytest.raises(TypeError, match="BufferRef"):
            Message(MessageKind.CALL, 0, b"", ("name",))  # type: ignore[arg-type]
        message = Message(MessageKind.CALL, 0, b"", [BufferRef(0, 1)])  # type: ignore[arg-type]
        assert message.buffers == (BufferRef(0, 1),)

    def test_buffer_ref(self) -> None:
        with pytest.raises(TypeError, match="offset"):
            BufferRef("a", 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="size"):
            BufferRef(0, True)
        with pytest.raises(ValueError, match="size"):
            BufferRef(0, -1)
        with pytest.raises(ValueError, match="past 2"):
            BufferRef(2**64 - 1, 1)
        assert BufferRef(10, 5).end == 15
        with pytest.raises(TypeError, match="kind"):
            BufferRef(0, 1, 1)  # type: ignore[arg-type]

    def test_encode_refuses_oversize(self) -> None:
        with pytest.raises(WireError, match="above the 10-byte limit"):
            encode(Message(MessageKind.CALL, 3, b"x" * 11), max_frame_size=10)

    def test_encode_refuses_non_contiguous(self) -> None:
        view = memoryview(bytes(range(10)))[::2]
        with pytest.raises(WireError, match="contiguous"):
            encode(Message(MessageKind.CALL, 3, view))

    @pytest.mark.parametrize("bad", [0, -1, 2**64, True])
    def test_decoder_max_frame_size(self, bad: int) -> None:
        with pytest.raises((TypeError, ValueError), match="max_frame_size"):
            Decoder(max_frame_size=bad)
