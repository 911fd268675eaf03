//! PyTorch `.pth` readers: the zip format written by `torch.save` since torch 1.6, and the
//! legacy format (several pickles back to back, then the raw storages) written before it or
//! with `_use_new_zipfile_serialization=False`.
//!
//! Both formats are parsed by a small pickle virtual machine of our own (`Unpickler`). It
//! understands the binary opcodes of pickle protocols 2–5 that `torch.save` emits, plus the
//! protocol-0 `GLOBAL`, `INT`, `LONG`, `PUT` and `GET`. It never trusts a length it reads (every
//! length is checked against the bytes that remain before anything is allocated), builds no
//! value recursively, and drops deeply nested values without recursion, so malformed input
//! yields an `Err`, never a panic or a stack overflow.
//!
//! Only the tensors of the state dict are materialised: the top-level dict when it holds
//! tensors, otherwise the first of [`STATE_DICT_KEYS`] (searched up to [`MAX_NESTING`] levels
//! deep) whose value is a dict holding tensors. Every tensor is gathered into a contiguous CPU
//! tensor from its `(storage offset, size, stride)`, bounds-checked against its storage.
//!
//! Element types map to candle dtypes as follows:
//!
//! | torch storage                              | candle dtype                      |
//! |--------------------------------------------|-----------------------------------|
//! | `DoubleStorage` / `FloatStorage`           | `F64` / `F32`                     |
//! | `HalfStorage` / `BFloat16Storage`          | `F16` / `BF16`                    |
//! | `LongStorage`                              | `I64`                             |
//! | `IntStorage`, `ShortStorage`, `CharStorage`| `I64` (widened, exact)            |
//! | `ByteStorage`, `UntypedStorage`            | `U8`                              |
//! | `BoolStorage`                              | `U8` (0 or 1)                     |

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read, Seek};
use std::rc::Rc;

use candle_core::{DType, Device, Tensor};

type Res<T> = std::result::Result<T, String>;

use super::FormatError;

/// `torch.serialization.MAGIC_NUMBER` (0x1950a86a20f9469cfc6c), as the little-endian bytes of
/// the pickled Python int that opens a legacy `.pth` file.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// The only legacy protocol version torch ever wrote.
const LEGACY_PROTOCOL_VERSION: i64 = 1001;

/// Keys of a checkpoint dict under which the state dict is looked for, in this order, when the
/// top-level dict holds no tensors itself.
const STATE_DICT_KEYS: [&str; 6] = [
    "state_dict",
    "model",
    "model_state_dict",
    "module",
    "net",
    "params",
];

/// How many levels of [`STATE_DICT_KEYS`] are followed below the top-level dict.
const MAX_NESTING: usize = 3;

/// Tensors with more dimensions than this are rejected.
const MAX_DIMS: usize = 64;

/// How deeply `_rebuild_from_type_v2` may wrap another rebuild function.
const MAX_REBUILD_DEPTH: u32 = 16;

/// Most values the pickle stack may hold at once (torch's pickles keep it tiny).
const MAX_STACK: usize = 1 << 22;

/// Most entries the pickle memo may hold.
const MAX_MEMO: usize = 1 << 24;

/// Reads all tensors of a `.pth` file (zip or legacy format) from its bytes.
///
/// Returns CPU tensors sorted by name, each contiguous (non-contiguous tensors are gathered
/// from their storage). Only the state dict is read: the top-level dict, or else the first
/// dict holding tensors under `state_dict`, `model`, `model_state_dict`, `module`, `net` or
/// `params`. Dtypes: float64/32/16 and bfloat16 keep theirs, int64 is `I64`, int32, int16 and
/// int8 are widened to `I64` (exactly), uint8 is `U8`, bool becomes `U8` (0 or 1).
///
/// The error carries a short human-readable reason. Never panics on malformed input, and never
/// allocates more than a length field claims without checking it against the input first.
pub fn read_pth(bytes: &[u8]) -> std::result::Result<Vec<(String, Tensor)>, FormatError> {
    // The reader is written not to panic; this is only a last safety net.
    std::panic::catch_unwind(|| read_pth_unguarded(bytes))
        .unwrap_or_else(|_| Err("malformed .pth file: internal error while reading it".to_string()))
        .map_err(FormatError::Pth)
}

/// [`read_pth`] without the `catch_unwind` safety net, so tests see any panic.
fn read_pth_unguarded(bytes: &[u8]) -> Res<Vec<(String, Tensor)>> {
    let loaded = if bytes.starts_with(b"PK\x03\x04") {
        load_zip(bytes)?
    } else if bytes.first() == Some(&0x80) {
        load_legacy(bytes)?
    } else {
        return Err("not a .pth file: neither a zip archive nor a pickle".to_string());
    };
    loaded.materialise()
}

mod containers;
mod gather;
mod state_dict;
mod unpickler;
mod value;

use containers::*;
use gather::*;
use state_dict::*;
use unpickler::*;
use value::*;

#[cfg(test)]
mod tests;
