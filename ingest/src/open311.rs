//! Open311 GeoReport v2 at `/open311/v2/`, in JSON and XML.
//!
//! - `GET services.{json,xml}`: the categories as services (`service_code` = category code).
//!   `?lang=en` gives English names (Chinese otherwise).
//! - `GET services/{code}.{json,xml}`: a service definition (no extra attributes).
//! - `POST requests.{json,xml}`: form-encoded; `api_key` is a reporter token; `service_code`,
//!   `lat`, `long` are required (`address_string`/`address_id` alone are not supported: the
//!   district is placed by coordinates); `description`, `media_url` (one photo URL) and `phone`
//!   (kept only as a keyed hash) are taken; `email`, names, `device_id` and `account_id` are
//!   accepted and not stored. An `Idempotency-Key` header makes retries safe as in `/v1/clues`.
//!   Answers `201` with `[{"service_request_id": …}]`.
//! - `GET requests.{json,xml}`: `service_request_id` (comma list; overrides the other filters),
//!   `service_code` (comma list), `start_date`/`end_date` (RFC 3339, over `requested_datetime`;
//!   default and maximum span 90 days, as the spec says), `status` (`open`, `closed`, or both);
//!   at most 1000 requests, newest first.
//! - `GET requests/{id}.{json,xml}`: one request (a one-element list, as the spec says).
//!
//! `status` is `open` for every state of the closed loop before its end and `closed` for
//! closed, rejected, duplicate and withdrawn clues; `status_notes` carries the detailed state.
//! `agency_responsible` is the responsible department's name, `expected_datetime` the
//! working-time deadline, `address` "<street> <community> <grid code>" from the map and
//! `address_id` the unit grid's code (both empty for points outside the district). Reads need no key unless `open311_reads_require_key` is set.
//! Errors use Open311's format: `[{"code": <HTTP status>, "description": "<code>: <text>"}]`.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::DateTime;
use gridclue_core::category::Category;
use gridclue_core::codes::or_empty;
use gridclue_core::wire::Channel;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde_json::{json, Map, Value};

use crate::api::{read_body, require_media_type, AppState, MAX_SINGLE_BODY_BYTES};
use crate::error::ApiError;
use crate::reads::{rfc3339, ClueRow, ReportText, RequestFilter};
use crate::validate::ClueRequest;

/// Largest and default span of a `GET requests` date range.
pub const MAX_SPAN_MS: u64 = 90 * 24 * 3600 * 1000;
/// Most requests one `GET requests` answers.
pub const MAX_REQUESTS: u64 = 1000;

const OPEN_STATUSES: [&str; 5] = [
    "reported",
    "accepted",
    "dispatched",
    "in_progress",
    "handled",
];
const CLOSED_STATUSES: [&str; 4] = ["closed", "rejected", "duplicate", "withdrawn"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// Splits `name.json` / `name.xml`.
    fn split(file: &str) -> Option<(&str, Format)> {
        if let Some(stem) = file.strip_suffix(".json") {
            Some((stem, Format::Json))
        } else {
            file.strip_suffix(".xml").map(|stem| (stem, Format::Xml))
        }
    }
}

/// An error in Open311's own format.
#[derive(Debug)]
pub struct Open311Error {
    pub error: ApiError,
    pub format: Format,
}

impl Open311Error {
    fn status(&self) -> StatusCode {
        match &self.error {
            ApiError::Unauthorized(_) | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Invalid {
                code: "unknown_category",
                ..
            } => StatusCode::NOT_FOUND,
            ApiError::Invalid { .. } | ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            e => e.status(),
        }
    }
}

impl IntoResponse for Open311Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let description = format!("{}: {}", self.error.code(), self.error);
        let item = json!({"code": status.as_u16(), "description": description});
        let mut response = render(self.format, status, "errors", "error", &[item]);
        if let Some(secs) = self.error.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/services.json",
            get(|s: State<AppState>, r: Request| services(s, r, Format::Json)),
        )
        .route(
            "/services.xml",
            get(|s: State<AppState>, r: Request| services(s, r, Format::Xml)),
        )
        .route("/services/{file}", get(service_definition))
        .route(
            "/requests.json",
            get(|s: State<AppState>, r: Request| get_requests(s, r, Format::Json))
                .post(|s: State<AppState>, r: Request| post_request(s, r, Format::Json)),
        )
        .route(
            "/requests.xml",
            get(|s: State<AppState>, r: Request| get_requests(s, r, Format::Xml))
                .post(|s: State<AppState>, r: Request| post_request(s, r, Format::Xml)),
        )
        .route("/requests/{file}", get(get_request))
}

