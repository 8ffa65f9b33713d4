//! Session files: resume an annotation later, or after a crash.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! "ICSEG-SESSION\n"         magic, 14 bytes
//! u32 format version         currently 1
//! u64 header length          bytes of the JSON header that follows
//! JSON header                volume path and fingerprint, grid, working axis, structures
//!                            (name, colour, visibility, opacity, slice states, uncertainty)
//! gzip stream                the label map, u16 per voxel, i fastest
//! ```
//!
//! The gzip trailer's CRC-32 catches truncated or damaged files. Nothing identifying the
//! patient is stored; the volume path is stored as the user gave it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::volume::{Axis, Geometry, LabelMap, LabelValue, Volume};

use super::StructureStyle;

const MAGIC: &[u8; 14] = b"ICSEG-SESSION\n";
const VERSION: u32 = 1;
/// Headers larger than this are refused (a corrupt length field).
const MAX_HEADER_BYTES: u64 = 64 << 20;

/// Why a session file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SessionFileError {
    /// Reading or writing failed.
    #[error("could not access the session file ({source}): {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a session file, or a damaged one.
    #[error("the session file is damaged or not an ICSeg session ({0}); choose another file")]
    Corrupt(String),
    /// Written by a newer ICSeg.
    #[error("the session file has format version {0}, this ICSeg reads version 1; update ICSeg")]
    NewerVersion(u32),
    /// The session belongs to another volume.
    #[error("the session belongs to another volume ({0}); open the volume it was made on")]
    OtherVolume(String),
}

/// One structure as stored in a session file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StructureRecord {
    /// Label value.
    pub value: LabelValue,
    /// Name, colour, visibility, opacity.
    pub style: StructureStyle,
    /// One [`super::SliceState::code`] character per working-axis slice.
    pub states: String,
    /// Uncertainty of predicted slices.
    pub uncertainty: Vec<Option<f32>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    volume_path: Option<PathBuf>,
    #[serde(default)]
    series_uid: Option<String>,
    volume_fingerprint: String,
    geometry: Geometry,
    axis: Axis,
    structures: Vec<StructureRecord>,
}

/// The contents of a session file.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionFile {
    /// The volume the session was made on, as it was opened.
    pub volume_path: Option<PathBuf>,
    /// For a DICOM folder: the Series Instance UID of the series annotated.
    pub series_uid: Option<String>,
    /// [`volume_fingerprint`] of that volume.
    pub volume_fingerprint: u64,
    /// The working axis.
    pub axis: Axis,
    /// Structures with their states.
    pub structures: Vec<StructureRecord>,
    /// All label voxels.
    pub labels: LabelMap,
}

impl SessionFile {
    /// Encodes the session (fast gzip level: autosaves must not stall).
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = Header {
            volume_path: self.volume_path.clone(),
            series_uid: self.series_uid.clone(),
            volume_fingerprint: format!("{:016x}", self.volume_fingerprint),
            geometry: self.labels.geometry().clone(),
            axis: self.axis,
            structures: self.structures.clone(),
        };
        let json = serde_json::to_vec(&header).expect("the session header always serialises");
        let mut out = Vec::with_capacity(json.len() + self.labels.labels().len() / 4 + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        let mut buf = Vec::with_capacity(64 * 1024);
        for chunk in self.labels.labels().chunks(32 * 1024) {
            buf.clear();
            for v in chunk {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            gz.write_all(&buf).expect("writing to memory cannot fail");
        }
        gz.finish().expect("writing to memory cannot fail")
    }

    /// Decodes a session file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SessionFileError> {
        let corrupt = |what: &str| SessionFileError::Corrupt(what.to_owned());
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| corrupt("no session header"))?;
        if rest.len() < 12 {
            return Err(corrupt("truncated header"));
        }
        let version = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
        if version > VERSION {
            return Err(SessionFileError::NewerVersion(version));
        }
        let len = u64::from_le_bytes(rest[4..12].try_into().expect("8 bytes"));
        if len > MAX_HEADER_BYTES || len > (rest.len() - 12) as u64 {
            return Err(corrupt("truncated header"));
        }
        let len = len as usize;
        let header: Header = serde_json::from_slice(&rest[12..12 + len])
            .map_err(|e| SessionFileError::Corrupt(format!("unreadable header: {e}")))?;
        header
            .geometry
            .validate()
            .map_err(|e| SessionFileError::Corrupt(e.to_string()))?;
        let fingerprint = u64::from_str_radix(&header.volume_fingerprint, 16)
            .map_err(|_| corrupt("bad volume fingerprint"))?;
        let count = header
            .geometry
            .dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= (1 << 34))
            .ok_or_else(|| corrupt("implausible grid size"))?;
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&rest[12 + len..])
            .take(count as u64 * 2 + 1)
            .read_to_end(&mut raw)
            .map_err(|e| SessionFileError::Corrupt(format!("label data: {e}")))?;
        if raw.len() != count * 2 {
            return Err(corrupt("the label data does not fit the grid"));
        }
        let labels: Vec<LabelValue> = raw
            .chunks_exact(2)
            .map(|b| LabelValue::from_le_bytes([b[0], b[1]]))
            .collect();
        let labels = LabelMap::new(header.geometry, labels)
            .map_err(|e| SessionFileError::Corrupt(e.to_string()))?;
        Ok(Self {
            volume_path: header.volume_path,
            series_uid: header.series_uid,
            volume_fingerprint: fingerprint,
            axis: header.axis,
            structures: header.structures,
            labels,
        })
    }

    /// Writes the file atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<(), SessionFileError> {
        crate::io::write_atomic(path, &self.to_bytes()).map_err(|source| SessionFileError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a session file.
    pub fn read(path: &Path) -> Result<Self, SessionFileError> {
        let bytes = std::fs::read(path).map_err(|source| SessionFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }
}

/// A 64-bit fingerprint of a volume's grid and voxel values, so a session is never
/// restored onto a different image with the same size.
pub fn volume_fingerprint(volume: &Volume) -> u64 {
    // FNV-1a style mixing over 64-bit words; fast enough for 10^8 voxels (< 0.2 s).
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |w: u64| {
        h ^= w;
        h = h.wrapping_mul(PRIME);
        h ^= h >> 29;
    };
    for &d in &volume.dims() {
        mix(d as u64);
    }
    for pair in volume.voxels().chunks(2) {
        let lo = u64::from(pair[0].to_bits());
        let hi = pair.get(1).map_or(0, |v| u64::from(v.to_bits()));
        mix(lo | (hi << 32));
    }
    h
}
