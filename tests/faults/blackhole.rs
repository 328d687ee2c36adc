//! A network path that can go silent: a veth pair into a network namespace of its own,
//! whose link a test takes down. Packets are then dropped without a reset or an ICMP error,
//! as on a dead network or a VM that vanished: only timeouts notice.
//!
//! Needs root (network namespaces); `ip` from iproute2.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;

/// Links made by this process, for unique names and subnets.
static LINKS: AtomicU32 = AtomicU32::new(0);

/// The namespace, the veth pair and one /30 between them.
pub struct Link {
    ns: String,
    veth: String,
    peer: String,
    /// The address on this side (the host's network namespace).
    pub host_ip: Ipv4Addr,
    /// The address inside the namespace.
    pub ns_ip: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Link {
    pub fn new() -> Self {
        let n = LINKS.fetch_add(1, Ordering::Relaxed);
        assert!(n < 64, "one /30 each in 10.213.<pid>.0/24");
        let pid = std::process::id();
        let id = format!("{}x{n}", pid % 100_000);
        let (ns, veth, peer) = (format!("rlsp-bh{id}"), format!("rbh{id}"), format!("rbp{id}"));
        let net = |host: u32| Ipv4Addr::new(10, 213, (pid % 256) as u8, (n * 4 + host) as u8);
        let (host_ip, ns_ip) = (net(1), net(2));
        ip(&["netns", "add", &ns]);
        let link = Self { ns, veth, peer, host_ip, ns_ip };
        ip(&["link", "add", &link.veth, "type", "veth", "peer", "name", &link.peer]);
        ip(&["link", "set", &link.peer, "netns", &link.ns]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &link.veth]);
        ip(&["-n", &link.ns, "addr", "add", &format!("{ns_ip}/30"), "dev", &link.peer]);
        ip(&["link", "set", &link.veth, "up"]);
        link.restore();
        link
    }

    /// Takes the namespace's end down: from now on every packet across the link is dropped
    /// (the host's end stays up, so its routes and addresses stay: nothing answers a refusal).
    pub fn cut(&self) {
        ip(&["-n", &self.ns, "link", "set", &self.peer, "down"]);
    }

    /// Brings the namespace's end (back) up.
    pub fn restore(&self) {
        ip(&["-n", &self.ns, "link", "set", &self.peer, "up"]);
    }

    /// Runs `f` on a thread that has entered the namespace; sockets it makes stay there.
    fn in_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.ns);
        thread::spawn(move || {
            let ns = File::open(&path).expect("open the namespace");
            // SAFETY: setns on a valid descriptor; it changes this thread's namespace only.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            f()
        })
    }

    /// A listener inside the namespace that relays each connection to the Unix socket
    /// `to` (which no network namespace separates); its address.
    pub fn forward_to_unix(&self, to: PathBuf) -> SocketAddr {
        let (tx, rx) = mpsc::channel();
        let ns_ip = self.ns_ip;
        self.in_ns(move || {
            let listener = TcpListener::bind((ns_ip, 0)).expect("bind in the namespace");
            tx.send(listener.local_addr().expect("addr")).expect("send the address");
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                let Ok(outbound) = UnixStream::connect(&to) else { continue };
                relay(inbound, outbound);
            }
        });
        rx.recv().expect("the forwarder's address")
    }

    /// A TCP connection to `addr` made from inside the namespace.
    pub fn connect_from_ns(&self, addr: SocketAddr) -> TcpStream {
        self.in_ns(move || TcpStream::connect(addr).expect("connect from the namespace")).join().expect("connect")
    }
}

/// Copies both ways, one thread per direction, until either side ends.
fn relay(tcp: TcpStream, unix: UnixStream) {
    let (Ok(mut tcp_in), Ok(mut unix_in)) = (tcp.try_clone(), unix.try_clone()) else { return };
    let (mut tcp_out, mut unix_out) = (tcp, unix);
    thread::spawn(move || {
        let _ = io::copy(&mut tcp_in, &mut unix_out);
        let _ = unix_out.shutdown(std::net::Shutdown::Write);
    });
    thread::spawn(move || {
        let _ = io::copy(&mut unix_in, &mut tcp_out);
        let _ = tcp_out.shutdown(std::net::Shutdown::Write);
    });
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting the namespace deletes the peer, and with it the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
    }
}
