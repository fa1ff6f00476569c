//! A small client of the controller's HTTP API (`/api/v1`), for the demo, the fleet and the end-to-end tests.
//! It speaks the documented JSON (see `docs/api.md`) and returns `serde_json::Value`s or plain fields.

use std::path::Path;

use serde_json::{json, Value};

/// What went wrong talking to the controller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The controller could not be reached or answered garbage.
    #[error("controller unreachable: {0}")]
    Http(#[from] reqwest::Error),
    /// The controller refused the request; `message` is its explanation.
    #[error("controller refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The `error` field of the answer.
        message: String,
    },
    /// A file to upload could not be read.
    #[error("cannot read {0}: {1}")]
    File(String, std::io::Error),
    /// The answer lacked a field.
    #[error("answer without {0}")]
    Missing(&'static str),
}

/// A client bound to one controller and admin token.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// `base` like `http://127.0.0.1:8080`.
    pub fn new(base: &str, token: &str) -> Self {
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn answer(response: reqwest::Response) -> Result<Value, ApiError> {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            let message = body.get("error").and_then(Value::as_str).unwrap_or("no message").to_string();
            Err(ApiError::Refused { status: status.as_u16(), message })
        }
    }

    /// GET a path under `/api/v1`.
    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        Self::answer(self.http.get(self.url(path)).bearer_auth(&self.token).send().await?).await
    }

    /// POST JSON to a path under `/api/v1`.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        Self::answer(self.http.post(self.url(path)).bearer_auth(&self.token).json(body).send().await?).await
    }

    /// DELETE a path under `/api/v1`.
    pub async fn delete(&self, path: &str) -> Result<Value, ApiError> {
        Self::answer(self.http.delete(self.url(path)).bearer_auth(&self.token).send().await?).await
    }

    /// Creates an area; returns its id.
    pub async fn create_area(
        &self,
        name: &str,
        kind: &str,
        parent: Option<i64>,
        languages: Option<&str>,
    ) -> Result<i64, ApiError> {
        let mut body = json!({"name": name, "kind": kind, "parent_id": parent});
        if let Some(l) = languages {
            body["languages"] = json!(l.split(',').map(str::trim).collect::<Vec<_>>());
        }
        let v = self.post("/areas", &body).await?;
        v.get("id").and_then(Value::as_i64).ok_or(ApiError::Missing("id"))
    }

    /// Registers a receiver; returns `(id, config TOML)`.
    pub async fn register_receiver(&self, name: &str, area_id: i64) -> Result<(String, String), ApiError> {
        let v = self.post("/receivers", &json!({"name": name, "area_id": area_id})).await?;
        let id = v.get("id").and_then(Value::as_str).ok_or(ApiError::Missing("id"))?.to_string();
        let config = v.get("config").and_then(Value::as_str).ok_or(ApiError::Missing("config"))?.to_string();
        Ok((id, config))
    }

    /// Uploads an audio file as a new bulletin; returns its id.
    pub async fn upload(&self, file: &Path, title: &str, category: &str, language: &str) -> Result<String, ApiError> {
        let bytes = std::fs::read(file).map_err(|e| ApiError::File(file.display().to_string(), e))?;
        let name = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "upload".into());
        let form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(bytes).file_name(name))
            .text("title", title.to_string())
            .text("category", category.to_string())
            .text("language", language.to_string());
        let response = self.http.post(self.url("/bulletins")).bearer_auth(&self.token).multipart(form).send().await?;
        let v = Self::answer(response).await?;
        Ok(v.get("id").and_then(Value::as_str).ok_or(ApiError::Missing("id"))?.to_string())
    }

    /// Waits until a bulletin's encoding finished; returns its final JSON (status `ready` or `failed`).
    pub async fn wait_encoded(&self, bulletin: &str, timeout: std::time::Duration) -> Result<Value, ApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.get(&format!("/bulletins/{bulletin}")).await?;
            let status = v.get("status").and_then(Value::as_str).unwrap_or("");
            if status != "encoding" || tokio::time::Instant::now() > deadline {
                return Ok(v);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
