"""The differential check, the contract of `runlog serve`: one client scenario per area, run
through MLflow's own client (MlflowClient and the fluent API) against a real `mlflow server`
and against `runlog serve`; the normalized results must be equal.

Each scenario takes a tracking URI and a Normalizer and returns plain data. Experiment names
carry the area's name so the areas never see each other's data on the shared servers.
"""

import hashlib
import random
import re
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import normalize
from normalize import Normalizer

INF = float("inf")
NAN = float("nan")
T0 = 1_700_000_000_000  # explicit metric timestamps, so histories compare exactly


# Each scenario's reference result, computed once and compared with every subject: a scenario
# creates uniquely named experiments, so it cannot run twice against the one reference server.
_REFERENCE_RESULTS = {}


def compare(scenario, reference_url, subject_url):
    if scenario not in _REFERENCE_RESULTS:
        _REFERENCE_RESULTS[scenario] = run_scenario(scenario, reference_url)
    reference = _REFERENCE_RESULTS[scenario]
    subject = run_scenario(scenario, subject_url)
    if reference != subject:
        label = "runlog:///" if subject_url.startswith("runlog:") else "runlog serve"
        pytest.fail("results differ:\n" + normalize.diff(reference, subject, label), pytrace=False)


def run_scenario(scenario, url):
    mlflow.set_tracking_uri(url)
    # set_experiment's choice is process-global and names an id of the other target; the
    # client has no public call that forgets it.
    mlflow.tracking.fluent._active_experiment_id = None
    try:
        return scenario(MlflowClient(tracking_uri=url), Normalizer())
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()


def raises(fn):
    """Runs fn, which must fail with an MlflowException; returns the client-visible error."""
    try:
        fn()
    except MlflowException as e:
        return normalize.error(e)
    return "no error raised"


# ---------------------------------------------------------------- experiments


def scenario_experiments(client, n):
    out = {}
    ids = [
        client.create_experiment(f"exp-area-{i}", tags={"team": f"t{i % 2}", "i": str(i)})
        for i in range(5)
    ]
    for i in ids:
        n.exp(i)
    out["get"] = n.experiment(client.get_experiment(ids[0]))
    out["get_by_name"] = n.experiment(client.get_experiment_by_name("exp-area-1"))
    out["get_by_name_missing"] = client.get_experiment_by_name("exp-area-nope")

    def page_through(**kw):
        pages, token = [], None
        while True:
            page = client.search_experiments(max_results=2, page_token=token, **kw)
            pages.append([n.exp(e.experiment_id) for e in page])
            token = page.token
            if not token:
                return pages

    out["search_name_asc_paged"] = page_through(filter_string="name LIKE 'exp-area-%'", order_by=["name ASC"])
    out["search_name_desc"] = [
        e.name for e in client.search_experiments(filter_string="name LIKE 'exp-area-%'", order_by=["name DESC"])
    ]
    out["search_by_tag"] = sorted(
        e.name for e in client.search_experiments(filter_string="name LIKE 'exp-area-%' AND tags.team = 't1'")
    )

    client.rename_experiment(ids[2], "exp-area-renamed")
    out["renamed"] = n.experiment(client.get_experiment(ids[2]))
    out["old_name_gone"] = client.get_experiment_by_name("exp-area-2")

    client.set_experiment_tag(ids[3], "extra", "yes")
    client.set_experiment_tag(ids[3], "team", "overwritten")
    client.delete_experiment_tag(ids[3], "i")
    out["tagged"] = n.experiment(client.get_experiment(ids[3]))

    client.delete_experiment(ids[4])
    out["deleted"] = n.experiment(client.get_experiment(ids[4]))
    out["deleted_by_name"] = n.experiment(client.get_experiment_by_name("exp-area-4"))
    pattern = "name LIKE 'exp-area-%'"
    out["active_after_delete"] = sorted(e.name for e in client.search_experiments(filter_string=pattern))
    out["deleted_only"] = sorted(
        e.name for e in client.search_experiments(view_type=ViewType.DELETED_ONLY, filter_string=pattern)
    )
    out["all"] = sorted(e.name for e in client.search_experiments(view_type=ViewType.ALL, filter_string=pattern))
    client.restore_experiment(ids[4])
    out["restored"] = n.experiment(client.get_experiment(ids[4]))

    mlflow.set_experiment("exp-area-fluent")
    fluent = mlflow.get_experiment_by_name("exp-area-fluent")
    out["fluent_set_experiment"] = n.experiment(fluent)
    out["default_experiment"] = n.experiment(client.get_experiment("0"))
    return out


def test_experiments(reference_url, subject_url):
    compare(scenario_experiments, reference_url, subject_url)


