//! Validation of workflow documents: like ZApps', it walks the raw JSON
//! and reports every problem with its JSON pointer; each step's ZApp is
//! checked by the ZApp validator, its problems located under the step.

use super::cron::Spec;
use super::{CatchUp, Condition, EndStatus, MAX_FAN_OUT, MAX_RETRIES, MAX_STEPS, Workflow};
use crate::zapp::{Issue, ParseError, Report, is_plain_name, type_name, validate_value as validate_zapp};
use serde_json::{Map, Value};

/// Parses and validates a workflow document from text.
pub fn parse(text: &str) -> Result<(Workflow, Vec<Issue>), ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ParseError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
    })?;
    match validate_value(&value) {
        (Some(w), report) => Ok((w, report.warnings)),
        (None, report) => Err(ParseError::Invalid(report)),
    }
}

/// The `{{key}}` placeholders of a value, in order. Python's `str.format`
/// (the ZApp's own templates) reads `{{` as a literal brace, so these pass
/// the ZApp validator untouched and are filled in when a step starts.
pub fn template_keys(s: &str) -> Vec<&str> {
    let mut keys = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        match after.find("}}") {
            Some(j) => {
                keys.push(after[..j].trim());
                rest = &after[j + 2..];
            }
            None => break,
        }
    }
    keys
}

const TOP: &[&str] = &["name", "description", "schedule", "triggers", "steps"];
const EXECUTION_END: &[&str] = &["name", "owner", "status"];
const SCHEDULE: &[&str] = &["cron", "time_zone", "prohibit_overlap", "catch_up"];
const STEP: &[&str] =
    &["name", "zapp", "shop", "depends_on", "condition", "fan_out", "retries", "backoff_s", "timeout_s"];
const STEP_KEYS: &[&str] = &["execution_id", "exit_code", "status"];
const OWN_KEYS: &[&str] = &["run.id", "run.slot", "workflow.name", "fan_out.index", "fan_out.count"];

#[derive(Default)]
struct Checker {
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Checker {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Issue { path: path.into(), message: message.into() });
    }

    fn object<'a>(&mut self, v: &'a Value, path: &str, allowed: &[&str]) -> Option<&'a Map<String, Value>> {
        let Some(o) = v.as_object() else {
            self.err(path, format!("must be an object, not {}", type_name(v)));
            return None;
        };
        for k in o.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.err(format!("{path}/{}", k.replace('~', "~0").replace('/', "~1")), "unknown field");
        }
        Some(o)
    }

    fn string<'a>(&mut self, o: &'a Map<String, Value>, key: &str, path: &str, required: bool) -> Option<&'a str> {
        match o.get(key) {
            None if required => {
                self.err(path, format!("missing field `{key}`"));
                None
            }
            None | Some(Value::Null) if !required => None,
            Some(Value::String(s)) => Some(s),
            Some(v) => {
                self.err(format!("{path}/{key}"), format!("must be a string, not {}", type_name(v)));
                None
            }
            None => None,
        }
    }

    fn uint(&mut self, o: &Map<String, Value>, key: &str, path: &str, lo: u64, hi: u64) -> Option<u64> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if (lo..=hi).contains(&n) => Some(n),
                _ => {
                    self.err(format!("{path}/{key}"), format!("must be an integer from {lo} to {hi}"));
                    None
                }
            },
        }
    }

    fn boolean(&mut self, o: &Map<String, Value>, key: &str, path: &str) {
        if let Some(v) = o.get(key)
            && !v.is_boolean()
        {
            self.err(format!("{path}/{key}"), format!("must be a boolean, not {}", type_name(v)));
        }
    }

    fn choice(&mut self, o: &Map<String, Value>, key: &str, path: &str, allowed: &[&str]) {
        match o.get(key) {
            None => {}
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => {}
            Some(_) => self.err(format!("{path}/{key}"), format!("must be one of {}", allowed.join(", "))),
        }
    }
}

