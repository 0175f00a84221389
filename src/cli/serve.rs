//! `ichnet serve`: the web app on 127.0.0.1, for the README's "build, serve, open" run command.
//!
//! axum over hyper with tower-http's `ServeDir`: the request parsing, the limits on what a client
//! may send, conditional requests (`Last-Modified` / `If-Modified-Since` → 304) and pre-compressed
//! files (`X.gz` beside `X`, served with `Content-Encoding: gzip` to clients that accept it) come
//! from maintained crates rather than a hand-written parser. What this file decides is what
//! browsers check: exact MIME types (`application/wasm` for streaming compilation, JavaScript for
//! module workers), a Content-Security-Policy that keeps the scan on the machine (only this
//! origin, plus `'wasm-unsafe-eval'` which WebAssembly compilation needs; `frame-ancestors` can
//! only be a header), and no path that escapes the served folders.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use axum::middleware::{self, Next};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

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

/// Bigger request heads are refused with 431: a browser's GET is a few hundred bytes. (hyper
/// itself stops reading a head at ~400 KB; this is the app's own, tighter, limit.)
const MAX_HEAD_BYTES: usize = 16 * 1024;

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
    let _ = std::io::Write::flush(&mut std::io::stdout());
    serve_on(listener, &site)
}

/// Serve `site` on an already bound listener until the process ends (the tests bind port 0).
/// One thread: a local page for one user, and file reads are small next to the network.
fn serve_on(listener: TcpListener, site: &Site) -> Result<()> {
    let server_error =
        |e: std::io::Error| Error::InvalidInput(format!("the web server failed: {e}"));
    listener.set_nonblocking(true).map_err(server_error)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(server_error)?;
    let app = router(site)?;
    runtime
        .block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app).await
        })
        .map_err(server_error)
}

/// The routes: `/weights/…` from the weights folder, everything else from the app's folder, each
/// with pre-compressed variants; the guard and the fixed headers on every answer.
fn router(site: &Site) -> Result<Router> {
    let header = |name: HeaderName, value: &str| {
        HeaderValue::from_str(value)
            .map(|v| SetResponseHeaderLayer::overriding(name, v))
            .map_err(|e| Error::InvalidInput(format!("a response header could not be built: {e}")))
    };
    let www = ServeDir::new(&site.root)
        .precompressed_gzip()
        .append_index_html_on_directories(true);
    let mut app = Router::new();
    if let Some(w) = &site.weights {
        app = app.nest_service("/weights", ServeDir::new(w).precompressed_gzip());
    }
    Ok(app
        .fallback_service(www)
        .layer(middleware::from_fn(exact_types))
        .layer(middleware::from_fn(guard))
        .layer(header(header::CONTENT_SECURITY_POLICY, &site.csp)?)
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")?)
        .layer(header(header::REFERRER_POLICY, "no-referrer")?)
        .layer(header(
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        )?)
        // Revalidate every time (a 304 is cheap): a rebuilt wasm module and its JS glue must
        // never be mixed from two builds.
        .layer(header(header::CACHE_CONTROL, "no-cache")?))
}

/// Refuse what a page never sends before any file is touched: methods other than GET and HEAD
/// (405), and request heads over [`MAX_HEAD_BYTES`] (431).
async fn guard(req: Request<Body>, next: Next) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = status(StatusCode::METHOD_NOT_ALLOWED);
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    let head: usize = req.uri().to_string().len()
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > MAX_HEAD_BYTES {
        return status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    next.run(req).await
}

