//! Strict validation of ZApp descriptions.
//!
//! Typed deserialisation stops at the first problem; users fixing a ZApp want
//! all of them. So the validator walks the raw JSON, records every problem
//! with a JSON pointer (RFC 6901) and a plain sentence, and builds the typed
//! [`ZApp`] only when nothing is wrong. It enforces Zoe's schema and semantic
//! checks, plus the rules Zoe's schema only pretended to enforce (its `regex`
//! keys, which jsonschema ignores). It never rewrites the user's values.

use super::template::{Placeholder, Template};
use super::{
    CoresRange, EnvVar, FORMAT_VERSION, MAX_TOTAL_COUNT, MAX_TOTAL_MEMORY, MemoryRange, OnEviction, Port, Protocol,
    Resources, ServiceGroup, Volume, ZApp,
};
use crate::image::ImageRef;
use crate::resources::Millicores;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// One problem, located by a JSON pointer into the submitted document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() { "/" } else { &self.path };
        write!(f, "{path}: {}", self.message)
    }
}

/// Everything validation found. Warnings do not make a description invalid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text is not JSON at all.
    #[error("line {line}, column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    /// JSON, but not a valid ZApp.
    #[error("{} problem(s), first: {}", .0.errors.len(), .0.errors.first().map(|e| e.to_string()).unwrap_or_default())]
    Invalid(Report),
}

/// Parses and validates a ZApp from text. On success, returns the ZApp and
/// the warnings.
pub fn parse(text: &str) -> Result<(ZApp, Vec<Issue>), ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ParseError::Syntax {
        line: e.line(),
        column: e.column(),
        message: syntax_message(&e),
    })?;
    match validate_value(&value) {
        (Some(app), report) => Ok((app, report.warnings)),
        (None, report) => Err(ParseError::Invalid(report)),
    }
}

