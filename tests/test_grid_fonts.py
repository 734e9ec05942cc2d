"""Grid captions draw non-ASCII prompts with a font that has their glyphs (issue 11)."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import ImageFont

from t2ilab.tracking import fonts
from t2ilab.tracking.grid import captioned_grid

TEXT = "ein Bär läuft — naïve café"


def test_the_chosen_font_has_glyphs_for_umlauts_and_dashes():
    if not fonts.font_files():
        pytest.skip("no TrueType font on this machine (install fonts-dejavu-core or matplotlib)")
    chosen = fonts.caption_font(TEXT)
    assert isinstance(chosen, ImageFont.FreeTypeFont) and fonts.covers(chosen, TEXT)
    assert not fonts.covers(chosen, "\U0010fffe")  # the probe can fail: a missing glyph is detected


def test_grid_caption_pixels_differ_for_different_non_ascii_words():
    if not fonts.font_files():
        pytest.skip("no TrueType font on this machine")
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = captioned_grid(images, ["ä ö ü"], 2)
    b = captioned_grid(images, ["ß é ñ"], 2)
    assert a.size == b.size and a.tobytes() != b.tobytes()  # with boxes both captions would be identical


def test_without_any_font_file_the_default_is_used_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(fonts, "font_files", lambda: ())
    fonts._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="t2ilab.tracking.fonts"):
        fonts.caption_font("東京")
        fonts.caption_font("東京")
    assert caplog.text.count("no installed font can draw") == 1 and "fonts-noto-cjk" in caplog.text