fn query_pairs(parts: &Parts) -> Vec<(String, String)> {
    serde_urlencoded::from_str(parts.uri.query().unwrap_or("")).unwrap_or_default()
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn english(pairs: &[(String, String)]) -> bool {
    first(pairs, "lang")
        .or_else(|| first(pairs, "locale"))
        .is_some_and(|l| l.to_ascii_lowercase().starts_with("en"))
}

/// Reads are open unless configured otherwise; then any valid token is a key.
fn check_read_key(state: &AppState, pairs: &[(String, String)]) -> Result<(), ApiError> {
    if !state.open311_reads_require_key {
        return Ok(());
    }
    let key = first(pairs, "api_key").unwrap_or("").trim();
    if key.is_empty() {
        return Err(ApiError::Unauthorized("api_key is required"));
    }
    state
        .tokens
        .authenticate_token(key)
        .map(|_| ())
        .map_err(|_| ApiError::Unauthorized("api_key is not valid"))
}

fn fail(state: &AppState, error: ApiError, format: Format) -> Response {
    Open311Error {
        error: state.reject(error),
        format,
    }
    .into_response()
}

fn service_json(c: &Category, state: &AppState, en: bool) -> Value {
    let dept = state.catalog.department(c.department.as_str());
    let (name, description, group, dept_name) = if en {
        (
            c.name_en.as_str(),
            c.name_zh.as_str(),
            match c.family {
                gridclue_core::category::Family::Component => "component",
                gridclue_core::category::Family::Event => "event",
            },
            dept.map(|d| d.name_en.as_str()).unwrap_or(""),
        )
    } else {
        (
            c.name_zh.as_str(),
            c.name_en.as_str(),
            match c.family {
                gridclue_core::category::Family::Component => "部件",
                gridclue_core::category::Family::Event => "事件",
            },
            dept.map(|d| d.name_zh.as_str()).unwrap_or(""),
        )
    };
    json!({
        "service_code": c.code.as_str(),
        "service_name": name,
        "description": format!("{description} — {dept_name}"),
        "metadata": false,
        "type": "realtime",
        "keywords": format!("{},{}", c.urgency.as_str(), c.standard_code),
        "group": group,
    })
}

async fn services(State(state): State<AppState>, req: Request, format: Format) -> Response {
    let (parts, _) = req.into_parts();
    let pairs = query_pairs(&parts);
    if let Err(e) = state
        .limit_ip(&parts)
        .and_then(|_| check_read_key(&state, &pairs))
    {
        return fail(&state, e, format);
    }
    let en = english(&pairs);
    let list: Vec<Value> = state
        .catalog
        .categories()
        .iter()
        .map(|c| service_json(c, &state, en))
        .collect();
    render(format, StatusCode::OK, "services", "service", &list)
}

async fn service_definition(
    State(state): State<AppState>,
    file: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let file = file.map(|Path(f)| f).unwrap_or_default();
    let Some((code, format)) = Format::split(&file) else {
        return fail(&state, ApiError::NoRoute, Format::Json);
    };
    let pairs = query_pairs(&parts);
    if let Err(e) = state
        .limit_ip(&parts)
        .and_then(|_| check_read_key(&state, &pairs))
    {
        return fail(&state, e, format);
    }
    let Some(c) = state.catalog.get(code) else {
        return fail(
            &state,
            ApiError::invalid("unknown_category", "service_code was not found".to_string()),
            format,
        );
    };
    let definition = json!({"service_code": c.code.as_str(), "attributes": []});
    match format {
        Format::Json => json_response(StatusCode::OK, &definition),
        Format::Xml => {
            let mut out = XmlOut::new();
            out.open("service_definition");
            out.element("service_code", c.code.as_str());
            out.open("attributes");
            out.close("attributes");
            out.close("service_definition");
            xml_response(StatusCode::OK, out.finish())
        }
    }
}

async fn post_request(State(state): State<AppState>, req: Request, format: Format) -> Response {
    let (parts, body) = req.into_parts();
    match accept_request(&state, &parts, body).await {
        Ok(id) => {
            let item = json!({
                "service_request_id": id,
                "service_notice": "",
                "account_id": Value::Null,
            });
            render(
                format,
                StatusCode::CREATED,
                "service_requests",
                "request",
                &[item],
            )
        }
        Err(e) => fail(&state, e, format),
    }
}

async fn accept_request(state: &AppState, parts: &Parts, body: Body) -> Result<String, ApiError> {
    state.limit_ip(parts)?;
    require_media_type(&parts.headers, "application/x-www-form-urlencoded")?;
    let bytes = read_body(&parts.headers, body, MAX_SINGLE_BODY_BYTES).await?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| ApiError::InvalidJson(format!("the form is not valid: {e}")))?;
    let token = state.reporter_key(first(&pairs, "api_key").unwrap_or(""))?;
    state.limit_token(&token)?;
    let service_code = first(&pairs, "service_code").unwrap_or("").trim();
    if service_code.is_empty() {
        return Err(ApiError::invalid(
            "missing_service_code",
            "service_code is required",
        ));
    }
    let coordinate = |key: &str| -> Result<f64, ApiError> {
        let text = first(&pairs, key).unwrap_or("").trim();
        if text.is_empty() {
            return Err(ApiError::invalid(
                "missing_location",
                "lat and long are required (address_string alone is not supported)",
            ));
        }
        text.parse::<f64>()
            .map_err(|_| ApiError::invalid("invalid_location", format!("{key} is not a number")))
    };
    let lat = coordinate("lat")?;
    let lon = coordinate("long")?;
    let media_url = first(&pairs, "media_url").unwrap_or("").trim();
    let request = ClueRequest {
        category: service_code.to_owned(),
        lat,
        lon,
        description: first(&pairs, "description").unwrap_or("").to_owned(),
        photos: if media_url.is_empty() {
            Vec::new()
        } else {
            vec![media_url.to_owned()]
        },
        phone: first(&pairs, "phone").map(str::to_owned),
        ..ClueRequest::default()
    };
    let submission = state.prepare(
        &token,
        request,
        parts.headers.get("idempotency-key"),
        Channel::Open311,
    )?;
    state.submit(&submission).await?;
    Ok(submission.clue_id.to_string())
}