def scenario_experiment_lifecycle(client, n):
    """What deleting and restoring an experiment does to its runs and to later writes."""
    out = {}
    exp = client.create_experiment("lifecycle-area")
    n.exp(exp)
    other = client.create_experiment("lifecycle-area-other")
    n.exp(other)
    runs = []
    for i in range(3):
        rid = client.create_run(exp, run_name=f"l{i}").info.run_id
        n.run(rid)
        runs.append(rid)
    client.delete_run(runs[2])
    client.delete_experiment(exp)
    out["runs_after_experiment_delete"] = [n.run_info(client.get_run(r).info) for r in runs]
    for view in (ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY, ViewType.ALL):
        out[f"search_runs_view_{view}"] = sorted(
            r.info.run_name for r in client.search_runs([exp], run_view_type=view)
        )
    out["create_run_in_deleted"] = raises(lambda: client.create_run(exp))
    out["log_to_run_of_deleted"] = raises(lambda: client.log_metric(runs[0], "m", 1.0))
    out["rename_deleted"] = raises(lambda: client.rename_experiment(exp, "lifecycle-area-x"))
    out["tag_deleted"] = raises(lambda: client.set_experiment_tag(exp, "k", "v"))
    out["delete_deleted"] = raises(lambda: client.delete_experiment(exp))
    out["create_same_name_while_deleted"] = raises(lambda: client.create_experiment("lifecycle-area"))
    client.restore_experiment(exp)
    out["runs_after_experiment_restore"] = [n.run_info(client.get_run(r).info) for r in runs]
    out["restore_active"] = raises(lambda: client.restore_experiment(exp))
    out["rename_to_taken"] = raises(lambda: client.rename_experiment(exp, "lifecycle-area-other"))
    out["delete_default_experiment_unknown"] = raises(lambda: client.delete_experiment("987654"))
    return out


def test_experiment_lifecycle(reference_url, subject_url):
    compare(scenario_experiment_lifecycle, reference_url, subject_url)


# ---------------------------------------------------------------- runs


def scenario_runs(client, n):
    out = {}
    exp = client.create_experiment("runs-area")
    n.exp(exp)

    with mlflow.start_run(experiment_id=exp, run_name="parent") as parent:
        n.run(parent.info.run_id)
        mlflow.log_param("kind", "parent")
        with mlflow.start_run(experiment_id=exp, run_name="child-a", nested=True) as child_a:
            n.run(child_a.info.run_id)
            mlflow.log_param("kind", "child")
            mlflow.log_metric("loss", 0.5, step=1)
        with mlflow.start_run(experiment_id=exp, run_name="child-b", nested=True) as child_b:
            n.run(child_b.info.run_id)
            mlflow.log_param("kind", "child")
            mlflow.log_metric("loss", 0.25, step=1)
    out["parent"] = n.run_obj(client.get_run(parent.info.run_id))
    out["child_a"] = n.run_obj(client.get_run(child_a.info.run_id))
    out["child_b"] = n.run_obj(client.get_run(child_b.info.run_id))

    created = []
    for i in range(5):
        r = client.create_run(exp, run_name=f"c{i}", tags={"group": "even" if i % 2 == 0 else "odd"},
                              start_time=T0 + i)
        n.run(r.info.run_id)
        created.append(r.info.run_id)
        client.log_param(r.info.run_id, "lr", f"0.{i}")
        client.log_metric(r.info.run_id, "acc", i / 10, timestamp=T0, step=0)
    out["created_running"] = n.run_obj(client.get_run(created[0]))
    client.set_terminated(created[0], status="FINISHED", end_time=T0 + 100)
    client.set_terminated(created[1], status="FAILED")
    client.set_terminated(created[2], status="KILLED")
    client.update_run(created[3], name="c3-renamed")
    out["finished"] = n.run_obj(client.get_run(created[0]))
    out["failed"] = n.run_obj(client.get_run(created[1]))
    out["killed"] = n.run_obj(client.get_run(created[2]))
    out["renamed"] = n.run_obj(client.get_run(created[3]))

    def names(runs):
        return [r.info.run_name for r in runs]

    def search(flt="", **kw):
        return client.search_runs([exp], filter_string=flt, **kw)

    out["search_default_order"] = sorted(names(search()))  # ties on start_time: no defined order
    out["search_metric_gt"] = names(search("metrics.acc > 0.15", order_by=["metrics.acc DESC"]))
    out["search_param_eq"] = names(search("params.lr = '0.2'"))
    out["search_param_like"] = sorted(names(search("params.lr LIKE '0.%'")))
    out["search_tag_and_metric"] = names(search("tags.group = 'even' AND metrics.acc >= 0.1",
                                                order_by=["metrics.acc ASC"]))
    out["search_status"] = sorted(names(search("attributes.status = 'FINISHED'")))
    out["search_run_name"] = names(search("attributes.run_name = 'child-a'"))
    out["search_parent_tag"] = sorted(names(search(f"tags.mlflow.parentRunId = '{parent.info.run_id}'")))
    out["search_order_param_desc"] = names(search("params.lr LIKE '0.%'", order_by=["params.lr DESC"]))
    out["search_order_start_time"] = names(search("params.lr LIKE '0.%'", order_by=["attributes.start_time ASC"]))

    pages, token = [], None
    while True:
        page = search("params.lr LIKE '0.%'", max_results=2, order_by=["metrics.acc ASC"], page_token=token)
        pages.append(names(page))
        token = page.token
        if not token:
            break
    out["search_paged"] = pages

    frame = mlflow.search_runs(experiment_ids=[exp], filter_string="params.lr LIKE '0.%'",
                               order_by=["metrics.acc DESC"])
    out["fluent_search_runs_columns"] = sorted(frame.columns)
    out["fluent_search_runs_rows"] = [
        (n.run(row["run_id"]), row["tags.mlflow.runName"], row["params.lr"], normalize.value(row["metrics.acc"]),
         row["status"])
        for _, row in frame.iterrows()
    ]

    client.delete_run(created[4])
    out["deleted_get"] = n.run_obj(client.get_run(created[4]))
    out["active_after_delete"] = sorted(names(search()))
    out["deleted_only"] = names(search(run_view_type=ViewType.DELETED_ONLY))
    out["all"] = sorted(names(search(run_view_type=ViewType.ALL)))
    client.restore_run(created[4])
    out["restored"] = n.run_obj(client.get_run(created[4]))

    generated = client.create_run(exp)
    n.run(generated.info.run_id)
    got = client.get_run(generated.info.run_id)
    out["generated_name"] = {
        "non_empty": bool(got.info.run_name),
        "tag_matches": got.data.tags.get("mlflow.runName") == got.info.run_name,
        # Both sides make up <adjective>-<noun>-<number>, from different word lists.
        "shape": bool(re.fullmatch(r"[a-z]+-[a-z]+-[0-9]{1,4}", got.info.run_name or "")),
    }
    return out


