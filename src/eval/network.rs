//! The network as a [`Propagator`], driven through the engine exactly as the app and
//! `icseg propagate` drive it ([`engine::collect`]).

use std::sync::Arc;

use super::{EvalError, Propagator};
use crate::engine::{self, Engine, EngineConfig, EngineError, EngineInfo, Strategy, SupportSet};
use crate::volume::{Axis, LabelMap, Volume};

/// Propagates with the in-context network on the engine's worker thread.
pub struct NetworkPropagator {
    engine: Engine,
    info: EngineInfo,
    strategy: Strategy,
    name: String,
}

impl NetworkPropagator {
    /// Starts an engine (loads the weights) and waits until it is ready; propagations
    /// use `strategy` and are reported as `name`.
    pub fn start(
        config: EngineConfig,
        strategy: Strategy,
        name: &str,
    ) -> Result<Self, EngineError> {
        let engine = Engine::start(config, Box::new(|| {}));
        let info = engine.wait_ready()?;
        Ok(Self {
            engine,
            info,
            strategy,
            name: name.to_string(),
        })
    }

    /// Device, model and weights the engine runs with.
    pub fn info(&self) -> &EngineInfo {
        &self.info
    }
}

impl Propagator for NetworkPropagator {
    fn name(&self) -> &str {
        &self.name
    }

    fn propagate(
        &mut self,
        volume: &Arc<Volume>,
        annotations: &LabelMap,
        axis: Axis,
        slices: &[usize],
        bounded: bool,
    ) -> Result<LabelMap, EvalError> {
        let support =
            SupportSet::from_label_map(volume.clone(), annotations, axis, slices, |v| v != 0);
        let targets = engine::target_slices(volume.geometry().slice_count(axis), slices, bounded);
        let collected = engine::collect(
            &self.engine,
            Arc::new(support),
            targets,
            self.strategy,
            &mut |_, _| {},
        )?;
        Ok(collected.mask)
    }
}