fn parse_date(text: &str, key: &str) -> Result<u64, ApiError> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_date",
                format!("{key} must be a W3C (RFC 3339) date-time"),
            )
        })
}

fn comma_list(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The filter an Open311 `GET requests` query asks for.
pub fn filter_from(pairs: &[(String, String)], now_ms: u64) -> Result<RequestFilter, ApiError> {
    let ids = comma_list(pairs, "service_request_id");
    if ids.len() > MAX_REQUESTS as usize {
        return Err(ApiError::invalid(
            "too_many_ids",
            format!("at most {MAX_REQUESTS} service_request_id values"),
        ));
    }
    let mut statuses = Vec::new();
    for s in comma_list(pairs, "status") {
        match s.as_str() {
            "open" => statuses.extend(OPEN_STATUSES.map(String::from)),
            "closed" => statuses.extend(CLOSED_STATUSES.map(String::from)),
            _ => {
                return Err(ApiError::invalid(
                    "invalid_status",
                    "status must be open, closed or both",
                ))
            }
        }
    }
    let start = first(pairs, "start_date")
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_date(s, "start_date"))
        .transpose()?;
    let end = first(pairs, "end_date")
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_date(s, "end_date"))
        .transpose()?;
    let (from_ms, to_ms) = match (start, end) {
        (None, None) => (now_ms.saturating_sub(MAX_SPAN_MS), u64::MAX),
        (Some(s), None) => (s, s.saturating_add(MAX_SPAN_MS)),
        (None, Some(e)) => (e.saturating_sub(MAX_SPAN_MS), e.saturating_add(1)),
        (Some(s), Some(e)) => {
            if e < s {
                return Err(ApiError::invalid(
                    "invalid_date_range",
                    "end_date is before start_date",
                ));
            }
            if e - s > MAX_SPAN_MS {
                return Err(ApiError::invalid(
                    "invalid_date_range",
                    "the date range may not span more than 90 days",
                ));
            }
            (s, e.saturating_add(1))
        }
    };
    Ok(RequestFilter {
        ids,
        categories: comma_list(pairs, "service_code"),
        statuses,
        from_ms,
        to_ms,
        limit: MAX_REQUESTS,
    })
}

async fn get_requests(State(state): State<AppState>, req: Request, format: Format) -> Response {
    let (parts, _) = req.into_parts();
    let pairs = query_pairs(&parts);
    let result = async {
        state.limit_ip(&parts)?;
        check_read_key(&state, &pairs)?;
        let filter = filter_from(&pairs, gridclue_core::wire::now_ms())?;
        fetch_requests(&state, &filter, english(&pairs)).await
    }
    .await;
    match result {
        Ok(list) => render(format, StatusCode::OK, "service_requests", "request", &list),
        Err(e) => fail(&state, e, format),
    }
}