def test_runs(reference_url, subject_url):
    compare(scenario_runs, reference_url, subject_url)


def scenario_search(client, n):
    """The filter grammar and ordering rules beyond the basic cases: every comparator, NaN and
    missing values in order_by, attribute filters, and the server's limits."""
    exp = client.create_experiment("search-area")
    n.exp(exp)
    spec = [  # name, lr, loss (None: never logged), tag
        ("s0", "0.1", 0.5, "Alpha"),
        ("s1", "0.2", NAN, "beta"),
        ("s2", "0.3", None, "alphabet"),
        ("s3", "0.01", -1.0, None),
        ("s4", "1e-3", 2.0, "ALPHA"),
    ]
    ids = {}
    for i, (name, lr, loss, tag) in enumerate(spec):
        rid = client.create_run(exp, run_name=name, start_time=T0 + 1000 * i).info.run_id
        ids[name] = rid
        n.run(rid)
        client.log_param(rid, "lr", lr)
        if loss is not None:
            client.log_metric(rid, "loss", loss, timestamp=T0, step=0)
        if tag is not None:
            client.set_tag(rid, "family", tag)
    client.set_terminated(ids["s0"])

    def names(flt="", order_by=None):
        return [r.info.run_name for r in client.search_runs([exp], flt, order_by=order_by)]

    def sorted_names(flt):
        return sorted(names(flt))

    out = {}
    for flt in [
        "metrics.loss > 0", "metrics.loss >= 0.5", "metrics.loss < 0", "metrics.loss <= 2",
        "metrics.loss = 2", "metrics.loss != 2", "metrics.loss > -1e9",
        "params.lr = '0.1'", "params.lr != '0.1'", "params.lr LIKE '0.%'", "params.lr ILIKE '1E%'",
        "tags.family = 'Alpha'", "tags.family LIKE 'alpha%'", "tags.family ILIKE 'alpha%'",
        "tags.family != 'beta'", "tags.family IS NULL", "tags.family IS NOT NULL",
        "params.lr IS NOT NULL",
        "attributes.status = 'FINISHED'", "attributes.status != 'FINISHED'",
        f"attributes.start_time > {T0 + 1500}", f"attributes.start_time <= {T0 + 1000}",
        "attributes.run_name LIKE 's%'", "attributes.run_name ILIKE 'S1'",
        f"attributes.run_id IN ('{ids['s1']}', '{ids['s3']}')",
        f"attributes.run_id = '{ids['s2']}'",
        "metrics.loss > 0 AND params.lr LIKE '0.%' AND tags.family ILIKE '%a%'",
        "metrics.`loss` > 0", 'params."lr" = \'0.2\'',
    ]:
        out[f"filter {flt}".replace(ids["s1"], "<s1>").replace(ids["s2"], "<s2>").replace(ids["s3"], "<s3>")] = (
            sorted_names(flt)
        )
    for order in [["metrics.loss ASC"], ["metrics.loss DESC"], ["params.lr ASC"], ["tags.family DESC"],
                  ["attributes.run_name DESC"], ["attributes.start_time DESC"],
                  ["params.lr DESC", "attributes.run_name ASC"]]:
        out[f"order {order}"] = names(order_by=order)
    out["too_many_results"] = raises(lambda: client.search_runs([exp], max_results=50_001))
    out["unknown_experiment_search"] = sorted_names_or_error(client, ["987654"])
    return out


