"""The ``runlog://`` tracking store for MLflow: MLflow's tracking API, in-process on the engine.

With ``runlog[mlflow]`` installed, ``mlflow.set_tracking_uri("runlog:///abs/path")`` (or
``MLFLOW_TRACKING_URI``) makes MLflow's client log to the runlog store at ``/abs/path`` with no
server. MLflow finds this module through the ``mlflow.tracking_store`` entry point named
``runlog`` and calls :func:`tracking_store` with the URI.

The store is MLflow's own ``RestStore`` with one seam replaced: where ``RestStore`` would send
an HTTP request, :class:`RunlogStore` hands the same method, path and JSON body to
``runlog._native.MlflowService``, which answers exactly as ``runlog serve`` (and so as
``mlflow server``) would. Every conversion between MLflow's entities and the wire stays
MLflow's, and every rule and error code stays the engine's; nothing is re-done here.

This module's top level imports nothing of MLflow: MLflow loads entry points while
``mlflow.tracking`` is still being imported, so importing ``RestStore`` here would be an
import cycle. It is imported inside :func:`tracking_store`.
"""

from __future__ import annotations

import json
import os
from urllib.parse import unquote, urlencode, urlparse

__all__ = ["artifact_repository", "store_path", "tracking_store"]

_STORE_CLASS = None


def store_path(store_uri: str) -> str:
    """The store directory a ``runlog:///abs/path`` URI names.

    Raises ``ValueError`` for another scheme, a host part (``runlog://host/...``) or a relative
    path, since the store is a local directory and MLflow caches stores by URI.
    """
    parsed = urlparse(store_uri)
    if parsed.scheme != "runlog":
        raise ValueError(f"not a runlog:// URI: {store_uri!r}")
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(
            f"runlog URI {store_uri!r} names host {parsed.netloc!r}; "
            "expected runlog:///absolute/path (three slashes)"
        )
    path = unquote(parsed.path)
    if not path.startswith("/"):
        raise ValueError(f"runlog URI {store_uri!r}: expected an absolute path")
    return path


def tracking_store(store_uri: str, artifact_uri: str | None = None):
    """The entry point MLflow calls for a ``runlog://`` tracking URI: a :class:`RunlogStore`.

    ``artifact_uri`` (MLflow's default artifact root) is not used: runs' artifact locations
    are the store's own.
    """
    return _store_class()(store_uri)


def _store_class():
    """Builds :class:`RunlogStore` on first use, after MLflow finished importing."""
    global _STORE_CLASS
    if _STORE_CLASS is None:
        _STORE_CLASS = _define_store_class()
    return _STORE_CLASS


class _ProcessService:
    """The service over one store for the calling process. MLflow caches stores and
    artifact repositories by URI, so one can outlive a fork: in the child it opens the
    child's own service (the parent's refuses every call there) on first use."""

    def __init__(self, path):
        self._path = path
        self._pid = os.getpid()
        from runlog._native import MlflowService

        self._service = MlflowService(path)

    def handle(self, method, path, query="", body=b""):
        if self._pid != os.getpid():
            from runlog._native import MlflowService

            self._service = MlflowService(self._path)
            self._pid = os.getpid()
        return self._service.handle(method, path, query, body)


def _raise_for(status: int, body: bytes, endpoint: str) -> None:
    """Raises what MLflow's client raises for this HTTP answer.

    MLflow's client retries the statuses it deems transient (5xx, 408, 429) and, when they
    persist, raises ``INTERNAL_ERROR`` without reading the body (``http_request``); an answer
    of the service is final, so it is raised as that at once. Any other status goes through
    ``verify_rest_response``: the body's error code when it is MLflow's JSON error.
    """
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos import databricks_pb2
    from mlflow.utils.request_utils import _TRANSIENT_FAILURE_RESPONSE_CODES

    text = body.decode("utf-8", errors="replace")
    if status in _TRANSIENT_FAILURE_RESPONSE_CODES:
        raise MlflowException(
            f"API request to endpoint {endpoint} failed: too many {status} error responses. "
            f"Response body: '{text}'",
            error_code=databricks_pb2.INTERNAL_ERROR,
        )
    try:
        error = json.loads(text)
    except ValueError:
        error = None
    if isinstance(error, dict):
        raise RestException(error)
    raise MlflowException(
        f"API request to endpoint {endpoint} failed with error code {status} != 200. "
        f"Response body: '{text}'",
        error_code=databricks_pb2.INTERNAL_ERROR,
    )


