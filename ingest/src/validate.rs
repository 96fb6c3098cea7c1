//! Parsing a client's clue at the boundary into a typed [`Report`].

use chrono::DateTime;
use gridclue_core::category::Catalog;
use gridclue_core::geo::GeoPoint;
use gridclue_core::secrets::SecretKey;
use gridclue_core::wire::{Channel, Report};
use gridclue_core::CategoryCode;
use serde::Deserialize;

use crate::bounds::BoundingBox;
use crate::error::ApiError;

pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
pub const MAX_PHOTOS: usize = 6;
pub const MAX_PHOTO_REF_LEN: usize = 512;

/// A clue as a client sends it (JSON body of `POST /v1/clues`).
#[derive(Debug, Default, Deserialize)]
pub struct ClueRequest {
    pub category: String,
    pub lat: f64,
    pub lon: f64,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub photos: Vec<String>,
    /// RFC 3339 time the reporter saw the problem.
    #[serde(default)]
    pub reported_at: Option<String>,
    /// Client-chosen clue id (UUID) for idempotent retries.
    #[serde(default)]
    pub clue_id: Option<String>,
    /// Client-chosen idempotency key (an alternative to `clue_id`; the batch endpoint's way of
    /// saying what the `Idempotency-Key` header says for a single clue).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Reporter's phone number; kept only as a keyed hash.
    #[serde(default)]
    pub phone: Option<String>,
}

/// What a valid clue needs from the service.
pub struct Rules<'a> {
    pub catalog: &'a Catalog,
    pub bounds: BoundingBox,
    pub secret: &'a SecretKey,
    pub now_ms: u64,
    pub max_clock_skew_ms: u64,
}

impl Rules<'_> {
    pub fn report(&self, req: ClueRequest, channel: Channel) -> Result<Report, ApiError> {
        if self.catalog.get(&req.category).is_none() {
            return Err(ApiError::invalid(
                "unknown_category",
                format!(
                    "category {:?} is not one of the codes listed at /v1/categories",
                    truncate(&req.category, 40)
                ),
            ));
        }
        let category = CategoryCode::parse(&req.category)
            .map_err(|e| ApiError::invalid("unknown_category", e.to_string()))?;
        let location = GeoPoint::new(req.lat, req.lon)
            .map_err(|e| ApiError::invalid("invalid_location", e.to_string()))?;
        if !self.bounds.contains(req.lat, req.lon) {
            return Err(ApiError::invalid(
                "outside_service_area",
                "the location is outside the district's service area",
            ));
        }
        let chars = req.description.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            return Err(ApiError::invalid(
                "description_too_long",
                format!("description has {chars} characters; at most {MAX_DESCRIPTION_CHARS}"),
            ));
        }
        if req.photos.len() > MAX_PHOTOS {
            return Err(ApiError::invalid(
                "too_many_photos",
                format!("{} photos; at most {MAX_PHOTOS}", req.photos.len()),
            ));
        }
        if let Some(bad) = req.photos.iter().find(|p| !is_photo_ref(p)) {
            return Err(ApiError::invalid(
                "invalid_photo_reference",
                format!(
                    "photo reference {:?} is neither an http(s) URL nor a sha256:<hex> hash",
                    truncate(bad, 60)
                ),
            ));
        }
        let reported_at_ms = match req.reported_at.as_deref() {
            None => None,
            Some(text) => {
                let t = DateTime::parse_from_rfc3339(text).map_err(|_| {
                    ApiError::invalid("invalid_reported_at", "reported_at must be RFC 3339")
                })?;
                let ms = t.timestamp_millis();
                if ms < 0 {
                    return Err(ApiError::invalid(
                        "invalid_reported_at",
                        "reported_at is before 1970",
                    ));
                }
                if ms as u64 > self.now_ms + self.max_clock_skew_ms {
                    return Err(ApiError::invalid(
                        "reported_at_in_future",
                        "reported_at is in the future",
                    ));
                }
                Some(ms as u64)
            }
        };
        let phone_hash = match req.phone.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(p) => {
                let digits = p.chars().filter(char::is_ascii_digit).count();
                if !(5..=20).contains(&digits) {
                    return Err(ApiError::invalid(
                        "invalid_phone",
                        "phone must have 5 to 20 digits",
                    ));
                }
                Some(self.secret.phone_hash(p))
            }
        };
        Ok(Report {
            category,
            location,
            description: req.description,
            photos: req.photos,
            reported_at_ms,
            phone_hash,
            channel,
        })
    }
}

