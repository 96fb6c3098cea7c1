//! `gridclue-enrich`: run the processor and its dedupe stage (no arguments), or `rebase`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gridclue_core::stamp_build_commit!();
    gridclue_enrich::binary::start::<gridclue_enrich::EnrichConfig>().await
}
