//! `gridclue-district`: generate, validate and summarise district maps.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gridclue_district::{
    generate, load_geojson, save_geojson, stats, validate_geojson_file, GenerateParams, Progress,
    ValidateOptions,
};

#[derive(Parser)]
#[command(
    name = "gridclue-district",
    version,
    about = "District maps: generate, validate, stats"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a synthetic district (deterministic by seed) and write it as GeoJSON.
    Generate {
        /// Number of unit grids wanted.
        #[arg(long, default_value_t = 1000)]
        grids: usize,
        /// Number of street offices (about 5/13 of them towns).
        #[arg(long, default_value_t = 13)]
        streets: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output GeoJSON file.
        #[arg(long)]
        out: PathBuf,
        /// Longitude of the district centre.
        #[arg(long, default_value_t = 121.5, allow_negative_numbers = true)]
        center_lon: f64,
        /// Latitude of the district centre.
        #[arg(long, default_value_t = 31.2, allow_negative_numbers = true)]
        center_lat: f64,
        /// Lattice cell size in metres (a grid is one or two cells).
        #[arg(long, default_value_t = 380.0)]
        cell_size_m: f64,
        /// Interior points per wiggly lattice edge.
        #[arg(long, default_value_t = 20)]
        edge_points: usize,
        /// Lakes (default: one per 500 grids).
        #[arg(long)]
        lakes: Option<usize>,
        /// Ponds, i.e. grids with a hole (default: one per 300 grids).
        #[arg(long)]
        ponds: Option<usize>,
        /// 6-digit administrative division code.
        #[arg(long, default_value = "310199")]
        admin_division: String,
        /// Map version to stamp (default: content hash).
        #[arg(long)]
        map_version: Option<String>,
    },
    /// Check a map: codes, hierarchy, polygons, overlaps and gaps. Exit status 1 on problems.
    Validate {
        /// GeoJSON file.
        path: PathBuf,
        /// Largest tolerated gap or overlap piece, m².
        #[arg(long, default_value_t = 0.5)]
        tolerance_m2: f64,
        /// Largest tolerated total overlap relative to the total area.
        #[arg(long, default_value_t = 1e-9)]
        tolerance_relative: f64,
    },
    /// Print counts and areas per street.
    Stats {
        /// GeoJSON file.
        path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    match Cli::parse().cmd {
        Cmd::Generate {
            grids,
            streets,
            seed,
            out,
            center_lon,
            center_lat,
            cell_size_m,
            edge_points,
            lakes,
            ponds,
            admin_division,
            map_version,
        } => {
            let params = GenerateParams {
                grids,
                streets,
                seed,
                center_lon,
                center_lat,
                cell_size_m,
                edge_points,
                lakes,
                ponds,
                admin_division,
                map_version,
            };
            let t0 = Instant::now();
            let d = generate(&params)?;
            let gen_s = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            save_geojson(&d, &out)?;
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            eprintln!(
                "generated {} grids, {} communities, {} streets, {} excluded areas in {:.2} s; \
                 wrote {} ({:.1} MB) in {:.2} s; map_version {}",
                d.grids.len(),
                d.communities.len(),
                d.streets.len(),
                d.excluded.len(),
                gen_s,
                out.display(),
                size as f64 / 1e6,
                t1.elapsed().as_secs_f64(),
                d.map_version
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Validate {
            path,
            tolerance_m2,
            tolerance_relative,
        } => {
            let opts = ValidateOptions {
                max_piece_m2: tolerance_m2,
                max_total_relative: tolerance_relative,
            };
            let t0 = Instant::now();
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if size > 20_000_000 {
                eprintln!(
                    "validate: reading {} ({:.0} MB)",
                    path.display(),
                    size as f64 / 1e6
                );
            }
            let tty = std::io::stderr().is_terminal();
            let mut last = Instant::now();
            let mut shown = false;
            let mut progress = |p: Progress<'_>| {
                // A progress line for maps that take a while; one line per phase when not on a
                // terminal, an updating line when on one.
                if t0.elapsed().as_secs_f64() < 1.0 && p.phase != "done" {
                    return;
                }
                if p.phase == "done" {
                    if shown && tty {
                        eprintln!();
                    }
                    return;
                }
                let now = Instant::now();
                if tty {
                    if now.duration_since(last).as_millis() >= 200 || p.done == p.total {
                        eprint!(
                            "\rvalidate: {:<22} {:>9}/{:<9} {:6.1} s",
                            p.phase,
                            p.done,
                            p.total,
                            t0.elapsed().as_secs_f64()
                        );
                        let _ = std::io::stderr().flush();
                        last = now;
                        shown = true;
                    }
                } else if p.done == 0 || now.duration_since(last).as_secs() >= 5 {
                    eprintln!(
                        "validate: {} {}/{} ({:.1} s)",
                        p.phase,
                        p.done,
                        p.total,
                        t0.elapsed().as_secs_f64()
                    );
                    last = now;
                }
            };
            let report = validate_geojson_file(&path, &opts, &mut progress)
                .with_context(|| format!("reading {}", path.display()))?;
            println!("{report}");
            eprintln!("validated in {:.2} s", t0.elapsed().as_secs_f64());
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Stats { path, json } => {
            let d = load_geojson(&path)?;
            let s = stats(&d);
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{s}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
