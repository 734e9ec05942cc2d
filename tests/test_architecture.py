"""The house rules of docs/design.md, checked on the source: no import circle between t2ilab modules, entry
points are imported by no other module, and library internals are reached only in ``t2ilab/compat/``."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "t2ilab"
ENTRY_POINTS = {"train", "sample", "eval", "edit", "roundtrip", "report", "reproduce", "to_wandb"}
# private attributes of Lightning / wandb objects (and wandb's protobuf log format) this project reaches
PRIVATE_REACHES = ("._trainer", "._ddp_kwargs", "._last_lr", "._last_global_step_saved", "._on_before_step",
                   "._batches_that_stepped", "wandb_internal_pb2", "epoch_loop._")


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        if "conf" in path.relative_to(SRC).parts:
            continue
        parts = ["t2ilab", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, top_level_only: bool) -> set[str]:
    """t2ilab modules ``path`` imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("t2ilab"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("t2ilab"))
    return found


def test_no_import_circle_between_modules():
    """Deferred imports (inside functions, kept for start-up time) count too: a circle is a design knot
    whether or not Python happens to resolve it."""
    mods = modules()
    graph = {m: {i for i in imports(p, top_level_only=False) if i in mods and i != m} for m, p in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if n.startswith(m + "."):  # a package importing its own submodule is not a circle
                continue
            if state.get(n) == 1 and not m.startswith(n + "."):
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_module_imports_an_entry_point():
    mods = modules()
    for m, path in mods.items():
        if m.split(".")[-1] in ENTRY_POINTS and m.count(".") <= 2:
            continue
        used = {i for i in imports(path, top_level_only=False)
                if i in {f"t2ilab.{e}" for e in ENTRY_POINTS} | {f"t2ilab.cli.{e}" for e in ENTRY_POINTS}}
        assert not used, f"{m} imports the entry point(s) {sorted(used)}: move what it needs into a library module"


def test_library_internals_are_reached_only_in_compat():
    for path in SRC.rglob("*.py"):
        if "compat" in path.relative_to(SRC).parts:
            continue
        text = path.read_text()
        hits = [r for r in PRIVATE_REACHES if r in text]
        assert not hits, f"{path.relative_to(SRC)} reaches {hits}: put it behind t2ilab/compat/"