pub(crate) fn is_photo_ref(p: &str) -> bool {
    if p.len() > MAX_PHOTO_REF_LEN {
        return false;
    }
    if let Some(hash) = p.strip_prefix("sha256:") {
        return hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    }
    (p.starts_with("https://") || p.starts_with("http://"))
        && !p.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::from_json(
            r#"{"departments":[{"code":"d","name_zh":"部门","name_en":"Dept"}],
            "categories":[{"code":"manhole_cover","family":"component","name_zh":"井盖破损",
            "name_en":"Manhole","department":"d","urgency":"urgent",
            "deadline":{"unit":"working_hours","amount":4}}]}"#,
        )
        .unwrap()
    }

    fn request() -> ClueRequest {
        ClueRequest {
            category: "manhole_cover".into(),
            lat: 31.2,
            lon: 121.5,
            description: "井盖缺失".into(),
            photos: vec![],
            ..ClueRequest::default()
        }
    }

    fn check(req: ClueRequest) -> Result<Report, ApiError> {
        let catalog = catalog();
        let secret = SecretKey::from_hex(&"11".repeat(32)).unwrap();
        let rules = Rules {
            catalog: &catalog,
            bounds: BoundingBox {
                min_lon: 121.0,
                min_lat: 31.0,
                max_lon: 122.0,
                max_lat: 32.0,
            },
            secret: &secret,
            now_ms: 1_800_000_000_000,
            max_clock_skew_ms: 300_000,
        };
        rules.report(req, Channel::Api)
    }

    fn code(r: Result<Report, ApiError>) -> &'static str {
        r.err().map(|e| e.code()).unwrap_or("ok")
    }

    #[test]
    fn accepts_a_good_clue_and_hashes_the_phone() {
        let mut r = request();
        r.phone = Some("138 0013 8000".into());
        r.photos = vec![
            "https://img.example/1.jpg".into(),
            format!("sha256:{}", "a".repeat(64)),
        ];
        let report = check(r).unwrap();
        let hash = report.phone_hash.unwrap();
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains("13800138000"));
    }

    #[test]
    fn each_rule_has_its_code() {
        type Mutation = Box<dyn Fn(&mut ClueRequest)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|r| r.category = "teleporter".into()),
                "unknown_category",
            ),
            (Box::new(|r| r.lat = 95.0), "invalid_location"),
            (Box::new(|r| r.lon = f64::NAN), "invalid_location"),
            (Box::new(|r| r.lat = 40.0), "outside_service_area"),
            (
                Box::new(|r| r.description = "字".repeat(2001)),
                "description_too_long",
            ),
            (
                Box::new(|r| r.photos = vec!["https://x/y".into(); 7]),
                "too_many_photos",
            ),
            (
                Box::new(|r| r.photos = vec!["ftp://x".into()]),
                "invalid_photo_reference",
            ),
            (
                Box::new(|r| r.photos = vec!["sha256:abc".into()]),
                "invalid_photo_reference",
            ),
            (
                Box::new(|r| r.reported_at = Some("yesterday".into())),
                "invalid_reported_at",
            ),
            (
                Box::new(|r| r.reported_at = Some("2030-01-01T00:00:00Z".into())),
                "reported_at_in_future",
            ),
            (Box::new(|r| r.phone = Some("12".into())), "invalid_phone"),
        ];
        for (mutate, expected) in cases {
            let mut r = request();
            mutate(&mut r);
            assert_eq!(code(check(r)), expected);
        }
        let mut r = request();
        r.description = "字".repeat(2000);
        assert_eq!(code(check(r)), "ok");
    }
}
