//! The segment log: append-only segment files of CRC-checked records, one chain per writer.
//! See `docs/format/log.md` for the byte layout and `docs/DURABILITY.md` for the guarantees.

mod durability;
mod log;

internal_modules!(
    classify,
    codec,
    crc,
    dataset_event,
    directory,
    event,
    metric,
    model_event,
    peek,
    reader,
    record,
    recovery,
    replay,
    segment,
    tail,
    writer,
);

pub use dataset_event::{Dataset, DatasetEvent};
pub use durability::Durability;
#[cfg(feature = "testing")]
pub use event::Seal;
pub use event::{Event, Owner, RunStatus};
pub use log::{Log, LogOptions, WriterSummary, read_dir};
pub use metric::MetricBatch;
pub use model_event::{ModelEvent, ModelLink, ModelMetric, ModelStatus};
pub use reader::{ChainEnd, ReadOptions};
pub use recovery::{RecoveryReport, Repair, RepairAction};
#[cfg(feature = "testing")]
pub use tail::Tail;
pub use writer::{InternedKey, WriterStats};
#[cfg(feature = "testing")]
pub use writer::{Writer, WriterOptions};
