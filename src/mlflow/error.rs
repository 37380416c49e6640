//! MLflow's error codes and error message shape (`{"error_code": "...", "message": "..."}`), and
//! how the engine's errors map onto them. Each code carries the HTTP status MLflow's server
//! answers it with (`mlflow/exceptions.py`), so MLflow's client raises the same exceptions.

use std::fmt;

use super::{JSON, Method, Reply};

/// MLflow's error codes (`databricks.proto`'s `ErrorCode`), the ones this layer answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A bug or an unexpected failure of the engine (500).
    InternalError,
    /// Stored data is damaged (500).
    DataLoss,
    /// The request is not well formed (400).
    BadRequest,
    /// The body is not valid JSON or not the message's shape (400).
    MalformedRequest,
    /// A field holds a value the endpoint does not accept (400).
    InvalidParameterValue,
    /// No such endpoint (404).
    EndpointNotFound,
    /// The experiment, run or key named does not exist (404).
    ResourceDoesNotExist,
    /// The name is taken (400).
    ResourceAlreadyExists,
    /// The endpoint exists but this server does not implement it (501).
    NotImplemented,
    /// The operation is not allowed in the current state (500).
    InvalidState,
    /// The server may not do this (403).
    PermissionDenied,
    /// A resource, such as disk space, is used up (429).
    ResourceExhausted,
    /// The server cannot answer now; retry (503).
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// MLflow's name of the code, as sent in `error_code`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::DataLoss => "DATA_LOSS",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::MalformedRequest => "MALFORMED_REQUEST",
            ErrorCode::InvalidParameterValue => "INVALID_PARAMETER_VALUE",
            ErrorCode::EndpointNotFound => "ENDPOINT_NOT_FOUND",
            ErrorCode::ResourceDoesNotExist => "RESOURCE_DOES_NOT_EXIST",
            ErrorCode::ResourceAlreadyExists => "RESOURCE_ALREADY_EXISTS",
            ErrorCode::NotImplemented => "NOT_IMPLEMENTED",
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::TemporarilyUnavailable => "TEMPORARILY_UNAVAILABLE",
        }
    }

    /// The HTTP status MLflow's server answers the code with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::MalformedRequest
            | ErrorCode::InvalidParameterValue
            | ErrorCode::ResourceAlreadyExists => 400,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::EndpointNotFound | ErrorCode::ResourceDoesNotExist => 404,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::InternalError | ErrorCode::DataLoss | ErrorCode::InvalidState => 500,
            ErrorCode::NotImplemented => 501,
            ErrorCode::TemporarilyUnavailable => 503,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error in MLflow's terms: a code and a message for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlflowError {
    /// The code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl MlflowError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> MlflowError {
        MlflowError {
            code,
            message: message.into(),
        }
    }

    /// `INVALID_PARAMETER_VALUE` with `message`.
    pub fn invalid(message: impl Into<String>) -> MlflowError {
        MlflowError::new(ErrorCode::InvalidParameterValue, message)
    }

    /// `RESOURCE_DOES_NOT_EXIST` with `message`.
    pub fn not_found(message: impl Into<String>) -> MlflowError {
        MlflowError::new(ErrorCode::ResourceDoesNotExist, message)
    }

    /// The answer to a path (or method) no endpoint serves.
    pub fn endpoint_not_found(method: Method, path: &str) -> MlflowError {
        MlflowError::new(
            ErrorCode::EndpointNotFound,
            format!("No API endpoint for {} {path}", method.as_str()),
        )
    }

    /// The error as MLflow's JSON reply, with the code's HTTP status.
    pub fn reply(&self) -> Reply {
        let body = serde_json::json!({
            "error_code": self.code.name(),
            "message": self.message,
        });
        Reply {
            status: self.code.http_status(),
            content_type: JSON,
            body: body.to_string().into_bytes(),
        }
    }
}

impl fmt::Display for MlflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for MlflowError {}

impl From<crate::Error> for MlflowError {
    fn from(error: crate::Error) -> MlflowError {
        use crate::Error;
        let code = match &error {
            Error::NotFound(_) => ErrorCode::ResourceDoesNotExist,
            Error::AlreadyExists(_) => ErrorCode::ResourceAlreadyExists,
            Error::InvalidInput(_)
            | Error::ParamChanged { .. }
            | Error::InvalidFilter(_)
            | Error::Deleted { .. } => ErrorCode::InvalidParameterValue,
            Error::ReadOnly => ErrorCode::PermissionDenied,
            Error::StorageFull { .. } => ErrorCode::ResourceExhausted,
            Error::StaleRead { .. } => ErrorCode::TemporarilyUnavailable,
            Error::Corrupt(_) => ErrorCode::DataLoss,
            Error::Io { .. }
            | Error::Poisoned { .. }
            | Error::Forked { .. }
            | Error::NotAStore(_) => ErrorCode::InternalError,
        };
        MlflowError::new(code, error.to_string())
    }
}
