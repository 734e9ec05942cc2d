"""A caption font that can draw the prompts' characters (no font is shipped with t2ilab).

Candidates, in order: DejaVu Sans from matplotlib's package data (a dependency of the reports),
then TrueType/OpenType fonts found on the machine (Debian: fonts-dejavu, fonts-noto*, ...). The
first that has a glyph for every character of the text wins; otherwise Pillow's built-in font is
used, with one warning naming the characters that will show as boxes and how to fix it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")
PREFERRED = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "NotoSansCJK-Regular.ttc", "DroidSansFallbackFull.ttf",
             "LiberationSans-Regular.ttf")
_PROBE_MISSING = "\U0010fffd"  # private use: no font has it, so it renders as the font's "missing" glyph


@functools.lru_cache(maxsize=1)
def font_files() -> tuple[Path, ...]:
    """Candidate font files, preferred ones first."""
    found: list[Path] = []
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        found.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf")
    for d in FONT_DIRS:
        if d.is_dir():
            for ext in ("*.ttf", "*.otf", "*.ttc"):
                found.extend(sorted(d.rglob(ext)))
    rank = {name: i for i, name in enumerate(PREFERRED)}
    found = [p for p in found if p.is_file()]
    return tuple(sorted(dict.fromkeys(found), key=lambda p: rank.get(p.name, len(PREFERRED))))


def covers(font: ImageFont.FreeTypeFont, text: str) -> bool:
    """Whether ``font`` has a real glyph (not the missing-glyph box) for every visible character."""
    missing = _glyph(font, _PROBE_MISSING)
    return all(_glyph(font, ch) != missing for ch in set(text) if not ch.isspace())


def _glyph(font: ImageFont.FreeTypeFont, ch: str) -> bytes:
    size = int(getattr(font, "size", 11))
    im = Image.new("L", (3 * size, 3 * size))
    ImageDraw.Draw(im).text((0, 0), ch, font=font, fill=255)
    return im.tobytes()


@functools.lru_cache(maxsize=64)
def _load(path: Path, size: int) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return None


def caption_font(text: str, size: int = 11) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The first candidate font that covers ``text``; Pillow's default (with a warning) if none does."""
    for path in font_files():
        font = _load(path, size)
        if font is not None and covers(font, text):
            return font
    default = ImageFont.load_default(size)
    odd = sorted({ch for ch in text if ord(ch) > 127 and not ch.isspace()})
    if odd:
        _warn_once("".join(odd))
    return default


@functools.lru_cache(maxsize=16)
def _warn_once(chars: str) -> None:
    log.warning("no installed font can draw %r in the grid captions (they will show as boxes); install one, "
                "e.g. `apt-get install fonts-noto-cjk` (CJK) or `apt-get install fonts-dejavu-core`", chars)
