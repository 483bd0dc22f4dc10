//! Logs and trace export, set up once per process: `tracing` events to
//! stderr (text or JSON lines), and OpenTelemetry spans to an OTLP/HTTP
//! collector when one is configured.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use fabric_host::Telemetry;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
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

/// Spans queued for export at most: a busy server makes about ten spans a
/// call, so the SDK's default of 2,048 would drop spans within a second of
/// load. `OTEL_BSP_MAX_QUEUE_SIZE` overrides it.
const QUEUE: usize = 65_536;

/// The OTLP exporter, when `--otlp URL` or the standard variables ask for
/// one; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
/// Shut the provider down at exit: that flushes the spans still queued.
pub fn exporter(otlp: Option<&str>) -> Result<Option<(SdkTracerProvider, Telemetry)>> {
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
    let mut builder = SpanExporter::builder().with_http();
    if let Some(url) = otlp {
        builder = builder.with_endpoint(traces_url(url)?);
    } else {
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            if let Some(url) = env(var) {
                check_scheme(&url).with_context(|| format!("in {var}"))?;
            }
        }
    }
    let exporter = builder
        .build()
        .context("cannot set up the OTLP trace exporter")?;
    let mut batch = BatchConfigBuilder::default();
    if env("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        batch = batch.with_max_queue_size(QUEUE);
    }
    if env("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        batch = batch.with_scheduled_delay(Duration::from_secs(1));
    }
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
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
    // The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
    // (default parentbased_always_on), read by the SDK.
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build();
    use opentelemetry::trace::TracerProvider as _;
    let tracer = provider.tracer("fabric");
    Ok(Some((provider, Telemetry::new(tracer))))
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
}
