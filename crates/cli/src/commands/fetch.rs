//! `headstart fetch-flowers`: download, verify and unpack TensorFlow's public flower photos.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::common::usage;
use crate::progress::Bar;

/// TensorFlow's public archive of 3,670 flower photos (CC-BY 2.0; no account or key needed).
pub const FLOWERS_URL: &str =
    "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz";
/// sha256 of that archive (228,813,984 bytes), as published in TensorFlow Datasets' checksums.
pub const FLOWERS_SHA256: &str = "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c";

/// Download TensorFlow's flower_photos.tgz, verify its sha256 and unpack it as an ImageFolder
/// (daisy/, dandelion/, rose/, sunflower/, tulip/ — the tutorial's singular names).
///
/// Nothing is written to OUT unless the checksum matches; the archive is unpacked next to OUT
/// and renamed into place, so an interrupted run leaves no half-filled folder.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Destination folder (must not exist yet, or be empty).
    #[arg(long, default_value = "data/flowers", value_name = "DIR")]
    out: PathBuf,
    /// Archive URL (an http(s) mirror, or a local server for tests).
    #[arg(long, default_value = FLOWERS_URL)]
    url: String,
    /// Expected sha256 of the archive (64 hex digits; checked before anything is downloaded).
    #[arg(long, default_value = FLOWERS_SHA256, value_parser = parse_sha256)]
    sha256: String,
    /// Keep the downloaded archive next to OUT (OUT.tgz).
    #[arg(long)]
    keep_archive: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// A download failure in one short phrase (ureq's own message repeats the URL and the cause).
fn why(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, r) => format!("the server answered {code} {}", r.status_text()),
        ureq::Error::Transport(t) => match t.kind() {
            ureq::ErrorKind::Dns => format!(
                "no network (the name {} does not resolve); offline, use photos already on disk instead",
                t.url().and_then(|u| u.host_str()).unwrap_or("of the server")
            ),
            ureq::ErrorKind::ConnectionFailed => "the connection failed (no network, or a firewall)".into(),
            ureq::ErrorKind::Io => "the connection broke".into(),
            _ => t.message().map(str::to_string).unwrap_or_else(|| t.kind().to_string()),
        },
    }
}

/// Maps the archive's folder names to the tutorial's singular class names.
fn class_name(dir: &str) -> &str {
    match dir {
        "roses" => "rose",
        "sunflowers" => "sunflower",
        "tulips" => "tulip",
        other => other,
    }
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    if a.out.is_file() {
        return Err(usage(format!("--out {}: is a file", a.out.display())));
    }
    if a.out.is_dir() && fs::read_dir(&a.out)?.next().is_some() {
        eprintln!(
            "{} already exists and is not empty: nothing to do",
            a.out.display()
        );
        return Ok(());
    }
    let parent = a
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    fs::create_dir_all(&parent).map_err(|e| {
        usage(format!(
            "--out {}: cannot create its folder {} ({e})",
            a.out.display(),
            parent.display()
        ))
    })?;
    // Checked before anything is downloaded: the folder must take the archive and the photos.
    let probe = parent.join(format!(".headstart-probe-{}", std::process::id()));
    File::create(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|e| {
            usage(format!(
                "--out {}: cannot write into {} ({e})",
                a.out.display(),
                parent.display()
            ))
        })?;
    let name = a
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flowers".into());
    let archive = parent.join(format!("{name}.tgz"));
    let part = parent.join(format!(".{name}.tgz.part"));

    // 1. Download (streamed, hashed on the fly).
    eprintln!("downloading {}", a.url);
    let resp = ureq::get(&a.url)
        .call()
        .map_err(|e| anyhow::anyhow!("cannot download {}: {}", a.url, why(&e)))?;
    let total: Option<u64> = resp.header("content-length").and_then(|v| v.parse().ok());
    let bar = Bar::new("download", a.quiet);
    bar.set_len(total.unwrap_or(0));
    let mut reader = resp.into_reader();
    let mut file = File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("reading {}", a.url))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", part.display()))?;
        bar.inc(n as u64);
    }
    file.sync_all()?;
    drop(file);
    bar.done();
    let got = hex::encode(hasher.finalize());
    if !got.eq_ignore_ascii_case(a.sha256.trim()) {
        let _ = fs::remove_file(&part);
        bail!("{}: sha256 is {got}, expected {} — the download is corrupt or not the flower archive; nothing was unpacked", a.url, a.sha256);
    }
    fs::rename(&part, &archive)?;

    // 2. Unpack into a staging folder, then rename into place.
    let staging = parent.join(format!(".{name}.unpacking"));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    let n = unpack(&archive, &staging)?;
    if a.out.is_dir() {
        fs::remove_dir(&a.out)?; // empty, checked above
    }
    fs::rename(&staging, &a.out)
        .with_context(|| format!("moving the photos into {}", a.out.display()))?;
    if !a.keep_archive {
        fs::remove_file(&archive)?;
    }
    println!("{n} photos → {} (sha256 verified)", a.out.display());
    Ok(())
}

/// Unpacks `flower_photos/<class>/<file>` entries into `dest/<singular class>/<file>`; every other
/// entry (LICENSE.txt) goes to `dest/` as is. Returns the number of image files.
fn unpack(archive: &Path, dest: &Path) -> Result<usize> {
    let f = File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut images = 0;
    for entry in tar.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            bail!(
                "refusing archive entry {}: not a plain relative path",
                path.display()
            );
        }
        let parts: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let target = match parts.as_slice() {
            [_, class, file] => {
                images += 1;
                dest.join(class_name(class)).join(file)
            }
            [_, file] => dest.join(file),
            _ => continue,
        };
        if let Some(p) = target.parent() {
            fs::create_dir_all(p)?;
        }
        entry
            .unpack(&target)
            .with_context(|| format!("unpacking {}", path.display()))?;
    }
    if images == 0 {
        bail!("{}: no photos found in the archive", archive.display());
    }
    Ok(images)
}

/// A sha256 as 64 hex digits (a usage error otherwise, before any download).
fn parse_sha256(s: &str) -> std::result::Result<String, String> {
    let t = s.trim();
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(t.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{s}` is not a sha256: expected 64 hexadecimal digits"
        ))
    }
}
