//! The ZApp shop: a directory of packages in Zoe's manifest format
//! (`zapp-shop-path`), read on each request so that admins add or edit
//! packages without a restart.
//!
//! A package is a sub-directory with `manifest.json`:
//! `{"version": 1, "zapps": [{category, name, description (ZApp JSON file),
//! readable_descr (Markdown file), parameters, logo, labels, enabled_for,
//! disabled_for}]}`. A ZApp's id is `<directory>-<index in manifest>`.

use crate::state::Role;
use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use zoe_common::resources::Millicores;
use zoe_common::zapp::{ZApp, validate_value};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    version: u32,
    zapps: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestEntry {
    category: String,
    name: String,
    description: String,
    #[serde(default)]
    readable_descr: Option<String>,
    parameters: Vec<Parameter>,
    #[serde(default)]
    logo: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default = "all")]
    enabled_for: Vec<String>,
    #[serde(default)]
    disabled_for: Vec<String>,
}

fn all() -> Vec<String> {
    vec!["all".into()]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// Sets the environment variable `name` in every group that defines it.
    Environment,
    /// Sets the command of group `name`.
    Command,
    /// Sets both counts of group `name`.
    ServiceCount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Int,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub kind: ParamKind,
    pub name: String,
    #[serde(default)]
    pub readable_name: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    pub default: Value,
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
    #[serde(default)]
    pub step: Option<i64>,
}

impl Parameter {
    pub fn label(&self) -> &str {
        self.readable_name.as_deref().unwrap_or(&self.name)
    }

    pub fn default_text(&self) -> String {
        match &self.default {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// One ZApp of the shop, ready to show and start.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub category: String,
    pub name: String,
    pub zapp: ZApp,
    /// The Markdown description rendered to HTML, raw HTML escaped.
    pub readme_html: String,
    pub parameters: Vec<Parameter>,
    pub logo: Option<PathBuf>,
    pub labels: Vec<String>,
    pub enabled_for: Vec<String>,
    pub disabled_for: Vec<String>,
}

impl Entry {
    /// Zoe's rule: roles with `can_access_full_zapp_shop` see everything;
    /// others see entries enabled for `all` or their role, unless disabled
    /// for their role.
    pub fn visible_to(&self, role: &Role) -> bool {
        if role.capabilities.can_access_full_zapp_shop {
            return true;
        }
        let enabled = self.enabled_for.iter().any(|r| r == "all" || *r == role.name);
        enabled && !self.disabled_for.contains(&role.name)
    }
}

/// The shop as read now, with the packages that could not be read.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub entries: Vec<Entry>,
    pub problems: Vec<String>,
}

impl Catalogue {
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }
}

/// Package directory names usable in URLs as they are.
fn plain_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('.')
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Reads every package under `dir`. A broken package is reported in
/// `problems` and skipped; the others still show.
pub fn load(dir: &Path) -> Catalogue {
    let mut cat = Catalogue::default();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            cat.problems.push(format!("{}: {e}", dir.display()));
            return cat;
        }
    };
    let mut pkgs: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    pkgs.sort();
    for pkg in pkgs {
        let manifest = pkg.join("manifest.json");
        if !manifest.is_file() {
            continue;
        }
        let dirname = pkg.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !plain_name(&dirname) {
            cat.problems.push(format!("{}: directory name must use a-z, A-Z, 0-9, '-', '_', '.'", pkg.display()));
            continue;
        }
        match load_package(&pkg, &dirname) {
            Ok(mut entries) => cat.entries.append(&mut entries),
            Err(e) => {
                tracing::warn!("ZApp shop: {e}");
                cat.problems.push(e.to_string());
            }
        }
    }
    cat
}

/// Why a package was skipped: the file, where in the manifest (a JSON
/// pointer, when the problem is one entry's), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {at}{reason}")]
struct PackageProblem {
    file: String,
    /// `/zapps/0/description: `, or empty.
    at: String,
    reason: String,
}

impl PackageProblem {
    fn new(file: &Path, at: &str, reason: impl std::fmt::Display) -> PackageProblem {
        let at = if at.is_empty() { String::new() } else { format!("{at}: ") };
        PackageProblem { file: file.display().to_string(), at, reason: reason.to_string() }
    }
}

/// Why a parameter of a shop entry cannot be offered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ParameterProblem {
    #[error("an int parameter needs min, max and step")]
    NoRange,
    #[error("needs min <= max and step > 0")]
    BadRange,
    #[error("default must be an integer between {0} and {1}")]
    BadDefault(i64, i64),
    #[error("the ZApp has no service group `{0}`")]
    NoGroup(String),
    #[error("a service_count parameter must be an int")]
    CountNotInt,
}

