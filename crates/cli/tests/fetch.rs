//! The demo's download → verify → unpack path, against a local HTTP server on 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::thread;

use sha2::{Digest, Sha256};

/// A tiny flower_photos.tgz: flower_photos/{roses,daisy}/*.jpg and a LICENSE.txt.
fn archive() -> Vec<u8> {
    let mut tgz = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut tgz, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (path, body) in [
            ("flower_photos/LICENSE.txt", &b"CC-BY"[..]),
            ("flower_photos/roses/1.jpg", b"rose one"),
            ("flower_photos/roses/2.jpg", b"rose two"),
            ("flower_photos/daisy/3.jpg", b"daisy"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, body).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }
    tgz
}

/// Serves `body` for at most `n` requests on 127.0.0.1, then stops.
fn serve(body: Vec<u8>, n: usize) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/flower_photos.tgz",
        listener.local_addr().unwrap()
    );
    assert!(url.starts_with("http://127.0.0.1:"));
    let h = thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .unwrap();
            stream.write_all(&body).unwrap();
        }
    });
    (url, h)
}

fn fetch(out: &Path, url: &str, sha: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_headstart"))
        .args([
            "fetch-flowers",
            "--out",
            &out.display().to_string(),
            "--url",
            url,
            "--sha256",
            sha,
            "--quiet",
        ])
        .output()
        .unwrap()
}

#[test]
fn downloads_verifies_and_unpacks_into_singular_class_folders() {
    let body = archive();
    let sha = hex::encode(Sha256::digest(&body));
    let (url, server) = serve(body, 1);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("data/flowers");
    let o = fetch(&out, &url, &sha);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    server.join().unwrap();
    assert_eq!(std::fs::read(out.join("rose/1.jpg")).unwrap(), b"rose one");
    assert_eq!(std::fs::read(out.join("daisy/3.jpg")).unwrap(), b"daisy");
    assert!(out.join("LICENSE.txt").is_file());
    assert!(!d.path().join("data/flowers.tgz").exists());
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 photos"));
    // Only the destination is left behind.
    let names: Vec<_> = std::fs::read_dir(d.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("flowers")]);
}

#[test]
fn a_checksum_mismatch_unpacks_nothing() {
    let (url, server) = serve(archive(), 1);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("flowers");
    let o = fetch(&out, &url, &"0".repeat(64));
    server.join().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sha256"));
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}
