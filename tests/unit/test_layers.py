"""The imports the architecture rules out, read from the source (any import, even in a function).

Scheduler and worker meet only through messages; neither server depends on the user API; the
transport knows no handlers, no message cycle and no store; the store knows no handlers; the
user API knows no server-side port (the message cycle); the schema depends on nothing above it;
and the handlers never touch pika or etcd3 themselves (they are tested without a broker).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "droplet"

# part -> the modules (dotted prefixes) that make it up
PARTS = {
    "client": ("droplet.client", "droplet.aio"),
    "scheduler": ("droplet.scheduler",),
    "worker": ("droplet.worker",),
    "cycle": ("droplet.outbox", "droplet.cycle"),
    "broker": ("droplet.broker", "droplet.broker_config"),
    "store": ("droplet.store",),
    "proto": ("droplet.proto",),
}
NEVER = {
    "scheduler": {"worker", "client"},
    "worker": {"scheduler", "client"},
    "store": {"scheduler", "worker", "client", "cycle"},
    "broker": {"scheduler", "worker", "client", "cycle", "store"},
    "client": {"scheduler", "worker", "cycle"},
    "proto": {"client", "store", "scheduler", "worker", "cycle", "broker"},
}
NO_TRANSPORT_LIBRARIES = {"scheduler", "worker"}
TRANSPORT_LIBRARIES = ("pika", "etcd3", "grpc")


def part_of(module: str) -> str | None:
    for part, prefixes in PARTS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return part
    return None


def module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[list[str]]:
    """What each import statement of the file names, absolute (a relative import resolved
    from its package): the module, and for `from M import a` also `M.a` (a submodule when M
    is a package, as in `from droplet import cycle`)."""
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[list[str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append([base] + [f"{base}.{alias.name}" for alias in node.names])
    return found


def violations(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if "gen" in path.relative_to(root).parts:
            continue  # generated protobuf code
        source = part_of(module_name(path, root))
        if source is None:
            continue
        for names in imports_of(path, root):
            for imported in names:  # one finding a statement
                forbidden = part_of(imported) in NEVER.get(source, ()) or (
                    source in NO_TRANSPORT_LIBRARIES
                    and imported.split(".")[0] in TRANSPORT_LIBRARIES)
                if forbidden:
                    found.append(f"{path.relative_to(root.parent)}: {source} imports {imported}")
                    break
    return found


def test_no_part_imports_what_the_architecture_rules_out() -> None:
    assert violations(ROOT) == []


@pytest.mark.parametrize(("where", "line", "expected"), [
    ("client/x.py", "from droplet.outbox import call_ref", "client imports droplet.outbox"),
    ("worker/x.py", "import pika", "worker imports pika"),
    ("scheduler/x.py", "def f():\n    from droplet.worker import dags", "scheduler imports"),
    ("store/x.py", "from ..scheduler import policy", "store imports droplet.scheduler"),
    ("client/x.py", "from droplet import cycle", "client imports droplet.cycle"),
])
def test_the_check_finds_a_forbidden_import(tmp_path: Path, where: str, line: str,
                                            expected: str) -> None:
    root = tmp_path / "droplet"
    (root / where).parent.mkdir(parents=True)
    (root / where).write_text(line + "\n")
    found = violations(root)
    assert len(found) == 1 and expected in found[0], found
