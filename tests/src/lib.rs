//! Pure helpers of zoe's cluster tests (the tests themselves, and their
//! process fixtures, are under `tests/`).

pub mod history;
