//! QIDO-RS filters and the DICOM JSON answers of searches and stores.

use serde_json::{Map, Value};

use super::PacsError;

/// Study search filters (empty strings are not sent). Names and IDs accept the
/// DICOM wildcards `*` and `?`.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StudyQuery {
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Patient's Name (0010,0010), e.g. `DOE^J*`.
    pub patient_name: String,
    /// First study date, YYYYMMDD.
    pub date_from: String,
    /// Last study date, YYYYMMDD.
    pub date_to: String,
    /// A modality in the study (CT, MR, ...).
    pub modality: String,
    /// Accession Number (0008,0050).
    pub accession_number: String,
    /// Page size (0: the default of 100).
    pub limit: usize,
    /// Studies to skip (paging).
    pub offset: usize,
}

impl std::fmt::Debug for StudyQuery {
    // Names which filters are set, never their values (they identify patients).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StudyQuery {{ {} filters, limit: {}, offset: {} }}",
            self.filter_count(),
            self.page_size(),
            self.offset
        )
    }
}

/// One page of a study search.
#[derive(Clone, Debug, PartialEq)]
pub struct StudyPage {
    /// The studies, in the server's order.
    pub studies: Vec<StudyRow>,
    /// The offset this page starts at.
    pub offset: usize,
    /// The server has more studies after this page.
    pub more: bool,
}

/// A study as QIDO-RS lists it. Its `Debug` output hides the patient fields.
#[derive(Clone, Default, PartialEq)]
pub struct StudyRow {
    /// Study Instance UID (checked: digits and dots).
    pub study_uid: String,
    /// Patient's Name, `^` replaced by spaces.
    pub patient_name: String,
    /// Patient ID.
    pub patient_id: String,
    /// Patient's Birth Date (YYYYMMDD as sent).
    pub birth_date: String,
    /// Study Date (YYYYMMDD as sent).
    pub study_date: String,
    /// Study Description.
    pub description: String,
    /// Accession Number.
    pub accession_number: String,
    /// Modalities in Study.
    pub modalities: Vec<String>,
    /// Number of Study Related Series, when sent.
    pub series_count: Option<u32>,
    /// Number of Study Related Instances, when sent.
    pub instance_count: Option<u32>,
}

impl std::fmt::Debug for StudyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StudyRow")
            .field("patient", &"<hidden>")
            .field("modalities", &self.modalities)
            .field("series_count", &self.series_count)
            .field("instance_count", &self.instance_count)
            .finish_non_exhaustive()
    }
}

/// A series as QIDO-RS lists it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesRow {
    /// Series Instance UID (checked: digits and dots).
    pub series_uid: String,
    /// Modality.
    pub modality: String,
    /// Series Description.
    pub description: String,
    /// Series Number.
    pub number: Option<i64>,
    /// Number of Series Related Instances, when sent.
    pub instances: Option<u32>,
}

impl StudyQuery {
    /// Page size asked of the server.
    pub fn page_size(&self) -> usize {
        if self.limit == 0 { 100 } else { self.limit }
    }

    /// How many filters are set (what logs may say about a search).
    pub fn filter_count(&self) -> usize {
        [
            &self.patient_id,
            &self.patient_name,
            &self.modality,
            &self.accession_number,
        ]
        .iter()
        .filter(|s| !s.trim().is_empty())
        .count()
            + usize::from(!self.date_from.trim().is_empty() || !self.date_to.trim().is_empty())
    }

