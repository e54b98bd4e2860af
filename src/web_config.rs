//! `--web.config.file`: the web configuration file of Prometheus' exporter-toolkit (TLS, HTTP
//! response headers, basic authentication), validated at start-up and re-read as
//! exporter-toolkit does: on each new TLS handshake and for each request's authentication, so
//! that rotated certificates and changed users take effect without a restart. A file that no
//! longer validates keeps the last good configuration in force, and says why in the log.
//!
//! Secrets (the private key, the password hashes, the passwords clients send) appear in no
//! error message, no log line and no `Debug` output.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CipherSuite, DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::{Location, Spanned};
use sha2::{Digest, Sha256};

use crate::clock::lock;
use crate::schema::{ConfigError, from_yaml, render_problem};

/// A problem with the web configuration: where it is and what is wrong. Never contains a key,
/// a password or a password hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct WebConfigError {
    pub file: Option<PathBuf>,
    /// 1-based line and column, when known.
    pub position: Option<(u64, u64)>,
    /// The key (dotted path) the problem is about, when there is one.
    pub key: Option<String>,
    pub message: String,
}

impl WebConfigError {
    fn new(key: &str, location: Option<Location>, message: impl Into<String>) -> Self {
        Self {
            file: None,
            position: location
                .filter(|l| *l != Location::UNKNOWN && l.line() > 0)
                .map(|l| (l.line(), l.column())),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    fn render(&self) -> String {
        render_problem(
            "invalid web configuration",
            self.file.as_deref(),
            self.position,
            self.key.as_deref(),
            &self.message,
        )
    }
}

impl From<ConfigError> for WebConfigError {
    fn from(err: ConfigError) -> Self {
        Self {
            file: err.file,
            position: err.position,
            key: err.key,
            message: err.message,
        }
    }
}

/// exporter-toolkit's `client_auth_type` values (Go's `tls.ClientAuthType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    /// Asks for a certificate, does not require or verify one (insecure).
    RequestClientCert,
    /// Requires a certificate, does not verify it (insecure).
    RequireAnyClientCert,
    /// Verifies a certificate against the client CA when one is sent.
    VerifyClientCertIfGiven,
    /// Requires a certificate signed by the client CA.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    const ALL: [(&'static str, ClientAuth); 5] = [
        ("NoClientCert", ClientAuth::NoClientCert),
        ("RequestClientCert", ClientAuth::RequestClientCert),
        ("RequireAnyClientCert", ClientAuth::RequireAnyClientCert),
        (
            "VerifyClientCertIfGiven",
            ClientAuth::VerifyClientCertIfGiven,
        ),
        (
            "RequireAndVerifyClientCert",
            ClientAuth::RequireAndVerifyClientCert,
        ),
    ];
}

/// The response headers exporter-toolkit lets a web configuration set, with the values it
/// accepts (none listed: any value).
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// exporter-toolkit's bcrypt hash of "fakepassword", compared against when the user does not
/// exist, so that an unknown user takes as long as a wrong password.
const DECOY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// A validated web configuration with its TLS material loaded.
pub struct WebConfig {
    /// The rustls configuration, when `tls_server_config` is set.
    pub tls: Option<Arc<ServerConfig>>,
    /// Whether HTTP/2 is offered (over TLS only, through ALPN).
    pub http2: bool,
    /// Headers added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// User name to bcrypt hash; empty: no authentication.
    users: HashMap<String, String>,
    /// The file's text and the TLS files' contents it was built from, to notice changes.
    text: Vec<u8>,
    tls_files: Vec<(PathBuf, Vec<u8>)>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("http2", &self.http2)
            .field("headers", &self.headers)
            .field("users", &users)
            .finish_non_exhaustive()
    }
}

impl WebConfig {
    /// Whether requests must carry basic-auth credentials.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<Spanned<RawTls>>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, Spanned<String>>>,
    rate_limit: Option<Spanned<IgnoredAny>>,
}

type Text = Spanned<String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<Text>,
    key: Option<Text>,
    client_ca: Option<Text>,
    cert_file: Option<Text>,
    key_file: Option<Text>,
    client_auth_type: Option<Text>,
    client_ca_file: Option<Text>,
    client_allowed_sans: Option<Spanned<IgnoredAny>>,
    min_version: Option<Text>,
    max_version: Option<Text>,
    cipher_suites: Option<Vec<Text>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<Text>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, Spanned<String>>>,
}

