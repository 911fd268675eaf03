//! Seeded shuffling for splits and epochs: headstart's one generator (SplitMix64, in
//! `headstart-core`), so the same seed gives the same order on every machine and thread count.

/// The generator; `Shuffler::new(seed, stream)` gives independent streams.
pub type Shuffler = headstart_core::rng::SplitMix64;
