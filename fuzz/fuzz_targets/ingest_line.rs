//! Fuzzes the `runlog ingest` line parser differentially: the fast scanner and the serde_json
//! reference must give the same line, or the same error, for any bytes, and neither may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fast = format!("{:?}", runlog::ingest::parse_line(data, 7));
    let reference = format!("{:?}", runlog::ingest::parse_line_reference(data, 7));
    assert_eq!(fast, reference, "input {:?}", String::from_utf8_lossy(data));
});
