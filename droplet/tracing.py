"""OpenTelemetry spans of a call's path, when the `tracing` setting is on.

Off (the default) costs a traced call nothing and an untraced one a single attribute check: no
context is injected, no stamp taken, no span made, and OpenTelemetry is not even imported.

On, the trace context travels inside each message (the `trace_context` map of a FunctionCall,
DagCall or DagTrigger, in W3C `traceparent` form) rather than in AMQP headers, because one
envelope carries many calls. Who emits what:

* the client: the call's root span (`droplet.call <function>` or `droplet.dag <name>`) from
  send to answer, and one child span per stage between two of the stamps the answer brings
  back (queue, scheduler, the steps of a DAG, store, reply), so that the stages a call went
  through show in any trace viewer even from workers that do not export spans themselves;
* a worker: `droplet.run <function>` around each run, with the call's context made current,
  so that spans the function opens itself nest under it.

Where spans go (`tracing`): `otlp` (OTLP over HTTP, to OTEL_EXPORTER_OTLP_ENDPOINT or
localhost:4318), `console` (JSON on stderr), `dir:PATH` (JSON lines in PATH/<service>-<pid>
.jsonl, written as each span ends), or `app`: whatever provider the application configured
itself. A process whose application already set a global provider keeps using that one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

from droplet.errors import ConfigurationError

OFF = "off"
_MODES = ("otlp", "console", "app")
_install_lock = threading.Lock()
_installed: list[str] = []  # the service name of the provider this process installed


def check_mode(mode: str) -> str:
    """The mode, or a ConfigurationError that says what is accepted."""
    if mode == OFF or mode in _MODES or (mode.startswith("dir:") and len(mode) > 4):
        return mode
    raise ConfigurationError(
        f"setting 'tracing': {mode!r} is not one of off, otlp, console, app, dir:PATH")


class Tracing:
    """The spans of one process (`service` names it in traces)."""

    def __init__(self, mode: str = OFF, service: str = "droplet", provider: Any = None) -> None:
        """`provider`: a TracerProvider to use instead of the process's global one (tests)."""
        self.mode = check_mode(mode)
        self.enabled = self.mode != OFF
        self._tracer: Any = None
        if self.enabled:
            try:
                from opentelemetry import trace
            except ImportError:
                raise ConfigurationError(
                    f"tracing = {mode!r} needs OpenTelemetry: pip install 'droplet[tracing]'"
                ) from None
            if provider is None:
                _install_provider(self.mode, service)
            self._tracer = (provider or trace.get_tracer_provider()).get_tracer("droplet")

    # -- the client ------------------------------------------------------------------------

    def start_call(self, name: str, carrier: MutableMapping[str, str]) -> Any:
        """Starts a call's root span and puts its context in the message's carrier."""
        from opentelemetry import propagate, trace

        span = self._tracer.start_span(name, kind=trace.SpanKind.PRODUCER)
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return span

    def finish_call(self, span: Any, stamps: Sequence[tuple[str, float]],
                    error: str | None = None) -> None:
        """Ends a root span: one child per stage between consecutive stamps, then the root
        itself at the last stamp (or now)."""
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        parent = trace.set_span_in_context(span)
        for (before, t0), (after, t1) in itertools.pairwise(stamps):
            stage = self._tracer.start_span(
                f"{before} -> {after}", context=parent, start_time=_ns(t0),
                attributes={"droplet.stage.from": before, "droplet.stage.to": after})
            stage.end(end_time=_ns(max(t0, t1)))
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=_ns(stamps[-1][1]) if stamps else None)

    # -- a worker --------------------------------------------------------------------------

    def run(self, function: str, carrier: Mapping[str, str]) -> AbstractContextManager[Any]:
        """The span of one run, current while the function runs (None when not traced: a
        shared null context then, entered on every call, so it costs no generator)."""
        if not self.enabled or not carrier:
            return _NO_SPAN
        return self._run(function, carrier)

    @contextlib.contextmanager
    def _run(self, function: str, carrier: Mapping[str, str]) -> Iterator[Any]:
        from opentelemetry import context, propagate, trace

        parent = propagate.extract(dict(carrier))
        span = self._tracer.start_span(f"droplet.run {function}", context=parent,
                                       kind=trace.SpanKind.CONSUMER,
                                       attributes={"droplet.function": function})
        token = context.attach(trace.set_span_in_context(span, parent))
        try:
            yield span
        finally:
            context.detach(token)
            span.end()

    def failed(self, span: Any, message: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        if span is not None:
            span.set_status(Status(StatusCode.ERROR, message[:500]))


NO_TRACING = Tracing()
_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _install_provider(mode: str, service: str) -> None:
    """Sets up the process's span export once, unless the application did so already (or
    asked us not to, with `app`)."""
    from opentelemetry import trace

    with _install_lock:
        if _installed or mode == "app":
            return
        if type(trace.get_tracer_provider()).__name__ != "ProxyTracerProvider":
            _installed.append("application")  # the application configured its own
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SimpleSpanProcessor,
            SpanExporter,
        )

        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        if mode == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif mode == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        else:
            directory = Path(mode[len("dir:"):])
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{service}-{os.getpid()}.jsonl"
            exporter = cast("SpanExporter", _JsonLinesExporter(path))
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _installed.append(service)


class _JsonLinesExporter:
    """Spans as JSON lines in one file per process (for `dir:PATH`): what a test or an
    operator without a collector reads. (A span processor only calls these three methods.)"""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = [json.dumps(_span_record(span)) + "\n" for span in spans]
        with self._lock, open(self._path, "a", encoding="utf-8") as out:
            out.writelines(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _span_record(span: Any) -> dict[str, Any]:
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "start_s": span.start_time / 1e9,
        "end_s": span.end_time / 1e9,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "service": span.resource.attributes.get("service.name", ""),
        "written_at_s": time.time(),
    }
