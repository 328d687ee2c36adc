//! Recording of real traffic for the fuzz targets' seed corpora (`fuzz/record.sh`). With
//! `RLSPROXY_FUZZ_RECORD=DIR` set, [`super::proxy::start`] puts a forwarding tap in front of
//! the proxy (what clients send) and between the proxy and the cluster (what the proxy sends
//! and the server answers). Each connection becomes one file of records
//! `[direction: 0 to the server side, 1 back][length: u32 BE][bytes]`, in the order they
//! arrived. Unset (the default), nothing changes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// Where recordings go, when recording.
pub fn dir() -> Option<PathBuf> {
    std::env::var_os("RLSPROXY_FUZZ_RECORD").map(PathBuf::from)
}

/// A listener that forwards every connection to `target`, recording it as `DIR/<name>-…`.
pub async fn listen(dir: PathBuf, name: &'static str, target: SocketAddr) -> SocketAddr {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(&dir).expect("recording directory");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("tap binds");
    let addr = listener.local_addr().expect("tap address");
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{name}-{}-{n}.rec", std::process::id()));
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(target).await else { return };
                let log = Arc::new(Mutex::new(Vec::new()));
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                let _ = tokio::join!(pump(ri, wo, 0, log.clone()), pump(ro, wi, 1, log.clone()));
                let _ = std::fs::write(path, &*log.lock().await);
            });
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    direction: u8,
    log: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut log = log.lock().await;
            log.push(direction);
            log.extend_from_slice(&(n as u32).to_be_bytes());
            log.extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
