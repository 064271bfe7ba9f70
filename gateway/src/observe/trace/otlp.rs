//! The OTLP exporter for the `tracing.otlp` settings: gRPC through tonic, http/protobuf through
//! hyper with rustls (the system's roots) for https.

use std::sync::Arc;
use std::time::Duration;

/// The OTLP exporter for `otlp`, built on the export thread.
pub(super) fn exporter(otlp: &conf::Otlp) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
    let endpoint = otlp.endpoint().trim_end_matches('/');
    let timeout = otlp.timeout.get();
    let built = match otlp.protocol {
        conf::OtlpProtocol::Grpc => {
            let mut headers = http::HeaderMap::new();
            for (name, value) in &otlp.headers {
                // Checked when the config was validated.
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    http::HeaderValue::from_str(value.as_str()),
                ) {
                    headers.insert(name, value);
                }
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(timeout)
                .with_metadata(
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers),
                )
                .build()
        }
        conf::OtlpProtocol::HttpProtobuf => {
            let endpoint = if endpoint.ends_with("/v1/traces") {
                endpoint.to_owned()
            } else {
                format!("{endpoint}/v1/traces")
            };
            let headers = otlp
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.as_str().to_owned()))
                .collect();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(timeout)
                .with_headers(headers)
                .with_http_client(http_client(timeout)?)
                .build()
        }
    };
    built.map_err(|error| error.to_string())
}

/// The HTTP client for `http/protobuf`: http:// and https:// (rustls with the system's roots).
fn http_client(
    timeout: Duration,
) -> Result<
    opentelemetry_http::hyper::HyperClient<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
    String,
> {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(certificates) = rustls_native_certs::load_native_certs() {
        roots.add_parsable_certificates(certificates);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| error.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(opentelemetry_http::hyper::HyperClient::new(
        connector, timeout, None,
    ))
}
