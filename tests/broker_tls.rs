//! MQTT over TLS end to end: the controller's embedded broker serves its public listener with a certificate for
//! 127.0.0.1 signed by a test CA (made here with rcgen). A receiver whose `ca_file` is that CA connects over
//! `mqtts://` and gets its plan; the receiver's TLS settings with another CA, or with a host name the certificate
//! does not name, are refused at the handshake; a plain-TCP MQTT client on the TLS port never gets a CONNACK.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use loa_firmware_sim::api::ApiClient;
use loa_firmware_sim::fleet::{Fleet, SimReceiver};
use loa_receiver::ReceiverConfig;
use loa_tests::{wait_for, wait_online, BrokerKind, TestController};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rumqttc::{ConnectionError, Event, MqttOptions, Packet, TlsConfiguration, Transport};
use serde_json::json;

/// A certificate authority: its certificate (PEM) and what signs with it.
fn authority(name: &str) -> anyhow::Result<(String, Issuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

/// A server certificate for `names`, signed by `issuer`: (certificate PEM, private key PEM).
fn server_cert(names: &[&str], issuer: &Issuer<'static, KeyPair>) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, "loa test broker");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The registration file with `ca_file` added (at the top: the file ends with `[[trusted_keys]]` tables).
fn with_ca_file(config_toml: &str, ca_file: &Path) -> String {
    format!("ca_file = \"{}\"\n{config_toml}", ca_file.display())
}

/// A village to register receivers in.
async fn village(api: &ApiClient) -> anyhow::Result<i64> {
    let province = api
        .post("/areas", &json!({"name": "Tỉnh TLS", "kind": "province", "quiet_start": "00:00", "quiet_end": "00:00"}))
        .await?["id"]
        .as_i64()
        .context("province id")?;
    let commune = api.create_area("Xã TLS", "commune", Some(province), None).await?;
    Ok(api.create_area("Thôn TLS", "village", Some(commune), Some("vi")).await?)
}

/// Connects with the receiver's own MQTT and TLS settings (as `loa_receiver` builds them from `config_toml`, with
/// `host` instead of the URL's host when given) and returns how the first connection attempt ended.
async fn first_connect(
    dir: &Path,
    config_toml: &str,
    host: Option<&str>,
    tls: bool,
) -> anyhow::Result<Result<(), ConnectionError>> {
    let path = dir.join(format!("probe-{}.toml", rand_suffix()));
    std::fs::write(&path, config_toml)?;
    let cfg = ReceiverConfig::load(Some(&path), [])?;
    let checked = cfg.validate()?;
    let mut opts = MqttOptions::new(checked.id.to_string(), host.unwrap_or(&checked.host), checked.port);
    opts.set_credentials(checked.id.to_string(), cfg.password.clone());
    if tls {
        let config = checked.tls.context("the receiver's config has no TLS settings")?;
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
    let attempt = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), attempt).await.context("no answer to the connection attempt")
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_reach_the_embedded_broker_over_tls_only_with_the_right_ca_and_name() -> anyhow::Result<()> {
    loa_tests::init_logs();
    let dir = tempfile::tempdir()?;
    let (ca_pem, issuer) = authority("Loa test CA")?;
    let (other_ca_pem, _other) = authority("Some other CA")?;
    let (cert_pem, key_pem) = server_cert(&["127.0.0.1"], &issuer)?;
    let (ca_file, other_ca_file) = (dir.path().join("ca.pem"), dir.path().join("other-ca.pem"));
    let (cert_file, key_file) = (dir.path().join("broker.pem"), dir.path().join("broker.key"));
    std::fs::write(&ca_file, ca_pem)?;
    std::fs::write(&other_ca_file, other_ca_pem)?;
    std::fs::write(&cert_file, cert_pem)?;
    std::fs::write(&key_file, key_pem)?;

    let controller =
        TestController::start(&dir.path().join("data"), BrokerKind::EmbeddedTls { cert_file, key_file }).await?;
    ensure!(controller.mqtt_url.starts_with("mqtts://127.0.0.1:"), "receivers are told {}", controller.mqtt_url);
    let api = controller.api();
    let area = village(&api).await?;
    let (good, good_toml) = api.register_receiver("Loa TLS", area).await?;
    ensure!(good_toml.contains("mqtts://"), "registration config: {good_toml}");

    // The right CA: connected, online, and the plan arrives (the controller answers `online` with one).
    let mut fleet = Fleet::new();
    let state_dir = dir.path().join("state").join(&good);
    fleet.spawn(SimReceiver {
        config_toml: with_ca_file(&good_toml, &ca_file),
        state_dir: state_dir.clone(),
        wav_dir: None,
        heartbeat_ms: Some(1000),
    })?;
    wait_online(&api, std::slice::from_ref(&good), Duration::from_secs(20)).await?;
    let plan = state_dir.join("plan.json");
    wait_for("the receiver's plan over TLS", Duration::from_secs(10), || {
        let plan = plan.clone();
        async move { plan.exists().then_some(()) }
    })
    .await?;

    // Another CA: the handshake fails on the receiver's side (the certificate is not trusted).
    match first_connect(dir.path(), &with_ca_file(&good_toml, &other_ca_file), None, true).await? {
        Err(ConnectionError::Tls(e)) => ensure!(e.to_string().contains("UnknownIssuer"), "{e}"),
        other => bail!("a receiver trusting another CA got {other:?}"),
    }
    // The right CA but a host name the certificate does not name.
    match first_connect(dir.path(), &with_ca_file(&good_toml, &ca_file), Some("localhost"), true).await? {
        Err(ConnectionError::Tls(e)) => ensure!(e.to_string().contains("not valid for name"), "{e}"),
        other => bail!("a receiver using a name the certificate lacks got {other:?}"),
    }
    // Plain MQTT on the TLS port, with good credentials: closed without a CONNACK.
    match first_connect(dir.path(), &good_toml.replace("mqtts://", "mqtt://"), None, false).await? {
        Err(e) => ensure!(!matches!(e, ConnectionError::ConnectionRefused(_)), "refused by MQTT, not TLS: {e}"),
        Ok(()) => bail!("a plain-TCP client was let in on the TLS port"),
    }
    // The well-configured probe connects (so the refusals above are about TLS, not the probe).
    first_connect(dir.path(), &with_ca_file(&good_toml, &ca_file), None, true).await??;

    fleet.shutdown().await;
    controller.stop().await?;
    Ok(())
}
