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
   cached real statistics, CLIP score and prompt accuracy there, once.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np
import torch

from t2ilab.encoders.errors import WeightsUnavailableError
from t2ilab.evaluation import fidelity as fm
from t2ilab.evaluation.images import SampleWriter, to_uint8
from t2ilab.evaluation.plan import SamplePlan
from t2ilab.evaluation.reference import ReferenceStats, dataset_identity
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
        self.inception = feature_extractor
        self.device: torch.device | None = None
        self._plan: SamplePlan | None = None
        self._ready: set[str] = set() if feature_extractor is None else {"inception"}
        self.thumbnails: dict[str, Any] = {}

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
        if s.prompt_accuracy and "classifier" not in self._ready:
            self._ready.add("classifier")
            self._prepare_classifier(ds)
        if reference and self.inception is not None and self.reference is None:
            self.reference = ReferenceStats(self.cache_dir, dataset_identity(self.dm, s.split), self.dm.image_size,
                                            self.dm.channels, s.num_reference, self.inception)
            self.reference.load_or_compute(lambda idx: torch.stack([ds.load_image(int(i)) for i in idx]),
                                           len(ds), s.num_reference, s.batch_size)
        return self

    def _prepare_classifier(self, ds: Any) -> None:
        from t2ilab.evaluation.classifier import ReferenceClassifier

        if not getattr(ds, "has_labels", False):
            self.skipped["prompt_accuracy"] = f"the {self.s.split!r} split of {type(self.dm).__name__} has no labels"
            return
        if not self.plan.label_ok.any():
            self.skipped["prompt_accuracy"] = "no evaluation prompt states the attributes that define its label"
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
        chunks = plan.chunks_of(rank, world_size)
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
        t0, pos, self.thumbnails = time.perf_counter(), 0, {}
        for c in chunks:
            idx = plan.chunk_indices(c)
            gen = torch.Generator(device=dev).manual_seed(plan.chunk_seed(c))
            x = model.generate(cond_table[rows[idx]].to(dev), generator=gen, **self.s.sampling)
            sl = slice(pos, pos + len(idx))
            rec["nonfinite"][sl] = (~torch.isfinite(x)).flatten(1).float().mean(1).cpu()
            u8 = to_uint8(x)
            rec["index"][sl] = torch.as_tensor(idx)
            if self.inception is not None:
                feats = self.inception(u8)
                rec["features"][sl], rec["logits"][sl] = feats["2048"], feats["logits_unbiased"]
            if self.clip is not None:
                rec["clip"][sl] = self.clip.score(u8, text_emb[idx])
            if self.classifier is not None:
                rec["pred"][sl] = self.classifier.predict(u8)
            if writer is not None:
                writer.write_images(u8, idx)
            self._keep_thumbnails(u8, idx, rec, sl)
            pos += len(idx)
        rec["seconds"] = torch.tensor([time.perf_counter() - t0])
        log.info("rank %d: generated + featurised %d samples in %.1fs", rank, pos, float(rec["seconds"]))
        return rec

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

    # ------------------------------------------------------------------ metrics (rank 0)
    def compute(self, rec: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Metrics from the gathered records of all ranks.

        Args:
            rec: records (concatenated over ranks), padding included.
        """
        keep = rec["index"] >= 0
        order = torch.argsort(rec["index"][keep])
        got = {k: v[keep][order] for k, v in rec.items() if k not in ("seconds",)}
        if not torch.equal(got["index"], torch.arange(self.s.num_samples)):
            raise RuntimeError("gathered samples do not cover 0..N-1 exactly once (rank/shard mismatch)")
        s, out = self.s, {}
        if self.inception is not None:
            out.update(self._fidelity(got["features"], got["logits"]))
        if self.clip is not None:
            out["clip_score"] = float(got["clip"].mean())
            out["clip_score_std"] = float(got["clip"].std()) if len(got["clip"]) > 1 else 0.0
        if self.classifier is not None:
            ok = torch.from_numpy(self.plan.label_ok)
            labels = torch.from_numpy(self.plan.labels)
            out["prompt_accuracy"] = float((got["pred"][ok] == labels[ok]).float().mean())
            out["prompt_accuracy_n"] = int(ok.sum())
            out["classifier_heldout_accuracy"] = self.classifier.heldout_accuracy
        out["nonfinite_fraction"] = float(got["nonfinite"].mean())
        if out["nonfinite_fraction"] > 0:
            log.error("%.2g%% of generated pixels are NaN/inf (mapped to 0)", 100 * out["nonfinite_fraction"])
        out["skipped"] = {m: r for m, r in self.skipped.items() if getattr(s, m, False)}
        out["meta"] = self._meta(float(rec["seconds"].max()))
        return out

    def _fidelity(self, feats: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
        s, ref, out = self.s, self.reference, {}
        if s.fid:
            out["fid"] = fm.fid_from_statistics(fm.fid_statistics(feats), ref.fid_stats())
        if s.kid:
            out.update(fm.kid(feats, ref.features(), s.kid_subset_size, s.kid_subsets))
        if s.isc:
            out.update(fm.inception_score(logits, min(s.isc_splits, len(logits))))
            out["isc_real"] = float(ref._data["isc_real"])
        if s.prc:
            dev = self.device or torch.device("cpu")
            out.update(fm.precision_recall(feats.to(dev), ref.features().to(dev), s.prc_k, ref.radii(s.prc_k, dev)))
        return out

    def _meta(self, seconds: float) -> dict[str, Any]:
        s, n = self.s, self.s.num_samples
        meta = {"num_samples": n, "split": s.split, "seed": s.seed, "batch_size": s.batch_size,
                "sampling": dict(s.sampling), "generate_seconds": seconds, "images_per_second": n / max(seconds, 1e-9)}
        if self.reference is not None:
            meta.update(num_reference=self.reference.description["num_reference"], reference_key=self.reference.key,
                        inception=self.inception.fingerprint, inception_weights=self.inception.path)
        if self.clip is not None:
            meta.update(clip_model=self.clip.name, clip_fingerprint=self.clip.fingerprint)
        if self.classifier is not None:
            meta["classifier_key"] = self.classifier.key
        return meta

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
        result = self.compute(rec)
        result["meta"]["total_seconds"] = time.perf_counter() - t0
        return result
