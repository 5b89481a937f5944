//! The object layer: what creating, updating, patching and deleting an
//! object means, whoever asks. Identity checks, admission, server-owned
//! metadata, resourceVersion preconditions, finalizers and garbage
//! collection live here, apart from HTTP, so that the garbage collector
//! can delete and rewrite objects without a request, and so that the HTTP
//! layer (`super::http`) depends on this one, never the reverse. This
//! file only names what the rest of the server may call.

mod admission;
mod builtin;
mod create;
mod delete;
pub(crate) mod expiry;
pub(crate) mod gc;
pub(crate) mod meta;
mod patch;
mod strategic;
mod target;
mod update;
mod workload_defaults;

pub(crate) use create::create;
pub(crate) use delete::Propagation;
pub(crate) use gc::delete;
pub(crate) use patch::{ApplyRequest, Written, patch, rescale, server_side_apply};
pub(crate) use target::{FieldValidation, Target};
pub(crate) use update::update;
