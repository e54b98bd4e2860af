//! `--web.config.file` (TLS, mTLS, basic auth, headers, rotation), the server's limits, and
//! `POST /-/reload`: against the real server on 127.0.0.1 with real TLS clients, and against
//! the binary for start-up errors, reloads and what its output may contain.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_cost_exporter::server::Limits;
use aws_cost_exporter::{Exporter, ExporterOptions, StartError};
use bytes::Bytes;
use common::running::{BIN, Running};
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const PASSWORD: &str = "correct-horse-battery-staple-7";
const WRONG_PASSWORD: &str = "wrong-password-never-logged-3";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A certificate authority made for the test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1, for a server or a client.
    fn leaf(&self, name: &str, client: bool) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Leaf {
    fn identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.der.clone()],
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap(),
        )
    }

    /// A line of the private key's base64 body: what a leak would show.
    fn key_body_line(&self) -> String {
        self.key_pem.lines().nth(1).unwrap().to_string()
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes the server's certificate and key and a web config naming them (relative names:
/// relative to the web config's directory).
fn tls_web_config(dir: &Path, server: &Leaf, extra: &str) -> PathBuf {
    write(dir, "server.pem", &server.cert_pem);
    write(dir, "server.key", &server.key_pem);
    write(
        dir,
        "web.yml",
        &format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{extra}"),
    )
}

fn client_config(
    roots: &[&CertificateDer<'static>],
    identity: Option<&Leaf>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(store);
    let mut config = match identity {
        Some(leaf) => {
            let (chain, key) = leaf.identity();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn default_client(ca: &Ca) -> Arc<ClientConfig> {
    client_config(&[&ca.der], None, rustls::ALL_VERSIONS, &[])
}

/// One HTTPS request over a fresh connection: the response, the certificate the server
/// showed, and the HTTP version spoken.
async fn https(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(HttpResponse, CertificateDer<'static>, http::Version), Error> {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (_, session) = tls.get_ref();
        let peer = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .ok_or("no server certificate")?
            .clone()
            .into_owned();
        let h2 = session.alpn_protocol() == Some(b"h2");
        let mut builder = Request::builder().method(Method::GET).uri(path);
        if h2 {
            builder = builder.uri(format!("https://localhost{path}"));
        } else {
            builder = builder.header("host", "localhost");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Empty::<Bytes>::new())?;
        let response = if h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await?;
            tokio::spawn(connection);
            sender.send_request(request).await?
        } else {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(connection);
            sender.send_request(request).await?
        };
        let version = response.version();
        let (parts, body) = response.into_parts();
        let response = HttpResponse {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await?.to_bytes(),
        };
        Ok::<_, Error>((response, peer, version))
    };
    timeout(WAIT, exchange).await?
}

/// A configuration whose one integration points at a closed loopback port: the server is
/// what these tests look at.
fn offline_config() -> aws_cost_exporter::config::Config {
    parse_config(
        "integrations:\n  - name: offline\n    account_id: \"123456789012\"\n    access_key_id: AKIATESTOFFL1EXAMPLE\n    secret_access_key: offline-secret-value\n    endpoint_url: http://127.0.0.1:9\n    forecast: false\n",
    )
}

async fn start_with(web_config: Option<&Path>, limits: Limits) -> Result<Exporter, StartError> {
    Exporter::start(
        offline_config(),
        ExporterOptions {
            listen_address: "127.0.0.1:0".into(),
            web_config_file: web_config.map(Path::to_path_buf),
            limits,
            ..ExporterOptions::default()
        },
    )
    .await
}

async fn start(web_config: &Path) -> Exporter {
    start_with(Some(web_config), Limits::default())
        .await
        .expect("exporter starts")
}

#[tokio::test]
async fn serves_tls_with_the_configured_certificate() {
    let dir = temp_dir();
    let ca = Ca::new("test CA");
    let server = ca.leaf("server", false);
    let exporter = start(&tls_web_config(dir.path(), &server, "")).await;
    let addr = exporter.local_addr();

    let (response, peer, version) = https(addr, default_client(&ca), "/metrics", &[])
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(peer, server.der);
    assert_eq!(version, http::Version::HTTP_11);
    assert!(response.text().contains("aws_cost_exporter_build_info{"));

    // HTTP/2 through ALPN (http2 defaults to true, as in exporter-toolkit).
    let h2 = client_config(&[&ca.der], None, rustls::ALL_VERSIONS, &[b"h2"]);
    let (response, _, version) = https(addr, h2, "/-/healthy", &[]).await.unwrap();
    assert_eq!(
        (response.status, version),
        (StatusCode::OK, http::Version::HTTP_2)
    );

    // A client that does not trust the CA refuses the server.
    let other = Ca::new("other CA");
    assert!(
        https(addr, default_client(&other), "/metrics", &[])
            .await
            .is_err()
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    assert!(
        try_request(addr, Method::GET, "/metrics", &[])
            .await
            .is_err()
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn http2_can_be_turned_off() {
    let dir = temp_dir();
    let ca = Ca::new("test CA");
    let server = ca.leaf("server", false);
    let web = tls_web_config(dir.path(), &server, "http_server_config:\n  http2: false\n");
    let exporter = start(&web).await;
    let h2 = client_config(
        &[&ca.der],
        None,
        rustls::ALL_VERSIONS,
        &[b"h2", b"http/1.1"],
    );
    let (response, _, version) = https(exporter.local_addr(), h2, "/-/ready", &[])
        .await
        .unwrap();
    assert_eq!(
        (response.status, version),
        (StatusCode::OK, http::Version::HTTP_11)
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_client_ca() {
    let dir = temp_dir();
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server = ca.leaf("server", false);
    write(dir.path(), "client-ca.pem", &client_ca.pem);
    let web = tls_web_config(
        dir.path(),
        &server,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n",
    );
    let exporter = start(&web).await;
    let addr = exporter.local_addr();

    // No certificate: refused (TLS 1.2 and 1.3).
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let anonymous = client_config(&[&ca.der], None, &[version], &[]);
        assert!(
            https(addr, anonymous, "/metrics", &[]).await.is_err(),
            "{version:?} without a client certificate"
        );
    }
    // A certificate from another CA: refused.
    let stranger = Ca::new("stranger CA").leaf("stranger", true);
    let config = client_config(&[&ca.der], Some(&stranger), rustls::ALL_VERSIONS, &[]);
    assert!(https(addr, config, "/metrics", &[]).await.is_err());
    // A certificate from the client CA: served, the health endpoints included.
    let client = client_ca.leaf("prometheus", true);
    let config = client_config(&[&ca.der], Some(&client), rustls::ALL_VERSIONS, &[]);
    for path in ["/metrics", "/-/healthy"] {
        let (response, _, _) = https(addr, config.clone(), path, &[]).await.unwrap();
        assert_eq!(response.status, StatusCode::OK, "{path}");
    }
    exporter.shutdown().await;
}

#[tokio::test]
async fn the_other_client_auth_types_behave_as_in_go() {
    let dir = temp_dir();
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server = ca.leaf("server", false);
    write(dir.path(), "client-ca.pem", &client_ca.pem);
    let good = client_ca.leaf("prometheus", true);
    let stranger = Ca::new("stranger CA").leaf("stranger", true);
    let served = |auth: &'static str, identity: Option<&Leaf>| {
        let config = client_config(&[&ca.der], identity, rustls::ALL_VERSIONS, &[]);
        let dir = dir.path().to_path_buf();
        let server = &server;
        async move {
            let web = tls_web_config(
                &dir,
                server,
                &format!("  client_auth_type: {auth}\n  client_ca_file: client-ca.pem\n"),
            );
            let exporter = start(&web).await;
            let outcome = https(exporter.local_addr(), config, "/-/healthy", &[])
                .await
                .map(|(response, _, _)| response.status);
            exporter.shutdown().await;
            outcome.is_ok_and(|status| status == StatusCode::OK)
        }
    };
    // A certificate when given, verified when given.
    assert!(served("VerifyClientCertIfGiven", None).await);
    assert!(served("VerifyClientCertIfGiven", Some(&good)).await);
    assert!(!served("VerifyClientCertIfGiven", Some(&stranger)).await);
    // Any certificate, not verified (insecure, as in Go), but one is needed.
    assert!(!served("RequireAnyClientCert", None).await);
    assert!(served("RequireAnyClientCert", Some(&stranger)).await);
    // Asked for, neither needed nor verified.
    assert!(served("RequestClientCert", None).await);
    assert!(served("RequestClientCert", Some(&stranger)).await);
}

#[tokio::test]
async fn min_version_tls13_refuses_a_tls12_client() {
    let dir = temp_dir();
    let ca = Ca::new("test CA");
    let server = ca.leaf("server", false);
    let exporter = start(&tls_web_config(
        dir.path(),
        &server,
        "  min_version: TLS13\n",
    ))
    .await;
    let addr = exporter.local_addr();
    let tls12 = client_config(&[&ca.der], None, &[&rustls::version::TLS12], &[]);
    assert!(https(addr, tls12, "/metrics", &[]).await.is_err());
    let tls13 = client_config(&[&ca.der], None, &[&rustls::version::TLS13], &[]);
    let (response, _, _) = https(addr, tls13, "/metrics", &[]).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    exporter.shutdown().await;
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn basic_auth_guards_every_path_and_serves_the_right_user() {
    let today = chrono::Utc::now().date_naive();
    let sim = org_simulator(today, 500).await;
    let dir = temp_dir();
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        &format!(
            "basic_auth_users:\n  prometheus: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        ),
    );
    let config = parse_config(&format!(
        "integrations:\n  - name: payer\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n",
        PAYER_KEY.0,
        PAYER_KEY.1,
        sim.endpoint()
    ));
    let exporter = Exporter::start(
        config,
        ExporterOptions {
            listen_address: "127.0.0.1:0".into(),
            web_config_file: Some(web),
            ..ExporterOptions::default()
        },
    )
    .await
    .unwrap();
    let addr = exporter.local_addr();
    let right = basic("prometheus", PASSWORD);
    let refused = [
        None,
        Some(basic("prometheus", WRONG_PASSWORD)),
        Some(basic("grafana", PASSWORD)),
        Some(basic("prometheus", "")),
        Some(format!("Bearer {PASSWORD}")),
    ];
    // exporter-toolkit exempts no path: the landing page and health endpoints included.
    for path in ["/metrics", "/", "/-/healthy", "/-/ready", "/nope"] {
        for authorization in &refused {
            let headers: Vec<(&str, &str)> = authorization
                .iter()
                .map(|a| ("authorization", a.as_str()))
                .collect();
            let response = request(addr, Method::GET, path, &headers).await;
            assert_eq!(
                response.status,
                StatusCode::UNAUTHORIZED,
                "{path} {authorization:?}"
            );
            assert_eq!(response.headers["www-authenticate"], "Basic");
            assert_eq!(response.headers["x-frame-options"], "deny");
            assert_eq!(response.text(), "Unauthorized\n");
        }
    }
    let deadline = Instant::now() + WAIT;
    let samples = loop {
        let response = request(addr, Method::GET, "/metrics", &[("authorization", &right)]).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.headers["x-frame-options"], "deny");
        let samples = parse_exposition(&response.text());
        if refresh_success(&samples, "payer").is_some() {
            break samples;
        }
        assert!(Instant::now() < deadline, "no refresh within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    assert!(samples.iter().any(|s| s.name == "aws_cost_daily_usd"));
    let healthy = request(
        addr,
        Method::GET,
        "/-/healthy",
        &[("authorization", &right)],
    )
    .await;
    assert_eq!(
        (healthy.status, healthy.text().as_str()),
        (StatusCode::OK, "Healthy\n")
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn users_are_re_read_for_each_request() {
    let dir = temp_dir();
    let alice = bcrypt::hash("alice-password", 4).unwrap();
    let bob = bcrypt::hash("bob-password", 4).unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        &format!("basic_auth_users:\n  alice: {alice}\n"),
    );
    let exporter = start(&web).await;
    let addr = exporter.local_addr();
    let status = |user: &'static str, password: &'static str| async move {
        request(
            addr,
            Method::GET,
            "/-/healthy",
            &[("authorization", &basic(user, password))],
        )
        .await
        .status
    };
    assert_eq!(status("alice", "alice-password").await, StatusCode::OK);
    assert_eq!(
        status("bob", "bob-password").await,
        StatusCode::UNAUTHORIZED
    );
    std::fs::write(&web, format!("basic_auth_users:\n  bob: {bob}\n")).unwrap();
    assert_eq!(status("bob", "bob-password").await, StatusCode::OK);
    assert_eq!(
        status("alice", "alice-password").await,
        StatusCode::UNAUTHORIZED
    );
    // A broken file keeps the last good one.
    std::fs::write(&web, "basic_auth_users:\n  bob: not-a-hash\n").unwrap();
    assert_eq!(status("bob", "bob-password").await, StatusCode::OK);
    assert_eq!(
        status("alice", "alice-password").await,
        StatusCode::UNAUTHORIZED
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn rotated_certificates_apply_to_new_connections_without_restart() {
    let dir = temp_dir();
    let ca = Ca::new("test CA");
    let first = ca.leaf("first", false);
    let web = tls_web_config(dir.path(), &first, "");
    let exporter = start(&web).await;
    let addr = exporter.local_addr();
    let (_, peer, _) = https(addr, default_client(&ca), "/metrics", &[])
        .await
        .unwrap();
    assert_eq!(peer, first.der);

    let second = ca.leaf("second", false);
    write(dir.path(), "server.pem", &second.cert_pem);
    write(dir.path(), "server.key", &second.key_pem);
    let (response, peer, _) = https(addr, default_client(&ca), "/metrics", &[])
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(peer, second.der);

    // Half a rotation (a new certificate with the old key) is refused: the last good pair
    // stays in use.
    let third = ca.leaf("third", false);
    write(dir.path(), "server.pem", &third.cert_pem);
    let (response, peer, _) = https(addr, default_client(&ca), "/metrics", &[])
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(peer, second.der);
    write(dir.path(), "server.key", &third.key_pem);
    let (_, peer, _) = https(addr, default_client(&ca), "/metrics", &[])
        .await
        .unwrap();
    assert_eq!(peer, third.der);
    exporter.shutdown().await;
}

#[tokio::test]
async fn an_invalid_web_config_stops_the_start() {
    let dir = temp_dir();
    let web = write(
        dir.path(),
        "web.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  cipher_suite: []\n",
    );
    let Err(err) = start_with(Some(&web), Limits::default()).await else {
        panic!("started with an invalid web config");
    };
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "invalid web configuration {} at line 4 column 3: ",
            web.display()
        )),
        "{message}"
    );
    assert!(message.contains("cipher_suite"), "{message}");
}

/// Reads from `stream` until the server closes it (at most [`WAIT`]); what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .ok();
    received
}

async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned()
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused() {
    let exporter = start_with(None, Limits::default()).await.unwrap();
    let addr = exporter.local_addr();
    let big = "a".repeat(20 * 1024);

    let response = raw_exchange(
        addr,
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
    let response = raw_exchange(
        addr,
        format!("GET /{big} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 431 "), "{response}");

    let body = "b".repeat(5000);
    let response = raw_exchange(
        addr,
        format!("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{body}")
            .as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    assert!(
        response.ends_with("413 request body too large\n"),
        "{response}"
    );
    let response = raw_exchange(
        addr,
        format!(
            "POST /-/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n{body}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");

    // A small body is read and ignored; the request is served.
    let response = raw_exchange(
        addr,
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(response.ends_with("Healthy\n"), "{response}");
    exporter.shutdown().await;
}

fn short_timeout() -> Limits {
    Limits {
        read_timeout: Duration::from_millis(500),
        ..Limits::default()
    }
}

#[tokio::test]
async fn slow_and_idle_clients_are_disconnected() {
    let exporter = start_with(None, short_timeout()).await.unwrap();
    let addr = exporter.local_addr();

    // Half a request head, then nothing: closed without an answer.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(read_to_close(&mut half).await, b"");

    // An idle keep-alive connection after a request: closed after the answer.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let received = String::from_utf8(read_to_close(&mut idle).await).unwrap();
    assert!(received.starts_with("HTTP/1.1 200 OK\r\n"), "{received}");
    assert!(received.ends_with("\r\n\r\nHealthy\n"), "{received}");
    exporter.shutdown().await;

    // A TLS client that never starts its handshake: closed too.
    let dir = temp_dir();
    let server_ca = Ca::new("test CA");
    let server = server_ca.leaf("server", false);
    let exporter = start_with(
        Some(&tls_web_config(dir.path(), &server, "")),
        short_timeout(),
    )
    .await
    .unwrap();
    let mut silent = TcpStream::connect(exporter.local_addr()).await.unwrap();
    assert_eq!(read_to_close(&mut silent).await, b"");

    // An HTTP/2 connection left idle after a request: the server ends it.
    let ca_roots = client_config(&[&server_ca.der], None, rustls::ALL_VERSIONS, &[b"h2"]);
    let tcp = TcpStream::connect(exporter.local_addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(ca_roots)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get("https://localhost/-/healthy")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    timeout(WAIT, connection)
        .await
        .expect("the server ends the idle HTTP/2 connection")
        .unwrap()
        .ok();
    assert!(sender.is_closed());
    exporter.shutdown().await;
}

/// A client trickling a request head that never ends, a header every 100 ms, is cut off
/// without an answer once the read timeout (500 ms) has passed since the head's first byte,
/// though its bytes keep coming; a keep-alive client sending whole requests keeps its
/// connection for as long as it likes.
#[tokio::test]
async fn an_endless_head_is_cut_off_and_a_busy_keep_alive_connection_is_not() {
    let exporter = start_with(None, short_timeout()).await.unwrap();
    let addr = exporter.local_addr();

    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    // At most 5 s of headers.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        match timeout(Duration::from_millis(1), slow.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => panic!("an answer to an unfinished head"),
            Err(_) => {}
        }
    }
    let cut = started.elapsed();
    assert!(closed, "the endless head was still read after {cut:?}");
    assert!(cut >= Duration::from_millis(500), "{cut:?}");
    assert!(cut < Duration::from_secs(3), "{cut:?}");

    // Requests every 100 ms on one connection for 1.5 s, three times the read timeout.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    for _ in 0..15 {
        busy.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        while !response.ends_with(b"Healthy\n") {
            let mut buffer = [0u8; 256];
            let n = timeout(WAIT, busy.read(&mut buffer))
                .await
                .expect("an answer")
                .unwrap();
            assert!(
                n > 0,
                "closed after {:?}",
                String::from_utf8_lossy(&response)
            );
            response.extend_from_slice(&buffer[..n]);
        }
        assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    exporter.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let limits = Limits {
        max_connections: 2,
        read_timeout: Duration::from_secs(120),
    };
    let exporter = start_with(None, limits).await.unwrap();
    let addr = exporter.local_addr();
    // Two connections that hold their slots (and prove they are served).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 12];
        timeout(WAIT, stream.read_exact(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buffer, b"HTTP/1.1 200");
        held.push(stream);
    }
    // The third connects (the kernel queues it) but is not served while both are open.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let waited = timeout(Duration::from_secs(1), third.read(&mut byte)).await;
    assert!(waited.is_err(), "served beyond the cap: {waited:?}");
    // One closes: the third is served.
    drop(held.pop());
    let received = String::from_utf8(read_to_close(&mut third).await).unwrap();
    assert!(received.starts_with("HTTP/1.1 200 OK\r\n"), "{received}");
    assert!(received.ends_with("Healthy\n"), "{received}");
    exporter.shutdown().await;
}

fn offline_yaml(names: &[&str]) -> String {
    let mut yaml = String::from("integrations:\n");
    for name in names {
        yaml.push_str(&format!(
            "  - name: {name}\n    account_id: \"123456789012\"\n    access_key_id: AKIATESTOFFL1EXAMPLE\n    secret_access_key: offline-secret-value\n    endpoint_url: http://127.0.0.1:9\n    forecast: false\n"
        ));
    }
    yaml
}

#[test]
fn the_binary_refuses_an_invalid_web_config() {
    let dir = temp_dir();
    let config = write(dir.path(), "config.yaml", &offline_yaml(&["a"]));
    let web = write(
        dir.path(),
        "web.yml",
        "basic_auth_users:\n  prometheus: my-plain-password\n",
    );
    for check in [true, false] {
        let mut command = Command::new(BIN);
        command
            .arg("--config.file")
            .arg(&config)
            .arg("--web.config.file")
            .arg(&web)
            .args(["--web.listen-address", "127.0.0.1:0"]);
        if check {
            command.arg("--config.check");
        }
        let out = command.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "--config.check: {check}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "error: invalid web configuration {} at line 2 column 15: basic_auth_users.prometheus: is not a bcrypt hash",
                web.display()
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("my-plain-password"), "{stderr}");
    }
    // A valid one passes --config.check.
    std::fs::write(&web, "http_server_config:\n  http2: false\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config.check")
        .arg("--config.file")
        .arg(&config)
        .arg("--web.config.file")
        .arg(&web)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "web configuration OK: {}\nconfiguration OK: 1 integration(s): a\n",
            web.display()
        )
    );
}

async fn post(addr: SocketAddr, path: &str) -> HttpResponse {
    request(addr, Method::POST, path, &[]).await
}

#[tokio::test]
async fn post_reload_needs_the_lifecycle_flag() {
    let dir = temp_dir();
    let config = write(dir.path(), "config.yaml", &offline_yaml(&["a"]));
    let config_arg = config.to_string_lossy().into_owned();
    let mut exporter = Running::start(&[
        "--config.file",
        &config_arg,
        "--web.listen-address",
        "127.0.0.1:0",
    ]);
    let addr = exporter.address();
    let response = post(addr, "/-/reload").await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    assert_eq!(response.text(), "Lifecycle API is not enabled.\n");
    let response = get(addr, "/-/reload").await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    let log = exporter.finish();
    assert!(!log.contains("configuration reloaded"), "{log}");
}

#[tokio::test]
async fn post_reload_does_what_sighup_does() {
    let dir = temp_dir();
    let config = write(dir.path(), "config.yaml", &offline_yaml(&["a"]));
    let config_arg = config.to_string_lossy().into_owned();
    let mut exporter = Running::start(&[
        "--config.file",
        &config_arg,
        "--web.listen-address",
        "127.0.0.1:0",
        "--web.enable-lifecycle",
    ]);
    let addr = exporter.address();
    assert_eq!(
        get(addr, "/-/reload").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );

    std::fs::write(&config, offline_yaml(&["a", "b"])).unwrap();
    let response = post(addr, "/-/reload").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    // The answer came after the reload was applied.
    let line = exporter.wait_for_line(|l| l.contains("configuration reloaded"));
    assert!(
        line.contains("added=b") && line.contains("unchanged=a"),
        "{line}"
    );
    let metrics = get(addr, "/metrics").await.text();
    assert!(
        metrics.contains("_config_last_reload_successful 1"),
        "{metrics}"
    );

    // A refused file: 500 with the reason; the running configuration stays.
    std::fs::write(
        &config,
        "integrations:\n  - name: c\n    account_id: \"1\"\n",
    )
    .unwrap();
    let response = post(addr, "/-/reload").await;
    assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.text(),
        format!(
            "failed to reload config: invalid configuration {} at line 3 column 17: integrations[0].account_id: \"1\" is not an AWS account id (exactly 12 digits, quoted as a string)\n",
            config.display()
        )
    );
    let metrics = get(addr, "/metrics").await.text();
    assert!(
        metrics.contains("_config_last_reload_successful 0"),
        "{metrics}"
    );
    std::fs::write(&config, offline_yaml(&["a", "b"])).unwrap();
    assert_eq!(post(addr, "/-/reload").await.status, StatusCode::OK);
    let line =
        exporter.wait_for_line(|l| l.contains("configuration reloaded") && !l.contains("added=b"));
    assert!(line.contains("unchanged=a,b"), "{line}");
}

#[tokio::test]
async fn secrets_never_appear_in_the_output() {
    let dir = temp_dir();
    let ca = Ca::new("test CA");
    let server = ca.leaf("server", false);
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let users = format!("basic_auth_users:\n  prometheus: {hash}\n");
    let web = tls_web_config(dir.path(), &server, &users);
    let config = write(dir.path(), "config.yaml", &offline_yaml(&["a"]));
    let (config_arg, web_arg) = (
        config.to_string_lossy().into_owned(),
        web.to_string_lossy().into_owned(),
    );
    let mut exporter = Running::start(&[
        "--config.file",
        &config_arg,
        "--web.config.file",
        &web_arg,
        "--web.listen-address",
        "127.0.0.1:0",
        "--web.enable-lifecycle",
        "--log.level",
        "debug",
    ]);
    let addr = exporter.address();
    let mut pages = String::new();
    let client = default_client(&ca);
    for (user, password) in [
        ("prometheus", PASSWORD),
        ("prometheus", WRONG_PASSWORD),
        ("nobody", PASSWORD),
    ] {
        for path in ["/metrics", "/"] {
            let (response, _, _) = https(
                addr,
                client.clone(),
                path,
                &[("authorization", &basic(user, password))],
            )
            .await
            .unwrap();
            pages.push_str(&response.text());
        }
    }
    // Broken in the secret-bearing places: the key file holds half a key (the handshake of
    // the next connection re-reads it), then a user's "hash" is the password itself. Each is
    // refused, logged, and the last good configuration stays.
    let authorization = basic("prometheus", PASSWORD);
    let half_key: String = server
        .key_pem
        .lines()
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    write(dir.path(), "server.key", &half_key);
    let (response, peer, _) = https(
        addr,
        client.clone(),
        "/metrics",
        &[("authorization", &authorization)],
    )
    .await
    .unwrap();
    assert_eq!(
        (response.status, peer),
        (StatusCode::OK, server.der.clone())
    );
    pages.push_str(&response.text());
    exporter.wait_for_line(|l| {
        l.contains("web configuration refused") && l.contains("holds no PEM private key")
    });
    write(dir.path(), "server.key", &server.key_pem);
    std::fs::write(
        &web,
        format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {PASSWORD}\n"),
    )
    .unwrap();
    let (response, _, _) = https(
        addr,
        client.clone(),
        "/metrics",
        &[("authorization", &authorization)],
    )
    .await
    .unwrap();
    assert_eq!(response.status, StatusCode::OK, "the last good users stay");
    pages.push_str(&response.text());
    exporter.wait_for_line(|l| {
        l.contains("web configuration refused") && l.contains("is not a bcrypt hash")
    });
    let log = exporter.finish();
    assert!(
        log.contains("basic_auth_users.prometheus: is not a bcrypt hash"),
        "{log}"
    );
    for secret in [
        PASSWORD,
        WRONG_PASSWORD,
        hash.as_str(),
        server.key_body_line().as_str(),
        "offline-secret-value",
    ] {
        assert!(!log.contains(secret), "{secret} in the output:\n{log}");
        assert!(!pages.contains(secret), "{secret} in a page");
    }
}