def sorted_names_or_error(client, experiment_ids):
    try:
        return sorted(r.info.run_name for r in client.search_runs(experiment_ids))
    except MlflowException as e:
        return normalize.error(e)


def test_search_filters_and_order(reference_url, subject_url):
    compare(scenario_search, reference_url, subject_url)


# ---------------------------------------------------------------- params and tags


def scenario_params_tags(client, n):
    out = {}
    exp = client.create_experiment("params-tags-area")
    n.exp(exp)
    run = client.create_run(exp, run_name="pt")
    rid = run.info.run_id
    n.run(rid)
    client.log_param(rid, "lr", "0.01")
    client.log_param(rid, "lr", "0.01")  # same value again: a no-op
    client.log_param(rid, "layers", 3)
    client.log_param(rid, "path/with:odd chars-_.", "v")
    client.log_param(rid, "long", "x" * 7000)  # truncated by the client to 6000
    client.set_tag(rid, "stage", "one")
    client.set_tag(rid, "stage", "two")  # tags overwrite
    client.set_tag(rid, "doomed", "x")
    client.delete_tag(rid, "doomed")
    client.log_batch(rid, params=[Param("b1", "1"), Param("b2", "2")], tags=[RunTag("bt", "v")])
    got = client.get_run(rid)
    out["run"] = n.run_obj(got)
    long_value = out["run"]["params"]["long"]
    out["run"]["params"]["long"] = f"{len(long_value)} chars, all x: {set(long_value) == {'x'}}"
    with mlflow.start_run(experiment_id=exp, run_name="fluent-pt") as r:
        n.run(r.info.run_id)
        mlflow.log_params({"a": 1, "b": "two"})
        mlflow.set_tags({"x": "1", "y": "2"})
        mlflow.set_tag("y", "3")
    out["fluent"] = n.run_obj(client.get_run(r.info.run_id))
    return out


def test_params_and_tags(reference_url, subject_url):
    compare(scenario_params_tags, reference_url, subject_url)


def scenario_values_and_keys(client, n):
    """Edge values and key shapes on the wire: unicode, the key characters MLflow allows, the
    length limits, extreme floats, writes to a finished run, a batch mixing all three kinds."""
    out = {}
    exp = client.create_experiment("values-area")
    n.exp(exp)
    rid = client.create_run(exp, run_name="v").info.run_id
    n.run(rid)
    client.log_param(rid, "unicode", "\u00e9\u00e8 \u6f22\u5b57 \U0001f600")
    client.set_tag(rid, "unicode", "\u00fc\n\ttab")
    client.set_tag(rid, "long_tag", "y" * 9000)  # cut to 8000
    client.log_param(rid, "k" * 250, "max key length")
    out["key_too_long"] = raises(lambda: client.log_param(rid, "k" * 251, "x"))
    for key in ["with space", "a/b/c", "col:on", "dash-dot.under_score", "\u00e9t\u00e9"]:
        client.log_metric(rid, key, 1.0, timestamp=T0, step=0)
    for i, v in enumerate([1e-300, 5e-324, 1e308, -1e308, 123456789.123456789, 0.1 + 0.2, 3, 2**53 + 1]):
        client.log_metric(rid, "extreme", v, timestamp=T0, step=i)
    out["bool_metric"] = raises(lambda: client.log_metric(rid, "b", True))
    out["string_metric"] = raises(lambda: client.log_metric(rid, "b", "1.0"))
    client.set_terminated(rid)
    client.log_metric(rid, "after_finish", 1.0, timestamp=T0, step=0)  # MLflow accepts this
    client.set_tag(rid, "after_finish", "ok")
    mixed_metrics = [Metric("mixed", float(i), T0, i) for i in range(950)]
    mixed_params = [Param(f"mp{i}", str(i)) for i in range(60)]
    mixed_tags = [RunTag(f"mt{i}", str(i)) for i in range(60)]
    client.log_batch(rid, metrics=mixed_metrics, params=mixed_params, tags=mixed_tags)  # over 1000: split
    got = client.get_run(rid)
    run = n.run_obj(got)
    run["tags"]["long_tag"] = f"{len(got.data.tags['long_tag'])} chars"
    out["run"] = run
    out["extreme_history"] = normalize.history(client.get_metric_history(rid, "extreme"))
    out["mixed_count"] = len(client.get_metric_history(rid, "mixed"))
    out["experiment_tag_too_long"] = raises(lambda: client.set_experiment_tag(exp, "t", "z" * 20001))
    client.set_experiment_tag(exp, "t", "z" * 20000)
    out["experiment_tag_len"] = len(client.get_experiment(exp).tags["t"])
    out["experiment_name_too_long"] = raises(lambda: client.create_experiment("n" * 501))
    out["experiment_name_empty"] = raises(lambda: client.create_experiment(""))
    return out


