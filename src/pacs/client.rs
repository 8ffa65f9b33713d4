//! The HTTP side of DICOMweb: one server's address, credentials and trust; requests
//! with bounded reads, the same-origin redirect rule and typed errors; QIDO-RS searches
//! and STOW-RS stores. WADO-RS pulls are in `pull`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ureq::http::Response;
use ureq::tls::{PemItem, RootCerts, TlsConfig};
use url::Url;

use super::PacsError;
use super::query::{self, SeriesRow, StudyPage, StudyQuery};

/// How the client proves who it is.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Bearer <token>` (e.g. an OAuth access token).
    Bearer {
        /// The token.
        token: String,
    },
}

impl std::fmt::Debug for Auth {
    // Never prints a secret (nor the user name): `{:?}` of a server is safe to log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "Auth::None",
            Auth::Basic { .. } => "Auth::Basic(<hidden>)",
            Auth::Bearer { .. } => "Auth::Bearer(<hidden>)",
        })
    }
}

/// A DICOMweb server as the user configured it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerConfig {
    /// The DICOMweb root, e.g. `https://pacs.example.org/dicom-web` (no credentials in
    /// it: they go in [`ServerConfig::auth`]).
    pub base_url: String,
    /// Credentials.
    pub auth: Auth,
    /// Trust only the certificate authorities in this PEM file (a hospital's own CA)
    /// instead of the system's.
    pub ca_file: Option<PathBuf>,
}

impl ServerConfig {
    /// A server without credentials.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            ..Self::default()
        }
    }

    /// The server's `host:port`, as messages name it.
    pub fn host(&self) -> String {
        Url::parse(&self.base_url)
            .map(|u| host_port(&u))
            .unwrap_or_else(|_| "the server".into())
    }
}

/// Bounds on what a server may send and how long it may take.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Largest JSON answer (QIDO-RS, STOW-RS), bytes.
    pub json_bytes: u64,
    /// Largest single instance of a pulled series, bytes.
    pub part_bytes: u64,
    /// Largest pulled series, bytes.
    pub series_bytes: u64,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for any single read or write once connected.
    pub io_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            json_bytes: 64 << 20,
            part_bytes: 2 << 30,
            series_bytes: 64 << 30,
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(60),
        }
    }
}

/// What a STOW-RS store answered.
#[derive(Clone, Debug, PartialEq)]
pub struct StowOutcome {
    /// The HTTP status.
    pub status: u16,
    /// Instances the server says it stored.
    pub stored: usize,
    /// Where the server says the stored study can be retrieved, when it says.
    pub retrieve_url: Option<String>,
}

impl std::fmt::Display for StowOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stored {} instance{} (HTTP {})",
            self.stored,
            if self.stored == 1 { "" } else { "s" },
            self.status
        )
    }
}

/// The `Accept` header of a WADO-RS series retrieve: DICOM parts in the transfer
/// syntax they are stored in, so compressed series arrive compressed.
pub(crate) const ACCEPT_DICOM_MULTIPART: &str =
    "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
const ACCEPT_JSON: &str = "application/dicom+json, application/json";
const MAX_REDIRECTS: usize = 5;

/// A connection to one DICOMweb server. Cheap to clone; blocking.
#[derive(Clone)]
pub struct Client {
    base: Url,
    authorization: Option<String>,
    agent: ureq::Agent,
    limits: Limits,
    host: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `server` with the default [`Limits`].
    pub fn new(server: &ServerConfig) -> Result<Self, PacsError> {
        Self::with_limits(server, Limits::default())
    }

