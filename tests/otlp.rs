//! A real OTLP trace receiver for the tests: `POST /v1/traces` (http/protobuf) and the gRPC
//! `TraceService/Export` call over HTTP/2 in clear, decoded with the protocol's own types
//! (opentelemetry-proto). It records every span it receives.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One span as received, its ids in lower-case hex.
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
    /// `(trace id, span id)` of each link.
    pub links: Vec<(String, String)>,
    /// OTLP's status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub service_name: String,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Span {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    /// Headers of the last export (to check `otlp.headers`).
    headers: Vec<(String, String)>,
}

/// A running receiver.
pub struct Collector {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// Serves both protocols on one free loopback port (HTTP/1.1 and h2c).
    pub async fn start() -> Self {
        let received: Arc<Mutex<Received>> = Arc::default();
        let router = Router::new()
            .route("/v1/traces", post(http_export))
            .route(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                post(grpc_export),
            )
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let addr = listener.local_addr().expect("collector addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            received,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.received.lock().expect("lock").spans.clone()
    }

    pub fn last_headers(&self) -> Vec<(String, String)> {
        self.received.lock().expect("lock").headers.clone()
    }

    /// Waits (10 s at most) until a received span matches `wanted`; that span.
    pub async fn span(&self, what: &str, wanted: impl Fn(&Span) -> bool) -> Span {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(span) = self.spans().into_iter().find(|span| wanted(span)) {
                return span;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span {what} arrived; received: {:#?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(received: &Mutex<Received>, request: ExportTraceServiceRequest, headers: &HeaderMap) {
    let mut received = received.lock().expect("lock");
    received.headers = headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    for resource_spans in request.resource_spans {
        let service_name = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.spans.push(Span {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                            )
                        })
                        .collect(),
                    links: span
                        .links
                        .iter()
                        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                        .collect(),
                    status: span.status.map_or(0, |status| status.code),
                    service_name: service_name.clone(),
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                });
            }
        }
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(text)) => text.clone(),
        Some(AnyValue::IntValue(n)) => n.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn http_export(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            record(&received, request, &headers);
            let answer = ExportTraceServiceResponse::default().encode_to_vec();
            ([("content-type", "application/x-protobuf")], answer).into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

/// A unary gRPC call: a 5-byte prefix (compression flag, length) before the message, and the
/// status in the trailers.
async fn grpc_export(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let status = match body.get(5..).map(ExportTraceServiceRequest::decode) {
        Some(Ok(request)) if body[0] == 0 => {
            record(&received, request, &headers);
            "0"
        }
        // INVALID_ARGUMENT
        _ => "3",
    };
    let message = ExportTraceServiceResponse::default().encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", status.parse().expect("status"));
    let frames = futures_util::stream::iter([
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(framed))),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Body::new(http_body_util::StreamBody::new(frames)))
        .expect("response")
}
