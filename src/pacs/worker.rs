//! The DICOMweb client on a worker thread: the engine's job/event/cancel pattern, so a
//! GUI submits a search, pull or push and drains events each frame without blocking.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::PacsError;
use super::client::{Client, ServerConfig, StowOutcome};
use super::pull::{PullProgress, PulledSeries, pull_series};
use super::query::{SeriesRow, StudyPage, StudyQuery};

/// Identifies a submitted job; events carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// What the worker can do.
#[derive(Clone, Debug)]
pub enum Job {
    /// QIDO-RS study search.
    Studies {
        /// The server.
        server: ServerConfig,
        /// Filters and page.
        query: StudyQuery,
    },
    /// QIDO-RS series of one study.
    Series {
        /// The server.
        server: ServerConfig,
        /// Study Instance UID.
        study_uid: String,
    },
    /// WADO-RS pull of one series into `cache` (or a cache hit).
    Pull {
        /// The server.
        server: ServerConfig,
        /// Study Instance UID.
        study_uid: String,
        /// Series Instance UID.
        series_uid: String,
        /// The cache folder.
        cache: PathBuf,
    },
    /// STOW-RS store of one DICOM file.
    Push {
        /// The server.
        server: ServerConfig,
        /// The DICOM file (e.g. the saved SEG).
        file: PathBuf,
    },
}

/// What the worker reports.
#[derive(Debug)]
pub enum Event {
    /// A page of studies.
    Studies {
        /// The job.
        id: JobId,
        /// The page.
        page: StudyPage,
    },
    /// The series of a study.
    Series {
        /// The job.
        id: JobId,
        /// The series.
        series: Vec<SeriesRow>,
    },
    /// A pull advanced by one instance.
    Progress {
        /// The job.
        id: JobId,
        /// Where it is.
        progress: PullProgress,
    },
    /// A pull finished (or the series was in the cache).
    Pulled {
        /// The job.
        id: JobId,
        /// The series folder.
        pulled: PulledSeries,
    },
    /// A push finished.
    Pushed {
        /// The job.
        id: JobId,
        /// The server's answer.
        outcome: StowOutcome,
    },
    /// A job failed (or was cancelled: [`PacsError::Cancelled`]).
    Failed {
        /// The job.
        id: JobId,
        /// Why.
        error: PacsError,
    },
}

enum Message {
    Job(JobId, Box<Job>),
    Shutdown,
}

#[derive(Default)]
struct Cancellation {
    below_or_at: AtomicU64,
    ids: Mutex<HashSet<u64>>,
}

impl Cancellation {
    fn is_cancelled(&self, id: JobId) -> bool {
        id.0 <= self.below_or_at.load(Ordering::Acquire)
            || self.ids.lock().map(|s| s.contains(&id.0)).unwrap_or(false)
    }
}

/// The worker handle: submit jobs, read events, cancel. Dropping it cancels what runs
/// and stops the thread.
pub struct PacsWorker {
    jobs: Sender<Message>,
    events: Receiver<Event>,
    cancellation: Arc<Cancellation>,
    next_id: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl PacsWorker {
    /// Starts the thread; `waker` is called after every event (a GUI repaints).
    pub fn start(waker: Box<dyn Fn() + Send>) -> Self {
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Message>(64);
        let (event_tx, event_rx) = crossbeam_channel::unbounded();
        let cancellation = Arc::new(Cancellation::default());
        let thread = {
            let cancellation = cancellation.clone();
            std::thread::Builder::new()
                .name("icseg-pacs".into())
                .spawn(move || {
                    let send = |event: Event| {
                        if event_tx.send(event).is_ok() {
                            waker();
                        }
                    };
                    while let Ok(Message::Job(id, job)) = job_rx.recv() {
                        if cancellation.is_cancelled(id) {
                            send(Event::Failed {
                                id,
                                error: PacsError::Cancelled,
                            });
                            continue;
                        }
                        let cancelled = || cancellation.is_cancelled(id);
                        let event = run(id, *job, &cancelled, &send);
                        send(event);
                    }
                })
                .expect("the operating system refused to start a thread")
        };
        Self {
            jobs: job_tx,
            events: event_rx,
            cancellation,
            next_id: AtomicU64::new(1),
            thread: Some(thread),
        }
    }

    /// Queues a job and returns its id.
    pub fn submit(&self, job: Job) -> JobId {
        let id = JobId(self.next_id.fetch_add(1, Ordering::AcqRel));
        let _ = self.jobs.send(Message::Job(id, Box::new(job)));
        id
    }

    /// Cancels one job (a pull stops at its next read and leaves no cache entry).
    pub fn cancel(&self, id: JobId) {
        if let Ok(mut ids) = self.cancellation.ids.lock() {
            ids.insert(id.0);
        }
    }

    /// Cancels every job submitted so far.
    pub fn cancel_all(&self) {
        let last = self.next_id.load(Ordering::Acquire).saturating_sub(1);
        self.cancellation
            .below_or_at
            .fetch_max(last, Ordering::AcqRel);
    }

    /// The event channel (blocking `recv` for the CLI and tests).
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// Events available now, without blocking (for a GUI frame).
    pub fn poll(&self) -> impl Iterator<Item = Event> + '_ {
        self.events.try_iter()
    }
}

impl Drop for PacsWorker {
    fn drop(&mut self) {
        self.cancel_all();
        let _ = self.jobs.send(Message::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(id: JobId, job: Job, cancelled: &dyn Fn() -> bool, send: &dyn Fn(Event)) -> Event {
    let result = match job {
        Job::Studies { server, query } => Client::new(&server)
            .and_then(|c| c.search_studies(&query))
            .map(|page| Event::Studies { id, page }),
        Job::Series { server, study_uid } => Client::new(&server)
            .and_then(|c| c.search_series(&study_uid))
            .map(|series| Event::Series { id, series }),
        Job::Pull {
            server,
            study_uid,
            series_uid,
            cache,
        } => Client::new(&server)
            .and_then(|c| {
                pull_series(
                    &c,
                    &cache,
                    &study_uid,
                    &series_uid,
                    cancelled,
                    &mut |progress| send(Event::Progress { id, progress }),
                )
            })
            .map(|pulled| Event::Pulled { id, pulled }),
        Job::Push { server, file } => Client::new(&server)
            .and_then(|c| c.store(&file))
            .map(|outcome| Event::Pushed { id, outcome }),
    };
    result.unwrap_or_else(|error| Event::Failed { id, error })
}
