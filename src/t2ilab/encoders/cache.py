"""Caption -> embedding cache: in memory, optionally mirrored on disk per encoder fingerprint.

Disk layout: ``<cache_dir>/text_embeddings/<fingerprint>/shard-*.pt`` plus a ``meta.json`` for
humans. Every ``put_many`` writes a NEW shard file (never appends/rewrites one): it is written to
a temp file in the same directory, fsync'ed and ``os.replace``'d into place, so readers only ever
see complete shards and any number of processes / cluster nodes may write concurrently. Loading
merges all shards (all writers produce identical embeddings for a caption, so the order does not
matter). Too many small shards are merged into one (again atomically; stale ones are deleted).
Disk problems (read-only or full filesystem, a corrupt shard) are logged and the cache degrades to
memory-only behaviour for that operation: the cache is an optimisation, never a failure source.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path

import torch

from t2ilab.utils.io import atomic_write

log = logging.getLogger(__name__)

SHARD_FORMAT = 1
_SHARD_GLOB = "shard-*.pt"
_FILE_HASHES: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """sha256 of a (large weights) file, memoised by (realpath, size, mtime) in this process and,
    when ``cache_dir`` is given, on disk under ``cache_dir/file_hashes/`` for later processes."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    memo = None
    if cache_dir is not None:
        memo = Path(cache_dir).expanduser() / "file_hashes" / (hashlib.sha1(repr(key).encode()).hexdigest() + ".txt")
        if key not in _FILE_HASHES and memo.is_file():
            _FILE_HASHES[key] = memo.read_text().strip()
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _FILE_HASHES[key] = h.hexdigest()
        if memo is not None:
            try:
                atomic_write(memo, _FILE_HASHES[key], fsync=False)
            except OSError as e:
                log.warning("could not memoise the hash of %s in %s (%s)", path, memo.parent, e)
    return _FILE_HASHES[key]


