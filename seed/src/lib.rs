//! The seed daemon and CLI as a library: inventory, lifecycle, power drivers and orchestration.
//! The `seed` binary (`main.rs`) is a thin clap front end over these modules.

pub mod cli;
