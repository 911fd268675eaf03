//! One module per subcommand: its clap arguments and its `run`.

pub mod cache;
pub mod classify;
pub mod eval;
pub mod extract;
pub mod fetch;
pub mod predict;
pub mod show;
pub mod train_head;
pub mod weights;
