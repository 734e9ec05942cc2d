"""A "model" that returns REAL images: the real-data floor of every metric at a given N.

``RealImageReplay(datamodule, split).generate(cond)`` answers each conditioning row with a real
image of ``split`` whose caption embeds to exactly that row (chosen with the generator among the
caption's items). Evaluating it against the reference split gives what real data scores at this
N (FID's small-N bias, the spread over seeds, prompt accuracy = the classifier's own accuracy).
Class datasets share caption templates across splits, so e.g. test images can answer val prompts.
"""

from __future__ import annotations

from typing import Any

import torch


class RealImageReplay:
    """Stand-in generator over the real images of one split.

    Args:
        datamodule: CaptionedDataModule (``dataset(split)``, ``encode``).
        split: where the returned images come from.
    """

    def __init__(self, datamodule: Any, split: str = "val"):
        self.ds = datamodule.dataset(split)
        captions = self.ds.captions()
        self.unique = sorted(set(captions))
        self.items: dict[str, list[int]] = {c: [] for c in self.unique}
        for i, c in enumerate(captions):
            self.items[c].append(i)
        self.table = datamodule.encode(self.unique)

    def generate(self, cond: torch.Tensor, *, generator: Any = None, **sampling: Any) -> torch.Tensor:
        """Real images (N,C,H,W) in [0,1] for prompt embeddings ``cond``; raises for an unknown prompt.

        Args:
            cond: (N, D) prompt embeddings.
            generator: one generator, or one per row (row k's pick depends only on generator k).
            **sampling: ignored.
        """
        sim = cond.float().cpu() @ self.table.T
        best = sim.argmax(1)
        if not torch.allclose(sim.gather(1, best[:, None]).squeeze(1), cond.float().cpu().square().sum(1), atol=1e-4):
            raise ValueError("a prompt has no exact caption in the replay split (use a split with the same captions)")
        gens = generator if isinstance(generator, (list, tuple)) else [generator] * len(best)
        picks = []
        for b, g in zip(best.tolist(), gens, strict=True):
            items = self.items[self.unique[b]]
            dev = g.device if g is not None else "cpu"
            picks.append(items[int(torch.randint(len(items), (1,), generator=g, device=dev))])
        return torch.stack([self.ds.load_image(i) for i in picks]).float().div_(255).to(cond.device)
