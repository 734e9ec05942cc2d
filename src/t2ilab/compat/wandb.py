"""Read back what an offline W&B run logged (``<run_dir>/wandb/offline-run-*/run-<id>.wandb``).

The one place that reads wandb's internal log format (tested: wandb 0.17-0.31; pyproject bound
``wandb<0.32``; tests/test_compat.py reads a real offline run written by the installed wandb).

wandb >= 0.19 writes offline runs only as its binary transaction log (no ``wandb-summary.json``)
and no longer ships a Python reader, so this parses the documented container format directly:
a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then LevelDB-log style 32 KiB blocks of
chunks ``crc32(4) | length(2, LE) | type(1) | payload`` (type 1 full, 2 first, 3 middle, 4 last),
each record a ``wandb_internal_pb2.Record`` protobuf. Used by tests and handy for quick checks
without ``wandb sync`` (``python -m t2ilab.compat.wandb RUN_DIR``).
"""

from __future__ import annotations

import contextlib
import json
import struct
import sys
import time
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def run_files(path: str | Path) -> list[Path]:
    """The ``.wandb`` files of an offline run, oldest segment first: the file itself, its run folder, or a
    t2ilab run dir (one segment per launch: a resumed or requeued run adds one, with the same run id)."""
    p = Path(path)
    if p.is_file():
        return [p]
    files = sorted(p.glob("run-*.wandb")) or sorted(p.glob("wandb/*run-*/run-*.wandb"),
                                                      key=lambda f: f.parent.name.split("run-", 1)[-1])
    if not files:
        raise FileNotFoundError(f"no offline W&B run under {p} (expected wandb/offline-run-*/run-*.wandb)")
    return files


