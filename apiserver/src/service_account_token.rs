//! Service-account tokens, as a TokenRequest (`kubectl create token SA`)
//! issues them: bound to one ServiceAccount (its namespace, name and uid)
//! and an expiry, and signed with the server's key
//! (`pki/service-account.key`), so the server keeps nothing per token. A
//! token stops working when it expires or when its ServiceAccount is
//! deleted (a new one of the same name has another uid), as a bound
//! token does on kube-apiserver. What it may do is what RBAC grants its
//! ServiceAccount (`server/rbac.rs`).
//!
//! A token is `gsa.<claims>.<signature>`: the claims as base64url JSON,
//! the signature an HMAC-SHA256 of `gsa.<claims>` (`ring`).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "gsa";

/// kube-apiserver's bounds on `expirationSeconds`: ten minutes to (here)
/// a day; one hour when not asked.
pub const MIN_SECONDS: i64 = 600;
pub const MAX_SECONDS: i64 = 24 * 60 * 60;
pub const DEFAULT_SECONDS: i64 = 60 * 60;

/// Whom a token stands for, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "ns")]
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Unix seconds.
    #[serde(rename = "exp")]
    pub expires: i64,
}

/// What the username of a ServiceAccount starts with; then
/// `NAMESPACE:NAME`.
pub const USERNAME_PREFIX: &str = "system:serviceaccount:";

/// The groups Kubernetes gives the ServiceAccounts of `namespace`.
#[must_use]
pub fn groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".to_owned(),
    ]
}

impl Claims {
    /// The username Kubernetes gives a ServiceAccount.
    #[must_use]
    pub fn username(&self) -> String {
        format!("{USERNAME_PREFIX}{}:{}", self.namespace, self.name)
    }

    /// Its groups, as Kubernetes gives them.
    #[must_use]
    pub fn groups(&self) -> Vec<String> {
        groups(&self.namespace)
    }
}

fn signature(key: &[u8], signed: &str) -> ring::hmac::Tag {
    ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        signed.as_bytes(),
    )
}

/// A token for `claims`, signed with `key`.
#[must_use]
pub fn issue(key: &[u8], claims: &Claims) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signed = format!("{PREFIX}.{payload}");
    let tag = URL_SAFE_NO_PAD.encode(signature(key, &signed));
    format!("{signed}.{tag}")
}

/// The claims of a token signed with `key` and not expired at `now`
/// (Unix seconds); `None` for anything else. The signature is checked in
/// constant time, before the claims are read.
#[must_use]
pub fn verify(key: &[u8], token: &str, now: i64) -> Option<Claims> {
    let (signed, tag) = token.rsplit_once('.')?;
    let payload = signed.strip_prefix(PREFIX)?.strip_prefix('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&key, signed.as_bytes(), &tag).ok()?;
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    (claims.expires > now).then_some(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires: i64) -> Claims {
        Claims {
            namespace: "ci".into(),
            name: "deployer".into(),
            uid: "u-1".into(),
            expires,
        }
    }

    #[test]
    fn a_token_holds_its_claims_until_it_expires() {
        let token = issue(b"key", &claims(1000));
        assert!(token.starts_with("gsa."));
        assert_eq!(verify(b"key", &token, 999), Some(claims(1000)));
        assert_eq!(verify(b"key", &token, 1000), None, "expired");
        assert_eq!(claims(0).username(), "system:serviceaccount:ci:deployer");
        assert_eq!(claims(0).groups()[1], "system:serviceaccounts:ci");
    }

    #[test]
    fn a_token_not_signed_with_the_key_or_changed_is_nothing() {
        let token = issue(b"key", &claims(1000));
        assert_eq!(verify(b"other key", &token, 0), None);
        // The same signature on other claims: a forgery.
        let (_, tag) = token.rsplit_once('.').expect("signed");
        let forged_claims = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                name: "admin".into(),
                ..claims(1000)
            })
            .expect("JSON"),
        );
        assert_eq!(
            verify(b"key", &format!("gsa.{forged_claims}.{tag}"), 0),
            None
        );
        for garbage in [
            "",
            "gsa",
            "gsa..",
            "x.y.z",
            "gsa.!!.!!",
            &token[..token.len() - 2],
        ] {
            assert_eq!(verify(b"key", garbage, 0), None, "{garbage}");
        }
    }
}
