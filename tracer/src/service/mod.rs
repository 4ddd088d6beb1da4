//! The tracer as a service: the host's state folded from its records
//! (view), a local API over a Unix socket (api, client) and Prometheus
//! metrics. All of them read the same records the sinks get.

pub mod api;
pub mod client;
pub mod metrics;
pub mod view;
