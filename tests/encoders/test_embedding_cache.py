"""EmbeddingCache: memory + atomic shard files shared between processes with the same fingerprint."""

from __future__ import annotations

import hashlib
import logging

import torch

from t2ilab.encoders.cache import EmbeddingCache, file_sha256


def _emb(n: int, d: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_memory_only_roundtrip_and_missing_order():
    c = EmbeddingCache("fp0", cache_dir=None)
    e = _emb(2)
    c.put_many({"a": e[0], "b": e[1]})
    found, missing = c.get_many(["b", "x", "a", "y", "x"])
    assert set(found) == {"a", "b"} and torch.equal(found["b"], e[1])
    assert missing == ["x", "y"]  # de-duplicated, input order
    assert c.dir is None and len(c) == 2


def test_disk_hits_from_a_fresh_instance(tmp_path):
    e = _emb(3)
    EmbeddingCache("fp1", tmp_path).put_many({"a": e[0], "b": e[1], "c": e[2]})
    shard_dir = tmp_path / "text_embeddings" / "fp1"
    assert len(list(shard_dir.glob("shard-*.pt"))) == 1 and not list(shard_dir.glob(".tmp-*"))
    c2 = EmbeddingCache("fp1", tmp_path)
    found, missing = c2.get_many(["a", "c", "d"])
    assert missing == ["d"] and torch.equal(found["c"], e[2]) and c2.num_disk_loads == 1
    # another fingerprint never sees these
    assert EmbeddingCache("fp2", tmp_path).get_many(["a"]) == ({}, ["a"])


def test_two_writers_see_each_other_on_miss(tmp_path):
    w1, w2 = EmbeddingCache("fp", tmp_path), EmbeddingCache("fp", tmp_path)
    e = _emb(2)
    w1.put_many({"one": e[0]})
    w2.put_many({"two": e[1]})
    found, missing = w1.get_many(["one", "two"])  # miss on "two" -> rescan -> picks up w2's shard
    assert not missing and torch.equal(found["two"], e[1])
    assert len(list((tmp_path / "text_embeddings" / "fp").glob("shard-*.pt"))) == 2


def test_put_existing_caption_writes_nothing(tmp_path):
    c = EmbeddingCache("fp", tmp_path)
    c.put_many({"a": _emb(1)[0]})
    c.put_many({"a": _emb(1)[0]})
    assert c.num_disk_writes == 1


def test_corrupt_shard_and_tmp_files_are_ignored(tmp_path, caplog):
    c = EmbeddingCache("fp", tmp_path)
    c.put_many({"a": _emb(1)[0]})
    (c.dir / "shard-garbage.pt").write_bytes(b"not a torch file")
    (c.dir / ".tmp-shard-half-written.pt").write_bytes(b"\x00" * 10)
    with caplog.at_level(logging.WARNING):
        found, missing = EmbeddingCache("fp", tmp_path).get_many(["a", "b"])
    assert "a" in found and missing == ["b"]
    assert "shard-garbage.pt" in caplog.text


def test_compaction_merges_shards(tmp_path):
    e = _emb(6)
    for i in range(6):  # six writers, one shard each
        EmbeddingCache("fp", tmp_path).put_many({f"c{i}": e[i]})
    c = EmbeddingCache("fp", tmp_path, compact_threshold=3)
    found, missing = c.get_many([f"c{i}" for i in range(6)])
    assert not missing and torch.equal(found["c5"], e[5])
    assert len(list(c.dir.glob("shard-*.pt"))) == 1
    found2, missing2 = EmbeddingCache("fp", tmp_path).get_many([f"c{i}" for i in range(6)])
    assert not missing2 and all(torch.equal(found2[k], found[k]) for k in found)


def test_unwritable_cache_dir_degrades_to_memory(tmp_path, caplog):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    c = EmbeddingCache("fp", not_a_dir)
    with caplog.at_level(logging.WARNING):
        c.put_many({"a": _emb(1)[0]})
    assert "could not write" in caplog.text
    assert c.get_many(["a"])[1] == []


def test_file_sha256_is_memoised_on_disk(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    h = file_sha256(f, tmp_path / "cache")
    assert h == hashlib.sha256(b"weights").hexdigest()
    assert len(list((tmp_path / "cache" / "file_hashes").iterdir())) == 1
    assert file_sha256(f) == h
