"""Caption folder (bring your own data): validation, exclusion report, formats, loading, splits."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from t2ilab.data.captions import CaptionFolderDataModule

GOOD = [f"img{i}.png" for i in range(8)]
BLUE = (20, 60, 230)


def _make_images(root: Path) -> None:
    root.mkdir(exist_ok=True)
    for i, name in enumerate(GOOD):
        if i == 0:  # wide image: red side bands, blue centre square -> centre crop must be all blue
            arr = np.zeros((20, 40, 3), dtype=np.uint8)
            arr[:] = (230, 20, 20)
            arr[:, 10:30] = BLUE
            Image.fromarray(arr).save(root / name)
        elif i == 1:
            Image.new("L", (30, 50), 200).save(root / name)  # gray, tall
        elif i == 2:
            Image.new("RGBA", (24, 24), (0, 0, 0, 0)).save(root / name)  # fully transparent -> white
        else:
            Image.new("RGB", (16 + i, 16), (10 * i, 100, 50)).save(root / name)
    (root / "sub").mkdir(exist_ok=True)
    Image.new("RGB", (20, 20), (1, 2, 3)).save(root / "sub" / "nested.jpg")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n this is not an image at all" * 3)
    (root / "empty_caption.png").write_bytes((root / GOOD[3]).read_bytes())


def _rows() -> list[dict[str, str]]:
    rows = [{"file": f, "caption": f"a picture number {i}"} for i, f in enumerate(GOOD)]
    rows.append({"file": "sub/nested.jpg", "caption": "a nested, \"quoted\" caption"})
    rows.append({"file": "corrupt.png", "caption": "a corrupt image"})
    rows.append({"file": "missing.png", "caption": "a missing image"})
    rows.append({"file": "empty_caption.png", "caption": "   "})
    return rows


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["file", "caption"])
            w.writeheader()
            w.writerows(rows)
    return path


@pytest.mark.parametrize("ext", [".jsonl", ".csv"])
def test_bad_entries_are_excluded_and_reported(tmp_path, caplog, ext):
    _make_images(tmp_path / "img")
    cap = _write(tmp_path / f"captions{ext}", _rows())
    dm = CaptionFolderDataModule(image_dir=str(tmp_path / "img"), captions_file=str(cap), image_size=16,
                                 val_fraction=0.25, name="captions")
    with caplog.at_level(logging.WARNING, logger="t2ilab.data.captions"):
        dm.setup("fit")
    report = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "excluded 3 of 12" in report
    for reason, path in (("empty caption", "empty_caption.png"), ("missing file", "missing.png"),
                         ("unreadable image", "corrupt.png")):
        assert f"{reason}: 1 (e.g. {path})" in report
    train, val = dm.dataset("train"), dm.dataset("val")
    files = [e.file for e in train.entries] + [e.file for e in val.entries]
    assert sorted(files) == sorted(GOOD + ["sub/nested.jpg"])  # all good ones, each exactly once
    assert len(val) == 2 and len(train) == 7  # round(0.25 * 9)
    assert dm.dataset("test").captions() == val.captions()  # test = val by default
    assert 'a nested, "quoted" caption' in train.captions() + val.captions()
    for ds in (train, val):
        for i in range(len(ds)):
            img = ds.load_image(i)
            assert img.shape == (3, 16, 16) and img.dtype == torch.uint8


def test_loading_crop_resize_channels(tmp_path, fake_encoder):
    _make_images(tmp_path / "img")
    cap = _write(tmp_path / "c.jsonl", _rows()[:9])
    dm = CaptionFolderDataModule(image_dir=str(tmp_path / "img"), captions_file=str(cap), image_size=8,
                                 val_fraction=0.0, text_encoder=fake_encoder, batch_size=4)
    dm.setup("fit")
    ds = dm.dataset("train")
    idx = {e.file: i for i, e in enumerate(ds.entries)}
    wide = ds.load_image(idx["img0.png"]).permute(1, 2, 0).int()
    assert (wide - torch.tensor(BLUE)).abs().max() <= 2  # centre square only: red bands cropped away
    assert ds.load_image(idx["img2.png"]).min() == 255  # transparent -> white
    assert len(dm.dataset("val")) == 1  # at least one val item even with val_fraction=0
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 8, 8) and -1 <= batch["image"].min() and batch["image"].max() <= 1
    fake_encoder.check_cond(batch)
    gray = CaptionFolderDataModule(image_dir=str(tmp_path / "img"), captions_file=str(cap), image_size=8,
                                   channels=1).dataset("train")
    g = {e.file: i for i, e in enumerate(gray.entries)}
    assert gray.load_image(g["img1.png"]).shape == (1, 8, 8) and (gray.load_image(g["img1.png"]) == 200).all()


def test_split_is_deterministic(tmp_path):
    _make_images(tmp_path / "img")
    rows = [{"file": GOOD[i % 8], "caption": f"caption {i}"} for i in range(40)]
    cap = _write(tmp_path / "c.csv", rows)

    def val_caps(seed: int) -> list[str]:
        return CaptionFolderDataModule(image_dir=str(tmp_path / "img"), captions_file=str(cap),
                                       seed=seed, val_fraction=0.1).dataset("val").captions()

    assert val_caps(0) == val_caps(0) and len(val_caps(0)) == 4
    assert val_caps(0) != val_caps(1)


def test_separate_test_file(tmp_path):
    _make_images(tmp_path / "img")
    cap = _write(tmp_path / "c.jsonl", _rows()[:8])
    test = _write(tmp_path / "t.jsonl", [{"file": "sub/nested.jpg", "caption": "held-out test"}])
    dm = CaptionFolderDataModule(image_dir=str(tmp_path / "img"), captions_file=str(cap),
                                 test_captions_file=str(test))
    assert dm.dataset("test").captions() == ["held-out test"]


def test_all_bad_raises(tmp_path):
    _make_images(tmp_path / "img")
    cap = _write(tmp_path / "bad.jsonl", _rows()[-3:])
    dm = CaptionFolderDataModule(image_dir=str(tmp_path / "img"), captions_file=str(cap))
    with pytest.raises(ValueError, match="bad.jsonl: no valid entries") as err:
        dm.setup("fit")
    for reason in ("empty caption: 1", "missing file: 1", "unreadable image: 1"):
        assert reason in str(err.value)


@pytest.mark.parametrize("name,content,match", [
    ("c.jsonl", '{"file": "img0.png", "caption": "ok"}\n\n{"file": "img1.png", "caption": "x"\n',
     r"c\.jsonl:3: invalid JSON"),
    ("c.jsonl", '{"file": "img0.png", "caption": "ok"}\n{"path": "img1.png", "caption": "x"}\n',
     r"c\.jsonl:2: expected an object"),
    ("c.csv", "path,text\nimg0.png,hello\n", r"c\.csv:1: csv header must contain 'file' and 'caption'"),
    ("c.csv", "file,caption\nimg0.png,hello\nimg1.png\n", r"c\.csv:3: expected 2 columns"),
    ("c.txt", "img0.png hello\n", "unsupported captions file type"),
])
def test_malformed_captions_file(tmp_path, name, content, match):
    _make_images(tmp_path / "img")
    (tmp_path / name).write_text(content)
    dm = CaptionFolderDataModule(image_dir=str(tmp_path / "img"), captions_file=str(tmp_path / name))
    with pytest.raises(ValueError, match=match):
        dm.setup("fit")
