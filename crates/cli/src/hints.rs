//! What to do next, for the library errors that have a command-line fix: the libraries say what
//! is wrong in their own terms; the binary, which knows its flags, adds the `fix:` line.

use std::path::Path;

/// The fix for `e`, if one of the known library errors is inside it.
pub fn fix_for(e: &anyhow::Error) -> Option<String> {
    if let Some(e) = e.downcast_ref::<headstart_backbone::Error>() {
        return backbone(e);
    }
    if let Some(e) = e.downcast_ref::<headstart_cache::Error>() {
        return cache(e);
    }
    if let Some(e) = e.downcast_ref::<headstart_extract::Error>() {
        return extract(e);
    }
    if let Some(e) = e.downcast_ref::<headstart_head::Error>() {
        return head(e);
    }
    if let Some(e) = e.downcast_ref::<headstart_predict::Error>() {
        return predict(e);
    }
    None
}

/// A parameter's command-line spelling: `batch_size` → `--batch-size`.
pub fn flag(param: &str) -> String {
    format!("--{}", param.replace('_', "-"))
}

fn backbone(e: &headstart_backbone::Error) -> Option<String> {
    use headstart_backbone::Error as E;
    match e {
        E::MissingTensor(_) => Some(
            "if the tensor names carry an unusual prefix, pass --weights-prefix PREFIX; otherwise pass --backbone for the architecture these weights are for".into(),
        ),
        E::WeightsNotFound { backbone, .. } => {
            let cfg = headstart_backbone::Architecture::from_name(backbone)
                .ok()
                .map(|a| a.config());
            match cfg {
                Some(c) if c.hub_repo.is_none() => Some(format!(
                    "pass --weights PATH: {backbone} has no Hugging Face download; its ImageNet weights are the efficientnet_pytorch checkpoint {} (or put that file in $TORCH_HOME/hub/checkpoints/, where it is found without --weights)",
                    c.torch_hub_file.as_deref().unwrap_or("file")
                )),
                _ => Some(format!(
                    "pass --weights PATH (a .safetensors or .pth file), or on a connected machine run `headstart weights --backbone {backbone}` once to download them into the Hugging Face cache"
                )),
            }
        }
        E::TooLarge { .. } => Some("raise --max-megapixels to accept it".into()),
        E::Cuda(headstart_backbone::device::CudaProblem::NotCompiled) => Some(
            "build the CUDA one with `just build-cuda` (or `cargo build --release --features cuda` where a CUDA 13 toolkit is installed), or run with --device cpu".into(),
        ),
        E::Cuda(_) => Some("run with --device cpu (or --device auto), or see `headstart devices`".into()),
        _ => None,
    }
}

