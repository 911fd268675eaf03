//! Pictures: training curves and thumbnail grids, drawn with plotters on an RGB buffer and saved
//! as PNG. Text uses an embedded DejaVu Sans (see assets/), so it works on a bare machine.

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{anyhow, Result};
use headstart_backbone::preprocess::{decode_rgb, resize, DecodeLimits};
use headstart_backbone::Interpolation;
use headstart_cache::atomic::write_atomic;
use headstart_head::history::EpochRecord;
use image::RgbImage;
use plotters::prelude::*;
use plotters::style::FontStyle;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file; failure would only mean text is missing.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

fn png_bytes(buf: Vec<u8>, w: u32, h: u32) -> Result<Vec<u8>> {
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| anyhow!("internal: bad image buffer"))?;
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    Ok(bytes)
}

fn save_png(buf: Vec<u8>, w: u32, h: u32, out: &Path) -> Result<()> {
    // The error already names the path and the OS error.
    Ok(write_atomic(out, &png_bytes(buf, w, h)?)?)
}

fn pe<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// A named, coloured line of (epoch, value) points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

/// Two panels like the tutorial's figure: accuracy and cross-entropy loss per epoch, train and
/// validation.
pub fn plot_curves(history: &[EpochRecord], title: &str) -> Result<Vec<u8>> {
    register_font();
    let (w, h) = (1200u32, 480u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        let root = root.titled(title, (FAMILY, 20)).map_err(pe)?;
        let (left, right) = root.split_horizontally(w / 2);
        let n = history.len() as f64;
        let xr = if history.len() > 1 { 1.0..n } else { 0.5..1.5 };
        let acc_series: [Series; 2] = [
            (
                "train",
                BLUE,
                history
                    .iter()
                    .map(|r| (r.epoch as f64, r.train_accuracy))
                    .collect(),
            ),
            (
                "val",
                RED,
                history
                    .iter()
                    .filter_map(|r| r.val_accuracy.map(|v| (r.epoch as f64, v)))
                    .collect(),
            ),
        ];
        let loss_series: [Series; 2] = [
            (
                "train",
                BLUE,
                history
                    .iter()
                    .map(|r| (r.epoch as f64, r.train_loss))
                    .collect(),
            ),
            (
                "val",
                RED,
                history
                    .iter()
                    .filter_map(|r| r.val_loss.map(|v| (r.epoch as f64, v)))
                    .collect(),
            ),
        ];
        let max_loss = loss_series
            .iter()
            .flat_map(|s| s.2.iter().map(|p| p.1))
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.05;
        for (area, caption, ylabel, yr, series) in [
            (&left, "Accuracy", "accuracy", 0.0..1.0, &acc_series),
            (
                &right,
                "Cross-entropy loss",
                "loss",
                0.0..max_loss,
                &loss_series,
            ),
        ] {
            let mut chart = ChartBuilder::on(area)
                .caption(caption, (FAMILY, 18))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d(xr.clone(), yr)
                .map_err(pe)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(ylabel)
                .x_labels(history.len().clamp(2, 11))
                .x_label_formatter(&integer_ticks)
                .label_style((FAMILY, 13))
                .axis_desc_style((FAMILY, 15))
                .draw()
                .map_err(pe)?;
            for (name, color, pts) in series.iter() {
                if pts.is_empty() {
                    continue;
                }
                let c = *color;
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                    .map_err(pe)?
                    .label(*name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(pe)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::MiddleRight)
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(pe)?;
        }
        root.present().map_err(pe)?;
    }
    png_bytes(buf, w, h)
}

/// Epochs are whole numbers: a tick between two is left blank.
fn integer_ticks(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        String::new()
    }
}

