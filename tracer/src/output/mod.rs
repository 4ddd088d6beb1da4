//! Output: the record schema, safe string escaping, the formats records
//! are written in (native, ECS, OCSF) and the sinks they go to.

pub mod escape;
pub mod formats;
pub mod record;
pub mod sink;
