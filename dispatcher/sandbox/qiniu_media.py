"""Media probes of the Qiniu simulator: just enough of each format (MP4, AMR, JPEG,
PNG, GIF) to answer ``?avinfo`` and ``?imageInfo`` from an object's bytes."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Clock = Callable[[], float]

MP4_FORMAT = ("mov,mp4,m4a,3gp,3g2,mj2", "QuickTime / MOV")
AUDIO_FORMATS = {
    "audio/amr": ("amr", "3GPP AMR", "amr_nb", "AMR-NB (Adaptive Multi-Rate NarrowBand)", 8000, 1),
    "audio/mpeg": (
        "mp3",
        "MP2/3 (MPEG audio layer 2/3)",
        "mp3",
        "MP3 (MPEG audio layer 3)",
        44100,
        2,
    ),
    "audio/aac": (
        "aac",
        "raw ADTS AAC (Advanced Audio Coding)",
        "aac",
        "AAC (Advanced Audio Coding)",
        44100,
        2,
    ),
}
_AMR_FRAME_BYTES = {
    b"#!AMR\n": (12, 13, 15, 17, 19, 20, 26, 31, 5, 6, 5, 5, 0, 0, 0, 0),
    b"#!AMR-WB\n": (17, 23, 32, 36, 40, 46, 50, 58, 60, 5, 0, 0, 0, 0, 0, 0),
}
_INVALID_AMR_MODES = {b"#!AMR\n": range(12, 15), b"#!AMR-WB\n": range(10, 14)}


# ---------------------------------------------------------------------------
# Media probes: just enough of each format to answer avinfo and imageInfo


@dataclass(frozen=True)
class Track:
    kind: str  # "video", "audio" or the raw handler type
    duration: float | None
    width: int = 0
    height: int = 0
    codec_tag: str = ""


@dataclass(frozen=True)
class MediaProbe:
    """What the bytes say: container, duration and tracks (for avinfo)."""

    format_mime: str
    duration: float | None
    tracks: tuple[Track, ...]


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each ISO-BMFF box in ``data[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for found, payload, box_end in _boxes(data, start, end):
        if found == kind:
            return payload, box_end
    return None


def _time_header(data: bytes, pos: int) -> tuple[int, int]:
    """(timescale, duration) of an ``mvhd`` or ``mdhd`` payload, version 0 or 1."""
    if data[pos] == 1:
        timescale, duration = struct.unpack_from(">IQ", data, pos + 20)
    else:
        timescale, duration = struct.unpack_from(">II", data, pos + 12)
    return timescale, duration


def probe_mp4(data: bytes) -> MediaProbe | None:
    """Duration from ``mvhd``, each track's size from ``tkhd`` and kind from ``hdlr``."""
    if data[4:8] != b"ftyp":
        return None
    try:
        moov = _child(data, 0, len(data), b"moov")
        if moov is None:
            return None
        mvhd = _child(data, *moov, b"mvhd")
        duration = None
        if mvhd is not None:
            timescale, units = _time_header(data, mvhd[0])
            duration = units / timescale if timescale else None
        tracks = []
        for kind, start, end in _boxes(data, *moov):
            if kind == b"trak":
                tracks.append(_probe_track(data, start, end))
    except (struct.error, IndexError):
        return None
    return MediaProbe("video/mp4", duration, tuple(tracks))


def _probe_track(data: bytes, start: int, end: int) -> Track:
    width = height = 0
    tkhd = _child(data, start, end, b"tkhd")
    if tkhd is not None:
        offset = 88 if data[tkhd[0]] == 1 else 76
        width, height = (v >> 16 for v in struct.unpack_from(">II", data, tkhd[0] + offset))
    handler, duration, codec = "", None, ""
    mdia = _child(data, start, end, b"mdia")
    if mdia is not None:
        mdhd = _child(data, *mdia, b"mdhd")
        if mdhd is not None:
            timescale, units = _time_header(data, mdhd[0])
            duration = units / timescale if timescale else None
        hdlr = _child(data, *mdia, b"hdlr")
        if hdlr is not None:
            handler = data[hdlr[0] + 8 : hdlr[0] + 12].decode("latin-1")
        stsd = _stsd(data, *mdia)
        if stsd is not None and struct.unpack_from(">I", data, stsd + 4)[0] > 0:
            codec = data[stsd + 12 : stsd + 16].decode("latin-1")
    kind = {"vide": "video", "soun": "audio"}.get(handler, handler)
    return Track(kind, duration, width, height, codec)


def _stsd(data: bytes, start: int, end: int) -> int | None:
    minf = _child(data, start, end, b"minf")
    stbl = _child(data, *minf, b"stbl") if minf else None
    stsd = _child(data, *stbl, b"stsd") if stbl else None
    return stsd[0] if stsd else None


