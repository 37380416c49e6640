//! What `runs/search` reads for a page of results besides the search itself: each run's
//! dataset inputs and model links. Measures, in one process over one store, the search alone,
//! the search with one lookup per run of the page (`run_dataset_inputs`, `run_model_links`:
//! each checks the catalog's freshness, and the first looks the run up again), and the search
//! with the page-wide accessors (`runs_dataset_inputs`, `runs_model_links`: one freshness
//! check each). The ratios are the figures; the times move with the machine's load.
//!
//! The store has the shape of the server bench's search (`benches/serve.rs`): 10,000 runs in
//! one experiment, each with metric `acc` and param `lr`, searched with a two-clause filter
//! for 100 results; every run also has a dataset input and every tenth a model output.
//!
//! Run: `cargo bench --bench search_page`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use runlog::query::SearchRuns;
use runlog::{
    Dataset, DatasetInput, Durability, ModelLink, ModelOptions, RunOptions, Store, StoreOptions,
    ViewType,
};

const RUNS: usize = 10_000;
/// Pages timed per measure.
const SAMPLES: usize = 200;

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn time(mut page: impl FnMut() -> usize) -> (f64, usize) {
    let returned = page();
    let samples = (0..SAMPLES)
        .map(|_| {
            let started = Instant::now();
            page();
            started.elapsed()
        })
        .collect();
    (median_ms(samples), returned)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let experiment = store.get_or_create_experiment("search-bench").unwrap().id;
    let model = store
        .create_logged_model(experiment, ModelOptions::default())
        .unwrap()
        .id;
    let input = DatasetInput {
        dataset: Dataset {
            name: "train".into(),
            digest: "d1".into(),
            source_type: "local".into(),
            source: "{\"uri\": \"a\"}".into(),
            schema: None,
            profile: None,
        },
        tags: vec![("mlflow.data.context".into(), "training".into())],
    };
    for index in 0..RUNS {
        let run = store.start_run(experiment, RunOptions::default()).unwrap();
        run.log_metric_at("acc", (index % 1000) as f64 / 1000.0, 0, 1)
            .unwrap();
        run.log_param("lr", ["0.1", "0.01", "0.001"][index % 3])
            .unwrap();
        store
            .log_dataset_inputs(run.id(), std::slice::from_ref(&input))
            .unwrap();
        if index % 10 == 0 {
            store
                .link_run_models(run.id(), &[(model, ModelLink::Output { step: 1 })])
                .unwrap();
        }
        run.detach();
    }
    let search = SearchRuns {
        experiments: vec![experiment],
        filter: "metrics.acc > 0.5 and params.lr = '0.01'".into(),
        order_by: Vec::new(),
        max_results: 100,
        page_token: None,
        view: ViewType::ActiveOnly,
    };

    let (alone, returned) = time(|| store.search_runs(&search).unwrap().runs.len());
    let (per_run, _) = time(|| {
        let page = store.search_runs(&search).unwrap();
        for run in &page.runs {
            store.run_dataset_inputs(run.info.id).unwrap();
            store.run_model_links(run.info.id).unwrap();
        }
        page.runs.len()
    });
    let (page_wide, _) = time(|| {
        let page = store.search_runs(&search).unwrap();
        let runs: Vec<_> = page
            .runs
            .iter()
            .map(|run| (run.info.id, run.info.experiment))
            .collect();
        let ids: Vec<_> = runs.iter().map(|(run, _)| *run).collect();
        store.runs_dataset_inputs(&runs).unwrap();
        store.runs_model_links(&ids).unwrap();
        page.runs.len()
    });
    println!(
        "search page, {RUNS} runs, two-clause filter, {returned} results, median of {SAMPLES}:"
    );
    println!("  search alone:                      {alone:.3} ms");
    println!("  + datasets and links, per run:     {per_run:.3} ms");
    println!("  + datasets and links, page-wide:   {page_wide:.3} ms");
    println!(
        "  page-wide / per run: {:.2} (the reads alone: {:.2})",
        page_wide / per_run,
        (page_wide - alone) / (per_run - alone)
    );
}