def test_values_and_keys(reference_url, subject_url):
    compare(scenario_values_and_keys, reference_url, subject_url)


# ---------------------------------------------------------------- metrics


def scenario_metrics(client, n):
    out = {}
    exp = client.create_experiment("metrics-area")
    n.exp(exp)
    rid = client.create_run(exp, run_name="m").info.run_id
    n.run(rid)
    log = client.log_metric
    for step, v in enumerate([1.0, 0.5, NAN, INF, -INF, 0.25]):
        log(rid, "special", v, timestamp=T0 + step, step=step)
    for step in (-3, -1, 0, 2):
        log(rid, "negative_steps", float(step), timestamp=T0, step=step)
    log(rid, "repeat", 1.0, timestamp=T0, step=5)
    log(rid, "repeat", 2.0, timestamp=T0 + 1, step=5)  # same step, new value: both kept
    log(rid, "repeat", 3.0, timestamp=T0 + 1, step=5)  # same step and time, new value
    log(rid, "repeat", 0.5, timestamp=T0 + 2, step=4)  # older step logged later
    log(rid, "exact_dup", 7.0, timestamp=T0, step=1)
    log(rid, "exact_dup", 7.0, timestamp=T0, step=1)  # identical point (module docstring of normalize)
    log(rid, "last_nan", 1.0, timestamp=T0, step=0)
    log(rid, "last_nan", NAN, timestamp=T0, step=1)
    log(rid, "last_inf", INF, timestamp=T0, step=9)
    log(rid, "big_step", 1.5, timestamp=T0, step=2**62)
    log(rid, "no_step", 4.0, timestamp=T0)
    batch = [Metric("batched", i * 0.5, T0 + i, i) for i in range(2500)]  # the client splits by 1000
    batch += [Metric("batched_other", -float(i), T0, i) for i in range(10)]
    client.log_batch(rid, metrics=batch)
    run = client.get_run(rid)
    out["latest"] = n.run_obj(run)["metrics"]
    keys = ["special", "negative_steps", "repeat", "exact_dup", "last_nan", "last_inf", "big_step",
            "no_step", "batched_other"]
    out["history"] = {k: normalize.history(client.get_metric_history(rid, k)) for k in keys}
    batched = client.get_metric_history(rid, "batched")
    out["batched_count"] = len(normalize.history(batched))
    out["batched_ends"] = normalize.history(batched)[:2] + normalize.history(batched)[-2:]
    out["history_missing_key"] = client.get_metric_history(rid, "never-logged")
    out["search_latest_after_older_step"] = [
        r.info.run_name for r in client.search_runs([exp], "metrics.repeat = 3.0")
    ]
    out["search_inf"] = [r.info.run_name for r in client.search_runs([exp], "metrics.last_inf > 1e300")]

    with mlflow.start_run(experiment_id=exp, run_name="fluent-m") as r:
        n.run(r.info.run_id)
        for i in range(5):
            mlflow.log_metric("fluent", i * 2.0, step=i)  # timestamp = now: compared as "<ts>"
        mlflow.log_metrics({"m1": 1.0, "m2": 2.0}, step=3)
    fid = r.info.run_id
    out["fluent_latest"] = n.run_obj(client.get_run(fid))["metrics"]
    out["fluent_history"] = normalize.history(client.get_metric_history(fid, "fluent"), stamp=lambda ts: "<ts>")
    return out


def test_metrics(reference_url, subject_url):
    compare(scenario_metrics, reference_url, subject_url)


def scenario_async(client, n):
    out = {}
    exp = client.create_experiment("async-area")
    n.exp(exp)
    with mlflow.start_run(experiment_id=exp, run_name="async") as r:
        n.run(r.info.run_id)
        ops = [mlflow.log_metric("a", float(i), step=i, synchronous=False) for i in range(200)]
        mlflow.log_param("p", "async", synchronous=False)
        mlflow.set_tag("t", "async", synchronous=False)
        mlflow.log_metrics({"b": 1.0, "c": 2.0}, step=7, synchronous=False)
        mlflow.flush_async_logging()
        out["ops_waitable"] = all(hasattr(op, "wait") for op in ops)
    rid = r.info.run_id
    # a second batch through the client, waited on individually
    client_ops = [client.log_metric(rid, "d", float(i), timestamp=T0 + i, step=i, synchronous=False)
                  for i in range(50)]
    for op in client_ops:
        op.wait()
    out["run"] = n.run_obj(client.get_run(rid))
    out["a_history"] = normalize.history(client.get_metric_history(rid, "a"), stamp=lambda ts: "<ts>")
    out["d_history"] = normalize.history(client.get_metric_history(rid, "d"))
    return out


