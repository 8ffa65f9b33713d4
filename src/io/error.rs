//! Errors and warnings of the file loaders and writers.
//!
//! Every message says what went wrong in words a clinician understands and what to do
//! about it, and ends with the file path. No message ever carries a patient identifier
//! (name, ID, birth date, accession number): the loaders never put those in here.

use std::fmt;
use std::path::{Path, PathBuf};

use super::dicom::series::SeriesSummary;

/// Why a volume, label map or segmentation could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path does not exist.
    #[error("nothing found at this path; check the spelling or pick the file again: {}", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// The operating system refused the read.
    #[error("the file could not be read ({source}); check that it is not open elsewhere and that you may read it: {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Neither NIfTI nor DICOM.
    #[error("this is not a NIfTI (.nii, .nii.gz) or DICOM file; open a CT or MR image in one of those formats: {}", path.display())]
    UnrecognizedFormat {
        /// The file.
        path: PathBuf,
    },
    /// A folder without any DICOM image in it (empty, or only other files such as JPEGs).
    #[error("no DICOM images were found in this folder ({files_seen} other files were looked at); pick the folder that holds the exported DICOM series: {}", path.display())]
    NoDicomImages {
        /// The folder.
        path: PathBuf,
        /// Files that were looked at and were not DICOM images.
        files_seen: usize,
    },
    /// The file ends before the data its header announces.
    #[error("the file is incomplete: it should hold {expected_bytes} bytes but holds {actual_bytes}; it was probably cut short while copying, so copy it again: {}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header announces.
        expected_bytes: u64,
        /// Bytes actually present.
        actual_bytes: u64,
    },
    /// The content contradicts itself or the format.
    #[error("the file is damaged or is not a valid {format} image ({reason}); export it again from the scanner or PACS: {}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// "NIfTI", "DICOM" or "DICOM SEG".
        format: &'static str,
        /// What is wrong, in plain words.
        reason: String,
    },
    /// A valid file using a feature this program does not handle.
    #[error("this image uses something ICSeg cannot open yet: {what}: {}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The feature.
        what: String,
    },
    /// The image would not fit in memory.
    #[error("the image is too large to open ({voxels} voxels; the limit is {limit}); crop or downsample it first: {}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Voxels announced by the header.
        voxels: u64,
        /// The largest number of voxels accepted.
        limit: u64,
    },
    /// A DICOM object that is not an image (a report, a structured document, ...).
    #[error("this DICOM file holds no image (no pixel data); it may be a report or another non-image object — open the image series instead: {}", path.display())]
    NoPixelData {
        /// The file.
        path: PathBuf,
    },
    /// The DICOM input holds several series; the caller must choose one and call
    /// [`super::dicom::load_series`].
    #[error("the folder holds {} image series; choose one of them", series.len())]
    MultipleSeries {
        /// One summary per series, in a stable order.
        series: Vec<SeriesSummary>,
    },
    /// A requested series is not in the folder.
    #[error("the chosen series is no longer in this folder; scan the folder again: {}", path.display())]
    SeriesNotFound {
        /// The folder.
        path: PathBuf,
    },
    /// The images of one series do not form a regular volume.
    #[error("the images of this series do not form one volume: {problem}: {}", path.display())]
    InconsistentSeries {
        /// The folder or file.
        path: PathBuf,
        /// What is inconsistent.
        problem: SeriesProblem,
    },
    /// A label map or segmentation does not lie on the image it should belong to.
    #[error("the segmentation does not match the open image ({reason}); open the segmentation made for this image: {}", path.display())]
    NotOnGrid {
        /// The label file.
        path: PathBuf,
        /// How it differs.
        reason: String,
    },
    /// The values of a label file are not labels (negative, fractional, too large).
    #[error("this file is not a label map ({reason}); open it as an image instead: {}", path.display())]
    NotALabelMap {
        /// The file.
        path: PathBuf,
        /// What is wrong with the values.
        reason: String,
    },
}

impl LoadError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::NotFound { path: path.into() }
        } else {
            Self::Io {
                path: path.into(),
                source,
            }
        }
    }

    pub(crate) fn corrupt(path: &Path, format: &'static str, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.into(),
            format,
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(path: &Path, what: impl Into<String>) -> Self {
        Self::Unsupported {
            path: path.into(),
            what: what.into(),
        }
    }

    pub(crate) fn inconsistent(path: &Path, problem: SeriesProblem) -> Self {
        Self::InconsistentSeries {
            path: path.into(),
            problem,
        }
    }
}

