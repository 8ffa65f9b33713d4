//! File → Open from PACS and File → Send SEG to PACS: a window over
//! [`crate::pacs::PacsWorker`] (search, series, pull with progress and Cancel, push),
//! and the remembered servers in the app's settings file.
//!
//! The window's state is plain data ([`PacsWindow`]); the worker runs the network on
//! its own thread and wakes the UI. Patient names and IDs appear in the tables only;
//! errors and the settings file's log lines never hold them or the credentials.

use std::path::PathBuf;

use eframe::egui;

use crate::pacs::{
    Auth, Event, Job, JobId, PacsError, PacsWorker, PullProgress, SeriesRow, ServerConfig,
    StudyPage, StudyQuery,
};

use super::notice::Waker;

/// A server as remembered in the settings file.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedServer {
    /// The server (the password or token only when `remember_secret`).
    pub server: ServerConfig,
    /// Whether the password or token is kept in the settings file (user-only).
    pub remember_secret: bool,
}

/// The settings file: `$ICSEG_SETTINGS`, else `$XDG_CONFIG_HOME/icseg/settings.json`,
/// else `~/.config/icseg/settings.json`.
pub fn settings_path() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("ICSEG_SETTINGS")
        .or_else(|| env("XDG_CONFIG_HOME").map(|d| d.join("icseg/settings.json")))
        .or_else(|| env("APPDATA").map(|d| d.join("icseg").join("settings.json")))
        .or_else(|| env("HOME").map(|d| d.join(".config/icseg/settings.json")))
}

/// The cache folder of pulled series: `$ICSEG_PACS_CACHE`, else
/// `$XDG_CACHE_HOME/icseg/pacs`, else `~/.cache/icseg/pacs`, else a temporary folder.
pub fn cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("ICSEG_PACS_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("icseg/pacs")))
        .or_else(|| env("LOCALAPPDATA").map(|d| d.join("icseg").join("pacs")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/icseg/pacs")))
        .unwrap_or_else(|| std::env::temp_dir().join("icseg-pacs"))
}

/// The servers remembered in the settings file (none when it is missing or unreadable).
pub fn load_servers() -> Vec<SavedServer> {
    settings_path()
        .map(|p| load_servers_from(&p))
        .unwrap_or_default()
}

/// The servers remembered in the settings file `path`.
pub fn load_servers_from(path: &std::path::Path) -> Vec<SavedServer> {
    let Ok(text) = std::fs::read(path) else {
        return Vec::new();
    };
    serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("pacs_servers").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// Writes `servers` into the settings file (other settings kept), readable by the
/// user only; secrets are dropped unless `remember_secret`.
pub fn store_servers(servers: &[SavedServer]) -> std::io::Result<PathBuf> {
    let path = settings_path()
        .ok_or_else(|| std::io::Error::other("no settings folder (set HOME or ICSEG_SETTINGS)"))?;
    store_servers_to(&path, servers)?;
    Ok(path)
}

/// [`store_servers`] into the settings file `path`.
pub fn store_servers_to(path: &std::path::Path, servers: &[SavedServer]) -> std::io::Result<()> {
    let mut root = std::fs::read(path)
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    let kept: Vec<SavedServer> = servers
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if !s.remember_secret {
                s.server.auth = match s.server.auth {
                    Auth::Basic { user, .. } => Auth::Basic {
                        user,
                        password: String::new(),
                    },
                    Auth::Bearer { .. } => Auth::Bearer {
                        token: String::new(),
                    },
                    Auth::None => Auth::None,
                };
            }
            s
        })
        .collect();
    root["pacs_servers"] = serde_json::to_value(kept).map_err(std::io::Error::other)?;
    let bytes = serde_json::to_vec_pretty(&root).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_private(path, &bytes)
}

/// Writes a file only its owner can read, atomically (temporary file, then rename).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// How the form authenticates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthKind {
    /// No credentials.
    #[default]
    None,
    /// User and password.
    Basic,
    /// Bearer token.
    Token,
}

/// What the worker is doing for the window.
#[derive(Clone, Debug, PartialEq)]
pub enum Busy {
    /// A study search.
    Searching,
    /// Listing a study's series.
    ListingSeries,
    /// Pulling a series (`expected` instances, when QIDO said).
    Pulling {
        /// Progress so far.
        progress: PullProgress,
        /// Instances expected.
        expected: Option<u32>,
    },
    /// Sending a SEG.
    Sending,
}

