//! Tests of the `.pth` readers.
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
    let want =
        candle_core::safetensors::load(headstart_testkit::shared(RESNET_SAFETENSORS), &Device::Cpu)
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
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
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
