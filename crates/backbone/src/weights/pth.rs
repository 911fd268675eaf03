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

// ---------------------------------------------------------------------------------------------
// Element types and storages
// ---------------------------------------------------------------------------------------------

/// Element type of a torch storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Kind {
    /// Maps a pickled storage class (`torch.FloatStorage`, ...) to its element type.
    fn from_class(module: &str, name: &str) -> Res<Self> {
        let known_module = matches!(module, "torch" | "torch.cuda" | "torch.storage");
        let kind = match name {
            "DoubleStorage" => Kind::F64,
            "FloatStorage" => Kind::F32,
            "HalfStorage" => Kind::F16,
            "BFloat16Storage" => Kind::BF16,
            "LongStorage" => Kind::I64,
            "IntStorage" => Kind::I32,
            "ShortStorage" => Kind::I16,
            "CharStorage" => Kind::I8,
            "ByteStorage" | "UntypedStorage" => Kind::U8,
            "BoolStorage" => Kind::Bool,
            "TypedStorage" if known_module => {
                return Err(format!(
                    "storage class {module}.{name} carries no element type"
                ))
            }
            _ => return Err(format!("unsupported storage type {module}.{name}")),
        };
        if known_module {
            Ok(kind)
        } else {
            Err(format!("unsupported storage type {module}.{name}"))
        }
    }

    /// Bytes per element.
    fn size(self) -> usize {
        match self {
            Kind::F64 | Kind::I64 => 8,
            Kind::F32 | Kind::I32 => 4,
            Kind::F16 | Kind::BF16 | Kind::I16 => 2,
            Kind::I8 | Kind::U8 | Kind::Bool => 1,
        }
    }
}

/// A storage as referenced by a pickle: a window `[offset, offset + len)` (in elements) of the
/// root storage `root`, which holds `root_numel` elements.
#[derive(Debug)]
struct StorageRef {
    kind: Kind,
    root: Rc<str>,
    root_numel: usize,
    offset: usize,
    len: usize,
}

/// A tensor as described by `_rebuild_tensor_v2`: not yet read from its storage.
#[derive(Debug)]
struct TensorRef {
    storage: Rc<StorageRef>,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

// ---------------------------------------------------------------------------------------------
// Pickle values
// ---------------------------------------------------------------------------------------------

/// A module-level Python name (`GLOBAL` / `STACK_GLOBAL`).
#[derive(Debug)]
struct Global {
    module: String,
    name: String,
}

/// The items of a tuple, list, dict (flattened key/value pairs) or opaque object.
///
/// Its `Drop` is iterative, so that dropping a value nested millions of levels deep (which a
/// hostile pickle can build with one byte per level) cannot overflow the stack.
#[derive(Debug, Default)]
struct Seq(Vec<Value>);

impl Drop for Seq {
    fn drop(&mut self) {
        let mut work = std::mem::take(&mut self.0);
        while let Some(value) = work.pop() {
            match value {
                Value::Tuple(rc) | Value::Object(rc) => {
                    if let Ok(mut seq) = Rc::try_unwrap(rc) {
                        work.append(&mut seq.0);
                    }
                }
                Value::List(rc) | Value::Dict(rc) => {
                    if let Ok(cell) = Rc::try_unwrap(rc) {
                        let mut seq = cell.into_inner();
                        work.append(&mut seq.0);
                    }
                }
                _ => {}
            }
        }
    }
}

/// A value on the pickle stack. Containers are reference-counted, as in Python, so that memo
/// references and later mutations (`SETITEMS` after `BINPUT`) see the same object.
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An int too large for `i64`: its little-endian two's-complement bytes.
    BigInt(Rc<[u8]>),
    /// A float (its value is never needed).
    Float,
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Global(Rc<Global>),
    Tuple(Rc<Seq>),
    List(Rc<RefCell<Seq>>),
    /// Key/value pairs, flattened; later duplicates win, as in Python.
    Dict(Rc<RefCell<Seq>>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    /// Anything else: the callable (or class) and its arguments.
    Object(Rc<Seq>),
}

impl Value {
    fn tuple(items: Vec<Value>) -> Self {
        Value::Tuple(Rc::new(Seq(items)))
    }

    fn list(items: Vec<Value>) -> Self {
        Value::List(Rc::new(RefCell::new(Seq(items))))
    }

    fn dict(pairs: Vec<Value>) -> Self {
        Value::Dict(Rc::new(RefCell::new(Seq(pairs))))
    }

    fn object(callable: Value, args: Value) -> Self {
        Value::Object(Rc::new(Seq(vec![callable, args])))
    }

    /// A Python-ish name of the value's type, for error messages.
    fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Global(_) => "global",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Object(_) => "object",
        }
    }

    /// The text of a `str` (or of UTF-8 `bytes`, as Python 2 pickles store strings).
    fn text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The items of a tuple.
    fn tuple_items(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(t) => Some(&t.0),
            _ => None,
        }
    }

    /// A non-negative int as `usize`.
    fn to_usize(&self, what: &str) -> Res<usize> {
        match self {
            Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} {i} is negative")),
            other => Err(format!("{what} is a {}, not an int", other.type_name())),
        }
    }

    /// A tuple of non-negative ints.
    fn to_usizes(&self, what: &str) -> Res<Vec<usize>> {
        let items = self
            .tuple_items()
            .ok_or_else(|| format!("{what} is a {}, not a tuple", self.type_name()))?;
        if items.len() > MAX_DIMS {
            return Err(format!("{what} has {} dimensions", items.len()));
        }
        items.iter().map(|v| v.to_usize(what)).collect()
    }

    /// The callable of an opaque object, when it is a `torch` `_rebuild_*` function we do not
    /// support (so that a state dict holding one fails loudly instead of losing a tensor).
    fn unsupported_rebuild(&self) -> Option<String> {
        let Value::Object(o) = self else { return None };
        match o.0.first() {
            Some(Value::Global(g))
                if g.module.starts_with("torch") && g.name.starts_with("_rebuild_") =>
            {
                Some(format!("{}.{}", g.module, g.name))
            }
            _ => None,
        }
    }
}

/// The value stored under a string key in a pickled dict (the last one, as in Python).
fn dict_get(dict: &RefCell<Seq>, key: &str) -> Option<Value> {
    let pairs = dict.borrow();
    pairs
        .0
        .chunks_exact(2)
        .rev()
        .find(|pair| pair.first().and_then(Value::text) == Some(key))
        .and_then(|pair| pair.get(1).cloned())
}

// ---------------------------------------------------------------------------------------------
// The pickle virtual machine
// ---------------------------------------------------------------------------------------------

