//! `icseg pacs studies|series|pull|push`: DICOMweb from the command line.
//!
//! Credentials never go on the command line (other users can read it): the user name
//! comes from `--user` or `ICSEG_PACS_USER`, the password from `ICSEG_PACS_PASSWORD`,
//! a bearer token from `ICSEG_PACS_TOKEN`; the server from `--server` or
//! `ICSEG_PACS_URL`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;

use crate::io;
use crate::pacs::{self, Auth, Client, ServerConfig, StudyQuery};

/// Arguments of `icseg pacs`.
#[derive(Debug, clap::Args)]
pub struct PacsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: PacsAction,
}

/// The server options every `icseg pacs` action takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// DICOMweb root URL, e.g. http://127.0.0.1:8042/dicom-web (default: $ICSEG_PACS_URL).
    #[arg(long)]
    pub server: Option<String>,
    /// User name for HTTP basic authentication (default: $ICSEG_PACS_USER); the password
    /// is read from $ICSEG_PACS_PASSWORD.
    #[arg(long)]
    pub user: Option<String>,
    /// Trust only the certificate authorities in this PEM file.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// `icseg pacs` actions.
#[derive(Debug, clap::Subcommand)]
pub enum PacsAction {
    /// Search studies (QIDO-RS).
    Studies {
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
        /// Patient ID.
        #[arg(long)]
        patient_id: Option<String>,
        /// Patient name (DICOM wildcards * and ?, e.g. DOE^J*).
        #[arg(long)]
        patient_name: Option<String>,
        /// First study date, YYYYMMDD.
        #[arg(long)]
        date_from: Option<String>,
        /// Last study date, YYYYMMDD.
        #[arg(long)]
        date_to: Option<String>,
        /// Modality in the study (CT, MR, ...).
        #[arg(long)]
        modality: Option<String>,
        /// Accession number.
        #[arg(long)]
        accession: Option<String>,
        /// Studies per page.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Studies to skip (the next page starts at offset + limit).
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// List the series of a study (QIDO-RS).
    Series {
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
        /// Study Instance UID.
        #[arg(long)]
        study: String,
    },
    /// Download a series into a cache folder (WADO-RS); a cached series is not
    /// downloaded again.
    Pull {
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
        /// Study Instance UID.
        #[arg(long)]
        study: String,
        /// Series Instance UID.
        #[arg(long)]
        series: String,
        /// The cache folder (the series lands in OUT/<study>/<series>/).
        #[arg(long)]
        out: PathBuf,
        /// Also open the pulled series as the app does and report the time to the volume.
        #[arg(long)]
        open: bool,
    },
    /// Store a DICOM file, e.g. a saved DICOM SEG, on the server (STOW-RS).
    Push {
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
        /// The DICOM file.
        file: PathBuf,
    },
}

impl ServerArgs {
    /// The server configuration, credentials from the environment.
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        let base_url = self
            .server
            .clone()
            .or_else(|| std::env::var("ICSEG_PACS_URL").ok())
            .context("give --server URL (or set ICSEG_PACS_URL)")?;
        let user = self
            .user
            .clone()
            .or_else(|| std::env::var("ICSEG_PACS_USER").ok())
            .filter(|u| !u.is_empty());
        let auth = if let Ok(token) = std::env::var("ICSEG_PACS_TOKEN")
            && !token.is_empty()
        {
            Auth::Bearer { token }
        } else if let Some(user) = user {
            Auth::Basic {
                user,
                password: std::env::var("ICSEG_PACS_PASSWORD").unwrap_or_default(),
            }
        } else {
            Auth::None
        };
        Ok(ServerConfig {
            base_url,
            auth,
            ca_file: self.ca_file.clone(),
        })
    }
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

/// Runs an `icseg pacs` action.
pub fn run(args: PacsArgs) -> anyhow::Result<()> {
    match args.action {
        PacsAction::Studies {
            server,
            patient_id,
            patient_name,
            date_from,
            date_to,
            modality,
            accession,
            limit,
            offset,
        } => {
            let client = Client::new(&server.config()?)?;
            let query = StudyQuery {
                patient_id: opt(&patient_id),
                patient_name: opt(&patient_name),
                date_from: opt(&date_from),
                date_to: opt(&date_to),
                modality: opt(&modality),
                accession_number: opt(&accession),
                limit,
                offset,
            };
            let page = client.search_studies(&query)?;
            println!(
                "{:<64}  {:<10}  {:<24}  {:<16}  {:<9}  {:>6}  description",
                "study UID", "date", "patient name", "patient ID", "modality", "images"
            );
            for s in &page.studies {
                println!(
                    "{:<64}  {:<10}  {:<24}  {:<16}  {:<9}  {:>6}  {}",
                    s.study_uid,
                    s.study_date,
                    s.patient_name,
                    s.patient_id,
                    s.modalities.join(","),
                    s.instance_count.map(|n| n.to_string()).unwrap_or_default(),
                    s.description
                );
            }
            println!(
                "{} studies from offset {}{}",
                page.studies.len(),
                page.offset,
                if page.more {
                    format!("; more with --offset {}", page.offset + query.page_size())
                } else {
                    String::new()
                }
            );
        }
        PacsAction::Series { server, study } => {
            let client = Client::new(&server.config()?)?;
            let series = client.search_series(&study)?;
            println!(
                "{:<64}  {:>6}  {:<8}  {:>6}  description",
                "series UID", "number", "modality", "images"
            );
            for s in &series {
                println!(
                    "{:<64}  {:>6}  {:<8}  {:>6}  {}",
                    s.series_uid,
                    s.number.map(|n| n.to_string()).unwrap_or_default(),
                    s.modality,
                    s.instances.map(|n| n.to_string()).unwrap_or_default(),
                    s.description
                );
            }
        }
        PacsAction::Pull {
            server,
            study,
            series,
            out,
            open,
        } => {
            let started = Instant::now();
            let client = Client::new(&server.config()?)?;
            let pulled = pacs::pull_series(&client, &out, &study, &series, &|| false, &mut |p| {
                eprint!(
                    "\r{} instances, {:.1} MB",
                    p.instances,
                    p.bytes as f64 / 1e6
                );
            })?;
            if !pulled.from_cache {
                eprintln!();
            }
            let mb = pulled.bytes as f64 / 1e6;
            if pulled.from_cache {
                println!(
                    "in the cache already: {} instances, {mb:.1} MB, not downloaded again",
                    pulled.instances
                );
            } else {
                let s = pulled.seconds.max(1e-9);
                println!(
                    "pulled {} instances, {mb:.1} MB in {:.2} s: {:.1} MB/s, {:.1} slices/s",
                    pulled.instances,
                    pulled.seconds,
                    mb / s,
                    pulled.instances as f64 / s
                );
            }
            println!("folder: {}", pulled.folder.display());
            if open {
                let t = Instant::now();
                let loaded = io::open_volume(&pulled.folder)?;
                let size = loaded.volume.geometry().dims;
                println!(
                    "opened {}x{}x{} in {:.2} s; {:.2} s from the start of the pull to the volume",
                    size[0],
                    size[1],
                    size[2],
                    t.elapsed().as_secs_f64(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        PacsAction::Push { server, file } => {
            let client = Client::new(&server.config()?)?;
            let outcome = client.store(&file)?;
            println!("{}: {outcome}", client.host());
            if let Some(url) = outcome.retrieve_url {
                println!("retrieve URL: {url}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn pacs_actions_parse_the_documented_arguments() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Some(Command::Pacs(p)) => p.action,
            other => panic!("{other:?}"),
        };
        match parse(&[
            "icseg",
            "pacs",
            "studies",
            "--server",
            "http://h/dicom-web",
            "--patient-name",
            "DOE^J*",
            "--date-from",
            "20200101",
            "--modality",
            "CT",
            "--limit",
            "10",
        ]) {
            PacsAction::Studies {
                server,
                patient_name,
                limit,
                ..
            } => {
                assert_eq!(server.server.as_deref(), Some("http://h/dicom-web"));
                assert_eq!(patient_name.as_deref(), Some("DOE^J*"));
                assert_eq!(limit, 10);
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "icseg",
            "pacs",
            "pull",
            "--server",
            "http://h/",
            "--study",
            "1.2",
            "--series",
            "1.2.3",
            "--out",
            "cache",
        ]) {
            PacsAction::Pull { series, open, .. } => {
                assert_eq!((series.as_str(), open), ("1.2.3", false))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["icseg", "pacs", "push", "--server", "http://h/", "seg.dcm"]) {
            PacsAction::Push { file, .. } => assert_eq!(file, PathBuf::from("seg.dcm")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["icseg", "pacs", "series", "--study", "1.2"]),
            PacsAction::Series { .. }
        ));
    }
}