def scenario_history_paging(client, n):
    """More points than one get-history page (25,000), so the client follows page tokens."""
    exp = client.create_experiment("history-paging-area")
    n.exp(exp)
    rid = client.create_run(exp, run_name="long").info.run_id
    n.run(rid)
    total = 25_000 + 1_234
    client.log_batch(rid, metrics=[Metric("long", float(i), T0 + i, i) for i in range(total)])
    hist = normalize.history(client.get_metric_history(rid, "long"))
    expected = [(i, T0 + i, repr(float(i))) for i in range(total)]
    return {"count": len(hist), "all_points_in_order": hist == expected, "latest": n.run_obj(client.get_run(rid))["metrics"]}


def test_metric_history_paging(reference_url, subject_url):
    compare(scenario_history_paging, reference_url, subject_url)


def test_async_logging(reference_url, subject_url):
    compare(scenario_async, reference_url, subject_url)


# ---------------------------------------------------------------- artifacts


def _tree(root):
    root = Path(root)
    if root.is_file():
        return {root.name: root.read_text()}
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _listing(infos):
    return sorted((f.path, f.is_dir, f.file_size) for f in infos)


def scenario_artifacts(client, n):
    out = {}
    exp = client.create_experiment("artifacts-area")
    n.exp(exp)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "src")
        (src / "dir" / "inner").mkdir(parents=True)
        (src / "a.txt").write_text("hello\n")
        (src / "dir" / "b.csv").write_text("x,y\n1,2\n")
        (src / "dir" / "inner" / "c.txt").write_text("deep")
        (src / "empty.txt").write_text("")
        with mlflow.start_run(experiment_id=exp, run_name="art") as r:
            rid = r.info.run_id
            n.run(rid)
            mlflow.log_artifact(str(src / "a.txt"))
            mlflow.log_artifact(str(src / "empty.txt"), artifact_path="x/y")
            mlflow.log_artifacts(str(src / "dir"), artifact_path="dd")
            mlflow.log_text("some text\nlines", "notes/readme.txt")
            mlflow.log_dict({"lr": 0.1, "layers": [1, 2]}, "cfg.json")
            mlflow.log_dict({"k": "v"}, "cfg.yaml")
        client.log_text(rid, "from client", "client/t.txt")
        client.log_artifact(rid, str(src / "a.txt"), artifact_path="client")

        out["artifact_uri"] = n.text(client.get_run(rid).info.artifact_uri)
        out["list_root"] = _listing(client.list_artifacts(rid))
        out["list_dd"] = _listing(client.list_artifacts(rid, "dd"))
        out["list_dd_inner"] = _listing(client.list_artifacts(rid, "dd/inner"))
        out["list_x"] = _listing(client.list_artifacts(rid, "x"))
        out["list_missing"] = _listing(client.list_artifacts(rid, "no-such-dir"))
        out["list_file"] = _listing(client.list_artifacts(rid, "a.txt"))

        dst = Path(tmp, "dl")
        dst.mkdir()
        out["download_file"] = _tree(client.download_artifacts(rid, "a.txt", str(dst / "one")))
        out["download_dir"] = _tree(client.download_artifacts(rid, "dd", str(dst / "two")))
        out["download_all"] = _tree(mlflow.artifacts.download_artifacts(run_id=rid, dst_path=str(dst / "all")))
        out["download_uri"] = _tree(
            mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{rid}/notes", dst_path=str(dst / "uri"))
        )
        out["load_text"] = mlflow.artifacts.load_text(f"runs:/{rid}/notes/readme.txt")
        out["load_dict_json"] = mlflow.artifacts.load_dict(f"runs:/{rid}/cfg.json")
        out["load_text_yaml"] = mlflow.artifacts.load_text(f"runs:/{rid}/cfg.yaml")
        blob = random.Random(14).randbytes(3 * 1024 * 1024 + 7)
        Path(tmp, "blob.bin").write_bytes(blob)
        client.log_artifact(rid, str(Path(tmp, "blob.bin")), artifact_path="bin")
        got = Path(client.download_artifacts(rid, "bin/blob.bin", str(dst / "bin"))).read_bytes()
        out["binary_round_trip"] = {"size": len(got), "same_bytes": hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()}
        out["download_missing"] = raises(lambda: client.download_artifacts(rid, "nope.txt", str(dst / "x")))
    return out


