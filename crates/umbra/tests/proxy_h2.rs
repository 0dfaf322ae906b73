//! HTTP/2 through `umbra proxy`: h2c by prior knowledge, and TLS with ALPN
//! (h2 and http/1.1) on a certificate made for the test.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Background, Nginx, free_port, scratch};

fn upstreams(dir: &Path) -> (Nginx, u16, u16) {
    let (prod, shadow) = (free_port(), free_port());
    let d = dir.display();
    let servers = format!(
        r#"
  log_format seen '$request_method $request_uri $server_protocol host=$host shadow=$http_x_umbra_shadow';
  server {{ listen 127.0.0.1:{prod}; access_log {d}/prod.log seen; location / {{ return 200 "ok"; }} }}
  server {{ listen 127.0.0.1:{shadow}; access_log {d}/shadow.log seen; location / {{ return 200 "ok"; }} }}
"#
    );
    (
        Nginx::with_servers(dir, &servers, &[prod, shadow]),
        prod,
        shadow,
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn h2_get<S>(io: S, uri: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let request = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
    let response = send.send_request(request).await.expect("h2 response");
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
    for _ in 0..100 {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= n {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{} never had {n} lines", path.display());
}

#[test]
fn h2c_requests_are_proxied_and_mirrored() {
    let dir = scratch("proxy-h2c");
    let (_nginx, prod, shadow) = upstreams(&dir);
    let listen = free_port();
    let _proxy = Background::start(
        &[
            "proxy",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--production",
            &format!("http://127.0.0.1:{prod}"),
            "--shadow",
            &format!("http://127.0.0.1:{shadow}"),
        ],
        &dir,
        &[listen],
    );
    let (status, body) = runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", listen))
            .await
            .unwrap();
        h2_get(tcp, "http://shop.example/h2c?x=1").await
    });
    assert_eq!((status, body.as_str()), (200, "ok"));
    // Production gets HTTP/1.1 with the :authority as its Host.
    let prod_log = wait_for_lines(&dir.join("prod.log"), 1);
    assert_eq!(
        prod_log[0],
        "GET /h2c?x=1 HTTP/1.1 host=shop.example shadow=-"
    );
    let shadow_log = wait_for_lines(&dir.join("shadow.log"), 1);
    assert_eq!(
        shadow_log[0],
        "GET /h2c?x=1 HTTP/1.1 host=shop.example shadow=1"
    );
}

#[test]
fn tls_offers_h2_and_http1_by_alpn() {
    let dir = scratch("proxy-tls");
    let (_nginx, prod, _shadow) = upstreams(&dir);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let listen = free_port();
    std::fs::write(
        dir.join("umbra.toml"),
        format!(
            "[listen]\naddress = \"127.0.0.1:{listen}\"\ntls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n\n\
             [production]\nservers = [{{ url = \"http://127.0.0.1:{prod}\" }}]\n"
        ),
    )
    .unwrap();
    let _proxy = Background::start(&["proxy", "--config", "umbra.toml"], &dir, &[listen]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = |alpn: &[u8]| {
        let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(c)
    };
    let rt = runtime();
    // h2 over TLS.
    let (status, body) = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", listen))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(client_config(b"h2"))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        h2_get(tls, "https://localhost/secure").await
    });
    assert_eq!((status, body.as_str()), (200, "ok"));
    // HTTP/1.1 over TLS.
    let status = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", listen))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(client_config(b"http/1.1"))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = Request::get("/h1")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.send_request(request).await.unwrap().status().as_u16()
    });
    assert_eq!(status, 200);
    let prod_log = wait_for_lines(&dir.join("prod.log"), 2);
    assert_eq!(prod_log[0], "GET /secure HTTP/1.1 host=localhost shadow=-");
    assert_eq!(prod_log[1], "GET /h1 HTTP/1.1 host=localhost shadow=-");
}
