//! Generator, loader and validator working together.

use std::path::PathBuf;
use std::sync::OnceLock;

use geo_types::{Coord, LineString, Polygon};
use gridclue_district::geom::LocalProjection;
use gridclue_district::{
    generate, parse_geojson, to_geojson_string, validate, validate_geojson_str, District,
    DistrictError, FeatureError, FeatureRef, GenerateParams, GridCode, Problem, RingError,
    StreetKind, ValidateOptions,
};

fn params(grids: usize, seed: u64) -> GenerateParams {
    GenerateParams {
        grids,
        seed,
        ..GenerateParams::default()
    }
}

/// The 1k-grid map, generated once for all tests.
fn map_1k() -> &'static District {
    static MAP: OnceLock<District> = OnceLock::new();
    MAP.get_or_init(|| generate(&params(1000, 7)).expect("generate"))
}

fn problems(d: &District) -> Vec<Problem> {
    validate(d, &ValidateOptions::default()).problems
}

/// Index of the grid closest to the district centre: surely surrounded by other grids.
fn central_grid(d: &District) -> usize {
    let proj = LocalProjection::around(d.grids.iter().flat_map(|g| g.polygon.exterior().0.iter()));
    let centre = |k: usize| {
        let r = &d.grids[k].polygon.exterior().0;
        let n = r.len() as f64;
        let c = Coord {
            x: r.iter().map(|c| c.x).sum::<f64>() / n,
            y: r.iter().map(|c| c.y).sum::<f64>() / n,
        };
        let p = proj.project(c);
        p[0] * p[0] + p[1] * p[1]
    };
    (0..d.grids.len())
        .filter(|&k| d.grids[k].polygon.interiors().is_empty())
        .min_by(|&a, &b| centre(a).total_cmp(&centre(b)))
        .expect("grids")
}

/// Moves vertex `v` of grid `k`'s exterior by `metres` perpendicular to the ring: positive =
/// outwards (to the right of a counter-clockwise ring), negative = inwards.
fn push_vertex(d: &mut District, k: usize, v: usize, metres: f64) {
    let ring = d.grids[k].polygon.exterior().0.clone();
    let proj = LocalProjection::new(ring[v].x, ring[v].y);
    let a = proj.project(ring[v - 1]);
    let b = proj.project(ring[v + 1]);
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len = (dx * dx + dy * dy).sqrt();
    let out = [dy / len, -dx / len];
    let mut moved = ring.clone();
    moved[v] = proj.unproject([out[0] * metres, out[1] * metres]);
    let holes = d.grids[k].polygon.interiors().to_vec();
    d.grids[k].polygon = Polygon::new(LineString(moved), holes);
}

#[test]
fn generator_is_deterministic_by_seed() {
    let a = to_geojson_string(&generate(&params(300, 42)).unwrap()).unwrap();
    let b = to_geojson_string(&generate(&params(300, 42)).unwrap()).unwrap();
    assert_eq!(a, b, "same seed must give byte-identical output");
    let c = to_geojson_string(&generate(&params(300, 43)).unwrap()).unwrap();
    assert_ne!(a, c, "another seed gives another map");
}

#[test]
fn generated_1k_map_is_a_clean_partition() {
    let d = map_1k();
    let report = validate(d, &ValidateOptions::default());
    assert!(report.is_ok(), "{report}");
    assert!(report.warnings.is_empty(), "{report}");
    assert_eq!(report.outline_parts, 1);
    assert!(report.overlap_area_m2 < 1e-3, "{report}");
    assert!(report.gap_area_m2 < 1e-3, "{report}");
    assert!((995..=1005).contains(&d.grids.len()), "{}", d.grids.len());
    assert_eq!(d.streets.len(), 13);
    let towns = d
        .streets
        .iter()
        .filter(|s| s.kind() == StreetKind::Town)
        .count();
    assert!(towns > 0 && towns < 13);
    assert!(d.communities.iter().any(|c| c.name.ends_with('村')));
    assert!(d.communities.iter().any(|c| c.name.ends_with("社区")));
    assert!(d.excluded.len() >= 2, "lakes and ponds");
    assert!(d.grids.iter().any(|g| !g.polygon.interiors().is_empty()));
    // Irregular polygons: tens of vertices each.
    let min_vertices = d
        .grids
        .iter()
        .map(|g| g.polygon.exterior().0.len())
        .min()
        .unwrap();
    assert!(min_vertices >= 40, "{min_vertices}");
    // Every grid code is consistent with its community and street.
    for g in &d.grids {
        assert_eq!(g.grid_code.community_code(), g.community_code);
        assert_eq!(g.grid_code.street_code(), g.street_code);
        assert!(d.community(&g.community_code).is_some());
        assert!(d.street(&g.street_code).is_some());
    }
}