/// Reads and validates the web configuration file, loading its TLS material.
pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let text = std::fs::read(path).map_err(|err| WebConfigError {
        file: Some(path.to_path_buf()),
        position: None,
        key: None,
        message: format!("cannot read file: {err}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|mut err| {
        err.file = Some(path.to_path_buf());
        err
    })
}

/// Parses and validates web configuration text; relative file names are relative to `base`
/// (the file's directory, as exporter-toolkit does).
pub fn parse(text: &[u8], base: &Path) -> Result<WebConfig, WebConfigError> {
    let utf8 = std::str::from_utf8(text).map_err(|_| WebConfigError {
        file: None,
        position: None,
        key: None,
        message: "the file is not UTF-8".into(),
    })?;
    let raw: Option<RawWebConfig> = from_yaml(utf8)?;
    let raw = raw.unwrap_or(RawWebConfig {
        tls_server_config: None,
        http_server_config: None,
        basic_auth_users: None,
        rate_limit: None,
    });
    if let Some(rate_limit) = &raw.rate_limit {
        return Err(WebConfigError::new(
            "rate_limit",
            Some(rate_limit.referenced),
            "is not supported by aws-cost-exporter (the server caps connections with --web.max-connections instead)",
        ));
    }
    let http2 = raw
        .http_server_config
        .as_ref()
        .and_then(|h| h.http2)
        .unwrap_or(true);
    let mut headers = Vec::new();
    if let Some(configured) = raw.http_server_config.and_then(|h| h.headers) {
        for (name, value) in configured {
            headers.extend(header(&name, &value)?);
        }
    }
    let mut users = HashMap::new();
    for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
        // The hash is a secret too: never part of the message.
        if bcrypt_cost(&hash.value).is_none() {
            return Err(WebConfigError::new(
                &format!("basic_auth_users.{user}"),
                Some(hash.referenced),
                "is not a bcrypt hash (generate one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
            ));
        }
        users.insert(user, hash.value);
    }
    let mut tls_files = Vec::new();
    let tls = match raw.tls_server_config {
        Some(tls) => Some(Arc::new(tls_config(
            tls.value,
            tls.referenced,
            base,
            http2,
            &mut tls_files,
        )?)),
        None => None,
    };
    Ok(WebConfig {
        tls,
        http2,
        headers,
        users,
        text: text.to_vec(),
        tls_files,
    })
}

fn header(name: &str, value: &Text) -> Result<Option<(HeaderName, HeaderValue)>, WebConfigError> {
    let key = format!("http_server_config.headers.{name}");
    let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(n, _)| *n == name) else {
        return Err(WebConfigError::new(
            &key,
            Some(value.referenced),
            format!(
                "HTTP header {name:?} can not be configured (one of {})",
                EXTRA_HEADERS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    if value.value.is_empty() {
        return Ok(None);
    }
    if !allowed.is_empty() && !allowed.contains(&value.value.as_str()) {
        return Err(WebConfigError::new(
            &key,
            Some(value.referenced),
            format!(
                "invalid value {:?}: expected one of {:?}",
                value.value, allowed
            ),
        ));
    }
    let header_value = HeaderValue::from_str(&value.value).map_err(|_| {
        WebConfigError::new(
            &key,
            Some(value.referenced),
            "is not a valid HTTP header value",
        )
    })?;
    let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        WebConfigError::new(&key, Some(value.referenced), "is not a valid header name")
    })?;
    Ok(Some((header_name, header_value)))
}

/// The cost of a bcrypt hash (`$2a$`, `$2b$`, `$2x$` or `$2y$`, cost 4 to 31, 53 characters
/// of salt and hash), or `None` when it is not one.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = hash
        .strip_prefix("$2a$")
        .or_else(|| hash.strip_prefix("$2b$"))
        .or_else(|| hash.strip_prefix("$2x$"))
        .or_else(|| hash.strip_prefix("$2y$"))?;
    let (cost, salt_and_hash) = rest.split_once('$')?;
    let cost: u32 = cost.parse().ok().filter(|c| (4..=31).contains(c))?;
    let valid = salt_and_hash.len() == 53
        && salt_and_hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    valid.then_some(cost)
}

