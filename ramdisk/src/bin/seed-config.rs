//! `seed-config`: the node configuration agent.
//!
//! `seed-config apply` has os-apply-config's command line (templates, metadata, output root,
//! `--key` look-ups with the same exit codes); `seed-config refresh` runs os-refresh-config's
//! phases with apply between pre-configure and configure, and takes its options
//! (`--lockfile`, `--timeout`, `--log-level`, `--print-base`, `--print-phases`); `seed-config collect` fetches the
//! node's metadata from the seed (long-poll, cached on the state partition), refreshes when it
//! changed and signals each deployment; `seed-config signal` sends one signal by hand. Logs go
//! to stderr and never carry the metadata or the credential.
//!
//! Deliberate difference: `seed-config apply --key ''` is refused. os-apply-config treats an
//! empty key as no key (`if opts.key:` is false) and goes on to render the whole template
//! tree into `/`, so a script whose variable came out empty would rewrite the node's
//! configuration where it meant to read one value.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use ramdisk::config::{apply, collect, error_chain, metadata, refresh, value_types};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Node configuration agent: render templates from metadata, run configuration phases.
#[derive(Parser)]
#[command(name = "seed-config", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render the template tree into files (os-apply-config).
    Apply(ApplyArgs),
    /// Run pre-configure.d, apply, configure.d, post-configure.d, migration.d
    /// (os-refresh-config).
    Refresh(RefreshArgs),
    /// Fetch this node's metadata from the seed, refresh when it changed, signal deployments
    /// (os-collect-config). Runs until stopped unless --once.
    Collect(CollectArgs),
    /// Tell the seed how a deployment ended.
    Signal(SignalArgs),
    /// Tell the seed this node booted its image (`POST /v1/node/booted` with the identity's
    /// credential; over HTTPS pinned to the identity's `seed_ca` when the seed URL is https).
    Booted(BootedArgs),
}

#[derive(Args)]
struct BootedArgs {
    /// The identity the deploy wrote (node, seed URL, credential).
    #[arg(long, default_value_os_t = collect::default_identity())]
    identity: PathBuf,
    /// The image's name (as the image says it).
    #[arg(long, default_value = "")]
    image: String,
    /// The image's version.
    #[arg(long, default_value = "")]
    version: String,
    /// Retries of a failed report (1 s, then doubling up to 30 s).
    #[arg(long, default_value_t = 4)]
    retries: u32,
}

#[derive(Args)]
struct CollectArgs {
    /// The identity the deploy wrote (node, seed URL, credential).
    #[arg(long, default_value_os_t = collect::default_identity())]
    identity: PathBuf,
    /// The metadata cache (on the state partition, so it outlives the seed).
    #[arg(long, default_value_os_t = collect::default_cache())]
    cache: PathBuf,
    /// One pass (fetch without waiting, refresh if changed, signal), then exit.
    #[arg(long)]
    once: bool,
    /// Seconds each long-poll may wait for a change (the seed caps it at 60).
    #[arg(long, default_value_t = 60)]
    wait: u64,
    /// Retries of a failed fetch or signal before falling back to the cache.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Refresh on the first pass even if the cached counter was applied already.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    refresh: RefreshArgs,
}

#[derive(Args)]
struct SignalArgs {
    /// The identity the deploy wrote (node, seed URL, credential).
    #[arg(long, default_value_os_t = collect::default_identity())]
    identity: PathBuf,
    /// The deployment (or wait condition) this signal is for.
    #[arg(long)]
    deployment: String,
    #[arg(long, value_parser = signal_status())]
    status: collect::SignalStatus,
    /// Why it failed.
    #[arg(long)]
    reason: Option<String>,
    /// An output, KEY=VALUE (VALUE is read as JSON if it is a number or boolean, else a
    /// string); repeatable.
    #[arg(long = "output", value_name = "KEY=VALUE", value_parser = parse_output)]
    outputs: Vec<(String, serde_json::Value)>,
    /// The metadata counter this outcome is for [default: the cache's last applied].
    #[arg(long)]
    counter: Option<u64>,
    /// The metadata cache (for the default counter).
    #[arg(long, default_value_os_t = collect::default_cache())]
    cache: PathBuf,
}

