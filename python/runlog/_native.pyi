"""Type stubs of the native module; the public names are re-exported by ``runlog``."""

import os
import pathlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import pyarrow

_Path = str | os.PathLike[str]
_View = Literal["active", "deleted", "all"]

class Error(Exception):
    """Base class of every error runlog raises."""

class NotFound(Error):
    """An experiment, run, key or artifact does not exist."""

class InvalidInput(Error):
    """An argument runlog refuses (bad key, value, dtype, id...)."""

class InvalidFilter(InvalidInput):
    """A search filter or order_by that does not parse."""

class Corruption(Error):
    """Damage found on disk; the message names the file and byte offset."""

class IoError(Error):
    """An operating-system call failed."""

class StorageFull(IoError):
    """The disk (or quota) is full."""

class Poisoned(Error):
    """A writer failed to sync; reopen the store."""

class Forked(Error):
    """A forked child used its parent's handle; the child must open the store itself."""

class StaleRead(Error):
    """A read kept being overtaken by compaction; it may be retried."""

class ReadOnly(Error):
    """The store is open read-only."""

class NotAStore(Error):
    """The directory is not a runlog store."""

class AlreadyExists(Error):
    """An experiment with that name already exists."""

class ParamChanged(InvalidInput):
    """A param was logged again with a different value."""

class Deleted(Error):
    """The experiment or run is deleted; restore it first."""

class Experiment:
    """An experiment (a snapshot taken when it was read)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def lifecycle_stage(self) -> str: ...
    @property
    def creation_time(self) -> int: ...
    @property
    def last_update_time(self) -> int: ...
    @property
    def tags(self) -> dict[str, str]: ...

class RunData:
    """A run as stored (a snapshot taken when it was read); ``metrics`` holds each key's
    latest value."""

    @property
    def id(self) -> str: ...
    @property
    def experiment_id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def start_time(self) -> int: ...
    @property
    def end_time(self) -> int | None: ...
    @property
    def parent_id(self) -> str | None: ...
    @property
    def lifecycle_stage(self) -> str: ...
    @property
    def params(self) -> dict[str, str]: ...
    @property
    def tags(self) -> dict[str, str]: ...
    @property
    def metrics(self) -> dict[str, float]: ...
    @property
    def artifacts(self) -> list[str]: ...

class Artifact:
    """A stored artifact."""

    @property
    def path(self) -> pathlib.Path: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def time(self) -> int: ...

class Run:
    """A run being logged to; a context manager (FINISHED on leaving, FAILED on an exception,
    KILLED if never ended)."""

    @property
    def id(self) -> str: ...
    @property
    def active(self) -> bool: ...
    def log_metric(self, key: str, value: float, step: int) -> None: ...
    def metric(self, key: str) -> MetricHandle:
        """A handle to metric ``key``: ``handle.log(value, step)`` logs as ``log_metric`` does,
        without looking the key up again."""
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_batch(self, key: str, steps: Any, values: Any) -> None:
        """``steps``: int64; ``values``: float64 or float32; numpy arrays, buffers or Arrow
        arrays."""
    def log_param(self, key: str, value: str) -> None: ...
    def log_params(self, params: Mapping[str, str]) -> None: ...
    def set_tag(self, key: str, value: str) -> None: ...
    def delete_tag(self, key: str) -> None: ...
    def log_artifact(self, path: _Path) -> Artifact: ...
    def log_artifact_bytes(self, path: str, data: bytes) -> Artifact: ...
    def info(self) -> RunData: ...
    def end(self, status: Literal["FINISHED", "FAILED", "KILLED"] = "FINISHED") -> None: ...
    def __enter__(self) -> Run: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool: ...

class MetricHandle:
    """One metric key of a run (``Run.metric``); refuses what ``Run.log_metric`` refuses."""

    @property
    def key(self) -> str: ...
    def log(self, value: float, step: int) -> None: ...
    def log_at(self, value: float, step: int, timestamp_ms: int) -> None: ...

class MlflowService:
    """MLflow's tracking REST API answered in-process by the engine, over the store at
    ``path`` (created if missing); instances for one directory share one open store. The
    ``runlog://`` MLflow plugin (``runlog.mlflow_store``) is its user."""

    def __init__(self, path: _Path) -> None: ...
    @property
    def path(self) -> pathlib.Path: ...
    def handle(
        self, method: str, path: str, query: str = "", body: bytes = b""
    ) -> tuple[int, str, bytes]: ...

class Store:
    """An open runlog store (a directory)."""

    def __init__(
        self,
        path: _Path,
        durability: Literal["buffered", "sync"] | int | None = None,
        read_only: bool = False,
    ) -> None: ...
    @property
    def path(self) -> pathlib.Path: ...
    def get_or_create_experiment(self, name: str) -> Experiment: ...
    def create_experiment(self, name: str) -> Experiment: ...
    def get_experiment(self, experiment_id: int) -> Experiment: ...
    def experiments(self, view: _View = "active") -> list[Experiment]: ...
    def start_run(
        self,
        experiment_id: int,
        name: str | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        parent_id: str | None = None,
    ) -> Run: ...
    def resume_run(self, run_id: str) -> Run: ...
    def get_run(self, run_id: str) -> RunData: ...
    def history(
        self, run_id: str, key: str, start_step: int | None = None, end_step: int | None = None
    ) -> pyarrow.Table: ...
    def history_downsampled(
        self,
        run_id: str,
        key: str,
        max_points: int,
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> pyarrow.Table: ...
    def search_runs(
        self,
        experiment_ids: Sequence[int] | None = None,
        filter_string: str = "",
        order_by: Sequence[str] | None = None,
        max_results: int = 0,
        view: _View = "active",
    ) -> list[RunData]: ...
    def compare(
        self, run_ids: Sequence[str], keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]: ...
    def compact(self) -> dict[str, int]: ...
    def export(self, directory: _Path) -> dict[str, Any]: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool: ...
