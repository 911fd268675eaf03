//! Materialising tensors: strided, bounds-checked gathers from their storages.

use super::*;

// ---------------------------------------------------------------------------------------------
// Materialising tensors
// ---------------------------------------------------------------------------------------------

/// Caps the bytes the reader allocates for storages and tensors: `8 × file length + 64 MiB`.
/// A well-formed file needs about its own size; only decompression, tied weights or
/// overlapping strides can need more.
pub(super) struct Budget {
    pub(super) left: u64,
}

impl Budget {
    pub(super) fn for_input(len: usize) -> Self {
        Self {
            left: (len as u64).saturating_mul(8).saturating_add(64 << 20),
        }
    }

    pub(super) fn spend(&mut self, n: u64, what: &str) -> Res<()> {
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
pub(super) struct Loaded<'a> {
    pub(super) tensors: BTreeMap<String, Rc<TensorRef>>,
    pub(super) storages: HashMap<Rc<str>, Cow<'a, [u8]>>,
    pub(super) budget: Budget,
}

impl Loaded<'_> {
    /// Builds every tensor, sorted by name.
    pub(super) fn materialise(mut self) -> Res<Vec<(String, Tensor)>> {
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
pub(super) fn storage_bytes<'s>(
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

pub(super) fn build_tensor(
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
pub(super) struct Plan {
    pub(super) offset: usize,
    pub(super) size: Vec<usize>,
    /// Strides, zero for dimensions of size 1 (which never move the index), so that no index
    /// computation can overflow.
    pub(super) stride: Vec<usize>,
    pub(super) numel: usize,
    pub(super) contiguous: bool,
}

impl Plan {
    /// Checks the view against a storage of `available` elements.
    pub(super) fn new(
        available: usize,
        offset: usize,
        size: &[usize],
        stride: &[usize],
    ) -> Res<Self> {
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
    pub(super) fn gather<const N: usize, T>(
        &self,
        storage: &[u8],
        f: impl Fn([u8; N]) -> T,
    ) -> Res<Vec<T>> {
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
pub(super) fn decode<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
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
pub(super) fn to_candle(kind: Kind, storage: &[u8], plan: &Plan, shape: Vec<usize>) -> Res<Tensor> {
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