def _define_store_class():
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.utils.proto_json_utils import parse_dict
    from mlflow.utils.rest_utils import MlflowHostCreds

    class RunlogStore(RestStore):
        """MLflow's ``RestStore`` whose requests are answered in-process by the engine."""

        def __init__(self, store_uri: str):
            path = store_path(store_uri)
            # Only MLflow's trace and scorer calls that bypass `_call_endpoint` use these
            # credentials; they then fail as against a server without those routes.
            super().__init__(lambda: MlflowHostCreds(store_uri))
            self._service = _ProcessService(path)
            self.store_uri = store_uri

        def __repr__(self) -> str:
            return f"RunlogStore({self.store_uri!r})"

        def _call_endpoint(
            self,
            api,
            json_body=None,
            endpoint=None,
            retry_timeout_seconds=None,
            response_proto=None,
        ):
            v3 = api in self._V3_APIS
            method_to_info = self._V3_METHOD_TO_INFO if v3 else self._METHOD_TO_INFO
            self._validate_workspace_support_if_specified()
            if endpoint:
                _, method = method_to_info[api]
            else:
                endpoint, method = method_to_info[api]
            response_proto = response_proto or api.Response()
            return self._answer(endpoint, method, json_body, response_proto)

        def _search_datasets(self, experiment_ids):
            """The datasets the runs of ``experiment_ids`` used, one summary per dataset and
            context: what MLflow's server answers ``experiments/search-datasets`` (its UI's
            runs table) with when it runs on a ``runlog://`` store. ``RestStore`` has no such
            method, so without it that server answers 501."""
            from mlflow.entities.dataset_summary import _DatasetSummary

            endpoint = "/ajax-api/2.0/mlflow/experiments/search-datasets"
            body = json.dumps({"experiment_ids": list(experiment_ids)}).encode("utf-8")
            status, _, reply = self._service.handle("POST", endpoint, "", body)
            if status != 200:
                _raise_for(status, reply, endpoint)
            return [
                _DatasetSummary(
                    experiment_id=s["experiment_id"],
                    name=s["name"],
                    digest=s["digest"],
                    context=s.get("context"),
                )
                for s in json.loads(reply or b"{}").get("dataset_summaries", [])
            ]

        def _answer(self, endpoint, method, json_body, response_proto):
            # `RestStore` writes some queries into the endpoint itself
            # (`logged-models/<id>?allow_deleted=true`), as `requests` would send them.
            endpoint, _, query = endpoint.partition("?")
            body = b""
            if json_body is not None:
                if method == "GET":
                    # As `requests` encodes `params`: lists as repeated keys.
                    params = urlencode(json.loads(json_body), doseq=True)
                    query = f"{query}&{params}" if query and params else query or params
                else:
                    body = json_body.encode("utf-8")
            status, _, reply = self._service.handle(method, endpoint, query, body)
            if status == 204:
                return response_proto
            if status != 200:
                _raise_for(status, reply, endpoint)
            parse_dict(js_dict=json.loads(reply or b"{}"), message=response_proto)
            return response_proto

    return RunlogStore


def artifact_repository(artifact_uri: str, tracking_uri: str | None = None, registry_uri=None):
    """The entry point MLflow calls for an ``mlflow-artifacts:`` URI.

    Runs' artifact URIs are ``mlflow-artifacts:/<experiment>/<run>/artifacts``, which MLflow
    resolves against its tracking URI. Under a ``runlog://`` tracking URI the requests go to the
    same in-process service as the tracking calls; under any other tracking URI this is
    MLflow's own ``MlflowArtifactsRepository``, unchanged.
    """
    from mlflow.tracking._tracking_service.utils import get_tracking_uri

    tracking_uri = tracking_uri or get_tracking_uri()
    if not str(tracking_uri).startswith("runlog:"):
        from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

        return MlflowArtifactsRepository(artifact_uri, tracking_uri, registry_uri)
    return _artifact_class()(artifact_uri, tracking_uri, registry_uri)


_ARTIFACT_CLASS = None


def _artifact_class():
    global _ARTIFACT_CLASS
    if _ARTIFACT_CLASS is None:
        _ARTIFACT_CLASS = _define_artifact_class()
    return _ARTIFACT_CLASS


def _define_artifact_class():
    import os
    import posixpath
    from urllib.parse import quote

    from mlflow.entities import FileInfo
    from mlflow.store.artifact.artifact_repo import ArtifactRepository

    root = "/api/2.0/mlflow-artifacts/artifacts"

    class RunlogArtifactRepository(ArtifactRepository):
        """A run's artifacts through the service's ``mlflow-artifacts`` routes, in-process."""

        def __init__(self, artifact_uri, tracking_uri=None, registry_uri=None):
            super().__init__(artifact_uri, tracking_uri, registry_uri)
            self._service = _ProcessService(store_path(tracking_uri))
            # mlflow-artifacts:/<exp>/<run>/artifacts (or with a host part, which is ignored).
            self._base = urlparse(artifact_uri).path.strip("/")

        def _call(self, method, relative, query="", body=b""):
            path = posixpath.join(self._base, relative) if relative else self._base
            status, _, reply = self._service.handle(method, f"{root}/{quote(path)}", query, body)
            if status != 200:
                _raise_for(status, reply, f"{root}/{path}")
            return reply

        def log_artifact(self, local_file, artifact_path=None):
            name = os.path.basename(local_file)
            relative = posixpath.join(artifact_path, name) if artifact_path else name
            with open(local_file, "rb") as f:
                self._call("PUT", relative, body=f.read())

        def log_artifacts(self, local_dir, artifact_path=None):
            local_dir = os.path.abspath(local_dir)
            for folder, _, names in os.walk(local_dir):
                inner = os.path.relpath(folder, local_dir).replace(os.sep, "/")
                parts = [p for p in (artifact_path, inner) if p and p != "."]
                target = posixpath.join(*parts) if parts else None
                for name in names:
                    self.log_artifact(os.path.join(folder, name), target)

        def list_artifacts(self, path=None):
            where = posixpath.join(self._base, path) if path else self._base
            status, _, reply = self._service.handle("GET", root, urlencode({"path": where}), b"")
            if status != 200:
                # A path naming nothing lists as 200 `{}`; any other answer is an error the
                # caller must see, or download_artifacts would take a folder for a file.
                _raise_for(status, reply, f"{root}?path={where}")
            infos = [
                FileInfo(
                    posixpath.join(path, f["path"]) if path else f["path"],
                    f["is_dir"],
                    int(f["file_size"]) if "file_size" in f else None,
                )
                for f in json.loads(reply).get("files", [])
            ]
            return sorted(infos, key=lambda f: f.path)

        def _download_file(self, remote_file_path, local_path):
            data = self._call("GET", remote_file_path)
            with open(local_path, "wb") as f:
                f.write(data)

        def delete_artifacts(self, artifact_path=None):
            self._call("DELETE", artifact_path or "")

    return RunlogArtifactRepository
