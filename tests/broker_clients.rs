//! The embedded broker with another implementation of MQTT 3.1.1 than Loa's own (rumqttc): Mosquitto's
//! command-line clients `mosquitto_pub` and `mosquitto_sub` (Debian's `mosquitto-clients`). A retained plan
//! reaches a later subscriber with the retain flag; a QoS 2 publish (PUBREC, PUBREL, PUBCOMP) reaches a live
//! subscriber, at QoS 1 and without the retain flag; a wrong password is refused at CONNECT.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context};
use loa_controller::broker::{EmbeddedBroker, WireCounters};
use loa_controller::store::areas::NewArea;
use loa_controller::store::Store;
use loa_protocol::{ReceiverId, Topics};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const CONTROLLER: (&str, &str) = ("loa-controller", "controller-secret");

/// `mosquitto_pub` or `mosquitto_sub` against `port`, logged in as `(id, password)`, with `args`.
fn client(program: &str, port: u16, login: (&str, &str), args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-i",
        login.0,
        "-u",
        login.0,
        "-P",
        login.1,
        "-V",
        "mqttv311",
    ]);
    cmd.args(args).kill_on_drop(true);
    cmd
}

async fn finish(what: &str, cmd: &mut Command) -> anyhow::Result<Output> {
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .with_context(|| format!("{what}: no answer in {WAIT:?}"))?
        .with_context(|| format!("{what}: cannot run it (scripts/test installs mosquitto-clients)"))?;
    Ok(out)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_speak_with_the_embedded_broker() -> anyhow::Result<()> {
    loa_tests::init_logs();
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let area = store.create_area(&NewArea::root_village("Bản Thử"), 0)?;
    let a = store.register_receiver("Loa A", area, 0)?;
    let a_rx = ReceiverId::new(a.id.as_str())?;
    let t = Topics::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let broker = EmbeddedBroker::start(
        listener,
        store.clone(),
        CONTROLLER.0.into(),
        CONTROLLER.1.into(),
        std::sync::Arc::new(WireCounters::default()),
        t.chunks_filter(),
    )
    .await?;
    let port = broker.public_addr().context("public address")?.port();
    let cancel = CancellationToken::new();
    let running = tokio::spawn(broker.run(cancel.clone()));
    let a_login = (a.id.as_str(), a.secret.as_str());

    // Retained: the controller leaves a plan; the receiver subscribing later gets it, flagged retained.
    let plan = t.plan(&a_rx);
    let out = finish(
        "mosquitto_pub",
        &mut client("mosquitto_pub", port, CONTROLLER, &["-q", "1", "-r", "-t", &plan, "-m", "plan-for-a"]),
    )
    .await?;
    ensure!(out.status.success(), "retained publish failed: {}", text(&out.stderr));
    let filter = t.receiver_subscription(&a_rx);
    let args = ["-q", "1", "-t", filter.as_str(), "-C", "1", "-F", "%r %q %t %p"];
    let out = finish("mosquitto_sub", &mut client("mosquitto_sub", port, a_login, &args)).await?;
    ensure!(out.status.success(), "subscribe failed: {}", text(&out.stderr));
    ensure!(text(&out.stdout) == format!("1 1 {plan} plan-for-a"), "got {:?}", text(&out.stdout));

    // Live, QoS 2 from the receiver: the controller's subscriber gets it at QoS 1 (the most the broker grants),
    // not retained. The subscriber has no "ready" signal, so the report is sent again until it arrives.
    let reports = t.reports(&a_rx);
    let args = ["-q", "2", "-t", "loa/v1/up/+/report", "-C", "1", "-F", "%r %q %t %p"];
    let watcher = client("mosquitto_sub", port, CONTROLLER, &args).stdout(std::process::Stdio::piped()).spawn()?;
    let watched = tokio::spawn(watcher.wait_with_output());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !watched.is_finished() {
        ensure!(tokio::time::Instant::now() < deadline, "the controller's subscriber saw no report");
        let out = finish(
            "mosquitto_pub",
            &mut client("mosquitto_pub", port, a_login, &["-q", "2", "-t", &reports, "-m", "report-from-a"]),
        )
        .await?;
        ensure!(out.status.success(), "QoS 2 publish failed: {}", text(&out.stderr));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = watched.await??;
    ensure!(text(&out.stdout) == format!("0 1 {reports} report-from-a"), "got {:?}", text(&out.stdout));

    // A wrong password is refused at CONNECT.
    let out = finish(
        "mosquitto_pub",
        &mut client("mosquitto_pub", port, (a.id.as_str(), "wrong"), &["-t", &reports, "-m", "x"]),
    )
    .await?;
    ensure!(!out.status.success(), "a wrong password was accepted");
    ensure!(text(&out.stderr).to_lowercase().contains("password"), "stderr: {}", text(&out.stderr));

    cancel.cancel();
    running.await??;
    Ok(())
}
