//! Starting and stopping a whole controller: [`Controller::open`] opens the data directory (database, signing
//! key, admin token) and takes the listeners the caller bound; [`Controller::run`] starts the embedded broker (or
//! connects to an external one), dispatch, the HTTP API, the encode jobs left from a previous run and the hourly
//! extension of schedules into plays, and stops them all when the token is cancelled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use loa_protocol::{Signer, Topics};
use rand::distr::{Alphanumeric, SampleString};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiSettings, AppState};
use crate::broker::{BrokerError, EmbeddedBroker, WireCounters};
use crate::clock::Clock;
use crate::config::ControllerConfig;
use crate::dispatch::{DispatchError, DispatchSettings, Dispatcher};
use crate::mqtt::{MqttError, MqttLink, MqttSettings};
use crate::store::{Store, StoreError};

/// Why a controller cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory's database.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The signing key.
    #[error("signing key: {0}")]
    Key(#[from] crate::keys::KeyError),
    /// The embedded broker.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The external broker's address.
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// Dispatch stopped.
    #[error("dispatch: {0}")]
    Dispatch(#[from] DispatchError),
    /// The topic root.
    #[error("topic_root: {0}")]
    Topics(#[from] loa_protocol::ProtocolError),
    /// The HTTP server.
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// An opened controller, ready to run.
pub struct Controller {
    config: ControllerConfig,
    clock: Arc<dyn Clock>,
    store: Store,
    signer: Arc<Signer>,
    http: TcpListener,
    mqtt: Option<TcpListener>,
    replan: Arc<Notify>,
    counters: Arc<WireCounters>,
    stats: Arc<std::sync::Mutex<crate::dispatch::Stats>>,
}

/// What [`Controller::open`] found or made.
pub struct Opened {
    /// The controller.
    pub controller: Controller,
    /// The admin token, if it was created now (shown once: it is stored hashed).
    pub new_admin_token: Option<String>,
    /// The password of the user `admin`, if that user was created now (there were no users; shown once).
    pub new_admin_password: Option<String>,
}

impl Controller {
    /// Opens the data directory. `mqtt` is the embedded broker's listener (ignored with an external broker).
    pub async fn open(
        config: ControllerConfig,
        clock: Arc<dyn Clock>,
        http: TcpListener,
        mqtt: Option<TcpListener>,
    ) -> Result<Opened, ServerError> {
        let store = Store::open(&config.data_dir)?;
        let signer = Arc::new(crate::keys::load_or_create(&config.data_dir)?);
        let new_admin_token = api::ensure_admin_token(&store)?;
        let new_admin_password = store.ensure_first_admin(clock.now().timestamp_millis())?;
        let controller = Controller {
            config,
            clock,
            store,
            signer,
            http,
            mqtt,
            replan: Arc::new(Notify::new()),
            counters: Arc::default(),
            stats: Arc::default(),
        };
        Ok(Opened { controller, new_admin_token, new_admin_password })
    }

    /// The HTTP address (with the real port when bound to port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.local_addr().ok()
    }

    /// The embedded broker's public address, if embedded.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        match (&self.config.broker, &self.mqtt) {
            (None, Some(l)) => l.local_addr().ok(),
            _ => None,
        }
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Wakes dispatch to recompose plans (after changing the store directly, as the demo seeding does).
    pub fn replan_handle(&self) -> Arc<Notify> {
        self.replan.clone()
    }

    /// Byte counters of the embedded broker's public listener.
    pub fn wire_counters(&self) -> Arc<WireCounters> {
        self.counters.clone()
    }

    /// Dispatch's counters (plans, chunks — also per receiver —, reports, drops), live while it runs.
    pub fn dispatch_stats(&self) -> Arc<std::sync::Mutex<crate::dispatch::Stats>> {
        self.stats.clone()
    }

    /// The settings the API hands receivers (broker URL, topic root, trusted key).
    pub fn api_settings(&self) -> ApiSettings {
        ApiSettings {
            max_upload_bytes: self.config.max_upload_bytes,
            broker_url_for_receivers: self.config.receiver_broker_url(self.mqtt_addr()),
            topic_root: self.config.topic_root.clone(),
            trusted_keys: vec![(self.signer.kid().to_string(), crate::keys::public_key_hex(&self.signer))],
            tz: self.config.tz(),
        }
    }

    /// Runs everything until `cancel`.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), ServerError> {
        let topics = Topics::new(&self.config.topic_root)?;
        let settings = self.api_settings();
        let inner = cancel.child_token();
        let mut tasks = tokio::task::JoinSet::new();

        let mqtt_settings = match (&self.config.broker, self.mqtt) {
            (None, Some(listener)) => {
                let secret = Alphanumeric.sample_string(&mut rand::rng(), 32);
                // Read the TLS files first: a bad certificate must stop the start before the broker runs.
                let tls = match (&self.config.mqtt_tls_cert_file, &self.config.mqtt_tls_key_file) {
                    (Some(cert), Some(key)) => {
                        Some(crate::broker::tls::server_acceptor(cert, key).map_err(BrokerError::from)?)
                    }
                    _ => None,
                };
                let mut broker = EmbeddedBroker::start(
                    listener,
                    self.store.clone(),
                    self.config.controller_client_id.clone(),
                    secret.clone(),
                    self.counters.clone(),
                    topics.chunks_filter(),
                )
                .await?;
                if let Some(acceptor) = tls {
                    broker = broker.with_tls(acceptor);
                }
                let internal = broker.internal_addr();
                let token = inner.clone();
                tasks.spawn(async move { broker.run(token).await.map_err(ServerError::from) });
                MqttSettings {
                    host: internal.ip().to_string(),
                    port: internal.port(),
                    client_id: self.config.controller_client_id.clone(),
                    password: Some(secret),
                    keep_alive_s: 30,
                    tls: None,
                }
            }
            (Some(url), _) => {
                MqttSettings::from_url(url, &self.config.controller_client_id, self.config.broker_password.clone())?
                    .with_ca_file(self.config.broker_ca_file.as_deref())?
            }
            (None, None) => {
                return Err(ServerError::Broker(BrokerError::Start(
                    "no MQTT listener given for the embedded broker".into(),
                )))
            }
        };

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (client, link) = MqttLink::new(&mqtt_settings, events_tx);
        let mqtt_received = link.received();
        let token = inner.clone();
        tasks.spawn(async move {
            link.run(token).await;
            Ok(())
        });

        // Announce rotated signing keys (signed by the previous key) on every receiver's key topic, retained. A
        // one-off job: not in `tasks`, whose end means "a part stopped" and stops the controller.
        tokio::spawn({
            let (dir, store, topics, client) =
                (self.config.data_dir.clone(), self.store.clone(), topics.clone(), client.clone());
            async move {
                crate::keys::publish_announcements(&dir, &store, &topics, &client).await;
            }
        });

        let urgent = Arc::new(crate::dispatch::Urgent::default());
        let dispatch_settings = DispatchSettings {
            horizon_ms: self.config.plan_horizon_ms,
            tick_ms: self.config.replan_interval_ms,
            ..DispatchSettings::default()
        };
        let dispatcher = Dispatcher::new(
            self.store.clone(),
            self.signer.clone(),
            topics,
            self.clock.clone(),
            client.clone(),
            events_rx,
            self.replan.clone(),
            dispatch_settings,
        )
        .with_commands(commands_rx)
        .with_urgent(urgent.clone())
        .with_stats(self.stats.clone());
        let token = inner.clone();
        tasks.spawn(async move { dispatcher.run(token).await.map_err(ServerError::from) });

        let state = AppState {
            store: self.store.clone(),
            clock: self.clock.clone(),
            replan: self.replan.clone(),
            urgent,
            settings,
            commands: Some(commands_tx),
            audio_checks: crate::api::audio_checks(),
        };
        crate::encode_job::resume_pending(&state);
        let token = inner.clone();
        let (store, clock, replan) = (self.store.clone(), self.clock.clone(), self.replan.clone());
        tasks.spawn(async move {
            extend_plays_hourly(store, clock, replan, token).await;
            Ok(())
        });
        let alerts = crate::alerts::Alerts {
            store: self.store.clone(),
            clock: self.clock.clone(),
            settings: self.config.alerts.clone(),
            tz: self.config.tz(),
        };
        let token = inner.clone();
        tasks.spawn(async move { alerts.run(token).await.map_err(ServerError::from) });

        let sources = api::metrics::MetricsSources {
            dispatch: Some(self.stats.clone()),
            wire: self.config.broker.is_none().then(|| self.counters.clone()),
            mqtt_received: Some(mqtt_received),
        };
        let api = api::app(state).layer(axum::Extension(sources));
        let speech = Arc::new(crate::web::EspeakNg { program: self.config.tts_program.clone(), ..Default::default() });
        // Console and API together, every answer with the security headers.
        let app = crate::web::routes(api, speech, self.clock.clone(), self.config.tz())
            .layer(axum::middleware::from_fn(api::headers::security_headers));
        let token = inner.clone();
        let http = self.http;
        tasks.spawn(async move {
            // With the client's address: the audit log records where each action came from.
            let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(http, service).with_graceful_shutdown(token.cancelled_owned()).await.map_err(ServerError::Http)
        });
        tracing::info!(mqtt = ?self.config.broker, "controller running");

        let mut outcome = Ok(());
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                joined = tasks.join_next() => match joined {
                    // A part that has done its work (the key announcements at start) is no reason to stop.
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        tracing::error!(error = %e, "a controller part stopped");
                        outcome = Err(e);
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "a controller part panicked");
                        break;
                    }
                    None => break,
                },
            }
        }
        inner.cancel();
        let _ = client.try_disconnect();
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
            tracing::warn!("some controller tasks did not stop within 10 s");
        }
        tracing::info!("controller stopped");
        outcome
    }
}

async fn extend_plays_hourly(store: Store, clock: Arc<dyn Clock>, replan: Arc<Notify>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (store, clock) = (store.clone(), clock.clone());
        let added = tokio::task::spawn_blocking(move || {
            let now = loa_protocol::Timestamp::from_datetime(clock.now()).map_err(|e| e.to_string())?;
            crate::schedule::extend_plays(&store, now).map_err(|e| e.to_string())
        })
        .await;
        match added {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!(plays = n, "schedules extended");
                replan.notify_one();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "extending schedules failed"),
            Err(e) => tracing::error!(error = %e, "extending schedules panicked"),
        }
    }
}
