//! Every size limit and default of the engine, in one place, with their relations checked at
//! compile time. Names end in their unit.

use std::time::Duration;

/// Default largest preallocated size of a segment file (the configured `segment_bytes`).
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Preallocated size of a writer's first segment, or the configured `segment_bytes` if that is
/// smaller. Each next segment doubles, up to `segment_bytes`, so a writer that logs a little
/// costs about this much disk, and one that logs a lot soon rotates at the configured size.
pub const SEGMENT_BYTES_FIRST: u64 = 1024 * 1024;
/// Smallest segment the writer accepts: room for the header, a seal and a few records.
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
/// Largest segment: offsets inside a segment are `u32` in some places of the format.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 31;

/// Largest payload of one record. Batches larger than this are split by the writer.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest number of points in one columnar batch record.
pub const BATCH_POINTS_MAX: usize = 65_536;
/// A stream record is closed once its ops take this many bytes, so that a tail reader
/// re-validating an open stream never re-reads more than this.
pub const STREAM_BYTES_MAX: usize = 1024 * 1024;

/// Bytes the in-memory directories of sealed log segments (`wal::directory`) and their
/// measures may take in one store handle. A directory costs about 48 bytes per metric record
/// (a `RunId` is 16 bytes), so this holds the directories of about 250 segments of 64 MiB in
/// 12 KiB records; past it, further segments are read by scanning them whole.
pub const SEGMENT_DIRECTORIES_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Distinct metric keys one run can have in one writer's log. Far beyond any real run; it
/// bounds the tables readers build from key ids, which a crafted file could otherwise inflate.
pub const KEYS_PER_RUN_MAX: usize = 1 << 20;

/// Longest string (a name, key or value) in an event payload.
pub const STRING_BYTES_MAX: usize = 1024 * 1024;

/// Batches smaller than this are not worth an lz4 attempt.
pub const COMPRESS_PAYLOAD_BYTES_MIN: usize = 256;

/// Writer lanes per log handle. Threads beyond this share lanes (and then contend).
pub const LANES_DEFAULT: usize = 64;

/// Default flush interval of `Durability::Interval`.
pub const FLUSH_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

/// How stale reads may be by default with respect to other handles' writes. A refresh lists
/// `wal/` and reads the manifest generation: tens to hundreds of microseconds, so 5 ms bounds
/// its cost to a few percent of one core however many requests a server answers, while staying
/// far below what a person watching a dashboard or a client polling a run can notice.
pub const REFRESH_INTERVAL_DEFAULT: Duration = Duration::from_millis(5);

const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_FIRST);
const _: () = assert!(SEGMENT_BYTES_FIRST <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(STREAM_BYTES_MAX < SEGMENT_BYTES_DEFAULT as usize);
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(STRING_BYTES_MAX <= RECORD_PAYLOAD_BYTES_MAX);
