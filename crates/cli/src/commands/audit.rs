//! `headstart audit`: duplicates, leakage, likely label errors and outliers, from the cache.

use std::path::{Path, PathBuf};

use anyhow::Result;
use headstart_audit::{audit, AuditConfig, AuditReport, Step};
use headstart_cache::CacheIndex;
use headstart_core::text::for_terminal;

use crate::common::{print_json, require_dir, usage, Threads};
use crate::progress::Bar;

/// Look at a dataset through its cached features: duplicates (byte-identical files, and
/// near-identical images by cosine similarity of the eval-view features) flagged when they leak
/// across train/val/test or carry different labels; likely label errors (out-of-fold
/// probabilities from K-fold heads on the cache, confident learning); and outliers (images far
/// from every neighbour of their class). Nothing is recomputed from the images.
///
/// Writes OUT/audit.json, OUT/audit.csv (one row per finding) and OUT/report.html (one
/// self-contained page with thumbnails when --data names the image folder), all at once, and
/// prints a summary with the top findings.
///
/// Example: headstart audit --cache cache/flowers --data data/flowers --out audits/flowers
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The feature cache.
    #[arg(long, value_name = "CACHE_DIR")]
    cache: PathBuf,
    /// Where to write audit.json, audit.csv and report.html (a new folder or an earlier audit).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The image folder the cache was extracted from, for the report's thumbnails.
    #[arg(long, value_name = "DATA_DIR")]
    data: Option<PathBuf>,
    /// Cosine similarity at or above which two images are near duplicates (docs/audit.md says
    /// how the default was chosen).
    #[arg(long, default_value_t = headstart_audit::DEFAULT_DUP_THRESHOLD)]
    dup_threshold: f32,
    /// K of the K-fold that gives every image its out-of-fold probabilities.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=100))]
    folds: u32,
    /// Seed of the folds and of the heads.
    #[arg(long, default_value_t = 43)]
    seed: u64,
    /// Same-class neighbours an outlier score averages.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    outlier_k: u32,
    /// train-head's validation fraction, for the sides leakage is judged on (the dataset's
    /// train/ and val/ folders when it has them).
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// train-head's split seed.
    #[arg(long, default_value_t = 43)]
    split_seed: u64,
    /// Findings of each kind shown in report.html (all are in audit.json and audit.csv).
    #[arg(long, default_value_t = 100)]
    report_limit: usize,
    /// MiB the rows may take in memory.
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    memory_budget: u64,
    /// Print audit.json on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    threads: Threads,
}

