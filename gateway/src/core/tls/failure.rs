//! Why a TLS handshake failed, as a small fixed set of reasons for
//! `holdfast_tls_handshake_failures_total{reason}`.
//!
//! Pingora's rustls acceptor keeps the rustls error only as text (`TLS accept() failed: … tls
//! connect error: peer is incompatible: …`), so the reason is read from that text, matched
//! against rustls's own `Display` of each error it stands for rather than copied strings.

use rustls::{AlertDescription, Error, InvalidMessage, PeerIncompatible as Incompatible};

/// The metric label for a failed handshake.
pub fn reason(error: &pingora_error::Error) -> &'static str {
    classify(&error.to_string())
}

fn classify(text: &str) -> &'static str {
    // Most specific first: the families below share these errors' prefixes.
    let specific = [
        // A client that sends no signature_algorithms extension predates TLS 1.2.
        (
            Error::PeerIncompatible(Incompatible::SignatureAlgorithmsExtensionRequired),
            "protocol_version",
        ),
        (
            Error::PeerIncompatible(Incompatible::SupportedVersionsExtensionRequired),
            "protocol_version",
        ),
        (
            Error::PeerIncompatible(Incompatible::Tls12NotOffered),
            "protocol_version",
        ),
        (
            Error::PeerIncompatible(Incompatible::Tls12NotOfferedOrEnabled),
            "protocol_version",
        ),
        (
            Error::AlertReceived(AlertDescription::BadCertificate),
            "certificate_rejected",
        ),
        (
            Error::AlertReceived(AlertDescription::UnknownCA),
            "certificate_rejected",
        ),
        (
            Error::AlertReceived(AlertDescription::CertificateUnknown),
            "certificate_rejected",
        ),
        (
            Error::AlertReceived(AlertDescription::CertificateExpired),
            "certificate_rejected",
        ),
    ];
    if let Some((_, reason)) = specific
        .iter()
        .find(|(error, _)| text.contains(&error.to_string()))
    {
        return reason;
    }
    let families = [
        (
            Error::PeerIncompatible(Incompatible::NoCipherSuitesInCommon),
            "incompatible",
        ),
        (
            Error::AlertReceived(AlertDescription::HandshakeFailure),
            "client_alert",
        ),
        (
            Error::InvalidMessage(InvalidMessage::InvalidContentType),
            "bad_message",
        ),
        (
            Error::InappropriateMessage {
                expect_types: Vec::new(),
                got_type: rustls::ContentType::Alert,
            },
            "bad_message",
        ),
        (
            Error::PeerMisbehaved(rustls::PeerMisbehaved::IllegalMiddleboxChangeCipherSpec),
            "misbehaved",
        ),
    ];
    let family = families.iter().find(|(error, _)| {
        let shown = error.to_string();
        let prefix = shown.split(':').next().unwrap_or_default();
        let prefix = prefix.split(" of type").next().unwrap_or(prefix);
        text.contains(prefix)
    });
    if let Some((_, reason)) = family {
        return reason;
    }
    let lower = text.to_ascii_lowercase();
    if ["eof", "reset", "broken pipe", "connection aborted"]
        .iter()
        .any(|end| lower.contains(end))
    {
        return "closed";
    }
    "other"
}

#[cfg(test)]
mod tests {
    use super::classify;

    /// As Pingora writes them.
    fn accept_failed(rustls_error: &str) -> String {
        format!("TLSHandshakeFailure context: TLS accept() failed:  TLSHandshakeFailure context: tls connect error: {rustls_error}")
    }

    #[test]
    fn names_the_rustls_error_in_the_text() {
        let cases = [
            (
                "peer is incompatible: SignatureAlgorithmsExtensionRequired",
                "protocol_version",
            ),
            (
                "peer is incompatible: NoCipherSuitesInCommon",
                "incompatible",
            ),
            (
                "received corrupt message of type InvalidContentType",
                "bad_message",
            ),
            ("received fatal alert: UnknownCA", "certificate_rejected"),
            ("received fatal alert: DecodeError", "client_alert"),
            ("tls handshake eof", "closed"),
            ("something new", "other"),
        ];
        for (text, reason) in cases {
            assert_eq!(classify(&accept_failed(text)), reason, "{text}");
        }
    }
}
