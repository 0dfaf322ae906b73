//! An nginx `upstream` block in a file of its own, which the nginx configuration
//! includes (`include /etc/nginx/umbra-upstream.conf;` in the `http` block), then
//! a reload command (`nginx -s reload`, `systemctl reload nginx`, ...).
//!
//! The file is written to a temporary file beside it, flushed to disk and
//! renamed over the old one, so nginx never reads half a file. It is rewritten,
//! and nginx reloaded, only when its text changes: a reload starts new workers,
//! which is not free.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ExportError, WeightsExporter, check_name};
use crate::weights::{ServerState, Weights};

/// Writes weights as an nginx `upstream` block and runs a reload command.
#[derive(Debug, Clone)]
pub struct NginxUpstreamFile {
    path: PathBuf,
    upstream: String,
    directives: Vec<String>,
    reload: Vec<String>,
    reload_timeout: Duration,
    written: Option<String>,
}

impl NginxUpstreamFile {
    /// The block `upstream <upstream> { ... }` goes to `path`.
    pub fn new(path: impl Into<PathBuf>, upstream: impl Into<String>) -> NginxUpstreamFile {
        NginxUpstreamFile {
            path: path.into(),
            upstream: upstream.into(),
            directives: Vec::new(),
            reload: Vec::new(),
            reload_timeout: Duration::from_secs(10),
            written: None,
        }
    }

    /// The command run after the file changes, as program and arguments (no
    /// shell), like `["nginx", "-s", "reload"]`. Empty: no reload.
    pub fn with_reload<S: Into<String>>(mut self, argv: impl IntoIterator<Item = S>) -> Self {
        self.reload = argv.into_iter().map(Into::into).collect();
        self
    }

    /// How long the reload command may take before it is killed (default 10 s).
    pub fn with_reload_timeout(mut self, timeout: Duration) -> Self {
        self.reload_timeout = timeout;
        self
    }

    /// Directives written into the block after the servers, like `keepalive 32;`.
    pub fn with_directives<S: Into<String>>(mut self, lines: impl IntoIterator<Item = S>) -> Self {
        self.directives = lines.into_iter().map(Into::into).collect();
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text for `weights`. nginx weights are at least 1, so an
    /// ejected server is written `down` (nginx keeps its slot in the hash
    /// balancers, which `down` is for).
    pub fn render(&self, weights: &Weights) -> Result<String, ExportError> {
        check_name("nginx upstream", &self.upstream)?;
        let mut out = format!(
            "# Written by umbra (weights interval {}): replaced on every change, do not edit.\nupstream {} {{\n",
            weights.interval, self.upstream
        );
        for ((name, w), s) in weights.rounded().into_iter().zip(&weights.servers) {
            check_name("nginx server", &name)?;
            if s.state == ServerState::Ejected {
                out.push_str(&format!("    server {name} down;  # ejected\n"));
            } else {
                out.push_str(&format!("    server {name} weight={};\n", w.max(1)));
            }
        }
        for d in &self.directives {
            if d.contains(['{', '}']) || d.contains('\n') {
                return Err(ExportError::BadName {
                    what: "nginx upstream directive",
                    value: d.clone(),
                    reason: "must be one simple directive on one line (no braces)",
                });
            }
            let d = d.trim().trim_end_matches(';');
            out.push_str(&format!("    {d};\n"));
        }
        out.push_str("}\n");
        Ok(out)
    }

    fn write(&self, text: &str) -> Result<(), ExportError> {
        let err = |source| ExportError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file = self
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upstream".into());
        let tmp = dir.join(format!(".{file}.umbra-{}.tmp", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(err)
    }

    fn run_reload(&self) -> Result<(), ExportError> {
        let Some((program, args)) = self.reload.split_first() else {
            return Ok(());
        };
        let failed = |reason: String| ExportError::Reload {
            command: self.reload.join(" "),
            reason,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot start: {e}")))?;
        // Read stderr on the side so a chatty command cannot fill the pipe and stall.
        let reader = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.by_ref().take(64 * 1024).read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).trim().to_string()
            })
        });
        let deadline = Instant::now() + self.reload_timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!(
                        "did not finish within {} and was killed",
                        humantime::format_duration(self.reload_timeout)
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => break Err(format!("cannot wait for it: {e}")),
            }
        };
        let stderr = reader.and_then(|r| r.join().ok()).unwrap_or_default();
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(failed(format!(
                "failed ({s}){}",
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                }
            ))),
            Err(why) => Err(failed(why)),
        }
    }
}

