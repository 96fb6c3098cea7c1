//! gridclue-district: the district map.
//!
//! A pure, synchronous library (the only I/O is in the explicit load/save functions):
//!
//! - [`model`]: typed codes ([`GridCode`], [`CommunityCode`], [`StreetCode`]) and the
//!   [`District`] of streets, communities, unit grids and excluded areas (lakes, ponds).
//! - [`geojson`]: load from / save to a GeoJSON FeatureCollection, with errors that name the
//!   feature that is wrong.
//! - [`generate`](mod@generate): a deterministic generator of synthetic districts (gap-free,
//!   overlap-free partitions of irregular polygons), from ~1 000 grids for the shipped map to
//!   100 000 for city-scale benchmarks.
//! - [`validate`](mod@validate): the partition check (codes, hierarchy, polygon validity,
//!   overlaps, gaps), reporting every problem.
//! - [`stats`](mod@stats): counts and areas per street.
//!
//! Grid codes follow the 15-digit municipal pattern: 6 digits administrative division
//! (GB/T 2260), 3 digits street (000–099 街道, 100–199 镇), 3 digits community, 3 digits grid
//! sequence; a community code is the first 12 digits, a street code the first 9.

pub mod generate;
pub mod geojson;
pub mod geom;
pub mod model;
mod names;
pub mod stats;
pub mod validate;

pub use generate::{generate, GenerateError, GenerateParams};
pub use geojson::{
    load_geojson, parse_geojson, read_geojson, save_geojson, to_geojson_string, write_geojson,
    DistrictError, FeatureError, NameConflict, RingError,
};
pub use model::{
    CodeError, Community, CommunityCode, District, ExcludedArea, Grid, GridCode, Street,
    StreetCode, StreetKind,
};
pub use stats::{stats, Stats, StreetStats};
pub use validate::{
    validate, validate_geojson_file, validate_geojson_str, validate_with_progress, FeatureRef,
    Problem, Progress, RingDefect, ValidateOptions, ValidationReport,
};
