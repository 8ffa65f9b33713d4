//! NIfTI-1 volumes and label maps (`.nii`, `.nii.gz`).
//!
//! Reading parses the 348-byte header with the `nifti` crate, checks every size it
//! announces against the bytes actually present *before* allocating, and decodes the
//! voxels here (so a lying header can neither exhaust memory nor reach a panic in a
//! decoder). Writing produces a single-file NIfTI-1 (`n+1`) with both the sform and the
//! qform set to the volume's geometry, gzip-compressed when the name ends in `.gz`, and
//! goes through [`super::write_atomic`].
//!
//! # Geometry
//!
//! NIfTI's world space is RAS (+x right, +y anterior); ours is DICOM LPS. A NIfTI
//! affine `A` (voxel → RAS) becomes `diag(-1, -1, 1) · A` in LPS. The sform is used when
//! `sform_code > 0`, else the qform when `qform_code > 0`, else (no orientation recorded)
//! the voxel spacing on axis-aligned RAS axes — what ITK and 3D Slicer do — with a
//! [`LoadWarning::NoOrientation`].

use std::io::Read;
use std::path::Path;

use nifti::NiftiHeader;

use super::error::{LoadError, LoadWarning, SaveError};
use super::grid::labels_onto_reference;
use super::{LoadedVolume, VolumeSource};
use crate::volume::{Geometry, LabelMap, LabelValue, Modality, Volume};

/// The largest volume accepted, in voxels (4 GiB of `f32`).
pub const MAX_VOXELS: u64 = 1 << 30;

/// NIfTI's code for "label map" in `intent_code`.
const INTENT_LABEL: i16 = 1002;
/// `NIFTI_XFORM_SCANNER_ANAT`: coordinates in the scanner's anatomical space.
const XFORM_SCANNER_ANAT: i16 = 1;
/// Size of the header plus the 4-byte extension flag; where our voxel data starts.
const DATA_OFFSET: usize = 352;
const FORMAT: &str = "NIfTI";

/// Voxel data types this reader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VoxelType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    F32,
    F64,
}

impl VoxelType {
    fn from_header(datatype: i16) -> Option<Self> {
        Some(match datatype {
            2 => Self::U8,
            256 => Self::I8,
            4 => Self::I16,
            512 => Self::U16,
            8 => Self::I32,
            768 => Self::U32,
            16 => Self::F32,
            64 => Self::F64,
            _ => return None,
        })
    }

    fn bytes(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::I16 | Self::U16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }
}

/// A header and the raw bytes of the first 3-D volume, sizes already checked.
struct RawNifti {
    header: NiftiHeader,
    voxel_type: VoxelType,
    dims: [usize; 3],
    /// Volumes in the file (4-D and higher dimensions flattened).
    volumes: usize,
    /// `dims` voxels of `voxel_type`, in the file's byte order.
    data: Vec<u8>,
}

impl RawNifti {
    fn little_endian(&self) -> bool {
        self.header.endianness == nifti::Endianness::Little
    }

    /// Voxel values as `f64` with `scl_slope`/`scl_inter` applied.
    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        let (slope, inter) = scaling(&self.header);
        let le = self.little_endian();
        let n = self.voxel_type.bytes();
        let ty = self.voxel_type;
        self.data.chunks_exact(n).map(move |b| {
            let raw = match ty {
                VoxelType::U8 => b[0] as f64,
                VoxelType::I8 => b[0] as i8 as f64,
                VoxelType::I16 => {
                    let a = [b[0], b[1]];
                    (if le {
                        i16::from_le_bytes(a)
                    } else {
                        i16::from_be_bytes(a)
                    }) as f64
                }
                VoxelType::U16 => {
                    let a = [b[0], b[1]];
                    (if le {
                        u16::from_le_bytes(a)
                    } else {
                        u16::from_be_bytes(a)
                    }) as f64
                }
                VoxelType::I32 => {
                    let a = [b[0], b[1], b[2], b[3]];
                    (if le {
                        i32::from_le_bytes(a)
                    } else {
                        i32::from_be_bytes(a)
                    }) as f64
                }
                VoxelType::U32 => {
                    let a = [b[0], b[1], b[2], b[3]];
                    (if le {
                        u32::from_le_bytes(a)
                    } else {
                        u32::from_be_bytes(a)
                    }) as f64
                }
                VoxelType::F32 => {
                    let a = [b[0], b[1], b[2], b[3]];
                    (if le {
                        f32::from_le_bytes(a)
                    } else {
                        f32::from_be_bytes(a)
                    }) as f64
                }
                VoxelType::F64 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    if le {
                        f64::from_le_bytes(a)
                    } else {
                        f64::from_be_bytes(a)
                    }
                }
            };
            raw * slope + inter
        })
    }
}

/// `scl_slope`/`scl_inter` as the standard reads them: a slope of 0 (or not finite)
/// means "no scaling".
fn scaling(h: &NiftiHeader) -> (f64, f64) {
    let slope = h.scl_slope as f64;
    let inter = h.scl_inter as f64;
    if slope == 0.0 || !slope.is_finite() {
        (1.0, 0.0)
    } else {
        (slope, if inter.is_finite() { inter } else { 0.0 })
    }
}

/// Whether `bytes` start like a NIfTI-1 file (plain or gzip-compressed header).
pub(crate) fn looks_like_nifti(head: &[u8]) -> bool {
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        return true; // gzip; only NIfTI is read gzip-compressed
    }
    head.len() >= 348
        && (i32::from_le_bytes([head[0], head[1], head[2], head[3]]) == 348
            || i32::from_be_bytes([head[0], head[1], head[2], head[3]]) == 348)
}

