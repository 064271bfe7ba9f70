//! TLS to upstreams: a pool with `tls: true` (or `https://` targets) verifies the upstream's
//! certificate against the system roots and `server.ca_file`, for proxied routes and for the
//! calls the gateway makes itself; an upstream whose certificate no trusted CA signed is a 502.

use holdfast_tests::Holdfast;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;

/// A throw-away CA (PEM) and a TLS origin for `localhost` signed by it, answering every
/// request with a small JSON body.
async fn tls_origin() -> (String, SocketAddr, tokio::task::JoinHandle<()>) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Holdfast test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
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
    (ca.pem(), addr, task)
}

fn config(ca_file: Option<&std::path::Path>, origin: SocketAddr) -> String {
    let ca = ca_file
        .map(|path| format!(", ca_file: {}", path.display()))
        .unwrap_or_default();
    format!(
        r#"
server: {{ shutdown_grace: 1s{ca} }}
upstreams:
  secure: {{ targets: [{origin}], tls: true, sni: localhost, timeout: 5s }}
routes:
  - {{ name: proxied, match: {{ path: /proxied }}, upstream: secure }}
  - {{ name: called, match: {{ path: /called }}, upstream: secure, repoll_on: [204], hold: 2s }}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_is_verified_against_the_configured_ca() {
    let (ca_pem, origin, task) = tls_origin().await;
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write ca");
    let trusting = Holdfast::start(&config(Some(&ca_file), origin)).await;
    for path in ["/proxied", "/called"] {
        let response = reqwest::get(trusting.url(path)).await.expect("get");
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["over"], "tls", "{path}");
    }

    // Without the CA, the origin's certificate is not trusted: 502, and nothing leaks.
    let distrusting = Holdfast::start(&config(None, origin)).await;
    let response = reqwest::get(distrusting.url("/proxied"))
        .await
        .expect("get");
    assert_eq!(response.status(), 502);
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(
        problem["detail"],
        "upstream `secure` refused or dropped the connection"
    );
    assert_eq!(
        reqwest::get(distrusting.url("/called"))
            .await
            .expect("get")
            .status(),
        502
    );
    task.abort();
}
