//! Columns across the boundary through the Arrow C data interface, wrapped in PyCapsules as
//! the Arrow PyCapsule interface specifies (`arrow_schema`, `arrow_array`).
//!
//! Invariants: no per-point Python object is made in either direction; buffers handed to
//! pyarrow are owned by the exported array (its release callback frees them), and buffers
//! taken from Python are kept alive by the imported array for as long as it is read.

use std::sync::Arc;

use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema, from_ffi};
use arrow_array::{
    Array, ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StructArray,
};
use arrow_data::ArrayData;
use arrow_schema::{DataType, Field, Schema};
use pyo3::exceptions::{PyNotImplementedError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyCapsuleMethods, PyTuple};

use crate::errors::invalid;

/// Named int64 and float64 columns, in order, as one record batch.
pub struct Columns(pub Vec<(&'static str, ArrayRef)>);

impl Columns {
    /// The columns as a `pyarrow.Table` (one batch), moved over without copying a value.
    pub fn into_table<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let fields: Vec<Field> = self
            .0
            .iter()
            .map(|(name, column)| Field::new(*name, column.data_type().clone(), false))
            .collect();
        let columns = self.0.into_iter().map(|(_, column)| column).collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| invalid(format!("building a result table: {e}")))?;
        let data = StructArray::from(batch).into_data();
        let schema = FFI_ArrowSchema::try_from(data.data_type())
            .map_err(|e| invalid(format!("exporting a result table: {e}")))?;
        let array = FFI_ArrowArray::new(&data);
        let schema = PyCapsule::new_with_value(py, schema, c"arrow_schema")?;
        let array = PyCapsule::new_with_value(py, array, c"arrow_array")?;
        let pyarrow = py.import(intern!(py, "pyarrow"))?;
        let batch = pyarrow
            .getattr(intern!(py, "RecordBatch"))?
            .call_method1(intern!(py, "_import_from_c_capsule"), (schema, array))?;
        pyarrow
            .getattr(intern!(py, "Table"))?
            .call_method1(intern!(py, "from_batches"), ([batch],))
    }
}

/// An int64 column.
pub fn int64s(values: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(values))
}

/// A float64 column.
pub fn float64s(values: Vec<f64>) -> ArrayRef {
    Arc::new(Float64Array::from(values))
}

/// What numpy or pyarrow refused to read (a 2-D array, a byte-swapped dtype, an int past
/// int64, ...) as `InvalidInput` naming the column, with their error as the cause; anything
/// else they raise (an interrupt, memory) passes through unchanged.
fn refused_input(py: Python<'_>, what: &str, error: PyErr) -> PyErr {
    let refused = error.is_instance_of::<PyValueError>(py)
        || error.is_instance_of::<PyTypeError>(py)
        || error.is_instance_of::<PyOverflowError>(py)
        || error.is_instance_of::<PyNotImplementedError>(py);
    if !refused {
        return error;
    }
    let wrapped = invalid(format!(
        "{what}: not readable as a 1-D int or float array: {error}"
    ));
    wrapped.set_cause(py, Some(error));
    wrapped
}

/// A column taken from Python: any object with `__arrow_c_array__` (pyarrow, polars...) as is,
/// anything else through `numpy.asarray` then `pyarrow.array`, which wrap numpy arrays and
/// buffers without copying.
pub fn import_column(what: &str, object: &Bound<'_, PyAny>) -> PyResult<ArrayData> {
    let py = object.py();
    let arrow_object = if object.hasattr(intern!(py, "__arrow_c_array__"))? {
        object.clone()
    } else {
        let numpy = py.import(intern!(py, "numpy"))?;
        let pyarrow = py.import(intern!(py, "pyarrow"))?;
        numpy
            .call_method1(intern!(py, "asarray"), (object,))
            .and_then(|array| pyarrow.call_method1(intern!(py, "array"), (array,)))
            .map_err(|error| refused_input(py, what, error))?
    };
    let capsules = arrow_object.call_method0(intern!(py, "__arrow_c_array__"))?;
    let capsules = capsules.cast_into::<PyTuple>().map_err(PyErr::from)?;
    let schema = capsules
        .get_item(0)?
        .cast_into::<PyCapsule>()
        .map_err(PyErr::from)?;
    let array = capsules
        .get_item(1)?
        .cast_into::<PyCapsule>()
        .map_err(PyErr::from)?;
    let schema_ptr = schema
        .pointer_checked(Some(c"arrow_schema"))?
        .cast::<FFI_ArrowSchema>();
    let array_ptr = array
        .pointer_checked(Some(c"arrow_array"))?
        .cast::<FFI_ArrowArray>();
    // SAFETY: the capsules are named as the Arrow PyCapsule interface requires, so they hold
    // an `ArrowSchema` and an `ArrowArray`; `from_raw` moves the array out and leaves a
    // released one behind, as the interface prescribes for a consumer that takes ownership.
    let data = unsafe {
        let array = FFI_ArrowArray::from_raw(array_ptr.as_ptr());
        from_ffi(array, schema_ptr.as_ref())
    }
    .map_err(|e| invalid(format!("{what}: not a readable Arrow array: {e}")))?;
    data.validate_full()
        .map_err(|e| invalid(format!("{what}: not a valid Arrow array: {e}")))?;
    if data.null_count() > 0 {
        return Err(invalid(format!(
            "{what} has {} missing values (nulls); log NaN for a missing value",
            data.null_count()
        )));
    }
    Ok(data)
}

/// Steps: int64 only, so that no step is silently rounded or wrapped.
pub fn steps(data: ArrayData) -> PyResult<Int64Array> {
    match data.data_type() {
        DataType::Int64 => Ok(Int64Array::from(data)),
        other => Err(invalid(format!(
            "steps must be int64, got {}",
            dtype_name(other)
        ))),
    }
}

/// Values: float64 as is, float32 widened (exactly).
pub fn values(data: ArrayData) -> PyResult<Float64Array> {
    match data.data_type() {
        DataType::Float64 => Ok(Float64Array::from(data)),
        DataType::Float32 => {
            Ok(Float32Array::from(data).unary::<_, arrow_array::types::Float64Type>(f64::from))
        }
        other => Err(invalid(format!(
            "values must be float64 or float32, got {}",
            dtype_name(other)
        ))),
    }
}

/// numpy's name for an Arrow type where there is one, so refusals name what the user passed.
fn dtype_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float16 => "float16".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Boolean => "bool".into(),
        other => format!("Arrow type {other}"),
    }
}
