"""Hand-written short visual descriptions of every caption term of the built-in datasets.

Used by ``prompt_expansion=templates`` (:class:`TemplateExpander`, re-exported by
``t2ilab.encoders.prompt_expansion``; it lives here, next to its data, so that module stays small): a caption such as "a photo of a sneaker" gets the description of "sneaker" appended, so the text
encoder sees what the class LOOKS like, not only its name. Descriptions are deliberately short
(a few words): every described term of a caption is appended and CLIP-style encoders cut the text
at 77 tokens, so a two-shape caption with ~7 terms must still fit.

The vocabularies are read from the dataset modules themselves (``t2ilab.data.shapes`` COLORS /
SHAPES / SIZES / BACKGROUNDS and the ``CLASS_NAMES`` of the class datamodules), so a word added to
a dataset without a description is reported (a warning here, a failure in the tests) instead of
silently left unexpanded.

Other datasets (``captions``, a user folder) have no built-in vocabulary: pass your own
``prompt_expansion.descriptions_file=PATH`` (a JSON or YAML mapping term -> description) or use
``prompt_expansion=lm``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import yaml

from t2ilab.data import shapes as _shapes
from t2ilab.data.class_prompts import CIFAR10DataModule as _CIFAR10
from t2ilab.data.class_prompts import FashionMNISTDataModule as _FMNIST
from t2ilab.data.class_prompts import MNISTDataModule as _MNIST

log = logging.getLogger(__name__)

FASHION_MNIST: dict[str, str] = {
    "t-shirt": "a short-sleeved knitted top with a round neck",
    "t-shirt/top": "a short-sleeved knitted top with a round neck",
    "trouser": "long trousers with two straight legs side by side",
    "pullover": "a long-sleeved knitted sweater without buttons",
    "dress": "a one-piece garment widening from the waist to a hem",
    "coat": "a long outer jacket with long sleeves and a front opening",
    "sandal": "an open shoe of thin straps on a flat sole",
    "shirt": "a long-sleeved top with a collar and buttons",
    "sneaker": "a low athletic shoe with laces and a flat rubber sole",
    "bag": "a handbag with a rectangular body and a handle",
    "ankle boot": "a short boot covering the ankle with a thick heel",
}
MNIST: dict[str, str] = {
    "zero": "an oval closed loop", "one": "a single vertical stroke",
    "two": "a curved top, a diagonal stroke and a flat base",
    "three": "a pair of stacked bumps open to the left",
    "four": "an open angle with a vertical stroke and a crossbar",
    "five": "a flat top bar, a short vertical stroke and a round belly",
    "six": "a curved stroke down into a closed bottom loop",
    "seven": "a horizontal top bar and a long diagonal stroke",
    "eight": "a pair of small loops stacked vertically",
    "nine": "a closed top loop with a straight tail down",
}
MNIST.update({str(i): MNIST[w] for i, w in enumerate(_MNIST.CLASS_NAMES) if w in MNIST})
CIFAR10: dict[str, str] = {
    "airplane": "an aircraft with long straight wings in the sky",
    "automobile": "a passenger car with wheels, windows and doors",
    "bird": "a small feathered animal with wings and a beak",
    "cat": "a furry pet with pointed ears and whiskers",
    "deer": "a brown slender animal with long legs and antlers",
    "dog": "a furry pet with a snout, floppy ears and a tail",
    "frog": "a small green amphibian with bulging eyes",
    "horse": "a large hoofed animal with a mane and long legs",
    "ship": "a large boat on the water with a hull and decks",
    "truck": "a large lorry with a cab and a cargo box",
}
SHAPES_VOCAB: dict[str, str] = {  # no description names another vocab word (it would blur attribute binding)
    # colours (t2ilab.data.shapes.COLORS)
    "red": "a warm colour like a tomato", "green": "the colour of fresh grass",
    "blue": "a cool colour like the sky", "yellow": "a bright colour like a lemon",
    "purple": "a deep colour like a plum", "orange": "a warm colour like a pumpkin",
    "cyan": "a bright aqua like tropical water", "pink": "a soft pastel like a flamingo",
    # shapes (SHAPES)
    "circle": "a round shape with no corners", "square": "four equal sides and right angles",
    "triangle": "three straight sides and three corners", "diamond": "a rhombus standing on one point",
    "star": "five pointed spikes", "cross": "a plus sign of two crossing bars",
    # sizes (SIZES)
    "small": "a fifth of the image wide", "large": "a third of the image wide",
    # backgrounds (BACKGROUNDS)
    "white": "a plain bright backdrop", "black": "a plain dark backdrop",
    "gray": "a plain mid-tone backdrop", "beige": "a plain pale sandy backdrop",
}

_ALIASES = {"fmnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "cifar_10": "cifar10"}


def dataset_vocab(dataset_name: str) -> tuple[str, ...]:
    """The caption words of a built-in dataset, read from the dataset code (not from this file)."""
    name = _normalise(dataset_name)
    if name == "shapes":
        return (*_shapes.COLORS, *_shapes.SHAPES, *_shapes.SIZES, *_shapes.BACKGROUNDS)
    classes = {"fashion_mnist": _FMNIST, "mnist": _MNIST, "cifar10": _CIFAR10}
    if name in classes:
        return tuple(classes[name].CLASS_NAMES)
    raise ValueError(f"no built-in vocabulary for dataset {dataset_name!r}")


def _normalise(dataset_name: str) -> str:
    name = str(dataset_name).strip().lower().replace("-", "_")
    return _ALIASES.get(name, name)


def load_descriptions_file(path: str | Path) -> dict[str, str]:
    """Reads a JSON (``.json``) or YAML (anything else) mapping term -> description; validated."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"prompt_expansion.descriptions_file={path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"prompt_expansion.descriptions_file={path}: not valid JSON/YAML ({e})") from e
    if not isinstance(data, dict) or not data:
        raise ValueError(f"prompt_expansion.descriptions_file={path}: expected a non-empty mapping "
                         f"term -> description, got {type(data).__name__}")
    bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, str) or not k.strip()
           or not v.strip()]
    if bad:
        raise ValueError(f"prompt_expansion.descriptions_file={path}: terms and descriptions must be "
                         f"non-empty strings; bad entries: {bad[:5]}")
    return {k.strip(): v.strip() for k, v in data.items()}


