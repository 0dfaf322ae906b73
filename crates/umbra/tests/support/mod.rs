//! Helpers shared by the binary's end-to-end tests: running `umbra`, scratch
//! folders, free ports and a real nginx on 127.0.0.1.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const NGINX: &str = "/usr/sbin/nginx";

/// Runs the `umbra` binary in `dir` and waits for it.
pub fn umbra(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run umbra")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("umbra-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report")).expect("json")
}

/// nginx answering 200 "ok" everywhere, stopped when dropped.
pub struct Nginx {
    child: Child,
    pub url: String,
}

impl Nginx {
    pub fn start(dir: &Path) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: scripts/test installs nginx-light"
        );
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
             fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
             keepalive_requests 1000000;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\"; }} }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(NGINX)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