/// The type browsers require for each kind of file the app serves, whatever a MIME guesser
/// thinks (`.mjs` and `.js` must be JavaScript for module workers; `.wasm` must be
/// `application/wasm` for streaming compilation), and `Vary` for the pre-compressed variants.
async fn exact_types(req: Request<Body>, next: Next) -> Response<Body> {
    let path = req.uri().path();
    // A folder is answered with its index.html.
    let mime = if path.ends_with('/') {
        Some("text/html; charset=utf-8")
    } else {
        mime_type(Path::new(path))
    };
    let mut res = next.run(req).await;
    if res.status().is_success() {
        if let Some(mime) = mime {
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
        }
        res.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    res
}

/// A plain-text answer with just a status, e.g. "405 Method Not Allowed".
fn status(code: StatusCode) -> Response<Body> {
    let text = format!(
        "{} {}\n",
        code.as_u16(),
        code.canonical_reason().unwrap_or("")
    );
    let mut res = Response::new(Body::from(text));
    *res.status_mut() = code;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
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

/// The Content-Type for a file name's extension; `None` leaves the guesser's answer.
fn mime_type(path: &Path) -> Option<&'static str> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    Some(match ext.as_deref()? {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        "gz" => "application/gzip",
        "bpk" => "application/octet-stream",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// A served folder with one file of every kind the app has, a pre-compressed wasm and JS,
    /// a weights folder, and a secret beside them that must never be served.
    struct Fixture {
        dir: PathBuf,
        port: u16,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn start(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("ichnet-serve-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let www = dir.join("www");
        fs::create_dir_all(www.join("pkg")).unwrap();
        fs::create_dir_all(www.join("samples")).unwrap();
        fs::create_dir_all(dir.join("weights")).unwrap();
        fs::write(www.join("index.html"), "<!doctype html><title>x</title>").unwrap();
        fs::write(www.join("app.js"), "export const a = 1;\n").unwrap();
        fs::write(www.join("lib.mjs"), "export const b = 2;\n").unwrap();
        fs::write(www.join("style.css"), "body{}\n").unwrap();
        fs::write(www.join("data.json"), "{}\n").unwrap();
        fs::write(www.join("samples/s.nii.gz"), [0x1f, 0x8b, 8, 0]).unwrap();
        fs::write(www.join("pkg/m.wasm"), b"\0asm\x01\0\0\0").unwrap();
        fs::write(www.join("pkg/m.wasm.gz"), b"GZIPPED-WASM").unwrap();
        fs::write(www.join("pkg/m.js"), "export default 1;\n").unwrap();
        fs::write(www.join("pkg/m.js.gz"), b"GZIPPED-JS").unwrap();
        fs::write(dir.join("weights/w.bpk"), [1u8, 2, 3]).unwrap();
        fs::write(dir.join("secret.txt"), "SECRET-OUTSIDE-WWW").unwrap();
        let args = ServeArgs {
            port: 0,
            dir: www,
            weights: dir.join("weights"),
            embed_origins: vec![],
        };
        let site = Site::new(&args).unwrap();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || serve_on(listener, &site));
        Fixture { dir, port }
    }

    /// One raw request (exact bytes: no URL normalisation), the answer's status, lowercased
    /// headers and body.
    fn raw(port: u16, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A refused request may close the socket while we are still writing: that is fine.
        let _ = s.write_all(request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&out)));
        let head = String::from_utf8_lossy(&out[..split]).to_string();
        let mut lines = head.lines();
        let code = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (code, headers, out[split + 4..].to_vec())
    }

    fn get(port: u16, path: &str, extra: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n");
        raw(port, req.as_bytes())
    }

    fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_file_kind_gets_its_type_and_the_security_headers() {
        let f = start("types");
        for (path, mime) in [
            ("/", "text/html; charset=utf-8"),
            ("/index.html", "text/html; charset=utf-8"),
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/lib.mjs", "text/javascript; charset=utf-8"),
            ("/pkg/m.js", "text/javascript; charset=utf-8"),
            ("/style.css", "text/css; charset=utf-8"),
            ("/data.json", "application/json"),
            ("/pkg/m.wasm", "application/wasm"),
            ("/samples/s.nii.gz", "application/gzip"),
            ("/weights/w.bpk", "application/octet-stream"),
        ] {
            let (code, h, _) = get(f.port, path, "");
            assert_eq!(code, 200, "{path}");
            assert_eq!(header(&h, "content-type"), Some(mime), "{path}");
            let csp = header(&h, "content-security-policy").unwrap_or_default();
            assert!(csp.contains("default-src 'self';"), "{path}: {csp}");
            assert!(csp.contains("frame-ancestors 'self';"), "{path}: {csp}");
            assert_eq!(
                header(&h, "x-content-type-options"),
                Some("nosniff"),
                "{path}"
            );
            assert_eq!(header(&h, "referrer-policy"), Some("no-referrer"), "{path}");
            assert_eq!(
                header(&h, "cross-origin-resource-policy"),
                Some("same-origin")
            );
            assert_eq!(
                header(&h, "content-encoding"),
                None,
                "{path}: not asked for gzip"
            );
        }
        // Refusals carry the policy too.
        let (code, h, _) = get(f.port, "/missing.js", "");
        assert_eq!(code, 404);
        assert!(header(&h, "content-security-policy").is_some());
    }

    #[test]
    fn pre_compressed_files_go_to_clients_that_accept_gzip() {
        let f = start("gzip");
        for (path, mime, body) in [
            ("/pkg/m.wasm", "application/wasm", &b"GZIPPED-WASM"[..]),
            (
                "/pkg/m.js",
                "text/javascript; charset=utf-8",
                &b"GZIPPED-JS"[..],
            ),
        ] {
            let (code, h, b) = get(f.port, path, "Accept-Encoding: gzip, br\r\n");
            assert_eq!(code, 200);
            assert_eq!(header(&h, "content-encoding"), Some("gzip"), "{path}");
            assert_eq!(header(&h, "content-type"), Some(mime), "{path}");
            assert_eq!(b, body, "{path}");
            let (_, h, b) = get(f.port, path, "");
            assert_eq!(header(&h, "content-encoding"), None);
            assert_ne!(b, body);
        }
        // A gzip file served as itself is not "encoded" a second time.
        let (_, h, b) = get(f.port, "/samples/s.nii.gz", "Accept-Encoding: gzip\r\n");
        assert_eq!(header(&h, "content-encoding"), None);
        assert_eq!(b, [0x1f, 0x8b, 8, 0]);
    }

    #[test]
    fn an_unchanged_file_is_answered_304() {
        let f = start("304");
        let (code, h, _) = get(f.port, "/app.js", "");
        assert_eq!(code, 200);
        let modified = header(&h, "last-modified").unwrap().to_string();
        let (code, h, body) = get(
            f.port,
            "/app.js",
            &format!("If-Modified-Since: {modified}\r\n"),
        );
        assert_eq!(code, 304);
        assert!(body.is_empty());
        assert!(header(&h, "content-security-policy").is_some());
        let old = "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT\r\n";
        assert_eq!(get(f.port, "/app.js", old).0, 200);
    }

    #[test]
    fn paths_outside_the_folders_are_refused_and_the_server_keeps_serving() {
        let f = start("paths");
        let secret = f.dir.join("secret.txt");
        for path in [
            "/../secret.txt".to_string(),
            "/%2e%2e/secret.txt".into(),
            "/%2E%2E%2Fsecret.txt".into(),
            "/..%2fsecret.txt".into(),
            "/pkg/../../secret.txt".into(),
            "/weights/../secret.txt".into(),
            "/weights/%2e%2e/secret.txt".into(),
            "/weights/..%5csecret.txt".into(),
            format!("/{}", secret.display()),
            format!("//{}", secret.display()),
        ] {
            let (code, _, body) = get(f.port, &path, "");
            assert!(code == 404 || code == 400, "{path}: {code}");
            assert!(
                !String::from_utf8_lossy(&body).contains("SECRET-OUTSIDE-WWW"),
                "{path} leaked the file"
            );
        }
        assert_eq!(get(f.port, "/app.js", "").0, 200);
    }

    #[test]
    fn malformed_and_oversized_requests_get_a_clean_error() {
        let f = start("bad");
        let (code, _, _) = raw(f.port, b"THIS IS NOT HTTP\r\n\r\n");
        assert_eq!(code, 400);
        let (code, _, _) = raw(
            f.port,
            b"GET /app.js HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        );
        assert_eq!(code, 400);
        // Over the app's limit (16 KiB): 431.
        let big = format!("X-Big: {}\r\n", "a".repeat(20_000));
        assert_eq!(get(f.port, "/app.js", &big).0, 431);
        // Over hyper's own (~400 KB): hyper answers 431 and closes while the client is still
        // sending, so the kernel may reset the connection before the answer is read; either way
        // nothing is served and the server lives on.
        let huge = format!(
            "GET /app.js HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1_000_000)
        );
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, f.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(huge.as_bytes());
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let head = String::from_utf8_lossy(&out[..out.len().min(64)]).to_string();
        assert!(out.is_empty() || head.starts_with("HTTP/1.1 431"), "{head}");
        let req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx";
        let (code, h, _) = raw(f.port, req);
        assert_eq!(code, 405);
        assert_eq!(header(&h, "allow"), Some("GET, HEAD"));
        // Still serving.
        let (code, _, body) = get(f.port, "/app.js", "");
        assert_eq!(code, 200);
        assert_eq!(body, b"export const a = 1;\n");
    }

    #[test]
    fn wasm_and_modules_get_the_types_browsers_require() {
        assert_eq!(
            mime_type(Path::new("pkg/ichnet_bg.wasm")),
            Some("application/wasm")
        );
        assert_eq!(
            mime_type(Path::new("worker.js")),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(mime_type(Path::new("s.nii.gz")), Some("application/gzip"));
        assert_eq!(mime_type(Path::new("LICENSE")), None);
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