fn parse_output(s: &str) -> Result<(String, serde_json::Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let value = match serde_json::from_str::<serde_json::Value>(v) {
        Ok(j @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => j,
        _ => serde_json::Value::String(v.to_string()),
    };
    Ok((k.to_string(), value))
}

/// Where templates and metadata come from (shared by apply and refresh).
#[derive(Args, Clone)]
struct Sources {
    /// Template root directory [default: $OS_CONFIG_APPLIER_TEMPLATES or
    /// /usr/libexec/os-apply-config/templates].
    #[arg(short = 't', long = "templates", value_name = "TEMPLATE_ROOT")]
    templates: Option<PathBuf>,
    /// Root directory for output.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "OUT_DIR",
        default_value = "/"
    )]
    output: PathBuf,
    /// Metadata files, merged in order (later wins). Overrides $OS_CONFIG_FILES
    /// (colon-separated) and --os-config-files.
    #[arg(short = 'm', long = "metadata", value_name = "METADATA_FILE", num_args = 1.., action = clap::ArgAction::Append)]
    metadata: Vec<PathBuf>,
    /// Files read before the metadata files (missing ones are skipped).
    #[arg(long = "fallback-metadata", value_name = "FALLBACK_METADATA", num_args = 0.., default_values = metadata::FALLBACK_METADATA)]
    fallback_metadata: Vec<PathBuf>,
    /// The JSON list of metadata files used when neither -m nor $OS_CONFIG_FILES is given.
    #[arg(long = "os-config-files", value_name = "PATH", env = "OS_CONFIG_FILES_PATH", default_value = metadata::OS_CONFIG_FILES_PATH)]
    os_config_files: PathBuf,
}

#[derive(Args)]
struct ApplyArgs {
    #[command(flatten)]
    sources: Sources,
    /// Validate only: render everything, write nothing.
    #[arg(short = 'v', long)]
    validate: bool,
    /// Print the templates root and exit.
    #[arg(long)]
    print_templates: bool,
    /// Use the sub-hash named by this dotted key instead of the whole metadata.
    #[arg(short = 's', long)]
    subhash: Option<String>,
    /// Print this dotted key's value and exit (see --type, --key-default).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Fail unless the --key value matches this type:
    /// int|default|netaddress|netdevice|dsn|swiftdevices|username|raw.
    #[arg(long = "type", default_value = "default")]
    type_name: String,
    /// With --key: print this if the key is missing (not type-checked).
    #[arg(long)]
    key_default: Option<String>,
    /// Exit 0 if this key is boolean true, 1 if false, 255 (-1) otherwise.
    #[arg(long, value_name = "KEY")]
    boolean_key: Option<String>,
}

#[derive(Args)]
struct RefreshArgs {
    /// Directory holding the *.d phase directories [default: $OS_REFRESH_CONFIG_BASE_DIR or
    /// /usr/libexec/os-refresh-config].
    #[arg(long)]
    base_dir: Option<PathBuf>,
    /// Lock file that keeps two runs apart.
    #[arg(long, default_value = refresh::DEFAULT_LOCKFILE)]
    lockfile: PathBuf,
    /// Print the base directory and exit.
    #[arg(long)]
    print_base: bool,
    /// Print the phases (tab separated) and exit.
    #[arg(long)]
    print_phases: bool,
    /// Do not render templates between pre-configure and configure.
    #[arg(long)]
    no_apply: bool,
    /// Seconds until a script still running is killed and the run fails (0: no limit).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Log level (os-refresh-config's names) [default: $RUST_LOG or INFO].
    #[arg(long, value_parser = ["ERROR", "WARN", "CRITICAL", "INFO", "DEBUG"])]
    log_level: Option<String>,
    #[command(flatten)]
    sources: Sources,
}

impl RefreshArgs {
    fn timeout(&self) -> Option<std::time::Duration> {
        // os-refresh-config: `if options.timeout:`, so 0 sets no alarm.
        self.timeout
            .filter(|&t| t > 0)
            .map(std::time::Duration::from_secs)
    }
}

/// The tracing filter for os-refresh-config's `--log-level` (CRITICAL is ERROR here).
fn log_filter(level: Option<&str>) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    match level {
        Some("DEBUG") => EnvFilter::new("debug"),
        Some("INFO") => EnvFilter::new("info"),
        Some("WARN") => EnvFilter::new("warn"),
        Some(_) => EnvFilter::new("error"),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    }
}

