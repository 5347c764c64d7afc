//! Architecture configs as JSON, one schema for the official and the searched models:
//!
//! ```json
//! {"in_chans": 3, "num_classes": 1000, "dims": [64,128,256,512], "depths": [3,3,27,3],
//!  "kernel": 7, "expansion": 4}
//! ```
//!
//! with optional per-stage `"kernels": [3,5,7,7]` and optional `"blocks"`: per stage a list
//! of `{"kernel": K, "expansion": E}` or `"identity"`.

use quadra_core::arch::{presets, Arch, BlockSpec, Stage};
use serde::{Deserialize, Serialize};

/// Why a config was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid JSON, or a field of the wrong type. (Its message already says it all, so
    /// the serde error is not also given as the source: printed with its chain, the
    /// message would appear twice.)
    #[error("config is not valid: {0}")]
    Json(serde_json::Error),
    /// Valid JSON describing an impossible network.
    #[error("config is not valid: {0}")]
    Invalid(String),
    /// An unknown preset name.
    #[error("unknown preset '{0}'; known presets: {known}", known = preset_names().join(", "))]
    UnknownPreset(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_in_chans")]
    in_chans: usize,
    #[serde(default = "default_classes")]
    num_classes: usize,
    dims: Option<Vec<usize>>,
    /// The official code's form: `dims = [b, 2b, 4b, 8b]`.
    base_dim: Option<usize>,
    depths: Option<Vec<usize>>,
    kernel: Option<usize>,
    expansion: Option<usize>,
    kernels: Option<Vec<usize>>,
    blocks: Option<Vec<Vec<RawBlock>>>,
}

fn default_in_chans() -> usize {
    3
}
fn default_classes() -> usize {
    1000
}

#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum RawBlock {
    Named(String),
    Quadra { kernel: usize, expansion: usize },
}

/// An owned architecture: what a config file or a model file describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchConfig {
    /// Input channels.
    pub in_chans: usize,
    /// Classes of the head.
    pub num_classes: usize,
    /// Width of each stage.
    pub dims: [usize; 4],
    /// Blocks of each stage.
    pub blocks: [Vec<BlockSpec>; 4],
}