/// L-BFGS has no epochs: its objective (mean cross-entropy + λ/2·‖W‖²) per iteration of the
/// final fit, and (when λ was swept) the validation cross-entropy and accuracy of each λ.
pub fn plot_lbfgs(rep: &headstart_head::lbfgs::LbfgsReport, title: &str) -> Result<Vec<u8>> {
    register_font();
    let (w, h) = (1200u32, 480u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        let root = root.titled(title, (FAMILY, 20)).map_err(pe)?;
        let (left, right) = root.split_horizontally(w / 2);
        let trace: Vec<(f64, f64)> = rep
            .objective_trace
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i as f64, v))
            .collect();
        let n = trace.len().max(2) as f64 - 1.0;
        let (lo, hi) = trace
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.1), b.max(p.1))
            });
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo, hi)
        } else {
            (0.0, 1.0)
        };
        let pad = (hi - lo) * 0.05;
        let mut chart = ChartBuilder::on(&left)
            .caption(
                format!("Objective, final fit (λ = {:.1e})", rep.l2),
                (FAMILY, 18),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..n.max(1.0), (lo - pad)..(hi + pad))
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc("iteration")
            .y_desc("cross-entropy + λ/2·‖W‖²")
            .x_label_formatter(&integer_ticks)
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 15))
            .draw()
            .map_err(pe)?;
        chart
            .draw_series(LineSeries::new(trace.iter().copied(), BLUE.stroke_width(2)))
            .map_err(pe)?;
        if rep.sweep.is_empty() {
            let style = TextStyle::from((FAMILY, 16).into_font()).color(&BLACK);
            right
                .draw(&Text::new(
                    format!(
                        "λ given: no sweep. {} iterations, converged: {}",
                        rep.iterations, rep.converged
                    ),
                    (40, 200),
                    style,
                ))
                .map_err(pe)?;
        } else {
            let lx: Vec<f64> = rep.sweep.iter().map(|s| s.0.max(1e-12).log10()).collect();
            let (x0, x1) = lx
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let (x0, x1) = if x1 > x0 {
                (x0, x1)
            } else {
                (x0 - 1.0, x0 + 1.0)
            };
            let max_loss = rep
                .sweep
                .iter()
                .map(|s| s.2)
                .fold(0.0f64, f64::max)
                .max(1e-3)
                * 1.05;
            let mut chart = ChartBuilder::on(&right)
                .caption("λ sweep on the validation slice", (FAMILY, 18))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .right_y_label_area_size(60)
                .build_cartesian_2d(x0..x1, 0.0..max_loss)
                .map_err(pe)?
                .set_secondary_coord(x0..x1, 0.0..1.0);
            chart
                .configure_mesh()
                .x_desc("λ")
                .y_desc("validation cross-entropy")
                .x_label_formatter(&|v| match integer_ticks(v).as_str() {
                    "" => String::new(),
                    n => format!("1e{n}"),
                })
                .label_style((FAMILY, 13))
                .axis_desc_style((FAMILY, 15))
                .draw()
                .map_err(pe)?;
            chart
                .configure_secondary_axes()
                .y_desc("validation accuracy")
                .label_style((FAMILY, 13))
                .axis_desc_style((FAMILY, 15))
                .draw()
                .map_err(pe)?;
            let loss: Vec<(f64, f64)> = lx.iter().zip(&rep.sweep).map(|(&x, s)| (x, s.2)).collect();
            let acc: Vec<(f64, f64)> = lx.iter().zip(&rep.sweep).map(|(&x, s)| (x, s.1)).collect();
            chart
                .draw_series(LineSeries::new(loss.iter().copied(), RED.stroke_width(2)))
                .map_err(pe)?
                .label("cross-entropy")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
            chart
                .draw_secondary_series(LineSeries::new(acc.iter().copied(), BLUE.stroke_width(2)))
                .map_err(pe)?
                .label("accuracy")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
            let chosen = rep.l2.max(1e-12).log10();
            chart
                .draw_series(std::iter::once(Circle::new(
                    (
                        chosen,
                        rep.sweep
                            .iter()
                            .find(|s| s.0 == rep.l2)
                            .map_or(0.0, |s| s.2),
                    ),
                    6,
                    BLACK.filled(),
                )))
                .map_err(pe)?
                .label("chosen λ")
                .legend(|(x, y)| Circle::new((x + 10, y), 4, BLACK.filled()));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::MiddleRight)
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(pe)?;
        }
        root.present().map_err(pe)?;
    }
    png_bytes(buf, w, h)
}

