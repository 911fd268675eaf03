//! Times decoding + the eval transform on one thread:
//! `cargo run --release -p headstart-backbone --example decode_timing -- DATA_DIR [ARCH]`.

use std::time::Instant;

use headstart_backbone::preprocess::{self, DecodeLimits};
use headstart_backbone::Architecture;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).ok_or("usage: decode_timing DATA_DIR [ARCH]")?;
    let arch = Architecture::from_name(args.get(2).map(String::as_str).unwrap_or("resnet18"))?;
    let cfg = arch.config().preprocess;
    let mut files = Vec::new();
    for class in std::fs::read_dir(dir)? {
        let class = class?.path();
        if class.is_dir() {
            for f in std::fs::read_dir(&class)? {
                files.push(f?.path());
            }
        }
    }
    files.sort();
    let bytes: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let limits = DecodeLimits::default();
    let (mut t_decode, mut t_crop, mut t_norm) = (0.0, 0.0, 0.0);
    let mut out = vec![0f32; 3 * 224 * 224];
    for b in &bytes {
        let t = Instant::now();
        let img = preprocess::decode_rgb(b, &limits)?;
        t_decode += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let c = preprocess::eval_crop(&img, &cfg);
        t_crop += t.elapsed().as_secs_f64();
        let t = Instant::now();
        preprocess::normalize_into(&c, &cfg, &mut out);
        t_norm += t.elapsed().as_secs_f64();
    }
    let n = bytes.len() as f64;
    println!(
        "{} images, per image on one thread: decode {:.2} ms, resize+crop {:.2} ms, normalize {:.2} ms",
        bytes.len(),
        1e3 * t_decode / n,
        1e3 * t_crop / n,
        1e3 * t_norm / n
    );
    Ok(())
}