def test_artifacts(reference_url, subject_url):
    compare(scenario_artifacts, reference_url, subject_url)


# ---------------------------------------------------------------- logged models


class _Length(mlflow.pyfunc.PythonModel):
    """A trivial pyfunc model: the length of each input's text."""

    def predict(self, context, model_input, params=None):
        return [len(str(x)) for x in model_input]


def _logged_model(m, n):
    """A LoggedModel's client-visible fields, ids and times normalized."""
    return {
        "model_id": n.id("model", m.model_id),
        "experiment_id": n.exp(m.experiment_id),
        "name": m.name,
        "artifact_location": n.text(m.artifact_location),
        "status": str(m.status),
        "model_type": m.model_type,
        "source_run_id": n.run(m.source_run_id),
        "tags": {k: v for k, v in m.tags.items() if not k.startswith("mlflow.source")},
        "params": dict(m.params),
        "times_ordered": m.creation_timestamp <= m.last_updated_timestamp,
    }


def scenario_logged_models(client, n):
    from mlflow.entities import LoggedModelInput, LoggedModelOutput, LoggedModelStatus

    out = {}
    exp = client.create_experiment("logged-models-area")
    n.exp(exp)
    with mlflow.start_run(experiment_id=exp, run_name="trainer") as r:
        rid = r.info.run_id
        n.run(rid)
        info = mlflow.pyfunc.log_model(name="model", python_model=_Length(), pip_requirements=["mlflow"])
    n.id("model", info.model_id)
    out["model_uri"] = n.text(info.model_uri)
    out["predict_runs_uri"] = list(mlflow.pyfunc.load_model(f"runs:/{rid}/model").predict(["a", "bb"]))
    out["predict_models_uri"] = list(mlflow.pyfunc.load_model(info.model_uri).predict(["ccc"]))
    out["files"] = sorted(f.path for f in mlflow.artifacts.list_artifacts(artifact_uri=info.model_uri))
    out["get"] = _logged_model(client.get_logged_model(info.model_id), n)

    ext = client.create_logged_model(exp, name="ext", params={"alpha": "0.5"})
    n.id("model", ext.model_id)
    client.set_logged_model_tags(ext.model_id, {"stage": "dev", "gone": "soon"})
    client.delete_logged_model_tag(ext.model_id, "gone")
    client.log_model_params(ext.model_id, {"beta": "2"})
    client.finalize_logged_model(ext.model_id, LoggedModelStatus.READY)
    out["ext"] = _logged_model(client.get_logged_model(ext.model_id), n)

    with mlflow.start_run(experiment_id=exp, run_name="user") as r2:
        n.run(r2.info.run_id)
        client.log_outputs(r2.info.run_id, [LoggedModelOutput(ext.model_id, 3)])
        client.log_inputs(r2.info.run_id, models=[LoggedModelInput(info.model_id)])
    shown = client.get_run(r2.info.run_id)
    out["run_outputs"] = [(n.id("model", o.model_id), o.step) for o in shown.outputs.model_outputs]
    out["run_inputs"] = [n.id("model", i.model_id) for i in shown.inputs.model_inputs]
    out["trainer_outputs"] = [(n.id("model", o.model_id), o.step) for o in client.get_run(rid).outputs.model_outputs]

    def names(**kwargs):
        found = mlflow.search_logged_models(experiment_ids=[exp], output_format="list", **kwargs)
        return [m.name for m in found]

    out["search_all"] = names()
    out["search_oldest_first"] = names(order_by=[{"field_name": "creation_time", "ascending": True}])
    out["search_name"] = names(filter_string="name = 'ext'")
    out["search_param"] = names(filter_string="params.alpha = '0.5'")
    out["search_tag"] = names(filter_string="tags.stage = 'dev'")
    out["search_page"] = names(max_results=1)

    client.delete_logged_model(ext.model_id)
    out["get_deleted"] = raises(lambda: client.get_logged_model(ext.model_id))
    out["get_unknown"] = raises(lambda: client.get_logged_model("m-" + "0" * 32))
    out["search_after_delete"] = names()
    out["delete_missing_tag"] = raises(lambda: client.delete_logged_model_tag(info.model_id, "nope"))
    # MLflow refuses these characters in a model's name (`_validate_logged_model_name`); an
    # empty name arrives as none over the wire and gets a generated one.
    for bad in ["a/b", "a:b", "a.b", "a%b", 'a"b', "a'b"]:
        out[f"bad_name {bad}"] = raises(lambda bad=bad: client.create_logged_model(exp, name=bad))
    return out


def test_logged_models(reference_url, subject_url):
    compare(scenario_logged_models, reference_url, subject_url)


# ---------------------------------------------------------------- errors


