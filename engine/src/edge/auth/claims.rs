//! Which claims of a verified token grant what: roles, namespaces, roles per namespace.

use super::{Principal, Role, Unauthenticated};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Which claims hold a token's grants. A name is a top-level claim, or a dotted path into
/// nested objects (`realm_access.roles`); a top-level claim whose name has dots
/// (`https://example.com/roles`, as Auth0 wants) is found first. A grant is a list of
/// strings, or one string of space-separated names.
///
/// Role names other than client, worker, operator and admin are ignored, in every token:
/// identity providers put many roles in the same claim (`offline_access`,
/// `uma_authorization`), and ignoring a name can only grant less. A token must still grant
/// one known role somewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimMapping {
    /// Roles held in every namespace of `namespaces` (default `roles`).
    pub roles: String,
    /// Namespaces those roles apply to, `*` for all (default `namespaces`). A token without
    /// this claim holds them in no namespace.
    pub namespaces: String,
    /// An object of roles per namespace, `{"shop-eu": ["operator"], "*": ["client"]}`
    /// (default: none).
    pub namespace_roles: Option<String>,
}

impl ClaimMapping {
    /// Refuses a claim name that can never match (empty, or an empty step in a path).
    pub(super) fn check(&self) -> Result<(), String> {
        let names = [
            ("roles", Some(&self.roles)),
            ("namespaces", Some(&self.namespaces)),
            ("namespace-roles", self.namespace_roles.as_ref()),
        ];
        for (what, name) in names {
            if let Some(p) = name
                && (p.is_empty() || (p.split('.').any(str::is_empty) && !p.contains("://")))
            {
                return Err(format!(
                    "the {what} claim '{p}' is not a claim name or a dotted path"
                ));
            }
        }
        Ok(())
    }
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            roles: "roles".into(),
            namespaces: "namespaces".into(),
            namespace_roles: None,
        }
    }
}

/// The value at `path`: the top-level claim of that name, else the dotted path.
fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for part in parts {
        v = v.as_object()?.get(part)?;
    }
    Some(v)
}

/// A list of names: an array of strings, or one string of space-separated names.
fn names(v: &Value, what: &str) -> Result<Vec<String>, Unauthenticated> {
    let malformed = || Unauthenticated::Invalid(format!("claim '{what}' is not a list of names"));
    match v {
        Value::String(s) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(malformed))
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(malformed()),
    }
}

/// The known roles among `names`; other names are an identity provider's own.
fn known_roles(names: Vec<String>) -> Vec<Role> {
    let mut roles = Vec::new();
    for n in names {
        if let Ok(r) = n.parse::<Role>()
            && !roles.contains(&r)
        {
            roles.push(r);
        }
    }
    roles
}

/// The grants of verified claims, through the claim mapping `m`.
pub(super) fn principal(
    m: &ClaimMapping,
    claims: Map<String, Value>,
) -> Result<Principal, Unauthenticated> {
    let roles = match claim(&claims, &m.roles) {
        Some(v) => known_roles(names(v, &m.roles)?),
        None => Vec::new(),
    };
    let namespaces = match claim(&claims, &m.namespaces) {
        Some(v) => names(v, &m.namespaces)?,
        None => Vec::new(),
    };
    let mut namespace_roles = HashMap::new();
    if let Some(path) = &m.namespace_roles
        && let Some(v) = claim(&claims, path)
    {
        let per_ns = v.as_object().ok_or_else(|| {
            Unauthenticated::Invalid(format!(
                "claim '{path}' is not an object of roles per namespace"
            ))
        })?;
        for (ns, v) in per_ns {
            let r = known_roles(names(v, path)?);
            if !r.is_empty() {
                namespace_roles.insert(ns.clone(), r);
            }
        }
    }
    if roles.is_empty() && namespace_roles.is_empty() {
        let mut looked = format!("'{}'", m.roles);
        if let Some(p) = &m.namespace_roles {
            looked.push_str(&format!(" and '{p}'"));
        }
        return Err(Unauthenticated::Invalid(format!(
            "grants no role (client, worker, operator or admin in claim {looked})"
        )));
    }
    let all = namespaces.iter().any(|n| n == "*");
    Ok(Principal {
        subject: claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        roles,
        namespaces: (!all).then_some(namespaces),
        namespace_roles,
    })
}
