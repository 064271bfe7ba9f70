//! Outbound HTTP from inside the gateway (JWKS fetches; later fan-in and jobs) through Pingora's
//! own pooled connector, with a deadline on the whole exchange and a cap on the body.

use crate::core::upstream::exchange::Answer;
use bytes::BytesMut;
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use std::sync::OnceLock;
use std::time::Duration;

/// One connector for the process (JWKS, upstream calls, fan-in, jobs): it pools connections
/// per peer, and trusts what the server's TLS settings trust (`server.ca_file`).
static CONNECTOR: OnceLock<Connector> = OnceLock::new();

/// Builds the shared connector from the server's settings; call once before serving.
pub fn init(options: ConnectorOptions) {
    let _ = CONNECTOR.set(Connector::new(Some(options)));
}

/// The shared connector (with default settings if `init` was not called).
pub fn connector() -> &'static Connector {
    CONNECTOR.get_or_init(|| Connector::new(None))
}

/// `GET url`, answered within `timeout` and with at most `max_body` bytes of body.
pub async fn get(url: &str, timeout: Duration, max_body: usize) -> Result<Answer, String> {
    tokio::time::timeout(timeout, exchange(url, timeout, max_body))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn exchange(url: &str, timeout: Duration, max_body: usize) -> Result<Answer, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the URL must be http:// or https://".to_owned()),
    };
    let host = uri
        .host()
        .ok_or("the URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut peer = HttpPeer::new(addr, tls, host.clone());
    peer.options.connection_timeout = Some(timeout);
    peer.options.read_timeout = Some(timeout);
    peer.options.write_timeout = Some(timeout);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request =
        RequestHeader::build("GET", path.as_bytes(), None).map_err(|e| e.to_string())?;
    let host_header = match uri.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    request
        .insert_header("host", host_header)
        .map_err(|e| e.to_string())?;
    request
        .insert_header("accept", "application/json")
        .map_err(|e| e.to_string())?;
    let (mut session, _reused) = connector()
        .get_http_session(&peer)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    session
        .write_request_header(Box::new(request))
        .await
        .map_err(|e| e.to_string())?;
    session
        .finish_request_body()
        .await
        .map_err(|e| e.to_string())?;
    session
        .read_response_header()
        .await
        .map_err(|e| e.to_string())?;
    let (status, headers) = match session.response_header() {
        Some(header) => (header.status.as_u16(), header.headers.clone()),
        None => return Err("no response header".to_owned()),
    };
    let mut body = BytesMut::new();
    while let Some(chunk) = session
        .read_response_body()
        .await
        .map_err(|e| e.to_string())?
    {
        if body.len() + chunk.len() > max_body {
            return Err(format!("the body is larger than {max_body} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    connector()
        .release_http_session(session, &peer, Some(Duration::from_secs(60)))
        .await;
    Ok(Answer {
        status,
        headers,
        body: body.freeze(),
    })
}