/// Everything the PACS window shows and edits.
pub struct PacsWindow {
    /// Whether the window is shown.
    pub open: bool,
    /// DICOMweb root URL being edited.
    pub url: String,
    /// Authentication kind.
    pub auth_kind: AuthKind,
    /// User name (basic).
    pub user: String,
    /// Password (basic); never logged.
    pub password: String,
    /// Bearer token; never logged.
    pub token: String,
    /// CA file path (empty: the system's certificates).
    pub ca_file: String,
    /// Keep the password/token in the settings file.
    pub remember_secret: bool,
    /// Remembered servers.
    pub servers: Vec<SavedServer>,
    /// Study filters and page.
    pub query: StudyQuery,
    /// The last page of studies.
    pub studies: Option<StudyPage>,
    /// Index into the studies of the page.
    pub selected_study: Option<usize>,
    /// The selected study's series.
    pub series: Vec<SeriesRow>,
    /// Index into `series`.
    pub selected_series: Option<usize>,
    /// The running job.
    pub busy: Option<(JobId, Busy)>,
    /// The last message: the server's answer or what went wrong.
    pub message: Option<(bool, String)>,
    /// Where pulled series go.
    pub cache: PathBuf,
    /// The SEG file a failed send can retry.
    pub last_sent: Option<PathBuf>,
    worker: Option<PacsWorker>,
    waker: Waker,
}

impl PacsWindow {
    /// A closed window with the remembered servers (the first one in the form).
    pub fn new(waker: Waker) -> Self {
        let mut w = Self {
            open: false,
            url: String::new(),
            auth_kind: AuthKind::None,
            user: String::new(),
            password: String::new(),
            token: String::new(),
            ca_file: String::new(),
            remember_secret: false,
            servers: load_servers(),
            query: StudyQuery::default(),
            studies: None,
            selected_study: None,
            series: Vec::new(),
            selected_series: None,
            busy: None,
            message: None,
            cache: cache_dir(),
            last_sent: None,
            worker: None,
            waker,
        };
        if let Some(first) = w.servers.first().cloned() {
            w.fill_form(&first);
        }
        w
    }

    fn fill_form(&mut self, saved: &SavedServer) {
        self.url = saved.server.base_url.clone();
        self.ca_file = saved
            .server
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        self.remember_secret = saved.remember_secret;
        match &saved.server.auth {
            Auth::None => self.auth_kind = AuthKind::None,
            Auth::Basic { user, password } => {
                self.auth_kind = AuthKind::Basic;
                self.user = user.clone();
                self.password = password.clone();
            }
            Auth::Bearer { token } => {
                self.auth_kind = AuthKind::Token;
                self.token = token.clone();
            }
        }
    }

    /// The server the form describes.
    pub fn server(&self) -> ServerConfig {
        ServerConfig {
            base_url: self.url.trim().to_string(),
            auth: match self.auth_kind {
                AuthKind::None => Auth::None,
                AuthKind::Basic => Auth::Basic {
                    user: self.user.clone(),
                    password: self.password.clone(),
                },
                AuthKind::Token => Auth::Bearer {
                    token: self.token.clone(),
                },
            },
            ca_file: Some(self.ca_file.trim())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        }
    }

    /// Remembers the form's server (replacing one with the same URL) in the settings.
    pub fn remember_server(&mut self) {
        let saved = SavedServer {
            server: self.server(),
            remember_secret: self.remember_secret,
        };
        self.servers
            .retain(|s| s.server.base_url != saved.server.base_url);
        self.servers.insert(0, saved);
        self.message = Some(match store_servers(&self.servers) {
            Ok(path) => (false, format!("Server remembered in {}", path.display())),
            Err(e) => (true, format!("The settings could not be written ({e})")),
        });
    }

    fn submit(&mut self, job: Job, busy: Busy) {
        let waker = self.waker.clone();
        let worker = self
            .worker
            .get_or_insert_with(|| PacsWorker::start(Box::new(move || waker())));
        let id = worker.submit(job);
        self.busy = Some((id, busy));
        self.message = None;
    }

    /// Searches studies with the form's filters from `offset`.
    pub fn search(&mut self, offset: usize) {
        self.query.offset = offset;
        self.selected_study = None;
        self.series.clear();
        self.selected_series = None;
        let job = Job::Studies {
            server: self.server(),
            query: self.query.clone(),
        };
        self.submit(job, Busy::Searching);
    }