/// A sweep's configurations, best first (at most 40): mean cross-validated accuracy with its
/// 95 % interval as an error bar, the best in red.
pub fn plot_sweep(b: &headstart_head::sweep::Leaderboard, title: &str) -> Result<Vec<u8>> {
    register_font();
    let order: Vec<usize> = b.ranking().into_iter().take(40).collect();
    let (w, h) = (1200u32, 520u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        let root = root.titled(title, (FAMILY, 20)).map_err(pe)?;
        let (lo, hi) = order.iter().fold((1.0f64, 0.0f64), |(lo, hi), &i| {
            let c = &b.configurations[i];
            (lo.min(c.accuracy.ci95[0]), hi.max(c.accuracy.ci95[1]))
        });
        let pad = ((hi - lo) * 0.1).max(0.01);
        let (y0, y1) = ((lo - pad).max(0.0), (hi + pad).min(1.0));
        let n = order.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(20)
            .margin_bottom(44)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64 + 1.0, y0..y1)
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc("configuration (rank; labels in leaderboard.csv)")
            .y_desc("accuracy (mean of folds × seeds)")
            .x_labels(n.min(20) + 1)
            .x_label_formatter(&integer_ticks)
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 15))
            .draw()
            .map_err(pe)?;
        for (rank, &i) in order.iter().enumerate() {
            let c = &b.configurations[i];
            let x = rank as f64 + 1.0;
            let color = if i == b.best { RED } else { BLUE };
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![
                        (x, c.accuracy.ci95[0].max(y0)),
                        (x, c.accuracy.ci95[1].min(y1)),
                    ],
                    color.stroke_width(2),
                )))
                .map_err(pe)?;
            chart
                .draw_series(std::iter::once(Circle::new(
                    (x, c.accuracy.mean),
                    if i == b.best { 6 } else { 4 },
                    color.filled(),
                )))
                .map_err(pe)?;
        }
        let best = &b.configurations[b.best];
        let style = TextStyle::from((FAMILY, 14).into_font()).color(&RED);
        root.draw(&Text::new(
            format!(
                "best (red): {} — {:.4} [{:.4}, {:.4}]",
                best.settings.label(),
                best.accuracy.mean,
                best.accuracy.ci95[0],
                best.accuracy.ci95[1]
            ),
            (80, root.dim_in_pixel().1 as i32 - 26),
            style,
        ))
        .map_err(pe)?;
        root.present().map_err(pe)?;
    }
    png_bytes(buf, w, h)
}

/// One titled thumbnail.
pub struct Tile {
    /// The picture (any size; it is resized to the cell).
    pub image: RgbImage,
    /// Title lines with their colours.
    pub lines: Vec<(String, RGBColor)>,
}

/// Side of a thumbnail in a grid, in pixels.
pub const THUMB: u32 = 160;
const LINE_H: u32 = 17;

/// Square thumbnail: shorter side resized to [`THUMB`], then centre-cropped.
pub fn thumbnail(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let k = THUMB as f64 / w.min(h).max(1) as f64;
    let (nw, nh) = (
        ((w as f64 * k).round() as u32).max(THUMB),
        ((h as f64 * k).round() as u32).max(THUMB),
    );
    let r = resize(img, nw, nh, Interpolation::Bilinear);
    image::imageops::crop_imm(&r, (nw - THUMB) / 2, (nh - THUMB) / 2, THUMB, THUMB).to_image()
}

/// Draws tiles in a grid with `cols` columns and saves a PNG. Returns the image size.
pub fn draw_grid(tiles: &[Tile], cols: u32, out: &Path) -> Result<(u32, u32)> {
    register_font();
    let cols = cols.max(1).min(tiles.len().max(1) as u32);
    let rows = (tiles.len() as u32).div_ceil(cols).max(1);
    let lines = tiles
        .iter()
        .map(|t| t.lines.len() as u32)
        .max()
        .unwrap_or(1);
    let pad = 8u32;
    let (cw, ch) = (THUMB + pad, THUMB + pad + lines * LINE_H + 4);
    let (w, h) = (cols * cw + pad, rows * ch + pad);
    let mut canvas = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    for (i, t) in tiles.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        let thumb = thumbnail(&t.image);
        image::imageops::replace(
            &mut canvas,
            &thumb,
            (pad + c * cw) as i64,
            (pad + r * ch + lines * LINE_H + 4) as i64,
        );
    }
    let mut buf = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        for (i, t) in tiles.iter().enumerate() {
            let (c, r) = (i as u32 % cols, i as u32 / cols);
            for (k, (text, color)) in t.lines.iter().enumerate() {
                let mut s = text.clone();
                // Keep titles inside the cell (~8 px per character at 15 px).
                if s.chars().count() > 20 {
                    s = s.chars().take(19).collect::<String>() + "…";
                }
                let style = TextStyle::from((FAMILY, 15).into_font()).color(color);
                root.draw_text(
                    &s,
                    &style,
                    (
                        (pad + c * cw) as i32,
                        (pad + r * ch + k as u32 * LINE_H) as i32,
                    ),
                )
                .map_err(pe)?;
            }
        }
        root.present().map_err(pe)?;
    }
    save_png(buf, w, h, out)?;
    Ok((w, h))
}

