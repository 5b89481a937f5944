//! Agent tokens: one bearer token per agent, each bound to one cluster
//! (namespace) and one ContainerInstance name. A token is kept as a
//! Secret in `kube-system`, as kubeadm keeps its bootstrap tokens: the
//! token is `<id>.<secret>`, the Secret is named after the id, so the
//! server finds it with one lookup and compares only the secret part.
//! Listing and revoking tokens is listing and deleting those Secrets,
//! which only an identity that may touch Secrets can do (see
//! `server/access.rs` for what an agent's token may do).

use base64::Engine;
use rand::RngExt;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

/// Where agent tokens are kept.
pub const NAMESPACE: &str = "kube-system";
/// The `type` of an agent token's Secret.
pub const SECRET_TYPE: &str = "gantry.dev/agent-token";
/// The name of an agent token's Secret, before its id.
pub const SECRET_PREFIX: &str = "gantry-agent-token-";

const ID_LENGTH: usize = 6;
const SECRET_LENGTH: usize = 32;
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A token: its public id and its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentToken {
    pub id: String,
    secret: String,
}

/// What a token lets its holder act as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The cluster (namespace) the agent belongs to.
    pub cluster: String,
    /// The ContainerInstance (and Lease) name it may write.
    pub instance: String,
}

fn random(length: usize) -> String {
    let mut rng = rand::rng();
    (0..length)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn well_formed(part: &str, length: usize) -> bool {
    part.len() == length && part.bytes().all(|b| ALPHABET.contains(&b))
}

impl AgentToken {
    /// A new random token.
    #[must_use]
    pub fn generate() -> Self {
        Self {
            id: random(ID_LENGTH),
            secret: random(SECRET_LENGTH),
        }
    }

    /// A bearer token of this shape, or `None` (the admin, controller and
    /// read-only tokens are not).
    #[must_use]
    pub fn parse(bearer: &str) -> Option<Self> {
        let (id, secret) = bearer.split_once('.')?;
        (well_formed(id, ID_LENGTH) && well_formed(secret, SECRET_LENGTH)).then(|| Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// What a client sends as its bearer token.
    #[must_use]
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The name of the Secret that keeps this token.
    #[must_use]
    pub fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.id)
    }

    /// The Secret that keeps this token, granting `grant`.
    #[must_use]
    pub fn to_secret(&self, grant: &Grant) -> Value {
        let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.secret_name(),
                "namespace": NAMESPACE,
            },
            "type": SECRET_TYPE,
            "data": {
                "token-id": encode(&self.id),
                "token-secret": encode(&self.secret),
                "cluster": encode(&grant.cluster),
                "instance": encode(&grant.instance),
            },
        })
    }

    /// What the stored `secret` grants this token: `None` unless it is an
    /// agent token's Secret holding this very secret (compared in
    /// constant time).
    #[must_use]
    pub fn granted_by(&self, secret: &Value) -> Option<Grant> {
        let known = data(secret, "token-secret")?;
        if !bool::from(known.as_bytes().ct_eq(self.secret.as_bytes())) {
            return None;
        }
        recorded_grant(secret)
    }
}

/// A field of an agent token's Secret, decoded; `None` for any other
/// Secret.
fn data(secret: &Value, name: &str) -> Option<String> {
    if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return None;
    }
    let encoded = secret.pointer(&format!("/data/{name}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// The grant a stored agent-token Secret records, whoever holds it (for
/// listing tokens).
#[must_use]
pub fn recorded_grant(secret: &Value) -> Option<Grant> {
    let grant = Grant {
        cluster: data(secret, "cluster")?,
        instance: data(secret, "instance")?,
    };
    (!grant.cluster.is_empty() && !grant.instance.is_empty()).then_some(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            cluster: "prod".into(),
            instance: "host-a".into(),
        }
    }

    #[test]
    fn a_token_round_trips_through_its_bearer_form() {
        let token = AgentToken::generate();
        assert_eq!(AgentToken::parse(&token.bearer()), Some(token.clone()));
        assert!(token.secret_name().starts_with(SECRET_PREFIX));
        for bad in [
            "",
            "abcdef",
            "abcdef.",
            "ABCDEF.0123456789abcdef0123456789abcdef",
            "abcdef.0123456789abcdef0123456789abcde",
            "abcdef.0123456789abcdef0123456789abcdef0",
            "abc.def.0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(AgentToken::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_the_secret_that_keeps_a_token_grants_it() {
        let token = AgentToken::generate();
        let secret = token.to_secret(&grant());
        assert_eq!(token.granted_by(&secret), Some(grant()));
        assert_eq!(recorded_grant(&secret), Some(grant()));

        let other = AgentToken {
            id: token.id.clone(),
            secret: random(SECRET_LENGTH),
        };
        assert_eq!(other.granted_by(&secret), None, "a wrong secret");
        let mut opaque = secret.clone();
        opaque["type"] = json!("Opaque");
        assert_eq!(token.granted_by(&opaque), None, "another type of Secret");
        let mut unbound = secret;
        unbound["data"]["instance"] = json!("");
        assert_eq!(token.granted_by(&unbound), None, "no instance");
    }
}