def probe_amr(data: bytes) -> MediaProbe | None:
    """AMR-NB/WB: 20 ms per frame, frame sizes from each frame's mode."""
    for magic, sizes in _AMR_FRAME_BYTES.items():
        if data.startswith(magic):
            pos, frames = len(magic), 0
            while pos < len(data):
                mode = (data[pos] >> 3) & 0x0F
                if mode in _INVALID_AMR_MODES[magic]:
                    break
                pos += 1 + sizes[mode]
                frames += 1
            duration = frames * 0.02
            return MediaProbe("audio/amr", duration, (Track("audio", duration, codec_tag="samr"),))
    return None


def probe_image(data: bytes) -> tuple[str, int, int, str] | None:
    """(format, width, height, colorModel) from a JPEG SOF, PNG IHDR or GIF header."""
    try:
        if data.startswith(b"\xff\xd8"):
            return _probe_jpeg(data)
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            width, height, depth, color = struct.unpack_from(">IIBB", data, 16)
            model = {0: "gray", 3: "palette"}.get(color, "nrgba")
            return "png", width, height, f"{model}16" if depth == 16 else model
        if data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack_from("<HH", data, 6)
            return "gif", width, height, "palette"
    except (struct.error, IndexError):
        return None
    return None


def _probe_jpeg(data: bytes) -> tuple[str, int, int, str] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):
            pos += 2
            continue
        length = struct.unpack_from(">H", data, pos + 2)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width, components = struct.unpack_from(">HHB", data, pos + 5)
            model = {1: "gray", 3: "ycbcr", 4: "cmyk"}.get(components, "ycbcr")
            return "jpeg", width, height, model
        if marker == 0xDA:  # scan data without a frame header first: not an image we know
            return None
        pos += 2 + length
    return None


def gif_frames(data: bytes) -> int:
    """Frames in a GIF (image descriptors), 1 when the stream cannot be walked."""
    try:
        pos = 13
        if data[10] & 0x80:
            pos += 3 * (2 ** ((data[10] & 0x07) + 1))
        frames = 0
        while pos < len(data):
            block = data[pos]
            if block == 0x3B:
                break
            if block == 0x21:
                pos += 2
            elif block == 0x2C:
                frames += 1
                flags = data[pos + 9]
                pos += 10 + (3 * (2 ** ((flags & 0x07) + 1)) if flags & 0x80 else 0) + 1
            else:
                break
            while data[pos]:  # data sub-blocks
                pos += data[pos] + 1
            pos += 1
        return max(frames, 1)
    except IndexError:
        return 1


# avinfo streams


def seconds_text(value: float | None) -> str:
    return f"{value or 0.0:.6f}"


def video_stream(index: int, duration: float | None, width: int, height: int) -> dict[str, Any]:
    divisor = math.gcd(width, height) or 1
    frames = int((duration or 0) * 25)
    return {
        "index": index,
        "codec_name": "h264",
        "codec_long_name": "H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10",
        "profile": "High",
        "codec_type": "video",
        "codec_time_base": "1/50",
        "codec_tag_string": "avc1",
        "codec_tag": "0x31637661",
        "width": width,
        "height": height,
        "has_b_frames": 0,
        "sample_aspect_ratio": "1:1",
        "display_aspect_ratio": f"{width // divisor}:{height // divisor}",
        "pix_fmt": "yuv420p",
        "level": 30,
        "r_frame_rate": "25/1",
        "avg_frame_rate": "25/1",
        "time_base": "1/12800",
        "start_time": "0.000000",
        "duration": seconds_text(duration),
        "bit_rate": "400000",
        "nb_frames": str(frames),
        "tags": {"language": "und", "handler_name": "VideoHandler"},
    }


def audio_stream(index: int, duration: float | None, mime: str) -> dict[str, Any]:
    if mime in AUDIO_FORMATS:
        _, _, codec, long_name, rate, channels = AUDIO_FORMATS[mime]
        tag_string, tag = "[0][0][0][0]", "0x0000"
    else:  # audio inside an MP4
        codec, long_name, rate, channels = "aac", "AAC (Advanced Audio Coding)", 44100, 2
        tag_string, tag = "mp4a", "0x6134706d"
    bit_rate = 12200 if codec == "amr_nb" else 128000
    return {
        "index": index,
        "codec_name": codec,
        "codec_long_name": long_name,
        "codec_type": "audio",
        "codec_time_base": f"1/{rate}",
        "codec_tag_string": tag_string,
        "codec_tag": tag,
        "sample_fmt": "fltp",
        "sample_rate": str(rate),
        "channels": channels,
        "bits_per_sample": 0,
        "time_base": f"1/{rate}",
        "start_time": "0.000000",
        "duration": seconds_text(duration),
        "bit_rate": str(bit_rate),
        "nb_frames": str(int((duration or 0) * 50)),
        "tags": {"language": "und", "handler_name": "SoundHandler"},
    }
