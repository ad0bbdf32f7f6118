//! Open WebUI's model file routes: `POST /ollama/models/upload` (a GGUF file in a multipart
//! form) and `POST /ollama/models/download` (a file from Hugging Face or GitHub), each
//! stored as a blob on the chosen instance, with progress as server-sent events.
//!
//! Files go to disk under `<data_dir>/uploads` while they are hashed, never into memory,
//! and are removed when the blob has been handed over. Unlike Open WebUI, the instance's
//! key is sent, and the download's hashing step works.

use std::path::{Path, PathBuf};

use actix_multipart::Multipart;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::channel::mpsc;
use futures::SinkExt;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{default_target, read_object, target, url_idx};
use crate::error::AppError;
use crate::proxy::{self, Target};
use crate::state::Shared;

/// Where a download may come from, as Open WebUI allows.
const ALLOWED: [&str; 2] = ["https://huggingface.co/", "https://github.com/"];

type Events = mpsc::Sender<Value>;

/// The instance a model file goes to: `url_idx`, else the first enabled one.
fn destination(req: &HttpRequest, shared: &Shared) -> Result<Target, AppError> {
    match url_idx(req, shared.settings().ollama.base_urls.len())? {
        Some(idx) => target(shared, idx),
        None => default_target(shared),
    }
}

/// A file name without any directory part; `None` if nothing is left.
fn base_name(name: &str) -> Option<String> {
    Path::new(name.rsplit(['/', '\\']).next().unwrap_or(name))
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_owned)
}

fn uploads_dir(shared: &Shared) -> PathBuf {
    Path::new(&shared.settings().server.data_dir).join("uploads")
}

/// An SSE response fed by `events`; when the client goes away the sender sees it closed.
fn sse(events: mpsc::Receiver<Value>) -> HttpResponse {
    let body = events.map(|e| Ok::<Bytes, actix_web::Error>(Bytes::from(format!("data: {e}\n\n"))));
    HttpResponse::Ok().content_type("text/event-stream").streaming(body)
}

/// `POST /ollama/models/upload[/{url_idx}]`: multipart field `file`.
pub async fn upload(
    _admin: crate::auth::Admin,
    req: HttpRequest,
    mut form: Multipart,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
) -> Result<HttpResponse, AppError> {
    let target = destination(&req, &shared)?;
    let mut saved = None;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| AppError::BadRequest(format!("bad multipart form: {e}")))?;
        if field.name() != Some("file") {
            continue;
        }
        let name = field
            .content_disposition()
            .and_then(|d| d.get_filename())
            .and_then(base_name)
            .ok_or_else(|| AppError::BadRequest("file: the upload has no usable file name".to_owned()))?;
        let dir = uploads_dir(&shared);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| AppError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(format!("{:016x}-{name}", rand::random::<u64>()));
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| AppError::BadRequest(format!("the upload broke off: {e}")))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| AppError::Internal(e.to_string()))?;
        }
        file.flush().await.map_err(|e| AppError::Internal(e.to_string()))?;
        saved = Some((name, path, size, hex::encode(hasher.finalize())));
        break;
    }
    let (name, path, size, digest) =
        saved.ok_or_else(|| AppError::BadRequest("file: the form has no `file` field".to_owned()))?;
    let (mut tx, rx) = mpsc::channel(16);
    let shared = shared.into_inner();
    actix_rt::spawn(async move {
        let _ = tx
            .send(json!({ "progress": 100.0, "total": size, "completed": size }))
            .await;
        let result = async {
            push_blob(&client, &shared, &target, &path, size, &digest).await?;
            let model = name.rsplit_once('.').map_or(name.as_str(), |(stem, _)| stem).to_owned();
            create(&client, &shared, &target, &model, &name, &digest).await?;
            Ok::<_, String>(
                json!({ "done": true, "blob": format!("sha256:{digest}"), "name": name, "model_created": model }),
            )
        }
        .await;
        let _ = tokio::fs::remove_file(&path).await;
        shared.fleet.invalidate();
        finish(&mut tx, result).await;
    });
    Ok(sse(rx))
}

