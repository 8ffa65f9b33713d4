//! WADO-RS series retrieve into a cache folder.
//!
//! Layout: `<cache>/<study UID>/<series UID>/000001.dcm ...` and beside it
//! `<series UID>.pull.json` (counts and time, no patient data; outside the series
//! folder so the folder holds DICOM files only). A pull writes into the hidden sibling
//! `.<series UID>.partial-<pid>-<n>` and renames it into place only after the closing
//! boundary arrived and every part proved to be a DICOM file; a failure or Cancel
//! removes it. The manifest is written last: [`cached_series`] takes a folder only with
//! it and opens it without asking the server again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::client::{ACCEPT_DICOM_MULTIPART, Client};
use super::multipart::{self, Bounds, PartSink};
use super::{PacsError, check_uid};

/// The manifest that marks a complete cache entry: `<series UID>` + this, beside it.
const MANIFEST_SUFFIX: &str = ".pull.json";

fn manifest_path(study_dir: &Path, series: &str) -> PathBuf {
    study_dir.join(format!("{series}{MANIFEST_SUFFIX}"))
}
/// Partial folders older than this are left over from a crash and removed.
const STALE: Duration = Duration::from_secs(3600);

/// How far a pull is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullProgress {
    /// Complete instances so far.
    pub instances: usize,
    /// Bytes received so far (instance data).
    pub bytes: u64,
}

/// A pulled (or already cached) series.
#[derive(Clone, Debug, PartialEq)]
pub struct PulledSeries {
    /// The folder holding the series' DICOM files (open it with `io::open_volume`).
    pub folder: PathBuf,
    /// Instances in it.
    pub instances: usize,
    /// Bytes of instance data.
    pub bytes: u64,
    /// It was in the cache already; nothing was downloaded.
    pub from_cache: bool,
    /// Seconds the download took (0 from the cache).
    pub seconds: f64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    instances: usize,
    bytes: u64,
    pulled_unix_s: u64,
}

/// The complete cache entry of a series, if there is one.
pub fn cached_series(cache: &Path, study_uid: &str, series_uid: &str) -> Option<PulledSeries> {
    let study_dir = cache.join(check_uid(study_uid).ok()?);
    let series = check_uid(series_uid).ok()?;
    let folder = study_dir.join(series);
    if !folder.is_dir() {
        return None;
    }
    let text = std::fs::read(manifest_path(&study_dir, series)).ok()?;
    let manifest: Manifest = serde_json::from_slice(&text).ok()?;
    Some(PulledSeries {
        folder,
        instances: manifest.instances,
        bytes: manifest.bytes,
        from_cache: true,
        seconds: 0.0,
    })
}

