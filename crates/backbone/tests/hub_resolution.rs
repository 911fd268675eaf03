//! Offline-first weight resolution against a local, in-test Hugging Face hub.
//!
//! No test here reaches the internet: every endpoint is `http://127.0.0.1:PORT`, served by a
//! thread of this test that accepts a bounded number of connections and then stops by itself.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use headstart_backbone::weights::read_tensors;
use headstart_backbone::weights::resolve::{
    resolve_weights, resolve_with_env, ResolveOptions, ResolvedWeights, WeightsSource,
};
use headstart_backbone::{Architecture, Error};
use sha2::{Digest, Sha256};

const REPO: &str = "timm/resnet18.tv_in1k";
const FILE: &str = "model.safetensors";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// The most connections one test server accepts before stopping.
const MAX_CONNECTIONS: usize = 8;
/// The longest a test server lives, whatever happens.
const SERVER_LIFETIME: Duration = Duration::from_secs(60);

/// A file served by the test hub at `/{repo}/resolve/main/{file}`.
struct Served {
    url_path: String,
    body: Vec<u8>,
    quirk: Quirk,
}

/// How the test hub misbehaves for a file, if at all.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quirk {
    /// Answers like huggingface.co for an LFS file.
    None,
    /// Claims a sha256 (etag) that the content does not have.
    WrongSha256,
    /// Answers every request with a 302 that has no `Location` (hf-hub 0.4.3 unwraps it).
    RedirectWithoutLocation,
}

