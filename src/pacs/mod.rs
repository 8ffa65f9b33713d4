//! DICOMweb: find studies on a PACS (QIDO-RS), pull a series into a cache folder
//! (WADO-RS) and store a DICOM SEG back (STOW-RS).
//!
//! Headless and below nothing but the leaves: the cache folder a pull fills is an
//! ordinary DICOM folder that `io::open_volume` opens, and a push sends the file the
//! SEG writer wrote. [`Client`] does one request at a time and blocks; [`PacsWorker`]
//! runs it on a thread with the engine's job/event/cancel pattern so a GUI never
//! blocks.
//!
//! # Safety rules
//!
//! - Every read is bounded: JSON answers by [`Limits::json_bytes`], each DICOM part
//!   by [`Limits::part_bytes`], a whole series by [`Limits::series_bytes`]; slow or
//!   stalled servers hit the per-read timeout.
//! - Redirects are followed only to the same scheme, host and port (credentials go
//!   with them); a redirect anywhere else is an error and nothing is sent there.
//! - A pull writes into a hidden folder that is renamed into place only when the last
//!   part arrived and was checked: a cancelled or failed pull never leaves an entry
//!   that later opens as complete ([`cached_series`]).
//! - Credentials and patient identifiers never appear in log lines or error messages
//!   (the [`StudyRow`] `Debug` output hides them too); a UID is never put in a path or
//!   URL before [`check_uid`] accepted it.

mod client;
mod multipart;
mod pull;
mod query;
mod worker;

pub use client::{Auth, Client, Limits, ServerConfig, StowOutcome};
pub use pull::{PullProgress, PulledSeries, cached_series, pull_series};
pub use query::{SeriesRow, StudyPage, StudyQuery, StudyRow};
pub use worker::{Event, Job, JobId, PacsWorker};

use std::path::PathBuf;

