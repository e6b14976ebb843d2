//! Users, roles, quotas (Zoe's administration), API tokens, login and the
//! one-time ACL bootstrap, one module per record kind.

mod login;
mod quotas;
mod roles;
mod tokens;
mod users;

pub use login::*;
pub use quotas::*;
pub use roles::*;
pub use tokens::*;
pub use users::*;

use super::context::{
    Body, Caller, ClientAddr, Ctx, Indexed, ReadParams, WriteReply, bearer, created, list_query, no_content, now_ms, ok,
};
use super::error::{HttpError, HttpResult};
use super::routes::{P, Q};
use crate::auth::{self, AuthSources, TokenKind, TokenRecord};
use crate::state::user::{QUOTA_DEFAULT, ROLE_ADMIN, ROLE_USER};
use crate::state::{Applied, Capabilities, Command, Quota, Role, State, User};
use axum::extract::State as Ax;
use axum::http::request::Parts;
use axum::response::Response;
pub use zoe_api::acl::{
    Bootstrap, CreateToken, CreateUser, Created, Login, QuotaFields, QuotaView, RoleFields, TokenCreated, TokenView,
    UpdateUser, UserView,
};
use zoe_common::resources::Millicores;

/// Sessions from `POST /login` last this long.
pub const SESSION_TTL_MS: u64 = 12 * 3600 * 1000;
/// Tokens (API and session) one user may hold at once; a login at the cap
/// ends the user's oldest sessions instead of failing.
pub const MAX_TOKENS_PER_USER: usize = 100;
/// Longest lifetime of a token created by a caller holding a session (a
/// stolen session must not mint a token for ever); the default there too.
pub const MAX_TTL_FROM_SESSION_MS: u64 = 30 * 24 * 3600 * 1000;
/// Token names, in characters.
pub const MAX_TOKEN_NAME: usize = 256;
/// The user the bootstrap token creates.
pub const BOOTSTRAP_ADMIN: &str = "admin";

fn created_id(applied: Applied) -> HttpResult<u64> {
    match applied {
        Applied::Created(id) => Ok(id),
        other => Err(HttpError::internal(format!("expected a new id, got {other:?}"))),
    }
}
