//! Tables and values for people; `--json` prints the API's JSON instead.

use serde_json::Value;

/// Prints aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// A JSON value as a table cell.
/// The elements of a JSON array (none when `v` is not one).
pub fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time(v: &Value) -> String {
    let Some(ms) = v.as_u64() else { return "-".into() };
    zoe_common::resources::utc_time(ms)
}

pub fn bytes(v: &Value) -> String {
    v.as_u64().map(zoe_common::resources::human_bytes).unwrap_or_else(|| "-".into())
}

pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("a JSON value serialises"));
}

/// `key: value` lines for one object, in the given order.
pub fn fields(v: &Value, keys: &[(&str, &str)]) {
    let w = keys.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, key) in keys {
        let val = &v[*key];
        let s = if key.starts_with("time") || key.ends_with("_at") || key.contains("registration") {
            time(val)
        } else if *key == "memory" || key.ends_with("_memory") {
            bytes(val)
        } else {
            cell(val)
        };
        println!("{label:<w$}  {s}");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn times_are_utc() {
        assert_eq!(super::time(&json!(0)), "1970-01-01 00:00:00");
        assert_eq!(super::time(&json!(1_700_000_000_000u64)), "2023-11-14 22:13:20");
        assert_eq!(super::time(&json!(null)), "-");
    }
}
