"""runlog: in-process experiment tracking on the runlog metrics engine.

Open a :class:`Store` (a directory), get an experiment, start a run as a context manager and
log to it; read back with :meth:`Store.history` (a ``pyarrow.Table``) and
:meth:`Store.search_runs`. Every class is a thin handle on the Rust engine: the engine keeps the
data model, validation, durability and fork safety, and the GIL is released while it works.

>>> import runlog
>>> store = runlog.Store("runlog-data")                       # doctest: +SKIP
>>> exp = store.get_or_create_experiment("mnist")             # doctest: +SKIP
>>> with store.start_run(exp.id, name="trial-1") as run:      # doctest: +SKIP
...     run.log_metric("loss", 0.25, 10)
"""

from runlog._native import (
    AlreadyExists,
    Artifact,
    Corruption,
    Deleted,
    Error,
    Experiment,
    Forked,
    InvalidFilter,
    InvalidInput,
    IoError,
    MetricHandle,
    MlflowService,
    NotAStore,
    NotFound,
    ParamChanged,
    Poisoned,
    ReadOnly,
    Run,
    RunData,
    StaleRead,
    StorageFull,
    Store,
)

__all__ = [
    "AlreadyExists",
    "Artifact",
    "Corruption",
    "Deleted",
    "Error",
    "Experiment",
    "Forked",
    "InvalidFilter",
    "InvalidInput",
    "IoError",
    "MetricHandle",
    "MlflowService",
    "NotAStore",
    "NotFound",
    "ParamChanged",
    "Poisoned",
    "ReadOnly",
    "Run",
    "RunData",
    "StaleRead",
    "StorageFull",
    "Store",
]
