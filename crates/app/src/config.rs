//! Configuration read from the environment (Cloud Run conventions).

use std::net::{Ipv4Addr, SocketAddr};
use std::num::ParseIntError;
use std::path::PathBuf;

/// Port used when `PORT` is unset or empty.
pub const DEFAULT_PORT: u16 = 8080;

/// Folder used when neither `FOLDER` nor `MNT_DIR` is set (or both are empty).
pub const DEFAULT_FOLDER: &str = "/app";

/// The whole configuration of the service.
///
/// Every field is read from one environment variable; an empty variable counts as unset, so a
/// Dockerfile's `ENV FOLDER=` does not turn into "the current directory".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// TCP port to listen on, on all interfaces (`0.0.0.0`). From `PORT`; default [`DEFAULT_PORT`] (8080).
    pub port: u16,
    /// Folder where `/create` writes its files. From `FOLDER`, else `MNT_DIR` (the gcsfs mount point),
    /// else [`DEFAULT_FOLDER`] (`/app`). A trailing slash or none: both work.
    pub folder: PathBuf,
}

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `PORT` is not a number between 0 and 65535.
    #[error("PORT must be a TCP port number (0-65535), got {value:?}")]
    Port {
        /// The value found in the environment.
        value: String,
        /// Why it did not parse.
        #[source]
        source: ParseIntError,
    },
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (a stand-in for the environment, used by tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let port = match get("PORT") {
            None => DEFAULT_PORT,
            Some(value) => value
                .trim()
                .parse()
                .map_err(|source| ConfigError::Port { value, source })?,
        };
        let folder = get("FOLDER")
            .or_else(|| get("MNT_DIR"))
            .map_or_else(|| PathBuf::from(DEFAULT_FOLDER), PathBuf::from);
        Ok(Self { port, folder })
    }

    /// The address to listen on: `0.0.0.0:port`.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let c = config(&[]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.folder, PathBuf::from("/app"));
        assert_eq!(c.listen_addr().to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn folder_wins_over_mnt_dir_and_empty_counts_as_unset() {
        let c = config(&[("FOLDER", "/data/"), ("MNT_DIR", "/mnt/gcs")]).unwrap();
        assert_eq!(c.folder, PathBuf::from("/data/"));
        let c = config(&[("FOLDER", ""), ("MNT_DIR", "/mnt/gcs")]).unwrap();
        assert_eq!(c.folder, PathBuf::from("/mnt/gcs"));
        let c = config(&[("FOLDER", ""), ("MNT_DIR", ""), ("PORT", "")]).unwrap();
        assert_eq!(c, config(&[]).unwrap());
    }

    #[test]
    fn port_is_parsed_and_bad_port_is_an_error() {
        assert_eq!(config(&[("PORT", "9000")]).unwrap().port, 9000);
        let err = config(&[("PORT", "80a")]).unwrap_err();
        assert!(matches!(err, ConfigError::Port { ref value, .. } if value == "80a"));
        assert!(std::error::Error::source(&err).is_some());
        assert!(config(&[("PORT", "70000")]).is_err());
    }
}
