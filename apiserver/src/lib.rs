//! Gantry's embedded control plane: a single-node server that speaks the
//! Kubernetes API, so real `kubectl`, `helm` and kube-rs work against it
//! unchanged (see DESIGN.md, "Embedded control plane").
//!
//! Built so far:
//! - [`validation`]: the checks a real API server applies to custom
//!   resources (schema defaults, OpenAPI value checks, list types, CEL);
//! - [`storage`]: the durable, revisioned object store with
//!   compare-and-swap writes, group commit and resumable watches.
//!
//! Still to come: the REST surface, discovery, OpenAPI, TLS and
//! authentication.

pub mod server;
pub mod storage;
pub mod validation;

pub use validation::{
    FieldError, FieldErrorKind, FieldErrors, SchemaValidator, validate_object_name,
};
