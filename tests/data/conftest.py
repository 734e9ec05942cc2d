"""Shared fixtures for the data tests: a deterministic fake text encoder that counts its calls."""

from __future__ import annotations

import hashlib

import pytest
import torch


class FakeTextEncoder:
    """Deterministic caption -> unit vector; records every call so tests can assert caching."""

    dim = 8
    fingerprint = "fake-text-encoder-v1"

    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[str] = []

    @staticmethod
    def vector(caption: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.md5(caption.encode()).digest()[:8], "little")
        v = torch.randn(FakeTextEncoder.dim, generator=torch.Generator().manual_seed(seed))
        return v / v.norm()

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        self.calls += 1
        self.seen.extend(captions)
        return torch.stack([self.vector(c) for c in captions])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - unused
        raise NotImplementedError

    def check_cond(self, batch: dict) -> None:
        """Every cond row must be the embedding of the caption at the same position."""
        expected = torch.stack([self.vector(c) for c in batch["caption"]])
        assert batch["cond"].shape == expected.shape
        torch.testing.assert_close(batch["cond"], expected)


@pytest.fixture
def fake_encoder() -> FakeTextEncoder:
    return FakeTextEncoder()

