//! Every validation rule, against the example files that the CLI and the
//! cluster tests also use.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use zoe_common::zapp::{ParseError, expand, parse, validate_value};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/zapps")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (file under examples/zapps/invalid, JSON pointer, words in the message)
const INVALID: &[(&str, &str, &str)] = &[
    ("version-mismatch", "/version", "unsupported ZApp format version 4"),
    ("missing-services", "/services", "is required"),
    ("unknown-field", "/priority", "unknown field"),
    ("bad-app-name", "/name", "may only contain"),
    ("negative-size", "/size", "at least 0"),
    ("no-services", "/services", "at least one service"),
    ("no-monitor", "/services", "monitor"),
    ("essential-over-total", "/services/0/essential_count", "must not exceed total_count"),
    ("zero-cores", "/services/0/resources/cores/min", "must be greater than 0"),
    ("sub-millicore-cores", "/services/0/resources/cores/min", "multiple of 0.001"),
    ("cores-min-over-max", "/services/0/resources/cores/min", "must not exceed max"),
    ("memory-too-small", "/services/0/resources/memory/min", "at least 1024"),
    ("memory-min-over-max", "/services/0/resources/memory/min", "must not exceed max"),
    ("memory-sum-overflows", "/services/0/resources/memory/min", "exceeds 1 EiB"),
    ("cores-sum-overflows", "/services/0/resources/cores/min", "core reservation"),
    ("fractional-memory", "/services/0/resources/memory/min", "whole number"),
    ("shm-size-renamed", "/services/0/resources/shm_size", "renamed"),
    ("bad-env-name", "/services/0/environment/0/0", "not a valid variable name"),
    ("duplicate-env-name", "/services/0/environment/1/0", "already set"),
    ("env-not-a-pair", "/services/0/environment/0", "pair of strings"),
    ("unknown-placeholder", "/services/0/environment/0/1", "unknown placeholder `{hostname}`"),
    ("unknown-dns-instance", "/services/0/environment/0/1", "names no instance"),
    ("unbalanced-brace", "/services/0/environment/0/1", "never closed"),
    ("relative-volume-path", "/services/0/volumes/0/path", "absolute"),
    ("volume-missing-read-only", "/services/0/volumes/0/read_only", "is required"),
    ("reserved-volume-name", "/services/0/volumes/0/name", "reserved"),
    ("bad-url-template", "/services/0/ports/0/url_template", "unknown placeholder"),
    ("duplicate-port", "/services/0/ports/1/port_number", "already declared"),
    ("port-out-of-range", "/services/0/ports/0/port_number", "at most 65535"),
    ("bad-protocol", "/services/0/ports/0/protocol", "\"tcp\" or \"udp\""),
    ("bad-image-reference", "/services/0/image", "not a valid image reference"),
    ("empty-command", "/services/0/command", "non-empty"),
    ("missing-command", "/services/0/command", "is required"),
    ("unbalanced-quote-command", "/services/0/command", "unclosed single quote"),
    ("relative-work-dir", "/services/0/work_dir", "absolute"),
    ("duplicate-label", "/services/0/labels/1", "listed twice"),
    ("service-name-too-long", "/services/0/name", "3 to 16 characters"),
    ("duplicate-service-name", "/services/1/name", "already defined"),
    ("instance-name-clash", "/services/1/name", "worker10"),
];

#[test]
fn every_invalid_example_fails_at_its_pointer() {
    for (file, pointer, words) in INVALID {
        let path = examples().join("invalid").join(format!("{file}.json"));
        match parse(&read(&path)) {
            Ok(_) => panic!("{file}: accepted"),
            Err(ParseError::Syntax { .. }) => panic!("{file}: not even JSON"),
            Err(ParseError::Invalid(report)) => {
                assert!(
                    report.errors.iter().any(|e| e.path == *pointer && e.message.contains(words)),
                    "{file}: expected `{pointer}: …{words}…`, got {:#?}",
                    report.errors
                );
            }
        }
    }
}