/// Validates a JSON value as a workflow document. The workflow is returned
/// only when there is no error.
pub fn validate_value(v: &Value) -> (Option<Workflow>, Report) {
    let mut cx = Checker::default();
    let mut zapps = Vec::new();
    if let Some(o) = cx.object(v, "", TOP) {
        match cx.string(o, "name", "", true) {
            Some(n) if !is_plain_name(n) || n.len() > 128 => {
                cx.err("/name", "must be 1-128 letters, digits, '-', '_' or '.'")
            }
            _ => {}
        }
        cx.string(o, "description", "", false);
        if let Some(s) = o.get("schedule").filter(|s| !s.is_null())
            && let Some(so) = cx.object(s, "/schedule", SCHEDULE)
        {
            let cron = cx.string(so, "cron", "/schedule", true);
            let tz = cx.string(so, "time_zone", "/schedule", false).unwrap_or("UTC");
            if let Some(cron) = cron
                && let Err(e) = Spec::parse(cron, tz)
            {
                let at = match e {
                    super::cron::CronError::TimeZone(_) => "/schedule/time_zone",
                    super::cron::CronError::Spec(_) => "/schedule/cron",
                };
                cx.err(at, e.to_string());
            }
            cx.boolean(so, "prohibit_overlap", "/schedule");
            let names: Vec<&str> = CatchUp::ALL.iter().map(|c| c.as_str()).collect();
            cx.choice(so, "catch_up", "/schedule", &names);
        }
        match o.get("triggers") {
            None | Some(Value::Null) => {}
            Some(Value::Array(ts)) => {
                for (i, t) in ts.iter().enumerate() {
                    triggers(&mut cx, t, &format!("/triggers/{i}"));
                }
            }
            Some(v) => cx.err("/triggers", format!("must be an array, not {}", type_name(v))),
        }
        match o.get("steps") {
            None => cx.err("", "missing field `steps`"),
            Some(Value::Array(steps)) => {
                if steps.is_empty() {
                    cx.err("/steps", "a workflow needs at least one step");
                }
                if steps.len() > MAX_STEPS {
                    cx.err("/steps", format!("at most {MAX_STEPS} steps"));
                }
                steps_(&mut cx, steps, &mut zapps);
            }
            Some(v) => cx.err("/steps", format!("must be an array, not {}", type_name(v))),
        }
    }
    let mut report = Report { errors: cx.errors, warnings: cx.warnings };
    if !report.is_valid() {
        return (None, report);
    }
    let mut w: Workflow = match serde_json::from_value(v.clone()) {
        Ok(w) => w,
        Err(e) => {
            report.errors.push(Issue { path: String::new(), message: e.to_string() });
            return (None, report);
        }
    };
    // The ZApp validator's own result, not serde's reading of it.
    for (step, app) in w.steps.iter_mut().zip(zapps) {
        step.zapp = app;
    }
    (Some(w), report)
}