#[test]
fn small_and_odd_parameters_still_partition_cleanly() {
    for (grids, streets, seed, edge_points) in [(60, 3, 1, 0), (400, 13, 99, 6), (250, 1, 5, 40)] {
        let d = generate(&GenerateParams {
            grids,
            streets,
            seed,
            edge_points,
            ..GenerateParams::default()
        })
        .unwrap();
        let report = validate(&d, &ValidateOptions::default());
        assert!(report.is_ok(), "{grids}/{streets}/{seed}: {report}");
        assert_eq!(d.streets.len(), streets);
    }
}

#[test]
fn geojson_round_trip_is_exact() {
    let d = map_1k();
    let text = to_geojson_string(d).unwrap();
    let back = parse_geojson(&text).unwrap();
    assert_eq!(&back, d);
    assert_eq!(back.content_hash(), d.map_version);
    // Without the foreign member the version is derived from the content, equally.
    let stripped = text.replacen(&format!("\"map_version\":\"{}\",", d.map_version), "", 1);
    assert_ne!(stripped, text);
    assert_eq!(parse_geojson(&stripped).unwrap().map_version, d.map_version);
}

#[test]
fn validate_detects_an_injected_overlap() {
    let mut d = map_1k().clone();
    let k = central_grid(&d);
    push_vertex(&mut d, k, 5, 25.0);
    let ps = problems(&d);
    let me = FeatureRef::Grid(d.grids[k].grid_code);
    let overlaps: Vec<&Problem> = ps
        .iter()
        .filter(|p| matches!(p, Problem::Overlap { a, b, area_m2, .. } if (*a == me || *b == me) && *area_m2 > 10.0))
        .collect();
    assert_eq!(overlaps.len(), 1, "{ps:#?}");
    assert!(
        !ps.iter().any(|p| matches!(p, Problem::Gap { .. })),
        "{ps:#?}"
    );
}

#[test]
fn validate_detects_an_injected_gap() {
    let mut d = map_1k().clone();
    let k = central_grid(&d);
    push_vertex(&mut d, k, 5, -25.0);
    let ps = problems(&d);
    let me = FeatureRef::Grid(d.grids[k].grid_code);
    assert!(
        ps.iter().any(
            |p| matches!(p, Problem::Gap { near, area_m2, .. } if near.contains(&me) && *area_m2 > 10.0)
        ),
        "{ps:#?}"
    );
    assert!(
        !ps.iter().any(|p| matches!(p, Problem::Overlap { .. })),
        "{ps:#?}"
    );
}

