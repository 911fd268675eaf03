//! One image's rows: read, hash, decode, the eval view and the augmented views; and the
//! batched forward pass over them.

use super::*;

pub(super) enum Outcome {
    Reused,
    Skipped(String),
    Ready {
        views: Vec<ViewMeta>,
        pixels: Vec<f32>,
    },
}

pub(super) struct Prepared {
    pub(super) entry: ImageEntry,
    pub(super) outcome: Outcome,
}

/// Decodes one image and builds its views' network inputs (CHW, normalised).
pub(super) fn prepare(
    item: &DatasetItem,
    known: &HashMap<String, String>,
    backbone: &Backbone,
    opts: &ExtractOptions,
) -> Prepared {
    let mut entry = ImageEntry {
        path: item.rel_path.clone(),
        path_bytes_hex: item.path_bytes_hex(),
        label: item.label,
        split: item.split,
        bytes: 0,
        sha256: String::new(),
        status: ImageStatus::Ok,
        reason: None,
    };
    let bytes = match std::fs::read(&item.path) {
        Ok(b) => b,
        // Unreadable again, and recorded as such (empty sha256) last time: nothing new to do.
        Err(_) if known.get(entry.key()).is_some_and(|sha| sha.is_empty()) => {
            return Prepared {
                entry,
                outcome: Outcome::Reused,
            };
        }
        Err(e) => {
            return Prepared {
                entry,
                outcome: Outcome::Skipped(format!("cannot read: {e}")),
            };
        }
    };
    entry.bytes = bytes.len() as u64;
    entry.sha256 = hex::encode(Sha256::digest(&bytes));
    if known.get(entry.key()) == Some(&entry.sha256) {
        return Prepared {
            entry,
            outcome: Outcome::Reused,
        };
    }
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        build_views(&bytes, &item.rel_bytes, backbone, opts)
    }))
    .unwrap_or_else(|_| {
        Err(headstart_backbone::Error::image(
            "the decoder crashed on this file",
        ))
    });
    let outcome = match outcome {
        Ok((views, pixels)) => Outcome::Ready { views, pixels },
        Err(e @ headstart_backbone::Error::TooLarge { .. }) => Outcome::Skipped(format!(
            "{e} (raise the size limit and force a rebuild to accept it)"
        )),
        Err(e) => Outcome::Skipped(e.to_string()),
    };
    Prepared { entry, outcome }
}

pub(super) fn build_views(
    bytes: &[u8],
    rel: &[u8],
    backbone: &Backbone,
    opts: &ExtractOptions,
) -> headstart_backbone::Result<(Vec<ViewMeta>, Vec<f32>)> {
    let cfg = &backbone.config().preprocess;
    let img = preprocess::decode_rgb(bytes, &opts.limits)?;
    let (w, h) = img.dimensions();
    let s = cfg.input_size;
    let plane = 3 * (s as usize) * (s as usize);
    let n = opts.views as usize + 1;
    let mut pixels = vec![0f32; n * plane];
    let mut views = Vec::with_capacity(n);
    let eval = preprocess::eval_crop(&img, cfg);
    preprocess::normalize_into(&eval, cfg, &mut pixels[..plane]);
    views.push(ViewMeta {
        view: 0,
        crop: eval_box(w, h, cfg.resize_size, s),
        flip: false,
    });
    let crop_params = opts.augment;
    for v in 1..n as u32 {
        let (c, flip) = sample_view(opts.seed, rel, v, w, h, &crop_params);
        let mut crop = preprocess::resized_crop(
            &img,
            c.left,
            c.top,
            c.width,
            c.height,
            s,
            s,
            opts.augment.interpolation,
        );
        if flip {
            image::imageops::flip_horizontal_in_place(&mut crop);
        }
        let k = v as usize;
        preprocess::normalize_into(&crop, cfg, &mut pixels[k * plane..(k + 1) * plane]);
        views.push(ViewMeta {
            view: v,
            crop: [c.left as i64, c.top as i64, c.width as i64, c.height as i64],
            flip,
        });
    }
    Ok((views, pixels))
}

/// The source-pixel box that Resize(shorter side) + CenterCrop keeps (rounded).
pub(super) fn eval_box(w: u32, h: u32, resize: u32, crop: u32) -> [i64; 4] {
    let (w, h) = (w as f64, h as f64);
    let k = resize as f64 / w.min(h);
    let (cw, ch) = ((crop as f64 / k).min(w), (crop as f64 / k).min(h));
    [
        ((w - cw) / 2.0).round() as i64,
        ((h - ch) / 2.0).round() as i64,
        cw.round() as i64,
        ch.round() as i64,
    ]
}
