//! [`MasterConfig`]: how a master runs, the `[master]` section of the
//! config file. Its `Default` is the only source of the defaults; serde
//! reads and writes it with `berth_core::settings`'s codecs (and the
//! address and store codecs here); [`MasterConfig::validate`] holds every
//! rule across keys. The CLI layers file, environment and flags onto it;
//! tests build it directly.

use berth_core::settings::{self, Value};
use berth_store::StoreConfig;
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MasterConfig {
    /// gRPC listen address (port 0 picks a free port).
    #[serde(with = "addr")]
    pub listen: SocketAddr,
    /// HTTP listen address for the JSON API, metrics and dashboard (and
    /// health); `None` = off.
    #[serde(with = "http")]
    pub http: Option<SocketAddr>,
    /// Holds `berth.db`, `token`, `master.addr`, `http.addr` and task logs.
    #[serde(with = "settings::path")]
    pub data_dir: PathBuf,
    /// Where the records live: the SQLite file `DATA_DIR/berth.db` (the
    /// default) or a PostgreSQL database. Shown without its password.
    #[serde(with = "store")]
    pub store: StoreConfig,
    #[serde(with = "settings::duration")]
    pub heartbeat_interval: Duration,
    #[serde(with = "settings::duration")]
    pub heartbeat_ttl: Duration,
    /// How often the reconciler audits allocations (it also runs at start
    /// and on demand).
    #[serde(with = "settings::duration")]
    pub reconcile_interval: Duration,
    /// Placement strategy for tasks that do not choose one.
    #[serde(with = "settings::strategy")]
    pub strategy: berth_core::Strategy,
    /// How long the oldest blocked task waits before capacity is reserved
    /// for it.
    #[serde(with = "settings::duration")]
    pub starvation_wait: Duration,
    /// Only worker names registered with `register` may join.
    #[serde(with = "settings::switch")]
    pub require_registration: bool,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 7701))),
            data_dir: PathBuf::from("./berth-data"),
            store: StoreConfig::Sqlite,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_ttl: Duration::from_secs(5),
            reconcile_interval: Duration::from_secs(60),
            strategy: berth_core::Strategy::Binpack,
            starvation_wait: Duration::from_secs(60),
            require_registration: false,
        }
    }
}

impl MasterConfig {
    /// Every rule across keys, checked before anything starts; the error
    /// names the key.
    pub fn validate(&self) -> Result<(), String> {
        let (i, t) = (self.heartbeat_interval, self.heartbeat_ttl);
        if i.is_zero() {
            return Err("heartbeat_interval: must be longer than 0".into());
        }
        if t <= i {
            return Err(format!(
                "heartbeat_ttl: must be longer than heartbeat_interval ({} ≤ {})",
                settings::format_duration(t),
                settings::format_duration(i)
            ));
        }
        Ok(())
    }
}

/// `HOST:PORT`; a host name is resolved (first address).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("'{s}' is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address"))
}

/// A listen address, `"HOST:PORT"`.
pub mod addr {
    use super::*;

    pub fn parse(v: &Value) -> Result<SocketAddr, String> {
        match v {
            Value::String(s) => parse_addr(s),
            other => Err(format!(
                "expected an address string like \"127.0.0.1:7700\", found {}",
                other.kind()
            )),
        }
    }

    pub fn serialize<S: serde::Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        parse(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The HTTP listen address, or `"off"` (also `false`).
pub mod http {
    use super::*;

    pub fn parse(v: &Value) -> Result<Option<SocketAddr>, String> {
        match v {
            Value::Boolean(false) => Ok(None),
            Value::String(s) if matches!(s.as_str(), "off" | "none" | "") => Ok(None),
            Value::String(s) => parse_addr(s).map(Some),
            other => Err(format!(
                "expected an address string like \"127.0.0.1:7701\" or \"off\", found {}",
                other.kind()
            )),
        }
    }

    pub fn serialize<S: serde::Serializer>(
        a: &Option<SocketAddr>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.map_or_else(|| "off".to_string(), |a| a.to_string()))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        parse(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `sqlite` or a PostgreSQL URL. Written without its password, so a
/// written config never holds it.
pub mod store {
    use super::*;

    pub fn serialize<S: serde::Serializer>(c: &StoreConfig, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&c.to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StoreConfig, D::Error> {
        Value::deserialize(d)?
            .string()
            .and_then(|s| s.parse())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_must_exceed_the_interval() {
        assert_eq!(MasterConfig::default().validate(), Ok(()));
        let c = MasterConfig {
            heartbeat_ttl: Duration::from_secs(1),
            ..MasterConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err(),
            "heartbeat_ttl: must be longer than heartbeat_interval (1s ≤ 1s)"
        );
    }
}