fn templates_dir(arg: &Option<PathBuf>) -> PathBuf {
    const DEFAULT: &str = "/usr/libexec/os-apply-config/templates";
    if let Some(t) = arg {
        return t.clone();
    }
    if let Some(t) = std::env::var_os("OS_CONFIG_APPLIER_TEMPLATES") {
        return t.into();
    }
    for old in [
        "/opt/stack/os-apply-config/templates",
        "/opt/stack/os-config-applier/templates",
    ] {
        if Path::new(old).is_dir() && !Path::new(DEFAULT).is_dir() {
            tracing::warn!("template directory {old} is deprecated; use {DEFAULT}");
            return old.into();
        }
    }
    DEFAULT.into()
}

/// The metadata files, in merge order: fallbacks, then -m / $OS_CONFIG_FILES /
/// os_config_files.json.
fn metadata_files(s: &Sources) -> anyhow::Result<Vec<PathBuf>> {
    let mut listed = s.metadata.clone();
    if listed.is_empty() {
        if let Some(v) = std::env::var_os("OS_CONFIG_FILES") {
            listed = std::env::split_paths(&v).collect();
        } else {
            listed = metadata::load_list_from_json(&s.os_config_files)
                .with_context(|| format!("reading {}", s.os_config_files.display()))?;
            if listed.is_empty() && s.os_config_files == Path::new(metadata::OS_CONFIG_FILES_PATH) {
                let old = Path::new(metadata::OS_CONFIG_FILES_PATH_OLD);
                listed = metadata::load_list_from_json(old)
                    .with_context(|| format!("reading {}", old.display()))?;
            }
        }
    }
    let mut files = s.fallback_metadata.clone();
    files.extend(listed);
    Ok(files)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match &cli.command {
        Command::Refresh(r) => r.log_level.as_deref(),
        Command::Collect(c) => c.refresh.log_level.as_deref(),
        _ => None,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(log_filter(level))
        .with_target(false)
        .init();
    let code = match cli.command {
        Command::Apply(a) => run_apply(a),
        Command::Refresh(r) => run_refresh(r),
        Command::Collect(c) => run_collect(c),
        Command::Signal(s) => run_signal(s),
        Command::Booted(b) => run_booted(b),
    };
    match code {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_apply(a: ApplyArgs) -> anyhow::Result<u8> {
    let templates = templates_dir(&a.sources.templates);
    if a.print_templates {
        println!("{}", templates.display());
        return Ok(0);
    }
    let files = metadata_files(&a.sources)?;
    let config = metadata::collect(&files).map_err(|e| anyhow::anyhow!(error_chain(&e)))?;

    if a.key.is_some() && a.boolean_key.is_some() {
        tracing::warn!("--key is not compatible with --boolean-key. --boolean-key ignored.");
    }
    if a.key.as_deref() == Some("") {
        anyhow::bail!("--key is empty (os-apply-config would render every template instead)");
    }
    if let Some(key) = &a.key {
        return match metadata::extract_key(&config, key) {
            None => match &a.key_default {
                Some(d) => {
                    println!("{d}");
                    Ok(0)
                }
                None => {
                    let shown: Vec<String> =
                        files.iter().map(|p| p.display().to_string()).collect();
                    anyhow::bail!("key {key} does not exist in [{}]", shown.join(", "))
                }
            },
            Some(v) => {
                let text = metadata::format_value(v);
                value_types::ensure_type(&text, &a.type_name)?;
                println!("{text}");
                Ok(0)
            }
        };
    }
    if let Some(key) = &a.boolean_key {
        return Ok(match metadata::extract_key(&config, key) {
            Some(serde_json::Value::Bool(true)) => 0,
            Some(serde_json::Value::Bool(false)) => 1,
            _ => 255,
        });
    }
    let config = metadata::strip_hash(config, a.subhash.as_deref())?;
    let report = apply::install(&config, &templates, &a.sources.output, a.validate)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    let written = report
        .iter()
        .filter(|(_, o)| *o != apply::Outcome::Unchanged)
        .count();
    tracing::info!(files = report.len(), changed = written, "success");
    Ok(0)
}

fn run_refresh(r: RefreshArgs) -> anyhow::Result<u8> {
    let base_dir = r.base_dir.clone().unwrap_or_else(refresh::default_base_dir);
    if r.print_base {
        println!("{}", base_dir.display());
        return Ok(0);
    }
    if r.print_phases {
        println!("{}", refresh::PHASES.join("\t"));
        return Ok(0);
    }
    let apply = if r.no_apply {
        None
    } else {
        Some(refresh::ApplyStep {
            templates: templates_dir(&r.sources.templates),
            output: r.sources.output.clone(),
            metadata: metadata_files(&r.sources)?,
        })
    };
    let opts = refresh::RefreshOptions {
        base_dir,
        timeout: r.timeout(),
        lockfile: r.lockfile,
        apply,
    };
    match refresh::refresh(&opts) {
        Ok(_) => Ok(0),
        // os-refresh-config exits with the errno of the failed flock (EWOULDBLOCK).
        Err(e @ refresh::RefreshError::Locked { .. }) => {
            tracing::error!("{}", error_chain(&e));
            Ok(nix::errno::Errno::EWOULDBLOCK as u8)
        }
        Err(e) => {
            // Already logged with its output by refresh(); say that we stopped.
            tracing::error!("aborting: {e}");
            Ok(1)
        }
    }
}

fn refresh_options(r: &RefreshArgs, files: &[PathBuf]) -> refresh::RefreshOptions {
    // Fallbacks, then any -m files, then the seed's document (which wins the merge).
    let mut metadata = r.sources.fallback_metadata.clone();
    metadata.extend(r.sources.metadata.iter().cloned());
    metadata.extend(files.iter().cloned());
    refresh::RefreshOptions {
        base_dir: r.base_dir.clone().unwrap_or_else(refresh::default_base_dir),
        lockfile: r.lockfile.clone(),
        timeout: r.timeout(),
        apply: (!r.no_apply).then(|| refresh::ApplyStep {
            templates: templates_dir(&r.sources.templates),
            output: r.sources.output.clone(),
            metadata,
        }),
    }
}

fn run_collect(c: CollectArgs) -> anyhow::Result<u8> {
    if c.refresh.print_base || c.refresh.print_phases {
        return run_refresh(c.refresh);
    }
    let identity =
        collect::read_identity(&c.identity).map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    tracing::info!(node = %identity.node, seed = %identity.seed_url, "collecting");
    let collector = collect::Collector::new(identity, &c.cache)
        .with_retries(c.retries, std::time::Duration::from_secs(1));
    let mut run = |files: &[PathBuf]| refresh::refresh(&refresh_options(&c.refresh, files));
    let mut first = true;
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        // The first pass asks without waiting, so a booting node applies at once.
        let wait = if first { 0 } else { c.wait };
        let result = collector.pass(wait, first && c.force, &mut run);
        first = false;
        match result {
            Ok(p) => {
                tracing::info!(
                    counter = p.counter,
                    origin = ?p.origin,
                    refreshed = p.refreshed,
                    failed = p.failed,
                    signals = p.signals.len(),
                    "collect pass"
                );
                if c.once {
                    return Ok(u8::from(p.failed));
                }
                if p.origin == collect::Origin::Seed {
                    pause = std::time::Duration::from_secs(1);
                    continue;
                }
            }
            Err(e) => {
                if c.once {
                    return Err(anyhow::anyhow!(error_chain(&e)));
                }
                tracing::error!("{}", error_chain(&e));
            }
        }
        // The seed did not answer: wait before trying again (bounded, doubling).
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_secs(60));
    }
}

/// `complete` or `failed` (listed in `--help`), parsed into the API's [`collect::SignalStatus`].
fn signal_status() -> impl clap::builder::TypedValueParser<Value = collect::SignalStatus> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["complete", "failed"])
        .try_map(|s| s.parse::<collect::SignalStatus>())
}

fn run_booted(b: BootedArgs) -> anyhow::Result<u8> {
    let identity =
        collect::read_identity(&b.identity).map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    let node = identity.node.clone();
    // No cache: the report needs none (the collector's cache is never touched by it).
    let collector = collect::Collector::new(identity, collect::default_cache())
        .with_retries(b.retries, std::time::Duration::from_secs(1));
    let body = serde_json::json!({"node": node, "image": b.image, "version": b.version});
    let answer = collector
        .booted(&body)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    println!(
        "reported booted to {} as {}: {}",
        collector.identity().seed_url,
        answer.node,
        answer.state
    );
    Ok(0)
}

fn run_signal(s: SignalArgs) -> anyhow::Result<u8> {
    let identity =
        collect::read_identity(&s.identity).map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    let collector = collect::Collector::new(identity, &s.cache);
    let counter = s.counter.or_else(|| collector.state().applied).unwrap_or(0);
    let sig = collect::Signal {
        deployment: s.deployment,
        status: s.status,
        reason: s.reason,
        outputs: s.outputs.into_iter().collect(),
        counter,
    };
    collector
        .signal(&sig)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    tracing::info!(deployment = %sig.deployment, status = ?sig.status, counter, "signalled");
    Ok(0)
}
