"""The imports the architecture rules out, read from the source (any import, even in a function
or by name through importlib), followed through every module of droplet/ they reach.

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
    "cycle": ("droplet.outbox", "droplet.cycle", "droplet.acks", "droplet.refusal",
              "droplet.prepared_answers", "droplet.handback"),
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
    "cycle": {"scheduler", "worker", "client"},  # every server's loop: it knows no handler
}
NO_TRANSPORT_LIBRARIES = {"scheduler", "worker", "cycle"}
TRANSPORT_LIBRARIES = ("pika", "etcd3", "grpc")
# Droplet's own transports: the handlers and the cycle reach them only through the Broker
# and KV interfaces (what the loops are handed), so that they run over the stubs in tests.
TRANSPORT_MODULES = ("droplet.broker.amqp", "droplet.broker.rabbitmq", "droplet.broker.nodes",
                     "droplet.broker.connecting", "droplet.store.etcd", "droplet.store.http2",
                     "droplet.store.grpc_answer")


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
    is a package, as in `from droplet import cycle`). A module imported by a literal name
    (`importlib.import_module("m")`, `__import__("m")`) counts as `import m`."""
    tree = ast.parse(path.read_text(), str(path))
    facade = f"{root.name}.client"  # what droplet/__init__.py re-exports
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[list[str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):  # bare `import droplet` is the user API's facade
            found += [[facade if alias.name == root.name else alias.name]
                      for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == root.name:  # `from droplet import x`: a module, or the facade's x
                found.append([f"{base}.{alias.name}" if _is_module(root / alias.name)
                              else facade for alias in node.names])
            else:
                found.append([base] + [f"{base}.{alias.name}" for alias in node.names])
        elif (isinstance(node, ast.Call) and _by_name(node.func) and node.args
              and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append([node.args[0].value])
    return found


def _is_module(path: Path) -> bool:
    return path.is_dir() or path.with_suffix(".py").is_file()


def _by_name(func: ast.expr) -> bool:
    return ((isinstance(func, ast.Name) and func.id in ("__import__", "import_module"))
            or (isinstance(func, ast.Attribute) and func.attr == "import_module"))


def violations(root: Path) -> list[str]:
    """Each module's first forbidden import, direct or through the modules of droplet/ it
    imports (a handler imported by the message cycle is imported by every server using it).
    The package itself (droplet/__init__.py, the user API's facade) is no step of a chain:
    every import of droplet runs it."""
    modules = {module_name(path, root): path for path in sorted(root.rglob("*.py"))
               if "gen" not in path.relative_to(root).parts}  # (generated protobuf code)
    imports = {module: imports_of(path, root) for module, path in modules.items()}
    found = []
    for module, path in modules.items():
        source = part_of(module)
        if source is None:
            continue
        chains = {module: [module]}
        waiting = [module]
        reason = None
        while waiting and reason is None:
            current = waiting.pop(0)
            for names in imports[current]:
                for imported in names:  # the first forbidden one is its finding
                    if _forbidden(source, imported):
                        via = chains[current][1:]
                        reason = imported + (f" (through {' -> '.join(via)})" if via else "")
                        break
                    if imported in modules and imported not in chains and (
                            imported != root.name):
                        chains[imported] = chains[current] + [imported]
                        waiting.append(imported)
                if reason is not None:
                    break
        if reason is not None:
            found.append(f"{path.relative_to(root.parent)}: {source} imports {reason}")
    return found


def _forbidden(source: str, imported: str) -> bool:
    return part_of(imported) in NEVER.get(source, ()) or (
        source in NO_TRANSPORT_LIBRARIES and (
            imported.split(".")[0] in TRANSPORT_LIBRARIES
            or imported.startswith(TRANSPORT_MODULES)))


def test_no_part_imports_what_the_architecture_rules_out() -> None:
    assert violations(ROOT) == []


@pytest.mark.parametrize(("where", "line", "expected"), [
    ("client/x.py", "from droplet.outbox import call_ref", "client imports droplet.outbox"),
    ("worker/x.py", "import pika", "worker imports pika"),
    ("scheduler/x.py", "def f():\n    from droplet.worker import dags", "scheduler imports"),
    ("store/x.py", "from ..scheduler import policy", "store imports droplet.scheduler"),
    ("client/x.py", "from droplet import cycle", "client imports droplet.cycle"),
    ("worker/x.py", "import droplet", "worker imports droplet.client"),
    ("scheduler/x.py", "from droplet import connect", "scheduler imports droplet.client"),
    ("worker/x.py", "from droplet.broker.amqp import AmqpConnection",
     "worker imports droplet.broker.amqp"),
    ("scheduler/x.py", "import droplet.store.etcd_lean", "scheduler imports droplet.store.etcd"),
])
def test_the_check_finds_a_forbidden_import(tmp_path: Path, where: str, line: str,
                                            expected: str) -> None:
    root = tmp_path / "droplet"
    (root / where).parent.mkdir(parents=True)
    (root / where).write_text(line + "\n")
    (root / "cycle.py").write_text("")  # a module of the package, not a name of its facade
    found = violations(root)
    assert len(found) == 1 and expected in found[0], found
