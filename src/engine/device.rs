//! Choosing the compute device: a real GPU through burn's wgpu backend, or the CPU
//! (burn's `flex` backend, the fastest CPU backend measured here — see
//! `docs/engine.md`).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::wgpu::wgpu;
use burn::tensor::{Device, DeviceKind};

use super::EngineError;

/// What the user asked for (`--device auto|cpu|gpu`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceChoice {
    /// A real GPU when there is one, else the CPU. Never an error.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// A GPU; a software (CPU-emulated) Vulkan adapter is accepted with a warning. An
    /// error when there is no adapter at all.
    Gpu,
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        })
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu),
            other => Err(format!("unknown device `{other}`; use auto, cpu or gpu")),
        }
    }
}

/// The device the engine computes on.
#[derive(Clone, Debug)]
pub struct ComputeDevice {
    /// The burn device.
    pub device: Device,
    /// Whether it is a hardware GPU (false for the CPU and for software adapters).
    pub is_gpu: bool,
    /// For people: e.g. `GPU: NVIDIA H100 (Vulkan, discrete)` or `CPU (flex, 2 threads)`.
    pub description: String,
}

impl ComputeDevice {
    /// The CPU device.
    pub fn cpu() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            device: Device::flex(),
            is_gpu: false,
            description: format!("CPU (flex, {threads} threads)"),
        }
    }

    /// Wraps a device someone else initialised (e.g. the GUI sharing its wgpu device).
    pub fn existing(device: Device, is_gpu: bool, description: impl Into<String>) -> Self {
        Self {
            device,
            is_gpu,
            description: description.into(),
        }
    }
}

/// One wgpu adapter as the system reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterSummary {
    /// Adapter name, e.g. `NVIDIA H100 80GB HBM3` or `llvmpipe (LLVM 15.0.7, 256 bits)`.
    pub name: String,
    /// Graphics API, e.g. `Vulkan`.
    pub backend: String,
    /// wgpu's classification.
    pub device_type: wgpu::DeviceType,
}

impl AdapterSummary {
    /// A hardware GPU: discrete, integrated or virtual, and not named like a known
    /// software rasteriser.
    pub fn is_hardware_gpu(&self) -> bool {
        use wgpu::DeviceType::*;
        let name = self.name.to_ascii_lowercase();
        let software = [
            "llvmpipe",
            "lavapipe",
            "softpipe",
            "swiftshader",
            "software",
        ]
        .iter()
        .any(|s| name.contains(s));
        matches!(self.device_type, DiscreteGpu | IntegratedGpu | VirtualGpu) && !software
    }

    fn kind_label(&self) -> &'static str {
        use wgpu::DeviceType::*;
        match self.device_type {
            DiscreteGpu => "discrete",
            IntegratedGpu => "integrated",
            VirtualGpu => "virtual",
            Cpu => "software",
            Other => "other",
        }
    }
}

/// Polls a future that completes without waiting on anything external (wgpu's native
/// adapter enumeration).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// The wgpu adapters on this machine (empty when there is no graphics driver at all).
pub fn list_adapters() -> Vec<AdapterSummary> {
    let listed = catch_unwind(|| {
        // The graphics APIs burn's wgpu runtime computes on (not OpenGL).
        let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
        descriptor.backends = wgpu::Backends::PRIMARY;
        let instance = wgpu::Instance::new(descriptor);
        block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
            .into_iter()
            .map(|adapter| {
                let info = adapter.get_info();
                AdapterSummary {
                    name: info.name,
                    backend: format!("{:?}", info.backend),
                    device_type: info.device_type,
                }
            })
            .collect::<Vec<_>>()
    });
    listed.unwrap_or_default()
}

/// Index of `adapter` among the adapters of its own type (what burn's
/// [`DeviceKind`] selectors count).
fn kind_of(adapters: &[AdapterSummary], chosen: usize) -> DeviceKind {
    use wgpu::DeviceType::*;
    let same_type = adapters[..chosen]
        .iter()
        .filter(|a| a.device_type == adapters[chosen].device_type)
        .count();
    match adapters[chosen].device_type {
        DiscreteGpu => DeviceKind::DiscreteGpu(same_type),
        IntegratedGpu => DeviceKind::IntegratedGpu(same_type),
        VirtualGpu => DeviceKind::VirtualGpu(same_type),
        Cpu | Other => DeviceKind::Cpu,
    }
}

/// Initialises burn's wgpu runtime on adapter `chosen` of `adapters`.
fn init_wgpu(adapters: &[AdapterSummary], chosen: usize) -> Result<ComputeDevice, String> {
    let kind = kind_of(adapters, chosen);
    let summary = &adapters[chosen];
    let result = catch_unwind(AssertUnwindSafe(|| {
        burn::tensor::Device::wgpu_options()
            .device_kind(kind)
            .init_with_setup()
    }));
    match result {
        Ok(Ok((device, setup))) => {
            let info = setup.adapter.get_info();
            let summary = AdapterSummary {
                name: info.name,
                backend: format!("{:?}", info.backend),
                device_type: info.device_type,
            };
            let is_gpu = summary.is_hardware_gpu();
            let description = if is_gpu {
                format!(
                    "GPU: {} ({}, {})",
                    summary.name,
                    summary.backend,
                    summary.kind_label()
                )
            } else {
                format!(
                    "software GPU adapter: {} ({}) — slow, for testing the GPU code path",
                    summary.name, summary.backend
                )
            };
            Ok(ComputeDevice {
                device,
                is_gpu,
                description,
            })
        }
        Ok(Err(e)) => Err(format!("{} ({}): {e}", summary.name, summary.backend)),
        Err(_) => Err(format!(
            "{} ({}): the graphics driver panicked during initialisation",
            summary.name, summary.backend
        )),
    }
}

