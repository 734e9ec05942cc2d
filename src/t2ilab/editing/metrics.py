"""How good an edit is, per image and on average (all on the saved uint8 pixels, CPU is fine):

* ``clip_directional``: cos(E_img(edit) - E_img(source), E_txt(target) - E_txt(source prompt))
  with the metrics CLIP (``metrics.clip``; Gal et al. 2021, as InstructPix2Pix reports it): did the
  image move the way the caption moved? Needs a source caption (else that image has none).
  ``clip_score`` / ``clip_score_before``: the CLIP score of the edit / the source for the target.
* ``ssim`` / ``psnr``: faithfulness of the edit to the source (whole image; PSNR capped at 100 dB for
  identical images). On datasets with a uniform background (shapes, Fashion-MNIST) these mostly
  measure that the rest of the image did not change, not that the object kept its identity.
* ``prompt_accuracy``: share of edits the reference classifier (evaluation/classifier.py, built and
  cached like the evaluation engine's) assigns the TARGET label, when the checkpoint's dataset has
  labels and the target prompt names a class (``target_label`` sets it explicitly).
  ``prompt_accuracy_before`` is the same for the unedited sources: an edit that changes nothing
  scores that, so only the difference means something. ``source_accuracy``: classifier vs the
  sources' known labels (captions.jsonl), the ceiling check.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

PSNR_CAP = 100.0


def clip_directional(src_img: torch.Tensor, edit_img: torch.Tensor, src_txt: torch.Tensor,
                     tgt_txt: torch.Tensor) -> torch.Tensor:
    """(N,) directional similarity of L2-normalised CLIP embeddings (0 when either direction is 0)."""
    n = lambda t: F.normalize(t.float(), dim=-1)  # noqa: E731
    return F.cosine_similarity(n(edit_img) - n(src_img), n(tgt_txt) - n(src_txt), dim=-1, eps=1e-8)


def faithfulness(src_u8: torch.Tensor, edit_u8: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N,) SSIM and PSNR (dB) of each edit against its source, on [0,1] pixels."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    a, b = src_u8.float().div(255), edit_u8.float().div(255)
    ssim = structural_similarity_index_measure(b, a, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(b, a, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return {"ssim": ssim.reshape(-1), "psnr": torch.nan_to_num(psnr.reshape(-1), posinf=PSNR_CAP).clamp(max=PSNR_CAP)}


def find_label(prompt: str, class_names: Sequence[str]) -> int | None:
    """The class a prompt names: whole-word, case-insensitive matches of the class names; longer
    names win over names inside them ("t-shirt" over "shirt"); several classes -> the first in the
    prompt (shapes label an image by its first shape). None when no class is named."""
    hits = []
    for i, name in enumerate(class_names):
        for m in re.finditer(rf"(?<![\w-]){re.escape(name.lower())}(?![\w-])", prompt.lower()):
            hits.append((m.start(), -(m.end() - m.start()), m.end(), i))
    taken, chosen = [], []
    for start, _, end, i in sorted(hits):
        if all(end <= s or start >= e for s, e in taken):
            taken.append((start, end))
            chosen.append(i)
    return chosen[0] if chosen else None


def resolve_label(value: Any, class_names: Sequence[str] | None, what: str) -> int | None:
    """A label given as a class index or a class name -> index; unknown ones -> None (logged)."""
    if value is None or not class_names:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(class_names):
        return int(value)
    if isinstance(value, str):
        names = [c.lower() for c in class_names]
        if value.strip().lower() in names:
            return names.index(value.strip().lower())
        if value.strip().isdigit() and int(value) < len(class_names):
            return int(value)
    log.warning("%s=%r is not one of the %d classes (%s, ...): ignored", what, value, len(class_names),
                ", ".join(class_names[:4]))
    return None


class EditScorer:
    """The metric networks, prepared (and failing on missing weights) before any edit is made.

    Args:
        metrics_cfg: the ``metrics`` node (``clip``, ``classifier``, ``split``, ``clip_score``,
            ``prompt_accuracy``, ``skip_unavailable`` are used).
        cache_dir: cache root (CLIP text embeddings, reference classifiers).
        device: where the metric networks run.
        datamodule: zero-argument callable building the checkpoint's datamodule (only called when a
            classifier is needed).
    """

    def __init__(self, metrics_cfg: Any, cache_dir: str, device: str | torch.device, datamodule: Callable[[], Any]):
        from t2ilab.evaluation.settings import MetricsSettings

        self.s, self.cache_dir, self.device = MetricsSettings.from_config(metrics_cfg), cache_dir, torch.device(device)
        self.datamodule, self.skipped, self.meta = datamodule, {}, {}
        self.clip = self.classifier = None
        self.target_label: int | None = None
        self.class_names: list[str] | None = None

    def prepare(self, target_prompt: str, target_label: Any = None) -> "EditScorer":
        from t2ilab.encoders.errors import WeightsUnavailableError
        from t2ilab.evaluation.clip import ClipScorer

        if not self.s.clip_score:
            self.skipped["clip_directional"] = self.skipped["clip_score"] = "metrics.clip_score=false"
        else:
            try:
                self.clip = ClipScorer(self.s.clip, self.cache_dir, self.device)
                self.meta.update(clip=self.clip.name, clip_random_init=self.clip.random_init)
            except WeightsUnavailableError as e:
                if not self.s.skip_unavailable:
                    raise
                self.skipped["clip_directional"] = self.skipped["clip_score"] = str(e)
        if not self.s.prompt_accuracy:
            self.skipped["prompt_accuracy"] = "metrics.prompt_accuracy=false"
        else:
            self._prepare_classifier(target_prompt, target_label)
        return self

    def _prepare_classifier(self, prompt: str, explicit: Any) -> None:
        from t2ilab.evaluation.classifier import ReferenceClassifier
        from t2ilab.evaluation.reference import dataset_identity

        dm = self.datamodule()
        self.class_names = list(getattr(dm, "class_names", None) or []) or None
        if not self.class_names:
            self.skipped["prompt_accuracy"] = f"the checkpoint's dataset ({type(dm).__name__}) has no class labels"
            return
        label = resolve_label(explicit, self.class_names, "target_label") if explicit is not None else \
            find_label(prompt, self.class_names)
        if label is None:
            self.skipped["prompt_accuracy"] = (f"the target prompt names none of the {len(self.class_names)} classes "
                                               f"({', '.join(self.class_names[:5])}, ...); set target_label=NAME")
            return
        ds = dm.dataset(self.s.split)
        if not getattr(ds, "has_labels", False):
            self.skipped["prompt_accuracy"] = f"the {self.s.split!r} split has no labels"
            return
        c = self.s.classifier
        identity = {**dataset_identity(dm, self.s.split), "trained_on": "train"}  # as evaluation/engine.py
        self.classifier = ReferenceClassifier(
            self.cache_dir, identity, dm.image_size, dm.channels, len(self.class_names), epochs=c["epochs"],
            max_train=c["max_train"], batch_size=c["batch_size"], lr=c["lr"], width=c["width"], seed=c["seed"],
            device=self.device).load_or_train(lambda: dm.dataset("train"), ds)
        self.target_label = label
        self.meta.update(target_label=label, target_class=self.class_names[label],
                         classifier_heldout_accuracy=self.classifier.heldout_accuracy)

    @torch.no_grad()
    def score(self, src_u8: torch.Tensor, edit_u8: torch.Tensor, src_prompts: Sequence[str | None], prompt: str,
              src_labels: Sequence[Any] = ()) -> tuple[dict[str, list], dict[str, Any]]:
        """Per-image metric lists (None where undefined) and the summary (means + counts)."""
        from t2ilab.evaluation.fidelity import clip_scores

        per: dict[str, list] = {k: v.tolist() for k, v in faithfulness(src_u8, edit_u8).items()}
        n = src_u8.shape[0]
        if self.clip is not None:
            enc = self.clip.encoder
            e_src, e_edit = enc.encode_image(src_u8.float() / 255), enc.encode_image(edit_u8.float() / 255)
            texts = sorted({prompt, *(p for p in src_prompts if p)})
            table = dict(zip(texts, self.clip.encode_prompts(texts)))
            tgt = table[prompt].expand(n, -1)
            per["clip_score"] = clip_scores(e_edit, tgt).tolist()
            per["clip_score_before"] = clip_scores(e_src, tgt).tolist()
            per["clip_directional"] = [None if not p else float(clip_directional(e_src[i:i + 1], e_edit[i:i + 1],
                                                                                 table[p][None], tgt[:1])[0])
                                       for i, p in enumerate(src_prompts)]
            if not any(src_prompts):
                self.skipped["clip_directional"] = "no source captions (source_prompt= or captions.jsonl)"
        if self.classifier is not None:
            pred, before = self.classifier.predict(edit_u8), self.classifier.predict(src_u8)
            per["pred_label"], per["source_pred_label"] = pred.tolist(), before.tolist()
            per["target_hit"] = (pred == self.target_label).tolist()
            known = [resolve_label(y, self.class_names, "label") for y in src_labels] if src_labels else []
            per["source_label_index"] = known or [None] * n
        return per, self.summary(per)

    def summary(self, per: dict[str, list]) -> dict[str, Any]:
        def mean(values: list) -> float | None:
            vals = [float(v) for v in values if v is not None]
            return sum(vals) / len(vals) if vals else None

        out: dict[str, Any] = {k: mean(per[k]) for k in ("ssim", "psnr", "clip_score", "clip_score_before",
                                                         "clip_directional") if k in per}
        if "target_hit" in per:
            out["prompt_accuracy"] = mean(per["target_hit"])
            out["prompt_accuracy_before"] = mean([p == self.target_label for p in per["source_pred_label"]])
            pairs = [(p, y) for p, y in zip(per["source_pred_label"], per["source_label_index"]) if y is not None]
            if pairs:
                out["source_accuracy"] = mean([p == y for p, y in pairs])
        return {k: v for k, v in out.items() if v is not None}
