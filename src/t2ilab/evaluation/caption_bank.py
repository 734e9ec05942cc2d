"""Caption banks for image -> caption retrieval (the first half of ``t2ilab.roundtrip``), and the
label a caption states.

Why retrieval and not a captioning model: the project has no captioner, and a CLIP model ranks a
fixed bank of captions over the dataset's own vocabulary, which makes "was the right caption
found" a well-defined, labelled question. The default bank is built from the checkpoint's dataset:

* class datasets (Fashion-MNIST, MNIST, CIFAR-10): every template x class name (the captions the
  model was trained on; 6 x 10 = 60);
* shapes: ``a {color} {shape}`` over the dataset's colours x shapes (``auto``; 48 by default), or
  ``a {size} {color} {shape} on a {bg} background`` (``auto_full``; sizes and backgrounds too);
* datasets without labels (bring-your-own captions): the training split's distinct captions.

``captions=/path/file.txt`` (one caption per line) or a list replaces it. Every caption's label is
parsed from its words with the dataset's vocabulary (:func:`caption_labeler`), so a bank from a
file is scored exactly like the default one. Shapes label = the FIRST shape's colour x kind, like
``ShapesDataset.label``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

BANK_HELP = ("captions=auto (the checkpoint dataset's templates x classes / attributes), captions=auto_full "
             "(shapes: with sizes and backgrounds), captions=/path/file.txt (one caption per line) or "
             "'captions=[\"a red circle\", ...]'")


@dataclass
class CaptionBank:
    """Captions to retrieve from, the label each states (None = none) and where they came from."""

    captions: list[str]
    labels: list[int | None]
    source: str
    _features: torch.Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.captions)

    def features(self, clip: Any) -> torch.Tensor:
        """(B, D) L2-normalised text embeddings by ``clip`` (an OpenCLIPEncoder; its disk cache applies)."""
        if self._features is None:
            self._features = clip.encode_text(self.captions).float()
        return self._features


def _is_shapes(dm: Any) -> bool:
    return hasattr(dm, "colors") and hasattr(dm, "shapes") and hasattr(dm, "backgrounds")


def caption_labeler(dm: Any) -> Callable[[str], int | None]:
    """caption -> the label it states for the datamodule's dataset, None if it states none.

    Shapes: the first ``<colour> <shape>`` pair (every template puts the colour right before the
    kind); label = kind index x #colours + colour index. Class datasets: the first class name
    (whole words; the longest wins where names overlap, so "t-shirt" is not "shirt"). Datasets
    without labels: always None.

    Args:
        dm: the checkpoint's datamodule (not set up; only its vocabulary is read).
    """
    if _is_shapes(dm):
        colors, shapes = list(dm.colors), list(dm.shapes)
        pat = re.compile(r"(?<![\w-])(%s)\s+(%s)s?(?![\w-])" % ("|".join(map(re.escape, colors)),
                                                                 "|".join(map(re.escape, shapes))), re.IGNORECASE)

        def shapes_label(caption: str) -> int | None:
            m = pat.search(caption)
            return None if m is None else shapes.index(m.group(2).lower()) * len(colors) + colors.index(m.group(1).lower())

        return shapes_label
    names = list(getattr(dm, "CLASS_NAMES", ()) or ())
    if not names:
        return lambda caption: None
    by_length = sorted(names, key=len, reverse=True)
    pat = re.compile(r"(?<![\w-])(%s)(?![\w-])" % "|".join(map(re.escape, by_length)), re.IGNORECASE)
    lower = [n.lower() for n in names]
    return lambda caption: (lambda m: None if m is None else lower.index(m.group(1).lower()))(pat.search(caption))


def default_captions(dm: Any, full: bool = False) -> list[str]:
    """The dataset's own bank (see the module docstring).

    Args:
        dm: the checkpoint's datamodule.
        full: shapes: add sizes and backgrounds.
    """
    if _is_shapes(dm):
        from t2ilab.data.shapes import _article

        if full:
            return [_article(f"a {s} {c} {k} on a {b} background") for k in dm.shapes for c in dm.colors
                    for s in dm.shape_sizes for b in dm.backgrounds]
        return [_article(f"a {c} {k}") for k in dm.shapes for c in dm.colors]
    names = list(getattr(dm, "CLASS_NAMES", ()) or ())
    if names:
        from t2ilab.data.class_prompts import _article

        return [_article(t.format(n)) for n in names for t in dm.TEMPLATES]
    return sorted(set(dm.dataset("train").captions()))


def build_bank(spec: Any, dm: Any) -> CaptionBank:
    """The caption bank for ``captions=spec`` (auto | auto_full | a file | a list), labelled with
    :func:`caption_labeler`; an empty bank is an error naming ``captions``.

    Args:
        spec: the ``captions`` option.
        dm: the checkpoint's datamodule.
    """
    if spec is None or (isinstance(spec, str) and spec in ("auto", "auto_full")):
        full = spec == "auto_full"
        if full and not _is_shapes(dm):
            raise ValueError(f"captions=auto_full is for the shapes dataset; {type(dm).__name__}: use captions=auto")
        captions, source = default_captions(dm, full), f"{spec or 'auto'}:{type(dm).__name__}"
    elif isinstance(spec, str):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"captions={spec}: no such file (or use {BANK_HELP})")
        from t2ilab.utils.io import read_text_file

        captions, source = read_text_file(path, "captions").splitlines(), str(path.resolve())
    elif isinstance(spec, Sequence):
        captions, source = [str(c) for c in spec], "list"
    else:
        raise ValueError(f"captions={spec!r} not understood: use {BANK_HELP}")
    captions = list(dict.fromkeys(c.strip() for c in captions if c and c.strip()))  # unique, in order
    if not captions:
        raise ValueError(f"captions: the caption bank ({source}) is empty; give at least one caption: {BANK_HELP}")
    label = caption_labeler(dm)
    return CaptionBank(captions, [label(c) for c in captions], source)


def retrieve(image_features: torch.Tensor, text_features: torch.Tensor,
             chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 caption per image: (indices (N,) long, cosine scores (N,) float) for L2-normalised
    image (N, D) and caption (B, D) embeddings; ties go to the first caption.

    Args:
        image_features: query embeddings.
        text_features: bank embeddings.
        chunk: images per similarity block (bounds memory for large banks).
    """
    if text_features.shape[0] == 0:
        raise ValueError("captions: the caption bank is empty")
    idx, score = [], []
    t = text_features.float()
    for q in image_features.float().split(chunk):
        sims = q.to(t.device) @ t.T
        i = sims.argmax(dim=1)  # argmax: the first of equal maxima
        idx.append(i.cpu())
        score.append(sims.gather(1, i[:, None])[:, 0].cpu())
    return torch.cat(idx), torch.cat(score)
