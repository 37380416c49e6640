"""Shared fixtures: a fresh store directory per test."""

import pytest

import runlog


@pytest.fixture
def store_dir(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def store(store_dir):
    return runlog.Store(str(store_dir), durability="buffered")


@pytest.fixture
def experiment(store):
    return store.get_or_create_experiment("tests")
