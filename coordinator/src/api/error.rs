//! The API's one error shape:
//! `{ "error": { "code", "message", "details": [{ "path", "message" }] } }`.

use crate::raft::ApiError;
use crate::state::StateError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub use zoe_api::error::Detail;

#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<Detail>,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after_s: Option<u64>,
}

pub type HttpResult<T> = Result<T, HttpError>;

impl HttpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError { status, code, message: message.into(), details: Vec::new(), retry_after_s: None }
    }
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// A 400 naming the offending field.
    pub fn invalid_field(path: &str, message: impl Into<String>) -> HttpError {
        HttpError::field(StatusCode::BAD_REQUEST, "invalid", path, message.into())
    }
    fn field(status: StatusCode, code: &'static str, path: &str, message: String) -> HttpError {
        HttpError {
            status,
            code,
            message: format!("{path}: {message}"),
            details: vec![Detail { path: path.to_string(), message }],
            retry_after_s: None,
        }
    }
    pub fn unauthorized(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// A 403 naming the field that asks for what the caller may not have.
    pub fn forbidden_field(path: &str, message: impl Into<String>) -> HttpError {
        HttpError::field(StatusCode::FORBIDDEN, "forbidden", path, message.into())
    }
    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// The 404 of a record looked up by id or name: "`kind` `id` not found".
    pub fn missing(kind: &str, id: impl std::fmt::Display) -> HttpError {
        HttpError::not_found(format!("{kind} {id} not found"))
    }
    pub fn conflict(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn quota(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::CONFLICT, "quota_exceeded", message)
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
    /// A 429 with `Retry-After`.
    pub fn too_many(message: impl Into<String>, retry_after: std::time::Duration) -> HttpError {
        let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        HttpError {
            retry_after_s: Some(secs),
            ..HttpError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
        }
    }
    pub fn internal(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = self.code, "{}", self.message);
        }
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, s.into());
        }
        resp
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> HttpError {
        match e {
            ApiError::NoLeader | ApiError::NotLeader(_) => {
                HttpError::unavailable("no_leader", format!("{e}; retry in a moment"))
            }
            ApiError::ShuttingDown => HttpError::unavailable("shutting_down", e.to_string()),
            ApiError::LeaderUnreachable(_) => HttpError::unavailable("no_leader", e.to_string()),
            ApiError::Unreachable(_) | ApiError::Raft(_) => HttpError::unavailable("unavailable", e.to_string()),
            ApiError::Timeout => HttpError::unavailable(
                "timeout",
                "the cluster did not answer in time; the change may or may not have been applied",
            ),
            ApiError::Invalid(m) => HttpError::bad_request(m),
            ApiError::Internal(m) => HttpError::internal(m),
        }
    }
}

impl From<StateError> for HttpError {
    fn from(e: StateError) -> HttpError {
        match e {
            StateError::NotFound(_) => HttpError::not_found(e.to_string()),
            StateError::IllegalTransition { .. } | StateError::Conflict(_) => HttpError::conflict(e.to_string()),
            StateError::Invalid(m) => HttpError::bad_request(m),
            StateError::Quota(q) => HttpError::quota(q.to_string()),
            StateError::IdempotencyMismatch(m) => HttpError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "idempotency_key_reused",
                message: m,
                details: vec![Detail {
                    path: "Idempotency-Key".into(),
                    message: "already used for another request".into(),
                }],
                retry_after_s: None,
            },
        }
    }
}
