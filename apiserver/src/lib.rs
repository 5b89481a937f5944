//! Gantry's embedded control plane: a single-node server that speaks the
//! Kubernetes API, so real `kubectl`, `helm` and kube-rs work against it
//! unchanged (see docs/architecture.md, "The embedded control plane").
//!
//! Its layers import only downward:
//! - [`server`]: TLS, authentication, discovery and OpenAPI, then the HTTP
//!   layer (`server::http`: requests, lists, watches, responses) over the
//!   object layer (`server::objects`: create, update, patch, delete,
//!   admission, garbage collection);
//! - [`validation`]: the checks a real API server applies to custom
//!   resources (schema defaults, OpenAPI value checks, list types, CEL);
//! - [`storage`]: the durable, revisioned object store with
//!   compare-and-swap writes, group commit and resumable watches.

pub mod agent_token;
pub mod private;
pub mod server;
pub mod service_account_token;
pub mod storage;
pub mod validation;

pub use validation::{
    FieldError, FieldErrorKind, FieldErrors, SchemaValidator, validate_object_name,
};