async fn get_request(
    State(state): State<AppState>,
    file: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let file = file.map(|Path(f)| f).unwrap_or_default();
    let Some((id, format)) = Format::split(&file) else {
        return fail(&state, ApiError::NoRoute, Format::Json);
    };
    let pairs = query_pairs(&parts);
    let result = async {
        state.limit_ip(&parts)?;
        check_read_key(&state, &pairs)?;
        let id: gridclue_core::ClueId = id.parse().map_err(|_| ApiError::NotFound)?;
        let filter = RequestFilter {
            ids: vec![id.to_string()],
            limit: 1,
            ..RequestFilter::default()
        };
        let list = fetch_requests(&state, &filter, english(&pairs)).await?;
        if list.is_empty() {
            return Err(ApiError::NotFound);
        }
        Ok(list)
    }
    .await;
    match result {
        Ok(list) => render(format, StatusCode::OK, "service_requests", "request", &list),
        Err(e) => fail(&state, e, format),
    }
}

async fn fetch_requests(
    state: &AppState,
    filter: &RequestFilter,
    en: bool,
) -> Result<Vec<Value>, ApiError> {
    let store = state
        .reads
        .as_ref()
        .ok_or(ApiError::ReadsUnavailable("no clue database is configured"))?;
    let rows = store.requests(filter).await?;
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let texts = store.report_texts(&ids).await?;
    Ok(rows
        .iter()
        .map(|r| request_json(state, r, texts.get(&r.id), en))
        .collect())
}