def payload_fingerprint(payload: dict) -> str:
    """Short stable hex id of a JSON-able description (an encoder's weights + preprocessing)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class EmbeddingCache:
    """Maps caption -> 1-D float32 CPU embedding for ONE encoder fingerprint.

    Args:
        fingerprint: the encoder fingerprint; embeddings of different fingerprints never mix.
        cache_dir: root cache dir (shards go to ``cache_dir/text_embeddings/<fingerprint>/``); None = memory only.
        meta: optional JSON-serialisable description of the encoder, written once to ``meta.json``.
        compact_threshold: when more shards than this are on disk at load time, merge them into one.
    """

    def __init__(
        self,
        fingerprint: str,
        cache_dir: str | os.PathLike | None = None,
        meta: dict | None = None,
        compact_threshold: int = 64,
    ) -> None:
        if not fingerprint or any(c in fingerprint for c in "/\\") or fingerprint.startswith("."):
            raise ValueError(f"invalid fingerprint for a directory name: {fingerprint!r}")
        self.fingerprint = fingerprint
        self.dir = None if cache_dir is None else Path(cache_dir).expanduser() / "text_embeddings" / fingerprint
        self.meta = meta
        self.compact_threshold = compact_threshold
        self._mem: dict[str, torch.Tensor] = {}
        self._seen_shards: set[str] = set()
        self._dim: int | None = None
        self.num_disk_loads = 0  # shards read from disk (for tests / logging)
        self.num_disk_writes = 0  # shards written

    def __len__(self) -> int:
        return len(self._mem)

    def __contains__(self, caption: str) -> bool:
        return caption in self._mem

    # ------------------------------------------------------------------ public API
    def get_many(self, captions: list[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Returns ({caption: embedding} for the hits, de-duplicated list of misses in input order).

        On a miss the disk directory is re-scanned for shards written since the last scan (by this
        or another process), so concurrent jobs share work as soon as it is on disk.
        """
        unique = list(dict.fromkeys(captions))
        if self.dir is not None and any(c not in self._mem for c in unique):
            self._load_new_shards()
        found = {c: self._mem[c] for c in unique if c in self._mem}
        missing = [c for c in unique if c not in self._mem]
        return found, missing

    def put_many(self, embeddings: dict[str, torch.Tensor]) -> None:
        """Adds {caption: (D,) tensor}; the new captions are written to disk as one new shard."""
        new = [c for c in embeddings if c not in self._mem]
        if not new:
            return
        rows = self._rows(new, [torch.as_tensor(embeddings[c]).detach() for c in new])
        for c, r in zip(new, rows):
            self._mem[c] = r
        if self.dir is not None:
            self._write_shard(new, rows)

    def compact(self) -> None:
        """Merges all shards on disk (as currently known) into one new shard, deleting the old ones."""
        if self.dir is None:
            return
        self._load_new_shards(allow_compact=False)
        old = [p for p in self.dir.glob(_SHARD_GLOB) if p.name in self._seen_shards]
        if len(old) <= 1 or not self._mem:
            return
        caps = list(self._mem)
        if self._write_shard(caps, [self._mem[c] for c in caps]):
            for p in old:  # only shards whose content we hold; shards written meanwhile survive
                try:
                    p.unlink()
                except FileNotFoundError:  # another process compacted concurrently
                    pass
            log.info("compacted %d embedding shards in %s", len(old), self.dir)

    # ------------------------------------------------------------------ internals
    # -- row format (TokenStateCache overrides these three) --
    def _rows(self, captions: list[str], rows: list[torch.Tensor]) -> list[torch.Tensor]:
        """Validated CPU rows in storage form, in ONE fresh tensor: rows must not keep a (GPU or
        larger) batch tensor alive."""
        for c, r in zip(captions, rows):
            if r.dim() != 1:
                raise ValueError(f"embedding for {c!r} must be 1-D, got shape {tuple(r.shape)}")
        stacked = torch.stack([r.to("cpu", torch.float32) for r in rows]).contiguous()
        self._check_dim(stacked.shape[1], "put_many")
        return list(stacked)

    def _payload(self, rows: list[torch.Tensor]) -> dict:
        return {"embeddings": torch.stack(rows)}

    def _from_payload(self, blob: dict, n: int, where: str) -> list[torch.Tensor]:
        emb = blob["embeddings"]
        if emb.shape[0] != n:
            raise ValueError("size mismatch")
        self._check_dim(emb.shape[1], where)
        return list(emb.to(torch.float32))

    def _check_dim(self, dim: int, where: str) -> bool:
        if self._dim is None:
            self._dim = dim
        if dim != self._dim:
            raise ValueError(f"embedding dim {dim} from {where} != cached dim {self._dim} ({self.dir})")
        return True

    def _load_new_shards(self, allow_compact: bool = True) -> None:
        assert self.dir is not None
        if not self.dir.is_dir():
            return
        on_disk = sorted(self.dir.glob(_SHARD_GLOB))
        paths = [p for p in on_disk if p.name not in self._seen_shards]
        for path in paths:
            self._seen_shards.add(path.name)
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                caps = blob["captions"]
                if blob.get("fingerprint") != self.fingerprint:
                    raise ValueError("fingerprint mismatch")
                rows = self._from_payload(blob, len(caps), str(path))
            except FileNotFoundError:  # deleted by a concurrent compaction: its merged copy is picked up later
                continue
            except Exception as e:  # corrupt / foreign file: skip it, recompute what is missing
                log.warning("ignoring unreadable embedding shard %s (%s: %s)", path, type(e).__name__, e)
                continue
            for c, r in zip(caps, rows):
                self._mem.setdefault(c, r)
            self.num_disk_loads += 1
        if paths:
            log.debug("loaded %d embedding shards from %s (%d captions cached)", len(paths), self.dir, len(self._mem))
        if allow_compact and len(on_disk) > self.compact_threshold:
            self.compact()

    def _write_shard(self, captions: list[str], rows: list[torch.Tensor]) -> bool:
        assert self.dir is not None
        name = f"shard-{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:8]}.pt"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._write_meta()
            blob = {"format": SHARD_FORMAT, "fingerprint": self.fingerprint,
                    "captions": list(captions), **self._payload(rows)}
            atomic_write(self.dir / name, lambda f: torch.save(blob, f))
        except OSError as e:
            log.warning("could not write embedding cache shard to %s (%s); continuing without it", self.dir, e)
            return False
        self._seen_shards.add(name)
        self.num_disk_writes += 1
        return True

    def _write_meta(self) -> None:
        path = self.dir / "meta.json"
        if self.meta is None or path.exists():
            return
        atomic_write(path, json.dumps(self.meta, indent=2, sort_keys=True, default=str), fsync=False)


class TokenStateCache(EmbeddingCache):
    """Caption -> per-token states (L_i, D) for ONE encoder fingerprint, stored compactly: float16,
    trimmed to the caption's own valid tokens (no padding). Shards hold all states of a write
    concatenated (sum L_i, D) plus the lengths. Same atomic-shard and once-per-caption rules as
    :class:`EmbeddingCache` (directory ``text_embeddings/<fingerprint>``; use a distinct fingerprint)."""

    def _rows(self, captions: list[str], rows: list[torch.Tensor]) -> list[torch.Tensor]:
        for c, r in zip(captions, rows):
            if r.dim() != 2 or r.shape[0] == 0:
                raise ValueError(f"token states for {c!r} must be (L>0, D), got shape {tuple(r.shape)}")
            self._check_dim(r.shape[1], "put_many")
        flat = torch.cat([r.to("cpu", torch.float16) for r in rows]).contiguous()
        return list(flat.split([r.shape[0] for r in rows]))

    def _payload(self, rows: list[torch.Tensor]) -> dict:
        return {"states": torch.cat(rows), "lengths": torch.tensor([r.shape[0] for r in rows])}

    def _from_payload(self, blob: dict, n: int, where: str) -> list[torch.Tensor]:
        states, lengths = blob["states"], blob["lengths"].tolist()
        if len(lengths) != n or sum(lengths) != states.shape[0]:
            raise ValueError("size mismatch")
        self._check_dim(states.shape[1], where)
        return list(states.to(torch.float16).split(lengths))