    /// The QIDO-RS query parameters: filters, the fields wanted, and one study more
    /// than the page (to know whether another page follows).
    pub(crate) fn parameters(&self) -> Result<Vec<(&'static str, String)>, PacsError> {
        let mut out = Vec::new();
        let mut push = |key: &'static str, value: &str| {
            let value = value.trim();
            if !value.is_empty() {
                out.push((key, value.to_string()));
            }
        };
        push("PatientID", &self.patient_id);
        push("PatientName", &self.patient_name);
        push("ModalitiesInStudy", &self.modality.to_ascii_uppercase());
        push("AccessionNumber", &self.accession_number);
        let (from, to) = (self.date_from.trim(), self.date_to.trim());
        for date in [from, to] {
            let valid = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
            if !date.is_empty() && !valid {
                return Err(PacsError::InvalidQuery {
                    reason: "study dates are written YYYYMMDD".into(),
                });
            }
        }
        match (from.is_empty(), to.is_empty()) {
            (true, true) => {}
            (false, true) => out.push(("StudyDate", format!("{from}-"))),
            (true, false) => out.push(("StudyDate", format!("-{to}"))),
            (false, false) if from == to => out.push(("StudyDate", from.to_string())),
            (false, false) => out.push(("StudyDate", format!("{from}-{to}"))),
        }
        for field in ["00081030", "00080061", "00201206", "00201208", "00100030"] {
            out.push(("includefield", field.to_string()));
        }
        out.push(("limit", (self.page_size() + 1).to_string()));
        if self.offset > 0 {
            out.push(("offset", self.offset.to_string()));
        }
        Ok(out)
    }
}

pub(crate) fn series_parameters() -> Vec<(&'static str, String)> {
    ["0008103E", "00200011", "00201209", "00080060"]
        .iter()
        .map(|f| ("includefield", f.to_string()))
        .collect()
}

/// The first value of `tag` as text (PN as its alphabetic form, numbers printed).
fn text(obj: &Map<String, Value>, tag: &str) -> String {
    values(obj, tag).into_iter().next().unwrap_or_default()
}

fn values(obj: &Map<String, Value>, tag: &str) -> Vec<String> {
    let Some(Value::Array(items)) = obj.get(tag).and_then(|e| e.get("Value")) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::Object(pn) => pn
                .get("Alphabetic")
                .and_then(Value::as_str)
                .map(|s| s.replace('^', " ").trim().to_string()),
            _ => None,
        })
        .collect()
}

fn number(obj: &Map<String, Value>, tag: &str) -> Option<i64> {
    text(obj, tag).trim().parse().ok()
}

fn objects(json: &Value) -> Result<impl Iterator<Item = &Map<String, Value>>, String> {
    let Value::Array(items) = json else {
        return Err("a search answer must be a JSON array".into());
    };
    Ok(items.iter().filter_map(Value::as_object))
}

pub(crate) fn study_page(json: &Value, query: &StudyQuery) -> Result<StudyPage, String> {
    let mut studies: Vec<StudyRow> = objects(json)?
        .filter_map(|o| {
            let uid = text(o, "0020000D");
            super::check_uid(&uid).ok()?;
            Some(StudyRow {
                study_uid: uid,
                patient_name: text(o, "00100010"),
                patient_id: text(o, "00100020"),
                birth_date: text(o, "00100030"),
                study_date: text(o, "00080020"),
                description: text(o, "00081030"),
                accession_number: text(o, "00080050"),
                modalities: values(o, "00080061"),
                series_count: number(o, "00201206").and_then(|n| u32::try_from(n).ok()),
                instance_count: number(o, "00201208").and_then(|n| u32::try_from(n).ok()),
            })
        })
        .collect();
    let more = studies.len() > query.page_size();
    studies.truncate(query.page_size());
    Ok(StudyPage {
        studies,
        offset: query.offset,
        more,
    })
}

pub(crate) fn series_rows(json: &Value) -> Result<Vec<SeriesRow>, String> {
    let mut rows: Vec<SeriesRow> = objects(json)?
        .filter_map(|o| {
            let uid = text(o, "0020000E");
            super::check_uid(&uid).ok()?;
            Some(SeriesRow {
                series_uid: uid,
                modality: text(o, "00080060"),
                description: text(o, "0008103E"),
                number: number(o, "00200011"),
                instances: number(o, "00201209").and_then(|n| u32::try_from(n).ok()),
            })
        })
        .collect();
    rows.sort_by_key(|r| r.number.unwrap_or(i64::MAX));
    Ok(rows)
}

/// What a STOW-RS answer says.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct StowAnswer {
    pub stored: usize,
    pub failed: usize,
    pub failure_reason: Option<u16>,
    pub retrieve_url: Option<String>,
}