/// A pickle virtual machine for the opcodes `torch.save` uses.
///
/// Persistent ids (`BINPERSID`) must be torch storage tuples
/// `('storage', storage_class, root_key, location, numel[, view_metadata])`; they become
/// [`Value::Storage`] and every root storage is recorded in `roots`.
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack lengths at each open `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    /// Root storages: key → (element type, element count), first declaration wins (as in torch).
    roots: HashMap<Rc<str>, (Kind, usize)>,
    /// Storage views of the legacy format, by view key.
    views: HashMap<Rc<str>, Rc<StorageRef>>,
}

impl<'a> Unpickler<'a> {
    /// A machine reading the pickle that starts at `data[pos..]`.
    fn new(data: &'a [u8], pos: usize) -> Self {
        Self {
            data,
            pos,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            roots: HashMap::new(),
            views: HashMap::new(),
        }
    }

    /// Runs one pickle up to its `STOP` and returns its value; `self.pos` is then just past it.
    fn load(&mut self) -> Res<Value> {
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        let start = self.pos;
        self.run()
            .map_err(|e| format!("bad pickle at byte {}: {e}", self.pos.saturating_sub(start)))
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let left = self.remaining();
        if n > left {
            return Err(format!("truncated: {n} bytes wanted, {left} left"));
        }
        let data: &'a [u8] = self.data;
        let slice = data
            .get(self.pos..self.pos + n)
            .ok_or_else(|| "truncated".to_string())?;
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Res<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Res<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length field of any width, checked against the remaining input.
    fn len_field(&mut self, n: u64) -> Res<usize> {
        let left = self.remaining();
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| format!("truncated: length {n} but {left} bytes left"))
    }

    /// A protocol-0 text line (without its `\n`).
    fn line(&mut self) -> Res<&'a str> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| "truncated: unterminated text line".to_string())?;
        let line = self.take(n + 1)?;
        std::str::from_utf8(line.get(..n).unwrap_or_default())
            .map_err(|_| "text line is not UTF-8".to_string())
    }

    /// Bytes that Python 3 would decode as a `str` (`BINSTRING`): text when UTF-8.
    fn string_or_bytes(b: &[u8]) -> Value {
        match std::str::from_utf8(b) {
            Ok(s) => Value::Str(Rc::from(s)),
            Err(_) => Value::Bytes(Rc::from(b)),
        }
    }

    fn unicode(b: &[u8]) -> Res<Value> {
        std::str::from_utf8(b)
            .map(|s| Value::Str(Rc::from(s)))
            .map_err(|_| "string is not UTF-8".to_string())
    }

    /// Decodes a `LONG1`/`LONG4` payload (little-endian two's complement).
    fn long(b: &[u8]) -> Value {
        if b.len() > 8 {
            return Value::BigInt(Rc::from(b));
        }
        let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut a = [fill; 8];
        for (dst, src) in a.iter_mut().zip(b) {
            *dst = *src;
        }
        Value::Int(i64::from_le_bytes(a))
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, v: Value) -> Res<()> {
        if self.stack.len() >= MAX_STACK {
            return Err("pickle stack too deep".to_string());
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Res<Value> {
        if self.stack.len() <= self.fence() {
            return Err("stack underflow".to_string());
        }
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn top(&self) -> Res<&Value> {
        if self.stack.len() <= self.fence() {
            return Err("stack underflow".to_string());
        }
        self.stack
            .last()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn pop_n(&mut self, n: usize) -> Res<Vec<Value>> {
        let fence = self.fence();
        if self.stack.len() < fence + n {
            return Err("stack underflow".to_string());
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    /// Pops everything above the last `MARK`, and the mark.
    fn pop_mark(&mut self) -> Res<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| "no MARK on the stack".to_string())?;
        if mark > self.stack.len() {
            return Err("MARK above the stack".to_string());
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, index: u64) -> Res<()> {
        if self.memo.len() >= MAX_MEMO {
            return Err("pickle memo too large".to_string());
        }
        let v = self.top()?.clone();
        self.memo.insert(index, v);
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> Res<()> {
        let v = self
            .memo
            .get(&index)
            .cloned()
            .ok_or_else(|| format!("memo entry {index} missing"))?;
        self.push(v)
    }

    /// `APPEND`/`APPENDS`/`ADDITEMS`: extends the list on top of the stack.
    fn extend_top(&mut self, items: Vec<Value>) -> Res<()> {
        match self.top()? {
            Value::List(list) => {
                list.borrow_mut().0.extend(items);
                Ok(())
            }
            // Opaque objects (deque, set subclasses, ...) are not needed: drop the items.
            Value::Object(_) => Ok(()),
            other => Err(format!("cannot append to a {}", other.type_name())),
        }
    }

    /// `SETITEM`/`SETITEMS`: adds flattened key/value pairs to the dict on top of the stack.
    fn set_items_top(&mut self, pairs: Vec<Value>) -> Res<()> {
        if !pairs.len().is_multiple_of(2) {
            return Err("odd number of items for a dict".to_string());
        }
        match self.top()? {
            Value::Dict(dict) => {
                dict.borrow_mut().0.extend(pairs);
                Ok(())
            }
            Value::Object(_) => Ok(()),
            other => Err(format!("cannot set items of a {}", other.type_name())),
        }
    }

    fn run(&mut self) -> Res<Value> {
        loop {
            let op = self.u8()?;
            match op {
                // PROTO
                0x80 => {
                    let v = self.u8()?;
                    if v > 5 {
                        return Err(format!("unsupported pickle protocol {v}"));
                    }
                }
                // FRAME: a hint only
                0x95 => {
                    self.take(8)?;
                }
                // STOP
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                // POP: pops the top item, or the mark when the top is a mark
                b'0' => {
                    if self.stack.len() > self.fence() {
                        self.stack.pop();
                    } else if self.marks.pop().is_none() {
                        return Err("stack underflow".to_string());
                    }
                }
                // POP_MARK
                b'1' => {
                    self.pop_mark()?;
                }
                // DUP
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                // BININT, BININT1, BININT2
                b'J' => {
                    let v = self.i32()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                // LONG1, LONG4
                0x8a => {
                    let n = self.u8()?;
                    let b = self.take(usize::from(n))?;
                    self.push(Self::long(b))?;
                }
                0x8b => {
                    let n = self.i32()?;
                    let n = u64::try_from(n).map_err(|_| "negative LONG4 length".to_string())?;
                    let n = self.len_field(n)?;
                    let b = self.take(n)?;
                    self.push(Self::long(b))?;
                }
                // INT (protocol 0; "01"/"00" are True/False)
                b'I' => {
                    let v = match self.line()? {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        s => Value::Int(s.parse().map_err(|_| "bad INT".to_string())?),
                    };
                    self.push(v)?;
                }
                // LONG (protocol 0)
                b'L' => {
                    let s = self.line()?;
                    let v = s
                        .trim_end_matches('L')
                        .parse()
                        .map_err(|_| "bad LONG".to_string())?;
                    self.push(Value::Int(v))?;
                }
                // BINFLOAT (big-endian)
                b'G' => {
                    self.take(8)?;
                    self.push(Value::Float)?;
                }
                // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u64::from(self.u32()?),
                        0x8c => u64::from(self.u8()?),
                        _ => self.u64()?,
                    };
                    let n = self.len_field(n)?;
                    let b = self.take(n)?;
                    self.push(Self::unicode(b)?)?;
                }
                // BINSTRING, SHORT_BINSTRING
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        u64::try_from(self.i32()?)
                            .map_err(|_| "negative BINSTRING length".to_string())?
                    } else {
                        u64::from(self.u8()?)
                    };
                    let n = self.len_field(n)?;
                    let b = self.take(n)?;
                    self.push(Self::string_or_bytes(b))?;
                }
                // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => u64::from(self.u32()?),
                        b'C' => u64::from(self.u8()?),
                        _ => self.u64()?,
                    };
                    let n = self.len_field(n)?;
                    let b = self.take(n)?;
                    self.push(Value::Bytes(Rc::from(b)))?;
                }
                // EMPTY_TUPLE, TUPLE, TUPLE1..3
                b')' => self.push(Value::tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::tuple(items))?;
                }
                0x85..=0x87 => {
                    let items = self.pop_n(usize::from(op - 0x84))?;
                    self.push(Value::tuple(items))?;
                }
                // EMPTY_LIST, LIST, APPEND, APPENDS
                b']' => self.push(Value::list(Vec::new()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::list(items))?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items)?;
                }
                // EMPTY_DICT, DICT, SETITEM, SETITEMS
                b'}' => self.push(Value::dict(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    if !items.len().is_multiple_of(2) {
                        return Err("odd number of items for a dict".to_string());
                    }
                    self.push(Value::dict(items))?;
                }
                b's' => {
                    let pair = self.pop_n(2)?;
                    self.set_items_top(pair)?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items_top(items)?;
                }
                // EMPTY_SET, ADDITEMS, FROZENSET: sets are kept as lists / tuples
                0x8f => self.push(Value::list(Vec::new()))?,
                0x90 => {
                    let items = self.pop_mark()?;
                    self.extend_top(items)?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::tuple(items))?;
                }
                // BINPUT, LONG_BINPUT, MEMOIZE, PUT
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(u64::from(i))?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(u64::from(i))?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'p' => {
                    let i = self
                        .line()?
                        .parse()
                        .map_err(|_| "bad PUT index".to_string())?;
                    self.memo_put(i)?;
                }
                // BINGET, LONG_BINGET, GET
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(u64::from(i))?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(u64::from(i))?;
                }
                b'g' => {
                    let i = self
                        .line()?
                        .parse()
                        .map_err(|_| "bad GET index".to_string())?;
                    self.memo_get(i)?;
                }
                // GLOBAL, STACK_GLOBAL
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.push(Value::Global(Rc::new(Global { module, name })))?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (module.text(), name.text()) else {
                        return Err("STACK_GLOBAL needs two strings".to_string());
                    };
                    let g = Global {
                        module: module.to_string(),
                        name: name.to_string(),
                    };
                    self.push(Value::Global(Rc::new(g)))?;
                }
                // REDUCE, NEWOBJ, NEWOBJ_EX
                b'R' | 0x81 | 0x92 => {
                    if op == 0x92 {
                        self.pop()?; // kwargs
                    }
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args, 0)?;
                    self.push(v)?;
                }
                // BUILD: the state (e.g. a state dict's `_metadata`) is not needed
                b'b' => {
                    self.pop()?;
                    self.top()?;
                }
                // BINPERSID
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(&pid)?;
                    self.push(v)?;
                }
                other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
            }
        }
    }

    /// Resolves a torch persistent id to a storage.
    fn persistent_load(&mut self, pid: &Value) -> Res<Value> {
        let items = pid
            .tuple_items()
            .ok_or_else(|| format!("persistent id is a {}, not a tuple", pid.type_name()))?;
        let [tag, rest @ ..] = items else {
            return Err("empty persistent id".to_string());
        };
        match tag.text() {
            Some("storage") => {}
            // A whole pickled module (legacy `torch.save(model)`): opaque.
            Some("module") => return Ok(Value::object(Value::None, pid.clone())),
            _ => return Err("persistent id is not a torch storage".to_string()),
        }
        let [class, key, _location, numel, view @ ..] = rest else {
            return Err(format!(
                "storage id has {} fields, expected 5 or 6",
                items.len()
            ));
        };
        let kind = match class {
            Value::Global(g) => Kind::from_class(&g.module, &g.name)?,
            other => return Err(format!("storage class is a {}", other.type_name())),
        };
        let key: Rc<str> = Rc::from(
            key.text()
                .ok_or_else(|| "storage key is not a string".to_string())?,
        );
        let numel = numel.to_usize("storage size")?;
        numel
            .checked_mul(kind.size())
            .ok_or_else(|| format!("storage {key} size {numel} overflows"))?;
        let root_numel = match self.roots.entry(key.clone()) {
            Entry::Occupied(e) => {
                let (first_kind, first_numel) = *e.get();
                if first_kind != kind {
                    return Err(format!("storage {key} is used with two element types"));
                }
                first_numel
            }
            Entry::Vacant(e) => {
                e.insert((kind, numel));
                numel
            }
        };
        let storage = match view {
            [] | [Value::None] => StorageRef {
                kind,
                root: key,
                root_numel,
                offset: 0,
                len: root_numel,
            },
            [meta] => {
                let Some([view_key, offset, size]) = meta.tuple_items() else {
                    return Err(
                        "storage view metadata is not a (key, offset, size) tuple".to_string()
                    );
                };
                let view_key: Rc<str> = Rc::from(
                    view_key
                        .text()
                        .ok_or_else(|| "storage view key is not a string".to_string())?,
                );
                if let Some(existing) = self.views.get(&view_key) {
                    if existing.kind != kind {
                        return Err(format!(
                            "storage view {view_key} is used with two element types"
                        ));
                    }
                    return Ok(Value::Storage(existing.clone()));
                }
                let offset = offset.to_usize("storage view offset")?;
                let len = size.to_usize("storage view size")?;
                if offset.checked_add(len).is_none_or(|end| end > root_numel) {
                    return Err(format!(
                        "storage view {view_key} [{offset}, +{len}) exceeds storage {key} of {root_numel} elements"
                    ));
                }
                let view = Rc::new(StorageRef {
                    kind,
                    root: key,
                    root_numel,
                    offset,
                    len,
                });
                self.views.insert(view_key, view.clone());
                return Ok(Value::Storage(view));
            }
            _ => {
                return Err(format!(
                    "storage id has {} fields, expected 5 or 6",
                    items.len()
                ))
            }
        };
        Ok(Value::Storage(Rc::new(storage)))
    }
}

/// `REDUCE`/`NEWOBJ`: applies the callables torch state dicts need; anything else becomes an
/// opaque [`Value::Object`].
fn reduce(callable: Value, args: Value, depth: u32) -> Res<Value> {
    let Value::Global(g) = &callable else {
        return Ok(Value::object(callable, args));
    };
    match (g.module.as_str(), g.name.as_str()) {
        ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict") => {
            // `OrderedDict()` (items follow by SETITEMS) or `OrderedDict([(k, v), ...])`.
            let mut pairs = Vec::new();
            if let Some([Value::List(items)]) = args.tuple_items() {
                for item in &items.borrow().0 {
                    if let Some([k, v]) = item.tuple_items() {
                        pairs.push(k.clone());
                        pairs.push(v.clone());
                    }
                }
            }
            Ok(Value::dict(pairs))
        }
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => rebuild_tensor(&args),
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            match args.tuple_items().and_then(<[Value]>::first) {
                Some(data) => Ok(data.clone()),
                None => Err("_rebuild_parameter without arguments".to_string()),
            }
        }
        ("torch._tensor" | "torch.tensor", "_rebuild_from_type_v2" | "_rebuild_from_type") => {
            if depth >= MAX_REBUILD_DEPTH {
                return Err("tensor rebuild functions nested too deeply".to_string());
            }
            let Some([func, _new_type, inner, ..]) = args.tuple_items() else {
                return Err("_rebuild_from_type_v2 needs (func, type, args, state)".to_string());
            };
            reduce(func.clone(), inner.clone(), depth + 1)
        }
        _ => Ok(Value::object(callable, args)),
    }
}

/// `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
fn rebuild_tensor(args: &Value) -> Res<Value> {
    let Some([storage, offset, size, stride, ..]) = args.tuple_items() else {
        return Err("_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)".to_string());
    };
    let Value::Storage(storage) = storage else {
        return Err(format!("tensor storage is a {}", storage.type_name()));
    };
    let offset = offset.to_usize("storage offset")?;
    let size = size.to_usizes("tensor size")?;
    let stride = stride.to_usizes("tensor stride")?;
    if size.len() != stride.len() {
        return Err(format!(
            "tensor size has {} dims, stride {}",
            size.len(),
            stride.len()
        ));
    }
    Ok(Value::Tensor(Rc::new(TensorRef {
        storage: storage.clone(),
        offset,
        size,
        stride,
    })))
}

