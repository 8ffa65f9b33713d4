//! The network as a [`Propagator`], driven through the engine exactly as the app and
//! `icseg propagate` drive it.

use std::sync::Arc;

use super::Propagator;
use crate::engine::extent::keep_run_through_support;
use crate::engine::{Engine, EngineConfig, EngineError, EngineInfo, Event, JobRequest, SupportSet};
use crate::volume::{Axis, LabelMap, LabelValue, Volume};

/// Propagates with the in-context network on the engine's worker thread.
pub struct NetworkPropagator {
    engine: Engine,
    info: EngineInfo,
}

impl NetworkPropagator {
    /// Starts an engine (loads the weights) and waits until it is ready.
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let engine = Engine::start(config, Box::new(|| {}));
        loop {
            match engine.events().recv() {
                Ok(Event::Ready(info)) => return Ok(Self { engine, info }),
                Ok(Event::StartFailed(e)) => return Err(e),
                Ok(_) => continue,
                Err(_) => return Err(EngineError::Stopped),
            }
        }
    }

    /// Device, model and weights the engine runs with.
    pub fn info(&self) -> &EngineInfo {
        &self.info
    }
}

impl Propagator for NetworkPropagator {
    fn name(&self) -> &str {
        "network"
    }

    fn propagate(
        &mut self,
        volume: &Volume,
        annotations: &LabelMap,
        axis: Axis,
        slices: &[usize],
    ) -> anyhow::Result<LabelMap> {
        let support =
            SupportSet::from_label_map(Arc::new(volume.clone()), annotations, axis, slices, |v| {
                v != 0
            });
        let mut out = support.annotation_map();
        let targets: Vec<usize> = (0..volume.geometry().slice_count(axis))
            .filter(|z| !slices.contains(z))
            .collect();
        let id = self.engine.submit(JobRequest::Propagate {
            support: Arc::new(support),
            slices: targets,
            support_size: None,
        });
        loop {
            match self
                .engine
                .events()
                .recv()
                .map_err(|_| EngineError::Stopped)?
            {
                Event::SlicePredicted {
                    id: got,
                    slice,
                    probabilities,
                } if got == id => {
                    out.set_slice(
                        axis,
                        slice,
                        &probabilities.map(|p| LabelValue::from(p >= 0.5)),
                    );
                }
                Event::PropagationFinished { id: got, .. } if got == id => {
                    // As in the app and `icseg propagate`: the structure is the run of
                    // non-empty slices through the annotations.
                    keep_run_through_support(&mut out, axis, slices);
                    return Ok(out);
                }
                Event::Failed { id: got, error } if got == id => return Err(error.into()),
                Event::Cancelled { id: got } if got == id => {
                    anyhow::bail!("the propagation was cancelled")
                }
                _ => {}
            }
        }
    }
}