/// A file named by a manifest, which must stay inside its package.
fn package_file(pkg: &Path, name: &str) -> Result<PathBuf, PackageProblem> {
    let p = Path::new(name);
    if p.is_absolute() || p.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(PackageProblem::new(pkg, "", format!("`{name}` must be a path inside the package")));
    }
    Ok(pkg.join(p))
}

fn load_package(pkg: &Path, dirname: &str) -> Result<Vec<Entry>, PackageProblem> {
    let mpath = pkg.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).map_err(|e| PackageProblem::new(&mpath, "", e))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| PackageProblem::new(&mpath, "", e))?;
    if m.version != 1 {
        return Err(PackageProblem::new(&mpath, "/version", "must be 1"));
    }
    let mut out = Vec::new();
    for (i, z) in m.zapps.into_iter().enumerate() {
        let at = |field: &str| format!("/zapps/{i}/{field}");
        let zpath = package_file(pkg, &z.description)?;
        let in_file = |e: &dyn std::fmt::Display, f: &Path| format!("{}: {e}", f.display());
        let ztext = std::fs::read_to_string(&zpath)
            .map_err(|e| PackageProblem::new(&mpath, &at("description"), in_file(&e, &zpath)))?;
        let v: Value = serde_json::from_str(&ztext)
            .map_err(|e| PackageProblem::new(&mpath, &at("description"), in_file(&e, &zpath)))?;
        let (app, report) = validate_value(&v);
        let zapp = app.ok_or_else(|| {
            let first = report.errors.first().map(|i| format!("{}: {}", i.path, i.message)).unwrap_or_default();
            let why = format!("{} is not a valid ZApp: {first}", zpath.display());
            PackageProblem::new(&mpath, &at("description"), why)
        })?;
        for (pi, p) in z.parameters.iter().enumerate() {
            check_parameter(p, &zapp).map_err(|e| PackageProblem::new(&mpath, &at(&format!("parameters/{pi}")), e))?;
        }
        let readme_html = match &z.readable_descr {
            Some(f) => {
                let rp = package_file(pkg, f)?;
                let md = std::fs::read_to_string(&rp)
                    .map_err(|e| PackageProblem::new(&mpath, &at("readable_descr"), in_file(&e, &rp)))?;
                markdown(&md)
            }
            None => String::new(),
        };
        let logo = match &z.logo {
            Some(l) => Some(package_file(pkg, l)?),
            None => Some(pkg.join("logo.png")).filter(|p| p.is_file()),
        };
        out.push(Entry {
            id: format!("{dirname}-{i}"),
            category: z.category,
            name: z.name,
            zapp,
            readme_html,
            parameters: z.parameters,
            logo,
            labels: z.labels,
            enabled_for: z.enabled_for,
            disabled_for: z.disabled_for,
        });
    }
    Ok(out)
}

