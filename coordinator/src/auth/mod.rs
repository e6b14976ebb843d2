//! Authentication: passwords (argon2), API tokens and sessions, the one-time
//! bootstrap token, and the auth sources a user's password is checked
//! against (`internal`, `textfile`; LDAP fits behind [`AuthSource`]).
//!
//! Tokens are `zoe_<id>_<secret>`: the id finds the record, the secret is
//! 32 random bytes checked against its SHA-256. A slow hash (argon2) buys
//! nothing for a 256-bit random secret and would cost every request.
//!
//! Token records live in the replicated state's `meta` map under
//! `token.<id>` (JSON), because the state model has no token table yet; a
//! revoked token's record is removed (older clusters emptied it instead).
//! Sessions are tokens with an expiry. `crate::gc` removes records that
//! can never authenticate again.

pub mod throttle;

use crate::state::{State, User};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Meta key of the bootstrap token's hash; emptied once used.
pub const META_BOOTSTRAP: &str = "acl.bootstrap";
/// Meta key set once the bootstrap token was exchanged.
pub const META_BOOTSTRAPPED: &str = "acl.bootstrapped";
const TOKEN_PREFIX: &str = "token.";
/// File in the data dir holding the bootstrap token (mode 0600).
pub const BOOTSTRAP_FILE: &str = "bootstrap-token";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("password hashing: {0}")]
    Hash(String),
    #[error("auth file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("auth source `{0}` is not configured on this coordinator")]
    Unsupported(String),
    /// Every argon2 permit stayed taken for `ARGON_QUEUE`.
    #[error("too many password checks at once; try again in a moment")]
    Busy,
}

/// Hashes a password for the internal source (argon2id, random salt, PHC string).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// A valid argon2id hash of a random password, checked against when the
/// username is unknown (same cost as a real check).
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Jr6Qd3vGd0bFqT8bq2Kq0m9iJ9mXlA0yq6C9m6tH3Ks";

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Longest a check waits for an argon2 permit before it is turned away.
const ARGON_QUEUE: std::time::Duration = std::time::Duration::from_secs(5);

/// One argon2 verification per CPU at a time: each costs tens of ms of CPU
/// and 19 MiB, and a burst of logins must not starve the coordinator.
fn argon_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
}

/// [`verify_password`] on a blocking thread, once a permit is free. With no
/// hash it checks against [`DUMMY_HASH`] and answers `false`, so a user
/// without a password takes as long as one with a wrong password.
pub async fn verify_password_bounded(password: String, phc: Option<String>) -> Result<bool, AuthError> {
    let permit = tokio::time::timeout(ARGON_QUEUE, argon_permits().acquire())
        .await
        .map_err(|_| AuthError::Busy)?
        .map_err(|_| AuthError::Busy)?;
    let has = phc.is_some();
    let phc = phc.unwrap_or_else(|| DUMMY_HASH.to_string());
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    drop(permit);
    Ok(has && ok)
}

/// Where a user's password is checked. The API picks the source named by
/// the user's `auth_source`. An LDAP source implements the same trait
/// (bind and compare); it is async because it will talk to a server.
pub trait AuthSource: Send + Sync {
    fn name(&self) -> &str;
    fn check<'a>(
        &'a self,
        user: &'a User,
        password: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<bool, AuthError>>;
}

/// Passwords hashed in the replicated state.
pub struct InternalSource;

impl AuthSource for InternalSource {
    fn name(&self) -> &str {
        "internal"
    }
    fn check<'a>(&'a self, user: &'a User, pw: &'a str) -> futures::future::BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(verify_password_bounded(pw.to_string(), user.password_hash.clone()))
    }
}

/// Zoe's text-file source: `username,password` per line, read on every
/// check so edits apply without a restart. A third column (Zoe's docs put a
/// role there) is accepted and ignored rather than silently skipping the
/// row as Zoe did; roles come from the user record. `#` starts a comment.
pub struct TextFileSource {
    pub path: PathBuf,
}

impl TextFileSource {
    fn lookup(path: &Path, username: &str) -> Result<Option<String>, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| AuthError::File { path: path.display().to_string(), source })?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut cols = line.splitn(3, ',');
            if let (Some(u), Some(p)) = (cols.next(), cols.next())
                && u.trim() == username
            {
                return Ok(Some(p.trim().to_string()));
            }
        }
        Ok(None)
    }
}

impl AuthSource for TextFileSource {
    fn name(&self) -> &str {
        "textfile"
    }
    fn check<'a>(&'a self, user: &'a User, pw: &'a str) -> futures::future::BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            Ok(Self::lookup(&self.path, &user.username)?.is_some_and(|p| constant_eq(p.as_bytes(), pw.as_bytes())))
        })
    }
}

