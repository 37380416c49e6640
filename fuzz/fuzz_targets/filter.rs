//! Fuzzes the search filter and order-by parsers, for runs and for experiments: any input gives `Ok` or an error whose column
//! lies within the input (or just past its end), never a panic. A filter that parses must also
//! be evaluable against a run without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let columns = text.chars().count() + 1;
    match runlog::query::parse(text) {
        Ok(filter) => {
            let view = runlog::RunView {
                info: runlog::RunInfo {
                    id: runlog::RunId(1),
                    experiment: runlog::ExperimentId(1),
                    name: "r".into(),
                    status: runlog::RunStatus::Running,
                    start_time_ms: 0,
                    end_time_ms: None,
                    parent: None,
                    lifecycle_stage: runlog::LifecycleStage::Active,
                    user: None,
                },
                params: [("lr".to_string(), "0.1".to_string())].into(),
                tags: [("model".to_string(), "resnet".to_string())].into(),
                metrics: Default::default(),
                artifacts: Default::default(),
            };
            let _ = runlog::query::matches(&filter, &view);
        }
        Err(error) => assert!(error.column >= 1 && error.column <= columns, "{error} in {text:?}"),
    }
    if let Err(error) = runlog::query::parse_order_by(text) {
        assert!(error.column >= 1 && error.column <= columns, "{error} in {text:?}");
    }
    let experiments = runlog::query::Subject::Experiments;
    if let Err(error) = runlog::query::parse_for(experiments, text) {
        assert!(error.column >= 1 && error.column <= columns, "{error} in {text:?}");
    }
    if let Err(error) = runlog::query::parse_order_by_for(experiments, text) {
        assert!(error.column >= 1 && error.column <= columns, "{error} in {text:?}");
    }
});