/// Reads a NIfTI volume from a file.
pub fn read_volume(path: &Path) -> Result<LoadedVolume, LoadError> {
    let raw = read_raw(path)?;
    build_volume(raw, path)
}

/// Reads a NIfTI volume from bytes already in memory (`.nii` or gzip-compressed);
/// `name` only labels error messages. This is the entry point of the fuzz target.
pub fn read_volume_bytes(bytes: &[u8], name: &Path) -> Result<LoadedVolume, LoadError> {
    let raw = parse(bytes, Some(bytes.len() as u64), name)?;
    build_volume(raw, name)
}

fn build_volume(raw: RawNifti, path: &Path) -> Result<LoadedVolume, LoadError> {
    let mut warnings = Vec::new();
    let geometry = geometry_from_header(&raw.header, raw.dims, path, &mut warnings)?;
    if raw.volumes > 1 {
        warnings.push(LoadWarning::FirstVolumeOnly {
            volumes: raw.volumes,
        });
    }
    let voxels: Vec<f32> = raw.values().map(|v| v as f32).collect();
    let volume = Volume::new(geometry, voxels, guess_modality(&raw))
        .map_err(|e| LoadError::corrupt(path, FORMAT, e.to_string()))?;
    Ok(LoadedVolume {
        volume,
        source: VolumeSource::Nifti {
            path: path.to_path_buf(),
        },
        warnings,
    })
}

/// NIfTI does not record the modality; integer data whose range looks like Hounsfield
/// units (air at about −1000) is taken as CT, anything else stays unknown.
fn guess_modality(raw: &RawNifti) -> Modality {
    let integer = !matches!(raw.voxel_type, VoxelType::F32 | VoxelType::F64);
    if !integer {
        return Modality::Other;
    }
    let lo = raw.values().fold(f64::INFINITY, f64::min);
    if (-1100.0..=-900.0).contains(&lo) || (-3100.0..=-1900.0).contains(&lo) {
        Modality::Ct
    } else {
        Modality::Other
    }
}

/// Reads a label map from a NIfTI file and places it on `reference`: the file's grid
/// must have the same voxel centres as `reference`, possibly with axes permuted or
/// flipped (as when a tool stored the image in another axis order); the labels are then
/// re-indexed into `reference`'s order.
pub fn read_label_map(path: &Path, reference: &Geometry) -> Result<LabelMap, LoadError> {
    let own = read_label_map_own_grid(path)?;
    labels_onto_reference(&own, reference).map_err(|reason| LoadError::NotOnGrid {
        path: path.to_path_buf(),
        reason,
    })
}

/// Reads a label map on the grid the file itself describes.
pub fn read_label_map_own_grid(path: &Path) -> Result<LabelMap, LoadError> {
    labels_from_raw(read_raw(path)?, path)
}

/// Reads a label map held in memory, on its own grid or placed on `reference`
/// (`name` labels messages; the entry point of the fuzz target).
pub fn read_label_map_bytes(
    bytes: &[u8],
    name: &Path,
    reference: Option<&Geometry>,
) -> Result<LabelMap, LoadError> {
    let own = labels_from_raw(parse(bytes, Some(bytes.len() as u64), name)?, name)?;
    match reference {
        None => Ok(own),
        Some(r) => labels_onto_reference(&own, r).map_err(|reason| LoadError::NotOnGrid {
            path: name.to_path_buf(),
            reason,
        }),
    }
}

fn labels_from_raw(raw: RawNifti, path: &Path) -> Result<LabelMap, LoadError> {
    let mut warnings = Vec::new();
    if raw.volumes > 1 {
        return Err(LoadError::NotALabelMap {
            path: path.into(),
            reason: format!("it holds {} volumes instead of one", raw.volumes),
        });
    }
    let geometry = geometry_from_header(&raw.header, raw.dims, path, &mut warnings)?;
    let mut labels = Vec::with_capacity(geometry.voxel_count());
    for v in raw.values() {
        if !(v.is_finite() && v >= 0.0 && v <= LabelValue::MAX as f64 && v.fract() == 0.0) {
            return Err(LoadError::NotALabelMap {
                path: path.into(),
                reason: format!(
                    "it contains the value {v}, but labels are whole numbers from 0 to 65535"
                ),
            });
        }
        labels.push(v as LabelValue);
    }
    LabelMap::new(geometry, labels).map_err(|e| LoadError::corrupt(path, FORMAT, e.to_string()))
}

fn read_raw(path: &Path) -> Result<RawNifti, LoadError> {
    let file = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
    let size = file.metadata().map_err(|e| LoadError::io(path, e))?.len();
    parse(std::io::BufReader::new(file), Some(size), path)
}

/// Parses a NIfTI-1 stream, plain or gzip (detected from its first bytes).
/// `stored_size` is the size of the stream as stored (the file size), used to reject
/// headers that announce more data than a plain file holds.
fn parse(
    mut input: impl Read,
    stored_size: Option<u64>,
    path: &Path,
) -> Result<RawNifti, LoadError> {
    let mut magic = [0u8; 2];
    read_exact_or(&mut input, &mut magic, path, 2)?;
    let chained = std::io::Cursor::new(magic).chain(input);
    if magic == [0x1f, 0x8b] {
        parse_plain(flate2::read::MultiGzDecoder::new(chained), None, path)
    } else {
        parse_plain(chained, stored_size, path)
    }
}

fn read_exact_or(
    input: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    expected: u64,
) -> Result<(), LoadError> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(LoadError::Truncated {
                    path: path.into(),
                    expected_bytes: expected,
                    actual_bytes: filled as u64,
                });
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // flate2 reports damaged or cut compressed data as errors of these kinds.
            Err(e) => return Err(stream_error(path, e)),
        }
    }
    Ok(())
}

