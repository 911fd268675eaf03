//! What a newcomer meets first: the hints when something is missing, completions, `--help` that
//! shows only what applies, readable `cache info`, and the L-BFGS curves.

mod common;

use common::{bin, extract_args, headstart, link_photos, lite0, ok, CLASSES};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn lite0_without_weights_is_not_told_to_download_from_the_hub() {
    let out = headstart(&["weights", "--backbone", "efficientnet-lite0"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("fix: pass --weights PATH"), "{err}");
    assert!(err.contains("no Hugging Face download"), "{err}");
    assert!(err.contains("efficientnet-lite0-57934424.pth"), "{err}");
    assert!(!err.contains("to download them"), "{err}");
    // ResNet-18 still gets the download hint: it has a hub repository.
    let err = stderr(&headstart(&["weights", "--backbone", "resnet18"]));
    assert!(
        err.contains("headstart weights --backbone resnet18"),
        "{err}"
    );
}

#[test]
fn fetch_offline_says_so_once_and_checks_out_before_downloading() {
    let d = tempfile::tempdir().unwrap();
    // `.invalid` never resolves (RFC 6761): the same error as a machine without network.
    let out = headstart(&[
        "fetch-flowers",
        "--out",
        &d.path().join("f").display().to_string(),
        "--url",
        "http://flowers.invalid/flower_photos.tgz",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.matches("http://flowers.invalid").count(),
        2,
        "the URL once in 'downloading', once in the error: {err}"
    );
    assert!(
        err.contains("no network") || err.contains("connection"),
        "{err}"
    );
    assert!(!err.contains("--url"), "{err}");
    // An --out that cannot be written is refused before any download (exit 2, nothing fetched).
    let ro = d.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("blocker"), b"").unwrap();
    let out = headstart(&[
        "fetch-flowers",
        "--out",
        &ro.join("blocker").join("flowers").display().to_string(),
        "--url",
        "http://flowers.invalid/x.tgz",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("downloading"), "{err}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let s = ok(&["completions", shell]);
        assert!(s.contains("train-head") && s.contains("extract"), "{shell}");
    }
}

#[test]
fn threads_is_offered_only_where_it_changes_something() {
    let help = |cmd: &[&str]| {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        ok(&args)
    };
    for cmd in [
        &["extract"][..],
        &["train-head"],
        &["predict"],
        &["eval"],
        &["benchmark"],
    ] {
        assert!(help(cmd).contains("--threads"), "{cmd:?}");
    }
    for cmd in [
        &["weights"][..],
        &["devices"],
        &["fetch-flowers"],
        &["cache", "info"],
    ] {
        assert!(!help(cmd).contains("--threads"), "{cmd:?}");
    }
}

#[test]
fn predict_without_weights_names_the_file_the_head_was_trained_with() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    link_photos(&data, &CLASSES[..2], 0..4);
    let cache = d.path().join("cache");
    ok(&extract_args(&data, &cache, &[]));
    let head = d.path().join("head");
    ok(&[
        "train-head",
        "--cache",
        &cache.display().to_string(),
        "--out",
        &head.display().to_string(),
        "--solver",
        "lbfgs",
        "--l2",
        "1e-3",
    ]);
    // cache info in words: no JSON quoting, no `null`.
    let info = ok(&["cache", "info", &cache.display().to_string()]);
    assert!(
        info.contains("backbone        efficientnet-lite0"),
        "{info}"
    );
    assert!(!info.contains("null") && !info.contains('"'), "{info}");
    let photo = data.join("daisy");
    let out = bin()
        .args(["predict", "--head"])
        .arg(&head)
        .arg(&photo)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let file = std::fs::canonicalize(lite0()).unwrap();
    assert!(
        err.contains(&format!("fix: pass --weights {}", file.display())),
        "{err}"
    );
    // L-BFGS curves: the objective per iteration is recorded (and drawn) for the final fit.
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(head.join("run.json")).unwrap()).unwrap();
    let trace = run["lbfgs"]["objective_trace"].as_array().unwrap();
    assert!(trace.len() >= 2, "{run}");
    assert!(
        trace.windows(2).all(|w| w[1].as_f64() <= w[0].as_f64()),
        "the objective never rises: {trace:?}"
    );
    assert!(std::fs::metadata(head.join("curves.png")).unwrap().len() > 1000);
}
