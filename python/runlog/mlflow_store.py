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
from urllib.parse import unquote, urlencode, urlparse

__all__ = ["tracking_store", "store_path"]

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


def _define_store_class():
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos import databricks_pb2
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.utils.proto_json_utils import parse_dict
    from mlflow.utils.rest_utils import MlflowHostCreds

    from runlog._native import MlflowService

    def raise_for(status: int, body: bytes, endpoint: str) -> None:
        """Raises what MLflow's client raises for this HTTP answer (``verify_rest_response``)."""
        text = body.decode("utf-8", errors="replace")
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

    class RunlogStore(RestStore):
        """MLflow's ``RestStore`` whose requests are answered in-process by the engine."""

        def __init__(self, store_uri: str):
            path = store_path(store_uri)
            # Only MLflow's trace and scorer calls that bypass `_call_endpoint` use these
            # credentials; they then fail as against a server without those routes.
            super().__init__(lambda: MlflowHostCreds(store_uri))
            self._service = MlflowService(path)
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

        def _answer(self, endpoint, method, json_body, response_proto):
            query, body = "", b""
            if json_body is not None:
                if method == "GET":
                    # As `requests` encodes `params`: lists as repeated keys.
                    query = urlencode(json.loads(json_body), doseq=True)
                else:
                    body = json_body.encode("utf-8")
            status, _, reply = self._service.handle(method, endpoint, query, body)
            if status == 204:
                return response_proto
            if status != 200:
                raise_for(status, reply, endpoint)
            parse_dict(js_dict=json.loads(reply or b"{}"), message=response_proto)
            return response_proto

    return RunlogStore
