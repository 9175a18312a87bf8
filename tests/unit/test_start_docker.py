"""scripts/start_docker.sh, which .ci/run trusts to say whether Docker can be used: with fake
docker and dockerd commands, it answers yes without starting anything when the engine
answers, and no (with the reason) in bounded time when the engine never answers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "start_docker.sh"


def _run(tmp_path: Path, docker_answers: bool) -> tuple[subprocess.CompletedProcess[str], Path]:
    shims = tmp_path / "bin"
    shims.mkdir()
    marker = tmp_path / "dockerd-started"
    (shims / "docker").write_text(f"#!/bin/sh\nexit {0 if docker_answers else 1}\n")
    (shims / "dockerd").write_text(f"#!/bin/sh\necho started > {marker}\necho 'no cgroups'\n"
                                   "exit 1\n")
    for shim in shims.iterdir():
        shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
           "DOCKER_WAIT_S": "2", "DOCKERD_LOG": str(tmp_path / "dockerd.log")}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    return done, marker


def test_an_engine_that_answers_is_used_as_it_is(tmp_path: Path) -> None:
    done, marker = _run(tmp_path, docker_answers=True)
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), "no second dockerd"


def test_an_engine_that_never_answers_is_reported_in_bounded_time(tmp_path: Path) -> None:
    done, marker = _run(tmp_path, docker_answers=False)
    assert done.returncode == 1
    if os.geteuid() == 0:
        assert marker.exists(), "root starts dockerd"
        assert "did not answer within 2s" in done.stderr and "no cgroups" in done.stderr
    else:
        assert "only root may start it" in done.stderr
