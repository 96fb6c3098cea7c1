//! Summary numbers of a district: counts and areas per street.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::geom::{polygon_area_m2, LocalProjection};
use crate::model::{District, StreetCode, StreetKind};

/// Counts and areas of one street.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreetStats {
    /// Street code.
    pub code: StreetCode,
    /// Street name.
    pub name: String,
    /// 街道 or 镇.
    pub kind: StreetKind,
    /// Communities listed for the street.
    pub communities: usize,
    /// Grids in the street.
    pub grids: usize,
    /// Area of its grids (km²).
    pub area_km2: f64,
}

/// Counts and areas of a district.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Map version.
    pub map_version: String,
    /// Streets.
    pub streets: usize,
    /// Of which 街道.
    pub subdistricts: usize,
    /// Of which 镇.
    pub towns: usize,
    /// Communities.
    pub communities: usize,
    /// Grids.
    pub grids: usize,
    /// Grids with at least one hole.
    pub grids_with_holes: usize,
    /// Excluded areas.
    pub excluded: usize,
    /// Area of all grids (km²).
    pub grid_area_km2: f64,
    /// Area of all excluded areas (km²).
    pub excluded_area_km2: f64,
    /// Smallest, mean and largest grid area (m²).
    pub grid_area_m2: [f64; 3],
    /// Smallest, mean and largest vertex count of a grid (closing points not counted).
    pub grid_vertices: [f64; 3],
    /// Grids per community: smallest, mean, largest.
    pub grids_per_community: [f64; 3],
    /// Bounding box: min lon, min lat, max lon, max lat.
    pub bbox: [f64; 4],
    /// Per street, by code.
    pub per_street: Vec<StreetStats>,
}

fn min_mean_max(v: impl Iterator<Item = f64>) -> [f64; 3] {
    let (mut lo, mut hi, mut sum, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
    for x in v {
        lo = lo.min(x);
        hi = hi.max(x);
        sum += x;
        n += 1;
    }
    if n == 0 {
        [0.0; 3]
    } else {
        [lo, sum / n as f64, hi]
    }
}

/// Computes the statistics of a district.
pub fn stats(d: &District) -> Stats {
    let proj = LocalProjection::around(d.grids.iter().flat_map(|g| g.polygon.exterior().0.iter()));
    let areas: Vec<f64> = d
        .grids
        .iter()
        .map(|g| polygon_area_m2(&proj, &g.polygon))
        .collect();
    let mut per: BTreeMap<&StreetCode, StreetStats> = d
        .streets
        .iter()
        .map(|s| {
            (
                &s.code,
                StreetStats {
                    code: s.code,
                    name: s.name.clone(),
                    kind: s.kind(),
                    communities: 0,
                    grids: 0,
                    area_km2: 0.0,
                },
            )
        })
        .collect();
    for c in &d.communities {
        if let Some(s) = per.get_mut(&c.street_code) {
            s.communities += 1;
        }
    }
    let mut per_comm: BTreeMap<&str, usize> =
        d.communities.iter().map(|c| (c.code.as_str(), 0)).collect();
    for (g, a) in d.grids.iter().zip(&areas) {
        if let Some(s) = per.get_mut(&g.street_code) {
            s.grids += 1;
            s.area_km2 += a / 1e6;
        }
        *per_comm.entry(g.community_code.as_str()).or_default() += 1;
    }
    let mut bbox = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for g in &d.grids {
        for c in &g.polygon.exterior().0 {
            bbox[0] = bbox[0].min(c.x);
            bbox[1] = bbox[1].min(c.y);
            bbox[2] = bbox[2].max(c.x);
            bbox[3] = bbox[3].max(c.y);
        }
    }
    if !bbox[0].is_finite() {
        bbox = [0.0; 4];
    }
    let vertex_count = |p: &geo_types::Polygon<f64>| {
        std::iter::once(p.exterior())
            .chain(p.interiors())
            .map(|r| r.0.len().saturating_sub(1))
            .sum::<usize>() as f64
    };
    Stats {
        map_version: d.map_version.clone(),
        streets: d.streets.len(),
        subdistricts: d
            .streets
            .iter()
            .filter(|s| s.kind() == StreetKind::Subdistrict)
            .count(),
        towns: d
            .streets
            .iter()
            .filter(|s| s.kind() == StreetKind::Town)
            .count(),
        communities: d.communities.len(),
        grids: d.grids.len(),
        grids_with_holes: d
            .grids
            .iter()
            .filter(|g| !g.polygon.interiors().is_empty())
            .count(),
        excluded: d.excluded.len(),
        grid_area_km2: areas.iter().sum::<f64>() / 1e6,
        excluded_area_km2: d
            .excluded
            .iter()
            .map(|e| polygon_area_m2(&proj, &e.polygon))
            .sum::<f64>()
            / 1e6,
        grid_area_m2: min_mean_max(areas.iter().copied()),
        grid_vertices: min_mean_max(d.grids.iter().map(|g| vertex_count(&g.polygon))),
        grids_per_community: min_mean_max(per_comm.values().map(|&n| n as f64)),
        bbox,
        per_street: per.into_values().collect(),
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "map_version        {}", self.map_version)?;
        writeln!(
            f,
            "streets            {} ({} 街道, {} 镇)",
            self.streets, self.subdistricts, self.towns
        )?;
        writeln!(f, "communities        {}", self.communities)?;
        writeln!(
            f,
            "grids              {} ({} with holes)",
            self.grids, self.grids_with_holes
        )?;
        writeln!(f, "excluded areas     {}", self.excluded)?;
        writeln!(
            f,
            "area               grids {:.3} km², excluded {:.3} km²",
            self.grid_area_km2, self.excluded_area_km2
        )?;
        writeln!(
            f,
            "grid area m²       min {:.0} / mean {:.0} / max {:.0}",
            self.grid_area_m2[0], self.grid_area_m2[1], self.grid_area_m2[2]
        )?;
        writeln!(
            f,
            "grid vertices      min {:.0} / mean {:.1} / max {:.0}",
            self.grid_vertices[0], self.grid_vertices[1], self.grid_vertices[2]
        )?;
        writeln!(
            f,
            "grids / community  min {:.0} / mean {:.1} / max {:.0}",
            self.grids_per_community[0], self.grids_per_community[1], self.grids_per_community[2]
        )?;
        writeln!(
            f,
            "bbox               {:.5},{:.5} – {:.5},{:.5}",
            self.bbox[0], self.bbox[1], self.bbox[2], self.bbox[3]
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<10} {:<12} {:<12} {:>11} {:>6} {:>9}",
            "code", "name", "kind", "communities", "grids", "km²"
        )?;
        for s in &self.per_street {
            // Pad by display width: CJK characters take two columns.
            let width: usize = s
                .name
                .chars()
                .map(|c| if c.is_ascii() { 1 } else { 2 })
                .sum();
            let pad = 12usize.saturating_sub(width);
            writeln!(
                f,
                "{:<10} {}{} {:<12} {:>11} {:>6} {:>9.3}",
                s.code,
                s.name,
                " ".repeat(pad),
                s.kind,
                s.communities,
                s.grids,
                s.area_km2
            )?;
        }
        Ok(())
    }
}
