//! The two file layouts: the zip archive (torch ≥ 1.6) and the legacy concatenated pickles.

use super::*;

// ---------------------------------------------------------------------------------------------
// Zip format
// ---------------------------------------------------------------------------------------------

/// Reads a zip entry (checked against its CRC) and returns its first `want` bytes, or all of
/// it when `want` is `None`, refusing sizes the archive cannot hold.
pub(super) fn read_entry<R: Read + Seek>(
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
pub(super) fn is_data_pkl(name: &str) -> bool {
    name == "data.pkl"
        || name
            .strip_suffix("/data.pkl")
            .is_some_and(|dir| !dir.is_empty() && !dir.contains('/'))
}

/// Parses a zip-format `.pth`: `<dir>/data.pkl` and the storages `<dir>/data/<key>`.
pub(super) fn load_zip(bytes: &[u8]) -> Res<Loaded<'static>> {
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
pub(super) fn load_legacy<'a>(bytes: &'a [u8]) -> Res<Loaded<'a>> {
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
