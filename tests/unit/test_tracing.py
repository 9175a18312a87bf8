"""Tracing: the spans a traced call makes, their parents across the message, and nothing at all
when tracing is off. Spans go to an in-memory exporter of a provider of the test's own."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from droplet.errors import ConfigurationError
from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.store import serializer
from droplet.store.memory import MemoryKV
from droplet.tracing import Tracing, check_mode
from droplet.worker import handlers

from .helpers import create_function, metadata, worker_state


@pytest.fixture()
def spans() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_modes_are_checked() -> None:
    for good in ("off", "otlp", "console", "app", "dir:/tmp/x"):
        assert check_mode(good) == good
    for bad in ("on", "jaeger", "dir:", ""):
        with pytest.raises(ConfigurationError, match="tracing"):
            check_mode(bad)
    assert not Tracing().enabled


def test_a_call_span_parents_the_run_span_and_what_the_function_opens(spans: Any) -> None:
    provider, exporter = spans
    tracing = Tracing("app", "t", provider)
    carrier: dict[str, str] = {}
    root = tracing.start_call("droplet.call f", carrier)
    assert "traceparent" in carrier, "the context travels in the message"

    user_tracer = provider.get_tracer("user")
    with tracing.run("f", carrier) as run_span:
        assert run_span is not None
        with user_tracer.start_as_current_span("inside f"):
            pass
    tracing.finish_call(root, [("client.send", 10.0), ("worker.start", 10.001),
                               ("worker.end", 10.003), ("client.received", 10.004)])

    by_name = {s.name: s for s in exporter.get_finished_spans()}
    call, run, inside = by_name["droplet.call f"], by_name["droplet.run f"], by_name["inside f"]
    assert run.parent is not None and run.parent.span_id == call.context.span_id
    assert inside.parent is not None and inside.parent.span_id == run.context.span_id
    assert len({call.context.trace_id, run.context.trace_id, inside.context.trace_id}) == 1
    stage = by_name["worker.start -> worker.end"]
    assert stage.parent is not None and stage.parent.span_id == call.context.span_id
    assert (stage.end_time - stage.start_time) == pytest.approx(2_000_000, abs=1000)
    assert call.end_time == pytest.approx(10.004e9, abs=1000)


def test_a_failed_call_marks_its_spans(spans: Any) -> None:
    provider, exporter = spans
    tracing = Tracing("app", "t", provider)
    carrier: dict[str, str] = {}
    root = tracing.start_call("droplet.call f", carrier)
    with tracing.run("f", carrier) as span:
        tracing.failed(span, "ZeroDivisionError")
    tracing.finish_call(root, [], "EXECUTION_ERROR: boom")
    statuses = {s.name: s.status.status_code for s in exporter.get_finished_spans()}
    assert statuses == {"droplet.run f": trace.StatusCode.ERROR,
                        "droplet.call f": trace.StatusCode.ERROR}


def _state() -> handlers.WorkerState:
    kv = MemoryKV()
    create_function(metadata(kv), lambda lib, x: x + 1, "inc")
    return worker_state(kv)


def _call(carrier: dict[str, str]) -> pb.FunctionCall:
    call = pb.FunctionCall(name="inc", call_id="c1", response_key="c1", response_address="a")
    call.trace_context.update(carrier)
    serializer.dump(1, call.arguments.values.add())
    return call


def test_a_worker_spans_only_the_calls_that_carry_a_context(spans: Any) -> None:
    provider, exporter = spans
    state = _state()
    state.tracing = Tracing("app", "worker", provider)
    handlers.exec_function(_call({}), state, Outbox())
    assert exporter.get_finished_spans() == (), "an untraced call makes no span"

    carrier: dict[str, str] = {}
    root = Tracing("app", "client", provider).start_call("droplet.call inc", carrier)
    handlers.exec_function(_call(carrier), state, Outbox())
    [run] = exporter.get_finished_spans()
    assert run.name == "droplet.run inc"
    assert run.parent is not None and run.parent.span_id == root.get_span_context().span_id


def test_tracing_off_runs_without_a_span(spans: Any) -> None:
    provider, exporter = spans
    state = _state()
    carrier: dict[str, str] = {}
    Tracing("app", "client", provider).start_call("droplet.call inc", carrier)
    out = Outbox()
    handlers.exec_function(_call(carrier), state, out)  # the worker's tracing is off
    assert exporter.get_finished_spans() == ()
    assert out.outcomes()[0].value == serializer.dump(2)