// ---------------------------------------------------------------------------------------------
// Choosing the state dict
// ---------------------------------------------------------------------------------------------

fn holds_tensor(v: &Value) -> bool {
    matches!(v, Value::Tensor(_)) || v.unsupported_rebuild().is_some()
}

/// The dict holding the tensors: the top-level one, or one nested under [`STATE_DICT_KEYS`].
fn find_state_dict(v: &Value, depth: usize) -> Option<Rc<RefCell<Seq>>> {
    let Value::Dict(dict) = v else { return None };
    if dict
        .borrow()
        .0
        .chunks_exact(2)
        .any(|pair| pair.get(1).is_some_and(holds_tensor))
    {
        return Some(dict.clone());
    }
    if depth == 0 {
        return None;
    }
    STATE_DICT_KEYS.iter().find_map(|key| {
        let child = dict_get(dict, key)?;
        find_state_dict(&child, depth - 1)
    })
}

/// Picks the state dict's tensors, by name (later duplicates win). Non-tensor values and
/// non-string keys are skipped.
fn select_tensors(root: &Value) -> Res<BTreeMap<String, Rc<TensorRef>>> {
    let Some(dict) = find_state_dict(root, MAX_NESTING) else {
        return Err(match root {
            Value::Dict(d) => {
                let d = d.borrow();
                let keys: Vec<&str> =
                    d.0.chunks_exact(2)
                        .filter_map(|p| p.first()?.text())
                        .take(8)
                        .collect();
                format!("no tensors found (top-level keys: {})", keys.join(", "))
            }
            other => format!(
                "no tensors found: the file holds a {}, not a dict",
                other.type_name()
            ),
        });
    };
    let pairs = dict.borrow();
    let mut out = BTreeMap::new();
    for pair in pairs.0.chunks_exact(2) {
        let [key, value] = pair else { continue };
        let Some(name) = key.text() else { continue };
        match value {
            Value::Tensor(t) => {
                out.insert(name.to_string(), t.clone());
            }
            other => {
                if let Some(func) = other.unsupported_rebuild() {
                    return Err(format!(
                        "tensor `{name}` is built by {func}, which is not supported"
                    ));
                }
                out.remove(name);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Materialising tensors
// ---------------------------------------------------------------------------------------------

/// Caps the bytes the reader allocates for storages and tensors: `8 × file length + 64 MiB`.
/// A well-formed file needs about its own size; only decompression, tied weights or
/// overlapping strides can need more.
struct Budget {
    left: u64,
}

impl Budget {
    fn for_input(len: usize) -> Self {
        Self {
            left: (len as u64).saturating_mul(8).saturating_add(64 << 20),
        }
    }

    fn spend(&mut self, n: u64, what: &str) -> Res<()> {
        if n > self.left {
            return Err(format!(
                "{what} needs {n} bytes, more than this file can plausibly hold"
            ));
        }
        self.left -= n;
        Ok(())
    }
}

/// The chosen tensors and the bytes of each root storage they use.
struct Loaded<'a> {
    tensors: BTreeMap<String, Rc<TensorRef>>,
    storages: HashMap<Rc<str>, Cow<'a, [u8]>>,
    budget: Budget,
}

impl Loaded<'_> {
    /// Builds every tensor, sorted by name.
    fn materialise(mut self) -> Res<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.tensors.len());
        for (name, t) in &self.tensors {
            let tensor = build_tensor(t, &self.storages, &mut self.budget)
                .map_err(|e| format!("tensor `{name}`: {e}"))?;
            out.push((name.clone(), tensor));
        }
        Ok(out)
    }
}

