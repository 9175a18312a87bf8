"""`droplet bench --quick --plot FILE.png`: the figures are drawn and the JSON line is the
same report as without --plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Services

pytestmark = pytest.mark.e2e


def _bench(services: Services, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "droplet.cli.main", "--broker-url", services.broker_url,
               "--etcd", services.etcd_endpoint, "bench", "--quick", "--workers", "2", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=ROOT,
                          check=False)


def test_bench_plot_draws_its_figures_and_keeps_the_json_report(services: Services,
                                                                 tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    target = tmp_path / "bench.png"
    done = _bench(services, "--plot", str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"call_p50_ms", "call_p99_ms", "dag2_p50_ms", "burst_calls_per_s", "cluster",
            "counts"} <= set(report)
    with Image.open(target) as image:
        assert image.format == "PNG" and image.size == (1500, 460)
        panels = [image.convert("L").crop((x, 60, x + 400, 400)) for x in (60, 560, 1060)]
    assert all(ImageStat.Stat(p).stddev[0] > 10 for p in panels), "three panels drawn"


def test_bench_plot_refuses_a_path_it_cannot_write_before_measuring(services: Services,
                                                                    tmp_path: Path) -> None:
    for bad, reason in ((tmp_path / "figures.jpg", "writes a PNG"),
                        (tmp_path / "absent" / "b.png", "no directory")):
        done = _bench(services, "--plot", str(bad))
        assert done.returncode == 1 and reason in done.stderr, done.stderr
        assert "cluster" not in done.stdout, "refused before any cluster started"
