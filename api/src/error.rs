//! The API's one error shape:
//! `{ "error": { "code", "message", "details": [{ "path", "message" }] } }`.

crate::api_type! {
    /// What every refused or failed call answers.
    pub struct ErrorBody {
        pub error: ErrorInfo,
    }
}

crate::api_type! {
    pub struct ErrorInfo {
        /// Stable, machine-readable (`invalid`, `forbidden`, `no_leader`, …).
        pub code: String,
        pub message: String,
        pub details: Vec<Detail>,
    }
}

crate::api_type! {
    /// One problem with one field.
    pub struct Detail {
        /// JSON pointer into the request body (or a header's name).
        pub path: String,
        pub message: String,
    }
}
