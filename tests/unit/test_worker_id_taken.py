"""A second worker started under an id that lives already (`droplet worker --id vm-2` twice)
says so: two processes under one id share one queue and one pin, and the schedulers only
logged, much later, that a worker "gone from etcd" still consumed."""

from __future__ import annotations

import logging

import pytest

from tests.unit.inprocess import Fleet

_TAKEN = "is registered already"


def test_a_second_worker_under_a_live_id_warns(caplog: pytest.LogCaptureFixture) -> None:
    fleet = Fleet()
    with caplog.at_level(logging.WARNING, logger="droplet.worker.service"):
        fleet.start_worker("w1")
        assert _TAKEN not in caplog.text, "the first one under the id is alone"
        fleet.start_worker("w1")
    assert _TAKEN in caplog.text and "w1" in caplog.text


def test_a_worker_restarted_after_its_record_went_does_not_warn(
        caplog: pytest.LogCaptureFixture) -> None:
    fleet = Fleet()
    fleet.start_worker("w1")
    fleet.crash("w1")  # its record gone (its lease ended)
    with caplog.at_level(logging.WARNING, logger="droplet.worker.service"):
        fleet.start_worker("w1")
    assert _TAKEN not in caplog.text
