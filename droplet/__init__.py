"""Droplet: run Python functions and DAGs of functions on a fleet of workers.

    import droplet
    client = droplet.connect()
    incr = client.register(lambda lib, x: x + 1, "incr")
    incr(1).get(timeout=10)  # -> 2
"""

from droplet.client import DropletClient, DropletFunction, DropletFuture, connect
from droplet.errors import (
    BrokerError,
    CancelledError,
    ConfigurationError,
    ConflictError,
    CredentialsError,
    DagAlreadyExistsError,
    DropletError,
    DropletTimeoutError,
    ExecutionError,
    FunctionNotFoundError,
    FunctionTimeoutError,
    InvalidArgumentError,
    InvalidRequestError,
    NoResourcesError,
    NoSuchDagError,
    RequestError,
    SignatureError,
    StoreError,
    TlsError,
    UnauthorizedError,
    ValueTooLargeError,
    WorkerLostError,
)
from droplet.proto import pb
from droplet.settings import Settings
from droplet.store.serializer import DropletReference

NORMAL: int = pb.NORMAL
MULTI: int = pb.MULTI

NO_ERROR: int = pb.NO_ERROR
FUNC_NOT_FOUND: int = pb.FUNC_NOT_FOUND
EXECUTION_ERROR: int = pb.EXECUTION_ERROR
NO_RESOURCES: int = pb.NO_RESOURCES
DAG_ALREADY_EXISTS: int = pb.DAG_ALREADY_EXISTS
NO_SUCH_DAG: int = pb.NO_SUCH_DAG
TIMEOUT: int = pb.TIMEOUT
INVALID_REQUEST: int = pb.INVALID_REQUEST
UNAUTHORIZED: int = pb.UNAUTHORIZED
WORKER_LOST: int = pb.WORKER_LOST
CONFLICT: int = pb.CONFLICT
CANCELLED: int = pb.CANCELLED

__version__ = "0.1.0"

__all__ = [
    "CANCELLED",
    "CONFLICT",
    "DAG_ALREADY_EXISTS",
    "EXECUTION_ERROR",
    "FUNC_NOT_FOUND",
    "INVALID_REQUEST",
    "MULTI",
    "NORMAL",
    "NO_ERROR",
    "NO_RESOURCES",
    "NO_SUCH_DAG",
    "TIMEOUT",
    "UNAUTHORIZED",
    "WORKER_LOST",
    "BrokerError",
    "CancelledError",
    "ConfigurationError",
    "ConflictError",
    "CredentialsError",
    "DagAlreadyExistsError",
    "DropletClient",
    "DropletError",
    "DropletFunction",
    "DropletFuture",
    "DropletReference",
    "DropletTimeoutError",
    "ExecutionError",
    "FunctionNotFoundError",
    "FunctionTimeoutError",
    "InvalidArgumentError",
    "InvalidRequestError",
    "NoResourcesError",
    "NoSuchDagError",
    "RequestError",
    "Settings",
    "SignatureError",
    "StoreError",
    "TlsError",
    "UnauthorizedError",
    "ValueTooLargeError",
    "WorkerLostError",
    "connect",
]
