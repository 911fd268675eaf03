//! Choosing the state dict among a checkpoint's values.

use super::*;

// ---------------------------------------------------------------------------------------------
// Choosing the state dict
// ---------------------------------------------------------------------------------------------

pub(super) fn holds_tensor(v: &Value) -> bool {
    matches!(v, Value::Tensor(_)) || v.unsupported_rebuild().is_some()
}

/// The dict holding the tensors: the top-level one, or one nested under [`STATE_DICT_KEYS`].
pub(super) fn find_state_dict(v: &Value, depth: usize) -> Option<Rc<RefCell<Seq>>> {
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
pub(super) fn select_tensors(root: &Value) -> Res<BTreeMap<String, Rc<TensorRef>>> {
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
