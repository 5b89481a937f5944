//! Gantry's embedded control plane: a single-node server that speaks the
//! Kubernetes API, so real `kubectl`, `helm` and kube-rs work against it
//! unchanged (see DESIGN.md, "Embedded control plane").
//!
//! Today this crate holds the piece every other one already needs: the
//! validation a real API server applies to custom resources
//! ([`validation`]). Storage, the REST surface, watch and discovery come
//! with the control-plane issue.

pub mod validation;

pub use validation::{
    FieldError, FieldErrorKind, FieldErrors, SchemaValidator, validate_object_name,
};
