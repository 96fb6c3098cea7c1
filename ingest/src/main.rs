use anyhow::Context;
use clap::{Parser, Subcommand};
use gridclue_core::category::Catalog;
use gridclue_core::codes::ActorScope;
use gridclue_core::tokens::TokenKind;
use gridclue_core::ReporterGroup;
use gridclue_ingest::admin::{AuditActor, Revoked, TokenAdmin};
use gridclue_ingest::IngestConfig;

#[derive(Parser)]
#[command(name = "gridclue-ingest", about = "gridclue's HTTP command gateway")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the API (the default).
    Run,
    /// Manage bearer tokens (stored only as hashes in GRIDCLUE_TOKENS_FILE).
    Tokens {
        #[command(subcommand)]
        action: TokenCmd,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Issue a token; prints only the token on stdout.
    Issue {
        /// reporter, street, department or district.
        #[arg(long, default_value = "reporter")]
        kind: TokenKind,
        /// Reporter group: courier, food_delivery, ride_hailing, truck, grid_member.
        #[arg(long)]
        group: Option<ReporterGroup>,
        /// Street code (9 digits) for street tokens; department code of the category table
        /// (data/categories.json) for department tokens.
        #[arg(long)]
        scope: Option<String>,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Revoke a token by its id.
    Revoke { id: String },
    /// List tokens (ids, kinds, groups; never secrets).
    List,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gridclue_core::stamp_build_commit!();
    let cli = Cli::parse();
    let config: IngestConfig = gridclue_core::config::load()?;
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Run => {
            gridclue_core::telemetry::init_tracing("ingest");
            tracing::info!(config = %gridclue_core::config::redacted(&config), "starting");
            let listener = tokio::net::TcpListener::bind(&config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            gridclue_ingest::run(listener, config, gridclue_core::service::shutdown_signal()).await
        }
        Cmd::Tokens { action } => tokens(&config, action),
    }
}

/// The CLI changes the token file through the same locked, audited path as the HTTP admin
/// routes (the audit names the operating-system user).
fn tokens(config: &IngestConfig, action: TokenCmd) -> anyhow::Result<()> {
    let admin = TokenAdmin::new(&config.tokens_file);
    let path = admin.tokens_path().to_owned();
    match action {
        TokenCmd::Issue {
            kind,
            group,
            scope,
            name,
        } => {
            let group = match (kind, group) {
                (TokenKind::Reporter, None) => Some(ReporterGroup::GridMember),
                (TokenKind::Reporter, g) => g,
                (_, Some(_)) => anyhow::bail!("--group applies to reporter tokens only"),
                (_, None) => None,
            };
            let catalog = if kind == TokenKind::Department {
                let path = std::path::Path::new(&config.data_dir).join("categories.json");
                Some(Catalog::load(&path)?)
            } else {
                None
            };
            let (token, record) = admin.issue(
                &AuditActor::cli(),
                kind,
                group,
                scope.as_deref(),
                &name,
                catalog.as_ref(),
            )?;
            eprintln!(
                "issued {} ({}) to {}",
                record.id,
                record.kind.as_str(),
                path.display()
            );
            println!("{token}");
        }
        TokenCmd::Revoke { id } => match admin.revoke(&AuditActor::cli(), &id)? {
            Revoked::Now(_) => eprintln!("revoked {id}"),
            Revoked::Already(_) => eprintln!("{id} was already revoked"),
        },
        TokenCmd::List => {
            println!(
                "{:<18} {:<10} {:<14} {:<24} {:<8} name",
                "id", "kind", "group", "scope", "revoked"
            );
            for t in admin.list()? {
                println!(
                    "{:<18} {:<10} {:<14} {:<24} {:<8} {}",
                    t.id,
                    t.kind.as_str(),
                    t.group.map(|g| g.as_str()).unwrap_or("-"),
                    t.scope.as_ref().map_or("-", ActorScope::as_str),
                    t.revoked,
                    t.name
                );
            }
        }
    }
    Ok(())
}