/// A minimal Hugging Face hub on 127.0.0.1 speaking just enough HTTP/1.1 for hf-hub 0.4.3.
struct HubServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HubServer {
    fn start(files: Vec<Served>) -> Self {
        assert!(
            files.iter().all(|f| !f.body.is_empty()),
            "serve non-empty files"
        );
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        let connections = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (connections, log, stop) = (connections.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || {
                let files: HashMap<String, (Vec<u8>, Quirk)> = files
                    .into_iter()
                    .map(|f| (f.url_path, (f.body, f.quirk)))
                    .collect();
                let deadline = Instant::now() + SERVER_LIFETIME;
                while connections.load(Ordering::SeqCst) < MAX_CONNECTIONS
                    && !stop.load(Ordering::SeqCst)
                    && Instant::now() < deadline
                {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            connections.fetch_add(1, Ordering::SeqCst);
                            if let Some(entry) = serve(stream, &files) {
                                log.lock().unwrap().push(entry);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
                // Count connections that reached the backlog but were never accepted.
                while let Ok(_conn) = listener.accept() {
                    connections.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        Self {
            addr,
            connections,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        let endpoint = format!("http://{}", self.addr);
        assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
        endpoint
    }

    /// Stops the server (closing its port); returns the connection count and the request log.
    fn shut_down(&mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread panicked");
        }
        (
            self.connections.load(Ordering::SeqCst),
            self.log.lock().unwrap().clone(),
        )
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request on `stream` (then closes it); returns `METHOD PATH range=.. auth=..`.
fn serve(mut stream: TcpStream, files: &HashMap<String, (Vec<u8>, Quirk)>) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split_whitespace();
    let (method, target) = (
        request_line.next()?.to_string(),
        request_line.next()?.to_string(),
    );
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let range = headers.get("range").cloned();
    let entry = format!(
        "{method} {target} range={} auth={}",
        range.as_deref().unwrap_or("-"),
        if headers.contains_key("authorization") {
            "yes"
        } else {
            "no"
        }
    );

    let Some((body, quirk)) = files.get(&target) else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return Some(entry);
    };
    let len = body.len();
    let etag = match quirk {
        Quirk::WrongSha256 => "ab".repeat(32),
        _ => hex::encode(Sha256::digest(body)),
    };
    if *quirk == Quirk::RedirectWithoutLocation {
        let _ = write!(
            stream,
            "HTTP/1.1 302 Found\r\nETag: \"{etag}\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return Some(entry);
    }
    // `Range: bytes=a-b` or `bytes=a-` (the only forms hf-hub sends).
    let (status, start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        None => ("200 OK", 0, len.saturating_sub(1)),
        Some(spec) => {
            let (a, b) = spec.split_once('-')?;
            let a: usize = a.parse().ok()?;
            let b: usize = if b.is_empty() {
                len - 1
            } else {
                b.parse().ok()?
            };
            if a >= len {
                let _ = write!(
                    stream,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                return Some(entry);
            }
            ("206 Partial Content", a, b.min(len - 1))
        }
    };
    let part = &body[start..=end];
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nETag: \"{etag}\"\r\nX-Linked-Etag: \"{etag}\"\r\nX-Repo-Commit: {COMMIT}\r\nConnection: close\r\n",
        part.len()
    );
    if status.starts_with("206") {
        response.push_str(&format!("Content-Range: bytes {start}-{end}/{len}\r\n"));
    }
    response.push_str("\r\n");
    let _ = stream.write_all(response.as_bytes());
    if method != "HEAD" {
        let _ = stream.write_all(part);
    }
    let _ = stream.flush();
    Some(entry)
}

/// A valid safetensors file holding `fc.bias = [1.5, -2.0]` (f32).
fn tiny_safetensors() -> Vec<u8> {
    let mut header = br#"{"fc.bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&1.5f32.to_le_bytes());
    out.extend_from_slice(&(-2.0f32).to_le_bytes());
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn served(repo: &str, file: &str, body: &[u8]) -> Served {
    Served {
        url_path: format!("/{repo}/resolve/main/{file}"),
        body: body.to_vec(),
        quirk: Quirk::None,
    }
}

/// A fake environment holding exactly `pairs`.
fn fake_env(pairs: &[(&str, &Path)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

/// ureq (inside hf-hub) routes requests through `*_PROXY` from the process environment and
/// ignores `NO_PROXY`; with one set, a request to 127.0.0.1 would leave the machine. Skip then.
fn proxy_configured() -> bool {
    let set = [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    if set {
        eprintln!("skipped: a *_PROXY variable is set, and hf-hub's client would use it");
    }
    set
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn looked(err: Error) -> Vec<String> {
    match err {
        Error::WeightsNotFound { backbone, looked } => {
            assert_eq!(backbone, "resnet18");
            looked
        }
        other => panic!("expected WeightsNotFound, got: {other}"),
    }
}

fn hf_repo_dir(hf_home: &Path) -> PathBuf {
    hf_home.join("hub").join("models--timm--resnet18.tv_in1k")
}

#[test]
fn downloads_from_the_hub_then_hits_the_cache_without_a_connection() {
    if proxy_configured() {
        return;
    }
    let body = tiny_safetensors();
    let sha = sha256_hex(&body);
    let mut server = HubServer::start(vec![served(REPO, FILE, &body)]);
    let endpoint = server.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let (hf_home, torch_home) = (tmp.path().join("hf"), tmp.path().join("torch"));
    let env = fake_env(&[
        ("HF_HOME", &hf_home),
        ("TORCH_HOME", &torch_home),
        ("HF_ENDPOINT", Path::new(&endpoint)),
    ]);

    let got = resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap();
    let repo_dir = hf_repo_dir(&hf_home);
    let snapshot = repo_dir.join("snapshots").join(COMMIT).join(FILE);
    assert_eq!(
        got,
        ResolvedWeights {
            path: snapshot.clone(),
            source: WeightsSource::HuggingFaceDownload {
                repo: REPO.into(),
                file: FILE.into(),
                endpoint: endpoint.clone(),
            },
            sha256: sha.clone(),
        }
    );
    assert_eq!(std::fs::read(&got.path).unwrap(), body);
    assert_eq!(
        std::fs::read(repo_dir.join("blobs").join(&sha)).unwrap(),
        body
    );
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs").join("main")).unwrap(),
        COMMIT
    );
    let tensors = read_tensors(&got.path).unwrap();
    assert_eq!(tensors.len(), 1);
    assert_eq!(tensors[0].0, "fc.bias");
    assert_eq!(tensors[0].1.to_vec1::<f32>().unwrap(), vec![1.5, -2.0]);

    // The whole exchange: a 1-byte ranged GET for the metadata, then a ranged GET of the file.
    let (connections, log) = server.shut_down();
    let url = format!("/{REPO}/resolve/main/{FILE}");
    assert_eq!(
        log,
        vec![
            format!("GET {url} range=bytes=0-0 auth=no"),
            format!("GET {url} range=bytes=0- auth=no"),
        ]
    );
    assert_eq!(connections, 2);

    // The server is gone: the second resolve must come from the cache.
    let again = resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap();
    assert_eq!(
        again.source,
        WeightsSource::HuggingFaceCache {
            repo: REPO.into(),
            file: FILE.into(),
        }
    );
    assert_eq!(again.path, snapshot);
    assert_eq!(again.sha256, sha);
}

#[test]
fn offline_with_empty_caches_lists_every_place_and_never_connects() {
    let body = tiny_safetensors();
    let mut server = HubServer::start(vec![served(REPO, FILE, &body)]);
    let endpoint = server.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let (hf_home, torch_home) = (tmp.path().join("hf"), tmp.path().join("torch"));
    let env = fake_env(&[
        ("HF_HOME", &hf_home),
        ("TORCH_HOME", &torch_home),
        ("HF_ENDPOINT", Path::new(&endpoint)),
        ("HF_HUB_OFFLINE", Path::new("1")),
    ]);

    let err =
        resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap_err();
    let message = err.to_string();
    let lines = looked(err);
    let expected = vec![
        format!(
            "Hugging Face cache: {} (not present)",
            hf_repo_dir(&hf_home).display()
        ),
        format!(
            "torch hub cache: {} (not present)",
            torch_home
                .join("hub/checkpoints/resnet18-f37072fd.pth")
                .display()
        ),
        format!("Hugging Face hub {endpoint} {REPO}/{FILE}: skipped, HF_HUB_OFFLINE=1"),
    ];
    assert_eq!(lines, expected);
    for line in &expected {
        assert!(message.contains(line.as_str()), "{message}");
    }
    // The fix (pass --weights …) is the binary's to add: see the CLI's hints.
    assert!(!hf_home.exists(), "nothing may be written offline");

    let (connections, log) = server.shut_down();
    assert_eq!(connections, 0, "{log:?}");
}

#[test]
fn torch_hub_cache_is_used_before_any_download() {
    let mut server = HubServer::start(vec![served(REPO, FILE, &tiny_safetensors())]);
    let endpoint = server.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let (hf_home, torch_home) = (tmp.path().join("hf"), tmp.path().join("torch"));
    let checkpoint = torch_home.join("hub/checkpoints/resnet18-f37072fd.pth");
    write(&checkpoint, b"torchvision resnet18");
    // Online on purpose: the local copy must win without a connection.
    let env = fake_env(&[
        ("HF_HOME", &hf_home),
        ("TORCH_HOME", &torch_home),
        ("HF_ENDPOINT", Path::new(&endpoint)),
    ]);
    let got = resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap();
    assert_eq!(got.source, WeightsSource::TorchHubCache(checkpoint.clone()));
    assert_eq!(got.path, checkpoint);
    assert_eq!(got.sha256, sha256_hex(b"torchvision resnet18"));

    // Without TORCH_HOME the cache is under $XDG_CACHE_HOME/torch.
    let xdg = tmp.path().join("xdg");
    let xdg_checkpoint = xdg.join("torch/hub/checkpoints/resnet18-f37072fd.pth");
    write(&xdg_checkpoint, b"other copy");
    let env = fake_env(&[
        ("HF_HOME", &hf_home),
        ("XDG_CACHE_HOME", &xdg),
        ("HF_ENDPOINT", Path::new(&endpoint)),
    ]);
    let got = resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap();
    assert_eq!(got.source, WeightsSource::TorchHubCache(xdg_checkpoint));

    let (connections, log) = server.shut_down();
    assert_eq!(connections, 0, "{log:?}");
}

#[test]
fn hugging_face_cache_written_by_python_beats_the_torch_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (hf_home, torch_home) = (tmp.path().join("hf"), tmp.path().join("torch"));
    // The layout huggingface_hub writes (here with a plain file instead of a blob symlink).
    let repo_dir = hf_repo_dir(&hf_home);
    write(&repo_dir.join("refs/main"), COMMIT.as_bytes());
    let snapshot = repo_dir.join("snapshots").join(COMMIT).join(FILE);
    write(&snapshot, b"hf copy");
    write(
        &torch_home.join("hub/checkpoints/resnet18-f37072fd.pth"),
        b"torch copy",
    );
    let env = fake_env(&[
        ("HF_HOME", &hf_home),
        ("TORCH_HOME", &torch_home),
        ("HF_HUB_OFFLINE", Path::new("true")),
    ]);
    let got = resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap();
    assert_eq!(
        got.source,
        WeightsSource::HuggingFaceCache {
            repo: REPO.into(),
            file: FILE.into(),
        }
    );
    assert_eq!(got.path, snapshot);
    assert_eq!(got.sha256, sha256_hex(b"hf copy"));

    // HF_HUB_CACHE takes precedence over HF_HOME, as in huggingface_hub.
    let env = fake_env(&[
        ("HF_HOME", &tmp.path().join("elsewhere")),
        ("HF_HUB_CACHE", &hf_home.join("hub")),
        ("TORCH_HOME", &torch_home),
        ("HF_HUB_OFFLINE", Path::new("1")),
    ]);
    let got = resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap();
    assert_eq!(got.path, snapshot);
}

#[test]
fn explicit_path_wins_over_every_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (hf_home, torch_home) = (tmp.path().join("hf"), tmp.path().join("torch"));
    let repo_dir = hf_repo_dir(&hf_home);
    write(&repo_dir.join("refs/main"), COMMIT.as_bytes());
    write(
        &repo_dir.join("snapshots").join(COMMIT).join(FILE),
        b"hf copy",
    );
    write(
        &torch_home.join("hub/checkpoints/resnet18-f37072fd.pth"),
        b"torch copy",
    );
    let mine = tmp.path().join("mine.safetensors");
    write(&mine, &tiny_safetensors());
    let env = fake_env(&[("HF_HOME", &hf_home), ("TORCH_HOME", &torch_home)]);
    let opts = ResolveOptions {
        explicit: Some(mine.clone()),
        ..ResolveOptions::default()
    };
    let got = resolve_with_env(Architecture::ResNet18, &opts, &env).unwrap();
    assert_eq!(
        got,
        ResolvedWeights {
            path: mine.clone(),
            source: WeightsSource::File(mine.clone()),
            sha256: sha256_hex(&tiny_safetensors()),
        }
    );

    // The public entry point takes the explicit path before reading any environment.
    let got = resolve_weights(Architecture::ResNet18, Some(&mine)).unwrap();
    assert_eq!(got.source, WeightsSource::File(mine));
}

#[test]
fn missing_explicit_path_is_an_error_naming_it_without_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let torch_home = tmp.path().join("torch");
    write(
        &torch_home.join("hub/checkpoints/resnet18-f37072fd.pth"),
        b"torch copy",
    );
    let missing = tmp.path().join("no-such-weights.safetensors");
    let env = fake_env(&[
        ("TORCH_HOME", &torch_home),
        ("HF_HUB_OFFLINE", Path::new("1")),
    ]);
    let opts = ResolveOptions {
        explicit: Some(missing.clone()),
        ..ResolveOptions::default()
    };
    let err = resolve_with_env(Architecture::ResNet18, &opts, &env).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
}

#[test]
fn unreachable_hub_becomes_one_line_quickly() {
    if proxy_configured() {
        return;
    }
    // A port that was just free: nothing listens there, so the connection is refused.
    let port = TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let tmp = tempfile::tempdir().unwrap();
    let env = fake_env(&[
        ("HF_HOME", &tmp.path().join("hf")),
        ("TORCH_HOME", &tmp.path().join("torch")),
        ("HF_ENDPOINT", Path::new(&endpoint)),
    ]);
    let started = Instant::now();
    let err =
        resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let lines = looked(err);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[2],
        format!("Hugging Face hub {endpoint} {REPO}/{FILE}: connection refused")
    );
}

#[test]
fn file_missing_on_the_hub_is_http_404() {
    if proxy_configured() {
        return;
    }
    let mut server = HubServer::start(Vec::new());
    let endpoint = server.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let env = fake_env(&[
        ("HF_HOME", &tmp.path().join("hf")),
        ("TORCH_HOME", &tmp.path().join("torch")),
        ("HF_ENDPOINT", Path::new(&endpoint)),
    ]);
    let lines = looked(
        resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap_err(),
    );
    assert_eq!(
        lines.last().unwrap(),
        &format!(
            "Hugging Face hub {endpoint} {REPO}/{FILE}: HTTP 404 (no such repository or file)"
        )
    );
    let (connections, log) = server.shut_down();
    assert_eq!(connections, 1, "{log:?}");
}

#[test]
fn hub_repo_override_downloads_that_repo_and_skips_the_torch_hub_cache() {
    if proxy_configured() {
        return;
    }
    let custom = "someone/resnet18-finetuned";
    let body = tiny_safetensors();
    let mut server = HubServer::start(vec![served(custom, FILE, &body)]);
    let endpoint = server.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let torch_home = tmp.path().join("torch");
    write(
        &torch_home.join("hub/checkpoints/resnet18-f37072fd.pth"),
        b"torchvision weights, not the requested ones",
    );
    let env = fake_env(&[
        ("HF_HOME", &tmp.path().join("hf")),
        ("TORCH_HOME", &torch_home),
        ("HF_ENDPOINT", Path::new(&endpoint)),
    ]);
    let opts = ResolveOptions {
        hub_repo: Some(custom.into()),
        ..ResolveOptions::default()
    };
    let got = resolve_with_env(Architecture::ResNet18, &opts, &env).unwrap();
    assert_eq!(
        got.source,
        WeightsSource::HuggingFaceDownload {
            repo: custom.into(),
            file: FILE.into(),
            endpoint,
        }
    );
    assert_eq!(got.sha256, sha256_hex(&body));
    let (connections, _) = server.shut_down();
    assert_eq!(connections, 2);
}

#[test]
fn corrupt_download_is_discarded_and_reported() {
    if proxy_configured() {
        return;
    }
    let mut file = served(REPO, FILE, &tiny_safetensors());
    file.quirk = Quirk::WrongSha256;
    let mut server = HubServer::start(vec![file]);
    let endpoint = server.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let hf_home = tmp.path().join("hf");
    let env = fake_env(&[
        ("HF_HOME", &hf_home),
        ("TORCH_HOME", &tmp.path().join("torch")),
        ("HF_ENDPOINT", Path::new(&endpoint)),
    ]);
    let lines = looked(
        resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap_err(),
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!(
            "Hugging Face hub {endpoint} {REPO}/{FILE}: download discarded, corrupt"
        )),
        "{last}"
    );
    let repo_dir = hf_repo_dir(&hf_home);
    assert!(!repo_dir.join("blobs").join("ab".repeat(32)).exists());
    assert!(!repo_dir.join("snapshots").join(COMMIT).join(FILE).exists());
    let (connections, _) = server.shut_down();
    assert_eq!(connections, 2);
}

#[test]
fn a_panic_inside_hf_hub_becomes_one_line() {
    if proxy_configured() {
        return;
    }
    let mut file = served(REPO, FILE, &tiny_safetensors());
    file.quirk = Quirk::RedirectWithoutLocation;
    let mut server = HubServer::start(vec![file]);
    let endpoint = server.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let env = fake_env(&[
        ("HF_HOME", &tmp.path().join("hf")),
        ("TORCH_HOME", &tmp.path().join("torch")),
        ("HF_ENDPOINT", Path::new(&endpoint)),
    ]);
    let lines = looked(
        resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap_err(),
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!(
            "Hugging Face hub {endpoint} {REPO}/{FILE}: hf-hub failed"
        )),
        "{last}"
    );
    assert!(!last.contains('\n'), "{last}");
    let (connections, _) = server.shut_down();
    assert_eq!(connections, 1);
}

#[test]
fn transformers_download_their_config_json_beside_the_weights_then_load_offline() {
    if proxy_configured() {
        return;
    }
    // Every named model resolves to its own repository (served here with the fixture's small
    // weights and config.json, which then size the model).
    for (arch, repo, dir, width) in [
        (
            Architecture::DinoV2Small,
            "facebook/dinov2-small",
            "dinov2",
            192,
        ),
        (
            Architecture::DinoV2Base,
            "facebook/dinov2-base",
            "dinov2",
            192,
        ),
        (
            Architecture::DinoV2Large,
            "facebook/dinov2-large",
            "dinov2",
            192,
        ),
        (
            Architecture::ClipVitB32,
            "openai/clip-vit-base-patch32",
            "clip",
            48,
        ),
        (
            Architecture::ClipVitB16,
            "openai/clip-vit-base-patch16",
            "clip",
            48,
        ),
        (
            Architecture::ClipVitL14,
            "openai/clip-vit-large-patch14",
            "clip",
            48,
        ),
    ] {
        let shared = |f: &str| headstart_testkit::shared(&format!("fixtures/{dir}/{f}"));
        let weights = std::fs::read(shared("model.safetensors")).unwrap();
        let config = std::fs::read(shared("config.json")).unwrap();
        let mut server = HubServer::start(vec![
            served(repo, "model.safetensors", &weights),
            served(repo, "config.json", &config),
        ]);
        let endpoint = server.endpoint();
        let tmp = tempfile::tempdir().unwrap();
        let hf_home = tmp.path().join("hf");
        let env = fake_env(&[("HF_HOME", &hf_home), ("HF_ENDPOINT", Path::new(&endpoint))]);
        let got = resolve_with_env(arch, &ResolveOptions::default(), &env).unwrap();
        assert!(
            matches!(&got.source, WeightsSource::HuggingFaceDownload { repo: r, .. } if r == repo),
            "{arch}: {:?}",
            got.source
        );
        assert_eq!(
            std::fs::read(got.path.with_file_name("config.json")).unwrap(),
            config
        );
        let (_, log) = server.shut_down();
        assert!(
            log.iter().any(|l| l.contains("/config.json")),
            "{arch}: {log:?}"
        );
        // Offline from now on: the cache has both files, and the config sizes the model.
        let again = resolve_with_env(arch, &ResolveOptions::default(), &env).unwrap();
        assert!(matches!(
            again.source,
            WeightsSource::HuggingFaceCache { .. }
        ));
        let map = headstart_backbone::weights::WeightMap::from_file(&again.path, None).unwrap();
        let model =
            headstart_backbone::Backbone::load(arch, &map, false, &candle_core::Device::Cpu)
                .unwrap();
        assert_eq!(model.config().feature_dim, width, "{arch}");
    }
}
