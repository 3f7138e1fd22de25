//! Connection URLs read as libpq reads them, and the TLS every connection uses.
//!
//! tokio-postgres parses most of a PostgreSQL URL but knows `sslmode` only as far as
//! `disable`/`prefer`/`require` (never verifying anything itself) and rejects `sslrootcert` and
//! `sslmode=verify-ca|verify-full`. So [`ConnectOptions::from_url`] takes those parameters out of
//! the URL (or the `key=value` string), interprets them as libpq's "SSL Support" chapter
//! describes, hands the rest to [`tokio_postgres::Config`], and stops at any parameter it does
//! not know, naming it.
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | – |
//! | `prefer` (default) | when the server offers TLS | no |
//! | `require` | always | no; the chain as `verify-ca` when `sslrootcert` is a file |
//! | `verify-ca` | always | chain against `sslrootcert` (the system's roots without it) |
//! | `verify-full` | always | chain and host name |
//!
//! `sslrootcert=system` means the system's roots and implies `verify-full` (a weaker explicit
//! mode is refused, as libpq does). A certificate that is not checked still has to sign the
//! handshake (the TLS signature is verified), so the key exchange is with the certificate's key.

use std::{fmt, path::PathBuf, str::FromStr, sync::Arc};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::secret::Secret;

/// libpq's `sslmode`, less `allow` (plaintext first, then TLS), which tokio-postgres cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where the trusted certificate authorities come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// No `sslrootcert`: the system's roots when verifying.
    Unset,
    /// A PEM file, read at start.
    File(PathBuf),
    /// `sslrootcert=system`.
    System,
}

/// The parameters tokio-postgres understands itself, passed through unchanged.
const PASSED_THROUGH: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// One connection target: the tokio-postgres settings and the TLS that goes with them.
#[derive(Clone)]
pub struct ConnectOptions {
    /// tokio-postgres redacts the password in `Debug`; `Secret` keeps it out of `Display` too.
    pub config: Secret<tokio_postgres::Config>,
    pub ssl_mode: SslMode,
    pub root_certs: RootCerts,
    tls: MakeRustlsConnect,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("hosts", &self.hosts())
            .field("ssl_mode", &self.ssl_mode)
            .field("root_certs", &self.root_certs)
            .finish_non_exhaustive()
    }
}

/// A parameter of the URL or `key=value` string: decoded key and value, and its raw text.
struct Param {
    key: String,
    value: String,
    raw: String,
}

