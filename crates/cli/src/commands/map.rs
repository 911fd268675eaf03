//! `headstart map`: a 2-D picture of the eval-view features, coloured by class.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use headstart_audit::projection::{pca2, tsne2, TsneParams, MAX_TSNE_POINTS};
use headstart_audit::EvalRows;
use headstart_cache::CacheIndex;

use crate::commands::audit::{esc, thumbnail_uri};
use crate::common::{require_dir, usage, Threads};

/// Draw the cache as a map: every image's eval-view features projected to 2-D (PCA, or t-SNE
/// started from the PCA map), one colour per class, a legend, and — with --audit — the images an
/// audit flagged ringed in black. With --html, also a page where hovering a dot shows the photo
/// (thumbnails need --data; at most --html-thumbnails of them are embedded).
///
/// Example: headstart map --cache cache/flowers --out map.png --html map.html --data data/flowers --audit audits/flowers
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The feature cache.
    #[arg(long, value_name = "CACHE_DIR")]
    cache: PathBuf,
    /// The picture to write (PNG).
    #[arg(long, value_name = "OUT.png")]
    out: PathBuf,
    /// Also write an HTML page with the photo of each dot on hover.
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
    /// An audit folder (from `headstart audit`): ring its flagged images.
    #[arg(long, value_name = "AUDIT_DIR")]
    audit: Option<PathBuf>,
    /// The image folder the cache was extracted from (thumbnails in --html).
    #[arg(long, value_name = "DATA_DIR")]
    data: Option<PathBuf>,
    /// Projection: pca (fast, faithful to global distances) or tsne (clusters; Barnes-Hut, at
    /// most 20,000 images).
    #[arg(long, value_enum, default_value_t = Method::Tsne)]
    method: Method,
    /// t-SNE perplexity.
    #[arg(long, default_value_t = 30.0)]
    perplexity: f32,
    /// Thumbnails embedded in --html (the dots beyond show their path only).
    #[arg(long, default_value_t = 2000)]
    html_thumbnails: usize,
    /// train-head's validation fraction and split seed, for the side shown on hover.
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// train-head's split seed.
    #[arg(long, default_value_t = 43)]
    split_seed: u64,
    /// MiB the rows may take in memory.
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    memory_budget: u64,
    /// No messages on stderr.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    threads: Threads,
}

/// The projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Method {
    /// Principal components.
    Pca,
    /// t-SNE from the PCA map.
    Tsne,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    a.threads.apply()?;
    require_dir(&a.cache, "--cache")?;
    if let Some(d) = &a.data {
        require_dir(d, "--data")?;
    }
    if !(0.0..1.0).contains(&a.val_fraction) {
        return Err(usage(format!(
            "--val-fraction {} must be in [0, 1)",
            a.val_fraction
        )));
    }
    if !(a.perplexity >= 1.0 && a.perplexity <= 1000.0) {
        return Err(usage(format!(
            "--perplexity {} must be 1 to 1000",
            a.perplexity
        )));
    }
    for (flag, p, ext) in [
        ("--out", Some(&a.out), "png"),
        ("--html", a.html.as_ref(), "html"),
    ] {
        if let Some(p) = p {
            if p.extension().and_then(|e| e.to_str()) != Some(ext) {
                return Err(usage(format!(
                    "{flag} {}: expected a .{ext} file",
                    p.display()
                )));
            }
            if p.is_dir() {
                return Err(usage(format!("{flag} {}: is a folder", p.display())));
            }
        }
    }
    let flagged_paths = match &a.audit {
        Some(dir) => Some(audit_flags(dir)?),
        None => None,
    };
    let cache = CacheIndex::open(&a.cache)?;
    let rows = EvalRows::load(&cache, a.val_fraction, a.split_seed, a.memory_budget << 20)?;
    let say = |m: &str| {
        if !a.quiet {
            eprintln!("map: {m}");
        }
    };
    let pca = pca2(&rows);
    let (xy, method) = match a.method {
        Method::Pca => (pca, "PCA"),
        Method::Tsne if rows.len() > MAX_TSNE_POINTS => {
            say(&format!(
                "{} images is more than t-SNE's {MAX_TSNE_POINTS}: drawing the PCA map",
                rows.len()
            ));
            (pca, "PCA")
        }
        Method::Tsne if rows.len() < 5 => {
            say("fewer than 5 images: drawing the PCA map");
            (pca, "PCA")
        }
        Method::Tsne => {
            say(&format!("t-SNE of {} images…", rows.len()));
            let p = TsneParams {
                perplexity: a.perplexity,
                ..Default::default()
            };
            (tsne2(&rows, &pca, &p)?, "t-SNE")
        }
    };
    let flagged: Vec<bool> = match &flagged_paths {
        Some(set) => rows.path.iter().map(|p| set.contains(p)).collect(),
        None => vec![false; rows.len()],
    };
    let title = format!(
        "{} images, {} ({}){}",
        rows.len(),
        cache.settings().backbone.name,
        method,
        if flagged_paths.is_some() {
            format!(", {} flagged", flagged.iter().filter(|&&f| f).count())
        } else {
            String::new()
        }
    );
    let png = crate::draw::plot_map(&xy, &rows.label, &rows.classes, &flagged, &title)?;
    write_file(&a.out, &png)?;
    let mut wrote = vec![a.out.display().to_string()];
    if let Some(html) = &a.html {
        let page = map_html(
            &rows,
            &xy,
            &flagged,
            &title,
            a.data.as_deref(),
            a.html_thumbnails,
        );
        write_file(html, page.as_bytes())?;
        wrote.push(html.display().to_string());
    }
    println!("→ {}", wrote.join(", "));
    Ok(())
}

