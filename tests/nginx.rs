//! A real nginx (Debian's `nginx-light`, `/usr/sbin/nginx`) as an origin: one process in the
//! foreground (`daemon off; master_process off`) on a free loopback port, with its prefix, pid,
//! temp directories and logs in a temp directory. It normalizes paths as nginx does and answers
//! `admin:$uri`, `pub:$uri` or `other:$uri` with `X-Uri` and `X-Request-Uri` headers, and its
//! access log (`$request_uri $uri $status`, one line a request) shows what it was asked. Killed
//! when dropped. Tests that need it fail (not skip) when it is not installed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BINARY: &str = "/usr/sbin/nginx";

pub struct Nginx {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx and waits until it accepts connections.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr: SocketAddr = format!("127.0.0.1:{}", crate::free_port())
            .parse()
            .expect("addr");
        let path = |name: &str| dir.path().join(name).display().to_string();
        // Every temp path of the modules this build has, so nginx never writes outside `dir`.
        let version = Command::new(BINARY)
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_else(|e| {
                panic!("cannot run {BINARY} ({e}); install it: apt-get install -y nginx-light")
            });
        let mut temp_paths = format!(
            "client_body_temp_path {};\n  proxy_temp_path {};\n",
            path("body"),
            path("proxy")
        );
        for module in ["fastcgi", "uwsgi", "scgi"] {
            if !version.contains(&format!("--without-http_{module}_module")) {
                temp_paths.push_str(&format!(
                    "  {module}_temp_path {};\n",
                    path(&format!("{module}-temp"))
                ));
            }
        }
        let config = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {error_log} info;
events {{ worker_connections 64; }}
http {{
  {temp_paths}
  log_format uris '$request_uri $uri $status';
  access_log {access_log} uris;
  default_type text/plain;
  server {{
    listen {addr};
    add_header X-Uri $uri always;
    add_header X-Request-Uri $request_uri always;
    location /admin/ {{ return 200 "admin:$uri\n"; }}
    location /pub/ {{ return 200 "pub:$uri\n"; }}
    location / {{ return 200 "other:$uri\n"; }}
  }}
}}
"#,
            pid = path("nginx.pid"),
            error_log = path("error.log"),
            access_log = path("access.log"),
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, config).expect("write nginx.conf");
        let child = Command::new(BINARY)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(path("error.log"))
            .arg("-c")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {BINARY} ({e}); install it: apt-get install -y nginx-light")
            });
        let mut nginx = Self {
            addr,
            dir,
            child: Some(child),
        };
        nginx.wait_ready().await;
        nginx
    }

    async fn wait_ready(&mut self) {
        let (addr, log) = (self.addr, self.dir.path().join("error.log"));
        let child = self.child.as_mut().expect("started");
        crate::wait_until_up("nginx", child, Duration::from_secs(10), &log, async || {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The access log: one `$request_uri $uri $status` line a request.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.file("access.log")).unwrap_or_default()
    }

    /// The access log's lines.
    pub fn requests(&self) -> Vec<String> {
        self.access_log().lines().map(str::to_owned).collect()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.file("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- nginx access log ---\n{}--- nginx error log ---\n{}",
                self.access_log(),
                self.error_log()
            );
        }
    }
}