/// The configured sources, by name.
pub struct AuthSources {
    sources: BTreeMap<String, Box<dyn AuthSource>>,
}

impl AuthSources {
    pub fn new(auth_file: Option<PathBuf>) -> AuthSources {
        let mut sources: BTreeMap<String, Box<dyn AuthSource>> = BTreeMap::new();
        sources.insert("internal".into(), Box::new(InternalSource));
        if let Some(path) = auth_file {
            sources.insert("textfile".into(), Box::new(TextFileSource { path }));
        }
        AuthSources { sources }
    }

    /// Names a user's `auth_source` may take.
    pub fn known() -> &'static [&'static str] {
        &["internal", "textfile"]
    }

    pub async fn check(&self, user: &User, password: &str) -> Result<bool, AuthError> {
        match self.sources.get(&user.auth_source) {
            Some(s) => s.check(user, password).await,
            None => Err(AuthError::Unsupported(user.auth_source.clone())),
        }
    }
}

pub fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// 32 random bytes, hex.
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut b).expect("the OS random source works");
    hex::encode(b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Long-lived, created on request.
    Api,
    /// Short-lived, created by a login.
    Session,
    /// One use within a minute, for one execution: what the UI hands the
    /// service proxy so that it can set its own cookie.
    ProxyTicket,
    /// The service proxy's cookie, for one execution.
    Proxy,
}

impl TokenKind {
    /// Its serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Api => "api",
            TokenKind::Session => "session",
            TokenKind::ProxyTicket => "proxy_ticket",
            TokenKind::Proxy => "proxy",
        }
    }

    /// Good for the service proxy only, never for the API or the UI.
    pub fn is_proxy(self) -> bool {
        matches!(self, TokenKind::ProxyTicket | TokenKind::Proxy)
    }
}

/// A token as stored (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub user_id: u64,
    pub name: String,
    pub kind: TokenKind,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    pub created: u64,
    pub expires: Option<u64>,
    /// The owner's [`credentials_stamp`] when it was minted, for login
    /// sessions and the tokens they create: a new password (or auth
    /// source) ends them, even one minted from a session stolen before the
    /// change or by a login that checked the old password just before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// The one execution a proxy token opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<u64>,
}

/// What a user's credentials are now, in a few bytes: it changes with the
/// password hash (salted: every change) and the auth source.
pub fn credentials_stamp(u: &User) -> String {
    sha256_hex(&format!("{}\0{}", u.auth_source, u.password_hash.as_deref().unwrap_or_default()))[..16].to_string()
}

impl TokenRecord {
    pub fn meta_key(id: &str) -> String {
        format!("{TOKEN_PREFIX}{id}")
    }
}

/// A freshly minted token: the record to store and the text to hand out once.
pub struct NewToken {
    pub record: TokenRecord,
    pub secret: String,
}

pub fn mint(user_id: u64, name: &str, kind: TokenKind, now: u64, ttl_ms: Option<u64>) -> NewToken {
    // 8 random bytes of id: unique in practice, and not guessable either.
    let id = random_secret()[..16].to_string();
    let secret_part = random_secret();
    let secret = format!("zoe_{id}_{secret_part}");
    NewToken {
        record: TokenRecord {
            id,
            user_id,
            name: name.to_string(),
            kind,
            hash: sha256_hex(&secret_part),
            created: now,
            expires: ttl_ms.map(|t| now + t),
            credentials: None,
            execution: None,
        },
        secret,
    }
}

