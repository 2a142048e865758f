//! HTTP on the userspace wire without QEMU: a second smoltcp host on the same loopback wire
//! (`netboot::wire::Stack` as a client) talks TCP to `seed netboot`'s wire stack. The `/v1/`
//! API hook answers on the wire as on kernel sockets, 40 connections at once are accepted, and
//! a multi-MiB file arrives intact.

use netboot::config::NetbootConfig;
use netboot::http::{ApiHandler, ApiRequest, ApiResponse};
use netboot::wire::{device::McastDevice, HostAddr, Stack};
use qemu::wire::WireAddr;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const SEED_IP: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);

struct Echo;
impl ApiHandler for Echo {
    fn handle(
        &self,
        req: ApiRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ApiResponse> + Send + 'static>> {
        Box::pin(async move {
            ApiResponse::json(
                http::StatusCode::OK,
                &serde_json::json!({ "path": req.path, "peer": req.peer.ip().to_string() }),
            )
        })
    }
}

/// GET `path` with `Connection: close`; the whole response (head and body).
async fn get(client: &Stack, path: &str) -> std::io::Result<Vec<u8>> {
    let mut s = client.tcp_connect(SocketAddrV4::new(SEED_IP, 8080)).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: seed\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(out)
}

fn body(resp: &[u8]) -> &[u8] {
    let i = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    &resp[i + 4..]
}

#[test]
fn wire_http_serves_the_api_many_connections_and_a_large_file() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = WireAddr::for_lab(&format!("wire-http-{}", std::process::id()));
    let http_root = tmp.path().join("http");
    std::fs::create_dir_all(&http_root).unwrap();
    let big: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(http_root.join("big.bin"), &big).unwrap();
    let text = tests::wire_config_head(SEED_IP, &tmp.path().join("state"), &addr, false)
        + &format!(
            r#"[http]
root = "{root}"
port = 8080
"#,
            root = http_root.display(),
        );
    let cfg = NetbootConfig::from_toml(&text).unwrap();
    let rt = tests::runtime();
    let shutdown = CancellationToken::new();
    let policy = Arc::new(cfg.static_policy());
    let metrics = Arc::new(netboot::metrics::Metrics::default());
    let sd = shutdown.clone();
    let api: Arc<dyn ApiHandler> = Arc::new(Echo);
    let m = metrics.clone();
    rt.spawn(async move {
        netboot::server::run_with_api(cfg, policy, m, Some(api), sd)
            .await
            .expect("netboot on the wire");
    });
    let client = Stack::start(
        HostAddr {
            mac: [0x02, 0, 0, 0x79, 0, 2],
            ip: CLIENT_IP,
            prefix_len: 24,
        },
        move || {
            let d = McastDevice::join(addr.group, addr.port, [0x02, 0, 0, 0x79, 0, 2])?;
            let fd = d.as_raw_fd();
            Ok((d, fd))
        },
        shutdown.clone(),
    )
    .unwrap();

    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            // The API, once the server is up (bounded retries).
            let mut first = None;
            for _ in 0..50 {
                if let Ok(r) = get(&client, "/v1/ping?x=1").await {
                    if !r.is_empty() {
                        first = Some(r);
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let r = first.expect("no answer from the seed's HTTP server on the wire");
            assert!(
                r.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&r)
            );
            let v: serde_json::Value = serde_json::from_slice(body(&r)).unwrap();
            assert_eq!(v["path"], "/v1/ping");
            assert_eq!(
                v["peer"],
                CLIENT_IP.to_string(),
                "the peer is the wire client"
            );

            // 40 connections at once (each handshake needs a listening socket of its own).
            let mut set = tokio::task::JoinSet::new();
            for i in 0..40 {
                let c = client.clone();
                set.spawn(async move { get(&c, &format!("/v1/n/{i}")).await });
            }
            let mut ok = 0;
            while let Some(r) = set.join_next().await {
                let r = r.unwrap().expect("concurrent request");
                assert!(r.starts_with(b"HTTP/1.1 200"));
                ok += 1;
            }
            assert_eq!(ok, 40);

            // A large file, intact.
            let t = Instant::now();
            let r = get(&client, "/big.bin").await.unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert!(r.starts_with(b"HTTP/1.1 200"));
            assert_eq!(body(&r).len(), big.len());
            assert!(body(&r) == &big[..], "file content differs");
            eprintln!(
                "8 MiB over the wire (smoltcp ↔ smoltcp, debug build): {:.2} s, {:.1} MiB/s",
                secs,
                8.0 / secs
            );
        })
        .await
        .expect("HTTP over the wire took over 60 s");
    });
    assert!(metrics.get("http_requests_total") >= 42);
    shutdown.cancel();
}
