//! One module per subcommand: its clap arguments and its `run`.

pub mod audit;
pub mod benchmark;
pub mod cache;
pub mod classify;
pub mod compare;
pub mod completions;
pub mod devices;
pub mod eval;
pub mod extract;
pub mod fetch;
pub mod forward;
pub mod map;
pub mod neighbors;
pub mod predict;
pub mod show;
pub mod sweep;
pub mod train_head;
pub mod weights;
