"""CLIP score: higher for matching than for shuffled prompts, in a case constructed to have an answer.

A randomly initialised CLIP has no semantics, so real "a red circle" images would score at chance.
Instead the images are MADE to match: starting from grey, each image's pixels are optimised by
gradient ascent so that the (random, tiny) CLIP's image embedding points at the text embedding of
its own prompt. By construction the matching pairs are aligned, and a correct CLIP score must rank
them above shuffled pairs. This tests the metric code honestly: the real open_clip model, its
preprocessing, the uint8 quantisation, ``100 * max(cos, 0)``, and (through the Evaluator) that
sample i is scored against prompt i across chunks — not that the random CLIP "understands" anything.
"""

from __future__ import annotations

import pytest
import torch

from t2ilab.evaluation.clip import ClipScorer
from t2ilab.evaluation.engine import Evaluator
from t2ilab.evaluation.fidelity import clip_scores
from t2ilab.evaluation.images import to_uint8


def aligned_images(scorer: ClipScorer, text_emb: torch.Tensor, steps: int = 60, size: int = 32) -> torch.Tensor:
    """Float images in [0,1] whose CLIP image embedding is pushed towards ``text_emb`` row-wise.

    Runs single-threaded: for a model this tiny, 2-thread synchronisation costs ~50x the compute
    on a busy 2-core machine."""
    enc, threads = scorer.encoder, torch.get_num_threads()
    enc.load()
    logits = torch.zeros(len(text_emb), 3, size, size, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.2)
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            emb = enc.model.encode_image(enc._preprocess(torch.sigmoid(logits)))
            loss = -torch.nn.functional.cosine_similarity(emb, text_emb, dim=-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return torch.sigmoid(logits).detach()


class LookupModel:
    """Returns, for each conditioning row, the prepared image of prompt ``shift`` places further."""

    def __init__(self, table: torch.Tensor, images: torch.Tensor, shift: int = 0):
        self.table, self.images, self.shift = table, images, shift

    def generate(self, cond, *, generator=None, **sampling):
        which = (cond.float() @ self.table.T).argmax(1)
        return self.images[(which + self.shift) % len(self.images)]


def test_clip_score_formula():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert clip_scores(a, b).tolist() == [100.0, 0.0, 0.0]  # 100 * max(cos, 0)


def test_matching_prompts_score_higher_than_shuffled(shapes_dm, metrics_cfg, standin, tmp_path):
    cfg = metrics_cfg(num_samples=24, batch_size=8, prompt_accuracy=False)
    ev = Evaluator(cfg, shapes_dm, str(tmp_path), feature_extractor=standin(0)).prepare("cpu")
    unique = sorted(set(ev.plan.prompts))
    text = ev.clip.encode_prompts(unique)
    images = aligned_images(ev.clip, text)
    u8 = to_uint8(images)
    matching = ev.clip.score(u8, text)
    shuffled = ev.clip.score(u8, text.roll(1, dims=0))
    assert matching.mean() > shuffled.mean() + 15, (matching, shuffled)
    assert (matching > shuffled).float().mean() >= 0.9
    # through the engine: sample i must be scored against prompt i (chunks of 8, 24 samples)
    table = shapes_dm.encode(unique)
    good = ev.evaluate(LookupModel(table, images))["clip_score"]
    bad = ev.evaluate(LookupModel(table, images, shift=1))["clip_score"]
    assert good == pytest.approx(float(matching[[unique.index(p) for p in ev.plan.prompts]].mean()), abs=1e-3)
    assert good > bad + 10