/// Pulls a series into `cache` (or finds it there). `cancelled` is asked between reads;
/// `progress` hears after each instance.
pub fn pull_series(
    client: &Client,
    cache: &Path,
    study_uid: &str,
    series_uid: &str,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(PullProgress),
) -> Result<PulledSeries, PacsError> {
    let (study, series) = (check_uid(study_uid)?, check_uid(series_uid)?);
    if let Some(hit) = cached_series(cache, study, series) {
        log::info!(
            "pacs: series found in the cache ({} instances)",
            hit.instances
        );
        return Ok(hit);
    }
    let study_dir = cache.join(study);
    std::fs::create_dir_all(&study_dir)
        .map_err(|e| PacsError::file("creating the cache folder", &study_dir, e))?;
    remove_stale_partials(&study_dir, series);
    let folder = study_dir.join(series);
    if folder.exists() {
        // Renamed into place but the manifest never written (a crash in between).
        std::fs::remove_dir_all(&folder)
            .map_err(|e| PacsError::file("clearing an unfinished cache entry", &folder, e))?;
    }
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let partial = study_dir.join(format!(".{series}.partial-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&partial)
        .map_err(|e| PacsError::file("creating the cache folder", &partial, e))?;
    let guard = RemoveOnDrop(Some(partial.clone()));

    let started = Instant::now();
    log::info!("pacs: pulling a series from {}", client.host());
    let url = client.url(&["studies", study, "series", series], &[]);
    let response = client.get(url, ACCEPT_DICOM_MULTIPART, "series")?;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let boundary = multipart::boundary(&content_type).ok_or_else(|| {
        client.bad("the series did not come as multipart/related with a boundary".into())
    })?;
    let mut sink = FileSink {
        dir: &partial,
        host: client.host(),
        file: None,
        head: Vec::new(),
        part: 0,
        progress: PullProgress {
            instances: 0,
            bytes: 0,
        },
        cancelled,
        report: progress,
    };
    let limits = client.limits();
    let bounds = Bounds {
        part_bytes: limits.part_bytes,
        total_bytes: limits.series_bytes,
        host: client.host(),
    };
    let map_io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            // The server declared more than it sent.
            PacsError::Truncated {
                host: client.host().into(),
                parts: 0,
            }
        } else {
            client.read_error(e)
        }
    };
    let reader = response.into_body().into_reader();
    let parts = multipart::read_parts(reader, &boundary, &bounds, &map_io, &mut sink).map_err(
        |e| match e {
            PacsError::Truncated { host, .. } => PacsError::Truncated {
                host,
                parts: sink.progress.instances,
            },
            other => other,
        },
    );
    let parts = match parts {
        Ok(n) => n,
        Err(e) => {
            log::warn!("pacs: the pull stopped: {e}");
            return Err(e);
        }
    };
    if cancelled() {
        return Err(PacsError::Cancelled);
    }
    if parts == 0 {
        return Err(PacsError::EmptySeries {
            host: client.host().into(),
        });
    }
    let bytes = sink.progress.bytes;
    let manifest = Manifest {
        instances: parts,
        bytes,
        pulled_unix_s: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    };
    if let Err(e) = std::fs::rename(&partial, &folder) {
        // Another pull of the same series finished first: use its entry.
        if let Some(hit) = cached_series(cache, study, series) {
            return Ok(hit);
        }
        return Err(PacsError::file("completing the cache entry", &folder, e));
    }
    guard.disarm();
    let manifest_file = manifest_path(&study_dir, series);
    let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    if let Err(e) = crate::files::write_atomic(&manifest_file, &text) {
        let _ = std::fs::remove_dir_all(&folder);
        return Err(PacsError::file(
            "writing the cache entry",
            &manifest_file,
            e,
        ));
    }
    let seconds = started.elapsed().as_secs_f64();
    log::info!(
        "pacs: pulled {parts} instances ({:.1} MB) in {seconds:.2} s",
        bytes as f64 / 1e6
    );
    Ok(PulledSeries {
        folder,
        instances: parts,
        bytes,
        from_cache: false,
        seconds,
    })
}

/// Removes leftovers of pulls of this series that crashed long ago.
fn remove_stale_partials(study_dir: &Path, series: &str) {
    let prefix = format!(".{series}.partial-");
    let Ok(entries) = std::fs::read_dir(study_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE);
        if old && entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes each part to its own file and checks it is DICOM Part 10.
struct FileSink<'a> {
    dir: &'a Path,
    host: &'a str,
    file: Option<std::io::BufWriter<std::fs::File>>,
    /// The first 132 bytes of the current part (preamble and "DICM").
    head: Vec<u8>,
    part: usize,
    progress: PullProgress,
    cancelled: &'a dyn Fn() -> bool,
    report: &'a mut dyn FnMut(PullProgress),
}

impl FileSink<'_> {
    fn not_dicom(&self, reason: &str) -> PacsError {
        PacsError::NotDicomPart {
            host: self.host.into(),
            part: self.part,
            reason: reason.into(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(format!("{:06}.dcm", self.part))
    }
}

impl PartSink for FileSink<'_> {
    fn begin(&mut self, part: usize, content_type: Option<&str>) -> Result<(), PacsError> {
        self.part = part;
        if let Some(ct) = content_type {
            let media = ct.split(';').next().unwrap_or_default().trim();
            if !media.eq_ignore_ascii_case("application/dicom") {
                return Err(self.not_dicom("its content type is not application/dicom"));
            }
        }
        let path = self.path();
        let file = std::fs::File::create(&path)
            .map_err(|e| PacsError::file("writing the cache", &path, e))?;
        self.file = Some(std::io::BufWriter::with_capacity(256 * 1024, file));
        self.head.clear();
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), PacsError> {
        if (self.cancelled)() {
            return Err(PacsError::Cancelled);
        }
        if self.head.len() < 132 {
            let take = (132 - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            if self.head.len() == 132 && &self.head[128..132] != b"DICM" {
                return Err(self.not_dicom("no DICM marker"));
            }
        }
        let path = self.path();
        if let Some(f) = &mut self.file {
            f.write_all(bytes)
                .map_err(|e| PacsError::file("writing the cache", &path, e))?;
        }
        self.progress.bytes += bytes.len() as u64;
        Ok(())
    }

    fn end(&mut self) -> Result<(), PacsError> {
        if self.head.len() < 132 {
            return Err(self.not_dicom("too short for a DICOM file"));
        }
        let path = self.path();
        if let Some(f) = self.file.take() {
            f.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_data())
                .map_err(|e| PacsError::file("writing the cache", &path, e))?;
        }
        self.progress.instances += 1;
        (self.report)(self.progress);
        Ok(())
    }
}
