"""Session fixtures of the differential suite: one reference `mlflow server` and the subjects
it is compared with, each started once and shared by every test. The subject fixture is
parametrized over servers.SUBJECTS, so every test runs once per subject (`runlog serve` over
HTTP, and `runlog:///...` in-process through the package's MLflow plugin); the reference runs
each scenario once and its result is reused for every subject (test_differential.compare).
Tests keep apart by naming their experiments uniquely and restricting every search to them.
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


@pytest.fixture(scope="session", params=servers.SUBJECTS)
def subject_url(request, tmp_path_factory):
    """The tracking URI of one subject: an http:// URL or a runlog:/// store URI."""
    with servers.subject(request.param, tmp_path_factory.mktemp(request.param)) as url:
        yield url
