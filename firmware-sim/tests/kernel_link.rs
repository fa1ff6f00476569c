//! The kernel link carries the kernel's own TCP with its profile: from inside the namespace, opening a
//! connection to the host takes a round trip, and a download takes its bytes at the link rate while the kernel
//! repairs the packets the link loses. Needs root, `ip` and /dev/net/tun; skipped with the reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use loa_firmware_sim::link::{KernelLink, LinkProfile};
use nix::sched::CloneFlags;

#[test]
fn kernel_tcp_crosses_the_link_with_its_delay_rate_and_loss() {
    // 1.6 Mbit/s down (200 kB/s), 100 ms round trip, 5 % of packets lost each way.
    let profile = LinkProfile {
        name: "test".into(),
        rate_down_kbps: 1600,
        rate_up_kbps: 800,
        delay_ms: 50,
        jitter_ms: 0,
        loss_percent: 5.0,
        outages: None,
    };
    let link = match KernelLink::up(&profile) {
        Ok(link) => link,
        Err(e) => {
            eprintln!("skipped: the kernel link cannot be made here ({e})");
            return;
        }
    };
    const BYTES: usize = 400_000;
    let listener = TcpListener::bind((link.host_ip(), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&vec![7u8; BYTES]).unwrap();
    });
    let ns = link.namespace().to_string();
    let client = std::thread::spawn(move || {
        // This thread (only) moves into the receiver's namespace: its sockets are made there.
        let netns = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        nix::sched::setns(netns, CloneFlags::CLONE_NEWNET).unwrap();
        let t0 = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(20)).unwrap();
        let connected = t0.elapsed();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        (connected, t0.elapsed(), got)
    });
    let (connected, total, got) = client.join().unwrap();
    server.join().unwrap();
    let (down, up) = link.stats();
    eprintln!("connected in {connected:?}, {BYTES} B in {total:?}; down {down:?}; up {up:?}");
    assert_eq!(got.len(), BYTES);
    assert!(got.iter().all(|b| *b == 7), "the bytes arrive intact");
    assert!(connected >= Duration::from_millis(100), "a connection takes a round trip, not {connected:?}");
    // 400 kB at 200 kB/s: 2 s at least, IP headers and resent packets on top.
    assert!(total >= Duration::from_secs(2), "faster than the link: {total:?}");
    assert!(down.bytes as usize > BYTES, "every byte crossed the link: {down:?}");
    assert!(down.lost + up.lost > 0, "about 5 % of {} packets were lost: {down:?} {up:?}", down.packets + up.packets);
}
