//! The host configuration: what one Fabric process admits and reserves,
//! independent of any tool. Loadable from a TOML file; every key optional.
//!
//! ```toml
//! instances = 128          # instance slots in the pool (address space, not memory)
//! max_in_flight = 64       # calls in flight at once (default: 32 per core, at most instances)
//! queue = 64               # calls waiting for a slot; one more is `overloaded` (default: max_in_flight)
//! max_component_size = "256 MiB"   # largest NAME.wasm read from the tools directory
//!
//! [anomaly]                # a caller's minute over `multiple` x its average is logged and counted
//! multiple = 10.0
//! min_calls = 600          # floors: below them nothing is an anomaly
//! min_fuel = 100_000_000_000
//! history = 15             # minutes the average is taken over
//!
//! [maxima]                 # the most any policy may grant
//! fuel = 100_000_000_000
//! memory = "1 GiB"
//! timeout = "300s"
//! output = "64 MiB"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::budget::AnomalyRule;
use crate::policy::{parse_duration, parse_size, show_size, Maxima, Size};

/// Instance slots of the default pool. Each reserves address space (not
/// memory) for the largest memory a policy may grant.
pub const DEFAULT_INSTANCES: u32 = 128;

/// The largest component read from the tools directory by default: the
/// biggest real tools (Python and JS interpreters) are about 20 MiB.
pub const DEFAULT_MAX_COMPONENT_SIZE: u64 = 256 << 20;

/// Calls in flight per core by default. A call holds its slot until its
/// audit record is durable, and most of a short call's time is that wait
/// (records are flushed in groups, one group per fsync): enough slots per
/// core to fill a group, few enough that CPU-bound guests do not all share
/// the cores at once.
pub const IN_FLIGHT_PER_CORE: u32 = 32;

/// Places in the queue per call in flight, by default: a burst as large as
/// the calls in flight waits (about one call time) instead of being
/// refused; beyond it, waiting would only stretch every admitted call.
pub const QUEUE_PER_SLOT: u32 = 1;

/// The default bound on calls in flight: [`IN_FLIGHT_PER_CORE`] per core,
/// at most `instances`.
fn default_in_flight(instances: u32) -> u32 {
    // Read once per process: on Linux each read parses the cgroup files.
    static CORES: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let cores =
        *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    (cores * IN_FLIGHT_PER_CORE).clamp(1, instances)
}

/// How one Fabric process is shaped.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HostConfig {
    /// Instance slots in the pooling allocator.
    pub instances: u32,
    /// Calls running at once (the admit stage's bound); at most `instances`.
    pub max_in_flight: u32,
    /// Calls waiting for a slot beyond those; more are `overloaded`.
    pub queue: u32,
    /// When a caller's use is an anomaly worth a warning.
    pub anomaly: AnomalyRule,
    /// Largest component file the registry reads.
    pub max_component_size: u64,
    /// The most any policy may grant.
    pub maxima: Maxima,
}

impl Default for HostConfig {
    fn default() -> HostConfig {
        let max_in_flight = default_in_flight(DEFAULT_INSTANCES);
        HostConfig {
            instances: DEFAULT_INSTANCES,
            max_in_flight,
            queue: max_in_flight * QUEUE_PER_SLOT,
            anomaly: AnomalyRule::default(),
            max_component_size: DEFAULT_MAX_COMPONENT_SIZE,
            maxima: Maxima::default(),
        }
    }
}