fn steps_(cx: &mut Checker, steps: &[Value], zapps: &mut Vec<crate::zapp::ZApp>) {
    let names: Vec<Option<&str>> = steps.iter().map(|s| s.get("name").and_then(Value::as_str)).collect();
    for (i, s) in steps.iter().enumerate() {
        let path = format!("/steps/{i}");
        let Some(o) = cx.object(s, &path, STEP) else { continue };
        match cx.string(o, "name", &path, true) {
            Some(n) if !is_plain_name(n) || n.len() > 64 => {
                cx.err(format!("{path}/name"), "must be 1-64 letters, digits, '-', '_' or '.'")
            }
            Some(n) if names[..i].contains(&Some(n)) => {
                cx.err(format!("{path}/name"), format!("step `{n}` is defined twice"))
            }
            _ => {}
        }
        match o.get("zapp") {
            None if o.contains_key("shop") => cx.err(
                format!("{path}/shop"),
                "a step from the ZApp shop is filled in by a coordinator: validate it there \
                 (POST /api/v1/workflows/validate, `zoe workflow validate --remote`)",
            ),
            None => cx.err(&path, "missing field `zapp` (or `shop`)"),
            Some(_) if o.contains_key("shop") => cx.err(format!("{path}/shop"), "give `zapp` or `shop`, not both"),
            Some(z) => {
                let (app, report) = validate_zapp(z);
                for mut issue in report.errors {
                    issue.path = format!("{path}/zapp{}", issue.path);
                    cx.errors.push(issue);
                }
                for mut issue in report.warnings {
                    issue.path = format!("{path}/zapp{}", issue.path);
                    cx.warnings.push(issue);
                }
                if let Some(app) = app {
                    zapps.push(app);
                }
            }
        }
        let mut deps: Vec<&str> = Vec::new();
        match o.get("depends_on") {
            None | Some(Value::Null) => {}
            Some(Value::Array(ds)) => {
                for (j, d) in ds.iter().enumerate() {
                    let at = format!("{path}/depends_on/{j}");
                    match d.as_str() {
                        None => cx.err(at, format!("must be a step name, not {}", type_name(d))),
                        Some(d) if Some(d) == names[i] => cx.err(at, "a step cannot depend on itself"),
                        Some(d) if !names.contains(&Some(d)) => cx.err(at, format!("unknown step `{d}`")),
                        Some(d) if deps.contains(&d) => cx.err(at, format!("`{d}` is listed twice")),
                        Some(d) => deps.push(d),
                    }
                }
            }
            Some(v) => cx.err(format!("{path}/depends_on"), format!("must be an array, not {}", type_name(v))),
        }
        let conds: Vec<&str> = Condition::ALL.iter().map(|c| c.as_str()).collect();
        cx.choice(o, "condition", &path, &conds);
        if o.get("condition").is_some() && deps.is_empty() && o.get("condition") != Some(&Value::from("on_success")) {
            cx.err(format!("{path}/condition"), "a condition needs `depends_on`");
        }
        cx.uint(o, "fan_out", &path, 1, MAX_FAN_OUT as u64);
        cx.uint(o, "retries", &path, 0, MAX_RETRIES as u64);
        cx.uint(o, "backoff_s", &path, 0, 86_400);
        cx.uint(o, "timeout_s", &path, 1, 365 * 86_400);
        if let Some(svcs) = o.get("zapp").and_then(|z| z.get("services")).and_then(Value::as_array) {
            templates(cx, &path, svcs, steps, i);
        }
    }
    if cx.errors.is_empty() {
        cycles(cx, steps);
    }
}

fn triggers(cx: &mut Checker, t: &Value, path: &str) {
    let Some(o) = cx.object(t, path, &["execution_end", "volume_size"]) else { return };
    if o.len() != 1 {
        cx.err(path, "a trigger has exactly one kind: `execution_end` or `volume_size`");
        return;
    }
    if let Some(v) = o.get("volume_size") {
        let at = format!("{path}/volume_size");
        if let Some(vo) = cx.object(v, &at, &["volume", "path", "min_bytes"]) {
            match cx.string(vo, "volume", &at, true) {
                Some(n) if !is_plain_name(n) => cx.err(format!("{at}/volume"), "a host volume's name"),
                _ => {}
            }
            if let Some(p) = cx.string(vo, "path", &at, false)
                && !p.is_empty()
                && (!is_plain_name(p) || p == "." || p == "..")
            {
                cx.err(format!("{at}/path"), "an entry at the top of the volume: one name, no `/`");
            }
            if vo.get("min_bytes").is_none() {
                cx.err(&at, "missing field `min_bytes`");
            }
            cx.uint(vo, "min_bytes", &at, 1, u64::MAX);
        }
    }
    if let Some(e) = o.get("execution_end") {
        let at = format!("{path}/execution_end");
        if let Some(eo) = cx.object(e, &at, EXECUTION_END) {
            for key in ["name", "owner"] {
                if let Some(s) = cx.string(eo, key, &at, false)
                    && s.trim().is_empty()
                {
                    cx.err(format!("{at}/{key}"), "must not be empty (leave it out instead)");
                }
            }
            let names: Vec<&str> = EndStatus::ALL.iter().map(|c| c.as_str()).collect();
            cx.choice(eo, "status", &at, &names);
        }
    }
}

