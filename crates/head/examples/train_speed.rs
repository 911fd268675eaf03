//! Times 20 SGD epochs (batch 32) on a synthetic cache of ROWS × DIM features:
//! `cargo run --release -p headstart-head --example train_speed -- [ROWS] [DIM] [CLASSES]`.

use std::time::Instant;

use headstart_head::rng::Shuffler;
use headstart_head::train::train_sgd;
use headstart_head::{Rows, SgdParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let (n, dim, classes) = (
        a.first().copied().unwrap_or(20_000),
        a.get(1).copied().unwrap_or(1280),
        a.get(2).copied().unwrap_or(5),
    );
    let mut r = Shuffler::new(1, 2);
    let mut rows = Rows {
        dim,
        ..Default::default()
    };
    for i in 0..n {
        let c = (i % classes) as u32;
        rows.y.push(c);
        rows.image.push(i);
        rows.x.extend(
            (0..dim).map(|d| r.unit() as f32 + if d % classes == c as usize { 0.5 } else { 0.0 }),
        );
    }
    let p = SgdParams::default().check()?;
    let t = Instant::now();
    let (_, hist) = train_sgd(&rows, &Rows::default(), classes, &p, &mut |_| {})?;
    let s = t.elapsed().as_secs_f64();
    println!("train-head sgd: {n} rows × {dim}, {classes} classes, {} epochs: {s:.2} s (final train acc {:.3})", hist.len(), hist.last().map(|h| h.train_accuracy).unwrap_or(0.0));
    Ok(())
}