/// A host configuration that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{}{key}: {message}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
pub struct ConfigError {
    /// The file, when it came from one.
    pub file: Option<PathBuf>,
    /// The key to blame (`(file)` for the whole file).
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    instances: Option<u32>,
    max_in_flight: Option<u32>,
    queue: Option<u32>,
    max_component_size: Option<Size>,
    #[serde(default)]
    maxima: FileMaxima,
    #[serde(default)]
    anomaly: FileAnomaly,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileAnomaly {
    multiple: Option<f64>,
    min_calls: Option<u64>,
    min_fuel: Option<u64>,
    history: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileMaxima {
    fuel: Option<u64>,
    memory: Option<Size>,
    timeout: Option<String>,
    output: Option<Size>,
}

/// Hard ceilings on the configuration itself: the pool reserves address
/// space for up to four memories per instance slot, which must stay well
/// inside 47 bits of user address space.
const CEILING_INSTANCES: u32 = 1_000;
const CEILING_MEMORY: u64 = 4 << 30;
/// Longest `maxima.timeout`: a day (a deadline far beyond it would overflow
/// the clock's arithmetic, and no call is meant to run longer).
const CEILING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl HostConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.into()),
            key: "(file)".into(),
            message: format!("cannot read it: {e}"),
        })?;
        HostConfig::parse(&text).map_err(|e| ConfigError {
            file: Some(path.into()),
            ..e
        })
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> Result<HostConfig, ConfigError> {
        HostConfig::parse_keys(text).map_err(|(key, message)| ConfigError {
            file: None,
            key,
            message,
        })
    }

    fn parse_keys(text: &str) -> Result<HostConfig, (String, String)> {
        let file: File = toml::from_str(text).map_err(|e| {
            ("(file)".to_string(), format!("{} (allowed keys: instances, max_in_flight, queue, max_component_size, [maxima] fuel/memory/timeout/output, [anomaly] multiple/min_calls/min_fuel/history)", e.message()))
        })?;
        let mut config = HostConfig::default();
        let range = |key: &str, what: String| (key.to_string(), what);
        if let Some(n) = file.instances {
            if n == 0 || n > CEILING_INSTANCES {
                return Err(range(
                    "instances",
                    format!("{n} is out of range: 1 to {CEILING_INSTANCES}"),
                ));
            }
            config.instances = n;
            config.max_in_flight = default_in_flight(n);
        }
        if let Some(n) = file.max_in_flight {
            if n == 0 || n > config.instances {
                return Err(range(
                    "max_in_flight",
                    format!("{n} is out of range: 1 to instances ({})", config.instances),
                ));
            }
            config.max_in_flight = n;
        }
        config.queue = match file.queue {
            Some(n) if n > 100_000 => {
                return Err(range("queue", format!("{n} is out of range: 0 to 100000")))
            }
            Some(n) => n,
            None => config.max_in_flight * QUEUE_PER_SLOT,
        };
        let a = &file.anomaly;
        if let Some(m) = a.multiple {
            if !(m.is_finite() && m >= 1.0) {
                return Err(range(
                    "anomaly.multiple",
                    format!("{m} must be at least 1.0"),
                ));
            }
            config.anomaly.multiple = m;
        }
        if let Some(n) = a.min_calls {
            config.anomaly.min_calls = n;
        }
        if let Some(n) = a.min_fuel {
            config.anomaly.min_fuel = n;
        }
        if let Some(n) = a.history {
            if n == 0 || n > 1440 {
                return Err(range(
                    "anomaly.history",
                    format!("{n} is out of range: 1 to 1440 minutes"),
                ));
            }
            config.anomaly.history = n as usize;
        }
        if let Some(size) = &file.max_component_size {
            config.max_component_size = parse_size("max_component_size", size)?;
        }
        let m = &file.maxima;
        if let Some(fuel) = m.fuel {
            if fuel == 0 {
                return Err(range("maxima.fuel", "must be greater than 0".into()));
            }
            config.maxima.fuel = fuel;
        }
        if let Some(size) = &m.memory {
            let bytes = parse_size("maxima.memory", size)?;
            if bytes == 0 || bytes > CEILING_MEMORY {
                return Err(range(
                    "maxima.memory",
                    format!(
                        "{} is out of range: more than 0, at most {}",
                        show_size(bytes),
                        show_size(CEILING_MEMORY)
                    ),
                ));
            }
            config.maxima.memory = bytes;
        }
        if let Some(text) = &m.timeout {
            config.maxima.timeout = parse_duration(text)
                .filter(|d| *d >= crate::engine::EPOCH_TICK && *d <= CEILING_TIMEOUT)
                .ok_or_else(|| {
                    range(
                        "maxima.timeout",
                        format!(
                            "{text:?} is not a duration from {:?} (the clock's tick) to {CEILING_TIMEOUT:?}: write e.g. \"300s\"",
                            crate::engine::EPOCH_TICK
                        ),
                    )
                })?;
        }
        if let Some(size) = &m.output {
            let bytes = parse_size("maxima.output", size)?;
            if bytes == 0 {
                return Err(range("maxima.output", "must be greater than 0".into()));
            }
            config.maxima.output = bytes;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_and_checks() {
        assert_eq!(HostConfig::parse("").unwrap(), HostConfig::default());
        let c = HostConfig::parse(
            "instances = 16\nmax_in_flight = 8\nmax_component_size = \"32 MiB\"\n[maxima]\nmemory = \"256 MiB\"\ntimeout = \"10s\"\n",
        )
        .unwrap();
        assert_eq!((c.instances, c.max_in_flight), (16, 8));
        assert_eq!(c.max_component_size, 32 << 20);
        assert_eq!(c.maxima.memory, 256 << 20);
        assert_eq!(c.maxima.timeout, Duration::from_secs(10));
        let bad = |text: &str, key: &str| {
            let e = HostConfig::parse(text).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        };
        bad("instances = 0", "instances");
        bad("instances = 4\nmax_in_flight = 5", "max_in_flight");
        bad("[maxima]\nmemory = \"8 GiB\"", "maxima.memory");
        bad("[maxima]\ntimeout = \"soon\"", "maxima.timeout");
        bad(
            "[maxima]\ntimeout = \"10000000000000000000s\"",
            "maxima.timeout",
        );
        bad("[maxima]\ntimeout = \"1ms\"", "maxima.timeout");
        bad("pool = 3", "(file)");
        bad("[maxima]\nfuel = 0", "maxima.fuel");
        bad("[anomaly]\nmultiple = 0.5", "anomaly.multiple");
        bad("[anomaly]\nhistory = 0", "anomaly.history");
        let q =
            HostConfig::parse("max_in_flight = 2\nqueue = 0\n[anomaly]\nmin_calls = 5").unwrap();
        assert_eq!((q.max_in_flight, q.queue, q.anomaly.min_calls), (2, 0, 5));
    }
}
