"""Turns what MLflow's client returns into plain, comparable data.

Two servers never agree on generated ids, clocks, user names or page-token bytes, so those are
replaced by stable placeholders; where MLflow promises no order the order is made canonical.
Everything else is kept as the client saw it, so any other difference is a real one.

Deliberate differences (documented in docs/SERVER.md, "Differences from MLflow") are folded
here, each at the one place that says so:
- +-inf: MLflow's SQL store clamps to +-1.7976931348623157e308 (sys.float_info.max), runlog
  keeps the exact infinity. Both are shown as "inf"/"-inf".
- -0.0: MLflow's sqlite store returns 0.0 (SQLite stores a REAL without a fraction as an
  integer, losing the sign), runlog keeps the exact bits. Both are shown as "0.0".
- exact duplicate metric points (same key, step, timestamp and value): MLflow's SQL store keeps
  one (they collide on its primary key), runlog keeps every point logged. History is compared
  with exact duplicates collapsed. Points at a repeated step with another value or timestamp
  are kept by both and are compared as they are.
"""

import difflib
import getpass
import math
import pprint
import sys


class Normalizer:
    """Maps each server-generated id to a placeholder numbered by first appearance, so the same
    scenario gives the same placeholders on both sides."""

    def __init__(self):
        self._ids = {}

    def id(self, kind, value):
        if value is None or value == "":
            return value
        key = (kind, str(value))
        if key not in self._ids:
            count = sum(1 for k in self._ids if k[0] == kind)
            self._ids[key] = f"<{kind}{count + 1}>"
        return self._ids[key]

    def exp(self, value):
        return self.id("exp", value)

    def run(self, value):
        return self.id("run", value)

    def text(self, value):
        """Replaces every known id inside a string such as an artifact URI (longest first, so
        an experiment id "1" never eats part of a run id)."""
        if value is None:
            return None
        known = sorted(self._ids.items(), key=lambda kv: -len(kv[0][1]))
        out = value
        for (_, raw), placeholder in known:
            if len(raw) >= 8:
                out = out.replace(raw, placeholder)
        for (_, raw), placeholder in known:
            if len(raw) < 8:
                out = _replace_path_segment(out, raw, placeholder)
        return out

    def experiment(self, e):
        return {
            "id": self.exp(e.experiment_id),
            "name": e.name,
            "artifact_location": self.text(e.artifact_location),
            "lifecycle_stage": e.lifecycle_stage,
            "tags": dict(sorted(e.tags.items())),
            "creation_time": time_mark(e.creation_time),
            "last_update_time": time_mark(e.last_update_time),
        }

    def run_info(self, info):
        return {
            "run_id": self.run(info.run_id),
            "run_name": info.run_name,
            "experiment_id": self.exp(info.experiment_id),
            "user_id": user(info.user_id),
            "status": info.status,
            "start_time": time_mark(info.start_time),
            "end_time": time_mark(info.end_time),
            "ended_after_start": (
                None if info.end_time is None or info.start_time is None
                else info.end_time >= info.start_time
            ),
            "artifact_uri": self.text(info.artifact_uri),
            "lifecycle_stage": info.lifecycle_stage,
        }

    def run_obj(self, r):
        return {
            "info": self.run_info(r.info),
            "metrics": {k: value(v) for k, v in sorted(r.data.metrics.items())},
            "params": dict(sorted(r.data.params.items())),
            "tags": tags(r.data.tags, self),
            "dataset_inputs": len(r.inputs.dataset_inputs) if r.inputs else 0,
        }


def _replace_path_segment(text, raw, placeholder):
    """Replaces `raw` only where it is a whole `/`- or `:`-delimited segment."""
    parts = text.replace(":", ":\0").split("/")
    out = []
    for part in parts:
        head, sep, tail = part.rpartition("\0")
        if (tail if sep else part) == raw:
            part = (head + sep + placeholder) if sep else placeholder
        out.append(part)
    return "/".join(out).replace("\0", "")


SYSTEM_USER = getpass.getuser()


def user(name):
    return "<user>" if name == SYSTEM_USER else name


def tags(mapping, norm):
    out = {}
    for k, v in sorted(mapping.items()):
        if k == "mlflow.user":
            v = user(v)
        elif k == "mlflow.parentRunId":
            v = norm.run(v)
        out[k] = v
    return out


def time_mark(ms):
    """Clocks differ between servers; what must agree is whether a time is set."""
    return None if ms is None else "<time>"


def value(v):
    """A metric value as a comparable string: NaN equals NaN; +-inf and -0.0 are folded as the
    module docstring says (MLflow loses them, runlog keeps them; docs/SERVER.md)."""
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v) or abs(v) == sys.float_info.max:
        return "inf" if v > 0 else "-inf"
    if v == 0.0:
        return "0.0"  # -0.0 folded, module docstring
    return repr(v)


def history(points, stamp=lambda ts: ts):
    """A metric history in canonical order (MLflow documents none: its SQL store happens to
    order by timestamp, step, value), exact duplicates collapsed (module docstring)."""
    rows = {(p.step, stamp(p.timestamp), value(p.value)) for p in points}
    return sorted(rows, key=lambda r: (r[0], str(r[1]), r[2]))


def error(exc):
    """What the client sees of an error: its code and HTTP status (messages may differ)."""
    status = None
    getter = getattr(exc, "get_http_status_code", None)
    if getter is not None:
        status = getter()
    return {"error_code": getattr(exc, "error_code", type(exc).__name__), "http_status": status}


def diff(reference, subject, subject_label="runlog serve"):
    a = pprint.pformat(reference, width=100, sort_dicts=True).splitlines()
    b = pprint.pformat(subject, width=100, sort_dicts=True).splitlines()
    return "\n".join(difflib.unified_diff(a, b, "mlflow server", subject_label, lineterm=""))
