//! Design matrices for training and scoring: the cache's rows (`headstart_cache::rows`), as the
//! head's training loops use them.

pub use headstart_cache::rows::{Rows, ViewSelection};