/// Writes `bytes` to `path` atomically, creating its folder.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    headstart_cache::atomic::write_atomic(path, bytes)?;
    Ok(())
}

/// The paths an audit flagged (every kind), read from DIR/audit.json.
fn audit_flags(dir: &Path) -> Result<HashSet<String>> {
    let file = dir.join("audit.json");
    let meta = std::fs::symlink_metadata(&file).map_err(|e| {
        usage(format!(
            "--audit {}: no audit.json there ({e}); run `headstart audit --cache C --out {}` first",
            dir.display(),
            dir.display()
        ))
    })?;
    if !meta.is_file() || meta.len() > 1 << 30 {
        return Err(usage(format!(
            "--audit {}: audit.json is not a regular file of at most 1 GiB",
            dir.display()
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)
        .with_context(|| format!("{}: not JSON", file.display()))?;
    if v.get("format").and_then(|f| f.as_str()) != Some("headstart-audit") {
        return Err(usage(format!(
            "{}: not an audit (no \"format\": \"headstart-audit\")",
            file.display()
        )));
    }
    let mut set = HashSet::new();
    let strs = |x: &serde_json::Value| x.as_str().map(str::to_string);
    for d in v["duplicates"].as_array().into_iter().flatten() {
        set.extend(d["paths"].as_array().into_iter().flatten().filter_map(strs));
    }
    for kind in ["label_issues", "outliers"] {
        for f in v[kind].as_array().into_iter().flatten() {
            set.extend(strs(&f["path"]));
        }
    }
    Ok(set)
}

/// The hover page: an SVG of the dots; each dot's title names the image, and hovering shows its
/// thumbnail (embedded once per image, up to `thumbs`).
fn map_html(
    rows: &EvalRows,
    xy: &[f32],
    flagged: &[bool],
    title: &str,
    data: Option<&Path>,
    thumbs: usize,
) -> String {
    let (w, h) = (900.0f32, 760.0f32);
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in xy.chunks_exact(2) {
        x0 = x0.min(p[0]);
        x1 = x1.max(p[0]);
        y0 = y0.min(p[1]);
        y1 = y1.max(p[1]);
    }
    let sx = |x: f32| 20.0 + (x - x0) / (x1 - x0).max(1e-12) * (w - 40.0);
    let sy = |y: f32| h - 20.0 - (y - y0) / (y1 - y0).max(1e-12) * (h - 40.0);
    let colour = |c: u32| {
        let c = crate::draw::CLASS_COLOURS[c as usize % crate::draw::CLASS_COLOURS.len()];
        format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
    };
    let mut svg = String::new();
    let mut imgs = String::new();
    let mut embedded = 0usize;
    for (i, p) in xy.chunks_exact(2).enumerate() {
        let uri = if embedded < thumbs {
            data.and_then(|d| thumbnail_uri(d, &rows.path[i]))
        } else {
            None
        };
        let id = if let Some(u) = uri {
            imgs += &format!("<img id=\"t{i}\" src=\"{u}\" alt=\"\">");
            embedded += 1;
            format!(" data-t=\"t{i}\"")
        } else {
            String::new()
        };
        let label = &rows.classes[rows.label[i] as usize];
        let flag = flagged.get(i).copied().unwrap_or(false);
        svg += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\" fill=\"{}\"{}{}><title>{} · {} · {}{}</title></circle>",
            sx(p[0]),
            sy(p[1]),
            if flag { 5 } else { 3 },
            colour(rows.label[i]),
            if flag { " stroke=\"#000\" stroke-width=\"2\"" } else { "" },
            id,
            esc(&rows.path[i]),
            esc(label),
            rows.side[i].name(),
            if flag { " · flagged by the audit" } else { "" }
        );
    }
    let legend: String = rows
        .classes
        .iter()
        .enumerate()
        .map(|(c, n)| {
            format!(
                "<span><i style=\"background:{}\"></i>{}</span>",
                colour(c as u32),
                esc(n)
            )
        })
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
body{{font-family:sans-serif;margin:20px;color:#222}}#legend span{{margin-right:14px;font-size:13px}}\
#legend i{{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}}\
#thumbs{{display:none}}#hover{{position:fixed;pointer-events:none;display:none;background:#fff;border:1px solid #999;padding:4px;font-size:12px;max-width:260px}}\
#hover img{{display:block;max-width:250px}}circle:hover{{stroke:#000;stroke-width:2}}</style></head><body>\
<h1>{t}</h1><div id=\"legend\">{legend}</div>\
<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" style=\"border:1px solid #ddd\">{svg}</svg>\
<div id=\"thumbs\">{imgs}</div><div id=\"hover\"></div>\
<script>const hv=document.getElementById('hover');\
document.querySelectorAll('circle').forEach(c=>{{\
c.addEventListener('mousemove',e=>{{hv.style.left=(e.clientX+14)+'px';hv.style.top=(e.clientY+14)+'px';}});\
c.addEventListener('mouseenter',()=>{{hv.innerHTML='';const t=c.dataset.t&&document.getElementById(c.dataset.t);\
if(t){{hv.appendChild(t.cloneNode());}}const d=document.createElement('div');d.textContent=c.querySelector('title').textContent;hv.appendChild(d);hv.style.display='block';}});\
c.addEventListener('mouseleave',()=>{{hv.style.display='none';}});}});</script></body></html>\n",
        t = esc(title)
    )
}