fn check_parameter(p: &Parameter, app: &ZApp) -> Result<(), ParameterProblem> {
    if p.ty == ParamType::Int {
        let (Some(min), Some(max), Some(step)) = (p.min, p.max, p.step) else {
            return Err(ParameterProblem::NoRange);
        };
        if min > max || step <= 0 {
            return Err(ParameterProblem::BadRange);
        }
        if !p.default.as_i64().is_some_and(|d| (min..=max).contains(&d)) {
            return Err(ParameterProblem::BadDefault(min, max));
        }
    }
    match p.kind {
        ParamKind::Command | ParamKind::ServiceCount if !app.services.iter().any(|g| g.name == p.name) => {
            Err(ParameterProblem::NoGroup(p.name.clone()))
        }
        ParamKind::ServiceCount if p.ty != ParamType::Int => Err(ParameterProblem::CountNotInt),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------- Markdown

/// Only links a click cannot turn into script: http(s), mailto, and
/// relative references.
fn safe_url(url: &str) -> bool {
    let u = url.trim().to_ascii_lowercase();
    let scheme_end = u.find([':', '/', '?', '#']);
    match scheme_end {
        Some(i) if u.as_bytes()[i] == b':' => {
            u.starts_with("http:") || u.starts_with("https:") || u.starts_with("mailto:")
        }
        _ => true,
    }
}

/// Renders Markdown to HTML. Raw HTML in the source is shown as text, and
/// links or images with other schemes (`javascript:`, `data:`) are dropped.
pub fn markdown(src: &str) -> String {
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let events = Parser::new_ext(src, opts).map(|ev| match ev {
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        Event::Start(Tag::Link { link_type, dest_url, title, id }) if !safe_url(&dest_url) => {
            Event::Start(Tag::Link { link_type, dest_url: CowStr::Borrowed("#"), title, id })
        }
        Event::Start(Tag::Image { link_type, dest_url, title, id }) if !safe_url(&dest_url) => {
            Event::Start(Tag::Image { link_type, dest_url: CowStr::Borrowed(""), title, id })
        }
        other => other,
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

// -------------------------------------------------------- start parameters

/// A form problem: the form field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Form field of parameter `i`.
pub fn param_field(i: usize) -> String {
    format!("p{i}")
}

/// Form fields of a group's resource overrides (GiB of memory, cores).
pub fn memory_field(gi: usize) -> String {
    format!("memory{gi}")
}
pub fn cores_field(gi: usize) -> String {
    format!("cores{gi}")
}

/// The entry's ZApp with the user's parameter values and, when given
/// (only for roles that may customize resources), resource minimums.
/// `get` returns a form field's value.
pub fn apply<'a>(entry: &Entry, get: impl Fn(&str) -> Option<&'a str>) -> Result<ZApp, Vec<FieldError>> {
    let mut app = entry.zapp.clone();
    let mut errors = Vec::new();
    let mut err = |field: String, message: String| errors.push(FieldError { field, message });
    for (i, p) in entry.parameters.iter().enumerate() {
        let field = param_field(i);
        let raw = get(&field).map(str::to_string).unwrap_or_else(|| p.default_text());
        let value = match p.ty {
            ParamType::String => raw,
            ParamType::Int => {
                let (min, max, step) = (p.min.unwrap_or(i64::MIN), p.max.unwrap_or(i64::MAX), p.step.unwrap_or(1));
                match raw.trim().parse::<i64>() {
                    Ok(v) if v < min || v > max => {
                        err(field, format!("{}: between {min} and {max}", p.label()));
                        continue;
                    }
                    Ok(v) if (v - min) % step != 0 => {
                        err(field, format!("{}: in steps of {step} from {min}", p.label()));
                        continue;
                    }
                    Ok(v) => v.to_string(),
                    Err(_) => {
                        err(field, format!("{}: `{raw}` is not an integer", p.label()));
                        continue;
                    }
                }
            }
        };
        match p.kind {
            ParamKind::Environment => {
                for g in &mut app.services {
                    for e in g.environment.iter_mut().filter(|e| e.0 == p.name) {
                        e.1 = value.clone();
                    }
                }
            }
            ParamKind::Command => {
                for g in app.services.iter_mut().filter(|g| g.name == p.name) {
                    g.command = Some(value.clone());
                }
            }
            ParamKind::ServiceCount => {
                let n: u32 = match value.parse() {
                    Ok(n) if n >= 1 => n,
                    _ => {
                        err(field, format!("{}: at least 1", p.label()));
                        continue;
                    }
                };
                for g in app.services.iter_mut().filter(|g| g.name == p.name) {
                    g.essential_count = n;
                    g.total_count = n;
                }
            }
        }
    }
    for (gi, g) in app.services.iter_mut().enumerate() {
        if let Some(raw) = get(&memory_field(gi)).filter(|s| !s.trim().is_empty()) {
            match raw.trim().parse::<f64>() {
                Ok(gib) if gib > 0.0 && gib.is_finite() => {
                    let bytes = (gib * (1u64 << 30) as f64).round() as u64;
                    g.resources.memory.min = Some(bytes);
                    if g.resources.memory.max.is_some_and(|m| m < bytes) {
                        g.resources.memory.max = Some(bytes);
                    }
                }
                _ => err(memory_field(gi), format!("memory of {}: a number of GiB above 0", g.name)),
            }
        }
        if let Some(raw) = get(&cores_field(gi)).filter(|s| !s.trim().is_empty()) {
            match raw.trim().parse::<f64>().ok().filter(|c| *c > 0.0).map(Millicores::from_cores) {
                Some(Ok(c)) => {
                    g.resources.cores.min = Some(c);
                    if g.resources.cores.max.is_some_and(|m| m < c) {
                        g.resources.cores.max = Some(c);
                    }
                }
                _ => err(cores_field(gi), format!("cores of {}: a number above 0", g.name)),
            }
        }
        if !entry.labels.is_empty() {
            let labels = g.labels.get_or_insert_with(Vec::new);
            for l in &entry.labels {
                if !labels.contains(l) {
                    labels.push(l.clone());
                }
            }
        }
    }
    if errors.is_empty() { Ok(app) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Capabilities;

    #[test]
    fn markdown_escapes_raw_html_and_script_links() {
        let h = markdown(
            "# Title\n\n<script>alert(1)</script>\n\nsome *text* <b>x</b> [a](javascript:alert(1)) [b](https://x.org/)",
        );
        assert!(h.contains("<h1>Title</h1>"), "{h}");
        assert!(!h.contains("<script>"), "{h}");
        assert!(h.contains("&lt;script&gt;"), "{h}");
        assert!(!h.contains("<b>"), "{h}");
        assert!(!h.contains("javascript:"), "{h}");
        assert!(h.contains("href=\"https://x.org/\""), "{h}");
        assert!(safe_url("docs/x.md") && safe_url("#top") && safe_url("/a:b") && !safe_url(" JavaScript:x"));
    }

    fn role(name: &str, full: bool) -> Role {
        Role {
            id: 9,
            name: name.into(),
            capabilities: Capabilities { can_access_full_zapp_shop: full, ..Default::default() },
        }
    }

    fn entry() -> Entry {
        let v = serde_json::json!({
            "name": "demo", "version": 3, "will_end": true, "size": 1,
            "services": [{
                "name": "worker", "image": "zoe.local/busybox:1", "monitor": true,
                "essential_count": 1, "total_count": 1, "startup_order": 0,
                "resources": { "memory": { "min": 16777216, "max": 33554432 }, "cores": { "min": 0.1, "max": null } },
                "environment": [["GREETING", "hi"]], "volumes": [], "command": "/bin/true", "ports": []
            }]
        });
        let params: Vec<Parameter> = serde_json::from_value(serde_json::json!([
            { "kind": "environment", "name": "GREETING", "type": "string", "default": "hi" },
            { "kind": "service_count", "name": "worker", "type": "int", "default": 1, "min": 1, "max": 4, "step": 1 },
            { "kind": "command", "name": "worker", "type": "string", "default": "/bin/true" }
        ]))
        .unwrap();
        Entry {
            id: "demo-0".into(),
            category: "Tests".into(),
            name: "Demo".into(),
            zapp: validate_value(&v).0.unwrap(),
            readme_html: String::new(),
            parameters: params,
            logo: None,
            labels: vec!["shop".into()],
            enabled_for: vec!["user".into()],
            disabled_for: vec!["guest".into()],
        }
    }

    #[test]
    fn example_packages_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
        let cat = load(&dir);
        assert!(cat.problems.is_empty(), "{:?}", cat.problems);
        let ids: Vec<&str> = cat.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["hello-0", "web-0", "workers-0"]);
        for e in &cat.entries {
            assert!(e.logo.as_ref().is_some_and(|l| l.is_file()), "{}", e.id);
            assert!(!e.readme_html.is_empty(), "{}", e.id);
            assert!(e.zapp.services.iter().all(|g| g.image == "zoe.local/busybox:1"));
            apply(e, |_| None).unwrap();
        }
    }

    #[test]
    fn visibility_follows_enabled_and_disabled_for() {
        let e = entry();
        assert!(e.visible_to(&role("user", false)));
        assert!(!e.visible_to(&role("other", false)));
        assert!(e.visible_to(&role("other", true)));
        let mut e2 = e.clone();
        e2.enabled_for = vec!["all".into()];
        assert!(!e2.visible_to(&role("guest", false)));
        assert!(e2.visible_to(&role("guest", true)));
    }

    #[test]
    fn parameters_apply_and_are_checked() {
        let e = entry();
        let form = [("p0", "hello"), ("p1", "3"), ("p2", "echo hi"), ("memory0", "0.5"), ("cores0", "2")];
        let get = |k: &str| form.iter().find(|(f, _)| *f == k).map(|(_, v)| *v);
        let app = apply(&e, get).unwrap();
        let g = &app.services[0];
        assert_eq!(g.environment[0].1, "hello");
        assert_eq!((g.essential_count, g.total_count), (3, 3));
        assert_eq!(g.command.as_deref(), Some("echo hi"));
        assert_eq!(g.resources.memory.min, Some(512 << 20));
        assert_eq!(g.resources.memory.max, Some(512 << 20), "max raised to the new min");
        assert_eq!(g.resources.cores.min, Some(Millicores::from_whole_cores(2)));
        assert_eq!(g.labels.as_deref(), Some(&["shop".to_string()][..]));
        // Defaults when a field is missing.
        let app = apply(&e, |_| None).unwrap();
        assert_eq!(app.services[0].environment[0].1, "hi");
        // Out of range, not a number, bad resources: one error per field.
        let bad = [("p1", "9"), ("memory0", "-1"), ("cores0", "x")];
        let errs = apply(&e, |k| bad.iter().find(|(f, _)| *f == k).map(|(_, v)| *v)).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["p1", "memory0", "cores0"]);
    }
}