/// Where a PEM item comes from: inline in the file, or a file of its own.
enum Source {
    Inline(Vec<u8>),
    File(PathBuf),
}

fn pem_source(
    inline: Option<Text>,
    file: Option<Text>,
    inline_key: &str,
    file_key: &str,
    base: &Path,
) -> Result<Option<(Source, String, Location)>, WebConfigError> {
    match (inline, file) {
        (Some(inline), Some(_)) => Err(WebConfigError::new(
            inline_key,
            Some(inline.referenced),
            format!("give {inline_key} or {file_key}, not both"),
        )),
        (Some(inline), None) => Ok(Some((
            Source::Inline(inline.value.into_bytes()),
            inline_key.to_string(),
            inline.referenced,
        ))),
        (None, Some(file)) if file.value.is_empty() => Err(WebConfigError::new(
            file_key,
            Some(file.referenced),
            "is empty",
        )),
        (None, Some(file)) => Ok(Some((
            Source::File(base.join(&file.value)),
            file_key.to_string(),
            file.referenced,
        ))),
        (None, None) => Ok(None),
    }
}

/// Reads a PEM source, remembering a file's contents for change detection. The error never
/// quotes the contents.
fn read_source(
    source: &Source,
    key: &str,
    location: Location,
    files: &mut Vec<(PathBuf, Vec<u8>)>,
) -> Result<Vec<u8>, WebConfigError> {
    match source {
        Source::Inline(bytes) => Ok(bytes.clone()),
        Source::File(path) => {
            let bytes = std::fs::read(path).map_err(|err| {
                WebConfigError::new(
                    key,
                    Some(location),
                    format!("cannot read {}: {err}", path.display()),
                )
            })?;
            files.push((path.clone(), bytes.clone()));
            Ok(bytes)
        }
    }
}

fn describe(source: &Source, key: &str) -> String {
    match source {
        Source::Inline(_) => format!("the inline {key}"),
        Source::File(path) => path.display().to_string(),
    }
}

fn certificates(
    bytes: &[u8],
    what: &str,
    key: &str,
    location: Location,
) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(bytes).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(WebConfigError::new(
            key,
            Some(location),
            format!("{what} holds no PEM certificate"),
        )),
        Err(err) => Err(WebConfigError::new(
            key,
            Some(location),
            format!("{what} is not valid PEM: {err}"),
        )),
    }
}

fn tls_version(
    value: &Option<Text>,
    key: &str,
    default: &'static SupportedProtocolVersion,
) -> Result<&'static SupportedProtocolVersion, WebConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.value.as_str() {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => Err(WebConfigError::new(
            key,
            Some(value.referenced),
            format!(
                "{} is not supported: rustls speaks TLS12 and TLS13 only",
                value.value
            ),
        )),
        other => Err(WebConfigError::new(
            key,
            Some(value.referenced),
            format!("unknown TLS version {other:?} (TLS12 or TLS13)"),
        )),
    }
}

/// Go's names of the TLS 1.3 suites: accepted in `cipher_suites`, and, as in Go, without
/// effect (TLS 1.3's suites are always on).
const GO_TLS13_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Go's curve names and rustls' groups.
const CURVES: &[(&str, NamedGroup)] = &[
    ("CurveP256", NamedGroup::secp256r1),
    ("CurveP384", NamedGroup::secp384r1),
    ("CurveP521", NamedGroup::secp521r1),
    ("X25519", NamedGroup::X25519),
    ("X25519MLKEM768", NamedGroup::X25519MLKEM768),
];

