//! A deterministic safetensors writer.
//!
//! The `safetensors` crate serialises `__metadata__` from a `HashMap`, so two writes of the same
//! data can differ byte for byte. Caches and heads must be byte-identical across runs, so this
//! writer emits the header with sorted keys; the files are ordinary safetensors files that any
//! reader (Python `safetensors`, candle) opens.

use std::collections::BTreeMap;

use crate::Error;
use serde_json::{json, Map, Value};

/// Borrowed tensor data of one of the dtypes headstart writes.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// 16-bit floats.
    F16(&'a [half::f16]),
    /// 64-bit signed integers.
    I64(&'a [i64]),
    /// Bytes / booleans.
    U8(&'a [u8]),
}

impl Data<'_> {
    fn dtype(&self) -> &'static str {
        match self {
            Data::F32(_) => "F32",
            Data::F16(_) => "F16",
            Data::I64(_) => "I64",
            Data::U8(_) => "U8",
        }
    }

    fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F16(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::U8(v) => v.len(),
        }
    }

    fn write_le(&self, out: &mut Vec<u8>) {
        match self {
            Data::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::F16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::U8(v) => out.extend_from_slice(v),
        }
    }

    fn byte_len(&self) -> usize {
        self.len()
            * match self {
                Data::F32(_) => 4,
                Data::F16(_) => 2,
                Data::I64(_) => 8,
                Data::U8(_) => 1,
            }
    }
}

/// One named tensor to write.
#[derive(Debug, Clone)]
pub struct NamedTensor<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Shape; its product must equal the data length.
    pub shape: Vec<usize>,
    /// The values.
    pub data: Data<'a>,
}

/// Serialises tensors (written in the given order) and string metadata into safetensors bytes.
///
/// Panics never; [`Error::TensorShape`] if a shape does not match its data.
pub fn serialize(
    tensors: &[NamedTensor<'_>],
    metadata: &BTreeMap<String, String>,
) -> crate::Result<Vec<u8>> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0usize;
    for t in tensors {
        let n: usize = t.shape.iter().product();
        if n != t.data.len() {
            return Err(Error::TensorShape {
                name: t.name.to_string(),
                shape: t.shape.clone(),
                expected: n,
                found: t.data.len(),
            });
        }
        let end = offset + t.data.byte_len();
        header.insert(
            t.name.to_string(),
            json!({"dtype": t.data.dtype(), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header_bytes =
        serde_json::to_vec(&Value::Object(header)).expect("a JSON map of strings and numbers");
    while !header_bytes.len().is_multiple_of(8) {
        header_bytes.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header_bytes.len() + offset);
    out.extend_from_slice(&(header_bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&header_bytes);
    for t in tensors {
        t.data.write_le(&mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_by_the_safetensors_crate_and_deterministic() {
        let f = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let l = [7i64, 8];
        let mut meta = BTreeMap::new();
        for k in ["z", "a", "m", "format_version"] {
            meta.insert(k.to_string(), format!("value of {k}"));
        }
        let tensors = [
            NamedTensor {
                name: "features",
                shape: vec![2, 3],
                data: Data::F32(&f),
            },
            NamedTensor {
                name: "label",
                shape: vec![2],
                data: Data::I64(&l),
            },
        ];
        let a = serialize(&tensors, &meta).unwrap();
        let b = serialize(&tensors, &meta).unwrap();
        assert_eq!(a, b);
        let st = safetensors::SafeTensors::deserialize(&a).unwrap();
        let feat = st.tensor("features").unwrap();
        assert_eq!(feat.shape(), &[2, 3]);
        assert_eq!(
            feat.data(),
            &f.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()[..]
        );
        assert_eq!(
            st.tensor("label").unwrap().data(),
            &l.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()[..]
        );
        let (_, md) = safetensors::SafeTensors::read_metadata(&a).unwrap();
        assert_eq!(md.metadata().as_ref().unwrap()["z"], "value of z");
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let f = [1.0f32];
        let t = [NamedTensor {
            name: "x",
            shape: vec![2],
            data: Data::F32(&f),
        }];
        assert!(serialize(&t, &BTreeMap::new())
            .unwrap_err()
            .to_string()
            .contains("x"));
    }
}