fn cache(e: &headstart_cache::Error) -> Option<String> {
    use headstart_cache::Error as E;
    match e {
        E::ConfigMismatch { path, .. }
            if path.file_name().is_some_and(|n| n == headstart_cache::partition::PARTITION_FILE) =>
        {
            Some(format!(
                "run every part with the settings the first part recorded in {} (or start over: delete {} with all its parts, or use another --cache directory)",
                path.display(),
                path.parent().unwrap_or(Path::new(".")).display()
            ))
        }
        E::ConfigMismatch { path, .. }
            if path
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n == headstart_cache::partition::PARTS_DIR) =>
        {
            Some(format!(
                "rerun that part with the partition's settings (delete {} first), then merge again",
                path.display()
            ))
        }
        E::ConfigMismatch { .. } => Some(
            "use another --cache directory, or pass --force to discard this cache and start over"
                .into(),
        ),
        E::Manifest { path, .. }
            if path.file_name().is_some_and(|n| n == headstart_cache::partition::PARTITION_FILE) =>
        {
            Some(format!(
                "{} records what every part shares; to start the partitioned run over, delete {} (with its parts/) and run the parts again",
                path.display(),
                path.parent().unwrap_or(Path::new(".")).display()
            ))
        }
        E::Manifest { path, .. } => {
            // An unreadable manifest or journal commit: say what `--force` would discard, so
            // the user can choose.
            let dir = path.parent().unwrap_or(Path::new("."));
            let dir = if dir.file_name().is_some_and(|n| n == headstart_cache::journal::JOURNAL_DIR) {
                dir.parent().unwrap_or(Path::new("."))
            } else {
                dir
            };
            let shards = std::fs::read_dir(dir).map_or(0, |rd| {
                rd.flatten()
                    .filter(|f| f.file_name().to_string_lossy().ends_with(".safetensors"))
                    .count()
            });
            Some(format!(
                "rerun extract with --force to discard this cache and start from scratch (it deletes {}/manifest.json, its journal/ and {shards} shard file(s)), or pass another --cache folder",
                dir.display()
            ))
        }
        E::Unfinished {
            path,
            part: Some((cache, part)),
            ..
        } => Some(format!(
            "rerun `headstart extract DATA_DIR --cache {} --part {part}` with the same settings ({} is that part's folder)",
            cache.display(),
            path.display()
        )),
        E::Unfinished { path, .. } => Some(format!(
            "rerun `headstart extract DATA_DIR --cache {}` with the same settings",
            path.display()
        )),
        E::Partitioned {
            path,
            parts,
            unfinished,
            missing,
            ..
        } => {
            let todo: Vec<String> = unfinished
                .iter()
                .chain(missing)
                .map(|i| i.to_string())
                .collect();
            Some(if todo.is_empty() {
                format!("run `headstart cache merge {}`", path.display())
            } else {
                format!(
                    "run `headstart extract DATA_DIR --cache {p} --part I/{parts}` for I in {} (same settings as the other parts), then `headstart cache merge {p}`",
                    todo.join(", "),
                    p = path.display()
                )
            })
        }
        E::Partition { path, .. } => {
            if let Some((cache, part)) = headstart_cache::Part::of_dir(path) {
                return Some(format!(
                    "extract that part with `--cache {} --part {part}`",
                    cache.display()
                ));
            }
            Some(match headstart_cache::PartitionRecord::read(path) {
                Ok(Some(r)) => format!(
                    "run the parts with `headstart extract DATA_DIR --cache {p} --part I/{n}` for I = 0…{} (`--part auto/{n}` in a Slurm array), then `headstart cache merge {p}`; a whole-dataset run needs a directory of its own",
                    r.parts - 1,
                    p = path.display(),
                    n = r.parts
                ),
                _ => format!(
                    "partitioned runs take `--cache {} --part I/N` (`--part auto/N` in a Slurm array); `headstart cache info {}` shows the partition",
                    path.display(),
                    path.display()
                ),
            })
        }
        E::NotACache { path } => Some(format!(
            "create one with `headstart extract DATA_DIR --cache {}`",
            path.display()
        )),
        E::Shard { path, .. } => {
            let dir = path.parent().unwrap_or(Path::new("."));
            if let Some((cache, part)) = headstart_cache::Part::of_dir(dir) {
                Some(format!(
                    "rerun `headstart extract DATA_DIR --cache {} --part {part}` with the same settings: it rebuilds damaged shards; then merge again",
                    cache.display()
                ))
            } else if dir.join(headstart_cache::partition::PARTITION_FILE).is_file() {
                Some(format!(
                    "rerun `headstart cache merge {}`: it rewrites the merged shards from the parts (if parts/ was removed, run the parts again first)",
                    dir.display()
                ))
            } else {
                Some(
                    "rerun `headstart extract` with the same settings: it rebuilds damaged shards"
                        .into(),
                )
            }
        }
        _ => None,
    }
}

fn extract(e: &headstart_extract::Error) -> Option<String> {
    use headstart_extract::Error as E;
    match e {
        E::Cache(c) => cache(c),
        E::Backbone(b) => backbone(b),
        _ => None,
    }
}

fn head(e: &headstart_head::Error) -> Option<String> {
    use headstart_head::Error as E;
    match e {
        E::Cache(c) => cache(c),
        E::NoHead { path } => Some(format!(
            "train one with `headstart train-head --cache CACHE --out {}`",
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .display()
        )),
        E::Diverged { lr, .. } => Some(format!("pass a smaller --lr (this run used {lr})")),
        _ => None,
    }
}

fn predict(e: &headstart_predict::Error) -> Option<String> {
    use headstart_predict::Error as E;
    match e {
        E::WeightsMismatch {
            trained_with: Some(file),
            ..
        } => Some(format!(
            "pass --weights {file} (the file the head's features came from), or --allow-weights-mismatch to use these anyway"
        )),
        E::WeightsMismatch { .. } => Some(
            "pass the same --weights as for extract, or --allow-weights-mismatch to use them anyway".into(),
        ),
        E::Backbone(b) => backbone(b),
        E::Head(h) => head(h),
        E::Data(_) => None,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_library_errors_get_their_fix() {
        let e: anyhow::Error = headstart_head::Error::Cache(headstart_cache::Error::NotACache {
            path: "/tmp/c".into(),
        })
        .into();
        assert!(fix_for(&e)
            .unwrap()
            .contains("headstart extract DATA_DIR --cache /tmp/c"));
        assert_eq!(flag("batch_size"), "--batch-size");
        let e: anyhow::Error = headstart_backbone::Error::WeightsNotFound {
            backbone: "resnet18".into(),
            looked: vec![],
        }
        .into();
        let fix = fix_for(&e).unwrap();
        assert!(
            fix.contains("--weights PATH") && fix.contains("--backbone resnet18"),
            "{fix}"
        );
        let e: anyhow::Error = headstart_extract::Error::from(headstart_cache::Error::Manifest {
            path: "/nonexistent/c/manifest.json".into(),
            reason: headstart_cache::error::ManifestError::Format("garbage".into()),
        })
        .into();
        let fix = fix_for(&e).unwrap();
        assert!(
            fix.contains("--force") && fix.contains("manifest.json"),
            "{fix}"
        );
        let plain = anyhow::anyhow!("something else");
        assert!(fix_for(&plain).is_none());
    }
}