pub(crate) fn stow_answer(bytes: &[u8]) -> Result<StowAnswer, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(StowAnswer::default());
    }
    let json: Value =
        serde_json::from_slice(bytes).map_err(|_| "the store answer is not JSON".to_string())?;
    // A single object, or (some servers) an array holding one.
    let obj = match &json {
        Value::Object(o) => o,
        Value::Array(items) => match items.first().and_then(Value::as_object) {
            Some(o) => o,
            None => return Ok(StowAnswer::default()),
        },
        _ => return Err("the store answer is not a DICOM JSON object".into()),
    };
    let sequence = |tag: &str| -> Vec<&Map<String, Value>> {
        match obj.get(tag).and_then(|e| e.get("Value")) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
            _ => Vec::new(),
        }
    };
    let failed = sequence("00081198");
    Ok(StowAnswer {
        stored: sequence("00081199").len(),
        failed: failed.len(),
        failure_reason: failed
            .first()
            .and_then(|f| number(f, "00081197"))
            .and_then(|n| u16::try_from(n).ok()),
        retrieve_url: Some(text(obj, "00081190")).filter(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_qido_parameters() {
        let q = StudyQuery {
            patient_name: "DOE^J*".into(),
            date_from: "20200101".into(),
            date_to: "20201231".into(),
            modality: "ct".into(),
            limit: 10,
            offset: 20,
            ..Default::default()
        };
        let p = q.parameters().unwrap();
        let get = |k: &str| p.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PatientName"), Some("DOE^J*"));
        assert_eq!(get("StudyDate"), Some("20200101-20201231"));
        assert_eq!(get("ModalitiesInStudy"), Some("CT"));
        assert_eq!(get("limit"), Some("11"));
        assert_eq!(get("offset"), Some("20"));
        assert_eq!(get("PatientID"), None);
        let debug = format!("{q:?}");
        assert!(!debug.contains("DOE"), "{debug}");
        let bad = StudyQuery {
            date_from: "2020-01-01".into(),
            ..Default::default()
        };
        assert!(matches!(
            bad.parameters(),
            Err(PacsError::InvalidQuery { .. })
        ));
    }

    #[test]
    fn dicom_json_rows_are_read_and_paged() {
        let json: Value = serde_json::from_str(
            r#"[
              {"0020000D": {"vr": "UI", "Value": ["1.2.3"]},
               "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]},
               "00100020": {"vr": "LO", "Value": ["P1"]},
               "00080061": {"vr": "CS", "Value": ["CT", "SEG"]},
               "00201208": {"vr": "IS", "Value": [20]}},
              {"0020000D": {"vr": "UI", "Value": ["../../evil"]}},
              {"0020000D": {"vr": "UI", "Value": ["1.2.4"]}, "00201206": {"vr": "IS", "Value": ["3"]}}
            ]"#,
        )
        .unwrap();
        let q = StudyQuery {
            limit: 1,
            ..Default::default()
        };
        let page = study_page(&json, &q).unwrap();
        assert_eq!(page.studies.len(), 1);
        assert!(page.more);
        let s = &page.studies[0];
        assert_eq!(s.patient_name, "DOE JANE");
        assert_eq!(s.modalities, ["CT", "SEG"]);
        assert_eq!(s.instance_count, Some(20));
        assert!(!format!("{s:?}").contains("DOE"));
        let all = study_page(&json, &StudyQuery::default()).unwrap();
        assert_eq!(
            all.studies.len(),
            2,
            "a row with a UID that is no UID is dropped"
        );
        assert_eq!(all.studies[1].series_count, Some(3));
        assert!(study_page(&serde_json::json!({"x": 1}), &q).is_err());
    }

    #[test]
    fn store_answers_count_stored_and_failed_instances() {
        let ok = br#"{"00081190": {"vr": "UR", "Value": ["http://h/studies/1.2"]},
                      "00081199": {"vr": "SQ", "Value": [{}]}}"#;
        let a = stow_answer(ok).unwrap();
        assert_eq!((a.stored, a.failed), (1, 0));
        assert_eq!(a.retrieve_url.as_deref(), Some("http://h/studies/1.2"));
        let failed = br#"{"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [42752]}}]}}"#;
        let a = stow_answer(failed).unwrap();
        assert_eq!((a.stored, a.failed, a.failure_reason), (0, 1, Some(0xA700)));
        assert!(stow_answer(b"<html>").is_err());
    }
}
