"""Datasets in the differential check: `mlflow.log_input` of datasets made with MLflow's own
`mlflow.data` constructors (numpy and pandas), logged with contexts and tags, logged again,
and read back through `MlflowClient.get_run`, `search_runs` (dataset filters included) and
`experiments/search-datasets`, and the training dataset scikit-learn's autologging logs,
against `mlflow server` and each subject. The scenario shares test_differential's `compare`, so
the reference runs it once.
"""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.entities import Dataset, DatasetInput, InputTag

from test_differential import compare, raises


def _inputs(run, n):
    """A run's dataset inputs as comparable data, in the order the server gives them."""
    out = []
    for dataset_input in run.inputs.dataset_inputs:
        d = dataset_input.dataset
        out.append({
            "name": d.name,
            "digest": d.digest,
            "source_type": d.source_type,
            "source": json.loads(d.source),
            "schema": json.loads(d.schema) if d.schema else None,
            "profile": json.loads(d.profile) if d.profile else None,
            "tags": sorted((t.key, t.value) for t in dataset_input.tags),
        })
    return out


def _search_datasets(client, experiment_ids, n):
    """`experiments/search-datasets`, which only MLflow's UI calls (MLflow's server answers it
    under `/ajax-api/` alone): over HTTP for a server; for a `runlog:///` store through the
    plugin's `_search_datasets`, what `mlflow server` on such a store calls."""
    url = mlflow.get_tracking_uri()
    if url.startswith("runlog:"):
        found = client._tracking_client.store._search_datasets(experiment_ids)
        summaries = [(s.experiment_id, s.name, s.digest, s.context) for s in found]
    else:
        path = "/ajax-api/2.0/mlflow/experiments/search-datasets"
        r = requests.post(url + path, json={"experiment_ids": experiment_ids}, timeout=60)
        if r.status_code != 200:
            return {"status": r.status_code, "error_code": r.json().get("error_code")}
        summaries = [
            (s["experiment_id"], s["name"], s["digest"], s.get("context"))
            for s in r.json().get("dataset_summaries", [])
        ]
    summaries = [(n.exp(e), name, digest, context) for e, name, digest, context in summaries]
    return sorted(summaries, key=lambda s: tuple("" if v is None else v for v in s))


def scenario_datasets(client, n):
    out = {}
    exp = client.create_experiment("datasets-area")
    n.exp(exp)
    other_exp = client.create_experiment("datasets-area-other")
    n.exp(other_exp)
    features = np.arange(12, dtype=np.float64).reshape(4, 3)
    train = mlflow.data.from_numpy(
        features, targets=np.array([0, 1, 0, 1]), source="/data/train.npy", name="train"
    )
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": ["a", "b", "a"]})
    holdout = mlflow.data.from_pandas(frame, source="/data/holdout.csv", name="holdout", targets="label")

    mlflow.set_experiment(experiment_id=exp)
    with mlflow.start_run(run_name="uses") as run:
        mlflow.log_input(train, context="training")
        mlflow.log_input(holdout, context="eval", tags={"split": "holdout"})
        # Logged again with another context: MLflow keeps the first logging's tags.
        mlflow.log_input(train, context="validation")
    run_id = run.info.run_id
    n.run(run_id)
    got = client.get_run(run_id)
    out["get_run"] = _inputs(got, n)
    out["get_run_models"] = len(got.inputs.model_inputs)

    # A second run of the experiment uses the experiment's dataset with its own tags; a run of
    # another experiment has a dataset of its own.
    second = client.create_run(exp, run_name="second").info.run_id
    n.run(second)
    client.log_inputs(second, [DatasetInput(train._to_mlflow_entity(), [InputTag("mlflow.data.context", "test")])])
    third = client.create_run(other_exp, run_name="third").info.run_id
    n.run(third)
    client.log_inputs(third, [DatasetInput(holdout._to_mlflow_entity())])
    out["second"] = _inputs(client.get_run(second), n)
    out["third"] = _inputs(client.get_run(third), n)

    found = client.search_runs([exp, other_exp], order_by=["attributes.run_name ASC"])
    out["search_runs"] = {r.info.run_name: _inputs(r, n) for r in found}
    out["search_datasets"] = _search_datasets(client, [exp, other_exp], n)
    for clause in [
        "dataset.name = 'train'",
        "datasets.digest != 'nope'",
        "dataset.context = 'training'",
        "dataset.context != 'training'",
        "dataset.context IN ('test', 'eval')",
        "dataset.name LIKE 'hold%'",
        "dataset.name ILIKE 'TRAIN'",
        "dataset.name NOT IN ('train')",
        "dataset.name = 'train' AND dataset.context = 'eval'",
        "dataset.name = 'absent'",
    ]:
        found = client.search_runs([exp, other_exp], clause)
        out[f"filter {clause}"] = sorted(r.info.run_name for r in found)
    out["filter bad field"] = raises(lambda: client.search_runs([exp], "dataset.source = 'x'"))
    out["order by dataset"] = raises(lambda: client.search_runs([exp], order_by=["dataset.name"]))

    entity = train._to_mlflow_entity()
    long_name = Dataset("x" * 501, entity.digest, entity.source_type, entity.source)
    out["too_long_name"] = raises(lambda: client.log_inputs(second, [DatasetInput(long_name)]))
    long_tag = DatasetInput(entity, [InputTag("k", "v" * 501)])
    out["too_long_tag"] = raises(lambda: client.log_inputs(second, [long_tag]))
    out["unknown_run"] = raises(lambda: client.log_inputs("0" * 32, [DatasetInput(entity)]))
    client.delete_run(third)
    out["deleted_run"] = raises(lambda: client.log_inputs(third, [DatasetInput(entity)]))
    out["after_errors"] = _inputs(client.get_run(second), n)
    return out


def test_datasets(reference_url, subject_url):
    compare(scenario_datasets, reference_url, subject_url)


def scenario_sklearn_autolog_dataset(client, n):
    """scikit-learn's autologging logs the training data it sees as a dataset input (context
    `train`), through the autologging client's batched `log_inputs`."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    exp = client.create_experiment("datasets-autolog-area")
    n.exp(exp)
    mlflow.set_experiment(experiment_id=exp)
    features = np.arange(20.0).reshape(10, 2)
    mlflow.sklearn.autolog(log_models=False, log_datasets=True, silent=True)
    try:
        with mlflow.start_run(run_name="autolog") as run:
            sklearn.LinearRegression().fit(features, features.sum(axis=1))
    finally:
        mlflow.sklearn.autolog(disable=True)
    n.run(run.info.run_id)
    return {"inputs": _inputs(client.get_run(run.info.run_id), n)}


def test_sklearn_autolog_dataset(reference_url, subject_url):
    compare(scenario_sklearn_autolog_dataset, reference_url, subject_url)