    /// Selects a study and lists its series.
    pub fn select_study(&mut self, index: usize) {
        let Some(study) = self.studies.as_ref().and_then(|p| p.studies.get(index)) else {
            return;
        };
        let job = Job::Series {
            server: self.server(),
            study_uid: study.study_uid.clone(),
        };
        self.selected_study = Some(index);
        self.series.clear();
        self.selected_series = None;
        self.submit(job, Busy::ListingSeries);
    }

    /// Pulls the selected series (or takes it from the cache).
    pub fn pull_selected(&mut self) {
        let (Some(study), Some(series)) = (
            self.selected_study
                .and_then(|i| self.studies.as_ref()?.studies.get(i)),
            self.selected_series.and_then(|i| self.series.get(i)),
        ) else {
            return;
        };
        let job = Job::Pull {
            server: self.server(),
            study_uid: study.study_uid.clone(),
            series_uid: series.series_uid.clone(),
            cache: self.cache.clone(),
        };
        let expected = series.instances;
        self.submit(
            job,
            Busy::Pulling {
                progress: PullProgress {
                    instances: 0,
                    bytes: 0,
                },
                expected,
            },
        );
    }

    /// Sends a saved DICOM SEG to the form's server.
    pub fn send(&mut self, file: PathBuf) {
        self.last_sent = Some(file.clone());
        let job = Job::Push {
            server: self.server(),
            file,
        };
        self.submit(job, Busy::Sending);
    }

    /// Cancels the running job.
    pub fn cancel(&mut self) {
        if let (Some(worker), Some((id, _))) = (&self.worker, &self.busy) {
            worker.cancel(*id);
        }
    }

    /// Takes in the worker's events; returns a pulled series folder to open.
    pub fn poll(&mut self) -> Option<PathBuf> {
        let events: Vec<Event> = match &self.worker {
            Some(w) => w.poll().collect(),
            None => return None,
        };
        let mut open = None;
        for event in events {
            let current = self.busy.as_ref().map(|(id, _)| *id);
            let id = match &event {
                Event::Studies { id, .. }
                | Event::Series { id, .. }
                | Event::Progress { id, .. }
                | Event::Pulled { id, .. }
                | Event::Pushed { id, .. }
                | Event::Failed { id, .. } => *id,
            };
            if Some(id) != current {
                continue; // a stale answer
            }
            match event {
                Event::Studies { page, .. } => {
                    self.message = Some((
                        false,
                        format!(
                            "{} studies{}",
                            page.studies.len(),
                            if page.more {
                                " (more on the next page)"
                            } else {
                                ""
                            }
                        ),
                    ));
                    self.studies = Some(page);
                    self.busy = None;
                }
                Event::Series { series, .. } => {
                    self.series = series;
                    self.busy = None;
                }
                Event::Progress { progress, .. } => {
                    if let Some((_, Busy::Pulling { progress: p, .. })) = &mut self.busy {
                        *p = progress;
                    }
                }
                Event::Pulled { pulled, .. } => {
                    self.busy = None;
                    self.message = Some((
                        false,
                        if pulled.from_cache {
                            format!("{} images from the cache", pulled.instances)
                        } else {
                            format!(
                                "{} images ({:.1} MB) pulled in {:.1} s",
                                pulled.instances,
                                pulled.bytes as f64 / 1e6,
                                pulled.seconds
                            )
                        },
                    ));
                    self.open = false;
                    open = Some(pulled.folder);
                }
                Event::Pushed { outcome, .. } => {
                    self.busy = None;
                    self.message = Some((false, format!("Sent to the PACS: {outcome}")));
                }
                Event::Failed { error, .. } => {
                    self.busy = None;
                    self.message = Some((
                        !matches!(error, PacsError::Cancelled),
                        match error {
                            PacsError::Cancelled => "Cancelled; nothing was kept.".to_string(),
                            e => e.to_string(),
                        },
                    ));
                }
            }
        }
        open
    }

    /// Draws the window (when open).
    pub fn window_ui(&mut self, ctx: &egui::Context) {
        if !self.open {
            return;
        }
        let mut open = self.open;
        egui::Window::new("Open from PACS")
            .open(&mut open)
            .default_width(820.0)
            .show(ctx, |ui| self.contents_ui(ui));
        self.open = open && self.open;
    }

