//! Saving and loading weights.
//!
//! # File format
//!
//! An ICSeg weights file is a short header followed by a burnpack record of every
//! parameter (the EMA twin included, since it encodes the support images):
//!
//! ```text
//! b"ICSEG-WEIGHTS\n"          14 bytes, magic
//! u32 little endian          length of the JSON that follows
//! JSON                       {"format": 1, "config": <ModelConfig>}
//! burnpack bytes             burn's ModuleRecord::into_bytes()
//! ```
//!
//! The header lets a mismatched file fail with a message naming both configurations
//! instead of a tensor-shape error. Values round-trip bit-exactly (f32 as stored).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};

use super::config::ModelConfig;
use super::network::Model;

const MAGIC: &[u8; 14] = b"ICSEG-WEIGHTS\n";
const FORMAT: u32 = 1;

/// Why weights could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file does not exist.
    #[error("the weights file was not found; check the path or train weights first: {}", path.display())]
    NotFound {
        /// The path asked for.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("could not {action} the weights file ({source}): {}", path.display())]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not an ICSeg weights file, or it is damaged.
    #[error("this is not an ICSeg weights file or it is damaged ({reason}): {}", path.display())]
    NotWeights {
        /// What was wrong.
        reason: String,
        /// The file.
        path: PathBuf,
    },
    /// The file holds weights for another network configuration.
    #[error(
        "the weights are for the `{found}` model configuration but the `{expected}` one was asked for; pick the matching weights or configuration: {}",
        path.display()
    )]
    ConfigMismatch {
        /// Name of the configuration asked for.
        expected: String,
        /// Name of the configuration in the file.
        found: String,
        /// The file.
        path: PathBuf,
    },
    /// The tensors do not fit the architecture (a damaged or hand-edited file).
    #[error("the weights do not fit the network ({reason}): {}", path.display())]
    Incompatible {
        /// burn's validation message.
        reason: String,
        /// The file.
        path: PathBuf,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    format: u32,
    config: ModelConfig,
}

/// Compares configurations ignoring the run-time K0.
fn same_layers(a: &ModelConfig, b: &ModelConfig) -> bool {
    let mut a = a.clone();
    a.top_k0 = b.top_k0;
    a == *b
}

impl Model {
    /// Serialises the weights (with the configuration) into bytes.
    pub fn weights_to_bytes(&self) -> Result<Vec<u8>, String> {
        let json = serde_json::to_vec(&Header {
            format: FORMAT,
            config: self.config().clone(),
        })
        .map_err(|e| e.to_string())?;
        let record = self
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + json.len() + record.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&record);
        Ok(out)
    }

    /// Saves the weights to `path`, atomically (a crash never leaves half a file).
    pub fn save_weights(&self, path: &Path) -> Result<(), WeightsError> {
        let bytes = self
            .weights_to_bytes()
            .map_err(|reason| WeightsError::NotWeights {
                reason,
                path: path.to_path_buf(),
            })?;
        crate::files::write_atomic(path, &bytes).map_err(|source| WeightsError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads the configuration stored in a weights file without loading the tensors.
    pub fn weights_config(path: &Path) -> Result<ModelConfig, WeightsError> {
        let bytes = read(path)?;
        Ok(parse(&bytes, path)?.0)
    }

    /// Builds a model of configuration `expected` on `device` and loads the weights at
    /// `path` into it. `expected.top_k0` is kept (it is a run-time setting).
    ///
    /// Fails with [`WeightsError::ConfigMismatch`] when the file was saved from another
    /// configuration.
    pub fn load_weights(
        expected: &ModelConfig,
        path: &Path,
        device: &Device,
    ) -> Result<Model, WeightsError> {
        let bytes = read(path)?;
        Self::load_weights_from_bytes(expected, &bytes, path, device)
    }

    /// [`Self::load_weights`] from bytes in memory (as written by
    /// [`Self::weights_to_bytes`]); errors name `origin` as the path.
    pub fn load_weights_from_bytes(
        expected: &ModelConfig,
        bytes: &[u8],
        origin: &Path,
        device: &Device,
    ) -> Result<Model, WeightsError> {
        let (found, record) = parse(bytes, origin)?;
        if !same_layers(expected, &found) {
            return Err(WeightsError::ConfigMismatch {
                expected: expected.name().to_string(),
                found: found.name().to_string(),
                path: origin.to_path_buf(),
            });
        }
        Self::from_record(expected, record, origin, device)
    }

    /// Loads a weights file with whatever configuration it holds.
    pub fn load_weights_any(path: &Path, device: &Device) -> Result<Model, WeightsError> {
        let bytes = read(path)?;
        let (found, record) = parse(&bytes, path)?;
        Self::from_record(&found, record, path, device)
    }

    fn from_record(
        config: &ModelConfig,
        record: &[u8],
        path: &Path,
        device: &Device,
    ) -> Result<Model, WeightsError> {
        let record =
            ModuleRecord::from_bytes(Bytes::from_bytes_vec(record.to_vec())).map_err(|e| {
                WeightsError::NotWeights {
                    reason: e.to_string(),
                    path: path.to_path_buf(),
                }
            })?;
        let model = config.init(device).try_load_record(record).map_err(|e| {
            WeightsError::Incompatible {
                reason: e.to_string(),
                path: path.to_path_buf(),
            }
        })?;
        Ok(model.freeze_ema())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, WeightsError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            WeightsError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            WeightsError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Splits a weights file into its configuration and its burnpack bytes.
fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<(ModelConfig, &'a [u8]), WeightsError> {
    let bad = |reason: &str| WeightsError::NotWeights {
        reason: reason.to_string(),
        path: path.to_path_buf(),
    };
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| bad("no ICSeg header"))?;
    if rest.len() < 4 {
        return Err(bad("truncated header"));
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let rest = &rest[4..];
    if rest.len() < len {
        return Err(bad("truncated header"));
    }
    let header: Header = serde_json::from_slice(&rest[..len])
        .map_err(|e| bad(&format!("unreadable configuration: {e}")))?;
    if header.format != FORMAT {
        return Err(bad(&format!(
            "format version {} is not supported (this build reads {FORMAT})",
            header.format
        )));
    }
    header
        .config
        .validate()
        .map_err(|e| bad(&format!("invalid configuration: {e}")))?;
    Ok((header.config, &rest[len..]))
}
