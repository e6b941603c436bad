//! The hosts' ledger in a run: the embedded default (a redb file per host:
//! hosts of one group share nothing), or the shared PostgreSQL ledger
//! (`--ledger-url`), by default in a fresh database per run on that server,
//! dropped after the run unless the work dir is kept.

use anyhow::{bail, Context, Result};
use sqlx::Connection as _;
use tokio::runtime::Runtime;

/// Which ledger the hosts run with.
#[derive(Debug, Clone)]
pub enum LedgerChoice {
    Embedded,
    Postgres(PgLedger),
}

impl LedgerChoice {
    pub fn name(&self) -> &'static str {
        match self {
            LedgerChoice::Embedded => "embedded",
            LedgerChoice::Postgres(_) => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PgLedger {
    /// `--ledger-url`: a server and a database the bench may connect to;
    /// with `fresh`, a user that may create databases.
    pub url: url::Url,
    /// A database of its own for every run (`CREATE DATABASE`), so the runs
    /// of one invocation start alike; else the URL's database for all.
    pub fresh: bool,
    /// `ledger.pool_size`; None: the host's default.
    pub pool_size: Option<u64>,
}

impl PgLedger {
    pub fn parse(url: &str, fresh: bool, pool_size: Option<u64>) -> Result<PgLedger> {
        let url = url::Url::parse(url.trim()).context("--ledger-url is not a URL")?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            bail!(
                "--ledger-url has the scheme {}; expected postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                url.scheme()
            );
        }
        Ok(PgLedger {
            url,
            fresh,
            pool_size,
        })
    }

    /// The URL without its password, for the report and the logs.
    pub fn shown(&self) -> String {
        without_password(&self.url)
    }

    /// The database of run `tag`: created when fresh.
    pub fn database(&self, rt: &Runtime, tag: &str) -> Result<RunDatabase> {
        if !self.fresh {
            return Ok(RunDatabase {
                url: self.url.to_string(),
                created: None,
            });
        }
        let name: String = format!("notify_bench_{tag}")
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '_') => c,
                _ => '_',
            })
            .take(63)
            .collect();
        rt.block_on(self.execute(&format!("CREATE DATABASE \"{name}\"")))
            .with_context(|| format!("CREATE DATABASE {name} on {}", self.shown()))?;
        let mut url = self.url.clone();
        url.set_path(&format!("/{name}"));
        Ok(RunDatabase {
            url: url.to_string(),
            created: Some(name),
        })
    }

    /// Drops a run's database, if it made one; its hosts are gone, and FORCE
    /// ends any connection left.
    pub fn drop_database(&self, rt: &Runtime, db: &RunDatabase) {
        if let Some(name) = &db.created {
            if let Err(e) = rt
                .block_on(self.execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
            {
                eprintln!("notify-bench: cannot drop the run's database {name}: {e:#}");
            }
        }
    }

    async fn execute(&self, statement: &str) -> Result<()> {
        let mut conn = sqlx::PgConnection::connect(self.url.as_str())
            .await
            .with_context(|| format!("connect to {}", self.shown()))?;
        sqlx::query(statement).execute(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }
}

/// The database one run's hosts share.
pub struct RunDatabase {
    /// With its password: given to the hosts in their environment only.
    pub url: String,
    /// The name of a database made for this run.
    pub created: Option<String>,
}

fn without_password(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        let pg = PgLedger::parse(
            "postgres://notify:s3cret@127.0.0.1:5432/postgres",
            true,
            None,
        )
        .expect("parse");
        assert_eq!(pg.shown(), "postgres://notify@127.0.0.1:5432/postgres");
        assert!(PgLedger::parse("http://x/y", true, None).is_err());
    }
}
