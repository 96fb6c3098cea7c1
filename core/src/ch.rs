//! ClickHouse client builder that adapts to the server: Debian's 18.16 cannot serve the
//! `RowBinaryWithNamesAndTypes` format the crate's validation uses, so validation is switched off
//! there and kept on for current servers.

use clickhouse::Client;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChSettings {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: crate::config::Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum ChError {
    #[error("ClickHouse at {url} is unreachable or failed: {source}")]
    Unavailable {
        url: String,
        source: clickhouse::error::Error,
    },
    #[error("invalid database name {0:?}")]
    DatabaseName(String),
}

impl ChError {
    /// Connection problems are worth retrying.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ChError::Unavailable { .. })
    }
}

/// The server's major version, e.g. 18 or 24.
pub async fn server_major_version(client: &Client) -> Result<u32, clickhouse::error::Error> {
    let v: String = client.query("SELECT version()").fetch_one().await?;
    Ok(v.split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0))
}

fn base_client(s: &ChSettings) -> Client {
    let mut c = Client::default().with_url(&s.url).with_user(&s.user);
    if !s.password.is_empty() {
        c = c.with_password(s.password.expose());
    }
    c
}

/// Database names go into DDL unquoted, so only plain identifiers are accepted.
pub fn validate_database_name(name: &str) -> Result<(), ChError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(ChError::DatabaseName(name.to_owned()))
    }
}

/// Connects as a user that may only read (no `CREATE DATABASE`): the database must exist.
pub async fn connect_reader(s: &ChSettings) -> Result<Client, ChError> {
    validate_database_name(&s.database)?;
    let probe = base_client(s).with_validation(false);
    let major = server_major_version(&probe)
        .await
        .map_err(|source| ChError::Unavailable {
            url: s.url.clone(),
            source,
        })?;
    Ok(base_client(s)
        .with_database(&s.database)
        .with_validation(major >= 24))
}

/// Connects, creates the database if needed and returns a client bound to it.
pub async fn connect(s: &ChSettings) -> Result<Client, ChError> {
    validate_database_name(&s.database)?;
    let unavailable = |source| ChError::Unavailable {
        url: s.url.clone(),
        source,
    };
    let probe = base_client(s).with_validation(false);
    let major = server_major_version(&probe).await.map_err(unavailable)?;
    probe
        .query(&format!("CREATE DATABASE IF NOT EXISTS {}", s.database))
        .execute()
        .await
        .map_err(unavailable)?;
    Ok(base_client(s)
        .with_database(&s.database)
        .with_validation(major >= 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_identifiers() {
        assert!(validate_database_name("gridclue_test_1").is_ok());
        assert!(validate_database_name("1abc").is_err());
        assert!(validate_database_name("a;drop").is_err());
        assert!(validate_database_name("").is_err());
    }
}