    fn contents_ui(&mut self, ui: &mut egui::Ui) {
        let idle = self.busy.is_none();
        ui.horizontal(|ui| {
            ui.label("Server");
            let mut chosen = None;
            egui::ComboBox::from_id_salt("pacs-servers")
                .selected_text("Remembered…")
                .show_ui(ui, |ui| {
                    for (n, s) in self.servers.iter().enumerate() {
                        if ui.selectable_label(false, &s.server.base_url).clicked() {
                            chosen = Some(n);
                        }
                    }
                });
            if let Some(n) = chosen {
                let s = self.servers[n].clone();
                self.fill_form(&s);
            }
            ui.add(
                egui::TextEdit::singleline(&mut self.url)
                    .hint_text("http://host:8042/dicom-web")
                    .desired_width(360.0),
            );
            if ui.button("Remember").clicked() {
                self.remember_server();
            }
        });
        ui.horizontal(|ui| {
            ui.radio_value(&mut self.auth_kind, AuthKind::None, "No login");
            ui.radio_value(&mut self.auth_kind, AuthKind::Basic, "User");
            ui.radio_value(&mut self.auth_kind, AuthKind::Token, "Token");
            match self.auth_kind {
                AuthKind::None => {}
                AuthKind::Basic => {
                    ui.add(egui::TextEdit::singleline(&mut self.user).desired_width(110.0));
                    ui.label("Password");
                    ui.add(
                        egui::TextEdit::singleline(&mut self.password)
                            .password(true)
                            .desired_width(110.0),
                    );
                }
                AuthKind::Token => {
                    ui.add(
                        egui::TextEdit::singleline(&mut self.token)
                            .password(true)
                            .desired_width(220.0),
                    );
                }
            }
            ui.checkbox(&mut self.remember_secret, "Remember it");
            ui.label("CA file");
            ui.add(
                egui::TextEdit::singleline(&mut self.ca_file)
                    .hint_text("system certificates")
                    .desired_width(140.0),
            );
        });
        ui.separator();
        egui::Grid::new("pacs-filters")
            .num_columns(6)
            .show(ui, |ui| {
                ui.label("Patient ID");
                ui.add(egui::TextEdit::singleline(&mut self.query.patient_id).desired_width(120.0));
                ui.label("Patient name");
                ui.add(
                    egui::TextEdit::singleline(&mut self.query.patient_name)
                        .hint_text("DOE^J*")
                        .desired_width(140.0),
                );
                ui.label("Accession");
                ui.add(
                    egui::TextEdit::singleline(&mut self.query.accession_number)
                        .desired_width(100.0),
                );
                ui.end_row();
                ui.label("Date from");
                ui.add(
                    egui::TextEdit::singleline(&mut self.query.date_from)
                        .hint_text("YYYYMMDD")
                        .desired_width(120.0),
                );
                ui.label("to");
                ui.add(
                    egui::TextEdit::singleline(&mut self.query.date_to)
                        .hint_text("YYYYMMDD")
                        .desired_width(140.0),
                );
                ui.label("Modality");
                ui.add(
                    egui::TextEdit::singleline(&mut self.query.modality)
                        .hint_text("CT")
                        .desired_width(100.0),
                );
                ui.end_row();
            });
        let page = self.query.page_size();
        let (offset, more) = self
            .studies
            .as_ref()
            .map_or((0, false), |p| (p.offset, p.more));
        ui.horizontal(|ui| {
            if ui.add_enabled(idle, egui::Button::new("Search")).clicked() {
                self.search(0);
            }
            if ui
                .add_enabled(idle && offset > 0, egui::Button::new("Previous page"))
                .clicked()
            {
                self.search(offset.saturating_sub(page));
            }
            if ui
                .add_enabled(idle && more, egui::Button::new("Next page"))
                .clicked()
            {
                self.search(offset + page);
            }
        });
        ui.separator();
        self.studies_ui(ui, idle);
        ui.separator();
        self.series_ui(ui, idle);
        ui.separator();
        self.footer_ui(ui, idle);
    }

    fn studies_ui(&mut self, ui: &mut egui::Ui, idle: bool) {
        let Some(page) = &self.studies else {
            ui.label("Search to list studies.");
            return;
        };
        let mut clicked = None;
        egui::ScrollArea::vertical()
            .id_salt("pacs-studies")
            .max_height(180.0)
            .show(ui, |ui| {
                egui::Grid::new("pacs-studies-grid")
                    .striped(true)
                    .num_columns(6)
                    .show(ui, |ui| {
                        for h in [
                            "Patient",
                            "Patient ID",
                            "Date",
                            "Modalities",
                            "Images",
                            "Description",
                        ] {
                            ui.strong(h);
                        }
                        ui.end_row();
                        for (n, s) in page.studies.iter().enumerate() {
                            let selected = self.selected_study == Some(n);
                            let name = if s.patient_name.is_empty() {
                                "(no name)"
                            } else {
                                &s.patient_name
                            };
                            if ui.selectable_label(selected, name).clicked() && idle {
                                clicked = Some(n);
                            }
                            ui.label(&s.patient_id);
                            ui.label(&s.study_date);
                            ui.label(s.modalities.join(", "));
                            ui.label(s.instance_count.map(|n| n.to_string()).unwrap_or_default());
                            ui.label(&s.description);
                            ui.end_row();
                        }
                    });
            });
        if let Some(n) = clicked {
            self.select_study(n);
        }
    }

