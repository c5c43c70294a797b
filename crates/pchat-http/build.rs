//! Embeds the web client (`web/` at the repository root) into the binary: every file under it becomes an entry
//! of `ASSETS` (path, bytes, content type), and `ASSETS_VERSION` is a hash of them all, used as the cache-busting
//! directory the assets are served under (`/assets/<version>/…`, cached as immutable). Text assets are also
//! gzip-compressed here (the server sends that form to browsers that accept it). No Node.js, no network.

// A build script has no one to return an error to: a missing or unreadable web/ stops the build with its reason.
#![allow(clippy::expect_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let web = manifest.join("../../web").canonicalize().expect("the web client's source is in web/");
    println!("cargo:rerun-if-changed={}", web.display());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut files = Vec::new();
    collect(&web, &web, &mut files);
    files.sort();
    // FNV-1a over names and contents: a cache-busting version, not a security measure.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut entries = String::new();
    for (name, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let bytes = std::fs::read(path).expect("a web client file is readable");
        for b in name.as_bytes().iter().chain([0u8].iter()).chain(bytes.iter()) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let kind = match Path::new(name).extension().and_then(|e| e.to_str()) {
            Some("html") => "text/html; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("png") => "image/png",
            Some("json") => "application/json",
            _ => "application/octet-stream",
        };
        // The compressed form, when it is smaller (text; images are compressed already).
        let gz = if kind.starts_with("text/") || kind.contains("json") || kind.contains("svg") {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            std::io::Write::write_all(&mut encoder, &bytes).expect("compressing in memory");
            let packed = encoder.finish().expect("compressing in memory");
            let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            let gz_path = out_dir.join(format!("{safe}.gz"));
            std::fs::write(&gz_path, &packed).expect("OUT_DIR is writable");
            (packed.len() < bytes.len()).then(|| format!("Some(include_bytes!({:?}))", gz_path.display().to_string()))
        } else {
            None
        };
        let gz = gz.unwrap_or_else(|| "None".to_owned());
        let _ = writeln!(entries, "    ({name:?}, include_bytes!({:?}), {kind:?}, {gz}),", path.display().to_string());
    }
    let out = out_dir.join("assets.rs");
    let code = format!(
        "/// A file of the web client: path under `web/`, bytes, content type, gzip form (when smaller).\n\
         pub(crate) type Asset = (&'static str, &'static [u8], &'static str, Option<&'static [u8]>);\n\
         /// The web client's files.\n\
         pub(crate) static ASSETS: &[Asset] = &[\n{entries}];\n\
         /// A hash of every asset: the cache-busting part of their URLs.\n\
         pub(crate) const ASSETS_VERSION: &str = \"{hash:016x}\";\n"
    );
    std::fs::write(out, code).expect("OUT_DIR is writable");
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("web/ is readable").flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let name = rel.to_string_lossy().replace('\\', "/");
            if !name.starts_with('.') {
                out.push((name, path));
            }
        }
    }
}