/// The bytes of the storage window a tensor refers to.
fn storage_bytes<'s>(
    t: &TensorRef,
    storages: &'s HashMap<Rc<str>, Cow<'_, [u8]>>,
) -> Res<&'s [u8]> {
    let st = &t.storage;
    let es = st.kind.size();
    let root = storages
        .get(&st.root)
        .ok_or_else(|| format!("storage {} has no data", st.root))?;
    st.offset
        .checked_mul(es)
        .zip(st.len.checked_mul(es))
        .and_then(|(start, n)| root.get(start..start.checked_add(n)?))
        .ok_or_else(|| {
            format!(
                "storage window [{}, +{}) lies outside storage {} of {} bytes",
                st.offset,
                st.len,
                st.root,
                root.len()
            )
        })
}

fn build_tensor(
    t: &TensorRef,
    storages: &HashMap<Rc<str>, Cow<'_, [u8]>>,
    budget: &mut Budget,
) -> Res<Tensor> {
    let bytes = storage_bytes(t, storages)?;
    let kind = t.storage.kind;
    let plan = Plan::new(bytes.len() / kind.size(), t.offset, &t.size, &t.stride)?;
    let nbytes = plan.numel.saturating_mul(kind.size());
    budget.spend(nbytes as u64, "tensor")?;
    to_candle(kind, bytes, &plan, t.size.clone())
}

/// A validated strided view `(offset, size, stride)` of a storage: every element index it
/// produces is below the storage's element count.
#[derive(Debug)]
struct Plan {
    offset: usize,
    size: Vec<usize>,
    /// Strides, zero for dimensions of size 1 (which never move the index), so that no index
    /// computation can overflow.
    stride: Vec<usize>,
    numel: usize,
    contiguous: bool,
}

impl Plan {
    /// Checks the view against a storage of `available` elements.
    fn new(available: usize, offset: usize, size: &[usize], stride: &[usize]) -> Res<Self> {
        let numel = size
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("size {size:?} overflows"))?;
        let zeroed: Vec<usize> = size
            .iter()
            .zip(stride)
            .map(|(&n, &s)| if n == 1 { 0 } else { s })
            .collect();
        let mut plan = Self {
            offset,
            size: size.to_vec(),
            stride: zeroed,
            numel,
            contiguous: true,
        };
        if numel == 0 {
            return Ok(plan);
        }
        let last = size
            .iter()
            .zip(&plan.stride)
            .try_fold(offset, |acc, (&n, &s)| {
                (n - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
            })
            .ok_or_else(|| format!("size {size:?} with stride {stride:?} overflows"))?;
        if last >= available {
            return Err(format!(
                "offset {offset}, size {size:?}, stride {stride:?} need element {last} of a storage of {available}"
            ));
        }
        let mut expected = 1usize;
        for (&n, &s) in size.iter().zip(&plan.stride).rev() {
            if n != 1 && s != expected {
                plan.contiguous = false;
                break;
            }
            expected *= n;
        }
        Ok(plan)
    }

    /// Copies the view's elements (of `N` bytes, decoded by `f`) out of `storage` in row-major
    /// order.
    fn gather<const N: usize, T>(&self, storage: &[u8], f: impl Fn([u8; N]) -> T) -> Res<Vec<T>> {
        let out_of_range = || "element index out of range".to_string();
        let element = |p: usize| -> Option<T> {
            let start = p.checked_mul(N)?;
            let mut a = [0u8; N];
            a.copy_from_slice(storage.get(start..start.checked_add(N)?)?);
            Some(f(a))
        };
        if self.numel == 0 {
            return Ok(Vec::new());
        }
        if self.contiguous {
            let start = self.offset.checked_mul(N).ok_or_else(out_of_range)?;
            let end = self.numel.checked_mul(N).and_then(|n| n.checked_add(start));
            let bytes = end
                .and_then(|end| storage.get(start..end))
                .ok_or_else(out_of_range)?;
            return Ok(decode(bytes, f));
        }
        // Odometer over all but the last dimension; `base` is the index of the current row.
        let (Some(&inner_n), Some(&inner_s)) = (self.size.last(), self.stride.last()) else {
            return Err(out_of_range());
        };
        let outer = self.size.len() - 1;
        let mut out = Vec::with_capacity(self.numel);
        let mut index = vec![0usize; outer];
        let mut base = self.offset;
        loop {
            let mut p = base;
            for _ in 0..inner_n {
                out.push(element(p).ok_or_else(out_of_range)?);
                p += inner_s;
            }
            let mut d = outer;
            loop {
                if d == 0 {
                    return Ok(out);
                }
                d -= 1;
                let (Some(i), Some(&n), Some(&s)) =
                    (index.get_mut(d), self.size.get(d), self.stride.get(d))
                else {
                    return Err(out_of_range());
                };
                *i += 1;
                if *i < n {
                    base += s;
                    break;
                }
                *i = 0;
                base -= s * (n - 1);
            }
        }
    }
}

/// Decodes little-endian elements of `N` bytes.
fn decode<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

/// Gathers a tensor from its storage bytes into a contiguous CPU tensor (see the module docs
/// for the dtypes).
fn to_candle(kind: Kind, storage: &[u8], plan: &Plan, shape: Vec<usize>) -> Res<Tensor> {
    let dev = &Device::Cpu;
    let same_layout = match kind {
        Kind::F64 => Some(DType::F64),
        Kind::F32 => Some(DType::F32),
        Kind::F16 => Some(DType::F16),
        Kind::BF16 => Some(DType::BF16),
        Kind::I64 => Some(DType::I64),
        Kind::U8 => Some(DType::U8),
        Kind::I32 | Kind::I16 | Kind::I8 | Kind::Bool => None,
    };
    // Fast path: a contiguous run of elements whose bytes candle can take as they are.
    if let (true, true, Some(dtype)) =
        (cfg!(target_endian = "little"), plan.contiguous, same_layout)
    {
        let es = kind.size();
        let bytes = plan
            .offset
            .checked_mul(es)
            .zip(plan.numel.checked_mul(es))
            .and_then(|(start, n)| storage.get(start..start.checked_add(n)?))
            .ok_or_else(|| "element index out of range".to_string())?;
        return Tensor::from_raw_buffer(bytes, dtype, &shape, dev)
            .map_err(|e| format!("candle: {e}"));
    }
    let t = match kind {
        Kind::F64 => Tensor::from_vec(plan.gather(storage, f64::from_le_bytes)?, shape, dev),
        Kind::F32 => Tensor::from_vec(plan.gather(storage, f32::from_le_bytes)?, shape, dev),
        Kind::F16 => Tensor::from_vec(plan.gather(storage, half::f16::from_le_bytes)?, shape, dev),
        Kind::BF16 => {
            Tensor::from_vec(plan.gather(storage, half::bf16::from_le_bytes)?, shape, dev)
        }
        Kind::I64 => Tensor::from_vec(plan.gather(storage, i64::from_le_bytes)?, shape, dev),
        Kind::I32 => {
            let v = plan.gather(storage, |b| i64::from(i32::from_le_bytes(b)))?;
            Tensor::from_vec(v, shape, dev)
        }
        Kind::I16 => {
            let v = plan.gather(storage, |b| i64::from(i16::from_le_bytes(b)))?;
            Tensor::from_vec(v, shape, dev)
        }
        Kind::I8 => {
            let v = plan.gather(storage, |b| i64::from(i8::from_le_bytes(b)))?;
            Tensor::from_vec(v, shape, dev)
        }
        Kind::U8 => Tensor::from_vec(plan.gather(storage, |[b]: [u8; 1]| b)?, shape, dev),
        Kind::Bool => {
            let v = plan.gather(storage, |[b]: [u8; 1]| u8::from(b != 0))?;
            Tensor::from_vec(v, shape, dev)
        }
    };
    t.map_err(|e| format!("candle: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Zip format
// ---------------------------------------------------------------------------------------------

/// Reads a zip entry (checked against its CRC) and returns its first `want` bytes, or all of
/// it when `want` is `None`, refusing sizes the archive cannot hold.
fn read_entry<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
    want: Option<u64>,
    budget: &mut Budget,
) -> Res<Vec<u8>> {
    let mut entry = archive
        .by_name(name)
        .map_err(|e| format!("zip entry {name}: {e}"))?;
    let size = entry.size();
    let want = want.unwrap_or(size);
    if want > size {
        return Err(format!(
            "zip entry {name} holds {size} bytes, {want} needed"
        ));
    }
    // Deflate cannot expand by more than about 1032:1.
    let ceiling = match entry.compression() {
        zip::CompressionMethod::Stored => entry.compressed_size(),
        _ => entry.compressed_size().saturating_mul(1100),
    };
    if size > ceiling {
        return Err(format!(
            "zip entry {name} claims {size} bytes from {} compressed bytes",
            entry.compressed_size()
        ));
    }
    budget.spend(size, &format!("zip entry {name}"))?;
    let mut out = Vec::new();
    // Bounded by the declared size; the CRC is verified at the end.
    entry
        .read_to_end(&mut out)
        .map_err(|e| format!("zip entry {name}: {e}"))?;
    if out.len() as u64 != size {
        return Err(format!(
            "zip entry {name} is truncated: {} of {size} bytes",
            out.len()
        ));
    }
    out.truncate(usize::try_from(want).unwrap_or(usize::MAX));
    Ok(out)
}

/// `data.pkl` at the top level or in one top-level directory.
fn is_data_pkl(name: &str) -> bool {
    name == "data.pkl"
        || name
            .strip_suffix("/data.pkl")
            .is_some_and(|dir| !dir.is_empty() && !dir.contains('/'))
}

/// Parses a zip-format `.pth`: `<dir>/data.pkl` and the storages `<dir>/data/<key>`.
fn load_zip(bytes: &[u8]) -> Res<Loaded<'static>> {
    let mut budget = Budget::for_input(bytes.len());
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("zip: {e}"))?;
    let pkl_name = archive
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| is_data_pkl(n))
        .map(|n| n.into_owned())
        .ok_or_else(|| "zip archive has no <dir>/data.pkl: not a torch file".to_string())?;
    let prefix = pkl_name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_string();

    let byteorder = format!("{prefix}byteorder");
    if archive.index_for_name(&byteorder).is_some() {
        let order = read_entry(&mut archive, &byteorder, None, &mut budget)?;
        if *order != *b"little" {
            return Err(format!(
                "storages are stored in byte order {:?}; only little-endian files are supported",
                String::from_utf8_lossy(&order)
            ));
        }
    }

    let pkl = read_entry(&mut archive, &pkl_name, None, &mut budget)?;
    let mut unpickler = Unpickler::new(&pkl, 0);
    let root = unpickler.load()?;
    let tensors = select_tensors(&root)?;
    drop(root);

    let mut storages = HashMap::new();
    for t in tensors.values() {
        let st = &t.storage;
        if storages.contains_key(&st.root) {
            continue;
        }
        let nbytes = st
            .root_numel
            .checked_mul(st.kind.size())
            .ok_or_else(|| format!("storage {} size overflows", st.root))?;
        let data = read_entry(
            &mut archive,
            &format!("{prefix}data/{}", st.root),
            Some(nbytes as u64),
            &mut budget,
        )?;
        storages.insert(st.root.clone(), Cow::Owned(data));
    }
    Ok(Loaded {
        tensors,
        storages,
        budget,
    })
}