fn parse_plain(
    mut input: impl Read,
    stored_size: Option<u64>,
    path: &Path,
) -> Result<RawNifti, LoadError> {
    let mut head = [0u8; 348];
    read_exact_or(&mut input, &mut head, path, 348)?;
    let sizeof_hdr = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if sizeof_hdr == 540 || sizeof_hdr.swap_bytes() == 540 {
        return Err(LoadError::unsupported(
            path,
            "NIfTI-2 files; save the image as NIfTI-1",
        ));
    }
    if sizeof_hdr != 348 && sizeof_hdr.swap_bytes() != 348 {
        return Err(LoadError::UnrecognizedFormat { path: path.into() });
    }
    let header = NiftiHeader::from_reader(&head[..])
        .map_err(|e| LoadError::corrupt(path, FORMAT, format!("unreadable header: {e}")))?;
    match &header.magic {
        b"n+1\0" => {}
        b"ni1\0" => {
            return Err(LoadError::unsupported(
                path,
                "NIfTI header/image pairs (.hdr + .img); save the image as a single .nii or .nii.gz file",
            ));
        }
        _ => {
            return Err(LoadError::corrupt(
                path,
                FORMAT,
                "the header lacks the NIfTI-1 signature",
            ));
        }
    }

    // Dimensions: dim[0] axes, each at least 1 (the field is signed in the standard).
    let ndim = header.dim[0] as i16;
    if !(1..=7).contains(&ndim) {
        return Err(LoadError::corrupt(
            path,
            FORMAT,
            format!("the header says the image has {ndim} dimensions"),
        ));
    }
    let mut sizes = [1usize; 7];
    for (a, size) in sizes.iter_mut().enumerate().take(ndim as usize) {
        let d = header.dim[a + 1] as i16;
        if d < 1 {
            return Err(LoadError::corrupt(
                path,
                FORMAT,
                format!("axis {} has size {d}", a + 1),
            ));
        }
        *size = d as usize;
    }
    let dims = [sizes[0], sizes[1], sizes[2]];
    let volumes: usize = sizes[3..].iter().product();
    let voxels = dims.iter().map(|&d| d as u64).product::<u64>();
    if voxels > MAX_VOXELS {
        return Err(LoadError::TooLarge {
            path: path.into(),
            voxels,
            limit: MAX_VOXELS,
        });
    }
    let voxel_type = VoxelType::from_header(header.datatype).ok_or_else(|| {
        let name = match header.data_type() {
            Ok(t) => format!("{t:?}"),
            Err(_) => format!("code {}", header.datatype),
        };
        LoadError::unsupported(
            path,
            format!("voxel type {name} (supported: 8/16/32-bit integers, 32/64-bit floats)"),
        )
    })?;

    let vox_offset = header.vox_offset;
    if !vox_offset.is_finite() || vox_offset < 348.0 || vox_offset > (1u64 << 32) as f32 {
        return Err(LoadError::corrupt(
            path,
            FORMAT,
            format!("the image data offset {vox_offset} is impossible"),
        ));
    }
    let vox_offset = vox_offset as u64;
    let data_bytes = voxels * voxel_type.bytes() as u64;
    let needed = vox_offset + data_bytes;
    if let Some(size) = stored_size
        && size < needed
    {
        return Err(LoadError::Truncated {
            path: path.into(),
            expected_bytes: needed,
            actual_bytes: size,
        });
    }
    // Skip extensions up to the data, then read exactly the first volume. Reading through
    // `take` grows the buffer only as bytes arrive, so a gzip stream that lies about its
    // size costs no more memory than it really holds.
    let skip = vox_offset - 348;
    let skipped = std::io::copy(&mut (&mut input).take(skip), &mut std::io::sink())
        .map_err(|e| stream_error(path, e))?;
    if skipped < skip {
        return Err(LoadError::Truncated {
            path: path.into(),
            expected_bytes: needed,
            actual_bytes: 348 + skipped,
        });
    }
    let mut data = Vec::new();
    (&mut input)
        .take(data_bytes)
        .read_to_end(&mut data)
        .map_err(|e| stream_error(path, e))?;
    if (data.len() as u64) < data_bytes {
        return Err(LoadError::Truncated {
            path: path.into(),
            expected_bytes: needed,
            actual_bytes: vox_offset + data.len() as u64,
        });
    }

    Ok(RawNifti {
        header,
        voxel_type,
        dims,
        volumes,
        data,
    })
}

fn stream_error(path: &Path, e: std::io::Error) -> LoadError {
    match e.kind() {
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
            LoadError::corrupt(path, FORMAT, format!("the compressed data is damaged: {e}"))
        }
        std::io::ErrorKind::UnexpectedEof => LoadError::corrupt(
            path,
            FORMAT,
            "the compressed data ends early; the file was probably cut short while copying",
        ),
        _ => LoadError::io(path, e),
    }
}

/// Millimetres per file unit for `xyzt_units`, or `None` for an unknown unit.
fn unit_to_mm(xyzt_units: u8) -> (f64, Option<&'static str>) {
    match xyzt_units & 0x07 {
        1 => (1000.0, Some("metres")),
        3 => (0.001, Some("micrometres")),
        _ => (1.0, None), // 2 = mm; 0 = unknown, taken as mm like every viewer does
    }
}

