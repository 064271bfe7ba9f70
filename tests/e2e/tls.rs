//! TLS and HTTP/2 on the client side: HTTPS listeners with certificates chosen by SNI, TLS 1.2+
//! only, certificate reload without dropping connections, HTTP/2 by ALPN and by prior knowledge
//! (h2c), many held polls as streams of one connection, a reset stream freeing only its slot,
//! and `holdfast check` on certificate files. Certificates come from a CA made by the test.

use holdfast_tests::{eventually, free_port, run_holdfast, Holdfast};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::ClientConfig;

/// A throw-away CA that issues leaf certificates into files.
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    pub dir: PathBuf,
}

/// A certificate and key written as PEM files, and the certificate's DER.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Holdfast test CA");
        let ca = params.self_signed(&ca_key).expect("ca");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
        Self {
            ca,
            ca_key,
            dir: dir.to_owned(),
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A leaf for `names`, written as `{file}.pem` and `{file}.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
        self.issue_with(file, names, |_| {})
    }

    pub fn issue_with(
        &self,
        file: &str,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("leaf params");
        adjust(&mut params);
        let leaf = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("leaf");
        let issued = Issued {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: leaf.der().to_vec(),
        };
        std::fs::write(&issued.cert, leaf.pem()).expect("write cert");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A reqwest client trusting this CA, reaching every name in `names` at `addr`.
    pub fn https_client(&self, names: &[&str], addr: SocketAddr) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem().as_bytes()).expect("ca"),
            )
            .timeout(Duration::from_secs(20));
        for name in names {
            builder = builder.resolve(name, addr);
        }
        builder.build().expect("client")
    }
}

/// Accepts any certificate: [`presented`] only looks at what the server sends.
#[derive(Debug)]
struct AnyCertificate(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate `addr` presents to a client that sends `name` in SNI.
async fn presented(addr: SocketAddr, name: &'static str) -> Vec<u8> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = connector
        .connect(ServerName::try_from(name).expect("name"), tcp)
        .await
        .expect("handshake");
    let (_, session) = tls.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.to_vec())
        .expect("a certificate")
}

const ROUTES: &str = r#"
server: { shutdown_grace: 1s, watch_interval: 0s }
routes:
  - { name: poll, match: { path: /poll, methods: [GET] }, longpoll: { channel: updates, timeout: 20s } }
  - { name: push, match: { path: /push, methods: [POST] }, publish: { channel: updates } }
"#;

/// Holdfast with a plain listener (`{listen}`), an h2c one and a TLS one serving `certs`.
/// `extra` is appended to the config (more routes, then other top-level keys).
async fn start(certs: &[&Issued], extra: &str) -> (Holdfast, SocketAddr, SocketAddr) {
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let h2c: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let certificates: String = certs
        .iter()
        .map(|c| {
            format!(
                "        - {{ cert: {}, key: {} }}\n",
                c.cert.display(),
                c.key.display()
            )
        })
        .collect();
    let yaml = format!(
        "listen:\n  - {{listen}}\n  - {{ address: {h2c}, h2c: true }}\n  - address: {tls}\n    tls:\n      certificates:\n{certificates}admin: {{admin}}\n{ROUTES}{extra}"
    );
    (Holdfast::start(&yaml).await, tls, h2c)
}

async fn held(gw: &Holdfast, count: f64) {
    eventually(
        Duration::from_secs(10),
        &format!("{count} held polls"),
        async || gw.metric(r#"holdfast_longpoll_held{route="poll"}"#).await == Some(count),
    )
    .await;
}

async fn connections(gw: &Holdfast, protocol: &str) -> f64 {
    gw.metric(&format!(
        "holdfast_connections_total{{protocol=\"{protocol}\"}}"
    ))
    .await
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_a_certificate_per_sni_name_and_tls_1_2_at_least() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let a = pki.issue("a", &["a.test"]);
    let b = pki.issue("b", &["b.test", "*.b.test"]);
    let origin = holdfast_tests::origin::Origin::echo().await;
    let extra = format!(
        "  - {{ name: proxied, match: {{ prefix: /echo }}, upstream: a }}\nupstreams:\n  a: {{ targets: [{}] }}\n",
        origin.addr
    );
    let (gw, tls, _) = start(&[&a, &b], &extra).await;

    // Each name gets its own certificate; an unknown name gets the first (the default).
    assert_eq!(presented(tls, "a.test").await, a.der);
    assert_eq!(presented(tls, "b.test").await, b.der);
    assert_eq!(presented(tls, "x.b.test").await, b.der);
    assert_eq!(presented(tls, "other.test").await, a.der);

    // A request over HTTPS, verified against the test CA, through the gateway.
    let client = pki.https_client(&["a.test", "b.test"], tls);
    for name in ["a.test", "b.test"] {
        let response = client
            .get(format!("https://{name}:{}/poll?wait=0", tls.port()))
            .send()
            .await
            .expect("https request");
        assert_eq!(response.status(), 204, "{name}");
    }
    let proxied = client
        .get(format!("https://a.test:{}/echo", tls.port()))
        .send()
        .await
        .expect("proxied");
    assert_eq!(proxied.status(), 200);
    let seen = origin.seen();
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        seen[0].header("host"),
        Some(format!("a.test:{}", tls.port()).as_str())
    );

    // A client that offers only TLS 1.0 is refused with an alert, and counted.
    let mut old = tokio::net::TcpStream::connect(tls).await.expect("connect");
    old.write_all(&tls10_client_hello()).await.expect("hello");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), old.read_to_end(&mut answer)).await;
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "a TLS alert record: {answer:?}"
    );
    eventually(
        Duration::from_secs(5),
        "the refused handshake is counted",
        async || {
            gw.metric(r#"holdfast_tls_handshake_failures_total{reason="protocol_version"}"#)
                .await
                == Some(1.0)
        },
    )
    .await;

    // Plain HTTP on the TLS port is refused too; a bare port probe is not counted.
    let plain = holdfast_tests::raw_request(
        tls,
        b"GET /poll HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(!plain.contains("HTTP/1.1 2"), "{plain}");
    drop(tokio::net::TcpStream::connect(tls).await.expect("probe"));
    eventually(
        Duration::from_secs(5),
        "plain HTTP on the TLS port is counted",
        async || {
            gw.metric(r#"holdfast_tls_handshake_failures_total{reason="bad_message"}"#)
                .await
                == Some(1.0)
        },
    )
    .await;
    assert_eq!(
        gw.metric(r#"holdfast_tls_handshake_failures_total{reason="closed"}"#)
            .await,
        None
    );
}

/// A TLS 1.0 ClientHello as an old client sends it: record and hello version 3.1, AES-CBC
/// suites, no extensions.
fn tls10_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x01];
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0x00, 0x2f, 0x00, 0x35]); // two suites
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&u16::try_from(hello.len()).expect("len").to_be_bytes());
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).expect("len").to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_certificate_serves_new_handshakes_after_sighup_and_open_connections_live_on() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let first = pki.issue("site", &["a.test"]);
    let (gw, tls, _) = start(&[&first], "").await;
    assert_eq!(presented(tls, "a.test").await, first.der);

    // A kept-alive HTTPS connection, made before the change.
    let client = pki.https_client(&["a.test"], tls);
    let url = format!("https://a.test:{}/poll?wait=0", tls.port());
    assert_eq!(client.get(&url).send().await.expect("get").status(), 204);
    let opened = connections(&gw, "h2").await + connections(&gw, "http1").await;

    // The files are replaced in place (as a renewal does), then SIGHUP.
    let renewed = pki.issue("site", &["a.test"]);
    assert_ne!(renewed.der, first.der);
    gw.signal(1);
    eventually(Duration::from_secs(10), "the reload", async || {
        gw.metric(r#"holdfast_config_reloads_total{result="ok"}"#)
            .await
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(presented(tls, "a.test").await, renewed.der);

    // The old connection still answers, and no new one was opened for it.
    assert_eq!(client.get(&url).send().await.expect("get").status(), 204);
    assert_eq!(
        connections(&gw, "h2").await + connections(&gw, "http1").await,
        opened
    );

    // A key that does not match its certificate is refused; the running certificate stays.
    let stranger = pki.issue("stranger", &["a.test"]);
    std::fs::copy(&stranger.key, &renewed.key).expect("swap key");
    gw.signal(1);
    eventually(Duration::from_secs(10), "the refused reload", async || {
        gw.metric(r#"holdfast_config_reloads_total{result="error"}"#)
            .await
            .is_some_and(|n| n >= 1.0)
            && gw.log().contains("does not belong to the certificate")
    })
    .await;
    assert_eq!(presented(tls, "a.test").await, renewed.der);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_held_polls_on_one_http2_connection_are_answered_by_one_publish() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let site = pki.issue("site", &["a.test"]);
    let (gw, tls, _) = start(&[&site], "").await;
    let client = pki.https_client(&["a.test"], tls);
    let base = format!("https://a.test:{}", tls.port());

    // The first request opens the connection every later one multiplexes on.
    let first = client
        .get(format!("{base}/poll?wait=0"))
        .send()
        .await
        .expect("get");
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    let polls: Vec<_> = (0..50)
        .map(|_| {
            let request = client.get(format!("{base}/poll")).send();
            tokio::spawn(async move {
                let response = request.await.expect("poll");
                (response.status(), response.text().await.expect("body"))
            })
        })
        .collect();
    held(&gw, 50.0).await;
    let published = client
        .post(format!("{base}/push"))
        .json(&json!({"hello": "h2"}))
        .send()
        .await
        .expect("push");
    assert_eq!(published.status(), 201);
    let answer: Value = published.json().await.expect("publish answer");
    assert_eq!(answer["delivered_to"], 50);
    for poll in polls {
        let (status, body) = poll.await.expect("poll task");
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"hello":"h2"}"#);
    }
    assert_eq!(connections(&gw, "h2").await, 1.0);
    assert_eq!(connections(&gw, "http1").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_by_prior_knowledge_and_a_reset_stream_frees_only_its_slot() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let site = pki.issue("site", &["a.test"]);
    let origin = holdfast_tests::origin::Origin::echo().await;
    let extra = format!(
        "  - {{ name: both, match: {{ path: /both }}, fanin: {{ upstreams: [a, b] }} }}\n  - {{ name: proxied, match: {{ prefix: /echo }}, upstream: a }}\nupstreams:\n  a: {{ targets: [{0}] }}\n  b: {{ targets: [{0}] }}\n",
        origin.addr
    );
    let (gw, _, h2c) = start(&[&site], &extra).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let base = format!("http://{h2c}");
    let first = client
        .get(format!("{base}/poll?wait=0"))
        .send()
        .await
        .expect("get");
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    assert_eq!(first.status(), 204);

    // Proxied and fanned-in requests work over HTTP/2 as well.
    let proxied = client
        .post(format!("{base}/echo/x"))
        .body("over h2c")
        .send()
        .await
        .expect("proxied");
    assert_eq!(proxied.status(), 200);
    assert_eq!(proxied.version(), reqwest::Version::HTTP_2);
    let both = client
        .get(format!("{base}/both"))
        .send()
        .await
        .expect("fanin");
    assert_eq!(both.status(), 200);
    assert_eq!(
        both.headers()
            .get("holdfast-complete")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );

    // Two held polls on the one connection; the client gives up on one (RST_STREAM).
    let kept = tokio::spawn(client.get(format!("{base}/poll")).send());
    let dropped = tokio::spawn(client.get(format!("{base}/poll")).send());
    held(&gw, 2.0).await;
    dropped.abort();
    held(&gw, 1.0).await;
    assert_eq!(
        gw.metric(r#"holdfast_longpoll_completions_total{outcome="client_gone",route="poll"}"#)
            .await,
        Some(1.0)
    );
    let published: Value = client
        .post(format!("{base}/push"))
        .json(&json!({"n": 1}))
        .send()
        .await
        .expect("push")
        .json()
        .await
        .expect("publish answer");
    assert_eq!(published["delivered_to"], 1);
    let response = kept.await.expect("task").expect("poll");
    assert_eq!(response.status(), 200);
    assert_eq!(connections(&gw, "h2c").await, 1.0);

    // HTTP/1.1 still works on the h2c listener, and h2c is refused where it is not on.
    let plain = reqwest::get(format!("{base}/poll?wait=0"))
        .await
        .expect("http/1.1");
    assert_eq!(plain.version(), reqwest::Version::HTTP_11);
    assert_eq!(plain.status(), 204);
    assert!(client
        .get(gw.url("/poll?wait=0"))
        .send()
        .await
        .is_err_and(|e| !e.is_timeout()));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_refuses_bad_certificate_files_and_warns_of_expired_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let good = pki.issue("good", &["a.test"]);
    let other = pki.issue("other", &["b.test"]);
    let expired = pki.issue_with("expired", &["c.test"], |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let config = |certificates: &[(&Path, &Path)], extra: &str| {
        let list: String = certificates
            .iter()
            .map(|(cert, key)| {
                format!(
                    "        - {{ cert: {}, key: {} }}\n",
                    cert.display(),
                    key.display()
                )
            })
            .collect();
        let path = dir.path().join("check.yaml");
        std::fs::write(
            &path,
            format!("listen:\n  - address: 127.0.0.1:8443\n    tls:\n{extra}      certificates:\n{list}routes:\n  - {{ name: poll, match: {{ path: /poll }}, longpoll: {{ channel: c }} }}\n"),
        )
        .expect("write");
        path
    };

    let path = config(&[(&good.cert, &other.key)], "");
    let (code, out, err) = run_holdfast(&["check", path.to_str().expect("path")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("check.yaml:5:")
            && err.contains("listen[0].tls.certificates[0].key: the key")
            && err.contains("does not belong to the certificate"),
        "{err}"
    );

    let missing = dir.path().join("missing.pem");
    let path = config(&[(&missing, &good.key), (&garbage, &good.key)], "");
    let (code, _, err) = run_holdfast(&["check", path.to_str().expect("path")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("listen[0].tls.certificates[0].cert: cannot read")
            && err.contains("listen[0].tls.certificates[1].cert:"),
        "{err}"
    );

    let path = config(&[(&good.cert, &good.key)], "      min_version: 1.0\n");
    let (code, _, err) = run_holdfast(&["check", path.to_str().expect("path")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("min_version"), "{err}");

    let path = config(&[(&expired.cert, &expired.key)], "");
    let (code, out, err) = run_holdfast(&["check", path.to_str().expect("path")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("check.yaml:5:") && err.contains("EXPIRED"),
        "{err}"
    );
}
