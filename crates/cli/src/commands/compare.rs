//! `headstart compare`: heads side by side, with the statistics to tell real differences.

use std::path::PathBuf;

use anyhow::Result;
use headstart_core::text::for_terminal;
use headstart_head::compare::{compare, Comparison};

use crate::common::{print_json, usage};

/// Compare trained heads on their validation images: the settings that differ, validation
/// accuracy (95 % Wilson interval) and macro-F1 (95 % bootstrap interval), per-class F1, and for
/// heads scored on the same images the exact McNemar test of their disagreements: the chance
/// that two equally good heads would split their disagreements at least this unevenly. Images
/// are matched by content, so heads on different backbones or caches of the same photos compare.
///
/// Example: headstart compare heads/sgd heads/lbfgs sweeps/lr/best
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Head directories written by `train-head` or `sweep` (two or more).
    #[arg(value_name = "HEAD_DIR", required = true, num_args = 2..)]
    heads: Vec<PathBuf>,
    /// Print JSON: {"heads": [...], "differing_settings", "pairs", "mcnemar_p" (two heads on
    /// shared images), "notes"}.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    for h in &a.heads {
        if !h.is_dir() {
            return Err(usage(format!(
                "{}: not a head directory (pass folders written by train-head)",
                h.display()
            )));
        }
    }
    let c = compare(&a.heads)?;
    if a.json {
        return print_json(&c);
    }
    print!("{}", to_text(&c));
    Ok(())
}

/// The comparison as text.
fn to_text(c: &Comparison) -> String {
    let mut s = String::new();
    let name = |i: usize| {
        format!(
            "[{}] {}",
            i + 1,
            for_terminal(&c.heads[i].head.display().to_string())
        )
    };
    for i in 0..c.heads.len() {
        s += &format!("{}\n", name(i));
    }
    s += "\n";
    if c.differing_settings.is_empty() {
        s += "settings: identical\n";
    } else {
        s += "settings that differ:\n";
        for k in &c.differing_settings {
            let vals: Vec<String> = c
                .heads
                .iter()
                .map(|h| h.settings.get(k).map_or("-".into(), short))
                .collect();
            s += &format!("  {k:<28} {}\n", vals.join("  |  "));
        }
    }
    s += &format!(
        "\n{:<6} {:>6}  {:>26}  {:>26}  {:>8}\n",
        "head", "n", "val accuracy (95 % CI)", "macro-F1 (95 % CI)", "TTA acc"
    );
    for (i, h) in c.heads.iter().enumerate() {
        s += &format!(
            "{:<6} {:>6}  {:>7.4} [{:.4}, {:.4}]  {:>7.4} [{:.4}, {:.4}]  {:>8}\n",
            format!("[{}]", i + 1),
            h.n,
            h.accuracy.value,
            h.accuracy.ci95[0],
            h.accuracy.ci95[1],
            h.macro_f1.value,
            h.macro_f1.ci95[0],
            h.macro_f1.ci95[1],
            h.accuracy_tta
                .as_ref()
                .map_or("-".into(), |t| format!("{:.4}", t.value)),
        );
    }
    // Per-class F1, one column per head (the classes of the first head with per-image data).
    if let Some(first) = c.heads.iter().find(|h| h.per_image) {
        s += "\nper-class F1:\n";
        s += &format!("  {:<20}", "class");
        for i in 0..c.heads.len() {
            s += &format!(" {:>8}", format!("[{}]", i + 1));
        }
        s += "\n";
        for m in &first.per_class {
            s += &format!("  {:<20}", for_terminal(&m.class));
            for h in &c.heads {
                let f1 = h.per_class.iter().find(|x| x.class == m.class);
                s += &format!(" {:>8}", f1.map_or("-".into(), |x| format!("{:.4}", x.f1)));
            }
            s += "\n";
        }
    }
    if !c.pairs.is_empty() {
        s += "\nMcNemar (exact) on the validation images both scored:\n";
        for p in &c.pairs {
            s += &format!(
                "  [{}] vs [{}]: {} shared images{}, only [{}] right {}, only [{}] right {}: p = {:.4}{}\n",
                p.a + 1,
                p.b + 1,
                p.shared_images,
                if p.same_images { "" } else { " (not the same sets)" },
                p.a + 1,
                p.only_a_right,
                p.b + 1,
                p.only_b_right,
                p.mcnemar_p,
                if p.mcnemar_p < 0.05 {
                    "  (a real difference at the 5 % level)"
                } else {
                    "  (no evidence of a difference)"
                }
            );
        }
    }
    for n in &c.notes {
        s += &format!("note: {}\n", for_terminal(n));
    }
    s
}

/// A setting's value, short.
fn short(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = for_terminal(&s).to_string();
    let chars: Vec<char> = s.chars().collect();
    if chars.len() > 24 {
        // Both ends: hashes differ at the start, paths at the end.
        let head: String = chars[..10].iter().collect();
        let tail: String = chars[chars.len() - 13..].iter().collect();
        format!("{head}…{tail}")
    } else {
        s
    }
}
