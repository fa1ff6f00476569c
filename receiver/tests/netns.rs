//! One scenario over kernel TCP instead of the user-space link emulation: the real `loa-receiver` binary runs
//! in its own network namespace, joined to the host by a veth pair shaped like a 3G link — `tc tbf` at 384 kbit/s
//! each way and 1 % of TCP packets dropped at random by nftables in both directions — and plays a bulletin on
//! time from a broker and a test controller on the host side.
//!
//! It needs root, `ip`, `tc` and `nft` (Debian: iproute2, nftables; `scripts/test` installs them). Where any is
//! missing (outside `scripts/test`, which requires them) or namespaces cannot be made (not root, an unprivileged
//! container), it prints why and passes as skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use loa_protocol::{BulletinId, PlayEvent, ReceiverId, Tier};
use loa_receiver::clock::{Clock, SystemClock};

/// Runs a command; `Err` with its stderr when it fails.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The namespace and veth pair, removed on drop.
struct Net {
    ns: String,
    host_if: String,
    host_ip: String,
    ns_ip: String,
}

impl Net {
    fn up() -> Result<Net, String> {
        let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root".into());
        }
        for tool in ["ip", "tc", "nft"] {
            if Command::new(tool).arg("-V").output().is_err() && Command::new(tool).arg("--version").output().is_err() {
                // scripts/test installs them: there, a missing tool is a failure, not a reason to skip.
                assert!(std::env::var_os("LOA_REQUIRE_TOOLS").is_none(), "{tool} is not installed");
                return Err(format!("{tool} is not installed"));
            }
        }
        let id = std::process::id() % 10_000;
        let subnet = 16 + id % 200;
        let net = Net {
            ns: format!("loa-t{id}"),
            host_if: format!("loah{id}"),
            host_ip: format!("10.213.{subnet}.1"),
            ns_ip: format!("10.213.{subnet}.2"),
        };
        let ns_if = format!("loan{id}");
        run(&["ip", "netns", "add", &net.ns])?;
        let exec = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", net.ns.as_str()];
            all.extend_from_slice(args);
            run(&all)
        };
        run(&["ip", "link", "add", &net.host_if, "type", "veth", "peer", "name", &ns_if])?;
        run(&["ip", "link", "set", &ns_if, "netns", &net.ns])?;
        run(&["ip", "addr", "add", &format!("{}/30", net.host_ip), "dev", &net.host_if])?;
        run(&["ip", "link", "set", &net.host_if, "up"])?;
        exec(&["ip", "addr", "add", &format!("{}/30", net.ns_ip), "dev", &ns_if])?;
        exec(&["ip", "link", "set", &ns_if, "up"])?;
        exec(&["ip", "link", "set", "lo", "up"])?;
        // 384 kbit/s each way: the host side shapes the downlink, the namespace side the uplink.
        let tbf = ["root", "tbf", "rate", "384kbit", "burst", "16kb", "latency", "400ms"];
        let mut down = vec!["tc", "qdisc", "add", "dev", net.host_if.as_str()];
        down.extend_from_slice(&tbf);
        run(&down)?;
        let mut up = vec!["tc", "qdisc", "add", "dev", ns_if.as_str()];
        up.extend_from_slice(&tbf);
        exec(&up)?;
        // 1 % of TCP packets lost at random, each way, inside the namespace.
        exec(&["nft", "add", "table", "inet", "loa"])?;
        for (chain, hook) in [("in", "input"), ("out", "output")] {
            let spec = format!("{{ type filter hook {hook} priority 0 ; policy accept ; }}");
            exec(&["nft", "add", "chain", "inet", "loa", chain, &spec])?;
            exec(&[
                "nft", "add", "rule", "inet", "loa", chain, "meta", "l4proto", "tcp", "numgen", "random", "mod", "100",
                "<", "1", "drop",
            ])?;
        }
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_binary_plays_on_time_over_a_shaped_lossy_kernel_link() {
    let net = match Net::up() {
        Ok(net) => net,
        Err(why) => {
            eprintln!("skipped: the network-namespace scenario needs root, ip, tc and nft ({why})");
            return;
        }
    };
    let host_ip: IpAddr = net.host_ip.parse().unwrap();
    let port = start_broker_on(host_ip);
    let me = ReceiverId::new("rx-0000000000aa").unwrap();
    let ctl = Ctl::start_at(&net.host_ip, port, &me).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ctl.receiver_config(port, dir.path().join("state"));
    cfg.broker_url = format!("mqtt://{}:{port}", net.host_ip);
    let config_path = dir.path().join("receiver.toml");
    std::fs::write(&config_path, toml::to_string(&cfg).unwrap()).unwrap();
    let wav_dir = dir.path().join("wav");
    let _receiver = Kill(
        Command::new("ip")
            .args(["netns", "exec", &net.ns, env!("CARGO_BIN_EXE_loa-receiver"), "--config"])
            .arg(&config_path)
            .arg("--sink")
            .arg(format!("wav:{}", wav_dir.display()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start loa-receiver in the namespace"),
    );
    wait_for("the receiver online over the shaped link", Duration::from_secs(30), || {
        ctl.seen.lock().unwrap().status.iter().any(|s| s.state == loa_protocol::StatusState::Online)
    })
    .await;

    // 20 s of audio (about 30 kB), due 20 s from now.
    let file = Arc::new(opus_file(20_000));
    let bulletin = BulletinId::new("b-0000000000aa-vi").unwrap();
    let now = SystemClock.now();
    let m = manifest(bulletin.as_str(), &file, now, Tier::Normal, 20_000, 4096);
    ctl.offer(&m, file.clone()).await;
    let at = now.saturating_add_ms(20_000);
    ctl.plan(now.unix_ms() as u64, vec![play("p-0000000000000001", at, &bulletin, Tier::Normal)]).await;

    wait_for("the play reported finished", Duration::from_secs(90), || {
        ctl.seen.lock().unwrap().reports.iter().any(|r| r.event == PlayEvent::Finished)
    })
    .await;
    let started = ctl.seen.lock().unwrap().reports.iter().find(|r| r.event == PlayEvent::Started).cloned().unwrap();
    let late = started.at.ms_since(at);
    assert!(late.abs() <= 1000, "started {late} ms from its time over the kernel link");
    assert!(wav_dir.join("p-0000000000000001.wav").is_file(), "the WAV sink got the play");
    let frames = ctl.seen.lock().unwrap().frames_of(&bulletin);
    eprintln!("netns scenario: {} chunks, {frames} frames sent, start {late} ms from plan", m.chunk_count());
}
