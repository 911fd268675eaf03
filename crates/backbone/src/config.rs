//! The model zoo: one [`BackboneConfig`] per architecture, like timm's `pretrained_cfg`. The
//! types live in `headstart-core` (so that reading a cache needs no neural-network stack) and
//! are re-exported here.

pub use headstart_core::config::*;