    fn series_ui(&mut self, ui: &mut egui::Ui, idle: bool) {
        if self.selected_study.is_none() {
            ui.label("Choose a study to list its series.");
            return;
        }
        let mut clicked = None;
        egui::ScrollArea::vertical()
            .id_salt("pacs-series")
            .max_height(140.0)
            .show(ui, |ui| {
                egui::Grid::new("pacs-series-grid")
                    .striped(true)
                    .num_columns(4)
                    .show(ui, |ui| {
                        for h in ["Series", "Modality", "Images", "Description"] {
                            ui.strong(h);
                        }
                        ui.end_row();
                        for (n, s) in self.series.iter().enumerate() {
                            let selected = self.selected_series == Some(n);
                            let number = s.number.map_or("#?".to_string(), |n| format!("#{n}"));
                            if ui.selectable_label(selected, number).clicked() && idle {
                                clicked = Some(n);
                            }
                            ui.label(&s.modality);
                            ui.label(s.instances.map(|n| n.to_string()).unwrap_or_default());
                            ui.label(&s.description);
                            ui.end_row();
                        }
                    });
            });
        if let Some(n) = clicked {
            self.selected_series = Some(n);
        }
    }

    fn footer_ui(&mut self, ui: &mut egui::Ui, idle: bool) {
        ui.horizontal(|ui| {
            let can_open = idle && self.selected_series.is_some();
            if ui
                .add_enabled(can_open, egui::Button::new("Open series"))
                .clicked()
            {
                self.pull_selected();
            }
            if let Some(file) = self.last_sent.clone()
                && idle
                && self.message.as_ref().is_some_and(|(error, _)| *error)
                && ui.button("Retry sending the SEG").clicked()
            {
                self.send(file);
            }
            match &self.busy {
                Some((_, Busy::Pulling { progress, expected })) => {
                    let fraction = expected
                        .filter(|n| *n > 0)
                        .map(|n| progress.instances as f32 / n as f32)
                        .unwrap_or(0.0);
                    ui.add(
                        egui::ProgressBar::new(fraction.min(1.0))
                            .desired_width(260.0)
                            .text(format!(
                                "{} images, {:.1} MB",
                                progress.instances,
                                progress.bytes as f64 / 1e6
                            )),
                    );
                    if ui.button("Cancel").clicked() {
                        self.cancel();
                    }
                }
                Some((_, busy)) => {
                    ui.spinner();
                    ui.label(match busy {
                        Busy::Searching => "Searching…",
                        Busy::ListingSeries => "Listing series…",
                        Busy::Sending => "Sending…",
                        Busy::Pulling { .. } => "",
                    });
                    if ui.button("Cancel").clicked() {
                        self.cancel();
                    }
                }
                None => {}
            }
        });
        if let Some((error, text)) = &self.message {
            let color = if *error {
                ui.visuals().error_fg_color
            } else {
                ui.visuals().text_color()
            };
            ui.colored_label(color, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_servers_are_private_and_drop_unremembered_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, br#"{"other": 1}"#).unwrap();
        let server = |secret: bool, url: &str| SavedServer {
            server: ServerConfig {
                base_url: url.into(),
                auth: Auth::Basic {
                    user: "u".into(),
                    password: "pw-123".into(),
                },
                ca_file: None,
            },
            remember_secret: secret,
        };
        store_servers_to(
            &path,
            &[
                server(false, "http://a/dicom-web"),
                server(true, "http://b/dicom-web"),
            ],
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"other\""), "other settings kept");
        assert_eq!(text.matches("pw-123").count(), 1, "{text}");
        let back = load_servers_from(&path);
        assert_eq!(back.len(), 2);
        assert_eq!(
            back[0].server.auth,
            Auth::Basic {
                user: "u".into(),
                password: String::new()
            }
        );
        assert_eq!(back[1], server(true, "http://b/dicom-web"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "settings readable by others: {mode:o}");
        }
    }
}
