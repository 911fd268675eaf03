//! Tests of weight resolution.
use super::*;
use std::collections::HashMap;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn not_found(err: Error) -> (String, Vec<String>) {
    match err {
        Error::WeightsNotFound { backbone, looked } => (backbone, looked),
        other => panic!("expected WeightsNotFound, got {other}"),
    }
}

#[test]
fn sha256_file_matches_known_digests_and_streams_large_files() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    write(&empty, b"");
    assert_eq!(
        sha256_file(&empty).unwrap(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let abc = dir.path().join("abc");
    write(&abc, b"abc");
    assert_eq!(
        sha256_file(&abc).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // Spans several 1 MiB reads, with a partial last block.
    let big: Vec<u8> = (0..(2 * HASH_BUFFER + 12345))
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let big_path = dir.path().join("big");
    write(&big_path, &big);
    assert_eq!(
        sha256_file(&big_path).unwrap(),
        hex::encode(Sha256::digest(&big))
    );
    let missing = dir.path().join("missing");
    let err = sha256_file(&missing).unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn hub_offline_accepts_the_usual_truthy_values_only() {
    for v in ["1", "true", "TRUE", "yes", "On", " 1 "] {
        let e = env_of(&[("HF_HUB_OFFLINE", v)]);
        assert_eq!(hf_hub_offline(&Env(&e)), Some(v.trim().to_string()), "{v}");
    }
    for v in ["0", "false", "no", "off", "", "2"] {
        let e = env_of(&[("HF_HUB_OFFLINE", v)]);
        assert_eq!(hf_hub_offline(&Env(&e)), None, "{v}");
    }
    assert_eq!(hf_hub_offline(&Env(&env_of(&[]))), None);
}

#[test]
fn cache_directories_follow_the_python_conventions() {
    let hf = |pairs: &[(&str, &str)]| hf_cache_dir(&Env(&env_of(pairs)));
    let torch = |pairs: &[(&str, &str)]| torch_home(&Env(&env_of(pairs)));
    let all = [
        ("HF_HUB_CACHE", "/hc"),
        ("HF_HOME", "/hh"),
        ("XDG_CACHE_HOME", "/x"),
        ("HOME", "/home/u"),
        ("TORCH_HOME", "/t"),
    ];
    assert_eq!(hf(&all), Some(PathBuf::from("/hc")));
    assert_eq!(hf(&all[1..]), Some(PathBuf::from("/hh/hub")));
    assert_eq!(hf(&all[2..]), Some(PathBuf::from("/x/huggingface/hub")));
    assert_eq!(
        hf(&all[3..]),
        Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
    );
    assert_eq!(hf(&[("HF_HOME", ""), ("HOME", "/home/u")]), hf(&all[3..]));
    assert_eq!(hf(&[]), None);
    assert_eq!(torch(&all), Some(PathBuf::from("/t")));
    assert_eq!(torch(&all[..4]), Some(PathBuf::from("/x/torch")));
    assert_eq!(
        torch(&all[3..4]),
        Some(PathBuf::from("/home/u/.cache/torch"))
    );
    assert_eq!(torch(&[]), None);
}

#[test]
fn endpoint_defaults_to_huggingface_and_loses_trailing_slashes() {
    assert_eq!(hf_endpoint(&Env(&env_of(&[]))), DEFAULT_HF_ENDPOINT);
    let e = env_of(&[("HF_ENDPOINT", "http://127.0.0.1:9/ ")]);
    assert_eq!(hf_endpoint(&Env(&e)), "http://127.0.0.1:9");
}

#[test]
fn repo_ids_are_checked() {
    for ok in ["timm/resnet18.tv_in1k", "gpt2", "a-b/c_d.e"] {
        assert!(check_repo_id(ok).is_ok(), "{ok}");
    }
    for bad in ["", "/x", "x/", "a/b/c", "../x", "a/..", "a b/c", "a/b?c"] {
        assert!(check_repo_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn sources_display_on_one_line() {
    let cases = [
        (WeightsSource::File("/w/r.pth".into()), "file /w/r.pth"),
        (
            WeightsSource::HuggingFaceCache {
                repo: "timm/resnet18.tv_in1k".into(),
                file: "model.safetensors".into(),
            },
            "Hugging Face cache (timm/resnet18.tv_in1k/model.safetensors)",
        ),
        (
            WeightsSource::HuggingFaceDownload {
                repo: "timm/resnet18.tv_in1k".into(),
                file: "model.safetensors".into(),
                endpoint: "https://huggingface.co".into(),
            },
            "downloaded timm/resnet18.tv_in1k/model.safetensors from https://huggingface.co",
        ),
        (
            WeightsSource::TorchHubCache("/t/hub/checkpoints/r.pth".into()),
            "torch hub cache /t/hub/checkpoints/r.pth",
        ),
    ];
    for (source, text) in cases {
        assert_eq!(source.to_string(), text);
    }
}

#[test]
fn explicit_directory_is_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ResolveOptions {
        explicit: Some(dir.path().to_path_buf()),
        ..ResolveOptions::default()
    };
    let err = resolve_with_env(Architecture::ResNet18, &opts, &env_of(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(err.contains("not a file"), "{err}");
}

#[test]
fn disabled_downloads_and_missing_repo_each_leave_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().display().to_string();
    let env = env_of(&[("HOME", &home), ("HF_ENDPOINT", "http://127.0.0.1:9")]);
    let opts = ResolveOptions {
        allow_download: false,
        ..ResolveOptions::default()
    };
    let (backbone, looked) =
        not_found(resolve_with_env(Architecture::ResNet50, &opts, &env).unwrap_err());
    assert_eq!(backbone, "resnet50");
    let hf = dir
        .path()
        .join(".cache/huggingface/hub/models--timm--resnet50.tv_in1k");
    let torch = dir
        .path()
        .join(".cache/torch/hub/checkpoints/resnet50-0676ba61.pth");
    assert_eq!(
        looked,
        vec![
            format!("Hugging Face cache: {} (not present)", hf.display()),
            format!("torch hub cache: {} (not present)", torch.display()),
            "Hugging Face hub http://127.0.0.1:9 timm/resnet50.tv_in1k/model.safetensors: skipped, downloads are disabled".to_string(),
        ]
    );

    let (_, looked) =
        not_found(resolve_with_env(Architecture::EfficientNetLite0, &opts, &env).unwrap_err());
    assert_eq!(looked.len(), 2, "{looked:?}");
    assert!(
        looked[0].contains("has no Hugging Face repository"),
        "{looked:?}"
    );
    assert!(looked[1].starts_with("torch hub cache: "), "{looked:?}");

    let bad = ResolveOptions {
        hub_repo: Some("../etc".into()),
        allow_download: true,
        explicit: None,
    };
    let (_, looked) = not_found(resolve_with_env(Architecture::ResNet18, &bad, &env).unwrap_err());
    assert_eq!(looked.len(), 2, "{looked:?}");
    assert!(
        looked[0].contains("not a valid repository id"),
        "{looked:?}"
    );
    assert!(looked[1].contains("requested explicitly"), "{looked:?}");
}

#[test]
fn hf_cache_tolerates_a_newline_in_refs_and_explains_misses() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("models--timm--resnet18.tv_in1k");
    assert_eq!(
        hf_cache_lookup(dir.path(), "timm/resnet18.tv_in1k", "model.safetensors")
            .unwrap_err()
            .to_string(),
        "not present"
    );
    std::fs::create_dir_all(&repo_dir).unwrap();
    assert_eq!(
        hf_cache_lookup(dir.path(), "timm/resnet18.tv_in1k", "model.safetensors")
            .unwrap_err()
            .to_string(),
        "no refs/main"
    );
    write(&repo_dir.join("refs/main"), b"abc123\n");
    assert_eq!(
        hf_cache_lookup(dir.path(), "timm/resnet18.tv_in1k", "model.safetensors")
            .unwrap_err()
            .to_string(),
        "no model.safetensors in snapshot abc123"
    );
    let file = repo_dir.join("snapshots/abc123/model.safetensors");
    write(&file, b"weights");
    assert_eq!(
        hf_cache_lookup(dir.path(), "timm/resnet18.tv_in1k", "model.safetensors").unwrap(),
        file
    );
}

#[cfg(unix)]
#[test]
fn corrupt_cached_blob_is_skipped_for_the_torch_hub_copy() {
    let dir = tempfile::tempdir().unwrap();
    let hf_home = dir.path().join("hf");
    let repo_dir = hf_home.join("hub/models--timm--resnet18.tv_in1k");
    let content = b"truncated";
    let claimed = "0".repeat(64);
    write(&repo_dir.join("blobs").join(&claimed), content);
    write(&repo_dir.join("refs/main"), b"c0ffee");
    std::fs::create_dir_all(repo_dir.join("snapshots/c0ffee")).unwrap();
    std::os::unix::fs::symlink(
        format!("../../blobs/{claimed}"),
        repo_dir.join("snapshots/c0ffee/model.safetensors"),
    )
    .unwrap();
    let torch = dir
        .path()
        .join("torch/hub/checkpoints/resnet18-f37072fd.pth");
    write(&torch, b"torch weights");
    let env = env_of(&[
        ("HF_HOME", hf_home.to_str().unwrap()),
        ("TORCH_HOME", dir.path().join("torch").to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ]);
    let got = resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap();
    assert_eq!(got.source, WeightsSource::TorchHubCache(torch.clone()));
    assert_eq!(got.sha256, hex::encode(Sha256::digest(b"torch weights")));

    // With only the corrupt copy, the error says why it was refused.
    std::fs::remove_file(&torch).unwrap();
    let (_, looked) = not_found(
        resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap_err(),
    );
    assert!(looked[0].contains("corrupt"), "{looked:?}");
    assert!(looked[0].contains(&claimed), "{looked:?}");
}

#[test]
fn api_errors_become_short_reasons() {
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(
        describe_api_error(&ApiError::IoError(refused)).to_string(),
        "connection refused"
    );
    assert_eq!(
        describe_api_error(&ApiError::MissingHeader("etag")).to_string(),
        "Header etag is missing"
    );
    assert_eq!(one_line("a\n  b\tc "), "a b c");
}