// ---------------------------------------------------------------------------------------------
// Legacy format
// ---------------------------------------------------------------------------------------------

/// Parses a legacy `.pth`: pickles for the magic number, protocol version, sys info, the
/// object and the storage keys, then each storage as an int64 element count and its bytes.
fn load_legacy<'a>(bytes: &'a [u8]) -> Res<Loaded<'a>> {
    let mut pos = 0;
    let mut next = |what: &str| -> Res<(Value, Unpickler<'a>)> {
        if pos >= bytes.len() {
            return Err(format!("truncated legacy .pth: {what} missing"));
        }
        let mut unpickler = Unpickler::new(bytes, pos);
        let value = unpickler
            .load()
            .map_err(|e| format!("legacy .pth {what}: {e}"))?;
        pos = unpickler.pos;
        Ok((value, unpickler))
    };

    match next("magic number")?.0 {
        Value::BigInt(b) if *b == LEGACY_MAGIC => {}
        _ => return Err("not a torch file: a pickle without torch's magic number".to_string()),
    }
    match next("protocol version")?.0 {
        Value::Int(LEGACY_PROTOCOL_VERSION) => {}
        Value::Int(v) => return Err(format!("unsupported legacy .pth protocol version {v}")),
        other => {
            return Err(format!(
                "legacy .pth protocol version is a {}",
                other.type_name()
            ))
        }
    }
    if let Value::Dict(info) = next("sys info")?.0 {
        if let Some(Value::Bool(false)) = dict_get(&info, "little_endian") {
            return Err("big-endian legacy .pth files are not supported".to_string());
        }
    }
    let (root, main) = next("object")?;
    let roots = main.roots;
    let tensors = select_tensors(&root)?;
    drop(root);
    let (keys, keys_pickle) = next("storage keys")?;
    // The storages follow the last pickle.
    let mut pos = keys_pickle.pos;
    let Value::List(keys) = keys else {
        return Err(format!(
            "legacy .pth storage keys are a {}, not a list",
            keys.type_name()
        ));
    };
    let mut storages = HashMap::new();
    for key in &keys.borrow().0 {
        let key = key
            .text()
            .ok_or_else(|| "legacy .pth storage key is not a string".to_string())?;
        let (key, &(kind, numel)) = roots
            .get_key_value(key)
            .ok_or_else(|| format!("legacy .pth lists storage {key}, which nothing uses"))?;
        let left = bytes.len().saturating_sub(pos);
        let header = bytes.get(pos..pos.saturating_add(8)).ok_or_else(|| {
            format!("truncated legacy .pth: storage {key} needs 8 header bytes, {left} left")
        })?;
        let mut count = [0u8; 8];
        count.copy_from_slice(header);
        let count = i64::from_le_bytes(count);
        if usize::try_from(count).ok() != Some(numel) {
            return Err(format!(
                "legacy .pth storage {key} holds {count} elements, {numel} declared"
            ));
        }
        pos += 8;
        let left = left - 8;
        let nbytes = numel.saturating_mul(kind.size());
        let data = bytes.get(pos..pos.saturating_add(nbytes)).ok_or_else(|| {
            format!("truncated legacy .pth: storage {key} needs {nbytes} bytes, {left} left")
        })?;
        pos += nbytes;
        storages.insert(key.clone(), Cow::Borrowed(data));
    }
    Ok(Loaded {
        tensors,
        storages,
        budget: Budget::for_input(bytes.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::IndexOp;

    const RESNET_PTH: &str = "fixtures/resnet18/weights-prefixed.pth";
    const RESNET_SAFETENSORS: &str = "fixtures/resnet18/weights.safetensors";
    const LITE0_PTH: &str = "weights/efficientnet-lite0/efficientnet-lite0-57934424.pth";

    /// A file of the shared inputs, by its path inside `shared/`.
    fn read(rel: &str) -> Vec<u8> {
        let path = headstart_testkit::shared(rel);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every element's bit pattern, for exact comparisons.
    fn bits(t: &Tensor) -> Vec<u64> {
        let t = t.flatten_all().unwrap();
        match t.dtype() {
            DType::F32 => t
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| u64::from(v.to_bits()))
                .collect(),
            DType::F64 => t
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect(),
            DType::F16 => t
                .to_vec1::<half::f16>()
                .unwrap()
                .iter()
                .map(|v| u64::from(v.to_bits()))
                .collect(),
            DType::BF16 => t
                .to_vec1::<half::bf16>()
                .unwrap()
                .iter()
                .map(|v| u64::from(v.to_bits()))
                .collect(),
            DType::I64 => t
                .to_vec1::<i64>()
                .unwrap()
                .iter()
                .map(|&v| v as u64)
                .collect(),
            DType::U8 => t
                .to_vec1::<u8>()
                .unwrap()
                .iter()
                .map(|&v| u64::from(v))
                .collect(),
            other => panic!("unexpected dtype {other:?}"),
        }
    }

    fn find<'t>(tensors: &'t [(String, Tensor)], name: &str) -> &'t Tensor {
        &tensors
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .1
    }

    /// Row-major contiguity, ignoring dimensions of size 1.
    fn is_contiguous(size: &[usize], stride: &[usize]) -> bool {
        let mut expected = 1;
        for (&n, &s) in size.iter().zip(stride).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected *= n;
        }
        true
    }

    /// A tiny deterministic xorshift64 generator.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn zip_resnet18_matches_safetensors() {
        let got = read_pth(&read(RESNET_PTH)).unwrap();
        let want = candle_core::safetensors::load(
            headstart_testkit::shared(RESNET_SAFETENSORS),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(got.len(), want.len());
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0),
            "not sorted by name"
        );
        for (name, t) in &got {
            let short = name
                .strip_prefix("backbone.")
                .unwrap_or_else(|| panic!("{name} lacks the prefix"));
            let w = want
                .get(short)
                .unwrap_or_else(|| panic!("{short} not in safetensors"));
            assert_eq!(t.dims(), w.dims(), "{name}");
            assert_eq!(t.dtype(), w.dtype(), "{name}");
            assert!(bits(t) == bits(w), "{name}: values differ");
        }
        let nbt = find(&got, "backbone.bn1.num_batches_tracked");
        assert_eq!((nbt.dtype(), nbt.rank()), (DType::I64, 0));
        assert_eq!(find(&got, "backbone.conv1.weight").dims(), [64, 3, 7, 7]);
    }

    #[test]
    fn legacy_efficientnet_lite0() {
        let bytes = read(LITE0_PTH);
        let tensors = read_pth(&bytes).unwrap();
        assert_eq!(tensors.len(), 296);
        assert_eq!(find(&tensors, "_conv_stem.weight").dims(), [32, 3, 3, 3]);
        assert_eq!(find(&tensors, "_fc.weight").dims(), [1000, 1280]);
        assert_eq!(find(&tensors, "_fc.bias").dims(), [1000]);
        assert_eq!(
            find(&tensors, "_blocks.15._project_conv.weight").dims(),
            [320, 1152, 1, 1]
        );
        assert_eq!(
            find(&tensors, "_blocks.0._depthwise_conv.weight").dims(),
            [32, 1, 3, 3]
        );
        let nbt = find(&tensors, "_bn0.num_batches_tracked");
        assert_eq!((nbt.dtype(), nbt.rank()), (DType::I64, 0));
        for (name, t) in &tensors {
            if name.ends_with("num_batches_tracked") {
                assert_eq!(t.dtype(), DType::I64, "{name}");
                continue;
            }
            assert_eq!(t.dtype(), DType::F32, "{name}");
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{name} has non-finite values"
            );
        }

        // Which tensors are stored non-contiguously: every convolution weight (in TF's HWIO
        // order, strides (1, O, W*I*O, I*O)) and the transposed classifier weight.
        let loaded = load_legacy(&bytes).unwrap();
        let strided: Vec<&str> = loaded
            .tensors
            .iter()
            .filter(|(_, t)| !is_contiguous(&t.size, &t.stride))
            .map(|(n, _)| n.as_str())
            .collect();
        eprintln!("{} non-contiguous tensors: {strided:?}", strided.len());
        let is_weight_of_conv_or_fc = |n: &str| {
            n == "_fc.weight"
                || n == "_conv_stem.weight"
                || n == "_conv_head.weight"
                || n.ends_with("_conv.weight")
        };
        assert_eq!(strided.len(), 50);
        assert!(strided.iter().all(|n| is_weight_of_conv_or_fc(n)));
        assert_eq!(
            tensors
                .iter()
                .filter(|(n, _)| is_weight_of_conv_or_fc(n))
                .count(),
            50
        );
        assert_eq!(loaded.tensors["_fc.weight"].stride, [1, 1000]);
        assert_eq!(loaded.tensors["_conv_stem.weight"].stride, [1, 32, 288, 96]);

        // Check each gathered tensor against candle's own permutation of the raw storage:
        // the storage is contiguous in stride order, so view it that way and permute back.
        for &name in &strided {
            let tref = &loaded.tensors[name];
            let raw = storage_bytes(tref, &loaded.storages).unwrap();
            let values = decode(raw, f32::from_le_bytes);
            let mut order: Vec<usize> = (0..tref.size.len()).collect();
            order.sort_by_key(|&d| (tref.size[d] != 1, std::cmp::Reverse(tref.stride[d])));
            let shape: Vec<usize> = order.iter().map(|&d| tref.size[d]).collect();
            let stride: Vec<usize> = order.iter().map(|&d| tref.stride[d]).collect();
            assert!(
                is_contiguous(&shape, &stride),
                "{name}: strides are not a permutation"
            );
            let numel: usize = shape.iter().product();
            let window = &values[tref.offset..tref.offset + numel];
            let inverse: Vec<usize> = (0..order.len())
                .map(|d| order.iter().position(|&o| o == d).unwrap())
                .collect();
            let expected = Tensor::from_slice(window, shape, &Device::Cpu)
                .unwrap()
                .permute(inverse)
                .unwrap()
                .contiguous()
                .unwrap();
            let got = find(&tensors, name);
            assert_eq!(got.dims(), expected.dims(), "{name}");
            assert!(
                bits(got) == bits(&expected),
                "{name}: gathered values differ"
            );
            let naive = Tensor::from_slice(window, tref.size.as_slice(), &Device::Cpu).unwrap();
            assert!(
                bits(got) != bits(&naive),
                "{name}: gathering changed nothing"
            );
        }

        // And a manual index computation for the stem: element [o, i, y, x] sits at
        // o + 32 i + 288 y + 96 x of its storage.
        let stem = find(&tensors, "_conv_stem.weight");
        let raw = storage_bytes(&loaded.tensors["_conv_stem.weight"], &loaded.storages).unwrap();
        let storage = decode(raw, f32::from_le_bytes);
        for (o, i, y, x) in [
            (0, 0, 0, 0),
            (1, 0, 0, 0),
            (0, 1, 0, 0),
            (5, 2, 1, 2),
            (31, 2, 2, 2),
        ] {
            let v: f32 = stem.i((o, i, y, x)).unwrap().to_scalar().unwrap();
            assert_eq!(
                v.to_bits(),
                storage[o + 32 * i + 288 * y + 96 * x].to_bits()
            );
        }
        let fc = find(&tensors, "_fc.weight");
        let raw = storage_bytes(&loaded.tensors["_fc.weight"], &loaded.storages).unwrap();
        let storage = decode(raw, f32::from_le_bytes);
        for (r, c) in [(0, 0), (0, 1), (1, 0), (999, 1279), (123, 456)] {
            let v: f32 = fc.i((r, c)).unwrap().to_scalar().unwrap();
            assert_eq!(v.to_bits(), storage[r + 1000 * c].to_bits());
        }
    }

    /// Truncates `bytes` at 200 evenly spaced lengths (each must fail) and flips single bytes
    /// at random, taking turns between each group of `hot_spots` (the file's structure rather
    /// than its tensor data) and the whole file; each damaged file may be read or rejected.
    /// Calls the reader without its panic guard, so any panic fails the test.
    fn damage(bytes: &[u8], seed: u64, hot_spots: &[&[std::ops::Range<usize>]]) {
        let n = bytes.len();
        for i in 0..200 {
            let len = n * i / 200;
            assert!(
                read_pth_unguarded(&bytes[..len]).is_err(),
                "truncated to {len} bytes"
            );
        }
        let mut rng = XorShift(seed);
        let mut data = bytes.to_vec();
        let (mut ok, mut err) = (0, 0);
        for k in 0..120 {
            let pos = match hot_spots.get(k % (hot_spots.len() + 1)) {
                Some(group) if !group.is_empty() => {
                    let r = &group[rng.below(group.len())];
                    (r.start + rng.below(r.len())).min(n - 1)
                }
                _ => rng.below(n),
            };
            let old = data[pos];
            data[pos] ^= (rng.below(255) + 1) as u8;
            match read_pth_unguarded(&data) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
            data[pos] = old;
        }
        eprintln!("byte flips: {ok} read, {err} rejected");
    }

    #[test]
    fn damaged_zip_never_panics() {
        let bytes = read(RESNET_PTH);
        let n = bytes.len();
        // data.pkl comes first, the central directory last; then every local header.
        let mut archive = zip::ZipArchive::new(Cursor::new(&bytes[..])).unwrap();
        let headers: Vec<_> = (0..archive.len())
            .map(|i| {
                let start = archive.by_index(i).unwrap().header_start() as usize;
                start..start + 64
            })
            .collect();
        let (pickle, directory) = (0..16 << 10, n - (16 << 10)..n);
        let hot = [
            std::slice::from_ref(&pickle),
            std::slice::from_ref(&directory),
            &headers,
        ];
        damage(&bytes, 0x9e37_79b9_7f4a_7c15, &hot);
    }

    #[test]
    fn damaged_legacy_never_panics() {
        let bytes = read(LITE0_PTH);
        // The pickles come first (47176 bytes); then each storage's 8-byte element count.
        let loaded = load_legacy(&bytes).unwrap();
        let headers: Vec<_> = loaded
            .storages
            .values()
            .map(|data| {
                let start = data.as_ptr() as usize - bytes.as_ptr() as usize - 8;
                start..start + 8
            })
            .collect();
        let pickles = 0..47_176;
        let hot = [std::slice::from_ref(&pickles), &headers];
        damage(&bytes, 0x2545_f491_4f6c_dd1d, &hot);
    }

    #[test]
    fn random_bytes_are_rejected() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for round in 0..600 {
            let prefix: &[u8] = match round % 3 {
                0 => &[0x80],
                1 => &[0x80, 0x02],
                _ => b"PK\x03\x04",
            };
            let len = rng.below(4096);
            let mut data = prefix.to_vec();
            data.extend((0..len).map(|_| rng.next() as u8));
            assert!(read_pth_unguarded(&data).is_err(), "round {round}");
            assert!(read_pth(&data).is_err(), "round {round}");
        }
        assert!(read_pth(b"").is_err());
        assert!(read_pth(b"\x80").is_err());
        assert!(read_pth(b"PK\x03\x04").is_err());
    }

    // --- Hand-built files -------------------------------------------------------------------

    /// A tiny pickle writer.
    struct Pickle(Vec<u8>);

    impl Pickle {
        fn new() -> Self {
            Self(vec![0x80, 2])
        }

        fn op(mut self, op: u8) -> Self {
            self.0.push(op);
            self
        }

        fn str(mut self, s: &str) -> Self {
            self.0.push(b'X');
            self.0.extend((s.len() as u32).to_le_bytes());
            self.0.extend(s.as_bytes());
            self
        }

        fn int(mut self, v: i64) -> Self {
            if let Ok(v) = i32::try_from(v) {
                self.0.push(b'J');
                self.0.extend(v.to_le_bytes());
            } else {
                self.0.extend([0x8a, 8]);
                self.0.extend(v.to_le_bytes());
            }
            self
        }

        fn ints(self, v: &[i64]) -> Self {
            v.iter().fold(self.op(b'('), |p, &x| p.int(x)).op(b't')
        }

        fn global(mut self, module: &str, name: &str) -> Self {
            self.0.push(b'c');
            self.0.extend(format!("{module}\n{name}\n").as_bytes());
            self
        }

        fn empty_ordered_dict(self) -> Self {
            self.global("collections", "OrderedDict").op(b')').op(b'R')
        }

        /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
        fn tensor(self, storage: &Storage, offset: i64, size: &[i64], stride: &[i64]) -> Self {
            self.global("torch._utils", "_rebuild_tensor_v2")
                .tensor_args(storage, offset, size, stride)
                .op(b'R')
        }

        /// The argument tuple of `_rebuild_tensor_v2`.
        fn tensor_args(self, storage: &Storage, offset: i64, size: &[i64], stride: &[i64]) -> Self {
            let mut p = self
                .op(b'(')
                .op(b'(')
                .str("storage")
                .global("torch", storage.class)
                .str(storage.key)
                .str("cpu")
                .int(storage.numel);
            p = match storage.view {
                Some(None) => p.op(b'N'),
                Some(Some((key, offset, len))) => p.op(b'(').str(key).int(offset).int(len).op(b't'),
                None => p,
            };
            p.op(b't')
                .op(b'Q')
                .int(offset)
                .ints(size)
                .ints(stride)
                .op(0x89)
                .empty_ordered_dict()
                .op(b't')
        }

        fn stop(self) -> Vec<u8> {
            self.op(b'.').0
        }
    }

    /// A storage reference; `view`: `None` for zip files (5-field ids), `Some(view_metadata)`
    /// for legacy ones.
    struct Storage {
        class: &'static str,
        key: &'static str,
        numel: i64,
        view: Option<Option<(&'static str, i64, i64)>>,
    }

    fn legacy_storage(class: &'static str, key: &'static str, numel: i64) -> Storage {
        Storage {
            class,
            key,
            numel,
            view: Some(None),
        }
    }

    /// A legacy file around `main`, with the storages `(key, element count, bytes)`.
    fn legacy_file(main: Vec<u8>, storages: &[(&str, i64, Vec<u8>)]) -> Vec<u8> {
        let mut f = vec![0x80, 2, 0x8a, 10];
        f.extend(LEGACY_MAGIC);
        f.push(b'.');
        f.extend(Pickle::new().int(1001).stop());
        f.extend(
            Pickle::new()
                .op(b'}')
                .str("little_endian")
                .op(0x88)
                .op(b's')
                .stop(),
        );
        f.extend(main);
        let keys = storages
            .iter()
            .fold(Pickle::new().op(b']').op(b'('), |p, s| p.str(s.0));
        f.extend(keys.op(b'e').stop());
        for (_, numel, data) in storages {
            f.extend(numel.to_le_bytes());
            f.extend(data);
        }
        f
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// `{"epoch": 3, "state_dict": OrderedDict(tensors...)}` as a legacy file.
    fn checkpoint(entries: impl FnOnce(Pickle) -> Pickle) -> Vec<u8> {
        let main = Pickle::new()
            .op(b'}')
            .op(b'(')
            .str("epoch")
            .int(3)
            .str("state_dict")
            .empty_ordered_dict()
            .op(b'(');
        // Every storage is listed in the file, so some tensor must use each.
        let extra = [
            ("LongStorage", "1", 1),
            ("IntStorage", "2", 2),
            ("BoolStorage", "3", 3),
        ];
        let main = extra.iter().fold(
            entries(main).op(b'u').str("extra").op(b'}').op(b'('),
            |p, &(class, key, n)| {
                p.str(key)
                    .tensor(&legacy_storage(class, key, n), 0, &[n], &[1])
            },
        );
        let main = main
            .str("4")
            .tensor(&legacy_storage("HalfStorage", "4", 2), 0, &[2], &[1])
            .str("0")
            .tensor(&floats("0"), 0, &[6], &[1])
            .op(b'u')
            .op(b'u')
            .stop();
        legacy_file(
            main,
            &[
                ("0", 6, f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])),
                ("1", 1, 7i64.to_le_bytes().to_vec()),
                ("2", 2, [(-1i32).to_le_bytes(), 2i32.to_le_bytes()].concat()),
                ("3", 3, vec![0, 1, 2]),
                (
                    "4",
                    2,
                    [
                        half::f16::from_f32(1.0).to_le_bytes(),
                        half::f16::from_f32(-2.0).to_le_bytes(),
                    ]
                    .concat(),
                ),
            ],
        )
    }

    fn floats(storage: &'static str) -> Storage {
        legacy_storage("FloatStorage", storage, 6)
    }

    #[test]
    fn legacy_hand_built_checkpoint() {
        let view = Storage {
            view: Some(Some(("v", 2, 3))),
            ..floats("0")
        };
        let file = checkpoint(|p| {
            p.str("scalar")
                .tensor(&legacy_storage("LongStorage", "1", 1), 0, &[], &[])
                .str("empty")
                .tensor(&floats("0"), 0, &[0, 3], &[3, 1])
                .str("t")
                .tensor(&floats("0"), 0, &[3, 2], &[1, 3])
                .str("view")
                .tensor(&view, 1, &[2], &[1])
                .str("ints")
                .tensor(&legacy_storage("IntStorage", "2", 2), 0, &[2], &[1])
                .str("mask")
                .tensor(&legacy_storage("BoolStorage", "3", 3), 0, &[3], &[1])
                .str("half")
                .tensor(&legacy_storage("HalfStorage", "4", 2), 0, &[2], &[1])
                .str("param")
                .global("torch._utils", "_rebuild_parameter")
                .op(b'(')
                .tensor(&floats("0"), 1, &[2], &[2])
                .op(0x88)
                .empty_ordered_dict()
                .op(b't')
                .op(b'R')
                .str("broadcast")
                .tensor(&floats("0"), 3, &[2, 3], &[0, 1])
        });
        let got = read_pth(&file).unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "broadcast",
                "empty",
                "half",
                "ints",
                "mask",
                "param",
                "scalar",
                "t",
                "view"
            ]
        );
        let scalar = find(&got, "scalar");
        assert_eq!((scalar.rank(), scalar.dtype()), (0, DType::I64));
        assert_eq!(scalar.to_scalar::<i64>().unwrap(), 7);
        let empty = find(&got, "empty");
        assert_eq!(
            (empty.dims(), empty.dtype()),
            (&[0usize, 3][..], DType::F32)
        );
        let t = find(&got, "t");
        assert_eq!(
            t.to_vec2::<f32>().unwrap(),
            [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
        );
        assert_eq!(find(&got, "view").to_vec1::<f32>().unwrap(), [3.0, 4.0]);
        assert_eq!(find(&got, "ints").to_vec1::<i64>().unwrap(), [-1, 2]);
        assert_eq!(find(&got, "mask").to_vec1::<u8>().unwrap(), [0, 1, 1]);
        let half = find(&got, "half");
        assert_eq!(half.dtype(), DType::F16);
        assert_eq!(
            half.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(),
            [1.0, -2.0]
        );
        assert_eq!(find(&got, "param").to_vec1::<f32>().unwrap(), [1.0, 3.0]);
        assert_eq!(
            find(&got, "broadcast").to_vec2::<f32>().unwrap(),
            [[3.0, 4.0, 5.0], [3.0, 4.0, 5.0]]
        );
    }

    fn expect_err(file: &[u8], needle: &str) {
        let err = read_pth_unguarded(file).expect_err("should fail");
        assert!(err.contains(needle), "error {err:?} lacks {needle:?}");
    }

    #[test]
    fn legacy_hand_built_errors() {
        // Strides reaching past the storage.
        let file = checkpoint(|p| p.str("bad").tensor(&floats("0"), 0, &[4], &[2]));
        expect_err(&file, "need element 6 of a storage of 6");
        let file = checkpoint(|p| p.str("bad").tensor(&floats("0"), 6, &[], &[]));
        expect_err(&file, "need element 6 of a storage of 6");
        // Index arithmetic overflowing usize.
        let file = checkpoint(|p| {
            p.str("bad")
                .tensor(&floats("0"), 0, &[5, 2], &[1 << 62, 1 << 62])
        });
        expect_err(&file, "overflows");
        // A huge stride-0 expansion of a tiny storage: refused, not allocated.
        let file = checkpoint(|p| p.str("bad").tensor(&floats("0"), 0, &[1 << 40], &[0]));
        expect_err(&file, "more than this file can plausibly hold");
        // Negative sizes, size/stride rank mismatch, views outside their root.
        let file = checkpoint(|p| p.str("bad").tensor(&floats("0"), 0, &[-1], &[1]));
        expect_err(&file, "negative");
        let file = checkpoint(|p| p.str("bad").tensor(&floats("0"), 0, &[2], &[1, 1]));
        expect_err(&file, "dims");
        let view = Storage {
            view: Some(Some(("v", 4, 3))),
            ..floats("0")
        };
        let file = checkpoint(|p| p.str("bad").tensor(&view, 0, &[1], &[1]));
        expect_err(&file, "exceeds storage");
        // A storage whose data is cut short, or whose count disagrees with the pickle.
        let main = Pickle::new()
            .op(b'}')
            .str("w")
            .tensor(&floats("0"), 0, &[6], &[1])
            .op(b's')
            .stop();
        let file = legacy_file(main.clone(), &[("0", 6, vec![0; 8])]);
        expect_err(
            &file,
            "truncated legacy .pth: storage 0 needs 24 bytes, 8 left",
        );
        let file = legacy_file(main.clone(), &[("0", 5, vec![0; 24])]);
        expect_err(&file, "holds 5 elements, 6 declared");
        // A declared size of 2^60 elements: checked against the input, never allocated.
        let huge = legacy_storage("FloatStorage", "0", 1 << 60);
        let main_huge = Pickle::new()
            .op(b'}')
            .str("w")
            .tensor(&huge, 0, &[6], &[1])
            .op(b's')
            .stop();
        let file = legacy_file(main_huge, &[("0", 1 << 60, vec![0; 24])]);
        expect_err(&file, "truncated legacy .pth: storage 0 needs");
        // Unknown element types, unknown storage keys, missing tensors.
        let odd = legacy_storage("ComplexFloatStorage", "0", 6);
        let main_odd = Pickle::new()
            .op(b'}')
            .str("w")
            .tensor(&odd, 0, &[6], &[1])
            .op(b's')
            .stop();
        expect_err(
            &legacy_file(main_odd, &[]),
            "unsupported storage type torch.ComplexFloatStorage",
        );
        let file = legacy_file(main.clone(), &[("0", 6, vec![0; 24]), ("9", 1, vec![0; 4])]);
        expect_err(&file, "lists storage 9, which nothing uses");
        let empty = Pickle::new().op(b'}').str("epoch").int(1).op(b's').stop();
        expect_err(
            &legacy_file(empty, &[]),
            "no tensors found (top-level keys: epoch)",
        );
        // Quantized tensors are reported, not dropped.
        let q = Pickle::new()
            .op(b'}')
            .str("w")
            .global("torch._utils", "_rebuild_qtensor")
            .op(b')')
            .op(b'R')
            .op(b's')
            .stop();
        expect_err(&legacy_file(q, &[]), "torch._utils._rebuild_qtensor");
        // The whole file is fine otherwise.
        assert_eq!(
            read_pth(&legacy_file(main, &[("0", 6, vec![0; 24])]))
                .unwrap()
                .len(),
            1
        );
    }

    /// A zip-format file with `entries` in directory `dir`.
    fn zip_file(dir: &str, entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in entries {
            w.start_file(format!("{dir}/{name}"), opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn zip_hand_built_checkpoint() {
        let f = |key: &'static str, class: &'static str, numel: i64| Storage {
            class,
            key,
            numel,
            view: None,
        };
        // {"model": {"w": _rebuild_from_type_v2(_rebuild_tensor_v2, Parameter, (...), {}),
        //            "u": bytes of an UntypedStorage}, "step": 10}
        let pkl = Pickle::new()
            .op(b'}')
            .op(b'(')
            .str("step")
            .int(10)
            .str("model")
            .op(b'}')
            .op(b'(')
            .str("w")
            .global("torch._tensor", "_rebuild_from_type_v2")
            .op(b'(')
            .global("torch._utils", "_rebuild_tensor_v2")
            .global("torch.nn.parameter", "Parameter")
            .tensor_args(&f("0", "FloatStorage", 4), 0, &[2, 2], &[1, 2])
            .op(b'}') // state
            .op(b't') // (func, type, args, state)
            .op(b'R');
        let pkl = pkl
            .str("u")
            .tensor(&f("1", "UntypedStorage", 3), 0, &[3], &[1])
            .op(b'u')
            .op(b'u')
            .stop();
        let file = zip_file(
            "archive",
            &[
                ("data.pkl", pkl.clone()),
                ("byteorder", b"little".to_vec()),
                ("data/0", f32_bytes(&[1.0, 2.0, 3.0, 4.0])),
                ("data/1", vec![7, 8, 9]),
            ],
        );
        let got = read_pth(&file).unwrap();
        assert_eq!(
            find(&got, "w").to_vec2::<f32>().unwrap(),
            [[1.0, 3.0], [2.0, 4.0]]
        );
        assert_eq!(find(&got, "u").to_vec1::<u8>().unwrap(), [7, 8, 9]);

        let short = zip_file(
            "x",
            &[
                ("data.pkl", pkl.clone()),
                ("data/0", vec![0; 15]),
                ("data/1", vec![0; 3]),
            ],
        );
        expect_err(&short, "zip entry x/data/0 holds 15 bytes, 16 needed");
        let missing = zip_file("x", &[("data.pkl", pkl.clone()), ("data/0", vec![0; 16])]);
        expect_err(&missing, "x/data/1");
        let big = zip_file("x", &[("data.pkl", pkl), ("byteorder", b"big".to_vec())]);
        expect_err(&big, "only little-endian");
        let no_pickle = zip_file("x", &[("data/0", vec![0; 16])]);
        expect_err(&no_pickle, "no <dir>/data.pkl");
    }

    #[test]
    fn hostile_pickles_fail_cleanly() {
        let prefix = |main: Vec<u8>| legacy_file(main, &[]);
        // A million nested tuples / lists: built and dropped without recursion.
        let mut deep = vec![0x80, 2, b'N'];
        deep.extend(std::iter::repeat_n(0x85, 1_000_000));
        deep.push(b'.');
        expect_err(&deep, "magic number");
        let mut lists = vec![0x80, 2];
        lists.extend(std::iter::repeat_n(b']', 1_000_000));
        lists.extend(std::iter::repeat_n(b'a', 999_999));
        lists.push(b'.');
        expect_err(&prefix(lists), "no tensors found");
        // Nested lists built through the memo after insertion.
        let mut memo = Pickle::new().op(b']').op(0x94).0;
        for i in 0..100_000u32 {
            memo.push(b'j');
            memo.extend(i.to_le_bytes());
            memo.extend([b']', 0x94, b'a']);
        }
        memo.push(b'.');
        expect_err(&prefix(memo), "no tensors found");
        // A list containing itself.
        expect_err(
            &prefix(vec![0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'.']),
            "no tensors found",
        );
        // Lengths far beyond the input.
        let mut long = vec![0x80, 2, 0x8d];
        long.extend(u64::MAX.to_le_bytes());
        expect_err(&prefix(long), "truncated");
        expect_err(
            &prefix(vec![0x80, 2, b'X', 0xff, 0xff, 0xff, 0xff, b'.']),
            "truncated",
        );
        expect_err(
            &prefix(vec![0x80, 2, 0x8b, 0xff, 0xff, 0xff, 0xff, b'.']),
            "negative",
        );
        // Stack and memo misuse.
        expect_err(&prefix(vec![0x80, 2, b'.']), "underflow");
        expect_err(&prefix(vec![0x80, 2, b'(', b'a', b'.']), "underflow");
        expect_err(
            &prefix(vec![0x80, 2, b'h', 9, b'.']),
            "memo entry 9 missing",
        );
        expect_err(&prefix(vec![0x80, 2, b'}', b'K', 1, b'u', b'.']), "no MARK");
        expect_err(&prefix(vec![0x80, 9, b'.']), "protocol 9");
        expect_err(
            &prefix(vec![0x80, 2, 0x82, b'.']),
            "unsupported pickle opcode 0x82",
        );
        // Tensor rebuilds wrapping each other without end.
        let mut nest = Pickle::new().global("torch._tensor", "_rebuild_from_type_v2");
        for _ in 0..100 {
            nest = nest
                .op(b'(')
                .global("torch._tensor", "_rebuild_from_type_v2")
                .op(b'N');
        }
        nest = nest.op(b')');
        for _ in 0..100 {
            nest = nest.op(b'N').op(b't');
        }
        expect_err(&prefix(nest.op(b'R').stop()), "nested too deeply");
        // Not a torch file at all.
        expect_err(&Pickle::new().op(b'}').stop(), "magic number");
        expect_err(
            b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.",
            "protocol version missing",
        );
    }
}
