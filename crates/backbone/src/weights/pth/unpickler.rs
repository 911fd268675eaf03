//! The pickle virtual machine and the torch rebuild functions it applies.

use super::*;

// ---------------------------------------------------------------------------------------------
// The pickle virtual machine
// ---------------------------------------------------------------------------------------------

/// A pickle virtual machine for the opcodes `torch.save` uses.
///
/// Persistent ids (`BINPERSID`) must be torch storage tuples
/// `('storage', storage_class, root_key, location, numel[, view_metadata])`; they become
/// [`Value::Storage`] and every root storage is recorded in `roots`.
pub(super) struct Unpickler<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) stack: Vec<Value>,
    /// Stack lengths at each open `MARK`.
    pub(super) marks: Vec<usize>,
    pub(super) memo: HashMap<u64, Value>,
    /// Root storages: key → (element type, element count), first declaration wins (as in torch).
    pub(super) roots: HashMap<Rc<str>, (Kind, usize)>,
    /// Storage views of the legacy format, by view key.
    pub(super) views: HashMap<Rc<str>, Rc<StorageRef>>,
}

impl<'a> Unpickler<'a> {
    /// A machine reading the pickle that starts at `data[pos..]`.
    pub(super) fn new(data: &'a [u8], pos: usize) -> Self {
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
    pub(super) fn load(&mut self) -> Res<Value> {
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        let start = self.pos;
        self.run()
            .map_err(|e| format!("bad pickle at byte {}: {e}", self.pos.saturating_sub(start)))
    }

    pub(super) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    pub(super) fn take(&mut self, n: usize) -> Res<&'a [u8]> {
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

    pub(super) fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(super) fn u8(&mut self) -> Res<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn i32(&mut self) -> Res<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Res<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length field of any width, checked against the remaining input.
    pub(super) fn len_field(&mut self, n: u64) -> Res<usize> {
        let left = self.remaining();
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| format!("truncated: length {n} but {left} bytes left"))
    }

    /// A protocol-0 text line (without its `\n`).
    pub(super) fn line(&mut self) -> Res<&'a str> {
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
    pub(super) fn string_or_bytes(b: &[u8]) -> Value {
        match std::str::from_utf8(b) {
            Ok(s) => Value::Str(Rc::from(s)),
            Err(_) => Value::Bytes(Rc::from(b)),
        }
    }

    pub(super) fn unicode(b: &[u8]) -> Res<Value> {
        std::str::from_utf8(b)
            .map(|s| Value::Str(Rc::from(s)))
            .map_err(|_| "string is not UTF-8".to_string())
    }

    /// Decodes a `LONG1`/`LONG4` payload (little-endian two's complement).
    pub(super) fn long(b: &[u8]) -> Value {
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

    pub(super) fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    pub(super) fn push(&mut self, v: Value) -> Res<()> {
        if self.stack.len() >= MAX_STACK {
            return Err("pickle stack too deep".to_string());
        }
        self.stack.push(v);
        Ok(())
    }

    pub(super) fn pop(&mut self) -> Res<Value> {
        if self.stack.len() <= self.fence() {
            return Err("stack underflow".to_string());
        }
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }

    pub(super) fn top(&self) -> Res<&Value> {
        if self.stack.len() <= self.fence() {
            return Err("stack underflow".to_string());
        }
        self.stack
            .last()
            .ok_or_else(|| "stack underflow".to_string())
    }

    pub(super) fn pop_n(&mut self, n: usize) -> Res<Vec<Value>> {
        let fence = self.fence();
        if self.stack.len() < fence + n {
            return Err("stack underflow".to_string());
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    /// Pops everything above the last `MARK`, and the mark.
    pub(super) fn pop_mark(&mut self) -> Res<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| "no MARK on the stack".to_string())?;
        if mark > self.stack.len() {
            return Err("MARK above the stack".to_string());
        }
        Ok(self.stack.split_off(mark))
    }

    pub(super) fn memo_put(&mut self, index: u64) -> Res<()> {
        if self.memo.len() >= MAX_MEMO {
            return Err("pickle memo too large".to_string());
        }
        let v = self.top()?.clone();
        self.memo.insert(index, v);
        Ok(())
    }

    pub(super) fn memo_get(&mut self, index: u64) -> Res<()> {
        let v = self
            .memo
            .get(&index)
            .cloned()
            .ok_or_else(|| format!("memo entry {index} missing"))?;
        self.push(v)
    }

    /// `APPEND`/`APPENDS`/`ADDITEMS`: extends the list on top of the stack.
    pub(super) fn extend_top(&mut self, items: Vec<Value>) -> Res<()> {
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
    pub(super) fn set_items_top(&mut self, pairs: Vec<Value>) -> Res<()> {
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

    pub(super) fn run(&mut self) -> Res<Value> {
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
    pub(super) fn persistent_load(&mut self, pid: &Value) -> Res<Value> {
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
pub(super) fn reduce(callable: Value, args: Value, depth: u32) -> Res<Value> {
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
pub(super) fn rebuild_tensor(args: &Value) -> Res<Value> {
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
