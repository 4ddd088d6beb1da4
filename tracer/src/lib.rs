//! A workload tracer for Linux: eBPF programs report process lifecycle and
//! socket connects; user space attributes them to processes and writes
//! self-describing JSON lines.

pub mod check;
pub mod classify;
pub mod cli;
pub mod config;
pub mod dns;
mod embedded;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod gpu;
pub mod kernel;
pub mod ledger;
pub mod output;
pub mod pipeline;
pub mod privileges;
pub mod process;
pub mod protocols;
pub mod replay;
pub mod report;
pub mod service;
pub mod top;
#[cfg(test)]
mod testing;