/// Picks the device for `choice`.
///
/// - `Auto`: the first hardware GPU (discrete before integrated); otherwise — no
///   adapter, only software adapters, or a GPU that fails to initialise — the CPU.
///   Never an error.
/// - `Cpu`: the CPU.
/// - `Gpu`: the first hardware GPU, else a software adapter; an error when there is no
///   adapter or it fails to initialise.
pub fn select_device(choice: DeviceChoice) -> Result<ComputeDevice, EngineError> {
    if choice == DeviceChoice::Cpu {
        return Ok(ComputeDevice::cpu());
    }
    let adapters = list_adapters();
    let hardware = {
        let mut order: Vec<usize> = (0..adapters.len())
            .filter(|&n| adapters[n].is_hardware_gpu())
            .collect();
        order.sort_by_key(|&n| adapters[n].device_type != wgpu::DeviceType::DiscreteGpu);
        order.first().copied()
    };
    match choice {
        DeviceChoice::Cpu => unreachable!("handled above"),
        DeviceChoice::Auto => match hardware {
            Some(n) => match init_wgpu(&adapters, n) {
                Ok(device) if device.is_gpu => Ok(device),
                Ok(_) => Ok(ComputeDevice::cpu()),
                Err(reason) => {
                    log::warn!("GPU unavailable, using the CPU: {reason}");
                    Ok(ComputeDevice::cpu())
                }
            },
            None => Ok(ComputeDevice::cpu()),
        },
        DeviceChoice::Gpu => {
            let chosen = hardware.or_else(|| {
                adapters
                    .iter()
                    .position(|a| a.device_type == wgpu::DeviceType::Cpu)
            });
            let Some(n) = chosen else {
                return Err(EngineError::NoGpu {
                    reason: "no graphics adapter was found".into(),
                });
            };
            init_wgpu(&adapters, n).map_err(|reason| EngineError::NoGpu { reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(name: &str, device_type: wgpu::DeviceType) -> AdapterSummary {
        AdapterSummary {
            name: name.into(),
            backend: "Vulkan".into(),
            device_type,
        }
    }

    #[test]
    fn software_adapters_are_not_gpus() {
        assert!(
            !adapter("llvmpipe (LLVM 15.0.7, 256 bits)", wgpu::DeviceType::Cpu).is_hardware_gpu()
        );
        // Some drivers misreport the type; the name still gives them away.
        assert!(!adapter("Lavapipe", wgpu::DeviceType::IntegratedGpu).is_hardware_gpu());
        assert!(!adapter("Unknown", wgpu::DeviceType::Other).is_hardware_gpu());
        assert!(adapter("NVIDIA H100 80GB HBM3", wgpu::DeviceType::DiscreteGpu).is_hardware_gpu());
        assert!(
            adapter("Intel(R) UHD Graphics", wgpu::DeviceType::IntegratedGpu).is_hardware_gpu()
        );
    }

    #[test]
    fn device_kind_counts_adapters_of_the_same_type() {
        let adapters = vec![
            adapter("llvmpipe", wgpu::DeviceType::Cpu),
            adapter("A", wgpu::DeviceType::DiscreteGpu),
            adapter("iGPU", wgpu::DeviceType::IntegratedGpu),
            adapter("B", wgpu::DeviceType::DiscreteGpu),
        ];
        assert_eq!(kind_of(&adapters, 1), DeviceKind::DiscreteGpu(0));
        assert_eq!(kind_of(&adapters, 3), DeviceKind::DiscreteGpu(1));
        assert_eq!(kind_of(&adapters, 2), DeviceKind::IntegratedGpu(0));
        assert_eq!(kind_of(&adapters, 0), DeviceKind::Cpu);
    }

    #[test]
    fn choices_parse_from_text() {
        assert_eq!("GPU".parse::<DeviceChoice>(), Ok(DeviceChoice::Gpu));
        assert_eq!("auto".parse::<DeviceChoice>(), Ok(DeviceChoice::Auto));
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn auto_never_fails_and_never_takes_a_software_adapter_for_a_gpu() {
        // On a machine without a GPU (CI, this build machine) this must come back with
        // the CPU; with lavapipe installed it must still not pick lavapipe.
        let device = select_device(DeviceChoice::Auto).expect("auto is never an error");
        let adapters = list_adapters();
        if !adapters.iter().any(AdapterSummary::is_hardware_gpu) {
            assert!(!device.is_gpu, "{}", device.description);
            assert!(
                device.description.starts_with("CPU"),
                "{}",
                device.description
            );
        }
        // Whatever was chosen computes.
        let x = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0], &device.device);
        let y: Vec<f32> = (x * 2.0).into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(y, vec![2.0, 4.0]);
    }

    #[test]
    fn forcing_the_gpu_is_an_error_or_a_working_device() {
        match select_device(DeviceChoice::Gpu) {
            Err(EngineError::NoGpu { reason }) => assert!(!reason.is_empty()),
            Err(other) => panic!("unexpected error {other}"),
            Ok(device) => {
                // A software adapter (lavapipe) may be chosen; keep the check tiny, the
                // first wgpu kernel compiles for seconds there.
                if std::env::var_os("ICSEG_TEST_WGPU").is_some() {
                    let x = burn::tensor::Tensor::<1>::from_floats([3.0], &device.device);
                    let y: Vec<f32> = (x + 1.0).into_data().try_into_vec::<f32>().unwrap();
                    assert_eq!(y, vec![4.0]);
                }
            }
        }
    }
}
