//! The no-over-commit invariant (docs/architecture.md, "Invariants") as
//! the tests check it on stored instances.

use std::collections::HashSet;

use crds::v1alpha1::ContainerInstance;
use kube::ResourceExt;

/// The no-over-commit invariant (docs/architecture.md, "Invariants") on
/// one version of an instance.
pub fn check_instance(ci: &ContainerInstance) -> Result<(), String> {
    let registered = &ci.spec.registered_resources;
    let allocations = ci.status.iter().flat_map(|s| &s.allocations);
    let (mut cpu, mut memory) = (0u32, 0u32);
    let mut ports = HashSet::new();
    let mut tasks = HashSet::new();
    for a in allocations {
        cpu += a.cpu;
        memory += a.memory;
        for p in &a.ports {
            if !ports.insert(*p) || registered.ports.contains(p) {
                return Err(format!("port {p} allocated twice on {}", ci.name_any()));
            }
        }
        if !tasks.insert(a.task_uid.clone()) {
            return Err(format!(
                "task {} allocated twice on {}",
                a.task,
                ci.name_any()
            ));
        }
    }
    if cpu > registered.cpu || memory > registered.memory {
        return Err(format!(
            "{} over-committed at {:?}: cpu {cpu}/{}, memory {memory}/{}",
            ci.name_any(),
            ci.resource_version(),
            registered.cpu,
            registered.memory
        ));
    }
    Ok(())
}
