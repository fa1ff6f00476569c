//! The emulated link on its own: an echo/sink server behind a [`Relay`], measured from the client side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use loa_firmware_sim::link::{LinkProfile, Relay, RelayHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn profile(down_kbps: u32, up_kbps: u32, delay_ms: u32, loss_percent: f64) -> LinkProfile {
    LinkProfile {
        name: "test".into(),
        rate_down_kbps: down_kbps,
        rate_up_kbps: up_kbps,
        delay_ms,
        jitter_ms: 0,
        loss_percent,
        outages: None,
    }
}

/// An upstream server that, per connection, echoes what it gets (`echo`) or sends `send` bytes and then closes.
async fn server(echo: bool, send: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if echo {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                } else {
                    let _ = s.write_all(&vec![7u8; send]).await;
                    let _ = s.shutdown().await;
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink).await;
                }
            });
        }
    });
    addr
}

async fn relay(upstream: String, p: LinkProfile, cancel: &CancellationToken) -> RelayHandle {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::new(l, upstream, p);
    let handle = relay.handle();
    tokio::spawn(relay.run(cancel.clone()));
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_is_the_rate_within_15_percent() {
    let cancel = CancellationToken::new();
    let size = 200 * 1024;
    let h = relay(server(false, size).await, profile(400, 400, 10, 0.0), &cancel).await;
    let mut c = TcpStream::connect(h.addr().unwrap()).await.unwrap();
    let mut first = [0u8; 1];
    c.read_exact(&mut first).await.unwrap();
    let t0 = Instant::now();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(rest.len() + 1, size);
    let kbps = (size as f64 * 8.0 / 1000.0) / secs;
    assert!((340.0..=460.0).contains(&kbps), "{kbps:.0} kbit/s through a 400 kbit/s link ({secs:.2} s)");
    let s = h.stats();
    assert_eq!(s.down.bytes, size as u64);
    assert!(s.down.segments >= (size / 1460) as u64);
    assert!(s.tcp_bytes() > size as u64);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_latency_is_the_delay() {
    let cancel = CancellationToken::new();
    let h = relay(server(true, 0).await, profile(10_000, 10_000, 100, 0.0), &cancel).await;
    let mut c = TcpStream::connect(h.addr().unwrap()).await.unwrap();
    let mut buf = [0u8; 4];
    // The first exchange includes the emulated connect; measure the second.
    c.write_all(b"ping").await.unwrap();
    c.read_exact(&mut buf).await.unwrap();
    let t0 = Instant::now();
    c.write_all(b"pong").await.unwrap();
    c.read_exact(&mut buf).await.unwrap();
    let rtt = t0.elapsed();
    assert_eq!(&buf, b"pong");
    assert!(rtt >= Duration::from_millis(200) && rtt < Duration::from_millis(300), "round trip {rtt:?}");
    cancel.cancel();
}

async fn time_transfer(loss: f64) -> (Duration, loa_firmware_sim::link::DirStats) {
    let cancel = CancellationToken::new();
    let size = 60 * 1024;
    let h = relay(server(false, size).await, profile(2_000, 2_000, 10, loss), &cancel).await;
    let mut c = TcpStream::connect(h.addr().unwrap()).await.unwrap();
    let t0 = Instant::now();
    let mut all = Vec::new();
    c.read_to_end(&mut all).await.unwrap();
    assert_eq!(all.len(), size);
    let down = h.stats().down;
    cancel.cancel();
    (t0.elapsed(), down)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losses_are_sent_again_and_hold_delivery() {
    let (clean, clean_down) = time_transfer(0.0).await;
    let (lossy, down) = time_transfer(20.0).await;
    assert_eq!(clean_down.lost_segments, 0);
    let lost = down.lost_segments;
    assert!(lost > 0);
    // Each resend takes the link again: at 2 Mbit/s the bytes sent, resends included, need this long at least.
    let floor = Duration::from_secs_f64(down.tcp_data_bytes() as f64 * 8.0 / 2e6);
    assert!(lossy >= floor && lossy >= clean, "clean {clean:?}, lossy {lossy:?} (floor {floor:?}) with {lost} losses");
    // Each loss holds its segment (and those behind it) back a round trip (20 ms) at least.
    assert!(down.held_us >= lost * 20_000, "{} µs held for {lost} losses", down.held_us);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_holds_bytes_and_disconnect_closes() {
    let cancel = CancellationToken::new();
    let h = relay(server(true, 0).await, profile(10_000, 10_000, 5, 0.0), &cancel).await;
    let mut c = TcpStream::connect(h.addr().unwrap()).await.unwrap();
    let mut buf = [0u8; 2];
    c.write_all(b"hi").await.unwrap();
    c.read_exact(&mut buf).await.unwrap();

    h.outage(Duration::from_millis(600));
    assert!(h.in_outage());
    let t0 = Instant::now();
    c.write_all(b"yo").await.unwrap();
    c.read_exact(&mut buf).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(550), "echo came back during the outage after {:?}", t0.elapsed());
    assert_eq!(&buf, b"yo");

    h.disconnect();
    let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await.expect("not closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert_eq!(h.stats().forced_closes, 1);
    // New connections still work.
    let mut c2 = TcpStream::connect(h.addr().unwrap()).await.unwrap();
    c2.write_all(b"ok").await.unwrap();
    c2.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ok");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_outage_drops_the_connection() {
    let cancel = CancellationToken::new();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::new(l, server(true, 0).await, profile(10_000, 10_000, 5, 0.0))
        .with_max_outage(Duration::from_millis(300));
    let h = relay.handle();
    tokio::spawn(relay.run(cancel.clone()));
    let mut c = TcpStream::connect(h.addr().unwrap()).await.unwrap();
    let mut buf = [0u8; 2];
    c.write_all(b"hi").await.unwrap();
    c.read_exact(&mut buf).await.unwrap();
    h.outage(Duration::from_secs(30));
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf)).await.expect("not closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    h.end_outage();
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_resets_do_not_hurt_the_relay() {
    let cancel = CancellationToken::new();
    // Upstream that accepts and drops at once; and a dead upstream port.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rude = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    let h = relay(rude, profile(1_000, 1_000, 5, 0.0), &cancel).await;
    for _ in 0..5 {
        let mut c = TcpStream::connect(h.addr().unwrap()).await.unwrap();
        let _ = c.write_all(&[1u8; 5000]).await;
        let mut buf = [0u8; 16];
        let _ = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await;
    }
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let h2 = relay(dead, profile(1_000, 1_000, 5, 0.0), &cancel).await;
    let mut c = TcpStream::connect(h2.addr().unwrap()).await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await.expect("not closed");
    assert!(matches!(r, Ok(0) | Err(_)));
    // A client that resets mid-transfer.
    let h3 = relay(server(false, 500_000).await, profile(1_000, 1_000, 5, 0.0), &cancel).await;
    let c = TcpStream::connect(h3.addr().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).ok();
    drop(c);
    // Still serving.
    let mut c = TcpStream::connect(h.addr().unwrap()).await.unwrap();
    let _ = c.write_all(b"x").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.stats().connections < 6 {
        assert!(Instant::now() < deadline, "the relay stopped accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
}
