"""The container images of the tests (RabbitMQ, etcd) and of a Droplet worker, built here.

No image registry is needed: a Debian bookworm root file system made once by `debootstrap`
(cached as a tarball) is the base of every image; each image adds its Debian packages in a
chroot and is imported with `docker import`. The worker image is `deploy/docker/Dockerfile`
built on a Python image made the same way, with the project's wheels (`pip wheel`) as its
build context: the Dockerfile users build with `--build-arg BASE=python:3.11-slim-bookworm`.

Every tag carries a hash of its recipe (and, for the worker, of the project's sources), so an
image is built when its recipe changed and reused otherwise. The API is one function:

    image("rabbitmq") / image("etcd") / image("worker") -> a tag that exists locally

`DROPLET_TEST_RABBITMQ_IMAGE`, `DROPLET_TEST_ETCD_IMAGE` and `DROPLET_TEST_WORKER_IMAGE`
name other images (e.g. `rabbitmq:3.13`, `quay.io/coreos/etcd:v3.5.15`): they are used as
they are (pulled when missing). Building needs root (debootstrap and chroot; debootstrap is
installed with apt-get when missing); elsewhere the official images of OFFICIAL are pulled
and the worker is built on `python:3.11-slim-bookworm`.

Command line: `python -m tests.containers.images [KIND...]` (or `make images`) builds and
prints the tags (all three by default).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKERFILE_DIR = ROOT / "deploy" / "docker"
KINDS = ("rabbitmq", "etcd", "worker")
OVERRIDE_ENV = {kind: f"DROPLET_TEST_{kind.upper()}_IMAGE" for kind in KINDS}
# Bump when the build procedure below changes in a way the recipes do not show.
BUILD_VERSION = 1
# Where nothing can be built here (not root, no debootstrap and no apt-get to install it),
# these are pulled from their registries instead.
OFFICIAL = {"rabbitmq": "rabbitmq:3.13", "etcd": "quay.io/coreos/etcd:v3.5.15",
            "python": "python:3.11-slim-bookworm"}


@dataclass(frozen=True)
class Base:
    suite: str = "bookworm"
    variant: str = "minbase"
    mirror: str = os.environ.get("DROPLET_IMAGE_MIRROR", "http://deb.debian.org/debian")


@dataclass(frozen=True)
class Recipe:
    """Debian packages on the base, files written after, and `docker import --change`s."""

    name: str
    packages: tuple[str, ...]
    files: tuple[tuple[str, str], ...] = ()
    changes: tuple[str, ...] = ()


RABBITMQ = Recipe(
    "rabbitmq",
    ("rabbitmq-server",),
    files=(
        # guest may log in from a mapped port; no plugins, so no fixed ports beyond AMQP.
        ("/etc/rabbitmq/rabbitmq.conf",
         "loopback_users = none\nlisteners.tcp.default = 5672\n"
         "disk_free_limit.absolute = 50MB\n"),
        ("/etc/rabbitmq/enabled_plugins", "[].\n"),
        ("/etc/rabbitmq/rabbitmq-env.conf", ""),
    ),
    changes=(
        "USER rabbitmq",
        "ENV HOME=/var/lib/rabbitmq",
        "ENV RABBITMQ_LOGS=-",
        "WORKDIR /var/lib/rabbitmq",
        "EXPOSE 5672",
        'CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]',
    ),
)
ETCD = Recipe(
    "etcd",
    ("etcd-server",),
    changes=(
        "EXPOSE 2379 2380",
        'CMD ["/usr/bin/etcd", "--data-dir", "/var/lib/etcd/data", '
        '"--listen-client-urls", "http://0.0.0.0:2379", '
        '"--advertise-client-urls", "http://127.0.0.1:2379"]',
    ),
)
PYTHON = Recipe("python", ("python3", "python3-venv"), changes=('CMD ["python3"]',))
RECIPES = {recipe.name: recipe for recipe in (RABBITMQ, ETCD, PYTHON)}


def _log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def _digest(*parts: object) -> str:
    text = json.dumps([BUILD_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_dir() -> Path:
    """Where the base rootfs tarball and the build lock live (DROPLET_IMAGE_CACHE)."""
    configured = os.environ.get("DROPLET_IMAGE_CACHE")
    base = Path(configured) if configured else Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "droplet" / "images"
    base.mkdir(parents=True, exist_ok=True)
    return base


def source_hash() -> str:
    """A hash of what goes into the project's wheel: pyproject.toml and droplet/."""
    digest = hashlib.sha256()
    files = [ROOT / "pyproject.toml", *sorted((ROOT / "droplet").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _worker_context_files() -> list[Path]:
    return [DOCKERFILE_DIR / "Dockerfile"]  # and the wheels


def tag(kind: str) -> str:
    """The tag `image(kind)` returns, without building anything."""
    override = os.environ.get(OVERRIDE_ENV.get(kind, ""), "")
    if override:
        return override
    if kind == "worker":
        recipe = [(p.name, p.read_text()) for p in _worker_context_files()]
        return f"droplet-test/worker:{_digest(tag('python'), recipe, source_hash())}"
    if kind not in RECIPES:
        raise ValueError(f"unknown image kind {kind!r}: one of {', '.join(KINDS)}")
    if not can_build_rootfs():
        return OFFICIAL[kind]
    return f"droplet-test/{kind}:{_digest(asdict(Base()), asdict(RECIPES[kind]))}"


def can_build_rootfs() -> bool:
    """Root, with debootstrap or apt-get to install it (and chroot)."""
    return os.geteuid() == 0 and shutil.which("chroot") is not None and (
        shutil.which("debootstrap") is not None or shutil.which("apt-get") is not None)


def _docker(*args: str, input_file: Path | None = None,
            timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    stdin = open(input_file, "rb") if input_file else None  # noqa: SIM115 - closed below
    try:
        return subprocess.run(["docker", *args], stdin=stdin, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    finally:
        if stdin is not None:
            stdin.close()


def exists(image_tag: str) -> bool:
    return _docker("image", "inspect", image_tag, timeout_s=60).returncode == 0


def _run(argv: list[str], timeout_s: float = 900, **kwargs: object) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                          check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"`{' '.join(argv[:6])} ...` failed ({done.returncode}):\n{tail}")


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time on this machine (test sessions, CI and other worktrees)."""
    with open(cache_dir() / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _base_tarball() -> Path:
    """The debootstrapped root file system, made once per Base recipe."""
    base = Base()
    tarball = cache_dir() / f"base-{_digest(asdict(base))}.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        _log("installing debootstrap")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], env=env)
        _run(["apt-get", "install", "-y", "-qq", "debootstrap"], env=env)
    started = time.monotonic()
    _log(f"debootstrap {base.variant} {base.suite} (once; cached as {tarball})")
    with tempfile.TemporaryDirectory(prefix="droplet-base-", dir=cache_dir()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(["debootstrap", f"--variant={base.variant}", base.suite, str(rootfs),
              base.mirror])
        _run(["chroot", str(rootfs), "apt-get", "clean"])
        partial = tarball.with_suffix(".partial")
        _run(["tar", "-C", str(rootfs), "-cf", str(partial), "."])
        partial.rename(tarball)
    _log(f"base ready in {time.monotonic() - started:.0f}s")
    return tarball


def _build_rootfs_image(recipe: Recipe, image_tag: str) -> None:
    """The base plus the recipe's packages and files, imported as `image_tag`."""
    tarball = _base_tarball()
    started = time.monotonic()
    _log(f"building {image_tag}: {' '.join(recipe.packages)}")
    with tempfile.TemporaryDirectory(prefix=f"droplet-{recipe.name}-", dir=cache_dir()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        _run(["tar", "-C", str(rootfs), "-xf", str(tarball)])
        shutil.copyfile("/etc/resolv.conf", rootfs / "etc" / "resolv.conf")
        policy = rootfs / "usr" / "sbin" / "policy-rc.d"  # packages start no services here
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
               "LANG": "C.UTF-8", "HOME": "/root"}
        _run(["chroot", str(rootfs), "apt-get", "update", "-qq"], env=env)
        _run(["chroot", str(rootfs), "apt-get", "install", "-y", "-qq",
              "--no-install-recommends", *recipe.packages], env=env)
        _run(["chroot", str(rootfs), "apt-get", "clean"], env=env)
        policy.unlink()
        shutil.rmtree(rootfs / "var" / "lib" / "apt" / "lists", ignore_errors=True)
        (rootfs / "etc" / "resolv.conf").write_text("")  # Docker mounts its own
        for path, text in recipe.files:
            target = rootfs / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        layer = Path(tmp) / "layer.tar"
        _run(["tar", "-C", str(rootfs), "-cf", str(layer), "."])
        args = ["import"]
        for change in recipe.changes:
            args += ["--change", change]
        done = _docker(*args, "-", image_tag, input_file=layer)
        if done.returncode != 0:
            raise RuntimeError(f"docker import {image_tag} failed: {done.stderr.strip()}")
    _log(f"{image_tag} ready in {time.monotonic() - started:.0f}s")


def wheelhouse(target: Path) -> list[Path]:
    """The project's wheel and every dependency's, made with this Python's pip. The wheel is
    built from a copy of what source_hash() covers: an in-tree build would reuse build/,
    where a module deleted since the last build still lies."""
    with tempfile.TemporaryDirectory(prefix="droplet-src-", dir=cache_dir()) as tmp:
        source = Path(tmp)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, source / name)
        shutil.copytree(ROOT / "droplet", source / "droplet",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(target),
              str(source)], timeout_s=900)
    return sorted(target.glob("*.whl"))


def _build_worker(image_tag: str, base_tag: str) -> None:
    started = time.monotonic()
    _log(f"building {image_tag} from deploy/docker/Dockerfile on {base_tag}")
    with tempfile.TemporaryDirectory(prefix="droplet-worker-", dir=cache_dir()) as tmp:
        context = Path(tmp)
        for path in _worker_context_files():
            shutil.copy2(path, context / path.name)
        wheelhouse(context / "wheels")
        done = subprocess.run(
            ["docker", "build", "--quiet", "--build-arg", f"BASE={base_tag}", "-t", image_tag,
             str(context)],
            capture_output=True, text=True, timeout=900, check=False,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        if done.returncode != 0:
            raise RuntimeError(f"docker build {image_tag} failed:\n{done.stderr[-3000:]}")
    _log(f"{image_tag} ready in {time.monotonic() - started:.0f}s")


def image(kind: str) -> str:
    """The tag of a local image for 'rabbitmq', 'etcd' or 'worker' (or 'python', the worker's
    base), built first when it is missing. An override from the environment is pulled when
    it is not here."""
    image_tag = tag(kind)
    if exists(image_tag):
        return image_tag
    ours = not os.environ.get(OVERRIDE_ENV.get(kind, "")) and (
        kind == "worker" or can_build_rootfs())
    if not ours:
        done = _docker("pull", image_tag, timeout_s=900)
        if done.returncode != 0:
            raise RuntimeError(f"docker pull {image_tag} failed: {done.stderr.strip()}")
        return image_tag
    base_tag = image("python") if kind == "worker" else ""  # before the lock: not reentrant
    with _build_lock():
        if not exists(image_tag):  # another process may have built it meanwhile
            if kind == "worker":
                _build_worker(image_tag, base_tag)
            else:
                _build_rootfs_image(RECIPES[kind], image_tag)
            prune(kind)
    return image_tag


def prune(kind: str, keep: int = 3) -> list[str]:
    """Removes all but the `keep` newest droplet-test/<kind> images (every source change
    makes a new worker image); one a container still uses stays. Returns the removed tags."""
    listed = _docker("image", "ls", f"droplet-test/{kind}", "--format",
                     "{{.CreatedAt}}\t{{.Repository}}:{{.Tag}}", timeout_s=60).stdout
    tags = [line.split("\t")[1] for line in sorted(listed.splitlines(), reverse=True)]
    removed = []
    for old in tags[keep:]:
        if _docker("image", "rm", old, timeout_s=120).returncode == 0:
            removed.append(old)
    return removed


def main(argv: list[str] | None = None) -> int:
    kinds = (argv if argv is not None else sys.argv[1:]) or list(KINDS)
    for kind in kinds:
        if kind in ("-h", "--help"):
            print(__doc__)
            return 0
        print(f"{kind} {image(kind)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
