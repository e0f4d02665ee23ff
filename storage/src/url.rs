//! Store URLs: which backend a node runs on, in one string — `fjall:PATH` (the embedded store,
//! the default), `postgres://…` (a PostgreSQL-wire database, feature `postgres`) or
//! `fdb:CLUSTER_FILE` (FoundationDB, feature `fdb`; `fdb:` alone for the default cluster file).

use crate::{AnyStore, FjallStore, error::StoreError};
use std::{fmt, path::PathBuf, str::FromStr};

/// Where a deployment's data lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded store in this directory.
    Fjall(PathBuf),
    /// A PostgreSQL-wire database (the whole URL, options included).
    Postgres(String),
    /// A FoundationDB cluster (its cluster file, or the default one).
    Fdb(Option<PathBuf>),
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = url.strip_prefix("fjall:") {
            if path.is_empty() {
                return Err(StoreError::Config(
                    "fjall: needs a directory (fjall:PATH)".into(),
                ));
            }
            Ok(StoreUrl::Fjall(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(StoreUrl::Postgres(url.to_string()))
        } else if let Some(file) = url.strip_prefix("fdb:") {
            Ok(StoreUrl::Fdb(
                (!file.is_empty()).then(|| PathBuf::from(file)),
            ))
        } else {
            Err(StoreError::Config(format!(
                "store {:?}: use fjall:PATH, postgres://user@host:port/db or fdb:CLUSTER_FILE",
                redact(url)
            )))
        }
    }
}

impl fmt::Display for StoreUrl {
    /// The URL with any password left out, fit for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Fjall(path) => write!(f, "fjall:{}", path.display()),
            StoreUrl::Postgres(url) => f.write_str(&redact(url)),
            StoreUrl::Fdb(Some(file)) => write!(f, "fdb:{}", file.display()),
            StoreUrl::Fdb(None) => f.write_str("fdb:"),
        }
    }
}

/// `scheme://user:password@host…` without the password.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:…@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl StoreUrl {
    /// Opens the store (creating an embedded store's directory, a database's table).
    pub fn open(&self) -> Result<AnyStore, StoreError> {
        match self {
            StoreUrl::Fjall(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Config(format!("creating {}: {e}", dir.display())))?;
                Ok(AnyStore::from(FjallStore::open(dir)?))
            }
            #[cfg(feature = "postgres")]
            StoreUrl::Postgres(url) => Ok(AnyStore::from(crate::PgStore::open(url)?)),
            #[cfg(not(feature = "postgres"))]
            StoreUrl::Postgres(_) => Err(StoreError::Config(
                "this build has no PostgreSQL backend (cargo feature `postgres`)".into(),
            )),
            #[cfg(feature = "fdb")]
            StoreUrl::Fdb(file) => {
                let network = fdb_network()?;
                let file = file.as_ref().map(|f| f.display().to_string());
                Ok(AnyStore::from(crate::fdb::FdbStore::open(
                    network,
                    file.as_deref(),
                )?))
            }
            #[cfg(not(feature = "fdb"))]
            StoreUrl::Fdb(_) => Err(StoreError::Config(
                "this build has no FoundationDB backend: build with `--features fdb`".into(),
            )),
        }
    }
}

/// FoundationDB's network, booted once for the process and kept for its lifetime.
#[cfg(feature = "fdb")]
fn fdb_network() -> Result<&'static crate::fdb::FdbNetwork, StoreError> {
    use std::sync::OnceLock;
    static NETWORK: OnceLock<crate::fdb::FdbNetwork> = OnceLock::new();
    if let Some(network) = NETWORK.get() {
        return Ok(network);
    }
    let network = crate::fdb::FdbNetwork::boot()?;
    Ok(NETWORK.get_or_init(|| network))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            "fjall:/var/lib/doppel".parse::<StoreUrl>().unwrap(),
            StoreUrl::Fjall("/var/lib/doppel".into())
        );
        assert_eq!(
            "postgres://u@h:5432/db?schema=s"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Postgres("postgres://u@h:5432/db?schema=s".into())
        );
        assert_eq!(
            "fdb:/etc/foundationdb/fdb.cluster"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Fdb(Some("/etc/foundationdb/fdb.cluster".into()))
        );
        assert_eq!("fdb:".parse::<StoreUrl>().unwrap(), StoreUrl::Fdb(None));
        for bad in ["fjall:", "mysql://h/db", "/var/lib/doppel"] {
            let error = bad.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(error.contains("fjall:"), "{bad}: {error}");
        }
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        let url: StoreUrl = "postgres://doppel:s3cret@db:5432/twins?schema=a"
            .parse()
            .unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://doppel:…@db:5432/twins?schema=a"
        );
        let refused = "mysql://root:s3cret@db/x".parse::<StoreUrl>().unwrap_err();
        assert!(!refused.to_string().contains("s3cret"));
    }
}