fn provider(raw: &RawTls) -> Result<CryptoProvider, WebConfigError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(names) = &raw.cipher_suites {
        // As in Go, the list picks and orders the TLS 1.2 suites; TLS 1.3's are always on.
        let mut suites: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_some())
            .copied()
            .collect();
        for name in names {
            if GO_TLS13_SUITES.contains(&name.value.as_str()) {
                continue;
            }
            let found = rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES
                .iter()
                .find(|s| suite_name(s.suite()) == name.value);
            match found {
                Some(suite) if suite.tls13().is_some() => {}
                Some(suite) => suites.push(*suite),
                None => {
                    return Err(WebConfigError::new(
                        "tls_server_config.cipher_suites",
                        Some(name.referenced),
                        format!(
                            "cipher suite {:?} is not supported (rustls offers {})",
                            name.value,
                            rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES
                                .iter()
                                .filter(|s| s.tls13().is_none())
                                .map(|s| suite_name(s.suite()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
        provider.cipher_suites = suites;
    }
    if let Some(names) = &raw.curve_preferences {
        let mut groups = Vec::new();
        for name in names {
            let group = CURVES
                .iter()
                .find(|(n, _)| *n == name.value)
                .and_then(|(_, g)| {
                    rustls::crypto::aws_lc_rs::ALL_KX_GROUPS
                        .iter()
                        .find(|k| k.name() == *g)
                });
            match group {
                Some(group) => groups.push(*group),
                None => {
                    return Err(WebConfigError::new(
                        "tls_server_config.curve_preferences",
                        Some(name.referenced),
                        format!(
                            "curve {:?} is not supported (rustls offers CurveP256, CurveP384, X25519, X25519MLKEM768)",
                            name.value
                        ),
                    ));
                }
            }
        }
        provider.kx_groups = groups;
    }
    Ok(provider)
}

fn suite_name(suite: CipherSuite) -> String {
    format!("{suite:?}")
}

fn tls_config(
    raw: RawTls,
    at: Location,
    base: &Path,
    http2: bool,
    files: &mut Vec<(PathBuf, Vec<u8>)>,
) -> Result<ServerConfig, WebConfigError> {
    if let Some(sans) = &raw.client_allowed_sans {
        return Err(WebConfigError::new(
            "tls_server_config.client_allowed_sans",
            Some(sans.referenced),
            "is not supported by aws-cost-exporter",
        ));
    }
    let provider = Arc::new(provider(&raw)?);
    let min = tls_version(
        &raw.min_version,
        "tls_server_config.min_version",
        &rustls::version::TLS12,
    )?;
    let max = tls_version(
        &raw.max_version,
        "tls_server_config.max_version",
        &rustls::version::TLS13,
    )?;
    let versions: Vec<&'static SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| {
                version_rank(v) >= version_rank(min) && version_rank(v) <= version_rank(max)
            })
            .collect();
    if versions.is_empty() {
        let location = raw.max_version.as_ref().map(|v| v.referenced);
        return Err(WebConfigError::new(
            "tls_server_config.max_version",
            location,
            "is lower than min_version",
        ));
    }
    let client_auth = match &raw.client_auth_type {
        None => ClientAuth::NoClientCert,
        Some(value) => ClientAuth::ALL
            .iter()
            .find(|(name, _)| *name == value.value)
            .map(|(_, auth)| *auth)
            .ok_or_else(|| {
                WebConfigError::new(
                    "tls_server_config.client_auth_type",
                    Some(value.referenced),
                    format!(
                        "unknown client_auth_type {:?} (one of {})",
                        value.value,
                        ClientAuth::ALL.map(|(n, _)| n).join(", ")
                    ),
                )
            })?,
    };
    let cert = pem_source(
        raw.cert,
        raw.cert_file,
        "tls_server_config.cert",
        "tls_server_config.cert_file",
        base,
    )?;
    let key = pem_source(
        raw.key,
        raw.key_file,
        "tls_server_config.key",
        "tls_server_config.key_file",
        base,
    )?;
    let ca = pem_source(
        raw.client_ca,
        raw.client_ca_file,
        "tls_server_config.client_ca",
        "tls_server_config.client_ca_file",
        base,
    )?;
    let Some((cert, cert_key, cert_at)) = cert else {
        return Err(WebConfigError::new(
            "tls_server_config",
            Some(at),
            "missing cert_file (or cert)",
        ));
    };
    let Some((key, key_key, key_at)) = key else {
        return Err(WebConfigError::new(
            "tls_server_config",
            Some(at),
            "missing key_file (or key)",
        ));
    };
    if let (ClientAuth::NoClientCert, Some((_, ca_key, ca_at))) = (client_auth, &ca) {
        return Err(WebConfigError::new(
            ca_key,
            Some(*ca_at),
            "a client CA is configured but client_auth_type is NoClientCert",
        ));
    }
    let verifier: Arc<dyn ClientCertVerifier> = match client_auth {
        ClientAuth::NoClientCert => Arc::new(rustls::server::NoClientAuth),
        ClientAuth::RequestClientCert => Arc::new(AnyClientCert {
            mandatory: false,
            provider: provider.clone(),
        }),
        ClientAuth::RequireAnyClientCert => Arc::new(AnyClientCert {
            mandatory: true,
            provider: provider.clone(),
        }),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let Some((ca, ca_key, ca_at)) = ca else {
                return Err(WebConfigError::new(
                    "tls_server_config.client_ca_file",
                    Some(at),
                    format!("client_auth_type {client_auth:?} needs client_ca_file (or client_ca)"),
                ));
            };
            let ca_bytes = read_source(&ca, &ca_key, ca_at, files)?;
            let mut roots = RootCertStore::empty();
            for cert in certificates(&ca_bytes, &describe(&ca, &ca_key), &ca_key, ca_at)? {
                roots.add(cert).map_err(|err| {
                    WebConfigError::new(
                        &ca_key,
                        Some(ca_at),
                        format!("{}: {err}", describe(&ca, &ca_key)),
                    )
                })?;
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder.build().map_err(|err| {
                WebConfigError::new(&ca_key, Some(ca_at), format!("client CA: {err}"))
            })?
        }
    };
    let cert_bytes = read_source(&cert, &cert_key, cert_at, files)?;
    let chain = certificates(&cert_bytes, &describe(&cert, &cert_key), &cert_key, cert_at)?;
    let key_bytes = read_source(&key, &key_key, key_at, files)?;
    // Only a fixed message: a PEM error could quote part of the key.
    let private_key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|_| {
        WebConfigError::new(
            &key_key,
            Some(key_at),
            format!("{} holds no PEM private key", describe(&key, &key_key)),
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|err| WebConfigError::new("tls_server_config", Some(at), err.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key)
        .map_err(|err| {
            // rustls' message names the mismatch or the unsupported key type, not the key.
            WebConfigError::new(
                &key_key,
                Some(key_at),
                format!(
                    "the certificate and key cannot be used: {}",
                    tls_error_summary(&err)
                ),
            )
        })?;
    config.ignore_client_order = raw.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

fn version_rank(version: &SupportedProtocolVersion) -> u16 {
    u16::from(version.version)
}

fn tls_error_summary(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not belong to the certificate".into()
        }
        rustls::Error::General(message) => message.clone(),
        other => format!("{other}"),
    }
}

/// `RequestClientCert` and `RequireAnyClientCert`: a client certificate is asked for (and
/// with the second required), its handshake signature checked, the certificate itself not
/// verified, as in Go.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The web configuration in force, re-read from its file when it changes. A file that no
/// longer validates keeps the previous configuration and is logged (once per distinct
/// problem).
pub struct WebConfigSource {
    path: PathBuf,
    current: ArcSwap<WebConfig>,
    /// Serializes re-reads; holds the last problem logged.
    reloading: Mutex<Option<String>>,
    /// Whether the server speaks TLS: fixed at start-up, as the listener's protocol.
    tls: bool,
    auth: Authenticator,
}

impl fmt::Debug for WebConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfigSource")
            .field("path", &self.path)
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

impl WebConfigSource {
    /// Loads and validates the file: a bad file is an error here, at start-up.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let config = load(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            tls: config.tls.is_some(),
            current: ArcSwap::from_pointee(config),
            reloading: Mutex::new(None),
            auth: Authenticator::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration for a request: the file is re-read, and re-validated if its text
    /// changed.
    pub fn for_request(&self) -> Arc<WebConfig> {
        self.refresh(false)
    }

    /// The configuration for a new TLS handshake: the file and the certificate, key and CA
    /// files it names are re-read, and re-validated if any changed.
    pub fn for_handshake(&self) -> Arc<WebConfig> {
        self.refresh(true)
    }

    fn refresh(&self, with_tls_files: bool) -> Arc<WebConfig> {
        let current = self.current.load_full();
        let unchanged = std::fs::read(&self.path).is_ok_and(|text| text == current.text)
            && (!with_tls_files
                || current
                    .tls_files
                    .iter()
                    .all(|(path, bytes)| std::fs::read(path).is_ok_and(|b| b == *bytes)));
        if unchanged {
            return current;
        }
        // A file that cannot be read or no longer validates is logged by `load_again`.
        let _ = self.load_again(false);
        self.current.load_full()
    }

    /// Re-reads and re-validates the file now (SIGHUP, `POST /-/reload`): on error the previous
    /// configuration stays in force, and the error is logged and returned.
    pub fn reload(&self) -> Result<(), WebConfigError> {
        self.load_again(true)
    }

    /// Re-reads the file; a problem is logged always when `explicit`, otherwise once until the
    /// problem changes (requests would repeat it for every scrape).
    fn load_again(&self, explicit: bool) -> Result<(), WebConfigError> {
        let mut last_problem = lock(&self.reloading);
        let loaded = load(&self.path).and_then(|config| {
            if config.tls.is_some() == self.tls {
                Ok(config)
            } else {
                Err(WebConfigError {
                    file: Some(self.path.clone()),
                    position: None,
                    key: Some("tls_server_config".into()),
                    message: if self.tls {
                        "cannot be removed while running: restart the exporter to serve plain HTTP"
                            .into()
                    } else {
                        "cannot be added while running: restart the exporter to serve HTTPS".into()
                    },
                })
            }
        });
        match loaded {
            Ok(config) => {
                if last_problem.take().is_some() {
                    tracing::info!(file = %self.path.display(), "web configuration valid again");
                }
                self.current.store(Arc::new(config));
                Ok(())
            }
            Err(err) => {
                let message = err.to_string();
                if explicit || last_problem.as_deref() != Some(message.as_str()) {
                    tracing::error!(error = %message, "web configuration refused; keeping the previous one");
                    *last_problem = Some(message);
                }
                Err(err)
            }
        }
    }

    /// Whether the request's `Authorization` header names a configured user with the right
    /// password (always true when no users are configured).
    pub async fn authorized(
        &self,
        config: &WebConfig,
        authorization: Option<&HeaderValue>,
    ) -> bool {
        if !config.requires_auth() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        self.auth.check(&config.users, &user, &password).await
    }
}

/// User and password of a `Basic` `Authorization` header, as Go's `Request.BasicAuth` reads it.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Most verifications remembered, as in exporter-toolkit.
const AUTH_CACHE_SIZE: usize = 100;

/// Basic-auth verification: bcrypt runs one at a time on a blocking thread, and its result is
/// cached under a SHA-256 of user, hash and password, so a scraper pays bcrypt once.
#[derive(Default)]
struct Authenticator {
    cache: Mutex<HashMap<[u8; 32], bool>>,
    bcrypt: tokio::sync::Mutex<()>,
}

impl Authenticator {
    async fn check(&self, users: &HashMap<String, String>, user: &str, password: &str) -> bool {
        let known = users.get(user);
        // An unknown user is compared against a decoy hash: the same work as a wrong password.
        let hash = known.map(String::as_str).unwrap_or(DECOY_HASH);
        let key = cache_key(user, hash, password);
        let cached = self.lock_cache().get(&key).copied();
        let matches = match cached {
            Some(matches) => matches,
            None => {
                let _one_at_a_time = self.bcrypt.lock().await;
                let (password, hash) = (password.to_string(), hash.to_string());
                let matches = tokio::task::spawn_blocking(move || {
                    bcrypt::verify(password, &hash).unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                let mut cache = self.lock_cache();
                if cache.len() >= AUTH_CACHE_SIZE
                    && let Some(evict) = cache.keys().next().copied()
                {
                    cache.remove(&evict);
                }
                cache.insert(key, matches);
                matches
            }
        };
        matches && known.is_some()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], bool>> {
        lock(&self.cache)
    }
}

fn cache_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in [user, hash, password] {
        // Length-prefixed, so that no two triples share an encoding.
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> WebConfigError {
        match parse(text.as_bytes(), Path::new("/nonexistent")) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(err) => err,
        }
    }

    // bcrypt of "s3cret-test-password" at cost 4.
    fn hash() -> String {
        bcrypt::hash("s3cret-test-password", 4).expect("bcrypt hashes")
    }

    #[test]
    fn an_empty_file_is_plain_http_without_auth() {
        let config = parse(b"", Path::new(".")).expect("valid");
        assert!(config.tls.is_none());
        assert!(!config.requires_auth());
        assert!(config.http2);
        assert!(config.headers.is_empty());
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_column() {
        let e = err("basic_auth_users: {}\ntls_server_config:\n  cert_file: a\n  keyfile: b\n");
        assert_eq!(e.position, Some((4, 3)), "{e}");
        assert!(e.to_string().contains("keyfile"), "{e}");
        assert!(
            e.to_string()
                .starts_with("invalid web configuration at line 4 column 3"),
            "{e}"
        );
        let e = err("rate_limit:\n  interval: 1s\n");
        assert_eq!(e.key.as_deref(), Some("rate_limit"));
        assert_eq!(e.position, Some((2, 3)));
        let e =
            err("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [x]\n");
        assert_eq!(
            e.key.as_deref(),
            Some("tls_server_config.client_allowed_sans")
        );
        assert!(e.message.contains("not supported"), "{e}");
    }

    #[test]
    fn headers_follow_exporter_toolkit() {
        let config = parse(
            b"http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: \"default-src 'self'\"\n    X-XSS-Protection: \"\"\n",
            Path::new("."),
        )
        .expect("valid");
        let names: Vec<&str> = config.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-security-policy", "x-frame-options"]);
        let e = err("http_server_config:\n  headers:\n    X-Frame-Options: allow\n");
        assert_eq!(
            e.to_string(),
            "invalid web configuration at line 3 column 22: http_server_config.headers.X-Frame-Options: invalid value \"allow\": expected one of [\"deny\", \"sameorigin\"]"
        );
        let e = err("http_server_config:\n  headers:\n    Server: x\n");
        assert!(e.message.contains("can not be configured"), "{e}");
    }

    #[test]
    fn users_need_bcrypt_hashes_and_errors_never_show_them() {
        let h = hash();
        let config = parse(
            format!("basic_auth_users:\n  alice: {h}\n").as_bytes(),
            Path::new("."),
        )
        .expect("valid");
        assert!(config.requires_auth());
        assert!(!format!("{config:?}").contains(&h));
        let e = err("basic_auth_users:\n  alice: plain-text-password\n");
        assert_eq!(e.key.as_deref(), Some("basic_auth_users.alice"));
        assert_eq!(e.position, Some((2, 10)));
        assert!(!e.to_string().contains("plain-text-password"), "{e}");
        assert_eq!(bcrypt_cost(&h), Some(4));
        assert_eq!(bcrypt_cost(DECOY_HASH), Some(10));
        assert_eq!(
            bcrypt_cost("$2y$03$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"),
            None
        );
        assert_eq!(bcrypt_cost("$2y$10$short"), None);
    }

    #[test]
    fn tls_settings_are_checked() {
        let e = err("tls_server_config:\n  key_file: k.pem\n");
        assert_eq!(e.message, "missing cert_file (or cert)");
        let e = err(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  min_version: TLS10\n",
        );
        assert_eq!(e.position, Some((4, 16)));
        assert!(e.message.contains("TLS12 and TLS13 only"), "{e}");
        let e = err(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  min_version: TLS13\n  max_version: TLS12\n",
        );
        assert_eq!(e.message, "is lower than min_version");
        let e = err(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: RequireClientCert\n",
        );
        assert!(e.message.starts_with("unknown client_auth_type"), "{e}");
        let e = err(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
        );
        assert!(
            e.message
                .contains("is not supported (rustls offers TLS_ECDHE_"),
            "{e}"
        );
        let e = err(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  curve_preferences: [CurveP521]\n",
        );
        assert!(
            e.message.contains("curve \"CurveP521\" is not supported"),
            "{e}"
        );
        let e = err(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: RequireAndVerifyClientCert\n",
        );
        assert!(e.message.contains("needs client_ca_file"), "{e}");
        let e = err(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_ca_file: ca.pem\n",
        );
        assert!(e.message.contains("NoClientCert"), "{e}");
        let e = err("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n");
        assert_eq!(e.key.as_deref(), Some("tls_server_config.cert_file"));
        assert!(
            e.message.starts_with("cannot read /nonexistent/c.pem"),
            "{e}"
        );
    }

    #[test]
    fn cipher_suites_and_curves_pick_from_the_provider() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("c.pem"), generated.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("k.pem"),
            generated.signing_key.serialize_pem(),
        )
        .unwrap();
        let config = parse(
            b"tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [CurveP384, X25519]\n  prefer_server_cipher_suites: false\n  client_auth_type: RequireAnyClientCert\n",
            dir.path(),
        )
        .expect("valid");
        let tls = config.tls.expect("TLS");
        let provider = tls.crypto_provider();
        let suites: Vec<String> = provider
            .cipher_suites
            .iter()
            .map(|s| suite_name(s.suite()))
            .collect();
        assert_eq!(
            suites,
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            ]
        );
        let groups: Vec<NamedGroup> = provider.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(groups, [NamedGroup::secp384r1, NamedGroup::X25519]);
        assert!(!tls.ignore_client_order);
        assert_eq!(tls.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        // A key that does not belong to the certificate is refused without quoting it.
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("k.pem"), other.serialize_pem()).unwrap();
        let e = match parse(
            b"tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n",
            dir.path(),
        ) {
            Ok(_) => panic!("a mismatched key was accepted"),
            Err(e) => e,
        };
        assert_eq!(e.key.as_deref(), Some("tls_server_config.key_file"));
        assert_eq!(
            e.message,
            "the certificate and key cannot be used: the private key does not belong to the certificate"
        );
    }

    #[test]
    fn a_source_keeps_the_last_good_file_and_its_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, format!("basic_auth_users:\n  alice: {}\n", hash())).unwrap();
        let source = WebConfigSource::load(&path).expect("valid");
        assert!(source.for_request().requires_auth());
        // Adding TLS needs a restart: refused, the running file stays.
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("c.pem"), generated.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("k.pem"),
            generated.signing_key.serialize_pem(),
        )
        .unwrap();
        std::fs::write(
            &path,
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n",
        )
        .unwrap();
        let e = source.reload().expect_err("TLS added while running");
        assert_eq!(
            e.to_string(),
            format!(
                "invalid web configuration {}: tls_server_config: cannot be added while running: restart the exporter to serve HTTPS",
                path.display()
            )
        );
        let current = source.for_handshake();
        assert!(current.tls.is_none() && current.requires_auth());
        // A valid change applies.
        std::fs::write(&path, "").unwrap();
        assert!(!source.for_request().requires_auth());
        assert!(source.reload().is_ok());
    }

    #[test]
    fn basic_credentials_parse_as_go_does() {
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert_eq!(
            basic_credentials(&header("Basic YWxpY2U6cDpx")),
            Some(("alice".into(), "p:q".into()))
        );
        assert_eq!(
            basic_credentials(&header("basic YWxpY2U6")),
            Some(("alice".into(), String::new()))
        );
        assert_eq!(basic_credentials(&header("Bearer YWxpY2U6cDpx")), None);
        assert_eq!(basic_credentials(&header("Basic !!!")), None);
        assert_eq!(basic_credentials(&header("Basic YWxpY2U=")), None);
    }

    #[tokio::test]
    async fn verification_is_cached_and_unknown_users_fail() {
        let mut users = HashMap::new();
        users.insert("alice".to_string(), hash());
        let auth = Authenticator::default();
        assert!(auth.check(&users, "alice", "s3cret-test-password").await);
        assert!(!auth.check(&users, "alice", "wrong").await);
        assert!(!auth.check(&users, "bob", "s3cret-test-password").await);
        assert_eq!(auth.lock_cache().len(), 3);
        // The cached answers are the same answers.
        assert!(auth.check(&users, "alice", "s3cret-test-password").await);
        assert!(!auth.check(&users, "alice", "wrong").await);
        assert_eq!(auth.lock_cache().len(), 3);
        assert_ne!(cache_key("a", "bc", "d"), cache_key("ab", "c", "d"));
    }
}