#[test]
fn the_invalid_folder_has_no_untested_file() {
    let mut on_disk: Vec<String> = std::fs::read_dir(examples().join("invalid"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .filter(|n| n != "malformed-json")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = INVALID.iter().map(|(f, _, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn malformed_json_reports_line_and_column() {
    let text = read(&examples().join("invalid/malformed-json.json"));
    match parse(&text) {
        Err(ParseError::Syntax { line, column, .. }) => assert_eq!((line, column), (5, 18)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn valid_examples_pass_and_round_trip() {
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = read(&path);
        let (app, warnings) = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(warnings.is_empty(), "{}: {warnings:?}", path.display());
        // Serialising back gives an equivalent document: the same JSON value,
        // numbers compared by value (0.1 cores stays 0.1).
        let original: Value = serde_json::from_str(&text).unwrap();
        let back = serde_json::to_value(&app).unwrap();
        assert_json_equivalent(&original, &back, &path.display().to_string());
        // And the typed form reads back what it wrote.
        let again: zoe_common::zapp::ZApp = serde_json::from_value(back).unwrap();
        assert_eq!(again, app);
        assert!(!expand(&app).is_empty());
    }
}

fn assert_json_equivalent(a: &Value, b: &Value, ctx: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => assert_eq!(x.as_f64(), y.as_f64(), "{ctx}"),
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{ctx}");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                assert_json_equivalent(p, q, &format!("{ctx}/{i}"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut kx: Vec<_> = x.keys().collect();
            let mut ky: Vec<_> = y.keys().collect();
            kx.sort();
            ky.sort();
            assert_eq!(kx, ky, "{ctx}");
            for (k, v) in x {
                assert_json_equivalent(v, &y[k], &format!("{ctx}/{k}"));
            }
        }
        _ => assert_eq!(a, b, "{ctx}"),
    }
}

#[test]
fn reports_every_problem_at_once() {
    let v = json!({
        "name": "x",
        "version": 3,
        "will_end": "yes",
        "size": 1,
        "services": [{
            "name": "s", "image": "", "monitor": false, "essential_count": 0, "total_count": 1,
            "startup_order": 0.5, "command": null, "ports": [], "environment": [], "volumes": [],
            "resources": {"memory": {"min": null, "max": null}, "cores": {"min": -1, "max": null}}
        }]
    });
    let (app, report) = validate_value(&v);
    assert!(app.is_none());
    let paths: Vec<&str> = report.errors.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "/name",
        "/will_end",
        "/services/0/name",
        "/services/0/image",
        "/services/0/essential_count",
        "/services/0/startup_order",
        "/services/0/resources/cores/min",
        "/services",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
}

#[test]
fn untagged_image_is_a_warning_not_an_error() {
    let mut v: Value = serde_json::from_str(&read(&examples().join("hello-batch.json"))).unwrap();
    v["services"][0]["image"] = json!("busybox");
    let (app, report) = validate_value(&v);
    assert!(app.is_some());
    assert_eq!(report.warnings.len(), 1);
    assert_eq!(report.warnings[0].path, "/services/0/image");
    assert!(report.warnings[0].message.contains("busybox:latest"));
}

#[test]
fn validation_does_not_rewrite_values() {
    // Zoe overwrote memory.max and filled cores.min; zoe keeps the user's values.
    let mut v: Value = serde_json::from_str(&read(&examples().join("hello-batch.json"))).unwrap();
    v["services"][0]["resources"] =
        json!({"memory": {"min": 1048576, "max": null}, "cores": {"min": null, "max": null}});
    let (app, _) = validate_value(&v);
    let back = serde_json::to_value(app.unwrap()).unwrap();
    assert_eq!(back["services"][0]["resources"], v["services"][0]["resources"]);
}

#[test]
fn integral_floats_count_as_integers_like_zoe() {
    let mut v: Value = serde_json::from_str(&read(&examples().join("hello-batch.json"))).unwrap();
    v["version"] = json!(3.0);
    v["services"][0]["total_count"] = json!(1.0);
    let (app, report) = validate_value(&v);
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(app.unwrap().services[0].total_count, 1);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
            "[a-z{}#_ ]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("name".to_string()),
                        Just("version".to_string()),
                        Just("services".to_string()),
                        Just("resources".to_string()),
                        Just("cores".to_string()),
                        Just("min".to_string()),
                        Just("environment".to_string()),
                        "[a-z_]{1,8}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Arbitrary JSON never panics the validator and always gets a verdict.
        #[test]
        fn arbitrary_json_gets_a_verdict(v in arb_json()) {
            let (app, report) = validate_value(&v);
            prop_assert_eq!(app.is_some(), report.errors.is_empty());
        }

        /// Mutating one field of a valid ZApp still gives a verdict, and any
        /// error names a pointer that exists in the document or its parent.
        #[test]
        fn mutated_valid_zapp_gets_a_verdict(field in 0usize..12, value in arb_json()) {
            let mut v: Value = serde_json::from_str(include_str!("../../examples/zapps/spark-like.json")).unwrap();
            let targets = ["/name", "/version", "/size", "/services/0/name", "/services/0/resources",
                "/services/0/resources/cores/min", "/services/1/environment", "/services/1/environment/0",
                "/services/0/ports/0", "/services/0/ports/0/url_template", "/services/1/total_count", "/services"];
            if let Some(slot) = v.pointer_mut(targets[field]) { *slot = value; }
            let (app, report) = validate_value(&v);
            prop_assert_eq!(app.is_some(), report.errors.is_empty());
            for e in &report.errors {
                let parent = e.path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                prop_assert!(v.pointer(&e.path).is_some() || v.pointer(parent).is_some() || e.path.is_empty(), "{}", e);
            }
        }

        /// Raw text: parse never panics.
        #[test]
        fn arbitrary_text_gets_a_verdict(s in ".{0,200}") {
            let _ = parse(&s);
        }
    }
}

/// `on_eviction` is optional; a Zoe document without it is unchanged by a
/// round trip; a bad value is one error at its pointer.
#[test]
fn on_eviction_is_an_optional_policy() {
    use zoe_common::zapp::OnEviction;
    let base: Value = serde_json::from_str(&read(&examples().join("hello-batch.json"))).unwrap();
    // (value, will_end, policy when valid, error words, warning)
    let table: &[(Option<Value>, bool, Option<OnEviction>, Option<&str>, bool)] = &[
        (None, true, None, None, false),
        (Some(json!("end")), true, Some(OnEviction::End), None, false),
        (Some(json!("requeue")), true, Some(OnEviction::Requeue), None, false),
        (Some(json!("requeue")), false, Some(OnEviction::Requeue), None, true),
        (Some(json!("restart")), true, None, Some("must be `end` or `requeue`, not `restart`"), false),
        (Some(json!(true)), true, None, Some("must be `end` or `requeue`, not a boolean"), false),
        (Some(Value::Null), true, None, Some("not null"), false),
    ];
    for (i, (value, will_end, policy, error, warning)) in table.iter().enumerate() {
        let mut v = base.clone();
        v["will_end"] = json!(will_end);
        if let Some(x) = value {
            v["on_eviction"] = x.clone();
        }
        let (app, report) = validate_value(&v);
        match error {
            Some(words) => {
                assert!(app.is_none(), "row {i}");
                assert_eq!(report.errors.len(), 1, "row {i}: {report:?}");
                assert_eq!(report.errors[0].path, "/on_eviction", "row {i}");
                assert!(report.errors[0].message.contains(words), "row {i}: {}", report.errors[0].message);
            }
            None => {
                let app = app.unwrap_or_else(|| panic!("row {i}: {report:?}"));
                assert_eq!(app.on_eviction, *policy, "row {i}");
                assert_eq!(report.warnings.iter().any(|w| w.path == "/on_eviction"), *warning, "row {i}");
                // Written back exactly as given: absent stays absent.
                assert_eq!(serde_json::to_value(&app).unwrap().get("on_eviction"), value.as_ref(), "row {i}");
            }
        }
    }
}