/// The voxel → LPS geometry described by the header (see the module docs).
fn geometry_from_header(
    h: &NiftiHeader,
    dims: [usize; 3],
    path: &Path,
    warnings: &mut Vec<LoadWarning>,
) -> Result<Geometry, LoadError> {
    let (to_mm, unit_name) = unit_to_mm(h.xyzt_units);
    if let Some(name) = unit_name {
        warnings.push(LoadWarning::ConvertedUnits { from: name.into() });
    }
    // Candidate affines (voxel -> RAS, columns = axes), best first.
    let mut candidates: Vec<([[f64; 3]; 3], [f64; 3])> = Vec::new();
    if h.sform_code > 0 {
        let rows = [h.srow_x, h.srow_y, h.srow_z];
        let mut cols = [[0.0; 3]; 3];
        for (r, row) in rows.iter().enumerate() {
            for (c, col) in cols.iter_mut().enumerate() {
                col[r] = row[c] as f64;
            }
        }
        candidates.push((
            cols,
            [rows[0][3] as f64, rows[1][3] as f64, rows[2][3] as f64],
        ));
    }
    if h.qform_code > 0 {
        candidates.push(qform_affine(h));
    }
    let mut orientation_known = true;
    if candidates.is_empty() {
        orientation_known = false;
        let s = pixdim_spacing(h);
        candidates.push((
            [[s[0], 0.0, 0.0], [0.0, s[1], 0.0], [0.0, 0.0, s[2]]],
            [0.0; 3],
        ));
    }
    let mut last_error = String::new();
    for (cols, offset) in candidates {
        match geometry_from_affine(dims, cols, offset, to_mm) {
            Ok(g) => {
                if !orientation_known {
                    warnings.push(LoadWarning::NoOrientation);
                }
                return Ok(g);
            }
            Err(e) => last_error = e,
        }
    }
    Err(LoadError::corrupt(path, FORMAT, last_error))
}

fn pixdim_spacing(h: &NiftiHeader) -> [f64; 3] {
    let mut s = [1.0; 3];
    for (a, v) in s.iter_mut().enumerate() {
        let p = h.pixdim[a + 1] as f64;
        if p.is_finite() && p > 0.0 {
            *v = p;
        }
    }
    s
}