/// How the images of one DICOM series fail to form a volume.
#[derive(Clone, Debug, PartialEq)]
pub enum SeriesProblem {
    /// Images of different sizes (rows × columns).
    MixedSizes {
        /// The distinct sizes found, as (columns, rows).
        sizes: Vec<(usize, usize)>,
    },
    /// Images with different orientations (e.g. a localizer in the series).
    MixedOrientations {
        /// How many distinct orientations.
        count: usize,
    },
    /// Images with different pixel spacing.
    MixedPixelSpacing,
    /// Several images at the same slice position (several phases, echoes or times).
    DuplicatePositions {
        /// Images sharing a position with another.
        duplicates: usize,
    },
    /// Slice gaps that vary too much to be represented as one spacing.
    IrregularSpacing {
        /// Smallest gap between neighbouring slices, mm.
        min_mm: f64,
        /// Largest gap, mm.
        max_mm: f64,
    },
    /// An image lacks the position or orientation needed to place it.
    MissingGeometry {
        /// The missing attribute.
        attribute: &'static str,
    },
    /// Colour or multi-sample images.
    NotGreyscale,
}

impl fmt::Display for SeriesProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MixedSizes { sizes } => {
                let list: Vec<String> = sizes.iter().map(|(c, r)| format!("{c}×{r}")).collect();
                write!(
                    f,
                    "it mixes images of different sizes ({}); export the series without localizer or reformatted images",
                    list.join(", ")
                )
            }
            Self::MixedOrientations { count } => write!(
                f,
                "it mixes {count} different slice orientations (often a localizer image); export only the axial, coronal or sagittal stack"
            ),
            Self::MixedPixelSpacing => write!(f, "its images have different pixel spacings"),
            Self::DuplicatePositions { duplicates } => write!(
                f,
                "{duplicates} images lie at the same position as another image (several phases, echoes or time points in one series); export a single phase"
            ),
            Self::IrregularSpacing { min_mm, max_mm } => write!(
                f,
                "the distance between slices varies from {min_mm:.2} to {max_mm:.2} mm; reconstruct the series with even slice spacing"
            ),
            Self::MissingGeometry { attribute } => write!(
                f,
                "an image has no {attribute}, so its position in the patient is unknown"
            ),
            Self::NotGreyscale => write!(
                f,
                "it holds colour images; only greyscale CT or MR is supported"
            ),
        }
    }
}

/// Something the caller should show the user, although the volume loaded.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LoadWarning {
    /// Slices were missing from a regular stack and were filled with the lowest value.
    MissingSlices {
        /// Slices inserted.
        count: usize,
        /// Nominal slice spacing, mm.
        spacing_mm: f64,
    },
    /// Slice gaps vary a little; the mean spacing was used.
    IrregularSpacing {
        /// Smallest gap, mm.
        min_mm: f64,
        /// Largest gap, mm.
        max_mm: f64,
        /// Spacing used, mm.
        used_mm: f64,
    },
    /// Slices are not stacked along their normal (gantry tilt); the stacking direction
    /// was kept, so positions are right but the grid is sheared.
    GantryTilt {
        /// Angle between slice normal and stacking direction, degrees.
        degrees: f64,
    },
    /// The NIfTI file records no orientation (qform and sform codes are 0); the image was
    /// placed axis-aligned with its voxel spacing.
    NoOrientation,
    /// Files in the folder that were not DICOM images and were skipped.
    SkippedFiles {
        /// How many.
        count: usize,
    },
    /// Only the first volume of a 4-D file was loaded.
    FirstVolumeOnly {
        /// Volumes in the file.
        volumes: usize,
    },
    /// The spatial unit was not millimetres and was converted.
    ConvertedUnits {
        /// The unit found ("m" or "µm").
        from: String,
    },
}

impl fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingSlices { count, spacing_mm } => write!(
                f,
                "{count} slices are missing from the series (spacing {spacing_mm:.2} mm); they are shown as empty slices"
            ),
            Self::IrregularSpacing {
                min_mm,
                max_mm,
                used_mm,
            } => write!(
                f,
                "the slice spacing varies from {min_mm:.3} to {max_mm:.3} mm; an even spacing of {used_mm:.3} mm is used, so distances along the slice axis are approximate"
            ),
            Self::GantryTilt { degrees } => write!(
                f,
                "the slices are tilted by {degrees:.1}° (gantry tilt); positions are kept exact but views across slices look sheared"
            ),
            Self::NoOrientation => write!(
                f,
                "the file records no patient orientation; left/right and front/back labels may be wrong"
            ),
            Self::SkippedFiles { count } => {
                write!(
                    f,
                    "{count} files in the folder are not DICOM images and were skipped"
                )
            }
            Self::FirstVolumeOnly { volumes } => write!(
                f,
                "the file holds {volumes} volumes (a time series); only the first one is shown"
            ),
            Self::ConvertedUnits { from } => {
                write!(
                    f,
                    "the file measures distances in {from}; converted to millimetres"
                )
            }
        }
    }
}

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The operating system refused the write.
    #[error("the file could not be saved ({source}); check that the folder exists, that you may write to it and that the disk is not full: {}", path.display())]
    Io {
        /// The target file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The data cannot be expressed in the chosen format.
    #[error("the segmentation cannot be saved in this format: {reason}: {}", path.display())]
    Unsupported {
        /// The target file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The DICOM encoder failed.
    #[error("the DICOM file could not be encoded ({reason}): {}", path.display())]
    Encode {
        /// The target file.
        path: PathBuf,
        /// The encoder's message.
        reason: String,
    },
}

impl SaveError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