/// `{{step.NAME.KEY}}` may name only a step this one comes after.
fn templates(cx: &mut Checker, path: &str, svcs: &[Value], steps: &[Value], i: usize) {
    let before = ancestors(steps, i);
    for (k, svc) in svcs.iter().enumerate() {
        let Some(env) = svc.get("environment").and_then(Value::as_array) else { continue };
        for (m, pair) in env.iter().enumerate() {
            let Some(value) = pair.get(1).and_then(Value::as_str) else { continue };
            let at = format!("{path}/zapp/services/{k}/environment/{m}/1");
            for key in template_keys(value) {
                if OWN_KEYS.contains(&key) {
                    continue;
                }
                let parts: Vec<&str> = key.splitn(3, '.').collect();
                match parts.as_slice() {
                    ["step", name, what] if STEP_KEYS.contains(what) => {
                        if !before.iter().any(|b| b == name) {
                            cx.err(&at, format!("{{{{{key}}}}}: step `{name}` does not come before this one"));
                        }
                    }
                    _ => cx.err(
                        &at,
                        format!(
                            "unknown template {{{{{key}}}}} (known: {}, step.NAME.execution_id, step.NAME.exit_code, \
                             step.NAME.status)",
                            OWN_KEYS.join(", ")
                        ),
                    ),
                }
            }
        }
    }
}