/// The qform as columns (voxel axes in RAS, scaled by spacing) and offset; follows
/// `nifti_quatern_to_mat44` of the reference library.
fn qform_affine(h: &NiftiHeader) -> ([[f64; 3]; 3], [f64; 3]) {
    let (mut b, mut c, mut d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    let sq = b * b + c * c + d * d;
    let a = if 1.0 - sq < 1e-7 {
        let n = 1.0 / sq.sqrt();
        b *= n;
        c *= n;
        d *= n;
        0.0
    } else {
        (1.0 - sq).sqrt()
    };
    let r = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let s = pixdim_spacing(h);
    let mut cols = [[0.0; 3]; 3];
    for (col, axis) in cols.iter_mut().enumerate() {
        let sign = if col == 2 { qfac } else { 1.0 };
        for row in 0..3 {
            axis[row] = r[row][col] * s[col] * sign;
        }
    }
    (
        cols,
        [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64],
    )
}

/// Turns a voxel → RAS affine (columns, offset) into an LPS [`Geometry`].
fn geometry_from_affine(
    dims: [usize; 3],
    cols_ras: [[f64; 3]; 3],
    offset_ras: [f64; 3],
    to_mm: f64,
) -> Result<Geometry, String> {
    let lps = |v: [f64; 3]| [-v[0] * to_mm, -v[1] * to_mm, v[2] * to_mm];
    let mut g = Geometry::axis_aligned(dims, [1.0; 3]);
    g.origin_mm = lps(offset_ras);
    for (a, col) in cols_ras.iter().enumerate() {
        let c = lps(*col);
        let len = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt();
        if !len.is_finite() || len <= 0.0 {
            return Err(format!(
                "the orientation matrix gives axis {} no length",
                a + 1
            ));
        }
        g.spacing_mm[a] = len;
        g.direction[a] = [c[0] / len, c[1] / len, c[2] / len];
    }
    g.validate().map_err(|e| e.to_string())?;
    Ok(g)
}

/// Serialises a NIfTI-1 single file (header, empty extension flag, voxels), both forms
/// set to `geometry`.
fn encode(
    geometry: &Geometry,
    datatype: i16,
    bitpix: i16,
    voxel_bytes: &[u8],
    intent_label: bool,
    cal: (f32, f32),
) -> Vec<u8> {
    let mut out = vec![0u8; DATA_OFFSET];
    let put_i16 =
        |out: &mut [u8], at: usize, v: i16| out[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 =
        |out: &mut [u8], at: usize, v: f32| out[at..at + 4].copy_from_slice(&v.to_le_bytes());
    out[0..4].copy_from_slice(&348i32.to_le_bytes());
    out[38] = b'r'; // "regular", as the reference library writes
    let [nx, ny, nz] = geometry.dims;
    let dim = [3, nx as i16, ny as i16, nz as i16, 1, 1, 1, 1];
    for (n, d) in dim.iter().enumerate() {
        put_i16(&mut out, 40 + 2 * n, *d);
    }
    if intent_label {
        put_i16(&mut out, 68, INTENT_LABEL);
        out[328..334].copy_from_slice(b"labels");
    }
    put_i16(&mut out, 70, datatype);
    put_i16(&mut out, 72, bitpix);

    // voxel -> RAS columns and offset
    let ras = |v: [f64; 3]| [-v[0], -v[1], v[2]];
    let mut cols = [[0.0; 3]; 3];
    for (a, col) in cols.iter_mut().enumerate() {
        *col = ras(geometry.direction[a]);
    }
    let offset = ras(geometry.origin_mm);
    let quat = quaternion_from_rotation(cols);
    let qfac = quat.map_or(1.0, |q| q.3);
    let pixdim = [
        qfac as f32,
        geometry.spacing_mm[0] as f32,
        geometry.spacing_mm[1] as f32,
        geometry.spacing_mm[2] as f32,
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    for (n, p) in pixdim.iter().enumerate() {
        put_f32(&mut out, 76 + 4 * n, *p);
    }
    put_f32(&mut out, 108, DATA_OFFSET as f32);
    put_f32(&mut out, 112, 1.0); // scl_slope
    put_f32(&mut out, 116, 0.0); // scl_inter
    out[123] = 2; // xyzt_units: millimetres
    put_f32(&mut out, 124, cal.1);
    put_f32(&mut out, 128, cal.0);
    let description = b"ICSeg (NIfTI-1)";
    out[148..148 + description.len()].copy_from_slice(description);
    if let Some((b, c, d, _)) = quat {
        put_i16(&mut out, 252, XFORM_SCANNER_ANAT);
        put_f32(&mut out, 256, b as f32);
        put_f32(&mut out, 260, c as f32);
        put_f32(&mut out, 264, d as f32);
    }
    put_f32(&mut out, 268, offset[0] as f32);
    put_f32(&mut out, 272, offset[1] as f32);
    put_f32(&mut out, 276, offset[2] as f32);
    put_i16(&mut out, 254, XFORM_SCANNER_ANAT);
    for (row, offset_mm) in offset.iter().enumerate() {
        for (a, (col, spacing)) in cols.iter().zip(geometry.spacing_mm).enumerate() {
            put_f32(
                &mut out,
                280 + 16 * row + 4 * a,
                (col[row] * spacing) as f32,
            );
        }
        put_f32(&mut out, 280 + 16 * row + 12, *offset_mm as f32);
    }
    out[344..348].copy_from_slice(b"n+1\0");
    // bytes 348..352: extension flag, all zero (no extensions)
    out.extend_from_slice(voxel_bytes);
    out
}

/// The NIfTI quaternion `(b, c, d, qfac)` of a rotation given as columns (RAS unit
/// vectors of the voxel axes), after `nifti_mat44_to_quatern`. `None` when the axes are
/// not orthonormal (a sheared grid, e.g. gantry tilt): the qform cannot express it and
/// only the sform is written.
fn quaternion_from_rotation(cols: [[f64; 3]; 3]) -> Option<(f64, f64, f64, f64)> {
    let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    for a in 0..3 {
        for b in 0..3 {
            let want = if a == b { 1.0 } else { 0.0 };
            if (dot(cols[a], cols[b]) - want).abs() > 1e-4 {
                return None;
            }
        }
    }
    // r[row][col]
    let mut r = [[0.0; 3]; 3];
    for (c, col) in cols.iter().enumerate() {
        for row in 0..3 {
            r[row][c] = col[row];
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 {
        for row in &mut r {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    let (r11, r12, r13) = (r[0][0], r[0][1], r[0][2]);
    let (r21, r22, r23) = (r[1][0], r[1][1], r[1][2]);
    let (r31, r32, r33) = (r[2][0], r[2][1], r[2][2]);
    let trace = r11 + r22 + r33 + 1.0;
    let (a, mut b, mut c, mut d);
    if trace > 0.5 {
        a = 0.5 * trace.sqrt();
        b = 0.25 * (r32 - r23) / a;
        c = 0.25 * (r13 - r31) / a;
        d = 0.25 * (r21 - r12) / a;
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r12 + r21) / b;
            d = 0.25 * (r13 + r31) / b;
            a = 0.25 * (r32 - r23) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r12 + r21) / c;
            d = 0.25 * (r23 + r32) / c;
            a = 0.25 * (r13 - r31) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r13 + r31) / d;
            c = 0.25 * (r23 + r32) / d;
            a = 0.25 * (r21 - r12) / d;
        }
        // q and -q are the same rotation; NIfTI stores the one with a >= 0.
        if a < 0.0 {
            b = -b;
            c = -c;
            d = -d;
        }
    }
    Some((b, c, d, qfac))
}

fn compress_if_gz(path: &Path, bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let gz = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().ends_with(".gz"));
    if !gz {
        return Ok(bytes);
    }
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::new(6),
    );
    std::io::Write::write_all(&mut enc, &bytes)?;
    enc.finish()
}

fn check_dims(path: &Path, g: &Geometry) -> Result<(), SaveError> {
    if g.dims.iter().any(|&d| d == 0 || d > i16::MAX as usize) {
        return Err(SaveError::Unsupported {
            path: path.into(),
            reason: format!(
                "NIfTI-1 holds at most 32767 voxels per axis, the grid is {:?}",
                g.dims
            ),
        });
    }
    Ok(())
}

/// Writes a label map: `u8` voxels when every label is at most 255, else `u16`; both
/// the sform and the qform describe the map's geometry (intent "label").
pub fn write_label_map(path: &Path, labels: &LabelMap) -> Result<(), SaveError> {
    let g = labels.geometry();
    check_dims(path, g)?;
    let max = labels.max_label();
    let (datatype, bitpix, bytes): (i16, i16, Vec<u8>) = if max <= u8::MAX as LabelValue {
        (2, 8, labels.labels().iter().map(|&v| v as u8).collect())
    } else {
        (
            512,
            16,
            labels
                .labels()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        )
    };
    let file = encode(g, datatype, bitpix, &bytes, true, (0.0, max as f32));
    let file = compress_if_gz(path, file).map_err(|e| SaveError::io(path, e))?;
    super::write_atomic(path, &file).map_err(|e| SaveError::io(path, e))
}

/// Writes a volume: `i16` voxels when every value is a whole number in the `i16`
/// range (CT in Hounsfield units), else `f32`; both forms describe its geometry.
pub fn write_volume(path: &Path, volume: &Volume) -> Result<(), SaveError> {
    let g = volume.geometry();
    check_dims(path, g)?;
    let v = volume.voxels();
    let integral = v
        .iter()
        .all(|x| x.fract() == 0.0 && *x >= i16::MIN as f32 && *x <= i16::MAX as f32);
    let (lo, hi) = volume.value_range();
    let file = if integral {
        let bytes: Vec<u8> = v.iter().flat_map(|&x| (x as i16).to_le_bytes()).collect();
        encode(g, 4, 16, &bytes, false, (lo, hi))
    } else {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        encode(g, 16, 32, &bytes, false, (lo, hi))
    };
    let file = compress_if_gz(path, file).map_err(|e| SaveError::io(path, e))?;
    super::write_atomic(path, &file).map_err(|e| SaveError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique_geometry() -> Geometry {
        // A rotation about the head-foot axis and a flipped slice axis (det < 0).
        let (s, c) = (0.3f64.sin(), 0.3f64.cos());
        Geometry {
            dims: [7, 5, 4],
            spacing_mm: [0.8, 0.9, 2.5],
            origin_mm: [-120.5, 33.25, -700.0],
            direction: [[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, -1.0]],
        }
    }

    fn assert_same_geometry(a: &Geometry, b: &Geometry) {
        assert_eq!(a.dims, b.dims);
        for i in 0..3 {
            assert!(
                (a.spacing_mm[i] - b.spacing_mm[i]).abs() < 1e-5,
                "{a:?} {b:?}"
            );
            assert!(
                (a.origin_mm[i] - b.origin_mm[i]).abs() < 1e-3,
                "{a:?} {b:?}"
            );
            for j in 0..3 {
                assert!(
                    (a.direction[i][j] - b.direction[i][j]).abs() < 1e-5,
                    "{a:?} {b:?}"
                );
            }
        }
    }

    fn header_of(bytes: &[u8]) -> NiftiHeader {
        NiftiHeader::from_reader(bytes).unwrap()
    }

    #[test]
    fn sform_and_qform_written_for_an_oblique_grid_describe_the_same_geometry() {
        let g = oblique_geometry();
        let bytes = encode(&g, 2, 8, &vec![0u8; g.voxel_count()], true, (0.0, 0.0));
        let h = header_of(&bytes);
        assert_eq!((h.sform_code, h.qform_code), (1, 1));
        assert_eq!(h.pixdim[0], -1.0, "a left-handed grid needs qfac = -1");
        let mut w = Vec::new();
        let mut only_q = h.clone();
        only_q.sform_code = 0;
        let from_q = geometry_from_header(&only_q, g.dims, Path::new("q"), &mut w).unwrap();
        let mut only_s = h.clone();
        only_s.qform_code = 0;
        let from_s = geometry_from_header(&only_s, g.dims, Path::new("s"), &mut w).unwrap();
        assert_same_geometry(&from_q, &g);
        assert_same_geometry(&from_s, &g);
        assert!(w.is_empty());
    }

    #[test]
    fn ras_is_converted_to_lps() {
        // Identity sform in RAS: voxel i runs to the patient's right, i.e. -x in LPS.
        let h = NiftiHeader {
            sform_code: 1,
            qform_code: 0,
            srow_x: [2.0, 0.0, 0.0, 10.0],
            srow_y: [0.0, 3.0, 0.0, 20.0],
            srow_z: [0.0, 0.0, 4.0, 30.0],
            ..NiftiHeader::default()
        };
        let g = geometry_from_header(&h, [2, 2, 2], Path::new("x"), &mut Vec::new()).unwrap();
        assert_eq!(g.origin_mm, [-10.0, -20.0, 30.0]);
        assert_eq!(g.spacing_mm, [2.0, 3.0, 4.0]);
        assert_eq!(g.orientation_code(), "RAS");
        let p = g.patient_from_voxel([1.0, 1.0, 1.0]);
        assert_eq!(p, [-12.0, -23.0, 34.0]);
    }

    #[test]
    fn sform_is_preferred_over_qform() {
        let mut h = NiftiHeader {
            sform_code: 2,
            qform_code: 1,
            srow_x: [5.0, 0.0, 0.0, 0.0],
            srow_y: [0.0, 5.0, 0.0, 0.0],
            srow_z: [0.0, 0.0, 5.0, 0.0],
            pixdim: [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            ..NiftiHeader::default()
        };
        let g = geometry_from_header(&h, [2, 2, 2], Path::new("x"), &mut Vec::new()).unwrap();
        assert_eq!(g.spacing_mm, [5.0; 3]);
        h.sform_code = 0;
        let g = geometry_from_header(&h, [2, 2, 2], Path::new("x"), &mut Vec::new()).unwrap();
        assert_eq!(g.spacing_mm, [1.0; 3]);
    }

    #[test]
    fn missing_orientation_warns_and_uses_pixdim() {
        let h = NiftiHeader {
            sform_code: 0,
            qform_code: 0,
            pixdim: [1.0, 0.5, 0.5, 3.0, 0.0, 0.0, 0.0, 0.0],
            ..NiftiHeader::default()
        };
        let mut w = Vec::new();
        let g = geometry_from_header(&h, [2, 2, 2], Path::new("x"), &mut w).unwrap();
        assert_eq!(g.spacing_mm, [0.5, 0.5, 3.0]);
        assert_eq!(w, vec![LoadWarning::NoOrientation]);
    }

    #[test]
    fn scl_slope_and_inter_are_applied_and_zero_slope_means_none() {
        let g = Geometry::axis_aligned([2, 1, 1], [1.0; 3]);
        let mut bytes = encode(&g, 4, 16, &[10, 0, 0xf6, 0xff], false, (0.0, 0.0));
        bytes[112..116].copy_from_slice(&2.0f32.to_le_bytes());
        bytes[116..120].copy_from_slice(&(-1024.0f32).to_le_bytes());
        let v = read_volume_bytes(&bytes, Path::new("x.nii")).unwrap();
        assert_eq!(v.volume.voxels(), &[-1004.0, -1044.0]);
        bytes[112..116].copy_from_slice(&0.0f32.to_le_bytes());
        let v = read_volume_bytes(&bytes, Path::new("x.nii")).unwrap();
        assert_eq!(v.volume.voxels(), &[10.0, -10.0]);
    }

    #[test]
    fn every_supported_voxel_type_decodes_little_and_big_endian() {
        let g = Geometry::axis_aligned([2, 1, 1], [1.0; 3]);
        // (datatype, bitpix, little-endian bytes, big-endian bytes, values)
        type Case = (i16, i16, Vec<u8>, Vec<u8>, [f32; 2]);
        let cases: Vec<Case> = vec![
            (2, 8, vec![7, 250], vec![7, 250], [7.0, 250.0]),
            (256, 8, vec![7, 0xfe], vec![7, 0xfe], [7.0, -2.0]),
            (
                4,
                16,
                [-300i16, 5].iter().flat_map(|v| v.to_le_bytes()).collect(),
                [-300i16, 5].iter().flat_map(|v| v.to_be_bytes()).collect(),
                [-300.0, 5.0],
            ),
            (
                512,
                16,
                [60000u16, 5].iter().flat_map(|v| v.to_le_bytes()).collect(),
                [60000u16, 5].iter().flat_map(|v| v.to_be_bytes()).collect(),
                [60000.0, 5.0],
            ),
            (
                8,
                32,
                [-70000i32, 5]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                [-70000i32, 5]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
                [-70000.0, 5.0],
            ),
            (
                16,
                32,
                [1.5f32, -2.25]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                [1.5f32, -2.25]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
                [1.5, -2.25],
            ),
            (
                64,
                64,
                [1.5f64, -2.25]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                [1.5f64, -2.25]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
                [1.5, -2.25],
            ),
        ];
        for (dt, bp, le, be, want) in cases {
            let bytes = encode(&g, dt, bp, &le, false, (0.0, 0.0));
            let v = read_volume_bytes(&bytes, Path::new("le.nii")).unwrap();
            assert_eq!(v.volume.voxels(), &want, "datatype {dt} little endian");
            let big = to_big_endian_header(&bytes, &be);
            let v = read_volume_bytes(&big, Path::new("be.nii")).unwrap();
            assert_eq!(v.volume.voxels(), &want, "datatype {dt} big endian");
        }
    }

    /// Rewrites our little-endian header in big endian (the fields we set) with `data`.
    fn to_big_endian_header(le: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = le[..DATA_OFFSET].to_vec();
        let swap = |out: &mut Vec<u8>, at: usize, n: usize| out[at..at + n].reverse();
        swap(&mut out, 0, 4);
        for n in 0..8 {
            swap(&mut out, 40 + 2 * n, 2);
        }
        for at in [68, 70, 72] {
            swap(&mut out, at, 2);
        }
        for n in 0..8 {
            swap(&mut out, 76 + 4 * n, 4);
        }
        for at in [108, 112, 116, 124, 128] {
            swap(&mut out, at, 4);
        }
        for at in [252, 254] {
            swap(&mut out, at, 2);
        }
        for n in 0..18 {
            swap(&mut out, 256 + 4 * n, 4);
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn label_maps_round_trip_through_u8_and_u16_files_with_their_geometry() {
        let dir = tempfile::tempdir().unwrap();
        let g = oblique_geometry();
        for (max, name, datatype) in [(200u16, "small.nii.gz", 2i16), (3000, "wide.nii", 512)] {
            let mut m = LabelMap::empty(g.clone());
            m.set([1, 2, 3], max);
            m.set([6, 4, 0], 1);
            let path = dir.path().join(name);
            write_label_map(&path, &m).unwrap();
            let back = read_label_map_own_grid(&path).unwrap();
            assert_eq!(back.labels(), m.labels());
            assert_same_geometry(back.geometry(), &g);
            // the reference nifti reader sees the same type, labels and forms
            let obj = nifti::ReaderOptions::new().read_file(&path).unwrap();
            let h = nifti::NiftiObject::header(&obj);
            assert_eq!(h.datatype, datatype);
            assert_eq!((h.sform_code, h.qform_code), (1, 1));
            assert_eq!(h.intent_code, INTENT_LABEL);
            let arr = nifti::IntoNdArray::into_ndarray::<f32>(nifti::NiftiObject::into_volume(obj))
                .unwrap();
            assert_eq!(arr[[1, 2, 3]], max as f32);
            assert_eq!(arr[[6, 4, 0]], 1.0);
            assert_eq!(arr.iter().filter(|v| **v != 0.0).count(), 2);
        }
    }

    #[test]
    fn volumes_round_trip_as_int16_or_float() {
        let dir = tempfile::tempdir().unwrap();
        let g = oblique_geometry();
        let hu: Vec<f32> = (0..g.voxel_count())
            .map(|n| n as f32 * 7.0 - 1024.0)
            .collect();
        let ct = Volume::new(g.clone(), hu, Modality::Ct).unwrap();
        let path = dir.path().join("ct.nii.gz");
        write_volume(&path, &ct).unwrap();
        let back = read_volume(&path).unwrap();
        assert_eq!(back.volume.voxels(), ct.voxels());
        assert_same_geometry(back.volume.geometry(), &g);
        let bytes = std::fs::read(&path).unwrap();
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(header_of(&plain).datatype, 4);

        let mr: Vec<f32> = (0..g.voxel_count()).map(|n| n as f32 * 0.37).collect();
        let mr = Volume::new(g.clone(), mr, Modality::Mr).unwrap();
        let path = dir.path().join("mr.nii");
        write_volume(&path, &mr).unwrap();
        assert_eq!(read_volume(&path).unwrap().volume.voxels(), mr.voxels());
    }

    #[test]
    fn a_header_announcing_more_data_than_the_file_holds_is_truncated() {
        let g = Geometry::axis_aligned([4, 4, 4], [1.0; 3]);
        let mut bytes = encode(&g, 2, 8, &[1u8; 64], false, (0.0, 0.0));
        // claim 4 × 4 × 30000 voxels
        bytes[44..46].copy_from_slice(&30000i16.to_le_bytes());
        let e = read_volume_bytes(&bytes, Path::new("lie.nii")).unwrap_err();
        assert!(
            matches!(
                e,
                LoadError::Truncated {
                    expected_bytes: 480352,
                    actual_bytes: 416,
                    ..
                }
            ),
            "{e:?}"
        );
        // the same lie inside a gzip stream is caught without allocating the claim
        let gz = compress_if_gz(Path::new("x.gz"), bytes).unwrap();
        let e = read_volume_bytes(&gz, Path::new("lie.nii.gz")).unwrap_err();
        assert!(matches!(e, LoadError::Truncated { .. }), "{e:?}");
        assert!(e.to_string().contains("incomplete"), "{e}");
    }

    #[test]
    fn bad_headers_give_typed_errors() {
        let g = Geometry::axis_aligned([2, 2, 2], [1.0; 3]);
        let good = encode(&g, 2, 8, &[0u8; 8], false, (0.0, 0.0));
        let name = Path::new("bad.nii");
        let mut b = good.clone();
        b[70..72].copy_from_slice(&128i16.to_le_bytes()); // RGB
        assert!(matches!(
            read_volume_bytes(&b, name),
            Err(LoadError::Unsupported { .. })
        ));
        let mut b = good.clone();
        b[42..44].copy_from_slice(&(-5i16).to_le_bytes());
        assert!(matches!(
            read_volume_bytes(&b, name),
            Err(LoadError::Corrupt { .. })
        ));
        let mut b = good.clone();
        b[344..348].copy_from_slice(b"xyz\0");
        assert!(matches!(
            read_volume_bytes(&b, name),
            Err(LoadError::Corrupt { .. })
        ));
        let mut b = good.clone();
        b[108..112].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(
            read_volume_bytes(&b, name),
            Err(LoadError::Corrupt { .. })
        ));
        let mut b = good.clone();
        for d in 0..3 {
            b[42 + 2 * d..44 + 2 * d].copy_from_slice(&32000i16.to_le_bytes());
        }
        assert!(matches!(
            read_volume_bytes(&b, name),
            Err(LoadError::TooLarge { .. })
        ));
        assert!(matches!(
            read_volume_bytes(&good[..100], name),
            Err(LoadError::Truncated {
                expected_bytes: 348,
                actual_bytes: 100,
                ..
            })
        ));
        let mut b = good.clone();
        b[0..4].copy_from_slice(&540i32.to_le_bytes());
        assert!(matches!(
            read_volume_bytes(&b, name),
            Err(LoadError::Unsupported { .. })
        ));
        // a zero sform column is a broken matrix, the qform is the fallback
        let mut b = good.clone();
        b[280..284].copy_from_slice(&0f32.to_le_bytes());
        assert!(read_volume_bytes(&b, name).is_ok());
        b[252..254].copy_from_slice(&0i16.to_le_bytes());
        assert!(matches!(
            read_volume_bytes(&b, name),
            Err(LoadError::Corrupt { .. })
        ));
    }

    #[test]
    fn fractional_or_negative_values_are_not_labels() {
        let dir = tempfile::tempdir().unwrap();
        let g = Geometry::axis_aligned([2, 1, 1], [1.0; 3]);
        for vals in [[0.5f32, 1.0], [-1.0, 1.0]] {
            let v = Volume::new(g.clone(), vals.to_vec(), Modality::Other).unwrap();
            let path = dir.path().join("f.nii");
            write_volume(&path, &v).unwrap();
            let e = read_label_map_own_grid(&path).unwrap_err();
            assert!(matches!(e, LoadError::NotALabelMap { .. }), "{e:?}");
        }
        // whole-number floats are fine (some tools store labels as float)
        let v = Volume::new(g.clone(), vec![0.0, 3.0], Modality::Other).unwrap();
        let path = dir.path().join("ok.nii");
        write_volume(&path, &v).unwrap();
        assert_eq!(read_label_map_own_grid(&path).unwrap().labels(), &[0, 3]);
    }

    #[test]
    fn four_d_files_load_their_first_volume_with_a_warning() {
        let g = Geometry::axis_aligned([2, 1, 1], [1.0; 3]);
        let mut b = encode(&g, 2, 8, &[1, 2, 3, 4, 5, 6], false, (0.0, 0.0));
        b[40..42].copy_from_slice(&4i16.to_le_bytes());
        b[48..50].copy_from_slice(&3i16.to_le_bytes());
        let v = read_volume_bytes(&b, Path::new("4d.nii")).unwrap();
        assert_eq!(v.volume.voxels(), &[1.0, 2.0]);
        assert_eq!(
            v.warnings,
            vec![LoadWarning::FirstVolumeOnly { volumes: 3 }]
        );
    }
}
