//! Photos of a problem (处置前, by the rider) and of its result (处置后, by the department):
//! `POST /v1/photos` stores one, `GET /v1/photos/{id}` reads it back.
//!
//! An upload is authenticated (reporter or department token) and rate limited like every write;
//! its body is the image itself (`image/jpeg`, `image/png` or `image/webp`, at most
//! `photo_max_bytes`), whose first bytes must show the type it claims. Its metadata (EXIF with
//! the GPS position, XMP, text chunks) is removed ([`strip_metadata`]) before anything is
//! stored, and the stripped bytes are stored under their SHA-256: the photo's id,
//! `sha256:<hex>`, which reports and `handle` transitions carry in `photos`. The same picture
//! uploaded twice is stored once (201 the first time, 200 after).
//!
//! A read is scoped like the clues the photo belongs to: the district, whoever uploaded it, and
//! the reporter, street office or department of a clue whose facts refer to it (ClickHouse
//! `clue_events.photos`). Anyone else gets the same 404 as for a photo that does not exist.
//!
//! Storage is an object store (the `object_store` crate): a local directory in the dev stack,
//! any S3-compatible store in production (`photos_url`). Objects: `photos/<hex>` (the image)
//! and `uploaders/<hex>/<token id>` (empty: who uploaded it, for the read scope).

#[cfg(test)]
pub(crate) mod sample_images;
mod strip;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gridclue_core::codes::ActorScope;
use gridclue_core::roles::owns;
use gridclue_core::tokens::{TokenKind, TokenRecord};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use serde_json::json;
use sha2::{Digest, Sha256};

pub use strip::{strip_metadata, ImageType, StripError};

use crate::api::{read_body, AppState};
use crate::config::IngestConfig;
use crate::error::ApiError;

/// A photo's content address: the lowercase hex SHA-256 of its stored (stripped) bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PhotoId(String);

impl PhotoId {
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    /// `sha256:<hex>` or the bare hex (either case).
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(hex.to_ascii_lowercase()))
    }

    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The reference clues and transitions carry.
    pub fn reference(&self) -> String {
        format!("sha256:{}", self.0)
    }
}

/// Where photos are kept, and how large one may be.
pub struct PhotoStore {
    objects: Arc<dyn ObjectStore>,
    pub max_bytes: usize,
}

/// The object store could not be reached or refused an operation.
#[derive(Debug, thiserror::Error)]
#[error("photo store: {0}")]
pub struct StoreError(#[from] object_store::Error);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "photo store failed");
        ApiError::PhotoStoreUnavailable
    }
}