fn deps_of(s: &Value) -> Vec<&str> {
    s.get("depends_on")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn ancestors(steps: &[Value], i: usize) -> Vec<String> {
    let index = |n: &str| steps.iter().position(|s| s.get("name").and_then(Value::as_str) == Some(n));
    let mut seen: Vec<String> = Vec::new();
    let mut todo = vec![i];
    while let Some(j) = todo.pop() {
        for d in deps_of(&steps[j]) {
            if !seen.iter().any(|s| s == d) {
                seen.push(d.to_string());
                if let Some(k) = index(d) {
                    todo.push(k);
                }
            }
        }
    }
    seen
}

fn cycles(cx: &mut Checker, steps: &[Value]) {
    let w = Workflow {
        name: String::new(),
        description: None,
        schedule: None,
        triggers: Vec::new(),
        steps: steps
            .iter()
            .map(|s| super::Step {
                name: s.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                zapp: placeholder_zapp(),
                depends_on: deps_of(s).into_iter().map(String::from).collect(),
                condition: Condition::OnSuccess,
                fan_out: 1,
                retries: 0,
                backoff_s: 0,
                timeout_s: None,
            })
            .collect(),
    };
    if let Err(cycle) = w.topological() {
        let first =
            steps.iter().position(|s| s.get("name").and_then(Value::as_str) == cycle.first().map(|s| s.as_str()));
        cx.err(format!("/steps/{}/depends_on", first.unwrap_or(0)), format!("cycle: {}", cycle.join(" → ")));
    }
}

fn placeholder_zapp() -> crate::zapp::ZApp {
    crate::zapp::ZApp {
        name: String::new(),
        version: 3,
        will_end: true,
        size: 0,
        services: Vec::new(),
        on_eviction: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zapp() -> Value {
        serde_json::from_str(include_str!("../../../examples/zapps/hello-batch.json")).unwrap()
    }

    fn step(name: &str, deps: &[&str]) -> Value {
        json!({"name": name, "zapp": zapp(), "depends_on": deps})
    }

    fn errors(v: Value) -> Vec<(String, String)> {
        let (w, r) = validate_value(&v);
        assert_eq!(w.is_some(), r.errors.is_empty());
        r.errors.into_iter().map(|i| (i.path, i.message)).collect()
    }

    #[test]
    fn the_example_pipeline_is_valid() {
        let v: Value = serde_json::from_str(include_str!("../../../examples/workflows/hello-pipeline.json")).unwrap();
        assert_eq!(errors(v), Vec::<(String, String)>::new());
    }

    #[test]
    fn a_valid_pipeline_parses() {
        let mut last = step("report", &["train", "cleanup"]);
        last["zapp"]["services"][0]["environment"] =
            json!([["TRAINED", "{{step.train.execution_id}}"], ["CODES", "{{step.train.exit_code}} {{run.id}}"]]);
        let v = json!({
            "name": "etl",
            "schedule": {"cron": "@every 30s", "prohibit_overlap": true, "catch_up": "once"},
            "triggers": [{"execution_end": {"name": "import", "owner": "*", "status": "any"}},
                {"volume_size": {"volume": "data", "path": "incoming", "min_bytes": 5_000_000_000u64}}],
            "steps": [
                step("prepare", &[]),
                {"name": "train", "zapp": zapp(), "depends_on": ["prepare"], "fan_out": 4, "retries": 2, "timeout_s": 600},
                {"name": "cleanup", "zapp": zapp(), "depends_on": ["prepare"], "condition": "on_failure"},
                last,
            ]
        });
        assert_eq!(errors(v.clone()), vec![]);
        let (w, _) = validate_value(&v);
        let w = w.unwrap();
        assert_eq!(w.steps[1].fan_out, 4);
        assert_eq!(w.steps[2].condition, Condition::OnFailure);
        assert_eq!(w.schedule.as_ref().unwrap().catch_up, CatchUp::Once);
        let super::super::Trigger::ExecutionEnd(t) = &w.triggers[0] else { panic!() };
        assert!(t.matches("import", "bob", false, "ada"));
        assert!(!t.matches("export", "bob", true, "ada"));
        assert_eq!(w.topological().unwrap().last(), Some(&3));
        assert_eq!(w.ancestors("report").len(), 3);
    }

    #[test]
    fn every_problem_has_its_pointer() {
        let mut bad_env = step("b", &["a"]);
        bad_env["zapp"]["services"][0]["environment"] = json!([["X", "{{step.c.exit_code}} {{nope}}"]]);
        let mut bad_zapp = step("c", &[]);
        bad_zapp["zapp"]["version"] = json!(2);
        let v = json!({
            "name": "bad name",
            "colour": 1,
            "schedule": {"cron": "61 * * * *", "time_zone": "Mars/Olympus"},
            "triggers": [{"execution_end": {"status": "maybe", "owner": ""}}, {"volume_size": {"volume": "d", "path": "a/b"}}],
            "steps": [
                {"name": "a", "zapp": zapp(), "depends_on": ["ghost", "a"], "fan_out": 0, "condition": "sometimes"},
                bad_env,
                bad_zapp,
                {"name": "a", "zapp": zapp()},
            ]
        });
        let e = errors(v);
        let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        for want in [
            "/name",
            "/colour",
            "/schedule/time_zone",
            "/steps/0/depends_on/0",
            "/steps/0/depends_on/1",
            "/steps/0/fan_out",
            "/steps/0/condition",
            "/steps/1/zapp/services/0/environment/0/1",
            "/steps/2/zapp/version",
            "/steps/3/name",
            "/triggers/0/execution_end/status",
            "/triggers/0/execution_end/owner",
            "/triggers/1/volume_size",
            "/triggers/1/volume_size/path",
        ] {
            assert!(paths.contains(&want), "{want} missing from {e:?}");
        }
        assert!(e.iter().any(|(_, m)| m.contains("does not come before")), "{e:?}");
        assert!(e.iter().any(|(_, m)| m.contains("unknown template {{nope}}")), "{e:?}");
    }

    #[test]
    fn cycles_are_refused() {
        let v = json!({"name": "c", "steps": [step("a", &["c"]), step("b", &["a"]), step("c", &["b"])]});
        let e = errors(v);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, "/steps/0/depends_on");
        assert!(e[0].1.contains("cycle: a → c → b → a"), "{e:?}");
    }

    #[test]
    fn template_keys_are_found() {
        assert_eq!(template_keys("x {{a.b}} y {{ c }}{{d"), vec!["a.b", "c"]);
    }
}