/// `POST /ollama/models/download[/{url_idx}]` with `{"url": "https://huggingface.co/…"}`.
pub async fn download(
    _admin: crate::auth::Admin,
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
) -> Result<HttpResponse, AppError> {
    let (_, value) = read_object(payload).await?;
    let url = value.get("url").and_then(Value::as_str).unwrap_or_default().to_owned();
    if !ALLOWED.iter().any(|p| url.starts_with(p)) {
        return Err(AppError::BadRequest(
            "Invalid file_url. Only URLs from allowed hosts are permitted.".to_owned(),
        ));
    }
    let name = base_name(url.split(['?', '#']).next().unwrap_or(&url))
        .ok_or_else(|| AppError::BadRequest("url: names no file".to_owned()))?;
    let target = destination(&req, &shared)?;
    let (mut tx, rx) = mpsc::channel(16);
    let shared = shared.into_inner();
    actix_rt::spawn(async move {
        let path = uploads_dir(&shared).join(format!("{:016x}-{name}", rand::random::<u64>()));
        let result = async {
            let (size, digest) = fetch(&shared, &url, &path, &mut tx).await?;
            push_blob(&client, &shared, &target, &path, size, &digest).await?;
            Ok::<_, String>(json!({ "done": true, "blob": format!("sha256:{digest}"), "name": name }))
        }
        .await;
        let _ = tokio::fs::remove_file(&path).await;
        finish(&mut tx, result).await;
    });
    Ok(sse(rx))
}

async fn finish(tx: &mut Events, result: Result<Value, String>) {
    let last = result.unwrap_or_else(|e| json!({ "error": e }));
    let _ = tx.send(last).await;
}

/// Downloads `url` to `path`, hashing on the way and reporting progress every 1%.
async fn fetch(shared: &Shared, url: &str, path: &Path, tx: &mut Events) -> Result<(u64, String), String> {
    let dir = uploads_dir(shared);
    tokio::fs::create_dir_all(&dir).await.map_err(|e| e.to_string())?;
    // Downloads follow redirects (Hugging Face answers with one to its CDN).
    let downloader = awc::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .finish();
    let mut resp = downloader
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot download {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("cannot download {url}: it answered {}", resp.status()));
    }
    let total: u64 = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut file = tokio::fs::File::create(path).await.map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let (mut completed, mut reported) = (0u64, 0u64);
    while let Some(chunk) = resp.next().await {
        let chunk = chunk.map_err(|e| format!("the download broke off: {e}"))?;
        hasher.update(&chunk);
        completed += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        if total > 0 && (completed - reported) * 100 >= total {
            reported = completed;
            let progress = (completed as f64 * 10_000.0 / total as f64).round() / 100.0;
            if tx
                .send(json!({ "progress": progress, "completed": completed, "total": total }))
                .await
                .is_err()
            {
                return Err("the client went away".to_owned());
            }
        }
    }
    file.flush().await.map_err(|e| e.to_string())?;
    Ok((completed, hex::encode(hasher.finalize())))
}

/// Streams the file at `path` to the instance as blob `sha256:<digest>`.
async fn push_blob(
    client: &awc::Client,
    shared: &Shared,
    target: &Target,
    path: &Path,
    size: u64,
    digest: &str,
) -> Result<(), String> {
    // An instance that has the blob answers at once and drops the upload it did not read.
    let blob = format!("/api/blobs/sha256:{digest}");
    if proxy::has_blob(client, &shared.settings().upstream, target, &blob).await {
        return Ok(());
    }
    let file = tokio::fs::File::open(path).await.map_err(|e| e.to_string())?;
    let body = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match tokio::io::AsyncReadExt::read(&mut file, &mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let url = format!("{}{blob}", target.base_url);
    let mut req = client
        .request(Method::POST, url)
        .insert_header(("Content-Length", size.to_string()));
    if let Some(key) = &target.key {
        req = req.insert_header(("Authorization", format!("Bearer {key}")));
    }
    let mut resp = req
        .send_stream(body)
        .await
        .map_err(|e| format!("Ollama: Could not create blob: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        let text = proxy::read_all(&mut resp, 64 * 1024).await.unwrap_or_default();
        Err(format!(
            "Ollama: Could not create blob ({}): {}",
            resp.status(),
            String::from_utf8_lossy(&text)
        ))
    }
}

/// Creates model `model` from the uploaded file.
async fn create(
    client: &awc::Client,
    shared: &Shared,
    target: &Target,
    model: &str,
    file: &str,
    digest: &str,
) -> Result<(), String> {
    let body = json!({ "model": model, "files": { file: format!("sha256:{digest}") }, "stream": false });
    let mut req = client.post(format!("{}/api/create", target.base_url));
    if let Some(key) = &target.key {
        req = req.insert_header(("Authorization", format!("Bearer {key}")));
    }
    let timeout = proxy::secs(shared.settings().upstream.first_byte_timeout);
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    let mut resp = req
        .send_json(&body)
        .await
        .map_err(|e| format!("Failed to create model in Ollama. {e}"))?;
    let text = proxy::read_all(&mut resp, 1024 * 1024).await.unwrap_or_default();
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "Failed to create model in Ollama. {}",
            String::from_utf8_lossy(&text)
        ))
    }
}
