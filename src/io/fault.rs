//! A fault-injecting [`Storage`] for tests: it forwards to the real OS but can fail the Nth
//! call of an operation with a chosen error, so tests exercise the engine's real error paths
//! (poisoning, full disk, failed publication) rather than a mock of the engine.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Mutex;

use memmap2::MmapMut;

use super::{OsStorage, Storage};

/// The operations [`FaultStorage`] counts and can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`Storage::create_preallocated`].
    Create,
    /// [`Storage::sync_map`].
    SyncMap,
    /// [`Storage::sync_file`].
    SyncFile,
    /// [`Storage::sync_dir`].
    SyncDir,
    /// [`Storage::set_len`].
    SetLen,
    /// [`Storage::rename`].
    Rename,
    /// [`Storage::link`].
    Link,
    /// [`Storage::remove`].
    Remove,
    /// [`Storage::write_at`].
    WriteAt,
}

#[derive(Debug)]
struct Fault {
    operation: Operation,
    /// Fails the call whose 0-based index among calls of `operation` is this, and every later one
    /// if `sticky`.
    call_index: u64,
    sticky: bool,
    errno: i32,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<(Operation, u64)>,
    faults: Vec<Fault>,
    injected: u64,
}

/// Forwards to [`OsStorage`], failing chosen calls.
#[derive(Debug, Default)]
pub struct FaultStorage {
    state: Mutex<State>,
}

impl FaultStorage {
    /// A double that injects nothing until told to.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails the `call_index`-th (0-based, counted from now on) call of `operation` with `errno`.
    pub fn fail_once(&self, operation: Operation, call_index: u64, errno: i32) {
        self.push(operation, call_index, false, errno);
    }

    /// Fails the `call_index`-th call of `operation` and every later one with `errno`.
    pub fn fail_from(&self, operation: Operation, call_index: u64, errno: i32) {
        self.push(operation, call_index, true, errno);
    }

    /// Removes every planned fault.
    pub fn heal(&self) {
        self.lock().faults.clear();
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    fn push(&self, operation: Operation, call_index: u64, sticky: bool, errno: i32) {
        let mut state = self.lock();
        let seen = count(&state.calls, operation);
        state.faults.push(Fault {
            operation,
            call_index: seen + call_index,
            sticky,
            errno,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock can only come from a test assertion elsewhere;
        // the counters stay meaningful, so keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a call and says whether it must fail.
    fn check(&self, operation: Operation) -> io::Result<()> {
        let mut state = self.lock();
        let index = count(&state.calls, operation);
        bump(&mut state.calls, operation);
        let hit = state.faults.iter().find(|fault| {
            fault.operation == operation
                && (index == fault.call_index || (fault.sticky && index > fault.call_index))
        });
        match hit.map(|fault| fault.errno) {
            Some(errno) => {
                state.injected += 1;
                Err(io::Error::from_raw_os_error(errno))
            }
            None => Ok(()),
        }
    }
}

fn count(calls: &[(Operation, u64)], operation: Operation) -> u64 {
    calls
        .iter()
        .find(|(op, _)| *op == operation)
        .map_or(0, |(_, n)| *n)
}

fn bump(calls: &mut Vec<(Operation, u64)>, operation: Operation) {
    match calls.iter_mut().find(|(op, _)| *op == operation) {
        Some((_, n)) => *n += 1,
        None => calls.push((operation, 1)),
    }
}

impl Storage for FaultStorage {
    fn create_preallocated(&self, path: &Path, bytes: u64) -> io::Result<File> {
        self.check(Operation::Create)?;
        OsStorage.create_preallocated(path, bytes)
    }

    fn sync_map(&self, path: &Path, map: &MmapMut, offset: usize, len: usize) -> io::Result<()> {
        self.check(Operation::SyncMap)?;
        OsStorage.sync_map(path, map, offset, len)
    }

    fn sync_file(&self, path: &Path, file: &File) -> io::Result<()> {
        self.check(Operation::SyncFile)?;
        OsStorage.sync_file(path, file)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(Operation::SyncDir)?;
        OsStorage.sync_dir(dir)
    }

    fn set_len(&self, path: &Path, file: &File, bytes: u64) -> io::Result<()> {
        self.check(Operation::SetLen)?;
        OsStorage.set_len(path, file, bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Operation::Rename)?;
        OsStorage.rename(from, to)
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Operation::Link)?;
        OsStorage.link(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.check(Operation::Remove)?;
        OsStorage.remove(path)
    }

    fn write_at(&self, path: &Path, file: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.check(Operation::WriteAt)?;
        OsStorage.write_at(path, file, offset, bytes)
    }
}
