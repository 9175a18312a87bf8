"""The test images' tags: a hash of the recipe, so an image is rebuilt exactly when its
recipe (or, for the worker, the project's sources or its Dockerfile) changed. No Docker."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from tests.containers import images


@pytest.fixture
def builder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Builds are possible here, on a copy of the project the test may change."""
    root = tmp_path / "project"
    (root / "deploy" / "docker").mkdir(parents=True)
    shutil.copy2(images.ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copy2(images.DOCKERFILE_DIR / "Dockerfile", root / "deploy" / "docker" / "Dockerfile")
    (root / "droplet").mkdir()
    (root / "droplet" / "__init__.py").write_text("VERSION = 1\n")
    monkeypatch.setattr(images, "ROOT", root)
    monkeypatch.setattr(images, "DOCKERFILE_DIR", root / "deploy" / "docker")
    monkeypatch.setattr(images, "can_build_rootfs", lambda: True)
    for variable in images.OVERRIDE_ENV.values():
        monkeypatch.delenv(variable, raising=False)
    return root


def test_a_tag_is_stable_until_its_recipe_changes(builder: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    before = {kind: images.tag(kind) for kind in ("rabbitmq", "etcd", "python", "worker")}
    assert before == {kind: images.tag(kind) for kind in before}
    assert all(t.startswith(f"droplet-test/{kind}:") for kind, t in before.items())

    changed = dataclasses.replace(images.ETCD, packages=("etcd-server", "etcd-client"))
    monkeypatch.setitem(images.RECIPES, "etcd", changed)
    assert images.tag("etcd") != before["etcd"]
    assert images.tag("rabbitmq") == before["rabbitmq"]
    assert images.tag("worker") == before["worker"]  # built on python, not on etcd


def test_the_worker_tag_follows_the_sources_and_the_dockerfile(builder: Path) -> None:
    first = images.tag("worker")
    (builder / "droplet" / "__pycache__").mkdir()
    (builder / "droplet" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert images.tag("worker") == first, "compiled files are not sources"
    (builder / "droplet" / "__init__.py").write_text("VERSION = 2\n")
    second = images.tag("worker")
    assert second != first
    dockerfile = builder / "deploy" / "docker" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\nLABEL changed=yes\n")
    assert images.tag("worker") not in (first, second)


def test_official_images_where_asked_or_where_nothing_can_be_built(
        builder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPLET_TEST_RABBITMQ_IMAGE", "rabbitmq:3.13")
    assert images.tag("rabbitmq") == "rabbitmq:3.13"
    monkeypatch.setattr(images, "can_build_rootfs", lambda: False)
    assert images.tag("etcd") == images.OFFICIAL["etcd"]
    assert images.tag("worker").startswith("droplet-test/worker:")  # built on python:3.11-slim
    with pytest.raises(ValueError):
        images.tag("postgres")