#[test]
fn validate_detects_a_missing_grid_as_a_gap_of_its_size() {
    let mut d = map_1k().clone();
    let k = central_grid(&d);
    let removed = d.grids.remove(k);
    let proj = LocalProjection::around(removed.polygon.exterior().0.iter());
    let area = gridclue_district::geom::polygon_area_m2(&proj, &removed.polygon);
    let ps = problems(&d);
    let gaps: Vec<f64> = ps
        .iter()
        .filter_map(|p| match p {
            Problem::Gap { area_m2, .. } => Some(*area_m2),
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len(), 1, "{ps:#?}");
    assert!(
        (gaps[0] - area).abs() / area < 0.01,
        "{} vs {area}",
        gaps[0]
    );
}

#[test]
fn validate_detects_a_stacked_duplicate_polygon() {
    let mut d = map_1k().clone();
    let k = central_grid(&d);
    let mut copy = d.grids[k].clone();
    let seq = copy.grid_code.seq();
    copy.grid_code = GridCode::parse(&format!(
        "{}{:03}",
        copy.community_code,
        if seq == 999 { 998 } else { 999 }
    ))
    .unwrap();
    d.grids.push(copy);
    let ps = problems(&d);
    assert!(
        ps.iter().any(|p| matches!(p, Problem::Overlap { .. })),
        "{ps:#?}"
    );
}

#[test]
fn validate_detects_a_duplicate_code() {
    let mut d = map_1k().clone();
    d.grids[1].grid_code = d.grids[0].grid_code;
    d.grids[1].community_code = d.grids[0].community_code;
    d.grids[1].street_code = d.grids[0].street_code;
    let ps = problems(&d);
    assert!(
        ps.contains(&Problem::DuplicateGridCode {
            code: d.grids[0].grid_code,
            count: 2
        }),
        "{ps:#?}"
    );
}

#[test]
fn validate_detects_hierarchy_mismatches() {
    let mut d = map_1k().clone();
    let other = d
        .communities
        .iter()
        .find(|c| c.code != d.grids[0].community_code)
        .unwrap()
        .code;
    d.grids[0].community_code = other;
    let ps = problems(&d);
    assert!(
        ps.iter().any(|p| matches!(
            p,
            Problem::PrefixMismatch {
                field: "community_code",
                ..
            }
        )),
        "{ps:#?}"
    );
}

#[test]
fn validate_detects_a_self_intersection() {
    let mut d = map_1k().clone();
    let k = central_grid(&d);
    let mut ring = d.grids[k].polygon.exterior().0.clone();
    let n = ring.len();
    ring.swap(3, n / 2);
    d.grids[k].polygon = Polygon::new(LineString(ring), vec![]);
    let ps = problems(&d);
    assert!(
        ps.iter().any(|p| matches!(p, Problem::SelfIntersection { feature: FeatureRef::Grid(c), .. } if *c == d.grids[k].grid_code)),
        "{ps:#?}"
    );
}

fn first_grid_code(text: &str) -> String {
    let at = text.find("\"grid_code\":\"").unwrap() + "\"grid_code\":\"".len();
    text[at..at + 15].to_owned()
}

#[test]
fn validate_reports_malformed_codes_in_a_file_all_of_them() {
    let d = generate(&params(200, 3)).unwrap();
    let text = to_geojson_string(&d).unwrap();
    let code0 = d.grids[0].grid_code.to_string();
    let code1 = d.grids[1].grid_code.to_string();
    let bad = text
        .replacen(
            &format!("\"grid_code\":\"{code0}\""),
            &format!("\"grid_code\":\"{}X\"", &code0[..14]),
            1,
        )
        .replacen(
            &format!("\"grid_code\":\"{code1}\""),
            &format!("\"grid_code\":\"{}\"", &code1[..14]),
            1,
        );
    let report = validate_geojson_str(&bad, &ValidateOptions::default(), &mut |_| {}).unwrap();
    assert!(!report.is_ok());
    let bad_codes: Vec<usize> = report
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::BadFeature {
                index,
                error:
                    FeatureError::BadCode {
                        property: "grid_code",
                        ..
                    },
                ..
            } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(bad_codes, vec![0, 1], "{report}");
}

#[test]
fn loader_rejects_a_bad_feature_with_a_specific_error() {
    let d = generate(&params(200, 3)).unwrap();
    let text = to_geojson_string(&d).unwrap();
    let code = first_grid_code(&text);

    // Malformed code.
    let bad = text.replacen(
        &format!("\"grid_code\":\"{code}\""),
        &format!("\"grid_code\":\"{}X\"", &code[..14]),
        1,
    );
    match parse_geojson(&bad) {
        Err(DistrictError::Feature {
            index: 0,
            source:
                FeatureError::BadCode {
                    property: "grid_code",
                    ..
                },
            ..
        }) => {}
        other => panic!("unexpected: {other:?}"),
    }
    let msg = parse_geojson(&bad).unwrap_err().to_string();
    assert!(
        msg.contains("feature #0") && msg.contains("grid_code"),
        "{msg}"
    );

    // Community code that is not the prefix of the grid code.
    let wrong_cc = format!(
        "{}{:03}",
        &code[..9],
        (code[9..12].parse::<u16>().unwrap() + 1) % 1000
    );
    let bad = text.replacen(
        &format!("\"community_code\":\"{}\"", &code[..12]),
        &format!("\"community_code\":\"{wrong_cc}\""),
        1,
    );
    assert!(matches!(
        parse_geojson(&bad),
        Err(DistrictError::Feature {
            index: 0,
            source: FeatureError::PrefixMismatch {
                property: "community_code",
                ..
            },
            ..
        })
    ));

    // Missing property.
    let bad = text.replacen("\"street_name\":", "\"street_nam\":", 1);
    assert!(matches!(
        parse_geojson(&bad),
        Err(DistrictError::Feature {
            index: 0,
            source: FeatureError::MissingProperty("street_name"),
            ..
        })
    ));

    // Ring that is not closed: drop the closing position of the first ring.
    let start = text.find("\"coordinates\":[[").unwrap();
    // `end` is just past the last position's closing bracket.
    let end = start + text[start..].find("]]").unwrap() + 1;
    let ring = &text[start..end];
    let last_pos = ring.rfind(",[").unwrap();
    let bad = format!("{}{}", &text[..start + last_pos], &text[end..]);
    assert!(matches!(
        parse_geojson(&bad),
        Err(DistrictError::Feature {
            index: 0,
            source: FeatureError::Ring {
                ring: 0,
                error: RingError::NotClosed
            },
            ..
        })
    ));

    // Wrong geometry type, unknown kind.
    let bad = text.replacen("\"type\":\"Polygon\"", "\"type\":\"LineString\"", 1);
    assert!(matches!(
        parse_geojson(&bad),
        Err(DistrictError::Feature {
            source: FeatureError::UnsupportedGeometry(_),
            ..
        })
    ));
    let bad = text.replacen("\"kind\":\"grid\"", "\"kind\":\"park\"", 1);
    assert!(matches!(
        parse_geojson(&bad),
        Err(DistrictError::Feature {
            source: FeatureError::UnknownKind(_),
            ..
        })
    ));

    // Not a FeatureCollection at all.
    assert!(matches!(
        parse_geojson("{\"type\":\"Feature\",\"features\":[]}"),
        Err(DistrictError::NotFeatureCollection(_))
    ));
    assert!(matches!(parse_geojson("[1,2"), Err(DistrictError::Json(_))));
}

#[test]
fn loader_rejects_conflicting_names() {
    let d = generate(&params(200, 3)).unwrap();
    let mut text = to_geojson_string(&d).unwrap();
    // Rename the community in the second grid's feature only (same community as the first).
    assert_eq!(d.grids[0].community_code, d.grids[1].community_code);
    let name = &d.community(&d.grids[0].community_code).unwrap().name;
    let second = text
        .match_indices(&format!("\"community_name\":\"{name}\""))
        .nth(1)
        .unwrap()
        .0;
    text.replace_range(
        second..second + format!("\"community_name\":\"{name}\"").len(),
        "\"community_name\":\"别名社区\"",
    );
    match parse_geojson(&text) {
        Err(DistrictError::Conflict { index: 1, conflict }) => {
            assert_eq!(conflict.what, "community");
            assert_eq!(conflict.second, "别名社区");
        }
        other => panic!("unexpected: {other:?}"),
    }
}

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

#[test]
fn shipped_district_loads_validates_and_has_13_streets() {
    let d = gridclue_district::load_geojson(repo_file("data/district/grids.geojson")).unwrap();
    let report = validate(&d, &ValidateOptions::default());
    assert!(report.is_ok(), "{report}");
    assert_eq!(d.streets.len(), 13);
    assert!(d
        .streets
        .iter()
        .any(|s| s.kind() == StreetKind::Subdistrict));
    assert!(d.streets.iter().any(|s| s.kind() == StreetKind::Town));
    assert!((950..=1050).contains(&d.grids.len()));
    assert!(!d.excluded.is_empty());
    // The shipped file is exactly what the documented command generates.
    let regenerated = generate(&GenerateParams {
        grids: 1000,
        streets: 13,
        seed: 20250101,
        ..GenerateParams::default()
    })
    .unwrap();
    assert_eq!(
        regenerated, d,
        "data/district/README.md command no longer reproduces the file"
    );
}

#[test]
fn shipped_categories_are_complete() {
    let text = std::fs::read_to_string(repo_file("data/categories.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version"], 1);
    let depts: Vec<&str> = v["departments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    let cats = v["categories"].as_array().unwrap();
    assert!((16..=24).contains(&cats.len()));
    let mut codes = std::collections::BTreeSet::new();
    for c in cats {
        let code = c["code"].as_str().unwrap();
        assert!(codes.insert(code), "duplicate {code}");
        assert!(
            code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{code}"
        );
        assert!(depts.contains(&c["department"].as_str().unwrap()), "{code}");
        assert!(["component", "event"].contains(&c["family"].as_str().unwrap()));
        assert!(["urgent", "normal", "low"].contains(&c["urgency"].as_str().unwrap()));
        assert!(
            ["working_hours", "working_days"].contains(&c["deadline"]["unit"].as_str().unwrap())
        );
        assert!(c["deadline"]["amount"].as_u64().unwrap() > 0);
        for k in ["standard_code", "name_zh", "name_en", "icon"] {
            assert!(!c[k].as_str().unwrap().is_empty(), "{code} {k}");
        }
    }
    let mut std_codes = std::collections::BTreeSet::new();
    for c in cats {
        let key = (
            c["family"].as_str().unwrap(),
            c["standard_code"].as_str().unwrap(),
        );
        assert!(std_codes.insert(key), "duplicate standard code {key:?}");
    }
    for required in ["manhole_cover", "garbage_pile", "food_safety"] {
        assert!(codes.contains(required), "{required}");
    }
    for fam in ["component", "event"] {
        assert!(
            cats.iter().filter(|c| c["family"] == fam).count() >= 6,
            "{fam}"
        );
    }
}

#[test]
fn shipped_calendar_is_well_formed() {
    let text = std::fs::read_to_string(repo_file("data/calendar.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["timezone_offset_minutes"], 480);
    assert_eq!(v["working_hours"].as_array().unwrap().len(), 2);
    for year in ["2025", "2026"] {
        let y = &v["years"][year];
        for h in y["holidays"].as_array().unwrap() {
            let (from, to) = (h[0].as_str().unwrap(), h[1].as_str().unwrap());
            assert!(from.starts_with(year) && from <= to, "{h}");
            assert!(!h[2].as_str().unwrap().is_empty());
        }
        assert!(!y["makeup_workdays"].as_array().unwrap().is_empty());
    }
    // 调休 make-up working days are weekend days.
    for year in ["2025", "2026"] {
        for day in v["years"][year]["makeup_workdays"].as_array().unwrap() {
            let day = day.as_str().unwrap();
            let wd = weekday(day);
            assert!(wd == 6 || wd == 7, "{day} is weekday {wd}");
        }
    }
    // Spot checks of the official dates.
    assert_eq!(v["years"]["2025"]["holidays"][1][0], "2025-01-28");
    assert_eq!(v["years"]["2026"]["makeup_workdays"][0], "2026-01-04");
}

/// ISO weekday (1 = Monday … 7 = Sunday) of a YYYY-MM-DD date.
fn weekday(date: &str) -> u32 {
    let y: i64 = date[..4].parse().unwrap();
    let m: i64 = date[5..7].parse().unwrap();
    let d: i64 = date[8..10].parse().unwrap();
    // Days since 1970-01-01 (civil-from-days inverse), 1970-01-01 was a Thursday.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days + 3).rem_euclid(7) + 1) as u32
}

#[test]
fn weekday_helper_is_right() {
    assert_eq!(weekday("1970-01-01"), 4);
    assert_eq!(weekday("2025-01-26"), 7);
    assert_eq!(weekday("2026-02-28"), 6);
    assert_eq!(weekday("2025-10-01"), 3);
}

#[test]
fn validate_handles_neighbours_without_identical_vertices() {
    // Split every edge of one grid at its midpoint: its neighbours no longer share identical
    // edges with it (T-junctions), but the partition is still gap- and overlap-free.
    let mut d = map_1k().clone();
    let k = central_grid(&d);
    let ring = d.grids[k].polygon.exterior().0.clone();
    let mut split = Vec::with_capacity(ring.len() * 2);
    for w in ring.windows(2) {
        split.push(w[0]);
        split.push(Coord {
            x: (w[0].x + w[1].x) / 2.0,
            y: (w[0].y + w[1].y) / 2.0,
        });
    }
    split.push(ring[0]);
    let holes = d.grids[k].polygon.interiors().to_vec();
    d.grids[k].polygon = Polygon::new(LineString(split), holes);
    let report = validate(&d, &ValidateOptions::default());
    assert!(report.is_ok(), "{report}");
    assert!(report.unshared_edges > 100, "{report}");
}
