//! Offline checks of manifests against Gantry's CRDs: the same schema,
//! list-type and CEL validation the API server applies on create.

use std::collections::HashMap;

use apiserver::{FieldErrors, SchemaValidator, validate_object_name, validation};
use serde::Deserialize;
use serde_json::Value;

/// Why a manifest could not be checked or was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("document {index}: not valid YAML: {source}")]
    Yaml {
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("document {index}: not a Kubernetes object: {reason}")]
    NotAnObject { index: usize, reason: String },
    #[error("{kind} {name:?} ({api_version}) is not a Gantry kind")]
    UnknownKind {
        api_version: String,
        kind: String,
        name: String,
    },
    #[error("the {kind} {name:?} is invalid: {errors}")]
    Invalid {
        kind: String,
        name: String,
        errors: FieldErrors,
    },
    #[error("the {kind} {name:?} has undeclared fields: {}", fields.join(", "))]
    Undeclared {
        kind: String,
        name: String,
        fields: Vec<String>,
    },
    #[error(transparent)]
    Schema(#[from] validation::Error),
}

/// Every non-empty document of a YAML stream, as JSON values.
///
/// # Errors
/// The first document that is not YAML.
pub fn documents(yaml: &str) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = Value::deserialize(doc).map_err(|source| Error::Yaml { index, source })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// The compiled validators of every Gantry kind, by `apiVersion` and kind.
#[derive(Debug)]
pub struct Catalog {
    validators: HashMap<(String, String), SchemaValidator>,
}

impl Catalog {
    /// Validators for the CRDs this build of Gantry defines.
    ///
    /// # Errors
    /// Only if a generated schema does not compile, which a test rules out.
    pub fn gantry() -> Result<Self, Error> {
        let mut validators = HashMap::new();
        for crd in crds::all() {
            for version in &crd.spec.versions {
                let api_version = format!("{}/{}", crd.spec.group, version.name);
                let validator = SchemaValidator::for_crd(&crd, &version.name)?;
                validators.insert((api_version, crd.spec.names.kind.clone()), validator);
            }
        }
        Ok(Self { validators })
    }

    /// Check one object as the API server would check its creation.
    ///
    /// # Errors
    /// `UnknownKind` for objects of other APIs, `Invalid` with every field
    /// error otherwise.
    pub fn validate(&self, index: usize, object: &Value) -> Result<(), Error> {
        self.check(index, object, false)
    }

    /// [`Self::validate`], refusing undeclared fields too, as the API
    /// server does with `fieldValidation=Strict`.
    ///
    /// # Errors
    /// As [`Self::validate`], and `Undeclared` naming every such field.
    pub fn validate_strictly(&self, index: usize, object: &Value) -> Result<(), Error> {
        self.check(index, object, true)
    }

    fn check(&self, index: usize, object: &Value, strict: bool) -> Result<(), Error> {
        let text = |field: &str| object.get(field).and_then(Value::as_str).map(str::to_owned);
        let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
            return Err(Error::NotAnObject {
                index,
                reason: "apiVersion and kind are required".into(),
            });
        };
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let validator = self
            .validators
            .get(&(api_version.clone(), kind.clone()))
            .ok_or_else(|| Error::UnknownKind {
                api_version,
                kind: kind.clone(),
                name: name.clone(),
            })?;
        let mut pruned = object.clone();
        let undeclared = validator.prune(&mut pruned);
        if strict && !undeclared.is_empty() {
            return Err(Error::Undeclared {
                kind,
                name,
                fields: undeclared,
            });
        }
        let mut errors = validate_object_name(object);
        if let Err(FieldErrors(more)) = validator.validate(object, None) {
            errors.extend(more);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid {
                kind,
                name,
                errors: FieldErrors(errors),
            })
        }
    }
}