/// One clue as an Open311 service request.
pub fn request_json(state: &AppState, r: &ClueRow, report: Option<&ReportText>, en: bool) -> Value {
    let category = state.catalog.get(or_empty(&r.category));
    let department = state.catalog.department(or_empty(&r.department));
    let open = !CLOSED_STATUSES.contains(&r.status.as_str());
    let time = |ms: u64| {
        if ms == 0 {
            Value::Null
        } else {
            json!(rfc3339(ms))
        }
    };
    json!({
        "service_request_id": r.id,
        "status": if open { "open" } else { "closed" },
        "status_notes": r.status,
        "service_name": category.map(|c| if en { c.name_en.as_str() } else { c.name_zh.as_str() }),
        "service_code": or_empty(&r.category),
        "description": report.map_or("", |t| t.description.as_str()),
        "agency_responsible": department
            .map(|d| if en { d.name_en.as_str() } else { d.name_zh.as_str() })
            .unwrap_or(or_empty(&r.department)),
        "service_notice": "",
        "requested_datetime": time(r.reported_at_ms),
        "updated_datetime": time(r.updated_at_ms),
        "expected_datetime": time(r.deadline_ms),
        "address": state.grid_addresses.get(or_empty(&r.grid_code)),
        "address_id": r.grid_code.map(String::from),
        "zipcode": Value::Null,
        "lat": r.lat,
        "long": r.lon,
        "media_url": report.and_then(|t| t.photos.first()),
    })
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut r = (status, serde_json::to_string(value).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    r
}

/// A list of flat objects as a JSON array or as `<root><item>…</item>…</root>`.
fn render(format: Format, status: StatusCode, root: &str, item: &str, list: &[Value]) -> Response {
    match format {
        Format::Json => json_response(status, &Value::Array(list.to_vec())),
        Format::Xml => xml_response(status, to_xml(root, item, list)),
    }
}

pub fn to_xml(root: &str, item: &str, list: &[Value]) -> String {
    let mut out = XmlOut::new();
    out.open(root);
    for v in list {
        out.open(item);
        if let Value::Object(map) = v {
            out.fields(map);
        }
        out.close(item);
    }
    out.close(root);
    out.finish()
}

/// An XML document written to memory: the declaration, then elements and escaped text.
struct XmlOut(quick_xml::Writer<Vec<u8>>);

impl XmlOut {
    fn new() -> Self {
        let mut out = Self(quick_xml::Writer::new(Vec::new()));
        out.put(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)));
        out.put(Event::Text(BytesText::from_escaped("\n")));
        out
    }

    fn put(&mut self, event: Event<'_>) {
        // Writing to a Vec cannot fail.
        let _ = self.0.write_event(event);
    }

    fn open(&mut self, name: &str) {
        self.put(Event::Start(BytesStart::new(name)));
    }

    fn close(&mut self, name: &str) {
        self.put(Event::End(BytesEnd::new(name)));
    }

    /// Escapes text for XML content; drops characters XML 1.0 cannot carry.
    fn text(&mut self, s: &str) {
        let carried: String = s
            .chars()
            .filter(|&c| {
                matches!(c, '\t' | '\n' | '\r')
                    || !((c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}')
            })
            .collect();
        self.put(Event::Text(BytesText::new(&carried)));
    }

    fn element(&mut self, name: &str, text: &str) {
        self.open(name);
        self.text(text);
        self.close(name);
    }

    fn fields(&mut self, map: &Map<String, Value>) {
        for (k, v) in map {
            self.open(k);
            match v {
                Value::Null => {}
                Value::String(s) => self.text(s),
                Value::Object(inner) => self.fields(inner),
                Value::Array(items) => {
                    for i in items {
                        self.open("item");
                        match i {
                            Value::Object(inner) => self.fields(inner),
                            Value::String(s) => self.text(s),
                            other => self.text(&other.to_string()),
                        }
                        self.close("item");
                    }
                }
                other => self.text(&other.to_string()),
            }
            self.close(k);
        }
    }

    fn finish(self) -> String {
        String::from_utf8(self.0.into_inner()).expect("XML written from str is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(q).unwrap()
    }

    #[test]
    fn xml_is_escaped_and_nested() {
        let xml = to_xml(
            "service_requests",
            "request",
            &[json!({"a": "<&>\"'", "b": null, "c": 1.5, "d": "\u{1}x"})],
        );
        assert!(xml.contains("<a>&lt;&amp;&gt;&quot;&apos;</a><b></b><c>1.5</c><d>x</d>"));
        assert!(xml.starts_with("<?xml"));
    }

    #[test]
    fn xml_is_written_exactly_as_documented() {
        let xml = to_xml(
            "services",
            "service",
            &[
                json!({"a_code": "a&b", "b_list": ["x", {"k": "v"}, 2], "c_meta": {"m": true}}),
                json!({"a_code": "\tok\u{fffe}"}),
            ],
        );
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<services>\
             <service><a_code>a&amp;b</a_code>\
             <b_list><item>x</item><item><k>v</k></item><item>2</item></b_list>\
             <c_meta><m>true</m></c_meta></service>\
             <service><a_code>\tok</a_code></service>\
             </services>"
        );
    }

    #[test]
    fn filters_follow_the_spec() {
        let now = 200 * 24 * 3600 * 1000;
        let f = filter_from(&pairs(""), now).unwrap();
        assert_eq!(f.from_ms, now - MAX_SPAN_MS);
        assert!(f.statuses.is_empty() && f.ids.is_empty());
        let f = filter_from(
            &pairs("status=open&service_code=a,b&service_code=c&service_request_id="),
            now,
        )
        .unwrap();
        assert_eq!(f.statuses.len(), OPEN_STATUSES.len());
        for status in gridclue_core::Status::ALL {
            let name = status.as_str();
            assert_eq!(OPEN_STATUSES.contains(&name), status.is_open(), "{name}");
            assert_eq!(
                CLOSED_STATUSES.contains(&name),
                status.is_terminal(),
                "{name}"
            );
        }
        assert_eq!(f.categories, ["a", "b", "c"]);
        let f = filter_from(
            &pairs("start_date=2026-01-01T00:00:00Z&end_date=2026-01-31T00:00:00%2B08:00"),
            now,
        )
        .unwrap();
        assert_eq!(f.from_ms, 1_767_225_600_000);
        assert_eq!(f.to_ms, 1_769_788_800_000 + 1);
        let code = |q: &str| filter_from(&pairs(q), now).unwrap_err().code();
        assert_eq!(code("status=pending"), "invalid_status");
        assert_eq!(code("start_date=yesterday"), "invalid_date");
        assert_eq!(
            code("start_date=2026-01-01T00:00:00Z&end_date=2026-06-01T00:00:00Z"),
            "invalid_date_range"
        );
        assert_eq!(
            code("start_date=2026-02-01T00:00:00Z&end_date=2026-01-01T00:00:00Z"),
            "invalid_date_range"
        );
    }

    #[test]
    fn file_names_split() {
        assert_eq!(Format::split("a.json"), Some(("a", Format::Json)));
        assert_eq!(Format::split("a.xml"), Some(("a", Format::Xml)));
        assert_eq!(Format::split("a.csv"), None);
    }
}
