//! The `tracing:` section: OpenTelemetry spans exported over OTLP, and how they are sampled.
//! Off unless the section is present.

use crate::{Duration, EnvString, FieldError};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Where spans go and which requests make them.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// `service.name` of every span (default `holdfast`).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    #[serde(default)]
    pub otlp: Otlp,
    #[serde(default)]
    pub sampler: Sampler,
    /// More resource attributes (`deployment.environment.name: prod`), on every span.
    #[serde(default)]
    pub resource: BTreeMap<String, EnvString>,
    #[serde(default)]
    pub batch: Batch,
}

fn default_service_name() -> String {
    "holdfast".to_owned()
}

/// The OTLP collector spans are sent to.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Otlp {
    /// The collector's address, `http://host:port` (default `http://localhost:4318` for
    /// `http/protobuf`, `http://localhost:4317` for `grpc`). For `http/protobuf` the path
    /// `/v1/traces` is added unless the address already ends with it. May be
    /// `${OTEL_EXPORTER_OTLP_ENDPOINT}`.
    pub endpoint: Option<EnvString>,
    pub protocol: OtlpProtocol,
    /// Headers sent with every export (`authorization: Bearer ${OTLP_TOKEN}`).
    pub headers: BTreeMap<String, EnvString>,
    /// How long one export may take before it is given up (its spans are counted as dropped).
    pub timeout: Duration,
}

impl Default for Otlp {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: OtlpProtocol::default(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Otlp {
    /// The address exports go to: the configured one, or the protocol's default.
    pub fn endpoint(&self) -> &str {
        match (&self.endpoint, self.protocol) {
            (Some(endpoint), _) => endpoint.as_str(),
            (None, OtlpProtocol::HttpProtobuf) => "http://localhost:4318",
            (None, OtlpProtocol::Grpc) => "http://localhost:4317",
        }
    }
}

/// The OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

/// Which requests are traced.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Sampler {
    /// The share of new traces recorded, from 0 (none) to 1 (all).
    pub ratio: f64,
    /// A request that arrives with a `traceparent` follows its caller's decision (its
    /// `sampled` flag) instead of the ratio.
    pub parent_based: bool,
}

impl Default for Sampler {
    fn default() -> Self {
        Self {
            ratio: 1.0,
            parent_based: true,
        }
    }
}

/// How finished spans wait for export: a bounded queue, sent in batches. A full queue drops
/// spans (counted) rather than slow a request.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Batch {
    /// Spans waiting for export at most.
    pub max_queue: usize,
    /// Spans in one export at most.
    pub max_batch: usize,
    /// The longest a span waits before its batch is sent.
    pub delay: Duration,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            max_queue: 4096,
            max_batch: 512,
            delay: Duration::from_secs(1),
        }
    }
}

/// Checks the section; every error is pushed.
pub(crate) fn check(tracing: &Tracing, errors: &mut Vec<FieldError>) {
    if tracing.service_name.trim().is_empty() {
        errors.push(FieldError::new("tracing.service_name", "must not be empty"));
    }
    if let Err(message) = check_endpoint(&tracing.otlp) {
        errors.push(FieldError::new("tracing.otlp.endpoint", message));
    }
    for (name, value) in &tracing.otlp.headers {
        let at = format!("tracing.otlp.headers.{name}");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(FieldError::new(
                at,
                format!("`{name}` is not a header name"),
            ));
        } else if http::HeaderValue::from_str(value.as_str()).is_err() {
            errors.push(FieldError::new(
                at,
                "the value is not a valid header value (control characters or non-ASCII)",
            ));
        }
    }
    if tracing.otlp.timeout.get().is_zero() {
        errors.push(FieldError::new(
            "tracing.otlp.timeout",
            "must be longer than 0s",
        ));
    }
    let ratio = tracing.sampler.ratio;
    if !(0.0..=1.0).contains(&ratio) {
        errors.push(FieldError::new(
            "tracing.sampler.ratio",
            format!("must be between 0 and 1, not {ratio}"),
        ));
    }
    for name in tracing.resource.keys() {
        if name.is_empty() || name == "service.name" {
            errors.push(FieldError::new(
                format!("tracing.resource.{name}"),
                "an attribute name must not be empty, and `service.name` is set by `service_name`",
            ));
        }
    }
    let batch = &tracing.batch;
    if batch.max_queue == 0 {
        errors.push(FieldError::new(
            "tracing.batch.max_queue",
            "must be at least 1",
        ));
    }
    if batch.max_batch == 0 || batch.max_batch > batch.max_queue.max(1) {
        errors.push(FieldError::new(
            "tracing.batch.max_batch",
            format!(
                "must be between 1 and max_queue ({})",
                batch.max_queue.max(1)
            ),
        ));
    }
    if batch.delay.get().is_zero() {
        errors.push(FieldError::new(
            "tracing.batch.delay",
            "must be longer than 0s",
        ));
    }
}