def term_descriptions(dataset_name: str, descriptions_file: str | Path | None = None) -> dict[str, str]:
    """term -> short visual description for ``dataset_name`` (a data config ``name``).

    ``descriptions_file`` (JSON/YAML term -> description) extends / overrides the built-in terms;
    it is required for datasets without a built-in vocabulary. Raises ValueError otherwise.
    """
    name = _normalise(dataset_name)
    tables = {"shapes": SHAPES_VOCAB, "fashion_mnist": FASHION_MNIST, "mnist": MNIST, "cifar10": CIFAR10}
    extra = load_descriptions_file(descriptions_file) if descriptions_file else {}
    if name not in tables:
        if extra:
            return extra
        raise ValueError(
            f"prompt_expansion=templates has no built-in term descriptions for dataset {dataset_name!r} "
            f"(built-in: {sorted(tables)}). Either use prompt_expansion=lm (a language model writes the "
            f"descriptions) or pass prompt_expansion.descriptions_file=PATH, a JSON/YAML mapping "
            f'term -> description, e.g. {{"sneaker": "a low athletic shoe with laces"}}')
    missing = [w for w in dataset_vocab(name) if w not in tables[name] and w not in extra]
    if missing:
        log.warning("prompt_expansion=templates: no description for %s words %s (left unexpanded)", name, missing)
    return {**tables[name], **extra}


class TemplateExpander:
    """Appends the descriptions of the known terms found in each prompt; no model, deterministic.

    Terms match whole words, case-insensitively, longest first ("ankle boot" before "boot"; the "shirt"
    in "t-shirt" is not a match), each described once, in order of first appearance. Format:

    * ``style="append"``, one term:  ``"{prompt}, {description}"``
    * ``style="append"``, several:   ``"{prompt}; {term}: {description}; {term2}: {description2}"``
    * ``style="inline"``:            the first occurrence of each term becomes ``"{term} ({description})"``

    Prompts without a known term are returned unchanged (no plural / stemming: "circles" is unknown).
    """

    STYLES = ("append", "inline")

    def __init__(self, descriptions: dict[str, str], style: str = "append") -> None:
        if style not in self.STYLES:
            raise ValueError(f"unknown prompt_expansion.style={style!r}; choose one of {list(self.STYLES)}")
        self.descriptions = {str(k).strip().lower(): str(v).strip() for k, v in descriptions.items()}
        self.style = style
        alt = "|".join(re.escape(t) for t in sorted(self.descriptions, key=lambda t: (-len(t), t))) or r"(?!x)x"
        self._pattern = re.compile(rf"(?<![\w-])({alt})(?![\w-])", re.IGNORECASE)

    def expand_one(self, prompt: str) -> str:
        terms = list(dict.fromkeys(m.group(1).lower() for m in self._pattern.finditer(prompt)))
        if not terms:
            return prompt
        if self.style == "inline":
            done: set[str] = set()

            def sub(m: re.Match) -> str:
                t = m.group(1).lower()
                new = t not in done
                done.add(t)
                return f"{m.group(0)} ({self.descriptions[t]})" if new else m.group(0)
            return self._pattern.sub(sub, prompt)
        if len(terms) == 1:
            return f"{prompt}, {self.descriptions[terms[0]]}"
        return prompt + "".join(f"; {t}: {self.descriptions[t]}" for t in terms)

    def __call__(self, prompts: list[str]) -> list[str]:
        return [self.expand_one(p) for p in prompts]

    def __repr__(self) -> str:
        return f"TemplateExpander({len(self.descriptions)} terms, style={self.style!r})"