    /// A client for `server` with the given limits.
    pub fn with_limits(server: &ServerConfig, limits: Limits) -> Result<Self, PacsError> {
        let invalid = |reason: &str| PacsError::InvalidServerUrl {
            reason: reason.into(),
        };
        let mut base = Url::parse(server.base_url.trim())
            .map_err(|_| invalid("give a URL such as http://host:8042/dicom-web"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("it must start with http:// or https://"));
        }
        if base.host_str().is_none() {
            return Err(invalid("it names no host"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid(
                "it carries credentials; give them as user and password (or token) instead",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("the DICOMweb root takes no ?query or #fragment"));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let authorization = match &server.auth {
            Auth::None => None,
            Auth::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Auth::Bearer { token } => Some(format!("Bearer {}", token.trim())),
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(limits.connect_timeout))
            .timeout_per_read(Some(limits.io_timeout))
            .timeout_per_write(Some(limits.io_timeout))
            .user_agent(concat!("icseg/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls_config(server.ca_file.as_deref())?)
            .build();
        let host = host_port(&base);
        Ok(Self {
            base,
            authorization,
            agent: ureq::Agent::new_with_config(config),
            limits,
            host,
        })
    }

    /// `host:port` of the server (what messages name).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// `<base>/<segments...>` with `query` appended (percent-encoded).
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// QIDO-RS: one page of studies matching `query`.
    pub fn search_studies(&self, query: &StudyQuery) -> Result<StudyPage, PacsError> {
        let params = query.parameters()?;
        let url = self.url(&["studies"], &params);
        log::info!(
            "pacs: searching studies on {} ({} filters)",
            self.host,
            query.filter_count()
        );
        let json = self.get_json(url, "study")?;
        let page = query::study_page(&json, query).map_err(|reason| self.bad(reason))?;
        log::info!(
            "pacs: {} studies found on {}",
            page.studies.len(),
            self.host
        );
        Ok(page)
    }

    /// QIDO-RS: the series of one study.
    pub fn search_series(&self, study_uid: &str) -> Result<Vec<SeriesRow>, PacsError> {
        let study = super::check_uid(study_uid)?;
        let url = self.url(&["studies", study, "series"], &query::series_parameters());
        log::info!("pacs: listing the series of a study on {}", self.host);
        let json = self.get_json(url, "study")?;
        let rows = query::series_rows(&json).map_err(|reason| self.bad(reason))?;
        log::info!("pacs: {} series found on {}", rows.len(), self.host);
        Ok(rows)
    }

    /// STOW-RS: stores one DICOM Part 10 file (e.g. a DICOM SEG) on the server.
    pub fn store(&self, file: &Path) -> Result<StowOutcome, PacsError> {
        let bytes =
            std::fs::read(file).map_err(|e| PacsError::file("reading the file", file, e))?;
        if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
            return Err(PacsError::NotDicomFile { path: file.into() });
        }
        let boundary = format!("icseg-{:032x}", rand::random::<u128>());
        let mut body = Vec::with_capacity(bytes.len() + 256);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let content_type =
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
        log::info!(
            "pacs: storing one instance ({} kB) on {}",
            bytes.len().div_ceil(1024),
            self.host
        );
        let response = self.send(
            self.url(&["studies"], &[]),
            ACCEPT_JSON,
            Some((&content_type, &body)),
        )?;
        let status = response.status().as_u16();
        if matches!(status, 401 | 403 | 404) || status >= 500 {
            return Err(self.status_error(status, "resource"));
        }
        let text = self.read_bounded(response, self.limits.json_bytes, "the store answer")?;
        let answer = query::stow_answer(&text).map_err(|reason| self.bad(reason))?;
        if (200..300).contains(&status) && answer.failed == 0 && answer.stored > 0 {
            log::info!(
                "pacs: the server stored {} instance(s) (HTTP {status})",
                answer.stored
            );
            return Ok(StowOutcome {
                status,
                stored: answer.stored,
                retrieve_url: answer.retrieve_url,
            });
        }
        if (200..300).contains(&status)
            && answer.failed == 0
            && text.iter().all(u8::is_ascii_whitespace)
        {
            // Some servers answer 200 with an empty body: take the status's word.
            return Ok(StowOutcome {
                status,
                stored: 1,
                retrieve_url: None,
            });
        }
        log::warn!(
            "pacs: the server refused to store (HTTP {status}, {} refused)",
            answer.failed
        );
        Err(PacsError::StoreRefused {
            host: self.host.clone(),
            status,
            failed: answer.failed.max(1),
            reason: answer
                .failure_reason
                .map(|r| format!(", reason 0x{r:04X}"))
                .unwrap_or_default(),
        })
    }

    /// GET with the same-origin redirect rule; any non-2xx status becomes an error
    /// (`what` names the missing thing of a 404).
    pub(crate) fn get(
        &self,
        url: Url,
        accept: &str,
        what: &'static str,
    ) -> Result<Response<ureq::Body>, PacsError> {
        let response = self.send(url, accept, None)?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            Ok(response)
        } else {
            Err(self.status_error(status, what))
        }
    }

    fn get_json(&self, url: Url, what: &'static str) -> Result<serde_json::Value, PacsError> {
        let response = self.get(url, ACCEPT_JSON, what)?;
        if response.status().as_u16() == 204 {
            return Ok(serde_json::Value::Array(Vec::new()));
        }
        let bytes = self.read_bounded(response, self.limits.json_bytes, "a search answer")?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Array(Vec::new()));
        }
        serde_json::from_slice(&bytes).map_err(|_| self.bad("the search answer is not JSON".into()))
    }

    /// Sends a GET (no body) or POST, following redirects only to the same origin.
    fn send(
        &self,
        mut url: Url,
        accept: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Response<ureq::Body>, PacsError> {
        for _ in 0..=MAX_REDIRECTS {
            let result = match body {
                None => {
                    let mut request = self.agent.get(url.as_str()).header("Accept", accept);
                    if let Some(a) = &self.authorization {
                        request = request.header("Authorization", a);
                    }
                    request.call()
                }
                Some((content_type, bytes)) => {
                    let mut request = self
                        .agent
                        .post(url.as_str())
                        .header("Accept", accept)
                        .header("Content-Type", content_type);
                    if let Some(a) = &self.authorization {
                        request = request.header("Authorization", a);
                    }
                    request.send(bytes)
                }
            };
            let response = result.map_err(|e| self.transport(e))?;
            let status = response.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok(response);
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| self.bad("a redirect without a Location".into()))?;
            let next = url
                .join(location)
                .map_err(|_| self.bad("a redirect to an invalid address".into()))?;
            if !same_origin(&next, &self.base) {
                log::warn!(
                    "pacs: {} redirected to another server ({}); not followed",
                    self.host,
                    host_port(&next)
                );
                return Err(PacsError::RedirectElsewhere {
                    host: self.host.clone(),
                    target: host_port(&next),
                });
            }
            if body.is_some() && !matches!(status, 307 | 308) {
                return Err(self.bad("a store was redirected with a method change".into()));
            }
            url = next;
        }
        Err(PacsError::TooManyRedirects {
            host: self.host.clone(),
        })
    }

    /// Reads a whole body, failing past `limit` bytes.
    fn read_bounded(
        &self,
        response: Response<ureq::Body>,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, PacsError> {
        let too_large = || PacsError::TooLarge {
            host: self.host.clone(),
            what,
            limit_mb: limit.div_ceil(1 << 20),
        };
        let body = response.into_body();
        if body.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        body.into_reader()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_error(e))?;
        if bytes.len() as u64 > limit {
            return Err(too_large());
        }
        Ok(bytes)
    }

    pub(crate) fn bad(&self, reason: String) -> PacsError {
        PacsError::BadResponse {
            host: self.host.clone(),
            reason,
        }
    }

    pub(crate) fn status_error(&self, status: u16, what: &'static str) -> PacsError {
        let host = self.host.clone();
        log::warn!("pacs: {host} answered HTTP {status}");
        match status {
            401 => PacsError::Unauthorized { host },
            403 => PacsError::Forbidden { host },
            404 => PacsError::NotFound { host, what },
            500..=599 => PacsError::Status {
                host,
                status,
                detail: ": the server failed; try again later or ask its administrator",
            },
            _ => PacsError::Status {
                host,
                status,
                detail: "",
            },
        }
    }

    /// An error while reading a body (ureq wraps its own errors in `io::Error`).
    pub(crate) fn read_error(&self, e: std::io::Error) -> PacsError {
        self.transport(ureq::Error::from(e))
    }

    /// A transport failure in our own words: ureq's messages can quote the URL, whose
    /// query may hold a patient's name.
    fn transport(&self, e: ureq::Error) -> PacsError {
        let host = self.host.clone();
        let error = match e {
            ureq::Error::Io(io) => match io.kind() {
                std::io::ErrorKind::ConnectionRefused => PacsError::ConnectionRefused { host },
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    PacsError::Timeout { host }
                }
                kind => PacsError::Connection {
                    host,
                    reason: kind.to_string(),
                },
            },
            ureq::Error::Timeout(_) => PacsError::Timeout { host },
            ureq::Error::HostNotFound => PacsError::HostNotFound { host },
            ureq::Error::Tls(reason) => PacsError::Tls {
                host,
                reason: reason.into(),
            },
            ureq::Error::Rustls(e) => PacsError::Tls {
                host,
                reason: e.to_string(),
            },
            ureq::Error::TooManyRedirects => PacsError::TooManyRedirects { host },
            ureq::Error::BadUri(_) => PacsError::InvalidServerUrl {
                reason: "the request address is not valid".into(),
            },
            ureq::Error::Protocol(_) => PacsError::BadResponse {
                host,
                reason: "the answer is not valid HTTP".into(),
            },
            _ => PacsError::Connection {
                host,
                reason: "the HTTP exchange failed".into(),
            },
        };
        log::warn!("pacs: {error}");
        error
    }
}