impl WeightsExporter for NginxUpstreamFile {
    fn describe(&self) -> String {
        format!(
            "nginx upstream {} in {}",
            self.upstream,
            self.path.display()
        )
    }

    fn export(&mut self, weights: &Weights) -> Result<(), ExportError> {
        let text = self.render(weights)?;
        // The interval number in the comment changes every time; compare the rest.
        let body = |t: &str| t.split_once('\n').map(|(_, b)| b.to_string());
        let unchanged = self.written.as_deref().and_then(body) == body(&text)
            && std::fs::read_to_string(&self.path)
                .ok()
                .is_some_and(|on_disk| body(&on_disk) == body(&text));
        if unchanged {
            return Ok(());
        }
        self.write(&text)?;
        self.written = Some(text);
        self.run_reload()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::weights::{ServerWeight, Weights};

    fn weights(ws: &[(&str, f64, ServerState)]) -> Weights {
        Weights {
            interval: 7,
            servers: ws
                .iter()
                .map(|(n, w, s)| ServerWeight {
                    server: n.to_string(),
                    weight: *w,
                    state: *s,
                    score: None,
                    latency_ms: None,
                    error_rate: None,
                })
                .collect(),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("umbra-control-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn renders_an_upstream_block_with_down_for_ejected() {
        let f = NginxUpstreamFile::new("/x/u.conf", "app").with_directives(["keepalive 16"]);
        let text = f
            .render(&weights(&[
                ("127.0.0.1:9000", 62.5, ServerState::Scored),
                ("127.0.0.1:9001", 37.5, ServerState::Scored),
                ("127.0.0.1:9002", 0.0, ServerState::Ejected),
            ]))
            .unwrap();
        assert!(
            text.starts_with("# Written by umbra (weights interval 7)"),
            "{text}"
        );
        assert!(text.contains("upstream app {\n    server 127.0.0.1:9000 weight=63;\n    server 127.0.0.1:9001 weight=37;\n    server 127.0.0.1:9002 down;  # ejected\n    keepalive 16;\n}\n"), "{text}");
        let bad = NginxUpstreamFile::new("/x/u.conf", "app } server evil");
        assert!(bad.render(&weights(&[])).is_err());
    }

    #[test]
    fn writes_atomically_and_reloads_only_on_change() {
        let dir = scratch("nginx-file");
        let path = dir.join("upstream.conf");
        let count = dir.join("reloads");
        // The reload hook appends a line per run: it must run once per change.
        let mut f = NginxUpstreamFile::new(&path, "app").with_reload([
            "sh",
            "-c",
            &format!("echo reload >> {}", count.display()),
        ]);
        let a = weights(&[
            ("h:1", 50.0, ServerState::Scored),
            ("h:2", 50.0, ServerState::Scored),
        ]);
        f.export(&a).unwrap();
        f.export(&Weights {
            interval: 8,
            ..a.clone()
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1);
        let b = weights(&[
            ("h:1", 70.0, ServerState::Scored),
            ("h:2", 30.0, ServerState::Scored),
        ]);
        f.export(&b).unwrap();
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("server h:1 weight=70;")
        );
        // Nothing but the file itself is left in the folder.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn a_failing_or_hanging_reload_is_an_error_that_says_so() {
        let dir = scratch("nginx-reload");
        let w = weights(&[("h:1", 100.0, ServerState::Scored)]);
        let mut f = NginxUpstreamFile::new(dir.join("u.conf"), "app").with_reload([
            "sh",
            "-c",
            "echo 'nginx: [emerg] bad' >&2; exit 1",
        ]);
        let e = f.export(&w).unwrap_err().to_string();
        assert!(
            e.contains("exit status: 1") && e.contains("[emerg] bad"),
            "{e}"
        );
        let mut f = NginxUpstreamFile::new(dir.join("v.conf"), "app")
            .with_reload(["sleep", "5"])
            .with_reload_timeout(Duration::from_millis(200));
        let started = Instant::now();
        let e = f.export(&w).unwrap_err().to_string();
        assert!(e.contains("killed"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let mut f = NginxUpstreamFile::new(dir.join("no/such/dir/u.conf"), "app");
        let e = f.export(&w).unwrap_err().to_string();
        assert!(e.contains("no/such/dir/u.conf: cannot write"), "{e}");
    }
}