/// Names of the built-in presets.
pub fn preset_names() -> Vec<String> {
    ["quadranet25", "quadranet36"]
        .iter()
        .flat_map(|f| presets::SIZES.iter().map(move |(s, _)| format!("{f}-{s}")))
        .collect()
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

fn block(kernel: usize, expansion: usize, at: &str) -> Result<BlockSpec, ConfigError> {
    if !matches!(kernel, 3 | 5 | 7) {
        return Err(invalid(format!(
            "{at}: kernel must be 3, 5 or 7, found {kernel}"
        )));
    }
    if !(1..=8).contains(&expansion) {
        return Err(invalid(format!(
            "{at}: expansion must be between 1 and 8, found {expansion}"
        )));
    }
    Ok(BlockSpec::quadra(kernel as u8, expansion as u8))
}

impl ArchConfig {
    /// Borrowed view for the core.
    pub fn arch(&self) -> Arch<'_> {
        let stage = |s: usize| Stage {
            dim: self.dims[s],
            blocks: &self.blocks[s],
        };
        Arch {
            in_chans: self.in_chans,
            num_classes: self.num_classes,
            stages: [stage(0), stage(1), stage(2), stage(3)],
        }
    }

    /// Owned copy of a core architecture.
    pub fn from_arch(arch: &Arch<'_>) -> Self {
        ArchConfig {
            in_chans: arch.in_chans,
            num_classes: arch.num_classes,
            dims: arch.stages.map(|s| s.dim),
            blocks: arch.stages.map(|s| s.blocks.to_vec()),
        }
    }

    /// A built-in preset (`quadranet25-xxs` … `quadranet36-b`).
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        presets::by_name(name)
            .map(|a| Self::from_arch(&a))
            .ok_or_else(|| ConfigError::UnknownPreset(name.to_string()))
    }

    /// Parses and validates a JSON config.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let first = text.trim_start().chars().next();
        if first.is_some_and(|c| c != '{')
            && serde_json::from_str::<serde_json::Value>(text).is_ok()
        {
            return Err(invalid(
                "a config is a JSON object such as {\"dims\": [16, 32, 64, 128], \"depths\": [2, 3, 18, 2]}, not another JSON value",
            ));
        }
        let raw: RawConfig = serde_json::from_str(text).map_err(ConfigError::Json)?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let dims: [usize; 4] = match (&raw.dims, raw.base_dim) {
            (Some(d), None) => d.as_slice().try_into().map_err(|_| {
                invalid(format!("\"dims\" must have 4 entries, found {}", d.len()))
            })?,
            (None, Some(b)) => match b.checked_mul(8) {
                Some(_) => [b, 2 * b, 4 * b, 8 * b],
                None => {
                    return Err(invalid(format!(
                        "\"base_dim\" {b} is too large (dims = [b, 2b, 4b, 8b])"
                    )))
                }
            },
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give either \"dims\" or the official \"base_dim\" (dims = [b, 2b, 4b, 8b]), not both",
                ))
            }
            (None, None) => {
                return Err(invalid(
                    "\"dims\" (4 stage widths) or \"base_dim\" (dims = [b, 2b, 4b, 8b]) is required",
                ))
            }
        };
        if raw.in_chans == 0 {
            return Err(invalid("\"in_chans\" must be at least 1"));
        }
        if raw.num_classes == 0 {
            return Err(invalid("\"num_classes\" must be at least 1"));
        }
        if let Some(s) = dims.iter().position(|&d| d == 0) {
            return Err(invalid(format!("dims[{s}] must be at least 1")));
        }
        if let Some(d) = &raw.depths {
            if d.len() != 4 {
                return Err(invalid(format!(
                    "\"depths\" must have 4 entries, found {}",
                    d.len()
                )));
            }
        }
        let blocks: [Vec<BlockSpec>; 4] = if let Some(stages) = raw.blocks {
            if raw.kernels.is_some() {
                return Err(invalid("give either \"kernels\" or \"blocks\", not both"));
            }
            if stages.len() != 4 {
                return Err(invalid(format!(
                    "\"blocks\" must have 4 stages, found {}",
                    stages.len()
                )));
            }
            let mut out: [Vec<BlockSpec>; 4] = Default::default();
            for (s, stage) in stages.into_iter().enumerate() {
                if let Some(d) = &raw.depths {
                    if d[s] != stage.len() {
                        return Err(invalid(format!(
                            "stage {s}: \"depths\" says {} blocks but \"blocks\" lists {}",
                            d[s],
                            stage.len()
                        )));
                    }
                }
                for (b, item) in stage.into_iter().enumerate() {
                    let at = format!("stage {s} block {b}");
                    out[s].push(match item {
                        RawBlock::Named(n) if n == "identity" => BlockSpec::IDENTITY,
                        RawBlock::Named(n) => {
                            return Err(invalid(format!(
                                "{at}: \"{n}\" is not a block; use \"identity\" or {{\"kernel\": K, \"expansion\": E}}"
                            )))
                        }
                        RawBlock::Quadra { kernel, expansion } => block(kernel, expansion, &at)?,
                    });
                }
            }
            out
        } else {
            let depths = raw
                .depths
                .ok_or_else(|| invalid("\"depths\" is required unless \"blocks\" is given"))?;
            let kernels = match raw.kernels {
                Some(k) if k.len() != 4 => {
                    return Err(invalid(format!(
                        "\"kernels\" must have 4 entries, found {}",
                        k.len()
                    )))
                }
                Some(k) => k,
                None => vec![raw.kernel.unwrap_or(7); 4],
            };
            let e = raw.expansion.unwrap_or(4);
            let total = depths.iter().try_fold(0usize, |t, &d| t.checked_add(d));
            if total.is_none_or(|t| t > quadra_core::arch::MAX_BLOCKS) {
                return Err(invalid(format!(
                    "\"depths\" {depths:?}: at most {} blocks in all",
                    quadra_core::arch::MAX_BLOCKS
                )));
            }
            let mut out: [Vec<BlockSpec>; 4] = Default::default();
            for s in 0..4 {
                let spec = block(kernels[s], e, &format!("stage {s}"))?;
                out[s] = vec![spec; depths[s]];
            }
            out
        };
        let cfg = ArchConfig {
            in_chans: raw.in_chans,
            num_classes: raw.num_classes,
            dims,
            blocks,
        };
        cfg.arch().validate().map_err(|e| invalid(e.to_string()))?;
        Ok(cfg)
    }

    /// Canonical JSON: the compact uniform form when every block is the same, else the
    /// per-block form.
    pub fn to_json(&self) -> String {
        let depths: Vec<usize> = self.blocks.iter().map(Vec::len).collect();
        let all: Vec<&BlockSpec> = self.blocks.iter().flatten().collect();
        let uniform = all
            .first()
            .filter(|f| !f.is_identity() && all.iter().all(|b| b == *f));
        let mut v = serde_json::json!({
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "dims": self.dims,
            "depths": depths,
        });
        match uniform {
            Some(b) => {
                v["kernel"] = b.kernel.into();
                v["expansion"] = b.expansion.into();
            }
            None => {
                let stages: Vec<Vec<RawBlock>> = self
                    .blocks
                    .iter()
                    .map(|st| {
                        st.iter()
                            .map(|b| {
                                if b.is_identity() {
                                    RawBlock::Named("identity".into())
                                } else {
                                    RawBlock::Quadra {
                                        kernel: b.kernel as usize,
                                        expansion: b.expansion as usize,
                                    }
                                }
                            })
                            .collect()
                    })
                    .collect();
                v["blocks"] = serde_json::to_value(stages).expect("blocks serialise");
            }
        }
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_official_base_dim_form_is_dims_doubling() {
        let a = ArchConfig::from_json(r#"{"base_dim":64,"depths":[3,3,27,3],"kernel":7}"#).unwrap();
        assert_eq!(a, ArchConfig::preset("quadranet36-t").unwrap());
        for (json, says) in [
            (
                r#"{"base_dim":64,"dims":[64,128,256,512],"depths":[1,1,1,1]}"#,
                "not both",
            ),
            (r#"{"depths":[1,1,1,1]}"#, "is required"),
        ] {
            let e = ArchConfig::from_json(json).unwrap_err().to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
    }

    #[test]
    fn uniform_per_stage_and_per_block_forms_parse() {
        let a = ArchConfig::from_json(
            r#"{"dims":[64,128,256,512],"depths":[3,3,27,3],"kernel":7,"expansion":4}"#,
        )
        .unwrap();
        assert_eq!(a, ArchConfig::preset("quadranet36-t").unwrap());
        let b = ArchConfig::from_json(
            r#"{"in_chans":1,"num_classes":10,"dims":[8,16,32,64],"depths":[1,1,1,1],"kernels":[3,5,7,7]}"#,
        )
        .unwrap();
        assert_eq!(b.blocks[1], vec![BlockSpec::quadra(5, 4)]);
        let c = ArchConfig::from_json(
            r#"{"dims":[8,16,32,64],"blocks":[[{"kernel":3,"expansion":2},"identity"],[],[],[{"kernel":5,"expansion":4}]]}"#,
        )
        .unwrap();
        assert_eq!(
            c.blocks[0],
            vec![BlockSpec::quadra(3, 2), BlockSpec::IDENTITY]
        );
        for cfg in [a, b, c] {
            assert_eq!(ArchConfig::from_json(&cfg.to_json()).unwrap(), cfg);
        }
    }

    #[test]
    fn invalid_configs_say_why() {
        let cases = [
            (
                r#"{"dims":[8,16,32],"depths":[1,1,1,1]}"#,
                "\"dims\" must have 4 entries, found 3",
            ),
            (
                r#"{"dims":[8,16,32,64],"depths":[1,1,1,1],"kernel":4}"#,
                "stage 0: kernel must be 3, 5 or 7, found 4",
            ),
            (
                r#"{"dims":[8,16,32,64],"depths":[1,1,1,1],"expansion":9}"#,
                "expansion must be between 1 and 8",
            ),
            (
                r#"{"dims":[8,16,32,64],"depths":[2,1,1,1],"blocks":[["identity"],[],[],[]]}"#,
                "\"depths\" says 2 blocks",
            ),
            (
                r#"{"dims":[8,16,32,64],"blocks":[["skip"],[],[],[]]}"#,
                "\"skip\" is not a block",
            ),
            (r#"{"dims":[8,16,32,64]}"#, "\"depths\" is required"),
            (
                r#"{"dims":[8,16,32,64],"depths":[1,1,1,1],"colour":1}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"dims":[8,0,32,64],"depths":[1,1,1,1]}"#,
                "dims[1] must be at least 1",
            ),
        ];
        for (json, want) in cases {
            let e = ArchConfig::from_json(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: got '{e}', want '{want}'");
        }
        assert!(ArchConfig::preset("quadranet99-t")
            .unwrap_err()
            .to_string()
            .contains("quadranet25-xxs"));
    }
}
