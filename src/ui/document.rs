//! An open volume with its annotation session and what the user is looking at.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::io::{LoadWarning, LoadedVolume, VolumeSource};
use crate::session::{Overview, OverviewCache, Session, SessionFile, volume_fingerprint};
use crate::volume::{Axis, LabelValue, Volume};

use crate::display::{WindowLevel, initial_window};

/// Where Ctrl+S writes, and in which format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveTarget {
    /// The label file.
    pub path: PathBuf,
    /// NIfTI or DICOM SEG.
    pub format: LabelFormat,
}

/// Label file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelFormat {
    /// NIfTI label map (`.nii.gz`).
    Nifti,
    /// DICOM Segmentation object (only for DICOM input).
    DicomSeg,
}

impl LabelFormat {
    /// Human name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nifti => "NIfTI label map",
            Self::DicomSeg => "DICOM SEG",
        }
    }
}

/// An open volume and its session.
pub struct Document {
    /// The image (shared with the engine's worker thread).
    pub volume: Arc<Volume>,
    /// The file or folder it was opened from.
    pub path: PathBuf,
    /// What it came from (NIfTI, or the DICOM series and its references).
    pub source: VolumeSource,
    /// Annotations.
    pub session: Session,
    /// [`volume_fingerprint`] of the volume (ties session files to it).
    pub fingerprint: u64,
    /// A process-unique id for GPU uploads and caches.
    pub key: u64,
    /// The crosshair: the voxel all views pass through.
    pub cursor: [usize; 3],
    /// Display window.
    pub window: WindowLevel,
    /// The structure being edited.
    pub active: Option<LabelValue>,
    /// Session revision at the last save (unsaved work when it differs).
    pub saved_revision: u64,
    /// Where Ctrl+S writes; asked for on the first save.
    pub save_target: Option<SaveTarget>,
    /// Loader warnings worth showing.
    pub warnings: Vec<LoadWarning>,
    /// The active structure's per-slice areas, jumps and statistics.
    overview: OverviewCache,
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

impl Document {
    /// A fresh document with one empty structure, the crosshair in the middle, and the
    /// modality's default window. Annotation runs along the volume's slice axis `k`.
    pub fn new(loaded: LoadedVolume, path: PathBuf) -> Self {
        let mut session = Session::new(loaded.volume.geometry().clone(), Axis::K);
        let active = session.add_structure("Structure 1").ok();
        let saved_revision = session.revision();
        Self::with_session(loaded, path, session, active, saved_revision)
    }

    /// A document around an existing session (restored from a file).
    pub fn with_session(
        loaded: LoadedVolume,
        path: PathBuf,
        session: Session,
        active: Option<LabelValue>,
        saved_revision: u64,
    ) -> Self {
        let LoadedVolume {
            volume,
            source,
            warnings,
        } = loaded;
        let fingerprint = volume_fingerprint(&volume);
        let window = initial_window(&volume);
        let cursor = volume.dims().map(|d| d / 2);
        let active = active.or_else(|| session.structures().first().map(|s| s.value));
        Self {
            volume: Arc::new(volume),
            path,
            source,
            session,
            fingerprint,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            cursor,
            window,
            active,
            saved_revision,
            save_target: None,
            warnings,
            overview: OverviewCache::default(),
        }
    }

    /// Brings the active structure's overview up to date (only changed slices are
    /// measured again). Called once per frame and before choosing a slice to review.
    pub fn refresh_overview(&mut self) {
        if let Some(label) = self.active {
            self.overview.update(&self.session, &self.volume, label);
        }
    }

    /// The active structure's overview as of the last [`Self::refresh_overview`].
    pub fn overview(&self) -> Option<&Overview> {
        self.active.and_then(|l| self.overview.get(l))
    }

    /// The file or folder the volume was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The DICOM series loaded, when the volume came from a DICOM folder.
    pub fn series_uid(&self) -> Option<&str> {
        self.source.dicom().map(|d| d.series_instance_uid.as_str())
    }

    /// A snapshot of the session for a session or recovery file.
    pub fn session_file(&self) -> SessionFile {
        let mut file = self.session.to_file(Some(self.path()), self.fingerprint);
        file.series_uid = self.series_uid().map(str::to_owned);
        file
    }

    /// The volume as a [`LoadedVolume`] again (to rebuild the document around another
    /// session).
    pub fn into_loaded(self) -> LoadedVolume {
        LoadedVolume {
            volume: Arc::try_unwrap(self.volume).unwrap_or_else(|a| (*a).clone()),
            source: self.source,
            warnings: self.warnings,
        }
    }

    /// A short name for titles: the file or folder name.
    pub fn title(&self) -> String {
        self.path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "volume".into())
    }

    /// Whether there are changes not yet saved.
    pub fn unsaved(&self) -> bool {
        self.session.revision() != self.saved_revision
    }

    /// The current slice along the working axis.
    pub fn work_slice(&self) -> usize {
        self.cursor[self.session.axis().index()]
    }

    /// Moves the crosshair to voxel `c` (clamped to the volume).
    pub fn set_cursor(&mut self, c: [usize; 3]) {
        let dims = self.volume.dims();
        self.cursor = [0, 1, 2].map(|a| c[a].min(dims[a] - 1));
    }

    /// Moves the crosshair `delta` slices along `axis` (stopping at the ends).
    pub fn step_slice(&mut self, axis: Axis, delta: i64) {
        let n = self.volume.dims()[axis.index()] as i64;
        let c = &mut self.cursor[axis.index()];
        *c = (*c as i64 + delta).clamp(0, n - 1) as usize;
    }

    /// Shows slice `index` along `axis` (clamped to the volume).
    pub fn set_slice(&mut self, axis: Axis, index: usize) {
        let n = self.volume.dims()[axis.index()];
        self.cursor[axis.index()] = index.min(n - 1);
    }

    /// Whether the volume came from DICOM (and so can be saved as DICOM SEG).
    pub fn is_dicom(&self) -> bool {
        self.source.dicom().is_some()
    }

    /// The label file name proposed on first save: beside the volume,
    /// `<name>.labels.nii.gz` (or `<name>.seg.dcm` for DICOM SEG).
    pub fn default_save_path(&self, format: LabelFormat) -> PathBuf {
        let path = self.path();
        let stem = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "volume".into());
        let stem = stem
            .strip_suffix(".nii.gz")
            .or_else(|| stem.strip_suffix(".nii"))
            .unwrap_or(&stem)
            .to_owned();
        let dir = path.parent().unwrap_or(Path::new("."));
        match format {
            LabelFormat::Nifti => dir.join(format!("{stem}.labels.nii.gz")),
            LabelFormat::DicomSeg => dir.join(format!("{stem}.seg.dcm")),
        }
    }
}

/// The session file written beside a label file: `<label file>.icseg`.
pub fn session_path_for(label_path: &Path) -> PathBuf {
    let mut s = label_path.as_os_str().to_owned();
    s.push(".icseg");
    PathBuf::from(s)
}
