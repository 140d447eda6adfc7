"""Frame streams shared by the scanner tests (Python plain vs gated, C vs Python): a valid
stream with every kind of frame the scanners treat differently, the broken ones each must
refuse, and a hypothesis strategy of random streams with the cutter that splits them."""

from __future__ import annotations

from hypothesis import strategies as st

from router.frames import Opcode, close_frame, encode_frame

LIMIT = 5000


def ok(masked: bool, big: bool = False) -> bytes:
    """A valid stream: fast path, 16-bit length, a fragmented message with a control frame
    inside, an empty message; ``big`` adds a message just under :data:`LIMIT`."""
    frames = [
        encode_frame(Opcode.TEXT, b"hello", mask=masked),  # fast path
        encode_frame(Opcode.BINARY, b"b" * 300, mask=masked),  # 16-bit length
        encode_frame(Opcode.TEXT, b"frag", fin=False, mask=masked),
        encode_frame(Opcode.PING, b"p", mask=masked),  # control inside a message
        encode_frame(Opcode.CONT, b"ment", mask=masked),
        encode_frame(Opcode.PONG, b"", mask=masked),
        encode_frame(Opcode.BINARY, b"", mask=masked),  # empty message
    ]
    if big:
        frames.append(encode_frame(Opcode.BINARY, b"x" * 4900, mask=masked))
    frames.append(close_frame(4000, "bye \u00e9" if big else "bye", mask=masked))
    return b"".join(frames)


#: name -> (a stream the scanner must refuse, whether it comes from the client: masked)
BAD = {
    "unmasked-from-client": (encode_frame(Opcode.TEXT, b"hi"), True),
    "masked-from-server": (encode_frame(Opcode.TEXT, b"hi", mask=True), False),
    "reserved-opcode": (bytes([0x83, 0x00]), False),
    "long-control": (encode_frame(Opcode.PING, b"p" * 126), False),
    "fragmented-control": (encode_frame(Opcode.PING, b"p", fin=False), False),
    "orphan-continuation": (encode_frame(Opcode.CONT, b"x"), False),
    "rsv1": (bytes([0xC1, 0x00]), False),
    "length-top-bit": (bytes([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]), False),
    "one-byte-close": (bytes([0x88, 0x01, 0x03]), False),
    "too-big-16": (encode_frame(Opcode.BINARY, b"x" * (LIMIT + 1)), False),
    "too-big-fragments": (
        encode_frame(Opcode.TEXT, b"a" * 4000, fin=False) + encode_frame(Opcode.CONT, b"a" * 1001),
        False,
    ),
    "too-big-64": (bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]), False),
    "new-message-inside-one": (
        encode_frame(Opcode.TEXT, b"a", fin=False) + encode_frame(Opcode.TEXT, b"b"),
        False,
    ),
}


def prefix(masked: bool) -> bytes:
    """Good frames to put before a bad one, so the error comes with frames to forward."""
    return encode_frame(Opcode.TEXT, b"ok", mask=masked) + encode_frame(
        Opcode.BINARY, b"z" * 130, mask=masked
    )


@st.composite
def streams(draw: st.DrawFn, max_frames: int = 10, rsv1: bool = False) -> tuple[bytes, bool]:
    """Frames of any kind and size class, now and then a broken one (``rsv1``: sometimes with
    the RSV1 bit set as well)."""
    masked = draw(st.booleans())
    out = bytearray()
    for _ in range(draw(st.integers(1, max_frames))):
        opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10, 3]))
        size = draw(st.sampled_from([0, 1, 2, 64, 125, 126, 300, 4096, 5001, 65536]))
        if opcode >= 8 and draw(st.integers(0, 5)):
            size = min(size, 125)
        if opcode == 8 and size == 1 and draw(st.booleans()):
            size = 2
        frame = encode_frame(opcode, b"\x03\xe8" * (size // 2) + b"x" * (size % 2), mask=masked)
        if draw(st.integers(0, 3)) == 0:
            frame = bytes([frame[0] & 0x7F]) + frame[1:]  # not FIN
        if draw(st.integers(0, 15)) == 0:
            frame = frame[:1] + bytes([frame[1] ^ 0x80]) + frame[2:]  # wrong mask bit
        if rsv1 and draw(st.integers(0, 20)) == 0:
            frame = bytes([frame[0] | 0x40]) + frame[1:]  # RSV1
        out += frame
    return bytes(out), masked


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in chunks of ``sizes`` (what is left over as one last chunk)."""
    chunks, pos = [], 0
    for size in sizes:
        if pos >= len(data):
            break
        chunks.append(data[pos : pos + size])
        pos += size
    if pos < len(data):
        chunks.append(data[pos:])
    return chunks
