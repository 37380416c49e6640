//! Bytes per point of compacted files on issue 16's mixed workload (`mixed_workload`): a size
//! floor, and every value read back bit for bit. The 1 M-point figures are the bench
//! `compacted_bytes`'s (`docs/BENCHMARKS.md`).

use runlog::{Durability, Store, StoreOptions};

use super::mixed_workload::{self, KEYS};

/// Issue 16's floor for compacted files, in bytes per point.
const BYTES_PER_POINT_MAX: f64 = 4.5;

#[test]
fn compacted_files_of_a_mixed_f32_and_f64_workload_cost_at_most_4_5_bytes_per_point() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    // 2 runs x 4 keys x 25,000 steps: 200,000 points, enough for several full pages a series.
    let runs = mixed_workload::log(&store, "e", 2, 25_000, 16);
    let report = store.compact().unwrap();
    let points = 2 * 4 * 25_000u64;
    assert_eq!(report.points, points);
    let per_point = report.bytes as f64 / points as f64;
    eprintln!(
        "{} bytes for {points} points: {per_point:.3} bytes/point",
        report.bytes
    );
    for (name, bytes) in mixed_workload::column_bytes(&store, dir.path()) {
        eprintln!("  {name}: {:.3} bytes/point", bytes as f64 / points as f64);
    }
    for (run, columns) in &runs {
        for (key, values) in KEYS.iter().zip(&columns.values) {
            let history = store.history(*run, key, ..).unwrap();
            assert_eq!(history.steps, columns.steps, "{key}");
            assert_eq!(history.timestamps_ms, columns.timestamps_ms, "{key}");
            let bits = |v: &[f64]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&history.values), bits(values), "{key}");
        }
    }
    assert!(
        per_point <= BYTES_PER_POINT_MAX,
        "{per_point:.3} bytes/point"
    );
}
