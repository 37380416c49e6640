//! The Python exception classes, one per kind of `runlog::Error`, all under `runlog.Error`,
//! and the conversion that keeps the engine's message as the exception's text.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    runlog,
    Error,
    PyException,
    "Base class of every error runlog raises."
);
create_exception!(
    runlog,
    NotFound,
    Error,
    "An experiment, run, key or artifact does not exist."
);
create_exception!(
    runlog,
    InvalidInput,
    Error,
    "An argument runlog refuses (bad key, value, dtype, id...)."
);
create_exception!(
    runlog,
    InvalidFilter,
    InvalidInput,
    "A search filter or order_by that does not parse."
);
create_exception!(
    runlog,
    Corruption,
    Error,
    "Damage found on disk; the message names the file and byte offset."
);
create_exception!(runlog, IoError, Error, "An operating-system call failed.");
create_exception!(runlog, StorageFull, IoError, "The disk (or quota) is full.");
create_exception!(
    runlog,
    Poisoned,
    Error,
    "A writer failed to sync; reopen the store."
);
create_exception!(
    runlog,
    Forked,
    Error,
    "A forked child used its parent's handle; the child must open the store itself."
);
create_exception!(
    runlog,
    StaleRead,
    Error,
    "A read kept being overtaken by compaction; it may be retried."
);
create_exception!(runlog, ReadOnly, Error, "The store is open read-only.");
create_exception!(
    runlog,
    NotAStore,
    Error,
    "The directory is not a runlog store."
);
create_exception!(
    runlog,
    AlreadyExists,
    Error,
    "An experiment with that name already exists."
);
create_exception!(
    runlog,
    ParamChanged,
    InvalidInput,
    "A param was logged again with a different value."
);
create_exception!(
    runlog,
    Deleted,
    Error,
    "The experiment or run is deleted; restore it first."
);

/// Adds every exception class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("InvalidFilter", py.get_type::<InvalidFilter>())?;
    m.add("Corruption", py.get_type::<Corruption>())?;
    m.add("IoError", py.get_type::<IoError>())?;
    m.add("StorageFull", py.get_type::<StorageFull>())?;
    m.add("Poisoned", py.get_type::<Poisoned>())?;
    m.add("Forked", py.get_type::<Forked>())?;
    m.add("StaleRead", py.get_type::<StaleRead>())?;
    m.add("ReadOnly", py.get_type::<ReadOnly>())?;
    m.add("NotAStore", py.get_type::<NotAStore>())?;
    m.add("AlreadyExists", py.get_type::<AlreadyExists>())?;
    m.add("ParamChanged", py.get_type::<ParamChanged>())?;
    m.add("Deleted", py.get_type::<Deleted>())?;
    Ok(())
}

/// The Python exception for an engine error, with the engine's message.
pub fn to_py(error: runlog::Error) -> PyErr {
    use runlog::Error as E;
    let message = error.to_string();
    match error {
        E::NotFound(_) => NotFound::new_err(message),
        E::InvalidInput(_) => InvalidInput::new_err(message),
        E::InvalidFilter(_) => InvalidFilter::new_err(message),
        E::Corrupt(_) => Corruption::new_err(message),
        E::StorageFull { .. } => StorageFull::new_err(message),
        E::Io { .. } => IoError::new_err(message),
        E::Poisoned { .. } => Poisoned::new_err(message),
        E::Forked { .. } => Forked::new_err(message),
        E::StaleRead { .. } => StaleRead::new_err(message),
        E::ReadOnly => ReadOnly::new_err(message),
        E::NotAStore(_) => NotAStore::new_err(message),
        E::AlreadyExists(_) => AlreadyExists::new_err(message),
        E::ParamChanged { .. } => ParamChanged::new_err(message),
        E::Deleted { .. } => Deleted::new_err(message),
        _ => Error::new_err(message),
    }
}

/// `InvalidInput` raised by the binding itself (a dtype or an id it cannot pass on), worded
/// like the engine's.
pub fn invalid(message: impl std::fmt::Display) -> PyErr {
    InvalidInput::new_err(format!("invalid input: {message}"))
}

/// Shorthand for results carrying an engine error.
pub trait IntoPy<T> {
    /// The value, or the matching Python exception.
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for runlog::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