impl ConnectOptions {
    /// Parse a `postgres://` / `postgresql://` URL or a libpq `key=value` string. The error is
    /// one line for the settings message; it never contains the password.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let (base, params) = if is_url {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            (base.to_string(), url_params(query)?)
        } else {
            (String::new(), keyword_params(url)?)
        };

        let mut mode = None;
        let mut root = RootCerts::Unset;
        let mut kept = Vec::new();
        let mut unknown = Vec::new();
        for p in params {
            match p.key.as_str() {
                "sslmode" => {
                    mode = Some(match p.value.as_str() {
                        "disable" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        "allow" => {
                            return Err(
                                "sslmode=allow is not supported (use prefer or disable)".into()
                            );
                        }
                        other => {
                            return Err(format!(
                                "sslmode={other:?} is not one of disable, prefer, require, \
                                 verify-ca, verify-full"
                            ));
                        }
                    })
                }
                "sslrootcert" if p.value == "system" => root = RootCerts::System,
                "sslrootcert" if p.value.is_empty() => root = RootCerts::Unset,
                "sslrootcert" => root = RootCerts::File(PathBuf::from(&p.value)),
                key if PASSED_THROUGH.contains(&key) => kept.push(p.raw),
                key => unknown.push(key.to_string()),
            }
        }
        if !unknown.is_empty() {
            return Err(format!(
                "unsupported parameter{} {} (this service reads sslmode, sslrootcert and {})",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join(", "),
                PASSED_THROUGH.join(", ")
            ));
        }
        let ssl_mode = match (mode, &root) {
            (None, RootCerts::System) | (Some(SslMode::VerifyFull), _) => SslMode::VerifyFull,
            (Some(weak), RootCerts::System) if weak != SslMode::Disable => {
                return Err(format!(
                    "sslmode={} may not be used with sslrootcert=system (use verify-full)",
                    weak.as_str()
                ));
            }
            // libpq: `require` with a root certificate file verifies as `verify-ca`.
            (Some(SslMode::Require), RootCerts::File(_)) => SslMode::VerifyCa,
            (Some(m), _) => m,
            (None, _) => SslMode::Prefer,
        };

        let rest = if is_url {
            if kept.is_empty() {
                base
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        } else {
            kept.join(" ")
        };
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            format!("not a valid PostgreSQL connection URL ({why})")
        })?;
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            _ => PgSslMode::Require,
        });
        let tls = MakeRustlsConnect::new(client_config(ssl_mode, &root)?);
        Ok(Self {
            config: Secret::new(config),
            ssl_mode,
            root_certs: root,
            tls,
        })
    }

    /// This service's connect timeout and `application_name` (unless the URL names one).
    pub fn for_service(mut self, connect_timeout: std::time::Duration) -> Self {
        let mut config = self.config.expose().clone();
        config.connect_timeout(connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("clerk-users");
        }
        self.config = Secret::new(config);
        self
    }

    /// The connector for tokio-postgres (used only when `ssl_mode` is not `disable`).
    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// Whether the server's certificate is checked against trusted roots.
    pub fn verifies(&self) -> bool {
        matches!(self.ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// The hosts, for messages (`host:port`, or the socket folder).
    pub fn hosts(&self) -> String {
        let config = self.config.expose();
        let ports = config.get_ports();
        config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match h {
                    Host::Tcp(h) if h.contains(':') => format!("[{h}]:{port}"),
                    Host::Tcp(h) => format!("{h}:{port}"),
                    Host::Unix(p) => p.display().to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// What to warn about at start: an encrypted connection to a non-loopback host whose
    /// certificate nobody checks (libpq's `prefer` and `require` do the same, silently).
    pub fn warning(&self) -> Option<String> {
        if self.verifies() || self.ssl_mode == SslMode::Disable {
            return None;
        }
        let remote: Vec<&str> = self
            .config
            .expose()
            .get_hosts()
            .iter()
            .filter_map(|h| match h {
                Host::Tcp(h) if !is_loopback(h) => Some(h.as_str()),
                _ => None,
            })
            .collect();
        if remote.is_empty() {
            return None;
        }
        Some(format!(
            "sslmode={}: the connection to {} is {}encrypted but the server's certificate is not \
             verified, so anyone on the path can pose as the database; use sslmode=verify-full \
             with sslrootcert",
            self.ssl_mode.as_str(),
            remote.join(", "),
            if self.ssl_mode == SslMode::Prefer {
                "at best "
            } else {
                ""
            }
        ))
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn decode(s: &str) -> Result<String, String> {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| "not a valid PostgreSQL connection URL".to_string())
}

/// `a=1&b=2` of a URL: percent-decoded key and value, and the raw pair for tokio-postgres.
fn url_params(query: &str) -> Result<Vec<Param>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|raw| {
            let (k, v) = raw.split_once('=').ok_or_else(|| {
                format!(
                    "not a valid PostgreSQL connection URL (parameter {:?} has no value)",
                    decode(raw).unwrap_or_default()
                )
            })?;
            Ok(Param {
                key: decode(k)?,
                value: decode(v)?,
                raw: raw.to_string(),
            })
        })
        .collect()
}

/// libpq's `key=value` form: values may be single-quoted, with `\` escaping.
fn keyword_params(s: &str) -> Result<Vec<Param>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "not a valid PostgreSQL connection URL or key=value string (at {key:?})"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value of {key}")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
        out.push(Param {
            raw: format!("{key}='{quoted}'"),
            key,
            value,
        });
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The rustls client configuration for a mode and its roots.
fn client_config(mode: SslMode, root: &RootCerts) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(Unverified {
            provider: Arc::clone(&provider),
        }),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = load_roots(root)?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("sslrootcert: {e}"))?;
            if mode == SslMode::VerifyCa {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What PostgreSQL 17's direct TLS negotiation (sslnegotiation=direct) requires; ignored
    // by servers that negotiate TLS the classic way.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

fn load_roots(root: &RootCerts) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    match root {
        RootCerts::File(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("sslrootcert {}: cannot read it ({e})", path.display()))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    format!("sslrootcert {}: not PEM certificates ({e})", path.display())
                })?;
            if certs.is_empty() {
                return Err(format!(
                    "sslrootcert {}: holds no PEM certificate",
                    path.display()
                ));
            }
            for cert in certs {
                store.add(cert).map_err(|e| {
                    format!(
                        "sslrootcert {}: a certificate cannot be used as a root ({e})",
                        path.display()
                    )
                })?;
            }
        }
        RootCerts::Unset | RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(
                    "the system's certificate store holds no certificate authority (install \
                     ca-certificates, or name a file in sslrootcert)"
                        .into(),
                );
            }
        }
    }
    Ok(store)
}

