//! `gridclue-hotspots`: the emerging-hotspot detector (sequencer + detector loops), or `rebase`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gridclue_core::stamp_build_commit!();
    gridclue_enrich::binary::start::<gridclue_enrich::hotspots::HotspotConfig>().await
}
