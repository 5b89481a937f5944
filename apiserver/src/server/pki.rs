//! The server's credentials, made at first start and kept in the data
//! directory: a CA, a serving certificate it signs, and bearer tokens.

use std::{
    fs,
    path::{Path, PathBuf},
};

use rand::RngExt;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::Error;

/// What clients need to trust and authenticate to the server.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// May do anything.
    pub admin_token: String,
    /// May only read (get, list, watch), and not Secrets.
    pub read_only_token: String,
    /// The controller's: anything but Secrets.
    pub controller_token: String,
    /// Signs service-account tokens (`crate::service_account_token`).
    pub service_account_key: String,
}

/// The token files, in the order of [`Credentials`]' fields.
const TOKENS: [&str; 4] = [
    "admin.token",
    "read-only.token",
    "controller.token",
    "service-account.key",
];

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io(format!("{}: {e}", path.display()))
}

fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    crate::private::write(path, contents.as_bytes()).map_err(io(path))
}

fn token() -> String {
    let mut rng = rand::rng();
    (0..40)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

/// Load the credentials in `dir`, making what is missing. The serving
/// certificate names `hosts` (and localhost); it is reissued when a host
/// it does not name is asked for.
///
/// # Errors
/// When files cannot be read or written, or a certificate cannot be made.
pub fn ensure(dir: &Path, hosts: &[String]) -> Result<Credentials, Error> {
    crate::private::create_dir(dir).map_err(io(dir))?;
    let file = |name: &str| -> PathBuf { dir.join(name) };
    for secret in TOKENS.iter().chain(&["ca.key", "server.key"]) {
        crate::private::restrict_file(&file(secret)).map_err(io(&file(secret)))?;
    }
    let tls = |e: rcgen::Error| Error::Tls(e.to_string());

    let (ca_key, ca_params) = if file("ca.key").exists() {
        let key =
            KeyPair::from_pem(&fs::read_to_string(file("ca.key")).map_err(io(&file("ca.key")))?)
                .map_err(tls)?;
        (key, ca_params()?)
    } else {
        let key = KeyPair::generate().map_err(tls)?;
        let params = ca_params()?;
        let cert = params.self_signed(&key).map_err(tls)?;
        write_private(&file("ca.key"), &key.serialize_pem())?;
        fs::write(file("ca.crt"), cert.pem()).map_err(io(&file("ca.crt")))?;
        (key, params)
    };
    let ca_pem = fs::read_to_string(file("ca.crt")).map_err(io(&file("ca.crt")))?;

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for host in hosts {
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    let named: Vec<String> = fs::read_to_string(file("server.hosts"))
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default();
    if !file("server.crt").exists() || names.iter().any(|n| !named.contains(n)) {
        let key = KeyPair::generate().map_err(tls)?;
        let mut params = CertificateParams::new(names.clone()).map_err(tls)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "gantry-apiserver");
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).map_err(tls)?;
        write_private(&file("server.key"), &key.serialize_pem())?;
        fs::write(file("server.crt"), cert.pem()).map_err(io(&file("server.crt")))?;
        fs::write(file("server.hosts"), names.join("\n")).map_err(io(&file("server.hosts")))?;
    }

    let mut tokens = Vec::new();
    for name in TOKENS {
        let path = file(name);
        if !path.exists() {
            write_private(&path, &token())?;
        }
        tokens.push(
            fs::read_to_string(&path)
                .map_err(io(&path))?
                .trim()
                .to_owned(),
        );
    }
    let [
        admin_token,
        read_only_token,
        controller_token,
        service_account_key,
    ] = <[String; 4]>::try_from(tokens).expect("one per file");
    Ok(Credentials {
        ca_pem,
        cert_pem: fs::read_to_string(file("server.crt")).map_err(io(&file("server.crt")))?,
        key_pem: fs::read_to_string(file("server.key")).map_err(io(&file("server.key")))?,
        admin_token,
        read_only_token,
        controller_token,
        service_account_key,
    })
}

fn ca_params() -> Result<CertificateParams, Error> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| Error::Tls(e.to_string()))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "gantry-ca");
    Ok(params)
}
