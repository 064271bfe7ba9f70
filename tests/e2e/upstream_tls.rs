//! TLS and HTTP/2 to upstreams: a pool with `tls: true` (or `https://` targets) verifies the
//! upstream's certificate against the system roots and `server.ca_file`, or against its own
//! `ca_file` alone; it presents a client certificate when the upstream asks for one (mTLS); an
//! upstream whose certificate no trusted CA signed is a 502. `http2: true` speaks HTTP/2 (h2c
//! in clear).

use super::tls::Pki;
use axum::routing::get;
use axum::Router;
use holdfast_tests::origin::Origin;
use holdfast_tests::Holdfast;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

/// A TLS origin for `localhost` with a certificate from `pki`, answering every request with a
/// small JSON body; with `client_ca`, only clients presenting a certificate from that CA get
/// through the handshake.
async fn tls_origin(
    pki: &Pki,
    client_ca: Option<&Pki>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let leaf = pki.issue("origin", &["localhost"]);
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_file(ca.ca_file()).expect("client ca"))
                .expect("root");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(
            vec![CertificateDer::from_pem_file(&leaf.cert).expect("cert")],
            PrivateKeyDer::from_pem_file(&leaf.key).expect("key"),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let body = br#"{"over":"tls"}"#;
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.write_all(body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, task)
}

fn config(server_ca: Option<&Path>, upstream: &str, origin: SocketAddr) -> String {
    let ca = server_ca
        .map(|path| format!(", ca_file: {}", path.display()))
        .unwrap_or_default();
    format!(
        r#"
server: {{ shutdown_grace: 1s{ca} }}
upstreams:
  secure: {{ targets: [{origin}], tls: true, sni: localhost, timeout: 5s{upstream} }}
routes:
  - {{ name: proxied, match: {{ path: /proxied }}, upstream: secure }}
  - {{ name: called, match: {{ path: /called }}, upstream: secure, repoll_on: [204], hold: 2s }}
"#
    )
}

async fn assert_refused(gw: &Holdfast) {
    let response = reqwest::get(gw.url("/proxied")).await.expect("get");
    assert_eq!(response.status(), 502);
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(
        problem["detail"],
        "upstream `secure` refused or dropped the connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_is_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let (origin, task) = tls_origin(&pki, None).await;
    let ca_file = pki.ca_file();
    let upstream_ca = format!(", ca_file: {}", ca_file.display());
    let trusting = Holdfast::start(&config(Some(&ca_file), "", origin)).await;
    let own_ca = Holdfast::start(&config(None, &upstream_ca, origin)).await;
    for gw in [&trusting, &own_ca] {
        for path in ["/proxied", "/called"] {
            let response = reqwest::get(gw.url(path)).await.expect("get");
            assert_eq!(response.status(), 200, "{path}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["over"], "tls", "{path}");
        }
    }

    // Without the CA, or with another CA as the upstream's own, the origin's certificate is
    // not trusted: 502, and nothing leaks.
    let distrusting = Holdfast::start(&config(None, "", origin)).await;
    assert_refused(&distrusting).await;
    assert_eq!(
        reqwest::get(distrusting.url("/called"))
            .await
            .expect("get")
            .status(),
        502
    );
    let other_dir = tempfile::tempdir().expect("dir");
    let other = Pki::new(other_dir.path());
    let wrong_ca = format!(", ca_file: {}", other.ca_file().display());
    let wrong = Holdfast::start(&config(Some(&ca_file), &wrong_ca, origin)).await;
    assert_refused(&wrong).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_is_presented_to_an_upstream_that_asks_for_one() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let clients_dir = tempfile::tempdir().expect("dir");
    let clients = Pki::new(clients_dir.path());
    let (origin, task) = tls_origin(&pki, Some(&clients)).await;
    let ca = format!(", ca_file: {}", pki.ca_file().display());
    let client = clients.issue("gateway", &["gateway.test"]);
    let mtls = format!(
        "{ca}, client_cert: {}, client_key: {}",
        client.cert.display(),
        client.key.display()
    );
    let with_certificate = Holdfast::start(&config(None, &mtls, origin)).await;
    for path in ["/proxied", "/called"] {
        let response = reqwest::get(with_certificate.url(path)).await.expect("get");
        assert_eq!(response.status(), 200, "{path}");
    }
    let without = Holdfast::start(&config(None, &ca, origin)).await;
    assert_refused(&without).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_to_an_upstream_in_clear_is_h2c() {
    let version =
        get(|request: axum::extract::Request| async move { format!("{:?}", request.version()) });
    let origin = Origin::start(
        Router::new()
            .route("/version", version.clone())
            .route("/h2/version", version),
    )
    .await;
    let gw = Holdfast::start(&format!(
        r#"
upstreams:
  h2: {{ targets: [{}], http2: true }}
  h1: {{ targets: [{}] }}
routes:
  - {{ name: h2, match: {{ prefix: /h2 }}, upstream: h2 }}
  - {{ name: h1, match: {{ path: /version }}, upstream: h1 }}
"#,
        origin.addr, origin.addr
    ))
    .await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let over_h2 = client.get(gw.url("/h2/version")).send().await.expect("get");
        assert_eq!(over_h2.status(), 200);
        assert_eq!(over_h2.text().await.expect("body"), "HTTP/2.0");
    }
    let over_h1 = client.get(gw.url("/version")).send().await.expect("get");
    assert_eq!(over_h1.text().await.expect("body"), "HTTP/1.1");
}
