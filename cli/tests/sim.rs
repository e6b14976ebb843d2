//! `zoe sim` as a user runs it: runs side by side, JSON, the SVG plot, and
//! a clear refusal of a policy it does not know.

mod common;

use common::zoe;

#[test]
fn policies_and_styles_run_side_by_side_with_json_and_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("cdf.svg");
    let out = zoe(&[
        "sim",
        "--applications",
        "200",
        "--policy",
        "fifo,size",
        "--style",
        "flexible,rigid",
        "--json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    let names: Vec<String> = runs.iter().map(|r| format!("{} {}", r["policy"], r["style"])).collect();
    assert_eq!(names, ["\"fifo\" \"flexible\"", "\"fifo\" \"rigid\"", "\"size\" \"flexible\"", "\"size\" \"rigid\""]);
    for r in runs {
        for c in r["classes"].as_array().unwrap() {
            assert_eq!(c["done"], c["applications"], "{c}");
            assert!(c["slowdown_p50"].as_f64().unwrap() >= 1.0 - 1e-9, "turnaround is never below the work: {c}");
        }
    }
    assert_eq!(v["parameters"]["seed"], 1);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg"));
    assert!(plot.contains("rigid size (elastic)"), "one line per run and class");

    // Every run carries its timeline: allocation and queue over time.
    let t = &runs[0]["timeline"];
    assert_eq!(t["hours"].as_array().unwrap().len(), 200);
    assert!(t["cpu_allocated"].as_array().unwrap().iter().all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())));

    // The table: one row per run and class.
    let out = zoe(&["sim", "--applications", "100", "--style", "flexible,rigid"]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().nth(1).unwrap().contains("SLOW P95"));
    assert_eq!(table.lines().filter(|l| l.starts_with("fifo")).count(), 4, "{table}");
    assert!(table.starts_with("# 100 applications, 25 nodes"), "parameters with every result: {table}");
}

#[test]
fn new_policies_and_the_greedy_style_run_with_time_plots() {
    let dir = tempfile::tempdir().unwrap();
    let (alloc, queue) = (dir.path().join("alloc.svg"), dir.path().join("queue.svg"));
    let out = zoe(&[
        "sim",
        "--applications",
        "150",
        "--policy",
        "size+preempt,fairshare,dynsize+preempt+reserve",
        "--style",
        "flexible,greedy",
        "--allocation-svg",
        alloc.to_str().unwrap(),
        "--queue-svg",
        queue.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().any(|l| l.starts_with("dynsize+preempt+reserve greedy")), "{table}");
    let plot = std::fs::read_to_string(&alloc).unwrap();
    assert_eq!(plot.matches("<polyline").count(), 6, "one line per run");
    assert!(std::fs::read_to_string(&queue).unwrap().contains("applications queued"));
    let out = zoe(&["sim", "--policy", "size+steal"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown +steal"));
}

#[test]
fn a_trace_replaces_the_generator() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.csv");
    // One node: A (4 + 28 elastic, 100 s) and C (rigid, 8, 50 s) at 0.
    std::fs::write(&trace, "arrival_s,essential,total,runtime_s,class\n0,8,8,50,rigid\n0,4,32,100,elastic\n").unwrap();
    let out = zoe(&["sim", "--trace", trace.to_str().unwrap(), "--nodes", "1", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["parameters"]["workload"].as_str().unwrap().contains("(2 applications)"));
    let elastic = &v["runs"][0]["classes"][0];
    assert_eq!((elastic["class"].as_str(), elastic["turnaround_s_p50"].as_f64()), (Some("elastic"), Some(112.5)));
    std::fs::write(&trace, "0,9,8,50\n").unwrap();
    let out = zoe(&["sim", "--trace", trace.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("trace line 1"));
}

#[test]
fn an_unknown_policy_is_refused_before_anything_runs() {
    let out = zoe(&["sim", "--policy", "fifo,lifo"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--policy \"lifo\"") && !err.contains("simulating"), "{err}");
}