def scenario_errors(client, n):
    out = {}
    exp = client.create_experiment("errors-area")
    n.exp(exp)
    rid = client.create_run(exp, run_name="e").info.run_id
    n.run(rid)
    missing_run = "0" * 32
    out["unknown_run_get"] = raises(lambda: client.get_run(missing_run))
    out["unknown_run_log"] = raises(lambda: client.log_metric(missing_run, "m", 1.0))
    out["unknown_run_history"] = raises(lambda: client.get_metric_history(missing_run, "m"))
    out["unknown_experiment"] = raises(lambda: client.get_experiment("987654"))
    out["unknown_experiment_run"] = raises(lambda: client.create_run("987654"))
    out["bad_filter_or"] = raises(lambda: client.search_runs([exp], "metrics.a > 1 OR metrics.b < 2"))
    out["bad_filter_syntax"] = raises(lambda: client.search_runs([exp], "metrics.a >>> 1"))
    out["bad_filter_quoted_metric"] = raises(lambda: client.search_runs([exp], "metrics.a > '1'"))
    out["bad_order_by"] = raises(lambda: client.search_runs([exp], order_by=["nonsense.x DESC"]))
    out["bad_experiment_filter"] = raises(lambda: client.search_experiments(filter_string="nope = 'x'"))
    out["duplicate_experiment"] = raises(lambda: client.create_experiment("errors-area"))
    client.log_param(rid, "p", "1")
    out["param_overwrite"] = raises(lambda: client.log_param(rid, "p", "2"))
    out["param_overwrite_in_batch"] = raises(lambda: client.log_batch(rid, params=[Param("p", "3")]))
    out["duplicate_params_in_batch"] = raises(
        lambda: client.log_batch(rid, params=[Param("q", "1"), Param("q", "2")])
    )
    out["bad_key"] = raises(lambda: client.log_metric(rid, "bad\nkey", 1.0))
    out["bad_key_dotdot"] = raises(lambda: client.log_param(rid, "../up", "1"))

    store = client._tracking_client.store  # RestStore: sends one request, no client-side split
    ts = int(time.time() * 1000)
    out["over_limit_metrics"] = raises(
        lambda: store.log_batch(rid, metrics=[Metric("m", 1.0, ts, i) for i in range(1001)], params=[], tags=[])
    )
    out["over_limit_params"] = raises(
        lambda: store.log_batch(rid, metrics=[], params=[Param(f"k{i}", "v") for i in range(101)], tags=[])
    )
    out["over_limit_tags"] = raises(
        lambda: store.log_batch(rid, metrics=[], params=[], tags=[RunTag(f"t{i}", "v") for i in range(101)])
    )
    out["nothing_written_by_failed_batches"] = n.run_obj(client.get_run(rid))

    client.delete_run(rid)
    out["log_to_deleted_run"] = raises(lambda: client.log_metric(rid, "m", 1.0))
    out["param_to_deleted_run"] = raises(lambda: client.log_param(rid, "z", "1"))
    client.restore_run(rid)
    out["after_restore"] = n.run_obj(client.get_run(rid))
    return out


def test_error_codes(reference_url, subject_url):
    compare(scenario_errors, reference_url, subject_url)


def scenario_raw_http(client, n):
    """What the client does not exercise but a script on the wire may: unknown endpoints and
    missing required fields keep MLflow's JSON error shape."""
    url = mlflow.get_tracking_uri()
    out = {}
    for name, method, path, body in [
        ("unknown_endpoint", "GET", "/api/2.0/mlflow/no-such-endpoint", None),
        ("missing_timestamp", "POST", "/api/2.0/mlflow/runs/log-metric", {"run_id": "x" * 32, "key": "k", "value": 1}),
        ("missing_name", "POST", "/api/2.0/mlflow/experiments/create", {}),
        ("outputs_without_models", "POST", "/api/2.0/mlflow/runs/outputs", {"run_id": "x" * 32}),
    ]:
        r = requests.request(method, url + path, json=body, timeout=60)
        if name == "unknown_endpoint":
            # MLflow's Flask app answers an unknown path with a 404 HTML page; runlog answers
            # 404 ENDPOINT_NOT_FOUND in MLflow's JSON error shape. Only the status is compared.
            out[name] = {"status": r.status_code}
            continue
        try:
            code = r.json().get("error_code")
        except ValueError:
            code = f"non-JSON body: {r.text[:80]!r}"
        out[name] = {"status": r.status_code, "error_code": code}
    r = requests.get(url + "/health", timeout=60)
    out["health"] = (r.status_code, r.text.strip())
    return out


def test_raw_http_errors(reference_url, subject_url):
    if subject_url.startswith("runlog:"):
        pytest.skip("raw HTTP requests: an in-process runlog:/// store has no wire; the "
                    "runlog-serve subject answers them from the same service")
    compare(scenario_raw_http, reference_url, subject_url)