/// What went wrong talking to a PACS. Messages name the server by host and port only
/// and never carry credentials or patient identifiers.
#[derive(Debug, thiserror::Error)]
pub enum PacsError {
    /// The server address is not a usable DICOMweb base URL.
    #[error("the server address is not usable: {reason}")]
    InvalidServerUrl {
        /// Why.
        reason: String,
    },
    /// A study or series UID is not a DICOM UID (digits and dots, at most 64).
    #[error("`{what}` is not a DICOM UID (digits and dots, at most 64 characters)")]
    InvalidUid {
        /// The offending text, cut to 70 characters.
        what: String,
    },
    /// A search filter is malformed (e.g. a date that is not YYYYMMDD).
    #[error("invalid search filter: {reason}")]
    InvalidQuery {
        /// Why.
        reason: String,
    },
    /// Nothing listens at the server's address.
    #[error("connection refused by {host}: is the PACS running and is the port right?")]
    ConnectionRefused {
        /// host:port.
        host: String,
    },
    /// The host name does not resolve.
    #[error("the host {host} is unknown: check the server address")]
    HostNotFound {
        /// host:port.
        host: String,
    },
    /// The server did not answer in time.
    #[error("{host} did not answer in time; try again or check the network")]
    Timeout {
        /// host:port.
        host: String,
    },
    /// The connection failed otherwise (reset, closed early, network down).
    #[error("the connection to {host} failed ({reason}); try again")]
    Connection {
        /// host:port.
        host: String,
        /// The operating system's words, without addresses or credentials.
        reason: String,
    },
    /// The TLS handshake failed (certificate not trusted, wrong name, ...).
    #[error(
        "the secure connection to {host} failed ({reason}); if the PACS uses its own certificate authority, give its CA file"
    )]
    Tls {
        /// host:port.
        host: String,
        /// Why.
        reason: String,
    },
    /// The CA file could not be read or holds no certificate.
    #[error("the CA file cannot be used ({reason}): {path}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// HTTP 401: no or wrong credentials.
    #[error("{host} refused the credentials (HTTP 401): check the user name and password or token")]
    Unauthorized {
        /// host:port.
        host: String,
    },
    /// HTTP 403: the credentials are valid but not allowed to do this.
    #[error("{host} does not allow this account to do that (HTTP 403)")]
    Forbidden {
        /// host:port.
        host: String,
    },
    /// HTTP 404: no such study or series (or not a DICOMweb URL).
    #[error(
        "{host} has no such {what} (HTTP 404); check the UID, or that the address is the DICOMweb root"
    )]
    NotFound {
        /// host:port.
        host: String,
        /// "study", "series", "resource".
        what: &'static str,
    },
    /// Any other HTTP error status.
    #[error("{host} answered HTTP {status}{detail}")]
    Status {
        /// host:port.
        host: String,
        /// The status code.
        status: u16,
        /// A hint, e.g. ": the server failed" for 5xx.
        detail: &'static str,
    },
    /// The server redirected to another scheme, host or port; the request was not
    /// repeated there (it would carry the credentials).
    #[error(
        "{host} redirected the request to another server ({target}); it was not followed so the credentials stay with {host}: use the other server's address directly if you trust it"
    )]
    RedirectElsewhere {
        /// host:port of the configured server.
        host: String,
        /// host:port of the redirect target.
        target: String,
    },
    /// Redirects went round in circles.
    #[error("{host} redirected too many times")]
    TooManyRedirects {
        /// host:port.
        host: String,
    },
    /// The answer was larger than the limit (a misbehaving or hostile server).
    #[error("{host} sent more than {limit_mb} MB for {what}; stopped reading")]
    TooLarge {
        /// host:port.
        host: String,
        /// What was being read.
        what: &'static str,
        /// The limit in MB.
        limit_mb: u64,
    },
    /// The answer is not what DICOMweb prescribes (bad JSON, wrong content type, ...).
    #[error("{host} sent an answer that is not valid DICOMweb: {reason}")]
    BadResponse {
        /// host:port.
        host: String,
        /// Why.
        reason: String,
    },
    /// The multipart body ended before its closing boundary.
    #[error(
        "the download from {host} ended early, after {parts} complete instances; nothing was kept, try again"
    )]
    Truncated {
        /// host:port.
        host: String,
        /// Complete parts received before the end.
        parts: usize,
    },
    /// A part of the series is not a DICOM file.
    #[error(
        "part {part} of the answer from {host} is not a DICOM file ({reason}); nothing was kept"
    )]
    NotDicomPart {
        /// host:port.
        host: String,
        /// 1-based part number.
        part: usize,
        /// Why.
        reason: String,
    },
    /// The series has no instances.
    #[error("{host} returned no instances for the series")]
    EmptySeries {
        /// host:port.
        host: String,
    },
    /// A file to push is not a DICOM Part 10 file.
    #[error("the file is not a DICOM file (no DICM marker), nothing was sent: {path}")]
    NotDicomFile {
        /// The file.
        path: PathBuf,
    },
    /// The server refused to store some or all instances (STOW-RS).
    #[error(
        "{host} did not store the file (HTTP {status}, {failed} instances refused{reason}); the local file is kept, try again or ask the PACS administrator"
    )]
    StoreRefused {
        /// host:port.
        host: String,
        /// HTTP status.
        status: u16,
        /// Instances refused.
        failed: usize,
        /// The first failure reason code, as ", reason 0xA700".
        reason: String,
    },
    /// The job was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// Reading or writing the cache folder or a local file failed.
    #[error("{action} failed ({source}): {path}")]
    File {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl PacsError {
    pub(crate) fn file(
        action: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Self {
        PacsError::File {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Accepts a DICOM UID (1–64 characters, digits and dots, no empty component) and
/// returns it; anything else (path separators, URL syntax) is refused, so a UID can
/// go into a cache path or a URL as it is.
pub fn check_uid(uid: &str) -> Result<&str, PacsError> {
    let uid_ok = !uid.is_empty()
        && uid.len() <= 64
        && uid
            .split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()));
    if uid_ok {
        Ok(uid)
    } else {
        Err(PacsError::InvalidUid {
            what: uid.chars().take(70).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_digits_and_dots_only() {
        assert!(check_uid("1.2.840.10008.5.1.4.1.1.2").is_ok());
        assert!(check_uid("2.25.175713997483480823820739030390011300").is_ok());
        for bad in [
            "", "1..2", ".1", "1.", "../etc", "1.2/3", "1.2?x=3", "1.2 3",
        ] {
            assert!(check_uid(bad).is_err(), "{bad}");
        }
        assert!(check_uid(&"1".repeat(65)).is_err());
    }
}