fn syntax_message(e: &serde_json::Error) -> String {
    // serde_json appends " at line X column Y"; the caller prints those itself.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Validates a JSON value. The ZApp is returned only when there is no error.
pub fn validate_value(v: &Value) -> (Option<ZApp>, Report) {
    let mut cx = Checker::default();
    let app = cx.zapp(v);
    let report = Report { errors: cx.errors, warnings: cx.warnings };
    if report.is_valid() { (app, report) } else { (None, report) }
}

const TOP_REQUIRED: &[&str] = &["name", "version", "will_end", "size", "services"];
const TOP_OPTIONAL: &[&str] = &["on_eviction"];
const SERVICE_REQUIRED: &[&str] = &[
    "name",
    "image",
    "ports",
    "environment",
    "volumes",
    "monitor",
    "startup_order",
    "essential_count",
    "total_count",
    "resources",
    "command",
];
const SERVICE_OPTIONAL: &[&str] = &["replicas", "work_dir", "labels", "network"];
const PORT_REQUIRED: &[&str] = &["name", "port_number", "protocol", "url_template"];

/// Appends a key to a JSON pointer, escaping `~` and `/` as RFC 6901 says.
/// A non-empty name of letters, digits, `-`, `_` and `.` (networks,
/// labels, volumes, host volumes).
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn join(path: &str, key: &str) -> String {
    format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"))
}

fn at(path: &str, index: usize) -> String {
    format!("{path}/{index}")
}

/// How a JSON value's type reads in an error message: "a string", "null".
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[derive(Default)]
struct Checker {
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Checker {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Issue { path: path.into(), message: message.into() });
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Issue { path: path.into(), message: message.into() });
    }

    /// Checks that `v` is an object with the required keys and no others.
    fn object<'a>(
        &mut self,
        v: &'a Value,
        path: &str,
        required: &[&str],
        optional: &[&str],
    ) -> Option<&'a Map<String, Value>> {
        let Value::Object(m) = v else {
            self.err(path, format!("must be an object, not {}", type_name(v)));
            return None;
        };
        for key in required {
            if !m.contains_key(*key) {
                self.err(join(path, key), "is required");
            }
        }
        for key in m.keys() {
            if !required.contains(&key.as_str()) && !optional.contains(&key.as_str()) {
                let mut allowed: Vec<&str> = required.iter().chain(optional).copied().collect();
                allowed.sort_unstable();
                let hint = match key.as_str() {
                    "shm_size" => " (Zoe renamed `shm_size` to `shm`)".to_string(),
                    _ => String::new(),
                };
                self.err(join(path, key), format!("unknown field{hint}; allowed fields are {}", allowed.join(", ")));
            }
        }
        Some(m)
    }

    fn string<'a>(&mut self, m: &'a Map<String, Value>, key: &str, path: &str) -> Option<&'a str> {
        match m.get(key)? {
            Value::String(s) => Some(s),
            other => {
                self.err(join(path, key), format!("must be a string, not {}", type_name(other)));
                None
            }
        }
    }

    fn boolean(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<bool> {
        match m.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.err(join(path, key), format!("must be true or false, not {}", type_name(other)));
                None
            }
        }
    }

    /// An integer in `[min, max]`. Like Zoe's schema (`multipleOf: 1.0`), an
    /// integral float such as `3.0` counts as an integer.
    fn integer_value(&mut self, v: &Value, path: &str, min: i128, max: i128) -> Option<i128> {
        let n = match v {
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    i128::from(i)
                } else if let Some(u) = n.as_u64() {
                    i128::from(u)
                } else {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    if f.fract() != 0.0 || !f.is_finite() {
                        self.err(path, format!("must be a whole number, not {f}"));
                        return None;
                    }
                    if f.abs() > 1e30 {
                        self.err(path, format!("must be at most {max}"));
                        return None;
                    }
                    f as i128
                }
            }
            other => {
                self.err(path, format!("must be a whole number, not {}", type_name(other)));
                return None;
            }
        };
        if n < min {
            self.err(path, format!("must be at least {min}"));
            None
        } else if n > max {
            self.err(path, format!("must be at most {max}"));
            None
        } else {
            Some(n)
        }
    }

    fn integer(&mut self, m: &Map<String, Value>, key: &str, path: &str, min: i128, max: i128) -> Option<i128> {
        let v = m.get(key)?;
        self.integer_value(v, &join(path, key), min, max)
    }

    fn array<'a>(&mut self, m: &'a Map<String, Value>, key: &str, path: &str) -> Option<&'a Vec<Value>> {
        match m.get(key)? {
            Value::Array(a) => Some(a),
            other => {
                self.err(join(path, key), format!("must be an array, not {}", type_name(other)));
                None
            }
        }
    }

    fn zapp(&mut self, v: &Value) -> Option<ZApp> {
        let m = self.object(v, "", TOP_REQUIRED, TOP_OPTIONAL)?;
        // Zoe reports a version mismatch before anything else: a ZApp of
        // another format fails many rules for one reason.
        let version = match m.get("version") {
            Some(v) => match self.integer_value(v, "/version", 0, i128::from(u32::MAX)) {
                Some(n) if n == i128::from(FORMAT_VERSION) => Some(FORMAT_VERSION),
                Some(n) => {
                    self.err(
                        "/version",
                        format!("unsupported ZApp format version {n}; zoe reads version {FORMAT_VERSION}"),
                    );
                    return None;
                }
                None => None,
            },
            None => None,
        };
        let name = self.string(m, "name", "");
        if let Some(n) = name {
            self.check_name(n, "/name", 3, 128, true);
        }
        let will_end = self.boolean(m, "will_end", "");
        let size = self.integer(m, "size", "", 0, i128::from(u64::MAX));
        let on_eviction = self.on_eviction(m, will_end);

        let services = self.array(m, "services", "");
        let mut groups = Vec::new();
        let mut all_groups_ok = true;
        if let Some(list) = services {
            if list.is_empty() {
                self.err("/services", "must list at least one service");
            }
            for (i, s) in list.iter().enumerate() {
                match self.service(s, &at("/services", i)) {
                    Some(g) => groups.push(Some(g)),
                    None => {
                        all_groups_ok = false;
                        groups.push(None);
                    }
                }
            }
            self.cross_service_checks(list, &groups);
            self.total_reservation(&groups);
        }

        let (name, version, will_end, size, on_eviction) = (name?, version?, will_end?, size?, on_eviction?);
        if !all_groups_ok || services.is_none() || !self.errors.is_empty() {
            return None;
        }
        Some(ZApp {
            name: name.to_string(),
            version,
            will_end,
            size: size as u64,
            services: groups.into_iter().flatten().collect(),
            on_eviction,
        })
    }

    /// Σ min × total_count of memory and cores over the services must fit
    /// [`MAX_TOTAL_MEMORY`] and `u32` millicores: every sum the quota and
    /// the scheduler make of it then stays exact (a wrapped sum would slip
    /// under a quota, and an overflow inside `apply` would stop every
    /// replica at the same entry).
    fn total_reservation(&mut self, groups: &[Option<ServiceGroup>]) {
        let (mut mem, mut cores) = (0u64, 0u32);
        for (i, g) in groups.iter().enumerate() {
            let Some(g) = g else { continue };
            let m = g.memory_min().checked_mul(u64::from(g.total_count)).and_then(|m| mem.checked_add(m));
            match m {
                Some(m) if m <= MAX_TOTAL_MEMORY => mem = m,
                _ => {
                    let p = format!("/services/{i}/resources/memory/min");
                    self.err(
                        &p,
                        "too large: the ZApp's memory reservation (min × total_count, over all services) exceeds 1 EiB",
                    );
                    return;
                }
            }
            match g.cores_min().0.checked_mul(g.total_count).and_then(|c| cores.checked_add(c)) {
                Some(c) => cores = c,
                None => {
                    let p = format!("/services/{i}/resources/cores/min");
                    self.err(&p, format!("too large: the ZApp's core reservation (min × total_count, over all services) exceeds {} cores", u32::MAX / 1000));
                    return;
                }
            }
        }
    }

    /// The optional `on_eviction` policy: `Some(None)` when absent.
    fn on_eviction(&mut self, m: &Map<String, Value>, will_end: Option<bool>) -> Option<Option<OnEviction>> {
        let Some(v) = m.get("on_eviction") else { return Some(None) };
        let names = || OnEviction::ALL.map(|p| format!("`{}`", p.as_str())).join(" or ");
        let policy = match v {
            Value::String(s) => OnEviction::ALL.into_iter().find(|p| p.as_str() == s),
            _ => None,
        };
        let Some(policy) = policy else {
            let found = match v {
                Value::String(s) => format!("`{s}`"),
                other => type_name(other).to_string(),
            };
            self.err("/on_eviction", format!("must be {}, not {found}", names()));
            return None;
        };
        if will_end == Some(false) {
            self.warn(
                "/on_eviction",
                "has no effect when will_end is false: long-running executions are always restarted elsewhere",
            );
        }
        Some(Some(policy))
    }

    /// Names become host names and container names: Zoe's character set,
    /// plus no leading or trailing dash.
    fn check_name(&mut self, n: &str, path: &str, min: usize, max: usize, allow_at: bool) {
        let len = n.chars().count();
        if len < min || len > max {
            self.err(path, format!("must be {min} to {max} characters long, not {len}"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || (allow_at && c == '@');
        if let Some(bad) = n.chars().find(|c| !allowed(*c)) {
            let set = if allow_at { "letters, digits, `-` and `@`" } else { "letters, digits and `-`" };
            self.err(path, format!("may only contain {set}; found {bad:?}"));
        } else if !allow_at && (n.starts_with('-') || n.ends_with('-')) {
            self.err(path, "must not start or end with `-` (it becomes a host name)");
        }
    }

    fn service(&mut self, v: &Value, path: &str) -> Option<ServiceGroup> {
        let m = self.object(v, path, SERVICE_REQUIRED, SERVICE_OPTIONAL)?;
        let name = self.string(m, "name", path);
        if let Some(n) = name {
            self.check_name(n, &join(path, "name"), 3, 16, false);
        }
        let image = self.string(m, "image", path);
        if let Some(img) = image {
            let p = join(path, "image");
            match ImageRef::parse(img) {
                Ok(r) if r.tag_implied() => {
                    self.warn(&p, format!("`{img}` names no tag: `{img}:latest` will be used"));
                }
                Ok(_) => {}
                Err(e) => self.err(&p, format!("`{img}` is not a valid image reference: {e}")),
            }
        }
        let monitor = self.boolean(m, "monitor", path);
        let essential = self.integer(m, "essential_count", path, 1, i128::from(MAX_TOTAL_COUNT));
        let total = self.integer(m, "total_count", path, 1, i128::from(MAX_TOTAL_COUNT));
        if let (Some(e), Some(t)) = (essential, total)
            && e > t
        {
            self.err(join(path, "essential_count"), format!("must not exceed total_count ({t})"));
        }
        let startup_order = self.integer(m, "startup_order", path, i128::from(i64::MIN), i128::from(i64::MAX));
        let replicas = match m.get("replicas") {
            Some(_) => self.integer(m, "replicas", path, 1, i128::from(u32::MAX)).map(Some),
            None => Some(None),
        };
        let resources = m.get("resources").and_then(|r| self.resources(r, &join(path, "resources")));
        let environment = self.environment(m, path);
        let volumes = self.volumes(m, path);
        let command = match m.get("command") {
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.err(join(path, "command"), "must be a non-empty string, or null to run the image's own command");
                None
            }
            Some(Value::String(s)) => match super::command::split_command(s) {
                Ok(_) => Some(Some(s.clone())),
                Err(e) => {
                    self.err(join(path, "command"), format!("cannot be split into arguments: {e}"));
                    None
                }
            },
            Some(other) => {
                self.err(join(path, "command"), format!("must be a string or null, not {}", type_name(other)));
                None
            }
            None => None,
        };
        let ports = self.ports(m, path);
        let work_dir = match m.get("work_dir") {
            None => Some(None),
            Some(_) => {
                let wd = self.string(m, "work_dir", path);
                match wd {
                    Some(d) if !d.starts_with('/') => {
                        self.err(join(path, "work_dir"), "must be an absolute path");
                        None
                    }
                    Some(d) => Some(Some(d.to_string())),
                    None => None,
                }
            }
        };
        let labels = match m.get("labels") {
            None => Some(None),
            Some(_) => self.labels(m, path).map(Some),
        };
        let network = match m.get("network") {
            None => Some(None),
            Some(_) => match self.string(m, "network", path) {
                Some(n) if !is_plain_name(n) => {
                    self.err(join(path, "network"), "must be a non-empty name of letters, digits, `-`, `_` and `.`");
                    None
                }
                Some(n) => Some(Some(n.to_string())),
                None => None,
            },
        };
        Some(ServiceGroup {
            name: name?.to_string(),
            image: image?.to_string(),
            monitor: monitor?,
            essential_count: essential? as u32,
            total_count: total? as u32,
            startup_order: startup_order? as i64,
            resources: resources?,
            environment: environment?,
            volumes: volumes?,
            command: command?,
            ports: ports?,
            replicas: replicas?.map(|r| r as u32),
            work_dir: work_dir?,
            labels: labels?,
            network: network?,
        })
    }

    fn resources(&mut self, v: &Value, path: &str) -> Option<Resources> {
        // (`memory` values are bounded as a sum, in `total_reservation`.)
        let m = self.object(v, path, &["memory", "cores"], &["shm"])?;
        let memory = m.get("memory").and_then(|mv| {
            let p = join(path, "memory");
            let mm = self.object(mv, &p, &["min", "max"], &[])?;
            let min = self.nullable_int(mm, "min", &p, 1024);
            let max = self.nullable_int(mm, "max", &p, 1024);
            let (min, max) = (min?, max?);
            if let (Some(lo), Some(hi)) = (min, max)
                && lo > hi
            {
                self.err(join(&p, "min"), format!("must not exceed max ({hi})"));
                return None;
            }
            Some(MemoryRange { min, max })
        });
        let cores = m.get("cores").and_then(|cv| {
            let p = join(path, "cores");
            let cm = self.object(cv, &p, &["min", "max"], &[])?;
            let min = self.nullable_cores(cm, "min", &p);
            let max = self.nullable_cores(cm, "max", &p);
            let (min, max) = (min?, max?);
            if let (Some(lo), Some(hi)) = (min, max)
                && lo > hi
            {
                self.err(join(&p, "min"), format!("must not exceed max ({hi})"));
                return None;
            }
            Some(CoresRange { min, max })
        });
        let shm = match m.get("shm") {
            None => Some(None),
            Some(_) => self.integer(m, "shm", path, 0, i128::from(u64::MAX)).map(|n| Some(n as u64)),
        };
        Some(Resources { memory: memory?, cores: cores?, shm: shm? })
    }

    fn nullable_int(&mut self, m: &Map<String, Value>, key: &str, path: &str, min: i128) -> Option<Option<u64>> {
        match m.get(key)? {
            Value::Null => Some(None),
            v => self.integer_value(v, &join(path, key), min, i128::from(u64::MAX)).map(|n| Some(n as u64)),
        }
    }

    fn nullable_cores(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<Option<Millicores>> {
        let p = join(path, key);
        match m.get(key)? {
            Value::Null => Some(None),
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f <= 0.0 {
                    self.err(&p, "must be greater than 0");
                    return None;
                }
                match Millicores::from_cores(f) {
                    Ok(mc) if mc.0 == 0 => {
                        self.err(&p, "must be greater than 0");
                        None
                    }
                    Ok(mc) => Some(Some(mc)),
                    Err(e) => {
                        self.err(&p, e.to_string());
                        None
                    }
                }
            }
            other => {
                self.err(&p, format!("must be a number of cores or null, not {}", type_name(other)));
                None
            }
        }
    }

    fn environment(&mut self, m: &Map<String, Value>, path: &str) -> Option<Vec<EnvVar>> {
        let list = self.array(m, "environment", path)?;
        let base = join(path, "environment");
        let mut out = Vec::new();
        let mut ok = true;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, item) in list.iter().enumerate() {
            let p = at(&base, i);
            let pair = match item {
                Value::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
                    (Value::String(n), Value::String(v)) => Some((n, v)),
                    _ => None,
                },
                _ => None,
            };
            let Some((name, value)) = pair else {
                self.err(&p, "must be a pair of strings [NAME, VALUE]");
                ok = false;
                continue;
            };
            let ident = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ident {
                self.err(
                    at(&p, 0),
                    format!(
                        "`{name}` is not a valid variable name (letters, digits and `_`, not starting with a digit)"
                    ),
                );
                ok = false;
            }
            if let Some(first) = seen.insert(name, i) {
                self.err(at(&p, 0), format!("`{name}` is already set at {}", at(&base, first)));
                ok = false;
            }
            // Placeholders are checked against instance names once all
            // groups are known (cross_service_checks); syntax now.
            if let Err(e) = Template::parse(value) {
                self.err(at(&p, 1), e.to_string());
                ok = false;
            }
            out.push(EnvVar(name.clone(), value.clone()));
        }
        ok.then_some(out)
    }

    fn volumes(&mut self, m: &Map<String, Value>, path: &str) -> Option<Vec<Volume>> {
        let list = self.array(m, "volumes", path)?;
        let base = join(path, "volumes");
        let mut out = Vec::new();
        let mut ok = true;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, item) in list.iter().enumerate() {
            let p = at(&base, i);
            let Some(vm) = self.object(item, &p, &["name", "read_only"], &["path", "host_volume"]) else {
                ok = false;
                continue;
            };
            let name = self.string(vm, "name", &p);
            let ro = self.boolean(vm, "read_only", &p);
            // Exactly one source: Zoe's host path, or a node's host volume.
            let (host, named) = match (vm.contains_key("path"), vm.contains_key("host_volume")) {
                (true, false) => (self.string(vm, "path", &p), None),
                (false, true) => (None, self.string(vm, "host_volume", &p)),
                (both, _) => {
                    self.err(
                        p.clone(),
                        if both {
                            "give `path` or `host_volume`, not both"
                        } else {
                            "needs `path` (a host path) or `host_volume` (a volume the nodes offer)"
                        },
                    );
                    ok = false;
                    continue;
                }
            };
            if let Some(v) = named
                && !is_plain_name(v)
            {
                self.err(join(&p, "host_volume"), "must be a host volume's name: letters, digits, `-`, `_` and `.`");
                ok = false;
            }
            if let Some(n) = name {
                let valid = is_plain_name(n) && n != "." && n != "..";
                if !valid {
                    self.err(
                        join(&p, "name"),
                        "must be a name of letters, digits, `-`, `_` and `.` (it is mounted at /mnt/<name>)",
                    );
                    ok = false;
                } else if format!("/mnt/{n}") == super::WORKSPACE_MOUNT {
                    self.err(join(&p, "name"), "`workspace` is reserved for the user's workspace");
                    ok = false;
                } else if let Some(first) = seen.insert(n.to_string(), i) {
                    self.err(join(&p, "name"), format!("volume `{n}` is already defined at {}", at(&base, first)));
                    ok = false;
                }
            }
            if let Some(h) = host {
                if !h.starts_with('/') {
                    self.err(join(&p, "path"), "must be an absolute host path");
                    ok = false;
                } else if h.split('/').any(|c| c == "..") {
                    self.err(join(&p, "path"), "must not contain `..`");
                    ok = false;
                } else if h.contains('\0') {
                    self.err(join(&p, "path"), "must not contain a NUL character");
                    ok = false;
                }
            }
            match (name, host.or(named), ro) {
                (Some(n), Some(_), Some(r)) => out.push(Volume {
                    name: n.to_string(),
                    path: host.map(str::to_string),
                    host_volume: named.map(str::to_string),
                    read_only: r,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn ports(&mut self, m: &Map<String, Value>, path: &str) -> Option<Vec<Port>> {
        let list = self.array(m, "ports", path)?;
        let base = join(path, "ports");
        let mut out = Vec::new();
        let mut ok = true;
        let mut seen: HashMap<(u16, Protocol), usize> = HashMap::new();
        for (i, item) in list.iter().enumerate() {
            let p = at(&base, i);
            let Some(pm) = self.object(item, &p, PORT_REQUIRED, &["proxy"]) else {
                ok = false;
                continue;
            };
            let name = self.string(pm, "name", &p);
            if let Some(n) = name
                && n.chars().count() < 3
            {
                self.err(join(&p, "name"), "must be at least 3 characters long");
                ok = false;
            }
            let number = self.integer(pm, "port_number", &p, 1, 65535).map(|n| n as u16);
            let protocol = match self.string(pm, "protocol", &p) {
                Some("tcp") => Some(Protocol::Tcp),
                Some("udp") => Some(Protocol::Udp),
                Some(other) => {
                    self.err(join(&p, "protocol"), format!("must be \"tcp\" or \"udp\", not {other:?}"));
                    None
                }
                None => None,
            };
            let url = self.string(pm, "url_template", &p);
            if let Some(u) = url {
                match Template::parse(u) {
                    Ok(t) => {
                        for ph in t.placeholders() {
                            if !matches!(ph, Placeholder::IpPort | Placeholder::ProxyPath) {
                                self.err(
                                    join(&p, "url_template"),
                                    format!(
                                        "{ph} cannot be used here; a URL template knows {{ip_port}} and {{proxy_path}}"
                                    ),
                                );
                                ok = false;
                            }
                        }
                    }
                    Err(e) => {
                        self.err(join(&p, "url_template"), e.to_string());
                        ok = false;
                    }
                }
            }
            let proxy = match pm.get("proxy") {
                None => Some(None),
                Some(_) => self.boolean(pm, "proxy", &p).map(Some),
            };
            if let (Some(n), Some(pr)) = (number, protocol)
                && let Some(first) = seen.insert((n, pr), i)
            {
                self.err(
                    join(&p, "port_number"),
                    format!("port {n}/{} is already declared at {}", pr.as_str(), at(&base, first)),
                );
                ok = false;
            }
            match (name, number, protocol, url, proxy) {
                (Some(n), Some(num), Some(pr), Some(u), Some(px)) => out.push(Port {
                    name: n.to_string(),
                    port_number: num,
                    protocol: pr,
                    url_template: u.to_string(),
                    proxy: px,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn labels(&mut self, m: &Map<String, Value>, path: &str) -> Option<Vec<String>> {
        let list = self.array(m, "labels", path)?;
        let base = join(path, "labels");
        let mut out = Vec::new();
        let mut ok = true;
        let mut seen = BTreeSet::new();
        for (i, item) in list.iter().enumerate() {
            let p = at(&base, i);
            match item {
                Value::String(s) if is_plain_name(s) => {
                    if !seen.insert(s.as_str()) {
                        self.err(&p, format!("label `{s}` is listed twice"));
                        ok = false;
                    }
                    out.push(s.clone());
                }
                Value::String(_) => {
                    self.err(&p, "must be a non-empty label of letters, digits, `-`, `_` and `.`");
                    ok = false;
                }
                other => {
                    self.err(&p, format!("must be a string, not {}", type_name(other)));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// Rules that need all groups: unique names, at least one monitor,
    /// unique instance names, and `{dns_name#X}` naming a real instance.
    fn cross_service_checks(&mut self, list: &[Value], groups: &[Option<ServiceGroup>]) {
        let raw_name = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_string);
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, v) in list.iter().enumerate() {
            if let Some(n) = raw_name(v)
                && let Some(first) = names.insert(n.clone(), i)
            {
                self.err(
                    join(&at("/services", i), "name"),
                    format!("service `{n}` is already defined at /services/{first}"),
                );
            }
        }
        let any_monitor = list.iter().any(|v| v.get("monitor") == Some(&Value::Bool(true)));
        if !list.is_empty() && !any_monitor {
            self.err("/services", "at least one service must have \"monitor\": true (its end ends the execution and its log is the one users follow)");
        }
        // Instance names must be unique across groups: `worker` ×11 and
        // `worker1` ×1 would both produce `worker10`.
        let mut instances: HashMap<String, usize> = HashMap::new();
        for (i, v) in list.iter().enumerate() {
            let (Some(n), Some(t)) = (raw_name(v), v.get("total_count").and_then(Value::as_u64)) else {
                continue;
            };
            for k in 0..t.min(u64::from(MAX_TOTAL_COUNT)) {
                let inst = format!("{n}{k}");
                // Same-named groups are reported above; only distinct names
                // that collide after numbering are news.
                if let Some(first) = instances.insert(inst.clone(), i)
                    && first != i
                    && raw_name(&list[first]).as_deref() != Some(n.as_str())
                {
                    self.err(
                        join(&at("/services", i), "name"),
                        format!("instance name `{inst}` is produced by both /services/{first} and /services/{i}; rename one group"),
                    );
                    break;
                }
            }
        }
        for (i, g) in groups.iter().enumerate() {
            let Some(g) = g else { continue };
            for (j, EnvVar(_, value)) in g.environment.iter().enumerate() {
                let Ok(t) = Template::parse(value) else { continue };
                for ph in t.placeholders() {
                    let p = format!("/services/{i}/environment/{j}/1");
                    match ph {
                        Placeholder::DnsName(inst) if !instances.contains_key(inst) => {
                            self.err(
                                p,
                                format!(
                                    "{ph} names no instance of this ZApp (instances are named <service><n>, e.g. {}0)",
                                    g.name
                                ),
                            );
                        }
                        Placeholder::ProxyPath if g.proxy_port().is_none() => {
                            self.err(p, format!("{ph} needs a TCP port (not `proxy: false`) in this service's ports"));
                        }
                        Placeholder::IpPort => {
                            self.err(p, format!("{ph} is only known in a port's url_template"));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
