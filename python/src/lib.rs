//! The native module `runlog._native`: Python classes over the engine's public API.
//!
//! Owns the mapping between Python values and the engine's types, and nothing else: every
//! rule (validation, run lifecycle, durability, fork safety) is the engine's. Invariants:
//! - every call that may block on disk or take long (flush, compact, export, search,
//!   history, batches, writes under `sync` durability) runs with the GIL released;
//! - every class is `Send + Sync` (the engine's handles are), so Python threads share them;
//! - errors reach Python as `runlog.Error` subclasses carrying the engine's message.

mod arrow;
mod errors;
mod mlflow;
mod run;
mod store;
mod views;

use pyo3::prelude::*;

/// The private native module; `runlog/__init__.py` re-exports what is public.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<store::Store>()?;
    m.add_class::<run::Run>()?;
    m.add_class::<run::MetricHandle>()?;
    m.add_class::<views::Experiment>()?;
    m.add_class::<views::RunData>()?;
    m.add_class::<views::Artifact>()?;
    m.add_class::<mlflow::MlflowService>()?;
    Ok(())
}