impl PhotoStore {
    /// The store `photos_url` names: `s3://bucket[/prefix]` (with the `photos_s3_*` settings),
    /// `file:///absolute/dir`, or a directory path (relative to the working directory),
    /// created if missing.
    pub fn from_config(config: &IngestConfig) -> anyhow::Result<Self> {
        let url = config.photos_url.trim();
        let objects: Arc<dyn ObjectStore> = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            anyhow::ensure!(!bucket.is_empty(), "photos_url {url:?} names no bucket");
            let mut s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_region(&config.photos_s3_region)
                .with_allow_http(config.photos_s3_allow_http);
            if !config.photos_s3_endpoint.is_empty() {
                // S3-compatible stores (MinIO, Ceph, OSS…) usually want path-style requests.
                s3 = s3
                    .with_endpoint(&config.photos_s3_endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            if !config.photos_s3_access_key_id.is_empty() {
                s3 = s3
                    .with_access_key_id(&config.photos_s3_access_key_id)
                    .with_secret_access_key(config.photos_s3_secret_access_key.expose());
            }
            let s3 = s3.build()?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            }
        } else {
            let dir = url.strip_prefix("file://").unwrap_or(url);
            anyhow::ensure!(!dir.is_empty(), "photos_url is empty");
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("creating the photo directory {dir}: {e}"))?;
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir)?)
        };
        Ok(Self {
            objects,
            max_bytes: config.photo_max_bytes,
        })
    }

    fn image_path(id: &PhotoId) -> ObjectPath {
        ObjectPath::from(format!("photos/{}", id.hex()))
    }

    fn uploader_path(id: &PhotoId, token_id: &str) -> ObjectPath {
        ObjectPath::from(format!("uploaders/{}/{token_id}", id.hex()))
    }

    async fn exists(&self, path: &ObjectPath) -> Result<bool, StoreError> {
        match self.objects.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores stripped bytes under their id; `true` when they were not there yet. Two uploads
    /// of the same picture at once both write the same bytes, which is harmless.
    pub async fn put(&self, id: &PhotoId, bytes: Bytes) -> Result<bool, StoreError> {
        let path = Self::image_path(id);
        if self.exists(&path).await? {
            return Ok(false);
        }
        self.objects.put(&path, PutPayload::from(bytes)).await?;
        Ok(true)
    }

    pub async fn record_uploader(&self, id: &PhotoId, token_id: &str) -> Result<(), StoreError> {
        self.objects
            .put(&Self::uploader_path(id, token_id), PutPayload::new())
            .await?;
        Ok(())
    }

    pub async fn uploaded_by(&self, id: &PhotoId, token_id: &str) -> Result<bool, StoreError> {
        self.exists(&Self::uploader_path(id, token_id)).await
    }

    pub async fn get(&self, id: &PhotoId) -> Result<Option<Bytes>, StoreError> {
        match self.objects.get(&Self::image_path(id)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn store(state: &AppState) -> Result<&PhotoStore, ApiError> {
    state
        .photos
        .as_deref()
        .ok_or(ApiError::PhotoStoreUnavailable)
}

/// `POST /v1/photos`.
pub async fn post_photo(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    match upload(&state, &parts, body).await {
        Ok(r) => r,
        Err(e) => state.reject(e).into_response(),
    }
}

async fn upload(state: &AppState, parts: &Parts, body: Body) -> Result<Response, ApiError> {
    state.limit_ip(parts)?;
    let token = state.bearer(&parts.headers)?;
    if !matches!(token.kind, TokenKind::Reporter | TokenKind::Department) {
        return Err(ApiError::Forbidden("upload photos"));
    }
    state.limit_token(&token)?;
    let declared = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(ImageType::from_media_type)
        .ok_or(ApiError::UnsupportedMediaType(ImageType::MEDIA_TYPES))?;
    let store = store(state)?;
    let bytes = read_body(&parts.headers, body, store.max_bytes).await?;
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            "empty_photo",
            "the request body is empty",
        ));
    }
    if ImageType::sniff(&bytes) != Some(declared) {
        return Err(ApiError::invalid(
            "photo_type_mismatch",
            format!(
                "the body does not start like {} (Content-Type): it is {}",
                declared.media_type(),
                ImageType::sniff(&bytes).map_or("no accepted image type", |t| t.media_type())
            ),
        ));
    }
    let stripped = strip_metadata(declared, &bytes)
        .map_err(|e| ApiError::invalid("invalid_image", e.to_string()))?;
    let id = PhotoId::of(&stripped);
    let size = stripped.len();
    let new = store.put(&id, Bytes::from(stripped)).await?;
    store.record_uploader(&id, &token.id).await?;
    state
        .metrics
        .photos
        .with_label_values(&[if new { "stored" } else { "already_stored" }])
        .inc();
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (
        status,
        Json(json!({
            "photo": id.reference(),
            "bytes": size,
            "content_type": declared.media_type(),
        })),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/photos/{}", id.hex())) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /v1/photos/{id}` (`id`: the hex, or `sha256:<hex>`).
pub async fn get_photo(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let id = id.map(|Path(id)| id).unwrap_or_default();
    match read(&state, &parts, &id).await {
        Ok(r) => r,
        Err(e) => state.reject(e).into_response(),
    }
}

async fn read(state: &AppState, parts: &Parts, id: &str) -> Result<Response, ApiError> {
    state.limit_ip(parts)?;
    let token = state.bearer(&parts.headers)?;
    state.limit_token(&token)?;
    let id = PhotoId::parse(id).ok_or(ApiError::NotFound)?;
    let store = store(state)?;
    if !store.exists(&PhotoStore::image_path(&id)).await? || !may_read(state, &token, &id).await? {
        return Err(ApiError::NotFound);
    }
    let bytes = store.get(&id).await?.ok_or(ApiError::NotFound)?;
    let media_type =
        ImageType::sniff(&bytes).map_or("application/octet-stream", |t| t.media_type());
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", id.hex())) {
        h.insert(header::ETAG, etag);
    }
    Ok(response)
}

/// The district reads every photo, an uploader their own; anyone else needs a clue in their
/// scope whose facts refer to the photo.
async fn may_read(state: &AppState, token: &TokenRecord, id: &PhotoId) -> Result<bool, ApiError> {
    if token.kind == TokenKind::District || store(state)?.uploaded_by(id, &token.id).await? {
        return Ok(true);
    }
    let reads = state
        .reads
        .as_ref()
        .ok_or(ApiError::ReadsUnavailable("no clue database is configured"))?;
    let clues = reads.photo_clues(&id.reference()).await?;
    let scope = token.scope.as_ref();
    let street = scope.and_then(ActorScope::street);
    let department = scope.and_then(ActorScope::department);
    Ok(clues.iter().any(|c| match token.kind {
        TokenKind::Reporter => c.reporter_id == token.id,
        TokenKind::Street => owns(street, c.street_code.as_ref()),
        TokenKind::Department => [&c.department, &c.routed_department]
            .into_iter()
            .any(|d| owns(department, d.as_ref())),
        TokenKind::District => true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lowercase_hex_of_sha256() {
        let id = PhotoId::of(b"abc");
        assert_eq!(
            id.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(PhotoId::parse(&id.reference()), Some(id.clone()));
        assert_eq!(PhotoId::parse(&id.hex().to_ascii_uppercase()), Some(id));
        assert_eq!(PhotoId::parse("sha256:abc"), None);
        assert_eq!(PhotoId::parse(&"g".repeat(64)), None);
    }
}
