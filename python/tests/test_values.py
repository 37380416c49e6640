"""Exact values: special floats bit for bit, repeated and negative steps, every batch dtype
accepted and every other one refused."""

import array
import math
import struct

import numpy as np
import pyarrow as pa
import pytest

import runlog

SPECIAL = [
    float("nan"),
    float("inf"),
    float("-inf"),
    -0.0,
    0.0,
    5e-324,
    -1.7976931348623157e308,
    struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_DEAD_BEEF))[0],  # NaN with a payload
    struct.unpack("<d", struct.pack("<Q", 0xFFF0_0000_0000_0001))[0],  # negative signalling NaN
]


def bits(values):
    return [struct.unpack("<Q", struct.pack("<d", v))[0] for v in values]


def test_special_values_bit_for_bit_log_metric(store, experiment):
    with store.start_run(experiment.id) as run:
        for step, value in enumerate(SPECIAL):
            run.log_metric("x", value, step)
    values = store.history(run.id, "x")["value"].to_numpy()
    assert bits(values.tolist()) == bits(SPECIAL)


def test_special_values_bit_for_bit_log_batch(store, experiment):
    values = np.array(SPECIAL, dtype=np.float64)
    with store.start_run(experiment.id) as run:
        run.log_batch("x", np.arange(len(SPECIAL), dtype=np.int64), values)
    got = store.history(run.id, "x")["value"].to_numpy()
    assert got.view(np.uint64).tolist() == values.view(np.uint64).tolist()


def test_repeated_and_negative_steps(store, experiment):
    with store.start_run(experiment.id) as run:
        run.log_metric("x", 1.0, 3)
        run.log_metric("x", 2.0, -5)
        run.log_metric("x", 3.0, 3)
        run.log_metric("x", 4.0, -5)
        run.log_batch("x", np.array([-(2**63), 2**63 - 1, 3]), np.array([5.0, 6.0, 7.0]))
    table = store.history(run.id, "x")
    # Sorted by step; points of one step in logging order.
    assert table["step"].to_pylist() == [-(2**63), -5, -5, 3, 3, 3, 2**63 - 1]
    assert table["value"].to_pylist() == [5.0, 2.0, 4.0, 1.0, 3.0, 7.0, 6.0]


def test_log_batch_float32_widens_exactly(store, experiment):
    values = np.array([0.1, 1 / 3, np.nan, -0.0, np.inf], dtype=np.float32)
    with store.start_run(experiment.id) as run:
        run.log_batch("x", np.arange(5), values)
    got = store.history(run.id, "x")["value"].to_numpy()
    expected = values.astype(np.float64)
    assert got.view(np.uint64).tolist() == expected.view(np.uint64).tolist()


@pytest.mark.parametrize(
    "steps, values",
    [
        (np.arange(4, dtype=np.int64), np.linspace(0, 1, 4)),
        (np.arange(8, dtype=np.int64)[::2], np.linspace(0, 1, 8)[::2]),  # strided views
        (array.array("q", [0, 1, 2, 3]), array.array("d", [0.0, 1 / 3, 2 / 3, 1.0])),
        (memoryview(array.array("q", [0, 1, 2, 3])), memoryview(array.array("f", [0, 1, 2, 3]))),
        (pa.array([0, 1, 2, 3], pa.int64()), pa.array([0.0, 1.0, 2.0, 3.0])),
        ([0, 1, 2, 3], [0.0, 1.0, 2.0, 3.0]),
    ],
    ids=["numpy", "strided", "array.array", "memoryview", "pyarrow", "list"],
)
def test_log_batch_accepts(store, experiment, steps, values):
    with store.start_run(experiment.id) as run:
        run.log_batch("x", steps, values)
    table = store.history(run.id, "x")
    assert table["step"].to_pylist() == [int(s) for s in np.asarray(steps)]
    assert table["value"].to_pylist() == [float(v) for v in np.asarray(values)]


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "uint32", "uint64", "float32", "float64", "bool"])
def test_log_batch_refuses_step_dtypes(store, experiment, dtype):
    with store.start_run(experiment.id) as run:
        with pytest.raises(runlog.InvalidInput, match=f"steps must be int64, got {dtype}"):
            run.log_batch("x", np.zeros(3, dtype=dtype), np.zeros(3))
    assert store.history(run.id, "x").num_rows == 0


@pytest.mark.parametrize("dtype", ["float16", "int64", "int32", "uint8", "bool"])
def test_log_batch_refuses_value_dtypes(store, experiment, dtype):
    with store.start_run(experiment.id) as run:
        with pytest.raises(runlog.InvalidInput, match=f"values must be float64 or float32, got {dtype}"):
            run.log_batch("x", np.arange(3), np.zeros(3, dtype=dtype))


def test_log_batch_refuses_other_inputs(store, experiment):
    with store.start_run(experiment.id) as run:
        with pytest.raises(runlog.InvalidInput, match="3 steps but 2 values"):
            run.log_batch("x", np.arange(3), np.zeros(2))
        with pytest.raises(runlog.InvalidInput, match="nulls"):
            run.log_batch("x", pa.array([0, 1, 2], pa.int64()), pa.array([0.0, None, 1.0]))
        with pytest.raises(runlog.InvalidInput, match="Arrow type"):
            run.log_batch("x", np.array(["a", "b"]), np.zeros(2))
        with pytest.raises(runlog.InvalidInput):
            run.log_batch("", np.arange(3), np.zeros(3))
    assert store.history(run.id, "x").num_rows == 0



@pytest.mark.parametrize(
    "column, steps, values",
    [
        ("steps", np.zeros((2, 2), dtype=np.int64), np.zeros(2)),
        ("values", np.arange(2), np.zeros((2, 2))),
        ("steps", np.arange(3, dtype=">i8"), np.zeros(3)),
        ("steps", [0, 2**70], [1.0, 2.0]),
    ],
    ids=["2-D steps", "2-D values", "byte-swapped steps", "int past int64"],
)
def test_log_batch_input_numpy_or_pyarrow_refuse_is_invalid_input(
    store, experiment, column, steps, values
):
    with store.start_run(experiment.id) as run:
        with pytest.raises(runlog.InvalidInput, match=f"{column}: not readable"):
            run.log_batch("x", steps, values)

def test_large_batch(store, experiment):
    n = 1_000_000
    steps = np.arange(n, dtype=np.int64)
    values = np.sin(steps.astype(np.float64))
    with store.start_run(experiment.id) as run:
        run.log_batch("x", steps, values)
    table = store.history(run.id, "x")
    assert table.num_rows == n
    assert np.array_equal(table["step"].to_numpy(), steps)
    assert np.array_equal(table["value"].to_numpy().view(np.uint64), values.view(np.uint64))
    assert math.isclose(store.get_run(run.id).metrics["x"], values[-1])
