//! PLACEHOLDER until the ECS/OCSF mappers land.
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Native,
    Ecs,
    Ocsf,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Ecs => "ecs",
            Self::Ocsf => "ocsf",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(Self::Native),
            "ecs" => Ok(Self::Ecs),
            "ocsf" => Ok(Self::Ocsf),
            _ => Err(format!("`{s}` is not a format: native, ecs or ocsf")),
        }
    }
}

pub fn convert(_format: Format, record: &Value) -> Value {
    record.clone()
}
