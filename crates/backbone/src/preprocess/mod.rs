//! Decoding and eval preprocessing. Being written.