/// `prefer` and `require` without a root file: any certificate, but the handshake must still be
/// signed by its key.
#[derive(Debug)]
struct Unverified {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

/// `verify-ca`: the chain must lead to a trusted root; the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        // webpki checks the chain before the name: a name error means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// One line for a failed connection or statement: PostgreSQL's own message (severity, SQLSTATE,
/// message, detail, hint), or the chain of causes (the TLS failure), never a password.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut line = format!(
            "the server said: {} {}: {}",
            db.severity(),
            db.code().code(),
            db.message()
        );
        if let Some(detail) = db.detail() {
            line.push_str(&format!(" (detail: {detail})"));
        }
        if let Some(hint) = db.hint() {
            line.push_str(&format!(" (hint: {hint})"));
        }
        return line.replace('\n', " ");
    }
    let mut line = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !line.ends_with(&text) {
            line = format!("{line}: {text}");
        }
        source = s.source();
    }
    if line.contains("UnknownIssuer") {
        line.push_str(
            " (the server's certificate is not signed by a certificate authority in sslrootcert)",
        );
    } else if line.contains("not valid for name") || line.contains("NotValidForName") {
        line.push_str(
            " (the server's certificate does not name the host of the URL; verify-full compares them)",
        );
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> ConnectOptions {
        ConnectOptions::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn sslmode_defaults_to_prefer_and_is_taken_out_of_the_url() {
        let o = parse("postgres://u:pw@db.example:6543/app?application_name=x");
        assert_eq!(o.ssl_mode, SslMode::Prefer);
        assert_eq!(o.config.expose().get_ssl_mode(), PgSslMode::Prefer);
        assert_eq!(o.config.expose().get_application_name(), Some("x"));
        assert_eq!(o.hosts(), "db.example:6543");
        for (mode, pg) in [
            ("disable", PgSslMode::Disable),
            ("require", PgSslMode::Require),
            ("verify-full", PgSslMode::Require),
        ] {
            let o = parse(&format!("postgresql://u@h/app?sslmode={mode}"));
            assert_eq!(o.ssl_mode.as_str(), mode);
            assert_eq!(o.config.expose().get_ssl_mode(), pg);
        }
    }

    #[test]
    fn sslrootcert_system_implies_verify_full_and_refuses_weaker_modes() {
        if rustls_native_certs::load_native_certs().certs.is_empty() {
            return;
        }
        let o = parse("postgres://u@h/app?sslrootcert=system");
        assert_eq!(o.ssl_mode, SslMode::VerifyFull);
        assert_eq!(o.root_certs, RootCerts::System);
        let e = ConnectOptions::from_url("postgres://u@h/app?sslrootcert=system&sslmode=require")
            .unwrap_err();
        assert!(e.contains("use verify-full"), "{e}");
    }

    #[test]
    fn unknown_parameters_are_named() {
        let e = ConnectOptions::from_url(
            "postgres://u:secretpw@h/app?sslcert=/c.pem&sslmode=require&gssencmode=disable",
        )
        .unwrap_err();
        assert!(
            e.starts_with("unsupported parameters sslcert, gssencmode"),
            "{e}"
        );
        assert!(!e.contains("secretpw"));
        let e = ConnectOptions::from_url("postgres://u@h/app?sslmode=verify").unwrap_err();
        assert!(e.contains("sslmode=\"verify\""), "{e}");
        let e = ConnectOptions::from_url("postgres://u@h/app?sslmode=allow").unwrap_err();
        assert!(e.contains("allow is not supported"), "{e}");
    }

    #[test]
    fn a_missing_root_file_is_named() {
        let e = ConnectOptions::from_url(
            "postgres://u@h/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap_err();
        assert!(
            e.starts_with("sslrootcert /nonexistent/ca.pem: cannot read it"),
            "{e}"
        );
    }

    #[test]
    fn keyword_form_works_too() {
        let o = parse(
            "host=db.example port=5433 user=app password='p w\\'x' dbname=app sslmode=disable",
        );
        assert_eq!(o.ssl_mode, SslMode::Disable);
        assert_eq!(o.config.expose().get_password(), Some(&b"p w'x"[..]));
        assert_eq!(o.hosts(), "db.example:5433");
        let e = ConnectOptions::from_url("host=h sslkey=/k").unwrap_err();
        assert!(e.contains("unsupported parameter sslkey"), "{e}");
    }

    #[test]
    fn unverified_encryption_to_a_remote_host_is_warned_about() {
        assert!(parse("postgres://u@db.example/app").warning().is_some());
        assert!(
            parse("postgres://u@db.example/app?sslmode=require")
                .warning()
                .unwrap()
                .contains("db.example")
        );
        assert!(parse("postgres://u@localhost/app").warning().is_none());
        assert!(
            parse("postgres://u@127.0.0.1/app?sslmode=require")
                .warning()
                .is_none()
        );
        assert!(parse("postgres://u@[::1]/app").warning().is_none());
        assert!(
            parse("postgres://u@db.example/app?sslmode=disable")
                .warning()
                .is_none()
        );
    }
}
