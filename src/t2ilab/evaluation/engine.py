"""The evaluation engine shared by the training callback and ``python -m t2ilab.eval``.

Any model exposing ``generate(cond (N,D), *, generator=None, **sampling) -> float (N,C,H,W) in [0,1]``
is evaluated the same way (no branching on model family):

1. plan: N prompts drawn deterministically from the evaluation split's items (caption + label),
   split into chunks of ``batch_size`` global indices; chunk c is generated with its own seed
   ``SeedSequence([seed, c])``, and chunks are assigned to ranks round-robin, so the union over
   ranks is bit-for-bit the single-process sample set (for a fixed batch_size);
2. per chunk, on the model's device: generate -> ``to_uint8`` (the PNG pixels) -> ONE Inception
   pass (2048-d features + logits), CLIP image embeddings, reference-classifier predictions;
3. gather the per-sample records to rank 0 and compute FID/KID/IS/precision-recall against the
   cached real statistics, CLIP score and prompt accuracy there, once (``scoring.compute``).

Feature networks and metrics run with TF32 disabled (``full_precision``), so numbers do not depend
on the GPU generation or on ``torch.set_float32_matmul_precision`` set for training.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Iterator

import numpy as np
import torch

from t2ilab.encoders.errors import WeightsUnavailableError
from t2ilab.evaluation.images import SampleWriter, stack_images, to_uint8
from t2ilab.evaluation.plan import SamplePlan
from t2ilab.evaluation.reference import ReferenceStats, dataset_identity
from t2ilab.evaluation.scoring import STAGES, compute
from t2ilab.evaluation.settings import INCEPTION_METRICS, MetricsSettings

log = logging.getLogger(__name__)


def model_device(model: Any) -> torch.device:
    """The device a model generates on: ``model.device`` or its first parameter's (else CPU).

    Args:
        model: anything with ``generate``; nn.Modules / LightningModules included.
    """
    dev = getattr(model, "device", None)
    if isinstance(dev, (torch.device, str)):
        return torch.device(dev)
    params = getattr(model, "parameters", None)
    p = next(iter(params()), None) if callable(params) else None
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Disable TF32 matmuls/convolutions inside (restored on exit)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class StageTimer:
    """Wall time per stage (CUDA-synchronised, so GPU work is attributed to its stage)."""

    def __init__(self, device: torch.device):
        self.seconds, self.cuda = torch.zeros(1, len(STAGES), dtype=torch.float64), device.type == "cuda"

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds[0, STAGES.index(stage)] += time.perf_counter() - t0


class Evaluator:
    """Generates N samples from a model and scores them.

    Args:
        settings: the ``metrics`` config (mapping or MetricsSettings).
        datamodule: CaptionedDataModule providing ``dataset(split)``, ``encode``, ``image_size``, ``channels``.
        cache_dir: root of the reference-statistics / classifier / text-embedding caches.
        feature_extractor: replaces the InceptionExtractor (same interface; tests / other backbones).
    """

    def __init__(self, settings: Any, datamodule: Any, cache_dir: str, feature_extractor: Any = None):
        self.s = MetricsSettings.from_config(settings)
        self.dm, self.cache_dir = datamodule, cache_dir
        self.skipped: dict[str, str] = {}
        self.clip = self.classifier = self.reference = None
        self.classifier_real: dict[str, torch.Tensor] | None = None  # Frechet stats of real classifier features
        self.inception = feature_extractor
        self.device: torch.device | None = None
        self._plan: SamplePlan | None = None
        self._ready: set[str] = set() if feature_extractor is None else {"inception"}
        self.thumbnails: dict[str, Any] = {}
        self.sampling_used: dict[str, Any] = dict(self.s.sampling)

    # ------------------------------------------------------------------ setup
    @property
    def plan(self) -> SamplePlan:
        """The deterministic prompts/labels/seeds of the N samples."""
        if self._plan is None:
            self._plan = SamplePlan(self.dm.dataset(self.s.split), self.s.num_samples, self.s.batch_size, self.s.seed)
        return self._plan

    def _unavailable(self, metrics: tuple[str, ...], err: Exception) -> None:
        if not self.s.skip_unavailable:
            raise err
        for m in metrics:
            if getattr(self.s, m):
                self.skipped[m] = str(err)
        log.warning("skipping %s: %s", "/".join(metrics), err)

    def prepare(self, device: str | torch.device = "cpu", reference: bool = True) -> "Evaluator":
        """Load networks (failing early on missing weights), the reference classifier and, when
        ``reference``, the cached real statistics (computed on a miss). Idempotent.

        Args:
            device: where feature networks run (the model's device).
            reference: also load/compute the real reference statistics (rank 0 only under DDP).
        """
        from t2ilab.evaluation.clip import ClipScorer
        from t2ilab.evaluation.inception import InceptionExtractor

        self.device = torch.device(device)
        s, ds = self.s, self.dm.dataset(self.s.split)
        if s.needs_inception and "inception" not in self._ready:
            self._ready.add("inception")
            try:
                self.inception = InceptionExtractor(s.inception_weights, self.device, s.batch_size,
                                                    s.channels_last, self.cache_dir)
            except WeightsUnavailableError as e:
                self._unavailable(INCEPTION_METRICS, e)
        if s.clip_score and "clip" not in self._ready:
            self._ready.add("clip")
            try:
                self.clip = ClipScorer(s.clip, self.cache_dir, self.device)
            except WeightsUnavailableError as e:
                self._unavailable(("clip_score",), e)
        if (s.prompt_accuracy or s.classifier_fd) and "classifier" not in self._ready:
            self._ready.add("classifier")
            self._prepare_classifier(ds)
        if reference and self.inception is not None and self.reference is None:
            self.reference = ReferenceStats(self.cache_dir, dataset_identity(self.dm, s.split), self.dm.image_size,
                                            self.dm.channels, s.num_reference, self.inception)
            with full_precision():
                self.reference.load_or_compute(lambda idx: stack_images(ds, idx), s.batch_size)
        return self

    def _prepare_classifier(self, ds: Any) -> None:
        from t2ilab.evaluation.classifier import ReferenceClassifier

        if not getattr(ds, "has_labels", False):
            self._skip_classifier(f"the {self.s.split!r} split of {type(self.dm).__name__} has no labels")
            return
        if not self.plan.label_ok.any():
            self._skip_classifier("no evaluation prompt states the attributes that define its label")
            return
        names = getattr(ds, "class_names", None) or getattr(self.dm, "class_names", None)
        num_classes = len(names) if names else int(max(ds.label(i) for i in range(len(ds)))) + 1
        c = self.s.classifier
        # the eval split's identity (settings + captions hash) pins the dataset without building train
        identity = {**dataset_identity(self.dm, self.s.split), "trained_on": "train"}
        self.classifier = ReferenceClassifier(
            self.cache_dir, identity, self.dm.image_size, self.dm.channels, num_classes,
            epochs=c["epochs"], max_train=c["max_train"], batch_size=c["batch_size"], lr=c["lr"],
            width=c["width"], seed=c["seed"], device=self.device,
        ).load_or_train(lambda: self.dm.dataset("train"), ds)
        if self.s.classifier_fd:
            with full_precision():
                self.classifier_real = self.classifier.real_frechet_stats(ds, self.s.num_reference, self.s.seed)

    def _skip_classifier(self, reason: str) -> None:
        for m in ("prompt_accuracy", "classifier_fd"):
            self.skipped[m] = reason

    # ------------------------------------------------------------------ generation (every rank)
    @torch.no_grad()
    def generate_shard(self, model: Any, rank: int = 0, world_size: int = 1,
                       writer: SampleWriter | None = None) -> dict[str, torch.Tensor]:
        """Generate + featurise this rank's chunks; returns equally-shaped padded CPU records
        (``index`` = -1 marks padding) so they can be all-gathered.

        Args:
            model: object with ``generate(cond, *, generator=None, **sampling)``.
            rank: this process' rank.
            world_size: number of processes.
            writer: when given, the generated PNGs are written there.
        """
        plan, B, dev = self.plan, self.s.batch_size, model_device(model)
        slots = plan.slots_per_rank(world_size) * B
        cond_table, rows = self._encode_prompts(plan.prompts)
        text_emb = self.clip.encode_prompts(plan.prompts) if self.clip is not None else None
        rec = {"index": torch.full((slots,), -1, dtype=torch.long), "nonfinite": torch.zeros(slots)}
        if self.inception is not None:
            rec["features"], rec["logits"] = torch.zeros(slots, 2048), torch.zeros(slots, 1008)
        if self.clip is not None:
            rec["clip"] = torch.zeros(slots)
        if self.classifier is not None:
            rec["pred"] = torch.full((slots,), -1, dtype=torch.long)
            if self.s.classifier_fd:
                rec["clf_features"] = torch.zeros(slots, self.classifier.feature_dim)
        self.sampling_used = {**getattr(model, "sampling_defaults", {}), **self.s.sampling}
        timer, pos, self.thumbnails = StageTimer(dev), 0, {}
        for c in plan.chunks_of(rank, world_size):
            idx = plan.chunk_indices(c)
            sl = slice(pos, pos + len(idx))
            with timer("generate"):
                gen = torch.Generator(device=dev).manual_seed(plan.chunk_seed(c))
                x = model.generate(cond_table[rows[idx]].to(dev), generator=gen, **self.s.sampling)
                rec["nonfinite"][sl] = (~torch.isfinite(x)).flatten(1).float().mean(1).cpu()
                u8 = to_uint8(x)
            self._check_shape(u8)
            rec["index"][sl] = torch.as_tensor(idx)
            with full_precision():
                self._featurise(u8, idx, sl, rec, text_emb, timer)
            if writer is not None:
                with timer("write"):
                    writer.write_images(u8, idx)
            self._keep_thumbnails(u8, idx, rec, sl)
            pos += len(idx)
        rec["seconds"] = timer.seconds
        log.info("rank %d: generated + featurised %d samples in %.1fs (%s)", rank, pos, float(timer.seconds.sum()),
                 ", ".join(f"{k} {v:.1f}s" for k, v in zip(STAGES, timer.seconds[0].tolist())))
        return rec

    def _featurise(self, u8: torch.Tensor, idx: np.ndarray, sl: slice, rec: dict, text_emb: Any,
                   timer: StageTimer) -> None:
        if self.inception is not None:
            with timer("inception"):
                feats = self.inception(u8)
                rec["features"][sl], rec["logits"][sl] = feats["2048"], feats["logits_unbiased"]
        if self.clip is not None:
            with timer("clip"):
                rec["clip"][sl] = self.clip.score(u8, text_emb[idx])
        if self.classifier is not None:
            with timer("classifier"):
                rec["pred"][sl], feats = self.classifier.classify(u8)
                if "clf_features" in rec:
                    rec["clf_features"][sl] = feats

    def _check_shape(self, u8: torch.Tensor) -> None:
        # Inception would silently resize anything: refuse to compare different resolutions/channels
        want = (self.dm.channels, self.dm.image_size, self.dm.image_size)
        if tuple(u8.shape[1:]) != want:
            raise ValueError(f"the model generates {tuple(u8.shape[1:])} images but the evaluation data "
                             f"({type(self.dm).__name__}) has {want}: evaluate on data of the model's resolution")

    def _encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, np.ndarray]:
        unique = sorted(set(prompts))
        row_of = {p: i for i, p in enumerate(unique)}
        return self.dm.encode(unique), np.array([row_of[p] for p in prompts])

    def _keep_thumbnails(self, u8: torch.Tensor, idx: np.ndarray, rec: dict, sl: slice) -> None:
        have = len(self.thumbnails.get("index", []))
        take = min(self.s.table_size - have, len(idx))
        if take <= 0:
            return
        new = {"image": u8[:take].cpu(), "index": torch.as_tensor(idx[:take]),
               "clip": rec["clip"][sl][:take] if "clip" in rec else None}
        if have:
            new = {k: None if v is None else torch.cat([self.thumbnails[k], v]) for k, v in new.items()}
        self.thumbnails = new

    # ------------------------------------------------------------------ one call
    def evaluate(self, model: Any, rank: int = 0, world_size: int = 1,
                 gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 sample_dir: str | None = None) -> dict[str, Any] | None:
        """Full evaluation; returns the metrics on rank 0 and None elsewhere.

        Args:
            model: object with ``generate``.
            rank: this process' rank.
            world_size: number of processes.
            gather: all_gather of a tensor -> (world_size, ...) (required when world_size > 1).
            sample_dir: also export PNGs + prompts.jsonl there.
        """
        t0 = time.perf_counter()
        self.prepare(model_device(model), reference=rank == 0)
        writer = SampleWriter(sample_dir) if sample_dir else None
        rec = self.generate_shard(model, rank, world_size, writer)
        if world_size > 1:
            if gather is None:
                raise ValueError("world_size > 1 needs a gather function")
            rec = {k: gather(v.to(self.device)).flatten(0, 1).cpu() for k, v in rec.items()}
        if rank != 0:
            return None
        if writer is not None:
            writer.write_index(self.plan.prompts, self.plan.sample_seeds, self.plan.label_list)
        with full_precision():
            result = compute(self, rec)
        result["meta"]["total_seconds"] = time.perf_counter() - t0
        return result
