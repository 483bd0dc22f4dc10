//! Logs and trace export, set up once per process: `tracing` events to
//! stderr (text or JSON lines), and OpenTelemetry spans to an OTLP/HTTP
//! collector when one is configured.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use std::sync::Arc;

use fabric_host::otlp::{OtlpConfig, OtlpExporter};
use fabric_host::spans::{BatchConfig, SpanQueue};
use fabric_host::telemetry::Sampler;
use fabric_host::Telemetry;
use opentelemetry_sdk::Resource;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (coloured on a terminal).
    Text,
    /// One JSON object per line, with the call's span fields (tool,
    /// invocation_id, trace_id).
    Json,
}

/// Starts logging to stderr. The filter is `FABRIC_LOG`, else `RUST_LOG`
/// (`tracing` directives such as `info,fabric_host=debug`), else `warn`.
pub fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FABRIC_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// The OTLP exporter, when `--otlp URL` or the standard variables ask for
/// one; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
/// Shut the queue down at exit: that sends the spans still queued.
pub fn exporter(otlp: Option<&str>) -> Result<Option<(Arc<SpanQueue>, Telemetry)>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    let configured = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_some();
    if otlp.is_none() && !configured {
        return Ok(None);
    }
    if let Some(protocol) = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .filter(|p| p != "http/protobuf")
    {
        bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: Fabric exports OTLP over \
             HTTP/protobuf; unset it, or set it to http/protobuf (collectors listen on port 4318 for it)"
        );
    }
    let endpoint = match otlp {
        Some(url) => traces_url(url)?,
        None => match env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(url) => {
                check_scheme(&url).context("in OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")?;
                url
            }
            None => {
                let base = env("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default();
                check_scheme(&base).context("in OTEL_EXPORTER_OTLP_ENDPOINT")?;
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
        },
    };
    let signal = |k: &str| {
        env(&format!("OTEL_EXPORTER_OTLP_TRACES_{k}"))
            .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{k}")))
    };
    if let Some(c) = signal("COMPRESSION").filter(|c| c != "none") {
        bail!(
            "OTEL_EXPORTER_OTLP_COMPRESSION={c} is not supported: Fabric sends spans uncompressed; \
             unset it (a collector beside Fabric can compress what it forwards)"
        );
    }
    let headers = match signal("HEADERS") {
        Some(h) => parse_headers(&h).context("in OTEL_EXPORTER_OTLP_HEADERS")?,
        None => Vec::new(),
    };
    let timeout = match signal("TIMEOUT") {
        Some(ms) => Duration::from_millis(ms.trim().parse().with_context(|| {
            format!("OTEL_EXPORTER_OTLP_TIMEOUT={ms} is not a number of milliseconds")
        })?),
        None => Duration::from_secs(10),
    };
    let mut exporter = OtlpExporter::new(&OtlpConfig {
        endpoint,
        headers,
        timeout,
    })
    .context("cannot set up the OTLP trace exporter")?;
    let mut resource = Resource::builder();
    let named_by_env = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if !named_by_env {
        resource = resource.with_service_name("fabric");
    }
    resource = resource.with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    exporter.set_resource(&resource.build());
    // A setting that cannot be honoured is warned about and ignored, as the
    // OpenTelemetry specification asks of its variables.
    let (sampler, warning) = Sampler::from_env(
        env("OTEL_TRACES_SAMPLER").as_deref(),
        env("OTEL_TRACES_SAMPLER_ARG").as_deref(),
    );
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    let (batching, warnings) = batch_config(env);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let queue = SpanQueue::start(Some(exporter), batching)
        .context("cannot start the span exporter's thread")?;
    let queue = Arc::new(queue);
    Ok(Some((queue.clone(), Telemetry::exporting(queue, sampler))))
}

