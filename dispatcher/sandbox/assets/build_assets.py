"""Write the Qiniu simulator's sample files: ``python dispatcher/sandbox/assets/build_assets.py``.

Each file is the smallest thing that is still real for the tools that read it:

* ``demo.mp4`` — ISO-BMFF ``ftyp`` + ``moov`` (``mvhd``, a 320x240 video
  ``trak`` and an audio ``trak``, each with ``tkhd``/``mdhd``/``hdlr`` and
  empty sample tables) + ``mdat`` padding: 5 s long, a few KB.
* ``demo.jpg`` — a 160x120 grey baseline JPEG (JFIF, one component, all-DC
  blocks coded with one-symbol Huffman tables).
* ``demo.amr`` — 2 s of AMR-NB 12.2 kbit/s frames.

Not imported at run time; the simulator reads the files it writes.
"""

from __future__ import annotations

import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
UNITY_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _track(
    track_id: int, handler: bytes, name: bytes, duration_s: float, width: int, height: int
) -> bytes:
    movie_timescale, media_timescale = 1000, 12800 if handler == b"vide" else 44100
    tkhd = full_box(
        b"tkhd",
        0,
        3,  # enabled | in movie
        struct.pack(">IIII", 0, 0, track_id, 0),
        struct.pack(">I", int(duration_s * movie_timescale)),
        b"\0" * 8,
        struct.pack(">hhhH", 0, 0, 0x0100 if handler == b"soun" else 0, 0),
        UNITY_MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = full_box(
        b"mdhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, media_timescale, int(duration_s * media_timescale)),
        struct.pack(">HH", 0x55C4, 0),  # language "und"
    )
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, handler), name + b"\0")
    media_header = (
        full_box(b"vmhd", 0, 1, b"\0" * 8)
        if handler == b"vide"
        else full_box(b"smhd", 0, 0, b"\0" * 4)
    )
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 0)),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    minf = box(b"minf", media_header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))


def build_mp4(duration_s: float = 5.0, width: int = 320, height: int = 240) -> bytes:
    """A structurally valid MP4 whose headers say ``duration_s`` and ``width`` x ``height``."""
    ftyp = box(b"ftyp", b"isom", struct.pack(">I", 512), b"isom", b"iso2", b"avc1", b"mp41")
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, int(duration_s * 1000)),
        struct.pack(">IH", 0x10000, 0x0100),
        b"\0" * 10,
        UNITY_MATRIX,
        b"\0" * 24,
        struct.pack(">I", 3),  # next track id
    )
    moov = box(
        b"moov",
        mvhd,
        _track(1, b"vide", b"VideoHandler", duration_s, width, height),
        _track(2, b"soun", b"SoundHandler", duration_s, 0, 0),
    )
    # Padding so the file has a plausible, non-trivial size.
    mdat = box(b"mdat", bytes(range(256)) * 8)
    return ftyp + moov + mdat


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def build_jpeg(width: int = 160, height: int = 120) -> bytes:
    """A grey baseline JPEG: every 8x8 block is DC 0 (level 128) with no AC terms."""
    app0 = _segment(0xE0, b"JFIF\0" + struct.pack(">BBBHHBB", 1, 1, 0, 1, 1, 0, 0))
    dqt = _segment(0xDB, b"\x00" + b"\x01" * 64)
    sof0 = _segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    # One code of length 1 ("0") per table: DC category 0 and AC end-of-block.
    one_code = b"\x01" + b"\x00" * 15 + b"\x00"
    dht = _segment(0xC4, b"\x00" + one_code + b"\x10" + one_code)
    sos = _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    bits = "00" * blocks  # DC "0" + EOB "0" per block
    bits += "1" * (-len(bits) % 8)  # pad with ones, as the standard asks
    scan = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return b"\xff\xd8" + app0 + dqt + sof0 + dht + sos + scan + b"\xff\xd9"


def build_amr(seconds: float = 2.0) -> bytes:
    """AMR-NB at 12.2 kbit/s (mode 7): one 32-byte frame per 20 ms."""
    frame = bytes([0x3C]) + b"\0" * 31
    return b"#!AMR\n" + frame * int(seconds / 0.02)


def main() -> None:
    (HERE / "demo.mp4").write_bytes(build_mp4())
    (HERE / "demo.jpg").write_bytes(build_jpeg())
    (HERE / "demo.amr").write_bytes(build_amr())


if __name__ == "__main__":
    main()