/// The files an audit folder holds.
const AUDIT_FILES: [&str; 3] = ["audit.json", "audit.csv", "report.html"];

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    a.threads.apply()?;
    require_dir(&a.cache, "--cache")?;
    if let Some(d) = &a.data {
        require_dir(d, "--data")?;
    }
    check_out(&a.out)?;
    let cfg = AuditConfig {
        dup_threshold: a.dup_threshold,
        folds: a.folds as usize,
        seed: a.seed,
        outlier_k: a.outlier_k as usize,
        val_fraction: a.val_fraction,
        split_seed: a.split_seed,
        memory_budget: a.memory_budget << 20,
    };
    cfg.check().map_err(|e| match e {
        headstart_audit::Error::InvalidParams { param, problem } => {
            usage(format!("{} {problem}", crate::hints::flag(param)))
        }
        other => other.into(),
    })?;
    let cache = CacheIndex::open(&a.cache)?;
    let show = !a.quiet && !a.json;
    let bar = Bar::new("audit", !show);
    // When each step began, for the timings printed after the run.
    let began = std::sync::Mutex::new(Vec::<(&'static str, std::time::Instant)>::new());
    let mark = |what: &'static str| {
        let mut b = began.lock().expect("not poisoned");
        if b.last().map(|l| l.0) != Some(what) {
            b.push((what, std::time::Instant::now()));
        }
    };
    let report = audit(&cache, &cfg, &|s| match s {
        Step::Loading => mark("reading the features"),
        Step::Similarity { done, total } => {
            mark("similarity pass");
            if done <= 512.min(total) {
                bar.set_len(total as u64);
            }
            bar.set_position(done as u64);
        }
        Step::Folds { done, total } => {
            if done == 0 {
                mark("out-of-fold heads");
                bar.done();
                if show {
                    eprintln!("audit: out-of-fold heads, {total} folds");
                }
            }
        }
    })?;
    mark("end");
    if show {
        let b = began.lock().expect("not poisoned");
        let parts: Vec<String> = b
            .windows(2)
            .map(|w| format!("{} {:.1} s", w[0].0, (w[1].1 - w[0].1).as_secs_f64()))
            .collect();
        eprintln!("audit: {}", parts.join(", "));
    }
    bar.done();
    let json = serde_json::to_vec_pretty(&report)?;
    let csv = headstart_audit::to_csv(&report);
    let html = report_html(&report, a.data.as_deref(), a.report_limit);
    headstart_cache::atomic::publish_dir(
        &a.out,
        |dir| -> std::result::Result<(), headstart_cache::Error> {
            headstart_cache::atomic::write_atomic(&dir.join("audit.json"), &json)?;
            headstart_cache::atomic::write_atomic(&dir.join("audit.csv"), csv.as_bytes())?;
            headstart_cache::atomic::write_atomic(&dir.join("report.html"), html.as_bytes())?;
            Ok(())
        },
    )?;
    if a.json {
        return print_json(&report);
    }
    print!("{}", summary_text(&report));
    println!(
        "→ {} (audit.json, audit.csv, report.html{})",
        a.out.display(),
        if a.data.is_none() {
            "; pass --data DATA_DIR for thumbnails"
        } else {
            ""
        }
    );
    Ok(())
}

/// `--out` must be a new folder or an earlier audit's (it is replaced as a whole).
fn check_out(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(usage(format!(
            "--out {}: is a file, expected a folder",
            out.display()
        )));
    }
    if let Ok(entries) = std::fs::read_dir(out) {
        let mut foreign: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !AUDIT_FILES.contains(&n.as_str()) && n != ".DS_Store")
            .collect();
        if !foreign.is_empty() {
            foreign.sort();
            return Err(usage(format!(
                "--out {}: holds files that are not an audit's ({}); it is replaced as a whole, so pick a new folder or an earlier audit's",
                out.display(),
                foreign.join(", ")
            )));
        }
    }
    if out
        .parent()
        .is_some_and(|p| !p.as_os_str().is_empty() && !p.is_dir())
    {
        std::fs::create_dir_all(out.parent().expect("checked")).map_err(|e| {
            usage(format!(
                "--out {}: cannot create its parent ({e})",
                out.display()
            ))
        })?;
    }
    Ok(())
}

