use serde_json::json;

use super::{definition, instance, service};
use crate::service::plan::{Definition, desired::desired};

#[test]
fn replica_wants_desired_count_and_no_instances() {
    for (count, wanted) in [(json!(3), 3), (json!(0), 0), (json!(null), 0)] {
        let svc = service(json!({"desiredCount": count}));
        let instances = super::shared(&[instance("a", &[])]);
        let d = desired(&svc.spec, Definition::Missing, &instances);
        assert!(!d.daemon);
        assert_eq!(d.count, wanted, "desiredCount {count}");
        assert!(d.eligible.is_empty());
    }
}

#[test]
fn daemon_wants_one_task_per_active_connected_instance_that_meets_the_constraints() {
    let mut draining = instance("draining", &[("size", "big")]);
    draining.draining = true;
    let mut gone = instance("gone", &[("size", "big")]);
    gone.connected = false;
    let instances = [
        instance("big-1", &[("size", "big")]),
        draining,
        instance("small", &[("size", "small")]),
        gone,
        instance("big-2", &[("size", "big")]),
    ];
    // The service's constraint and the definition's both apply.
    let svc = service(json!({
        "schedulingStrategy": "DAEMON",
        "placementConstraints": [{"type": "memberOf", "expression": "attribute:size != small"}],
    }));
    let mut def = definition(false);
    def.placement_constraints = serde_json::from_value(
        json!([{"type": "memberOf", "expression": "attribute:size exists"}]),
    )
    .expect("constraints");
    let valid = Definition::Valid {
        revision: 1,
        spec: &def,
    };
    let instances = super::shared(&instances);
    let d = desired(&svc.spec, valid, &instances);
    assert!(d.daemon);
    assert_eq!(d.eligible, ["big-1", "big-2"]);
    assert_eq!(d.count, 2);

    let no_size = super::shared(&[instance("plain", &[]), instance("big", &[("size", "big")])]);
    assert_eq!(desired(&svc.spec, valid, &no_size).eligible, ["big"]);
    // Without a valid definition only the service's constraints count.
    assert_eq!(
        desired(&svc.spec, Definition::Missing, &no_size).eligible,
        ["plain", "big"]
    );
}