/// One image of a prediction grid.
pub struct GridCell {
    /// The file.
    pub path: PathBuf,
    /// Predicted class.
    pub predicted: String,
    /// Its probability.
    pub score: f32,
    /// The true class, when the parent folder names one.
    pub truth: Option<String>,
    /// The head was trained on this image (so its prediction is not a held-out one).
    pub trained_on: bool,
}

/// The tutorial's prediction grid: "pred: X" in green when right, red when wrong, black when the
/// truth is unknown, and "(a training image)" under the photos the head was trained on; at most
/// 64 images.
pub fn prediction_grid(cells: &[GridCell], out: &Path) -> Result<(u32, u32)> {
    let limits = DecodeLimits::default();
    let green = RGBColor(0, 140, 0);
    let tiles: Vec<Tile> = cells
        .iter()
        .take(64)
        .filter_map(|c| {
            let bytes = std::fs::read(&c.path).ok()?;
            let image = decode_rgb(&bytes, &limits).ok()?;
            let color = match &c.truth {
                Some(t) if *t == c.predicted => green,
                Some(_) => RED,
                None => BLACK,
            };
            let name = |s: &str| headstart_core::text::for_terminal(s).into_owned();
            let mut lines = vec![(
                format!("pred: {} {:.2}", name(&c.predicted), c.score),
                color,
            )];
            if let Some(t) = &c.truth {
                lines.push((format!("true: {}", name(t)), BLACK));
            }
            if c.trained_on {
                lines.push(("(a training image)".into(), RGBColor(120, 120, 120)));
            }
            Some(Tile { image, lines })
        })
        .collect();
    draw_grid(&tiles, 8, out)
}

/// Colours for classes (Tableau 10, then cycled).
pub const CLASS_COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A 2-D map: one dot per image coloured by class, a legend (the first 20 classes), and a black
/// ring around the `flagged` ones.
pub fn plot_map(
    xy: &[f32],
    labels: &[u32],
    classes: &[String],
    flagged: &[bool],
    title: &str,
) -> Result<Vec<u8>> {
    register_font();
    let (w, h) = (1000u32, 860u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        let root = root.titled(title, (FAMILY, 20)).map_err(pe)?;
        let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for p in xy.chunks_exact(2) {
            x0 = x0.min(p[0]);
            x1 = x1.max(p[0]);
            y0 = y0.min(p[1]);
            y1 = y1.max(p[1]);
        }
        if xy.is_empty() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        let (px, py) = (((x1 - x0) * 0.05).max(1e-6), ((y1 - y0) * 0.05).max(1e-6));
        let mut chart = ChartBuilder::on(&root)
            .margin(15)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))
            .map_err(pe)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .label_style((FAMILY, 12))
            .draw()
            .map_err(pe)?;
        let colour = |c: u32| CLASS_COLOURS[c as usize % CLASS_COLOURS.len()];
        for (c, name) in classes.iter().enumerate().take(20) {
            let col = colour(c as u32);
            chart
                .draw_series(
                    xy.chunks_exact(2)
                        .zip(labels)
                        .filter(|(_, &l)| l as usize == c)
                        .map(|(p, _)| Circle::new((p[0], p[1]), 3, col.filled())),
                )
                .map_err(pe)?
                .label(crate::draw::short_label(name))
                .legend(move |(x, y)| Circle::new((x, y), 4, col.filled()));
        }
        // Classes beyond the legend's 20 are drawn too.
        chart
            .draw_series(
                xy.chunks_exact(2)
                    .zip(labels)
                    .filter(|(_, &l)| l as usize >= 20)
                    .map(|(p, &l)| Circle::new((p[0], p[1]), 3, colour(l).filled())),
            )
            .map_err(pe)?;
        if flagged.iter().any(|&f| f) {
            chart
                .draw_series(
                    xy.chunks_exact(2)
                        .zip(flagged)
                        .filter(|(_, &f)| f)
                        .map(|(p, _)| Circle::new((p[0], p[1]), 6, BLACK.stroke_width(2))),
                )
                .map_err(pe)?
                .label("flagged by the audit")
                .legend(|(x, y)| Circle::new((x, y), 5, BLACK.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 13))
            .draw()
            .map_err(pe)?;
        root.present().map_err(pe)?;
    }
    png_bytes(buf, w, h)
}

/// A name cut to 24 characters for legends, escaped for the picture.
pub fn short_label(s: &str) -> String {
    let s = headstart_core::text::for_terminal(s).into_owned();
    if s.chars().count() > 24 {
        s.chars().take(23).collect::<String>() + "…"
    } else {
        s
    }
}
