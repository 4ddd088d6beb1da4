//! Kernel programs of the tracer; see `main.rs`. This library target is empty
//! and only lets the loader crate depend on the package.
#![no_std]