/// The terminal summary: counts, then the top findings of each kind.
fn summary_text(r: &AuditReport) -> String {
    let s = &r.summary;
    let mut t = format!(
        "audit of {} images ({}):\n  duplicates: {} clusters ({} byte-identical), {} redundant images; {} leak across train/val/test, {} carry different labels\n  likely label errors: {}\n  outliers: {}\n",
        s.images,
        r.backbone,
        s.duplicate_clusters,
        s.exact_clusters,
        s.redundant_images,
        s.leaking_clusters,
        s.conflicting_clusters,
        s.label_issues,
        s.outliers
    );
    let p = |x: &str| for_terminal(x).into_owned();
    if !r.duplicates.is_empty() {
        t += "\ntop duplicate clusters:\n";
        for d in r.duplicates.iter().take(5) {
            let flags = [
                (d.exact, "exact"),
                (d.cross_split, "LEAKS"),
                (d.cross_class, "CONFLICTING LABELS"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ");
            t += &format!(
                "  similarity {:.3}{}: {}\n",
                d.similarity,
                if flags.is_empty() {
                    String::new()
                } else {
                    format!(" [{flags}]")
                },
                d.paths
                    .iter()
                    .zip(&d.splits)
                    .map(|(x, s)| format!("{} ({s})", p(x)))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
    }
    if !r.label_issues.is_empty() {
        t += "\nmost likely label errors (given → suggested, P(given)):\n";
        for l in r.label_issues.iter().take(10) {
            t += &format!(
                "  {}  {} → {} ({:.3} vs {:.3})\n",
                p(&l.path),
                p(&l.label),
                p(&l.suggested),
                l.self_confidence,
                l.suggested_probability
            );
        }
    }
    if !r.outliers.is_empty() {
        t += &format!("\nmost outlying (score > {:.3}):\n", r.outlier_cutoff);
        for o in r.outliers.iter().take(5) {
            t += &format!("  {}  {} ({:.3})\n", p(&o.path), p(&o.label), o.score);
        }
    }
    for n in &r.notes {
        t += &format!("note: {}\n", p(n));
    }
    t
}

/// HTML-escaped text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A thumbnail of `rel` under `data` as a `data:` URI (JPEG), when it can be read: the path must
/// stay inside the folder (no `..`, not absolute) and be a regular file.
pub fn thumbnail_uri(data: &Path, rel: &str) -> Option<String> {
    let path = inside(data, rel)?;
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 256 << 20 {
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
    let img = std::panic::catch_unwind(|| {
        headstart_backbone::preprocess::decode_rgb(
            &bytes,
            &headstart_backbone::preprocess::DecodeLimits::default(),
        )
        .ok()
    })
    .ok()??;
    let thumb = crate::draw::thumbnail(&img);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode_image(&thumb)
        .ok()?;
    Some(format!("data:image/jpeg;base64,{}", base64(&jpeg)))
}

/// `data/rel` when `rel` is a plain relative path (no `..`, not absolute): a path read from a
/// cache never leads out of the image folder.
pub fn inside(data: &Path, rel: &str) -> Option<PathBuf> {
    let rel_path = Path::new(rel);
    let plain = !rel.is_empty()
        && rel_path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    plain.then(|| data.join(rel_path))
}

/// Standard base64 with padding.
pub fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// One figure: thumbnail (or a placeholder) and caption lines.
fn figure(data: Option<&Path>, rel: &str, lines: &[String]) -> String {
    let img = data
        .and_then(|d| thumbnail_uri(d, rel))
        .map(|u| {
            format!(
                "<img src=\"{u}\" width=\"160\" height=\"160\" alt=\"{}\">",
                esc(rel)
            )
        })
        .unwrap_or_else(|| "<div class=\"noimg\">no thumbnail</div>".into());
    let caps: String = lines
        .iter()
        .map(|l| format!("<div>{}</div>", esc(l)))
        .collect();
    format!(
        "<figure>{img}<figcaption><div class=\"path\">{}</div>{caps}</figcaption></figure>",
        esc(rel)
    )
}

/// `report.html`: one self-contained page (no network), a section per kind.
pub fn report_html(r: &AuditReport, data: Option<&Path>, limit: usize) -> String {
    let s = &r.summary;
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>headstart audit</title><style>\
body{font-family:sans-serif;margin:24px;color:#222}h2{margin-top:32px;border-bottom:1px solid #ccc}\
.row{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start;margin:10px 0;padding:8px;border:1px solid #eee;border-radius:6px}\
.row.flag{border-color:#d33}figure{margin:0;width:170px;font-size:12px}figcaption div{overflow-wrap:anywhere}\
.path{color:#555}.noimg{width:160px;height:160px;background:#eee;display:flex;align-items:center;justify-content:center;color:#999}\
.meta{font-size:13px;width:100%}.bad{color:#c00;font-weight:bold}table{border-collapse:collapse}td{padding:2px 10px}</style></head><body>",
    );
    h += &format!(
        "<h1>Audit of {} images</h1><p>cache <code>{}</code> ({}), classes: {}</p>",
        s.images,
        esc(&r.cache.display().to_string()),
        esc(&r.backbone),
        esc(&r.classes.join(", "))
    );
    h += &format!(
        "<table><tr><td>duplicate clusters</td><td>{}</td><td>({} byte-identical, {} redundant images)</td></tr>\
<tr><td>leaking across train/val/test</td><td>{}</td></tr><tr><td>with conflicting labels</td><td>{}</td></tr>\
<tr><td>likely label errors</td><td>{}</td></tr><tr><td>outliers</td><td>{}</td></tr></table>",
        s.duplicate_clusters,
        s.exact_clusters,
        s.redundant_images,
        s.leaking_clusters,
        s.conflicting_clusters,
        s.label_issues,
        s.outliers
    );
    if data.is_none() {
        h += "<p><i>No thumbnails: rerun with <code>--data DATA_DIR</code> (the folder the cache was extracted from).</i></p>";
    }
    for n in &r.notes {
        h += &format!("<p>note: {}</p>", esc(n));
    }
    h += &format!(
        "<h2>Duplicates ({})</h2><p>Byte-identical files, and images whose eval-view features have a cosine similarity ≥ {}. A cluster on both sides of the split <span class=\"bad\">leaks</span> (the validation score counts images the head trained on); one with different labels has a wrong label or overlapping classes.</p>",
        r.duplicates.len(),
        r.settings.dup_threshold
    );
    for d in r.duplicates.iter().take(limit) {
        let flag = d.cross_split || d.cross_class;
        h += &format!(
            "<div class=\"row{}\"><div class=\"meta\">similarity {:.3}{}{}{}</div>",
            if flag { " flag" } else { "" },
            d.similarity,
            if d.exact { " · byte-identical" } else { "" },
            if d.cross_split {
                " · <span class=\"bad\">leaks across the split</span>"
            } else {
                ""
            },
            if d.cross_class {
                " · <span class=\"bad\">conflicting labels</span>"
            } else {
                ""
            }
        );
        for ((p, l), sp) in d.paths.iter().zip(&d.labels).zip(&d.splits) {
            h += &figure(data, p, &[format!("{l} · {sp}")]);
        }
        h += "</div>";
    }
    h += &format!(
        "<h2>Likely label errors ({})</h2><p>Each image scored by a head trained on the other {} folds; flagged when its confident class (confident learning, per-class thresholds) is not its label; most suspicious first (lowest probability of the given label).</p>",
        r.label_issues.len(),
        r.settings.folds - 1
    );
    for l in r.label_issues.iter().take(limit) {
        h += "<div class=\"row\">";
        h += &figure(
            data,
            &l.path,
            &[
                format!("labelled {} (P = {:.3})", l.label, l.self_confidence),
                format!(
                    "looks like {} (P = {:.3})",
                    l.suggested, l.suggested_probability
                ),
                l.split.to_string(),
            ],
        );
        h += "</div>";
    }
    h += &format!(
        "<h2>Outliers ({})</h2><p>Mean cosine distance to the {} nearest images of the same class, flagged above {:.3} (median + 3 robust standard deviations); beside each, its nearest same-class image.</p>",
        r.outliers.len(),
        r.settings.outlier_k,
        r.outlier_cutoff
    );
    for o in r.outliers.iter().take(limit) {
        h += "<div class=\"row\">";
        h += &figure(
            data,
            &o.path,
            &[
                format!("{} · score {:.3}", o.label, o.score),
                o.split.to_string(),
            ],
        );
        if let Some(n) = &o.nearest {
            h += &figure(data, n, &["its nearest same-class image".into()]);
        }
        h += "</div>";
    }
    h += "</body></html>\n";
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn html_escapes_and_thumbnails_stay_inside() {
        assert_eq!(
            esc("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("secret.jpg"), b"x").unwrap();
        let inner = d.path().join("data");
        std::fs::create_dir(&inner).unwrap();
        assert!(thumbnail_uri(&inner, "../secret.jpg").is_none());
        assert!(thumbnail_uri(&inner, "/etc/passwd").is_none());
    }
}
