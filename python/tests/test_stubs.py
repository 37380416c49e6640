"""The type stubs name exactly what the native module has, so they cannot drift from it."""

import ast
import pathlib

import runlog
from runlog import _native

STUB = pathlib.Path(runlog.__file__).with_name("_native.pyi")


def stub_classes():
    tree = ast.parse(STUB.read_text())
    return {
        node.name: {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }


def test_stub_classes_match_module():
    public = {name for name in dir(_native) if not name.startswith("_")}
    assert set(stub_classes()) == public
    assert set(runlog.__all__) == public


def test_stub_methods_match_classes():
    for name, methods in stub_classes().items():
        cls = getattr(_native, name)
        if issubclass(cls, BaseException):
            continue
        runtime = {m for m in dir(cls) if not m.startswith("_") or m in ("__enter__", "__exit__")}
        stubbed = {m for m in methods if m != "__init__"}
        assert stubbed == runtime, name


def test_docstrings_on_public_names():
    for name in runlog.__all__:
        cls = getattr(runlog, name)
        assert cls.__doc__, name
        for member in dir(cls):
            if not member.startswith("_") and not issubclass(cls, BaseException):
                assert getattr(cls, member).__doc__, f"{name}.{member}"