fn check_endpoint(otlp: &Otlp) -> Result<(), String> {
    let endpoint = otlp.endpoint();
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| format!("`{endpoint}` is not an address such as http://collector:4318"))?;
    match (uri.scheme_str(), otlp.protocol) {
        (Some("http"), _) | (Some("https"), OtlpProtocol::HttpProtobuf) => {}
        (Some("https"), OtlpProtocol::Grpc) => {
            return Err(
                "https is supported with `protocol: http/protobuf`; for gRPC, send to a \
                 Collector on the same network over http://"
                    .to_owned(),
            )
        }
        _ => return Err(format!("`{endpoint}` must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{endpoint}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{endpoint}` must not have a query"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::load_str;
    use std::path::Path;

    fn errors(yaml: &str) -> String {
        let config = load_str(Path::new("t.yaml"), yaml).expect("parses");
        crate::validate(&config)
            .map(|()| String::new())
            .unwrap_or_else(|errors| errors.to_string())
    }

    const BASE: &str = "listen: 127.0.0.1:8080\n";

    #[test]
    fn a_valid_section_loads_with_defaults() {
        let config = load_str(
            Path::new("t.yaml"),
            &format!("{BASE}tracing:\n  otlp: {{ endpoint: http://collector:4318 }}\n"),
        )
        .expect("parses");
        let tracing = config.tracing.as_ref().expect("present");
        assert_eq!(tracing.service_name, "holdfast");
        assert_eq!(tracing.sampler.ratio, 1.0);
        assert!(tracing.sampler.parent_based);
        assert_eq!(errors(&format!("{BASE}tracing: {{}}\n")), "");
    }

    #[test]
    fn every_bad_setting_is_reported_with_its_line() {
        let text = errors(&format!(
            "{BASE}tracing:\n  service_name: ''\n  otlp:\n    endpoint: ftp://x\n    headers: {{ 'bad name': v }}\n    timeout: 0s\n  sampler: {{ ratio: 1.5 }}\n  batch: {{ max_queue: 0, delay: 0s }}\n"
        ));
        for expected in [
            "t.yaml:3",
            "tracing.service_name",
            "t.yaml:5",
            "must start with http:// or https://",
            "is not a header name",
            "tracing.otlp.timeout",
            "t.yaml:8",
            "must be between 0 and 1, not 1.5",
            "tracing.batch.max_queue",
            "tracing.batch.max_batch",
            "tracing.batch.delay",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }

    #[test]
    fn grpc_over_https_is_refused_and_unknown_keys_are_named() {
        let text = errors(&format!(
            "{BASE}tracing: {{ otlp: {{ endpoint: 'https://c:4317', protocol: grpc }} }}\n"
        ));
        assert!(text.contains("http/protobuf"), "{text}");
        let unknown = load_str(
            Path::new("t.yaml"),
            &format!("{BASE}tracing: {{ sampler: {{ ration: 0.5 }} }}\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("ratio"), "{unknown}");
        let protocol = load_str(
            Path::new("t.yaml"),
            &format!("{BASE}tracing: {{ otlp: {{ protocol: thrift }} }}\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(protocol.contains("t.yaml:2"), "{protocol}");
    }
}
