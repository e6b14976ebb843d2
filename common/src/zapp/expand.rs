//! Expansion of service groups into instances, as Zoe digests a submission:
//! group `worker` with `total_count` 3 and `essential_count` 1 gives
//! `worker0` (essential), `worker1` and `worker2` (elastic).

use super::ZApp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Index of the group in `ZApp::services`.
    pub group: usize,
    /// Index of the instance inside its group.
    pub index: u32,
    /// `<group name><index>`.
    pub name: String,
    pub essential: bool,
    pub startup_order: i64,
}

/// All instances, ordered by `startup_order`, then group, then index: the
/// order in which they are started.
pub fn expand(app: &ZApp) -> Vec<Instance> {
    let mut out: Vec<Instance> = app
        .services
        .iter()
        .enumerate()
        .flat_map(|(g, s)| {
            (0..s.total_count).map(move |i| Instance {
                group: g,
                index: i,
                name: format!("{}{}", s.name, i),
                essential: i < s.essential_count,
                startup_order: s.startup_order,
            })
        })
        .collect();
    out.sort_by_key(|i| (i.startup_order, i.group, i.index));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zapp::parse;

    #[test]
    fn expands_in_startup_order() {
        let app = parse(include_str!("../../../examples/zapps/spark-like.json")).unwrap().0;
        let inst = expand(&app);
        let names: Vec<_> = inst.iter().map(|i| (i.name.as_str(), i.essential)).collect();
        assert_eq!(
            names,
            [
                ("head0", true),
                ("worker0", true),
                ("worker1", true),
                ("worker2", false),
                ("worker3", false),
                ("worker4", false)
            ]
        );
    }
}
