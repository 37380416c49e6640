"""Session fixtures of the differential suite: one reference `mlflow server` and one subject
(`runlog serve`), started once and shared by every test. Tests keep apart by naming their
experiments uniquely and restricting every search to them.
"""

import os

# A server error must fail the test at once rather than sit in the client's retry back-off
# (7 retries, factor 2). Set before mlflow reads its environment variables.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402

import servers  # noqa: E402


@pytest.fixture(scope="session")
def reference_url(tmp_path_factory):
    with servers.mlflow_server(tmp_path_factory.mktemp("reference")) as url:
        yield url


@pytest.fixture(scope="session")
def subject_url(tmp_path_factory):
    with servers.subject_server(tmp_path_factory.mktemp("subject")) as url:
        yield url
