//! The segment log: append-only segment files of CRC-checked records, one chain per writer.
//! See `docs/format/log.md` for the byte layout and `docs/DURABILITY.md` for the guarantees.

pub mod classify;
pub mod codec;
mod durability;
pub mod event;
mod log;
pub mod metric;
pub mod reader;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod tail;
pub mod writer;

pub use durability::Durability;
pub use event::{Event, Owner, RunStatus, Seal};
pub use log::{Log, LogOptions, WriterSummary, read_dir};
pub use metric::MetricBatch;
pub use reader::{ChainEnd, ReadOptions};
pub use recovery::{RecoveryReport, Repair, RepairAction};
pub use tail::Tail;
pub use writer::{Writer, WriterOptions, WriterStats};
