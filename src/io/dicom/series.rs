//! What a scan reports about each series it finds: no patient identifiers, only what a
//! user needs to choose one (and what [`super::super::LoadError::MultipleSeries`] carries).

use dicom::encoding::TransferSyntaxIndex;
use dicom::transfer_syntax::TransferSyntaxRegistry;

/// What kind of objects a series holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SeriesKind {
    /// Images that form a volume (CT, MR, ...).
    Image,
    /// DICOM Segmentation objects.
    Segmentation,
    /// Objects without pixel data (reports, structured documents, ...).
    NonImage,
}

/// One series found by [`super::scan`]; carries no patient identifiers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeriesSummary {
    /// Series Instance UID, to pass to [`super::load_series`].
    pub series_instance_uid: String,
    /// Series Number, when present.
    pub series_number: Option<i64>,
    /// Modality code (CT, MR, SEG, ...).
    pub modality: String,
    /// Series Description (may be empty).
    pub description: String,
    /// What the series holds.
    pub kind: SeriesKind,
    /// Number of files.
    pub files: usize,
    /// Number of slices (frames of all files).
    pub slices: usize,
    /// Image width (Columns) of the first image.
    pub columns: usize,
    /// Image height (Rows) of the first image.
    pub rows: usize,
    /// Transfer syntax UIDs used, sorted.
    pub transfer_syntaxes: Vec<String>,
}

impl SeriesSummary {
    /// Readable names of the transfer syntaxes.
    pub fn transfer_syntax_names(&self) -> Vec<String> {
        self.transfer_syntaxes
            .iter()
            .map(|uid| transfer_syntax_name(uid))
            .collect()
    }
}

impl std::fmt::Display for SeriesSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let number = self
            .series_number
            .map(|n| format!("#{n} "))
            .unwrap_or_default();
        let description = if self.description.is_empty() {
            "(no description)"
        } else {
            &self.description
        };
        write!(
            f,
            "{number}{} {description}: {} × {} × {} slices",
            self.modality, self.columns, self.rows, self.slices
        )
    }
}

/// A readable name for a transfer syntax UID.
pub fn transfer_syntax_name(uid: &str) -> String {
    match TransferSyntaxRegistry.get(uid) {
        Some(ts) => format!("{} ({uid})", ts.name()),
        None => format!("unknown ({uid})"),
    }
}
