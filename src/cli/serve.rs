//! `ichnet serve`: the web app on 127.0.0.1, for the README's "build, serve, open" run command.
//!
//! A deliberately small static server on `std::net` (the page is static files; pulling in an
//! async HTTP stack for that would double the CLI's dependencies). What it must get right is what
//! browsers check: exact MIME types (`application/wasm` for streaming compilation, JavaScript for
//! module workers), a Content-Security-Policy that keeps the scan on the machine (only this
//! origin, plus `'wasm-unsafe-eval'` which WebAssembly compilation needs), validators so a
//! reload costs a 304, and no path that escapes the served folders.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use ichnet::{Error, Result};

/// Serve the web app on 127.0.0.1.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Port on 127.0.0.1 (0 picks a free one; the URL printed says which).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The web app's folder (built with scripts/build-web.sh, which puts the wasm in DIR/pkg).
    #[arg(long, default_value = "www")]
    pub dir: PathBuf,
    /// Folder served at /weights/ (the network weights, kept out of www/ so they exist once).
    #[arg(long, default_value = "weights")]
    pub weights: PathBuf,
    /// An origin (e.g. https://portal.example) allowed to embed the app in an iframe and to be
    /// embedded by its example host page; repeatable. Without it only this origin may frame it.
    #[arg(long = "embed-origin", value_name = "ORIGIN")]
    pub embed_origins: Vec<String>,
}

/// Bigger request heads are refused: a browser's GET is a few hundred bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A client that sends nothing for this long is dropped, so an idle socket cannot pin a thread.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Run until killed.
pub fn run(args: &ServeArgs) -> Result<()> {
    let site = Site::new(args)?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, args.port)).map_err(|e| {
        Error::InvalidInput(format!("cannot listen on 127.0.0.1:{}: {e}", args.port))
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::InvalidInput(format!("cannot read the listening address: {e}")))?
        .port();
    println!("ICHNet is being served at http://127.0.0.1:{port}/ (Ctrl-C to stop)");
    if !site.root.join("pkg").join("ichnet_bg.wasm").is_file() {
        println!(
            "note: {} has no pkg/ichnet_bg.wasm yet: run scripts/build-web.sh first",
            site.root.display()
        );
    }
    // Tests read the URL from a pipe: make sure it is not sitting in a buffer.
    let _ = std::io::stdout().flush();
    let site = std::sync::Arc::new(site);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let site = std::sync::Arc::clone(&site);
        std::thread::spawn(move || {
            if let Err(e) = handle(&site, stream) {
                eprintln!("ichnet serve: {e}");
            }
        });
    }
    Ok(())
}

/// The served folders and the fixed response headers.
struct Site {
    root: PathBuf,
    weights: Option<PathBuf>,
    csp: String,
}

impl Site {
    fn new(args: &ServeArgs) -> Result<Site> {
        let root = args
            .dir
            .canonicalize()
            .map_err(|e| Error::io(&args.dir, e))?;
        if !root.join("index.html").is_file() {
            return Err(Error::InvalidInput(format!(
                "{} has no index.html: pass the web app's folder with --dir",
                args.dir.display()
            )));
        }
        // Weights are optional for serving (the page says when it cannot load them).
        let weights = args.weights.canonicalize().ok();
        for origin in &args.embed_origins {
            check_origin(origin)?;
        }
        Ok(Site {
            root,
            weights,
            csp: content_security_policy(&args.embed_origins),
        })
    }

    /// The file for a URL path, or None when there is none (or it would leave the served folders).
    fn resolve(&self, url_path: &str) -> Option<PathBuf> {
        let decoded = percent_decode(url_path)?;
        let rel = decoded.strip_prefix('/')?;
        let (base, rest) = match (rel.strip_prefix("weights/"), &self.weights) {
            (Some(rest), Some(w)) => (w.as_path(), rest),
            _ => (self.root.as_path(), rel),
        };
        let mut path = base.to_path_buf();
        for comp in Path::new(rest).components() {
            match comp {
                Component::Normal(c) => path.push(c),
                // `..`, absolute parts and drive prefixes never come from a page's own links.
                _ => return None,
            }
        }
        if path.is_dir() {
            path.push("index.html");
        }
        // A symlink inside the folder must not lead out of it either.
        let real = path.canonicalize().ok()?;
        (real.starts_with(base) && real.is_file()).then_some(real)
    }
}

/// The policy for every response: this origin only (plus the embedding partners for frames),
/// `'wasm-unsafe-eval'` so WebAssembly may compile, no inline script or style, no plugins.
fn content_security_policy(embed_origins: &[String]) -> String {
    let partners: String = embed_origins.iter().map(|o| format!(" {o}")).collect();
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; \
         connect-src 'self'; img-src 'self' data: blob:; style-src 'self'; font-src 'self'; \
         frame-src 'self'{partners}; frame-ancestors 'self'{partners}; object-src 'none'; \
         base-uri 'none'; form-action 'none'"
    )
}

