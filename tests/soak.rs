//! The suite's soak: `loa-sim soak --short` in this process: 100 real receivers on mixed links with 5 % loss,
//! random outages and disconnects and power cuts mid-download, a Mosquitto restart and a SIGKILL of the real
//! `loa-controller` binary, over 2 minutes of bulletins. Every planned play must have gone on air within 2 s of
//! its time or be reported missed with a reason; no play twice, none corrupt, no report lost.

use std::path::PathBuf;

use loa_firmware_sim::soak::{self, SoakOptions};

/// `loa-controller` of this target directory (cargo builds every binary of the workspace for
/// `cargo test --workspace`); `None` when it is not built.
fn controller_exe() -> Option<PathBuf> {
    let deps = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let exe = deps.parent()?.join("loa-controller");
    exe.is_file().then_some(exe)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_loses_nothing() -> anyhow::Result<()> {
    loa_tests::init_logs();
    let Some(exe) = controller_exe() else {
        anyhow::ensure!(
            std::env::var_os("LOA_REQUIRE_TOOLS").is_none(),
            "loa-controller is not built beside the tests (cargo build -p loa-controller)"
        );
        eprintln!("SKIPPED: loa-controller is not built (cargo build -p loa-controller)");
        return Ok(());
    };
    let has_mosquitto = ["mosquitto", "/usr/sbin/mosquitto"]
        .into_iter()
        .any(|p| std::process::Command::new(p).arg("-h").output().is_ok());
    if !has_mosquitto {
        anyhow::ensure!(std::env::var_os("LOA_REQUIRE_TOOLS").is_none(), "mosquitto is required (LOA_REQUIRE_TOOLS)");
        eprintln!("SKIPPED: mosquitto is not installed");
        return Ok(());
    }
    let figures = soak::run(SoakOptions { controller_exe: Some(exe), ..SoakOptions::short() }).await?;
    println!("{figures:#}");
    let v = &figures["verdict"];
    anyhow::ensure!(figures["passed"] == true, "{figures:#}");
    anyhow::ensure!(figures["rounds"].as_u64() >= Some(3), "at least three rounds of bulletins: {figures}");
    anyhow::ensure!(v["plays_planned"].as_u64() >= Some(300), "every receiver had every round planned: {v}");
    // Faults happened: the figures would be meaningless otherwise.
    anyhow::ensure!(figures["power_cuts"].as_u64() >= Some(15), "{figures}");
    // The cuts watch the disk for the download, so most of them find it going (14 and 15 of 15 in two runs).
    let cuts = figures["power_cuts"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        figures["power_cuts_mid_download"].as_u64().unwrap_or(0) * 2 >= cuts,
        "at least half the cuts hit downloads: {figures}"
    );
    anyhow::ensure!(figures["broker_restart_at_seconds"].is_number(), "{figures}");
    anyhow::ensure!(figures["controller_kill_at_seconds"].is_number(), "{figures}");
    anyhow::ensure!(figures["broker_restart_all_back_seconds"].is_number(), "all reconnected: {figures}");
    // Most plays go out: a soak in which everything is "reported missed" would pass the rules and prove nothing.
    let on_time = v["played_on_time"].as_u64().unwrap_or(0);
    anyhow::ensure!(on_time * 10 >= v["plays_planned"].as_u64().unwrap_or(0) * 9, "under 90 % played: {v}");
    Ok(())
}
