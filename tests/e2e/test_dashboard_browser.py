"""The dashboard in a real browser (headless Debian Chromium through its chromedriver) against
a running cluster: what a person would see on each page, live updates included.

Every test saves screenshots (in a temporary directory, or DROPLET_SCREENSHOTS_DIR when set:
that is how docs/ gets its pictures) and checks them loosely: the picture has the size of the
window, and the regions of the elements that matter hold something drawn, not blank space.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import droplet
from droplet.runtime import open_kv
from droplet.store.keys import StoreKeys
from tests.conftest import Cluster, client_fixture, cluster_fixture
from tests.e2e.dashboard_support import (
    DashboardProcess,
    declare_holding_queue,
    delete_queue,
    make_dead_letter,
    queue_depth,
)

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "browser-test-token"
WINDOW = (1400, 1000)

browser_cluster = cluster_fixture(workers=3, worker_lease_ttl_s=3, status_interval_s=0.5)
browser_client = client_fixture("browser_cluster")


def _chromium_missing() -> str:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return ("headless Chromium is not installed (apt-get install chromium chromium-driver; "
                ".ci/run installs them)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return ""


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    missing = _chromium_missing()
    if missing:
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(20)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def dashboard(browser_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[DashboardProcess]:
    settings = browser_cluster.settings.with_(dashboard_token=TOKEN)
    board = DashboardProcess(settings, tmp_path_factory.mktemp("dash") / "dashboard.log")
    try:
        yield board.wait_ready()
    finally:
        board.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("DROPLET_SCREENSHOTS_DIR")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("screenshots")


def _wait(driver: Any, condition: Callable[[Any], Any], timeout_s: float, what: str) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(condition)
    except TimeoutException:
        raise AssertionError(f"{what} did not show within {timeout_s}s; the page said: "
                             f"{driver.find_element('tag name', 'body').text[:800]}") from None


def _text(driver: Any, css: str) -> str:
    """The visible text of every match, read in one step (the live refresh swaps the DOM)."""
    return str(driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(e => e.innerText ?? e.textContent).join('\\n')", css))


def shoot(driver: Any, shots: Path, name: str, regions: list[str]) -> Path:
    """Saves a screenshot and checks it loosely: the window's size, and every region (a CSS
    selector) on screen and holding more than a blank background."""
    from PIL import Image, ImageStat

    path = shots / f"{name}.png"
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(path)), f"screenshot {name}"
    with Image.open(path) as image:
        picture = image.convert("L")
    ratio = driver.execute_script("return window.devicePixelRatio") or 1
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    assert picture.size == (round(inner[0] * ratio), round(inner[1] * ratio)), picture.size
    assert picture.size[0] >= 1000 and picture.size[1] >= 600
    for css in regions:
        box = driver.execute_script(
            "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
            "return [r.left, r.top, r.right, r.bottom];", css)
        left, top, right, bottom = (round(v * ratio) for v in box)
        right, bottom = min(right, picture.size[0]), min(bottom, picture.size[1])
        assert right - left > 20 and bottom - top > 10, f"{css} is on screen in {name}"
        region = picture.crop((left, top, right, bottom))
        assert ImageStat.Stat(region).stddev[0] > 8, f"{css} in {name} holds something drawn"
    return path


def test_every_page_loads_and_the_workers_appear(driver: Any, browser_cluster: Cluster,
                                                 dashboard: DashboardProcess,
                                                 shots: Path) -> None:
    pages = {"/": "Fleet", "/queues": "Queues", "/functions": "Functions", "/calls":
             "Recent calls", "/errors": "Recent errors", "/plots": "Throughput and latency",
             "/dead-letters": "Dead letters"}
    for path, heading in pages.items():
        driver.get(dashboard.url + path)
        assert driver.find_element("css selector", "main h1").text == heading, path
        assert "etcd up" in _text(driver, "#etcd-state"), path
        assert "RabbitMQ up" in _text(driver, "#broker-state"), path
    driver.get(dashboard.url + "/")
    for worker in browser_cluster.worker_ids():
        _wait(driver, lambda d, w=worker: "alive" in _text(d, f'tr[data-worker="{w}"]'), 15,
              f"worker {worker} alive")
    shoot(driver, shots, "fleet", ["#workers", "#schedulers", "#etcd-state"])
    driver.get(dashboard.url + "/queues")
    shoot(driver, shots, "queues", ["#queues", "svg.chart"])


def test_a_dag_graph_renders_with_where_each_function_is_pinned(
        driver: Any, browser_client: Any, dashboard: DashboardProcess, shots: Path,
        unique: str) -> None:
    browser_client.register(lambda lib, x: x + 1, unique + "-incr")
    browser_client.register(lambda lib, x: x * x, unique + "-square")
    functions = [unique + "-incr", unique + "-square"]
    assert browser_client.register_dag(unique, functions, [tuple(functions)]) == (True, None)
    try:
        assert browser_client.call_dag(unique, {functions[0]: [3]}, direct_response=True,
                                       timeout=20) == 16
        driver.get(dashboard.url + "/functions")
        card = f"#dag-{unique}"
        _wait(driver, lambda d: d.find_elements("css selector", f"{card} svg.dag g.node"), 15,
              "the DAG's graph")
        nodes = driver.find_elements("css selector", f"{card} svg.dag g.node")
        assert sorted(n.get_attribute("data-function") for n in nodes) == sorted(functions)
        def pinned_as_stored(d: Any) -> bool:
            # A pin recorded just after the page was drawn shows at the next live refresh
            # ("not pinned" until then: what failed a loaded CI run).
            pins = {p.function_name: p.worker_id for p in browser_client.metadata.pins()
                    if p.dag_name == unique}
            labels = _text(d, f"{card} svg.dag text.pin")
            return all(f in pins and pins[f] in labels for f in functions)

        _wait(driver, pinned_as_stored, 15, "where each function is pinned")
        assert len(driver.find_elements("css selector", f"{card} svg.dag line.edge")) == 1
        shoot(driver, shots, "functions", [f"{card} svg.dag", "#functions"])
    finally:
        browser_client.delete_dag(unique)


def test_calls_arrive_live_and_an_error_shows_its_traceback(
        driver: Any, browser_client: Any, dashboard: DashboardProcess, shots: Path,
        unique: str) -> None:
    driver.get(dashboard.url + "/calls")  # opened first: the calls must arrive by themselves
    incr = browser_client.register(lambda lib, x: x + 1, unique)
    futures = []
    for wave in range(3):  # a few seconds of calls: the plots get more than one point
        if wave:
            time.sleep(2.5)
        batch = [incr(i) for i in range(10 * wave, 10 * wave + 10)]
        assert [f.get(timeout=20) for f in batch] == list(range(10 * wave + 1, 10 * wave + 11))
        futures += batch
    _wait(driver, lambda d: all(f.call_id[:12] in _text(d, "#calls") for f in futures), 20,
          "every call, without reloading the page")
    shoot(driver, shots, "calls", ["#calls"])

    def divide(lib: Any, x: int) -> float:
        return 1 / x

    failing = browser_client.register(divide, unique + "-divide")
    with pytest.raises(droplet.ExecutionError):
        failing(0).get(timeout=20)
    driver.get(dashboard.url + f"/errors?function={unique}-divide")
    _wait(driver, lambda d: "ZeroDivisionError" in _text(d, "details.error[open] pre"), 20,
          "the error's traceback")
    traceback = _text(driver, "details.error[open] pre.traceback")
    assert "Traceback (most recent call last)" in traceback and "in divide" in traceback
    assert "EXECUTION_ERROR" in _text(driver, "details.error summary")
    shoot(driver, shots, "errors", ["details.error[open] pre.traceback"])
    driver.get(dashboard.url + f"/plots?function={unique}&minutes=1")
    _wait(driver, lambda d: d.find_elements("css selector", ".function-charts circle.point"),
          30, "the function's throughput drawn")
    shoot(driver, shots, "plots", ["#overview svg", ".function-charts svg"])


def test_a_killed_worker_turns_dead_on_the_open_page(
        driver: Any, browser_cluster: Cluster, browser_client: Any,
        dashboard: DashboardProcess, shots: Path) -> None:
    pinned = {p.worker_id for p in browser_client.metadata.pins()}
    victim, victim_id = next(
        (proc, worker) for proc, worker in zip(browser_cluster.workers,
                                               browser_cluster.worker_ids(), strict=True)
        if worker not in pinned and proc.poll() is None)
    driver.get(dashboard.url + "/")
    row = f'tr[data-worker="{victim_id}"]'
    _wait(driver, lambda d: "alive" in _text(d, row), 15, "the victim alive")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    started = time.monotonic()
    _wait(driver, lambda d: re.search(r"\bdead\b", _text(d, row)), 30,
          "the killed worker shown dead")
    print(f"worker killed with -9 shown dead after {time.monotonic() - started:.1f}s")
    assert "last seen" in _text(driver, row)
    shoot(driver, shots, "fleet-dead-worker", [row, "#workers"])
    kv = open_kv(browser_cluster.settings)
    try:
        key = StoreKeys(browser_cluster.settings.etcd_prefix).recent_calls(victim_id)
        deadline = time.monotonic() + 15
        while kv.get(key) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert kv.get(key) is None, "its recent calls went with its lease"
    finally:
        kv.close()


def test_a_requeue_is_refused_without_the_token_and_asks_for_confirmation_with_it(
        driver: Any, browser_cluster: Cluster, dashboard: DashboardProcess, shots: Path,
        unique: str) -> None:
    settings = browser_cluster.settings
    holding = f"{settings.namespace}.holding-{unique}"
    declare_holding_queue(settings, holding)
    try:
        make_dead_letter(settings, holding, "crashed its handler (test)", unique)
        driver.get(dashboard.url + "/dead-letters")
        _wait(driver, lambda d: holding in _text(d, "#dead-letters"), 20, "the dead letter")
        shoot(driver, shots, "dead-letters", ["#dead-letters", "#action-form"])

        driver.find_element("css selector", "button.pick").click()
        assert re.fullmatch(r"[0-9a-f]{12}", driver.find_element("id", "target")
                            .get_attribute("value") or "")
        driver.find_element("id", "requeue").click()
        _wait(driver, lambda d: "needs the dashboard token" in _text(d, "#message"), 10,
              "the refusal")
        assert driver.find_element("css selector", "main h1").text == "Refused"
        assert queue_depth(settings, holding) == 0

        driver.get(dashboard.url + "/dead-letters")
        driver.find_element("css selector", "button.pick").click()
        driver.find_element("id", "token").send_keys(TOKEN)
        driver.find_element("id", "requeue").click()
        _wait(driver, lambda d: d.find_elements("id", "confirm"), 10, "the confirmation")
        assert holding in _text(driver, "main table")
        shoot(driver, shots, "dead-letters-confirm", ["main table", "#confirm"])
        assert queue_depth(settings, holding) == 0, "nothing happens before confirming"
        driver.find_element("id", "confirm").click()
        _wait(driver, lambda d: "Requeued 1 dead letter" in _text(d, "#result"), 15,
              "the requeue's result")
        assert queue_depth(settings, holding) == 1
    finally:
        delete_queue(settings, holding)
