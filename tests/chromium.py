"""Headless Chromium (Debian's ``chromium``) for looking at pages: one launch renders a local file, dumps
its DOM and takes a screenshot. Used by `make screenshot` (tests/php/screenshot.py) and the billing
report's test. Also a tiny PNG reader (zlib only) so tests can check pixels without Pillow.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]
INSTALL_HINT = "chromium is missing: apt-get install -y chromium (make setup installs it)"


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Rendered:
    dom: str  # the DOM after parsing (what --dump-dom prints)
    stderr: str
    returncode: int


def render(page: Path, *, screenshot: Path | None = None, dump_dom: bool = True, width: int = 1200,
           height: int = 900, timeout: float = 120) -> Rendered:
    """Open ``page`` (a local file) once: its DOM on stdout (``dump_dom``) and/or a PNG at ``screenshot``.
    A throwaway profile, no network services; raises FileNotFoundError when chromium is not installed."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError(INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="cs-chromium-") as profile:
        args = [chromium, *FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"]
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            args.append(f"--screenshot={screenshot}")
        if dump_dom:
            args.append("--dump-dom")
        proc = subprocess.run([*args, page.resolve().as_uri()], capture_output=True, text=True, timeout=timeout,
                              check=False)
    return Rendered(dom=proc.stdout, stderr=proc.stderr, returncode=proc.returncode)


@dataclass
class Image:
    width: int
    height: int
    channels: int
    rows: list[bytes]  # decoded rows, ``channels`` bytes per pixel

    def pixel(self, x: int, y: int) -> tuple[int, ...]:
        i = x * self.channels
        return tuple(self.rows[y][i:i + self.channels])

    def count(self, rgb: tuple[int, int, int], *, tolerance: int = 8, top: int = 0, bottom: int | None = None) -> int:
        """Pixels of colour ``rgb`` (within ``tolerance`` per channel) in rows ``top`` to ``bottom``."""
        n = 0
        c = self.channels
        for row in self.rows[top:bottom]:
            for i in range(0, len(row), c):
                if (abs(row[i] - rgb[0]) <= tolerance and abs(row[i + 1] - rgb[1]) <= tolerance
                        and abs(row[i + 2] - rgb[2]) <= tolerance):
                    n += 1
        return n

    def distinct_colours(self, *, step: int = 7) -> int:
        """Distinct colours among every ``step``-th pixel: 1 for a blank page."""
        c = self.channels
        seen = {bytes(row[i:i + 3]) for row in self.rows[::step] for i in range(0, len(row), c * step)}
        return len(seen)


def read_png(path: Path, *, max_rows: int | None = None) -> Image:
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes); only the first ``max_rows``
    rows when given (filters depend on rows above only, so the top of a page is cheap)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, idat = 8, []
    width = height = channels = 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
            depth, colour, interlace = body[8], body[9], body[12]
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError(f"unsupported PNG (depth {depth}, colour type {colour}, interlace {interlace})")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    wanted = height if max_rows is None else min(height, max_rows)
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(wanted):
        start = y * (stride + 1)
        row_filter = raw[start]
        line = bytearray(raw[start + 1:start + 1 + stride])
        if row_filter == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif row_filter == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif row_filter == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif row_filter == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = prev[i]
                c = prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        elif row_filter != 0:
            raise ValueError(f"bad PNG filter {row_filter} in row {y}")
        rows.append(bytes(line))
        prev = line
    return Image(width, height, channels, rows)