/// The batch settings, from `OTEL_BSP_MAX_QUEUE_SIZE`,
/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` and `OTEL_BSP_SCHEDULE_DELAY` (ms) where
/// they are set, and a warning for each value that is no whole number (it is
/// ignored, as the OpenTelemetry specification asks).
fn batch_config(env: impl Fn(&str) -> Option<String>) -> (BatchConfig, Vec<String>) {
    let mut warnings = Vec::new();
    let mut number = |k: &str, least: u64| -> Option<u64> {
        let v = env(k)?;
        match v.trim().parse::<u64>() {
            Ok(n) if n >= least => Some(n),
            _ => {
                warnings.push(format!(
                    "{k}={v} is not a whole number of at least {least}: ignored"
                ));
                None
            }
        }
    };
    let mut config = BatchConfig::default();
    if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE", 1) {
        config.max_queue = n as usize;
    }
    if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1) {
        config.max_batch = n as usize;
    }
    if let Some(ms) = number("OTEL_BSP_SCHEDULE_DELAY", 0) {
        config.delay = Duration::from_millis(ms);
    }
    config.max_batch = config.max_batch.min(config.max_queue);
    (config, warnings)
}

/// `--otlp URL`: a collector's base URL (`http://localhost:4318`), or its
/// traces URL (`…/v1/traces`) as given.
fn traces_url(url: &str) -> Result<String> {
    check_scheme(url).context("in --otlp")?;
    let url = url.trim_end_matches('/');
    Ok(if url.ends_with("/v1/traces") {
        url.to_string()
    } else {
        format!("{url}/v1/traces")
    })
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs separated by commas,
/// values percent-encoded (the OpenTelemetry specification's format).
fn parse_headers(text: &str) -> Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("{pair:?} is not key=value");
        };
        headers.push((key.trim().to_string(), percent_decode(value.trim())?));
    }
    Ok(headers)
}

fn percent_decode(text: &str) -> Result<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next(), bytes.next()];
            let [Some(h), Some(l)] = hex else {
                bail!("{text:?}: a % must be followed by two hex digits");
            };
            let digit = |c: u8| (c as char).to_digit(16);
            let (Some(h), Some(l)) = (digit(h), digit(l)) else {
                bail!("{text:?}: a % must be followed by two hex digits");
            };
            out.push((h * 16 + l) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).with_context(|| format!("{text:?} does not decode to UTF-8"))
}

/// Only plain HTTP: this build has no TLS client for the exporter.
fn check_scheme(url: &str) -> Result<()> {
    if url.starts_with("http://") {
        return Ok(());
    }
    if url.starts_with("https://") {
        bail!(
            "{url}: this build exports over plain HTTP only; run a collector beside Fabric \
             (http://localhost:4318) and let it forward over TLS"
        );
    }
    bail!("{url} is not an http:// URL of an OTLP collector (such as http://localhost:4318)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_urls_get_the_traces_path_once() {
        assert_eq!(
            traces_url("http://localhost:4318").unwrap(),
            "http://localhost:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces/").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert!(traces_url("https://c:4318").is_err());
        assert!(traces_url("c:4318").is_err());
    }

    #[test]
    fn batch_settings_come_from_the_bsp_variables() {
        let none = |_: &str| None;
        assert_eq!(batch_config(none), (BatchConfig::default(), vec![]));
        let set = |k: &str| match k {
            "OTEL_BSP_MAX_QUEUE_SIZE" => Some("100".to_string()),
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" => Some("512".to_string()),
            "OTEL_BSP_SCHEDULE_DELAY" => Some("250".to_string()),
            _ => None,
        };
        let (config, warnings) = batch_config(set);
        assert_eq!(
            (config.max_queue, config.max_batch, config.delay),
            (100, 100, Duration::from_millis(250))
        );
        assert!(warnings.is_empty());
        // A value that is no number is ignored, with a warning.
        let bad = |k: &str| match k {
            "OTEL_BSP_SCHEDULE_DELAY" => Some("soon".to_string()),
            "OTEL_BSP_MAX_QUEUE_SIZE" => Some("0".to_string()),
            _ => None,
        };
        let (config, warnings) = batch_config(bad);
        assert_eq!(config, BatchConfig::default());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn otlp_headers_are_pairs_with_percent_encoded_values() {
        assert_eq!(
            parse_headers("api-key=a%20b%2Cc, x-tenant = t1 ,").unwrap(),
            vec![
                ("api-key".to_string(), "a b,c".to_string()),
                ("x-tenant".to_string(), "t1".to_string())
            ]
        );
        assert!(parse_headers("novalue").is_err());
        assert!(parse_headers("k=%zz").is_err());
        assert!(parse_headers("k=%4").is_err());
    }
}