/// Splits `zoe_<id>_<secret>`.
pub fn parse_token(t: &str) -> Option<(&str, &str)> {
    let rest = t.strip_prefix("zoe_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

pub fn token_record(state: &State, id: &str) -> Option<TokenRecord> {
    state.meta.get(&TokenRecord::meta_key(id)).and_then(|v| parse_record(v))
}

/// The `meta` entries holding token records (key, JSON value), revoked
/// ones included until the garbage collector removes them.
pub fn token_entries(state: &State) -> impl Iterator<Item = (&String, &String)> {
    state.meta.range(TOKEN_PREFIX.to_string()..).take_while(|(k, _)| k.starts_with(TOKEN_PREFIX))
}

/// Removes the token record stored under `key`, unless it changed since
/// `value` was read (a revocation and the GC never undo a newer write).
pub fn remove_record(key: String, value: String) -> crate::state::Command {
    crate::state::Command::CompareAndSetMeta { key, expected: Some(value), value: None }
}

/// A stored token record; `None` for a revoked (emptied) one.
pub fn parse_record(value: &str) -> Option<TokenRecord> {
    serde_json::from_str(value).ok()
}

/// Every live (not revoked) token record.
pub fn token_records(state: &State) -> Vec<TokenRecord> {
    token_entries(state).filter_map(|(_, v)| parse_record(v)).collect()
}

/// Checks a bearer token against the state: the user it belongs to, if valid now.
pub fn authenticate(state: &State, token: &str, now: u64) -> Option<(TokenRecord, User)> {
    let (id, secret) = parse_token(token)?;
    let rec = token_record(state, id)?;
    if !constant_eq(rec.hash.as_bytes(), sha256_hex(secret).as_bytes()) {
        return None;
    }
    if rec.expires.is_some_and(|e| e <= now) {
        return None;
    }
    let user = state.users.get(&rec.user_id)?;
    if rec.credentials.as_ref().is_some_and(|c| *c != credentials_stamp(user)) {
        return None;
    }
    Some((rec, user.clone()))
}

/// True if `token` is the unused bootstrap token.
pub fn is_bootstrap_token(state: &State, token: &str) -> bool {
    match state.meta.get(META_BOOTSTRAP) {
        Some(h) if !h.is_empty() => constant_eq(h.as_bytes(), sha256_hex(token).as_bytes()),
        _ => false,
    }
}

/// The cluster has never been bootstrapped and has no bootstrap token yet.
pub fn needs_bootstrap_token(state: &State) -> bool {
    !state.meta.contains_key(META_BOOTSTRAP) && !state.meta.contains_key(META_BOOTSTRAPPED) && state.users.is_empty()
}

/// Writes the bootstrap token to `<data_dir>/bootstrap-token`, mode 0600.
pub fn write_bootstrap_file(data_dir: &Path, token: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(BOOTSTRAP_FILE);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_token_ends_with_the_credentials_it_was_minted_under() {
        let mut st = State::default();
        let mut u = crate::state::User {
            id: 100,
            username: "ada".into(),
            email: None,
            fs_uid: 1000,
            role_id: crate::state::user::ROLE_USER,
            quota_id: crate::state::user::QUOTA_DEFAULT,
            enabled: true,
            auth_source: "internal".into(),
            password_hash: Some("$argon2id$old".into()),
            priority: 0,
        };
        st.users.insert(100, u.clone());
        // A login that checked the old password, written after the change.
        let mut t = mint(100, "login", TokenKind::Session, 1_000, None);
        t.record.credentials = Some(credentials_stamp(&u));
        st.meta.insert(TokenRecord::meta_key(&t.record.id), serde_json::to_string(&t.record).unwrap());
        assert!(authenticate(&st, &t.secret, 2_000).is_some());
        u.password_hash = Some("$argon2id$new".into());
        st.users.insert(100, u);
        assert!(authenticate(&st, &t.secret, 2_000).is_none());
    }

    #[test]
    fn passwords_round_trip() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("nope", &h));
        assert!(!verify_password("s3cret", "garbage"));
        // The dummy hash parses (so checking it costs a real argon2 run).
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn tokens_authenticate_until_expiry_or_revocation() {
        let mut st = State::default();
        st.users.insert(
            100,
            User {
                id: 100,
                username: "ada".into(),
                email: None,
                fs_uid: 1000,
                role_id: 3,
                quota_id: 4,
                enabled: true,
                auth_source: "internal".into(),
                password_hash: None,
                priority: 0,
            },
        );
        let t = mint(100, "laptop", TokenKind::Session, 1_000, Some(500));
        st.meta.insert(TokenRecord::meta_key(&t.record.id), serde_json::to_string(&t.record).unwrap());
        assert_eq!(authenticate(&st, &t.secret, 1_200).unwrap().1.username, "ada");
        assert!(authenticate(&st, &t.secret, 1_500).is_none(), "expired");
        let forged = format!("zoe_{}_{}", t.record.id, random_secret());
        assert!(authenticate(&st, &forged, 1_200).is_none());
        assert!(authenticate(&st, "zoe_nope", 1_200).is_none());
        st.meta.insert(TokenRecord::meta_key(&t.record.id), String::new());
        assert!(authenticate(&st, &t.secret, 1_200).is_none(), "revoked");
        assert!(token_records(&st).is_empty());
    }

    #[test]
    fn textfile_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw.csv");
        std::fs::write(&p, "# comment\nada,pw1\nbob,pw2,admin\n").unwrap();
        assert_eq!(TextFileSource::lookup(&p, "ada").unwrap().as_deref(), Some("pw1"));
        assert_eq!(TextFileSource::lookup(&p, "bob").unwrap().as_deref(), Some("pw2"));
        assert_eq!(TextFileSource::lookup(&p, "eve").unwrap(), None);
    }
}