/// An origin is scheme://host[:port] with nothing after it; anything else in a CSP would either
/// be ignored by the browser or widen the policy.
fn check_origin(origin: &str) -> Result<()> {
    let ok = origin.split_once("://").is_some_and(|(scheme, rest)| {
        matches!(scheme, "http" | "https")
            && !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "--embed-origin {origin:?} is not an origin: write it as scheme://host[:port], e.g. https://portal.example"
        )))
    }
}

fn mime_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json" | "map") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("gz") => "application/gzip",
        _ => "application/octet-stream",
    }
}

/// `%XX` escapes decoded; None for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    (!text.contains('\0') && !text.contains('\\')).then_some(text)
}

/// One request per connection (`Connection: close`): simple, and plenty for one local user.
fn handle(site: &Site, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(&stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        head.push_str(&line);
        if head.len() > MAX_HEAD_BYTES {
            return respond_status(site, &stream, 431, "Request Header Fields Too Large");
        }
    }
    let mut lines = head.lines();
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method != "GET" && method != "HEAD" {
        return respond_status(site, &stream, 405, "Method Not Allowed");
    }
    let if_none_match = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("if-none-match")
            .then(|| v.trim().to_string())
    });
    let url_path = target.split(['?', '#']).next().unwrap_or_default();
    let Some(path) = site.resolve(url_path) else {
        return respond_status(site, &stream, 404, "Not Found");
    };
    let meta = fs::metadata(&path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let etag = format!("\"{:x}-{:x}\"", meta.len(), mtime);
    if if_none_match.as_deref() == Some(etag.as_str()) {
        return write_head(site, &stream, 304, "Not Modified", None, &etag, 0);
    }
    let body = fs::read(&path)?;
    write_head(
        site,
        &stream,
        200,
        "OK",
        Some(mime_type(&path)),
        &etag,
        body.len(),
    )?;
    if method == "GET" {
        (&stream).write_all(&body)?;
    }
    Ok(())
}

fn write_head(
    site: &Site,
    mut stream: &TcpStream,
    code: u16,
    reason: &str,
    mime: Option<&str>,
    etag: &str,
    len: usize,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {code} {reason}\r\n");
    if let Some(mime) = mime {
        head.push_str(&format!("Content-Type: {mime}\r\n"));
    }
    if !etag.is_empty() {
        head.push_str(&format!("ETag: {etag}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {len}\r\n\
         Cache-Control: no-cache\r\n\
         Content-Security-Policy: {}\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n\
         Cross-Origin-Resource-Policy: same-origin\r\n\
         Connection: close\r\n\r\n",
        site.csp
    ));
    stream.write_all(head.as_bytes())
}

fn respond_status(site: &Site, stream: &TcpStream, code: u16, reason: &str) -> std::io::Result<()> {
    let body = format!("{code} {reason}\n");
    write_head(
        site,
        stream,
        code,
        reason,
        Some("text/plain; charset=utf-8"),
        "",
        body.len(),
    )?;
    let mut s = stream;
    s.write_all(body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(dir: &Path) -> Site {
        Site {
            root: dir.canonicalize().unwrap(),
            weights: None,
            csp: content_security_policy(&[]),
        }
    }

    #[test]
    fn wasm_and_modules_get_the_types_browsers_require() {
        assert_eq!(
            mime_type(Path::new("pkg/ichnet_bg.wasm")),
            "application/wasm"
        );
        assert_eq!(
            mime_type(Path::new("worker.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(mime_type(Path::new("s.nii.gz")), "application/gzip");
        assert_eq!(
            mime_type(Path::new("weights/ichnet.bpk")),
            "application/octet-stream"
        );
    }

    #[test]
    fn paths_outside_the_folder_are_not_served() {
        let dir = std::env::temp_dir().join(format!("ichnet-serve-test-{}", std::process::id()));
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("index.html"), "x").unwrap();
        fs::write(dir.join("sub/a.js"), "x").unwrap();
        let s = site(&dir);
        assert!(s.resolve("/").is_some());
        assert!(s.resolve("/sub/a.js").is_some());
        assert!(s.resolve("/sub/%61.js").is_some());
        assert!(s.resolve("/../etc/passwd").is_none());
        assert!(s.resolve("/sub/%2e%2e/%2e%2e/etc/passwd").is_none());
        assert!(s.resolve("/sub/..%5c..%5cx").is_none());
        assert!(s.resolve("/missing.js").is_none());
        assert!(s.resolve("/%zz").is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn policy_allows_only_this_origin_and_wasm() {
        let csp = content_security_policy(&[]);
        assert!(csp.contains("default-src 'self';"));
        assert!(csp.contains("script-src 'self' 'wasm-unsafe-eval';"));
        assert!(csp.contains("frame-ancestors 'self';"));
        assert!(!csp.contains("unsafe-inline"));
        let with = content_security_policy(&["https://portal.example".into()]);
        assert!(with.contains("frame-ancestors 'self' https://portal.example;"));
    }

    #[test]
    fn embed_origins_must_be_bare_origins() {
        assert!(check_origin("https://portal.example").is_ok());
        assert!(check_origin("http://localhost:8080").is_ok());
        assert!(check_origin("*").is_err());
        assert!(check_origin("https://a.example; script-src *").is_err());
        assert!(check_origin("https://a.example/path").is_err());
    }
}
