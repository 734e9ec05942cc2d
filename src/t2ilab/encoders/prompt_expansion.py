"""Prompt expansion (``prompt_expansion=none|templates|lm``): richer captions before text encoding.

Short captions ("a photo of a sneaker") give the text encoder little to work with; an expander turns
each into a longer description. It is applied by wrapping the encoder (:class:`ExpandedEncoder`), so
training captions and sampling / evaluation prompts get exactly the same expansion, while datasets,
grids and metrics keep showing the ORIGINAL captions. ``TemplateExpander`` (no model, deterministic)
appends hand-written term descriptions (``t2ilab.data.descriptions``); ``LMExpander`` lets a small causal
LM (GPT-2 family) continue a prompt template, greedy + seeded, cached on disk so later runs skip the LM.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from t2ilab.data.descriptions import TemplateExpander, term_descriptions
from t2ilab.encoders.cache import file_sha256
from t2ilab.encoders.errors import WeightsUnavailableError
from t2ilab.encoders.hub import _hf_offline

__all__ = ["KINDS", "ExpandedEncoder", "LMExpander", "TemplateExpander", "build_expander", "clean_clause"]
log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when LMExpander's input/cleaning changes: invalidates cached expansions
MAX_CLAUSE_CHARS = 160  # generated clauses are cut (at a word boundary) to this length
Expander = Callable[[list[str]], list[str]]
_OPTIONS = {"none": (), "templates": ("descriptions_file", "style"),
            "lm": ("model_name_or_path", "prompt_template", "max_new_tokens", "seed", "do_sample", "device",
                   "batch_size", "revision", "cache_dir")}
KINDS = tuple(_OPTIONS)


class ExpandedEncoder:
    """``encoder`` whose ``encode_text`` (and ``encode_text_tokens``, if it has one) encodes ``expander(captions)``.

    Every other attribute (``dim``, ``token_dim``, ``name``, ``cache_dir``, ``encode_image``, ``fingerprint``
    ...) is read from / written to the wrapped encoder. The fingerprint is deliberately unchanged: the
    embedding cache maps caption TEXT -> embedding for one set of weights, and an expanded caption is a
    different text, so it gets its own cache key and never collides with an unexpanded caption. Callers keep
    passing (and keying tables by) the original captions. Expansions are memoised per caption.
    Token conditioning: wrap it INSIDE, ``ExpandedEncoder(TokenConditioning(enc), expander)``, so pooled
    and token states are both computed from (and cached under) the expanded text; ``text_tokens`` is
    forwarded unexpanded (expanding it would cache expanded states under the original caption).
    """

    _OWN = ("encoder", "expander", "_expansions", "_warned")

    def __init__(self, encoder: Any, expander: Expander) -> None:
        for k, v in zip(self._OWN, (encoder, expander, {}, False)):
            object.__setattr__(self, k, v)

    def expand(self, captions: list[str]) -> list[str]:
        """The expanded text of each caption (expander called only for captions not seen before)."""
        if isinstance(captions, str):
            raise TypeError("expected a list of captions, not a single string")
        captions = list(captions)
        new = [c for c in dict.fromkeys(captions) if c not in self._expansions]
        if new:
            out = list(self.expander(new))
            if len(out) != len(new):
                raise RuntimeError(f"prompt expander returned {len(out)} texts for {len(new)} captions")
            self._expansions.update(zip(new, out))
        return [self._expansions[c] for c in captions]

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        return self.encoder.encode_text(self.expand(captions))

    def __getattr__(self, name: str) -> Any:  # only called when normal lookup fails
        enc = self.__dict__.get("encoder")
        if enc is None:  # during unpickling / before __init__
            raise AttributeError(name)
        attr = getattr(enc, name)
        if name == "encode_text_tokens":  # exists only if the wrapped encoder has it
            return lambda captions, *a, **k: attr(self.expand(captions), *a, **k)
        if name == "text_tokens":  # raw states of UNEXPANDED text: only a wrongly ordered wrapper calls this
            def text_tokens(captions, *a, **k):
                if not self._warned:
                    object.__setattr__(self, "_warned", True)
                    log.warning("text_tokens() of UNEXPANDED captions requested through ExpandedEncoder: wrap the "
                                "token conditioning inside it, ExpandedEncoder(TokenConditioning(enc), expander)")
                return attr(captions, *a, **k)
            return text_tokens
        return attr

    def __setattr__(self, name: str, value: Any) -> None:  # e.g. enc.batch_size = 8 reaches the real encoder
        if name in self._OWN:
            return object.__setattr__(self, name, value)
        setattr(self.encoder, name, value)

    def __repr__(self) -> str:
        return f"ExpandedEncoder({self.encoder!r}, expander={self.expander!r})"


def _looks_local(path: str) -> bool:
    """A filesystem path rather than a hub repo id ("gpt2", "org/name")."""
    return os.path.exists(path) or path.startswith(("/", ".", "~")) or path.count("/") > 1 or "\\" in path


def _atomic_write(path: Path, text: str) -> None:
    """Readers never see a partial file (utils.io.atomic_write)."""
    from t2ilab.utils.io import atomic_write

    atomic_write(path, text)


def clean_clause(text: str) -> str | None:
    """First sentence/clause of generated text, one line, <= MAX_CLAUSE_CHARS; None if unusable."""
    text = "".join(c if c.isprintable() or c == "\n" else " " for c in text.replace("\ufffd", ""))  # cut bytes
    text = re.split(r"\n|(?<!\d)[.!?]|[.!?](?!\d)", text.strip(), maxsplit=1)[0]  # "3.5" is no sentence end
    text = " ".join(text.split()).strip(" ,;:-\"'`")
    if len(text) > MAX_CLAUSE_CHARS:
        cut = text[:MAX_CLAUSE_CHARS]
        text = (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:-")
    return text if sum(ch.isalpha() for ch in text) >= 3 else None


class LMExpander:
    """``prompt -> prompt + ", " + <first clause an LM writes after prompt_template>``; cached on disk.

    The model loads lazily on the first prompt missing from the cache (``num_model_loads`` /
    ``num_forward_batches`` count the work). Disk cache: ``<cache_dir>/prompt_expansions/<fingerprint>/
    shard-*.jsonl``; each write is a NEW shard (temp file, fsync, ``os.replace``), so concurrent processes
    never see partial files; shards are merged on read (first writer wins). The fingerprint covers the
    weights (sha256 of a local dir's files, or repo id + revision), template, max_new_tokens, seed,
    do_sample and FORMAT_VERSION, not library versions or device: the cache PINS an expansion's text
    once computed, so resumed runs / other machines condition on identical text. Greedy prompts are
    batched in length order; with ``do_sample`` each prompt is generated alone, seeded by (seed, prompt).
    """

    def __init__(self, model_name_or_path: str, prompt_template: str = "{prompt}. In detail, this image shows",
                 max_new_tokens: int = 24, seed: int = 0, do_sample: bool = False,
                 cache_dir: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 16,
                 revision: str | None = None) -> None:
        if "{prompt}" not in prompt_template:
            raise ValueError(f"prompt_expansion.prompt_template must contain '{{prompt}}': {prompt_template!r}")
        self.source, self.revision = str(model_name_or_path), revision
        self.template, self.max_new_tokens, self.seed = prompt_template, int(max_new_tokens), int(seed)
        self.do_sample, self.batch_size, self.cache_dir = bool(do_sample), max(1, int(batch_size)), cache_dir
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        self.local = _looks_local(self.source)
        if self.local and not os.path.isdir(os.path.expanduser(self.source)):
            self._unavailable("is not an existing directory")
        self.model = self.tokenizer = None
        self.num_model_loads = self.num_forward_batches = 0
        self._mem: dict[str, str] = {}
        self._seen: set[str] = set()
        self.fingerprint = self._fingerprint()
        self.dir = None if cache_dir is None else Path(cache_dir).expanduser() / "prompt_expansions" / self.fingerprint

    def _unavailable(self, why: str, cause: Exception | None = None):
        raise WeightsUnavailableError(
            f"prompt_expansion.model_name_or_path={self.source} {why}. Download the model on a machine with "
            "internet access (`hf download gpt2 --local-dir DIR`; older huggingface_hub: `huggingface-cli "
            "download gpt2 --local-dir DIR`), copy DIR here and pass prompt_expansion.model_name_or_path=DIR "
            "(or use prompt_expansion=templates, which needs no model).") from cause

    def _fingerprint(self) -> str:
        if self.local:
            root = Path(self.source).expanduser()
            weights = {p.name: file_sha256(p, self.cache_dir) for p in sorted(root.iterdir())
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() != ".md"}
        else:
            weights = {"repo": self.source, "revision": self.revision or "main"}
        payload = {"format": FORMAT_VERSION, "weights": weights, "template": self.template,
                   "max_new_tokens": self.max_new_tokens, "seed": self.seed, "do_sample": self.do_sample}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def load(self) -> None:
        """Tokenizer + model: local dir / local HF cache first, then ONE online attempt (quick probe first,
        so an unreachable hub fails in seconds instead of a retry storm)."""
        if self.model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer
        src, kw = os.path.expanduser(self.source), ({} if self.local else {"revision": self.revision})
        get = lambda **lo: (AutoTokenizer.from_pretrained(src, **kw, **lo),
                            AutoModelForCausalLM.from_pretrained(src, **kw, **lo))
        try:
            tok, model = get(local_files_only=True)
        except Exception as e:  # noqa: BLE001 - missing files / bad dir / not cached: all mean 'unavailable'
            if self.local or _hf_offline():
                self._unavailable(f"could not be loaded ({type(e).__name__}: {str(e)[:300]})" if self.local else
                                  "is not in the local Hugging Face cache and HF_HUB_OFFLINE is set", e)
            try:
                from huggingface_hub import get_hf_file_metadata, hf_hub_url
                timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 5)
                get_hf_file_metadata(hf_hub_url(src, "config.json", revision=self.revision), timeout=timeout)
                log.info("downloading prompt-expansion LM %s from the Hugging Face hub", src)
                tok, model = get()
            except Exception as e2:  # noqa: BLE001 - network / hub errors vary by version
                msg = (str(e2).splitlines() or [""])[0][:200]
                self._unavailable(f"is not in the local Hugging Face cache and fetching it failed "
                                  f"({type(e2).__name__}: {msg})", e2)
        tok.padding_side = "left"  # decoder-only: generated tokens must directly follow the prompt
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.tokenizer, self.model = tok, model.to(self.device).eval().requires_grad_(False)
        self.num_model_loads += 1

    @torch.no_grad()
    def _generate(self, prompts: list[str], seed: int) -> list[str]:
        tok = self.tokenizer
        enc = tok([self.template.replace("{prompt}", p.strip().rstrip(".")) for p in prompts],  # other {} kept
                  return_tensors="pt", padding=True).to(self.device)
        cuda = list(range(torch.cuda.device_count())) if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the caller's RNG streams are left untouched
            torch.manual_seed(seed)
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=self.do_sample,
                                      num_beams=1, pad_token_id=tok.pad_token_id)
        self.num_forward_batches += 1
        return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def _compute(self, prompts: list[str]) -> dict[str, str]:
        self.load()
        if self.do_sample:
            texts = {p: self._generate([p], int(hashlib.sha256(f"{self.seed}:{p}".encode()).hexdigest()[:8], 16))[0]
                     for p in prompts}
        else:
            order, texts = sorted(prompts, key=lambda p: (len(self.tokenizer(p)["input_ids"]), p)), {}
            for i in range(0, len(order), self.batch_size):
                texts.update(zip(order[i:i + self.batch_size], self._generate(order[i:i + self.batch_size], self.seed)))
        return {p: (f"{p}, {c}" if (c := clean_clause(texts[p])) else p) for p in prompts}

    def _scan(self) -> None:
        """Reads shards written since the last scan (by this or another process)."""
        for path in sorted(self.dir.glob("shard-*.jsonl")) if self.dir is not None and self.dir.is_dir() else []:
            if path.name not in self._seen:
                self._seen.add(path.name)
                try:
                    for r in [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]:
                        self._mem.setdefault(str(r["prompt"]), str(r["expansion"]))
                except (OSError, ValueError, KeyError, TypeError) as e:  # corrupt/foreign: recompute instead
                    log.warning("ignoring unreadable prompt-expansion shard %s (%s)", path, e)

    def _write(self, new: dict[str, str]) -> None:
        if self.dir is None or not new:
            return
        name = f"shard-{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        meta = {"model_name_or_path": self.source, "revision": self.revision, "prompt_template": self.template,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed, "do_sample": self.do_sample}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not (self.dir / "meta.json").exists():
                _atomic_write(self.dir / "meta.json", json.dumps(meta, indent=2))
            _atomic_write(self.dir / name, "".join(json.dumps({"prompt": p, "expansion": e}) + "\n"
                                                   for p, e in new.items()))
            self._seen.add(name)
        except OSError as e:  # the cache is an optimisation, never a failure source
            log.warning("could not write prompt-expansion cache to %s (%s)", self.dir, e)

    def __call__(self, prompts: list[str]) -> list[str]:
        prompts = [str(p) for p in prompts]
        if any(p not in self._mem for p in prompts):
            self._scan()
        missing = [p for p in dict.fromkeys(prompts) if p not in self._mem]
        if missing:
            new = self._compute(missing)
            self._mem.update(new)
            self._write(new)
        return [self._mem[p] for p in prompts]

    def __repr__(self) -> str:
        return f"LMExpander({self.source!r}, fingerprint={self.fingerprint})"


def build_expander(node: Any, data_name: str, cache_dir: str | os.PathLike | None) -> Expander | None:
    """The expander of a ``prompt_expansion`` config node (``kind`` + options); None for ``none``.

    ``cache_dir`` (the run's ``paths.cache_dir``) holds the LM expansion cache unless the node sets one."""
    opts = dict(node or {})  # DictConfig / dict / None
    kind = str(opts.pop("kind", None) or "none").lower()
    if kind not in _OPTIONS:
        raise ValueError(f"unknown prompt_expansion.kind={kind!r}; choose one of {list(_OPTIONS)}")
    bad = sorted(set(opts) - set(_OPTIONS[kind]))
    if bad:
        raise ValueError(f"unknown prompt_expansion option(s) {bad} for kind={kind}; known: {list(_OPTIONS[kind])}")
    if kind == "templates":
        return TemplateExpander(term_descriptions(data_name, opts.get("descriptions_file")), opts.get("style") or "append")
    if kind == "lm":
        return LMExpander(**{**opts, "cache_dir": opts.get("cache_dir") or cache_dir})
    return None
