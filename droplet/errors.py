"""One exception tree for everything Droplet raises.

Transport failures (pika, gRPC) are converted at the boundary modules into `BrokerError` or
`StoreError` with `raise ... from None`, so callers never need to import a transport library to
catch what it throws. Errors a request answers with carry the proto `ErrorCode` in `.code`.
"""

from __future__ import annotations

import signal
import threading

from droplet.proto import pb


class DropletError(Exception):
    """Base of every Droplet error; `.code` is the proto ErrorCode (NO_ERROR when local)."""

    code: int = pb.NO_ERROR

    def __init__(self, message: str = "", *, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ConfigurationError(DropletError):
    """A setting is missing, unknown or malformed."""


class InvalidArgumentError(DropletError, ValueError):
    """The client refused the input before sending anything."""

    code = pb.INVALID_REQUEST


class ValueTooLargeError(InvalidArgumentError):
    """A value exceeds the documented size limit."""


class StoreRequestTooLargeError(ValueTooLargeError):
    """etcd refused a request as larger than it takes (a key of megabytes, say): no StoreError,
    since etcd is not away and the same request is refused every time. As one, a message
    that made it (a call on such a key, a registration) went back to its queue for ever."""


class DropletTimeoutError(DropletError, TimeoutError):
    """A result or reply did not arrive within the given timeout."""


class BrokerError(DropletError):
    """RabbitMQ could not be reached or closed the connection."""


class UnroutableError(BrokerError):
    """A mandatory message found no queue (for example, a worker queue that is gone)."""


class QueueArgumentsError(ConfigurationError):
    """A queue exists with other arguments than this version declares (x-max-priority):
    `droplet migrate-queues` re-creates it, keeping its messages."""


class StoreError(DropletError):
    """etcd could not be reached or refused an operation."""


class CompactedError(StoreError):
    """A read asked for a store revision that etcd has compacted away (a MULTI snapshot that
    is too old): the call runs again on a fresh snapshot."""


class Interruption(BaseException):
    """Base of the worker's own interruptions of user code (a time limit, a cancel, an expired
    MULTI snapshot): BaseExceptions, so that the code's own `except Exception` does not swallow
    them, and never taken for a failure of that code (`user_failure`)."""


def user_failure(exc: BaseException) -> bool:
    """Whether an exception out of user code (a function, a class's `__init__`, a value's
    `__reduce__`, `__setstate__` or `__eq__`) is that code's own failure, to be answered as
    its call's error: anything but an Interruption and Ctrl-C. SystemExit, GeneratorExit or
    KeyboardInterrupt raised by the code used to exit the worker, then each worker its call
    was delivered to next, until it was dead-lettered as poison. KeyboardInterrupt is Ctrl-C
    only where Python's own SIGINT handler raises it (the main thread of a process that kept
    it); `droplet worker` stops on SIGINT through a handler of its own."""
    if isinstance(exc, Interruption):
        return False
    return not (isinstance(exc, KeyboardInterrupt)
                and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler)


class SnapshotExpired(Interruption):
    """Raised inside a MULTI call whose snapshot etcd has compacted away: a BaseException so
    that the function's own `except Exception` does not swallow it; the call runs again on a
    fresh snapshot."""


class TlsError(ConfigurationError):
    """A TLS connection failed in a way retrying does not fix: the server's certificate did not
    verify (a CA the client does not trust, expired, issued for another host), the server
    refused the client's certificate, or only one side speaks TLS. Raised at once, not after
    a retry loop; the message says what is wrong and which setting fixes it."""


class CredentialsError(ConfigurationError):
    """The broker or etcd refused the configured user or password."""


class BrokerTlsError(TlsError, BrokerError):
    """A TLS failure towards RabbitMQ (broker_url, broker_ca_file, broker_cert_file...)."""


class BrokerCredentialsError(CredentialsError, BrokerError):
    """RabbitMQ refused the user or password of broker_url."""


class StoreTlsError(TlsError, StoreError):
    """A TLS failure towards etcd (etcd_ca_file, etcd_cert_file...)."""


class StoreCredentialsError(CredentialsError, StoreError):
    """etcd refused etcd_user/etcd_password (or wants a user and none is set)."""


class SignatureError(DropletError):
    """A payload was unsigned or its signature did not verify."""

    code = pb.UNAUTHORIZED


class PoisonMessageError(DropletError):
    """A message redelivered so often that it probably kills whoever handles it."""

    code = pb.EXECUTION_ERROR


class RequestError(DropletError):
    """A request was answered with an error code (raised from futures and admin calls)."""

    remote_traceback: str = ""
    exception_type: str = ""


class FunctionNotFoundError(RequestError):
    code = pb.FUNC_NOT_FOUND


class ExecutionError(RequestError):
    """The function raised; the message and `remote_traceback` come from the worker."""

    code = pb.EXECUTION_ERROR


class FunctionTimeoutError(ExecutionError):
    code = pb.TIMEOUT


class NoResourcesError(RequestError):
    code = pb.NO_RESOURCES


class DagAlreadyExistsError(RequestError):
    code = pb.DAG_ALREADY_EXISTS


class NoSuchDagError(RequestError):
    code = pb.NO_SUCH_DAG


class InvalidRequestError(RequestError):
    code = pb.INVALID_REQUEST


class UnauthorizedError(RequestError):
    code = pb.UNAUTHORIZED


class WorkerLostError(RequestError):
    code = pb.WORKER_LOST


class ConflictError(RequestError):
    """A MULTI call lost its commit to concurrent writers on every attempt: nothing of it
    was written."""

    code = pb.CONFLICT


class CancelledError(RequestError):
    """The call was cancelled (client.cancel, future.cancel) before it finished: it did not
    run, or was interrupted, and its stored outcome is CANCELLED."""

    code = pb.CANCELLED


_BY_CODE: dict[int, type[RequestError]] = {
    cls.code: cls
    for cls in (
        FunctionNotFoundError,
        ExecutionError,
        FunctionTimeoutError,
        NoResourcesError,
        DagAlreadyExistsError,
        NoSuchDagError,
        InvalidRequestError,
        UnauthorizedError,
        WorkerLostError,
        ConflictError,
        CancelledError,
    )
}


def qualified_names(cls: type) -> tuple[str, ...]:
    """module.QualName of a class and of every class it derives from (matches retry_on)."""
    return tuple(f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__)


def error_from_info(info: pb.ErrorInfo) -> RequestError:
    """Rebuilds the exception a remote ErrorInfo describes."""
    cls = _BY_CODE.get(info.code, RequestError)
    name = pb.ErrorCode.Name(info.code) if info.code in pb.ErrorCode.values() else str(info.code)
    text = info.message or name
    if info.traceback:
        text = f"{text}\n\nRemote traceback:\n{info.traceback}"
    error = cls(text, code=info.code)
    error.remote_traceback = info.traceback
    error.exception_type = info.exception_type
    return error