/// `host:port` (the port the scheme implies when none is written).
fn host_port(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => "the server".into(),
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Certificate trust: the given CA file only, else the system's bundle, else
/// Mozilla's roots (compiled in).
fn tls_config(ca_file: Option<&Path>) -> Result<TlsConfig, PacsError> {
    let roots = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| PacsError::CaFile {
                path: path.into(),
                reason: e.kind().to_string(),
            })?;
            let certs = pem_certificates(&pem);
            if certs.is_empty() {
                return Err(PacsError::CaFile {
                    path: path.into(),
                    reason: "no PEM certificate in it".into(),
                });
            }
            RootCerts::new_with_certs(&certs)
        }
        None => [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|pem| pem_certificates(&pem))
        .find(|certs| !certs.is_empty())
        .map(|certs| RootCerts::new_with_certs(&certs))
        .unwrap_or(RootCerts::WebPki),
    };
    Ok(TlsConfig::builder().root_certs(roots).build())
}

fn pem_certificates(pem: &[u8]) -> Vec<ureq::tls::Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_checked_and_credentials_refused_in_them() {
        assert!(Client::new(&ServerConfig::new("http://127.0.0.1:8042/dicom-web")).is_ok());
        for bad in [
            "127.0.0.1:8042",
            "ftp://host/x",
            "http://user:secret@host/dicom-web",
            "http://host/dicom-web?x=1",
        ] {
            let e = Client::new(&ServerConfig::new(bad)).unwrap_err();
            assert!(
                matches!(e, PacsError::InvalidServerUrl { .. }),
                "{bad}: {e}"
            );
            assert!(!e.to_string().contains("secret"));
        }
    }

    #[test]
    fn urls_keep_the_root_and_encode_the_query() {
        let c = Client::new(&ServerConfig::new("https://pacs.example/dicom-web")).unwrap();
        let url = c.url(
            &["studies", "1.2.3", "series"],
            &[("PatientName", "DOE^J*".into())],
        );
        assert_eq!(
            url.as_str(),
            "https://pacs.example/dicom-web/studies/1.2.3/series?PatientName=DOE%5EJ*"
        );
        assert_eq!(c.host(), "pacs.example:443");
        let c = Client::new(&ServerConfig::new("http://h:8042/")).unwrap();
        assert_eq!(c.url(&["studies"], &[]).as_str(), "http://h:8042/studies");
    }

    #[test]
    fn debug_output_hides_credentials() {
        let server = ServerConfig {
            base_url: "http://h/dicom-web".into(),
            auth: Auth::Basic {
                user: "alice".into(),
                password: "s3cret".into(),
            },
            ca_file: None,
        };
        let text = format!("{server:?} {:?}", Client::new(&server).unwrap());
        assert!(
            !text.contains("s3cret") && !text.contains("alice"),
            "{text}"
        );
    }

    #[test]
    fn redirects_stay_on_the_same_origin() {
        let base = Url::parse("http://h:8042/dicom-web/").unwrap();
        assert!(same_origin(
            &Url::parse("http://h:8042/other").unwrap(),
            &base
        ));
        assert!(!same_origin(
            &Url::parse("http://h:8043/dicom-web/").unwrap(),
            &base
        ));
        assert!(!same_origin(
            &Url::parse("https://h:8042/dicom-web/").unwrap(),
            &base
        ));
        assert!(!same_origin(
            &Url::parse("http://evil:8042/dicom-web/").unwrap(),
            &base
        ));
    }
}
