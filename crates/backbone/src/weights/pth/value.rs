//! Element types, storages and the values on the pickle stack.

use super::*;

// ---------------------------------------------------------------------------------------------
// Element types and storages
// ---------------------------------------------------------------------------------------------

/// Element type of a torch storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
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
    pub(super) fn from_class(module: &str, name: &str) -> Res<Self> {
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
    pub(super) fn size(self) -> usize {
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
pub(super) struct StorageRef {
    pub(super) kind: Kind,
    pub(super) root: Rc<str>,
    pub(super) root_numel: usize,
    pub(super) offset: usize,
    pub(super) len: usize,
}

/// A tensor as described by `_rebuild_tensor_v2`: not yet read from its storage.
#[derive(Debug)]
pub(super) struct TensorRef {
    pub(super) storage: Rc<StorageRef>,
    pub(super) offset: usize,
    pub(super) size: Vec<usize>,
    pub(super) stride: Vec<usize>,
}

// ---------------------------------------------------------------------------------------------
// Pickle values
// ---------------------------------------------------------------------------------------------

/// A module-level Python name (`GLOBAL` / `STACK_GLOBAL`).
#[derive(Debug)]
pub(super) struct Global {
    pub(super) module: String,
    pub(super) name: String,
}

/// The items of a tuple, list, dict (flattened key/value pairs) or opaque object.
///
/// Its `Drop` is iterative, so that dropping a value nested millions of levels deep (which a
/// hostile pickle can build with one byte per level) cannot overflow the stack.
#[derive(Debug, Default)]
pub(super) struct Seq(pub(super) Vec<Value>);

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
pub(super) enum Value {
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
    pub(super) fn tuple(items: Vec<Value>) -> Self {
        Value::Tuple(Rc::new(Seq(items)))
    }

    pub(super) fn list(items: Vec<Value>) -> Self {
        Value::List(Rc::new(RefCell::new(Seq(items))))
    }

    pub(super) fn dict(pairs: Vec<Value>) -> Self {
        Value::Dict(Rc::new(RefCell::new(Seq(pairs))))
    }

    pub(super) fn object(callable: Value, args: Value) -> Self {
        Value::Object(Rc::new(Seq(vec![callable, args])))
    }

    /// A Python-ish name of the value's type, for error messages.
    pub(super) fn type_name(&self) -> &'static str {
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
    pub(super) fn text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The items of a tuple.
    pub(super) fn tuple_items(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(t) => Some(&t.0),
            _ => None,
        }
    }

    /// A non-negative int as `usize`.
    pub(super) fn to_usize(&self, what: &str) -> Res<usize> {
        match self {
            Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} {i} is negative")),
            other => Err(format!("{what} is a {}, not an int", other.type_name())),
        }
    }

    /// A tuple of non-negative ints.
    pub(super) fn to_usizes(&self, what: &str) -> Res<Vec<usize>> {
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
    pub(super) fn unsupported_rebuild(&self) -> Option<String> {
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
pub(super) fn dict_get(dict: &RefCell<Seq>, key: &str) -> Option<Value> {
    let pairs = dict.borrow();
    pairs
        .0
        .chunks_exact(2)
        .rev()
        .find(|pair| pair.first().and_then(Value::text) == Some(key))
        .and_then(|pair| pair.get(1).cloned())
}
