//! `gantry.dev/v1alpha1`: the kinds of the ECS model.

mod auto_scaling;
mod common;
mod container_instance;
mod container_settings;
mod load_balancer;
mod scheduled_task;
mod service;
mod task;
mod task_definition;
mod task_definition_revision;

pub use auto_scaling::*;
pub use common::*;
pub use container_instance::*;
pub use container_settings::*;
pub use load_balancer::*;
pub use scheduled_task::*;
pub use service::*;
pub use task::*;
pub use task_definition::*;
pub use task_definition_revision::*;