def _payloads(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log (bad header)")
    pos, parts = HEADER, []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        if length == 0 and kind == 0:  # zero padding at the end of a block / file
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            parts = [chunk]
        elif kind == MIDDLE:
            parts.append(chunk)
        elif kind == LAST:
            parts.append(chunk)
            yield b"".join(parts)
            parts = []


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(path: str | Path, wait: float = 0.0) -> dict[str, Any]:
    """An offline run as one record: a run dir's segments (one per launch of a resumed run) merged in order —
    history concatenated, later summary values, config and exit code over earlier ones. Keys as
    :func:`read_segment`, plus ``segments`` (how many were merged).

    ``wait``: seconds to wait for the run's exit record. ``wandb.finish()`` returns before wandb's service
    process has written the whole log (seen with wandb 0.31: about 1 in 6 reads right after it found no
    records yet), so a reader in the same process (a test) should wait; the subprocess tests, which read
    after the entry point's process has exited, have not shown the gap."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + wait
    while True:
        try:
            run = _merged_segments(path)
        except DecodeError:  # the last record is still being written
            if time.monotonic() >= deadline:
                raise
        else:
            if run["exit_code"] is not None or time.monotonic() >= deadline:
                return run
        time.sleep(0.1)


def _merged_segments(path: str | Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    files = run_files(path)
    for f in files:
        seg = read_segment(f)
        if not merged:
            merged = seg
            continue
        merged["history"] += seg["history"]
        for key in ("summary", "config", "metrics"):
            merged[key].update(seg[key])
        merged["artifacts"] += seg["artifacts"]
        for key in ("id", "exit_code", "name", "group", "job_type", "tags"):
            merged[key] = seg[key] if seg[key] not in (None, []) else merged[key]
    merged["segments"] = len(files)
    return merged


def read_segment(path: str | Path) -> dict[str, Any]:
    """``{"id", "name", "group", "job_type", "tags", "config", "summary", "history", "exit_code", "metrics"}`` of an
    offline run (values JSON-decoded; ``exit_code`` is None when the run was never finished, e.g. killed with -9;
    ``metrics``: what ``define_metric`` declared, ``{name: {"step_metric", "summary": ["min", ...]}}``).

    ``summary`` merges the explicit summary updates over the last value of every history key
    (what the W&B UI shows); ``history`` is the list of logged rows."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_id, group, tags, config, summary, history, exit_code = None, None, [], {}, {}, [], None
    name, job_type, metrics, artifacts = None, None, {}, []
    for payload in _payloads(Path(path).read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run_id, group, tags = rec.run.run_id, rec.run.run_group or None, list(rec.run.tags)
            name, job_type = rec.run.display_name or None, rec.run.job_type or None
            config.update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "history":
            row = {_key(i): json.loads(i.value_json) for i in rec.history.item}
            history.append(row)
            summary.update({k: v for k, v in row.items() if not k.startswith("_")})
        elif kind == "metric" and rec.metric.name:  # define_metric
            s = rec.metric.summary
            metrics[rec.metric.name] = {"step_metric": rec.metric.step_metric or None,
                                        "summary": [k for k in ("min", "max", "mean", "best", "last", "first")
                                                    if getattr(s, k, False)]}
        elif kind == "artifact":  # log_artifact (checkpoints with logger.wandb.log_model)
            artifacts.append({"name": rec.artifact.name, "type": rec.artifact.type, "aliases": list(rec.artifact.aliases),
                              "metadata": json.loads(rec.artifact.metadata or "{}")})
        elif kind == "exit":
            exit_code = int(rec.exit.exit_code)
        elif kind == "summary":
            summary.update({_key(u): json.loads(u.value_json) for u in rec.summary.update})
    config = {k: v["value"] if isinstance(v, dict) and set(v) >= {"value"} else v for k, v in config.items()}
    return {"id": run_id, "name": name, "group": group, "job_type": job_type, "tags": tags, "config": config,
            "summary": summary, "history": history, "exit_code": exit_code, "metrics": metrics, "artifacts": artifacts}


def finish_lost_tail(run: Any, rows: list[tuple[int, dict[str, float]]], exit_code: int,
                     reason: str | None = None) -> int:
    """After ``wandb.finish`` failed because wandb's service process died (a preemption's SIGTERM reaches it
    too; it writes its log in 32 KiB blocks and loses the last, partial one): write the ``(step, scalars)`` rows
    that are not in ``run``'s log file yet, the failure reason and ``exit_code`` into a new segment of the same
    run (``wandb.init(id=..., resume="allow")`` in a fresh service; offline: one more ``offline-run-*`` folder,
    which :func:`read_offline_run` and ``wandb sync`` take in order). Returns how many rows were written.

    Media (images, tables) of the lost tail are not rewritten. Reaches into wandb's process model (a dead
    service is replaced by ``wandb.teardown()`` + ``wandb.init``); tested with wandb 0.31.0."""
    import wandb

    settings = run.settings
    on_disk = -1
    try:
        for row in read_segment(settings.sync_file)["history"]:
            on_disk = max(on_disk, int(row.get("trainer/global_step", row.get("_step", -1))))
    except Exception:  # noqa: BLE001 - no readable log: rewrite every row we have
        pass
    init = {"id": run.id, "resume": "allow", "project": run.project, "entity": run.entity or None,
            "dir": settings.root_dir, "mode": settings.mode, "name": run.name, "group": run.group or None,
            "job_type": run.job_type or None, "tags": list(run.tags or ()) or None}
    config = {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
    # the dead connection's teardown fails; the next init starts a new one. SystemExit too: when the goodbye still
    # reaches the socket, wandb.teardown() calls sys.exit(<the killed service's exit code>), which would replace
    # this process's own exit status (143 after SIGTERM) with the service's (seen as exit 1, ~1 run in 30)
    with contextlib.suppress(Exception, SystemExit):
        wandb.teardown()
    lost = [(step, row) for step, row in rows if step > on_disk]
    new = wandb.init(**{k: v for k, v in init.items() if v is not None}, config=config)
    for step, row in lost:
        new.log({**row, "trainer/global_step": step}, step=step)
    if reason:
        new.summary["failure"] = reason
    new.finish(exit_code=exit_code)
    return len(lost)


def run_dir_runs(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every segment of a t2ilab run dir's offline W&B run, oldest launch first (a resume adds one folder per
    launch, all with the same run id), each as :func:`read_segment` returns it; [] when there is none."""
    if not list(Path(run_dir).glob("wandb/*run-*/run-*.wandb")):
        return []
    return [read_segment(f) for f in run_files(run_dir)]


if __name__ == "__main__":
    run = read_offline_run(sys.argv[1] if len(sys.argv) > 1 else ".")
    print(json.dumps({"id": run["id"], "summary": run["summary"], "rows": len(run["history"])}, indent=1,
                     default=str))
