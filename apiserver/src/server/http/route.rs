//! From a path to what it names: the resource (by group, version and
//! plural), the namespace, the object's name and the subresource.

use std::sync::Arc;

use super::view::View;
use crate::server::{app::App, objects::Target, registry::Resource, status::ApiError};

/// What a path names.
pub(crate) struct Route {
    /// The resource and namespace written to.
    pub(crate) target: Target,
    /// The object, for paths below the collection.
    pub(super) name: Option<String>,
    /// `status` or `scale`, for paths below the object.
    pub(super) subresource: Option<String>,
    /// The shape objects are read and written in, when the target's
    /// resource is stored as another's.
    pub(super) view: View,
}

impl Route {
    fn new(
        resource: Arc<Resource>,
        namespace: Option<&str>,
        name: Option<&str>,
        subresource: Option<&str>,
    ) -> Self {
        Self {
            target: Target::new(resource, namespace),
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
            view: View::Stored,
        }
    }
}

/// Resolve `/api/v1/...` or `/apis/{g}/{v}/...` (the part after the
/// version) to a route; a resource stored as another targets that one,
/// through its view.
pub(crate) fn resolve(
    app: &App,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Route, ApiError> {
    let mut route = resolve_path(app, group, version, rest)?;
    // A subresource the resource does not have is not found, as a kind
    // that is not served is (`namespaces/x/pods` is no Namespace's).
    match route.subresource.as_deref() {
        None => {}
        Some("status") if route.target.resource.status => {}
        Some("scale") if route.target.resource.scale.is_some() => {}
        Some(_) => return Err(ApiError::NoRoute),
    }
    if let (view, Some((group, version, plural))) = View::of(&route.target.resource) {
        route.target.resource = app
            .registry
            .get(group, version, plural)
            .ok_or(ApiError::NoRoute)?;
        route.view = view;
    }
    Ok(route)
}

fn resolve_path(app: &App, group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let find = |plural: &str| {
        app.registry
            .get(group, version, plural)
            .ok_or(ApiError::NoRoute)
    };
    let route = Route::new;
    // `namespaces/{ns}/{plural}/...` when {plural} is namespaced.
    if let ["namespaces", ns, plural, more @ ..] = rest
        && let Some(resource) = app
            .registry
            .get(group, version, plural)
            .filter(|r| r.namespaced)
    {
        return match more {
            [] => Ok(route(resource, Some(ns), None, None)),
            [name] => Ok(route(resource, Some(ns), Some(name), None)),
            [name, sub] => Ok(route(resource, Some(ns), Some(name), Some(sub))),
            _ => Err(ApiError::NoRoute),
        };
    }
    match rest {
        [plural] => Ok(route(find(plural)?, None, None, None)),
        [plural, name] => {
            let resource = find(plural)?;
            if resource.namespaced {
                return Err(ApiError::NoRoute);
            }
            Ok(route(resource, None, Some(name), None))
        }
        [plural, name, sub] => {
            let resource = find(plural)?;
            if resource.namespaced {
                return Err(ApiError::NoRoute);
            }
            Ok(route(resource, None, Some(name), Some(sub)))
        }
        _ => Err(ApiError::NoRoute),
    }
}
