//! The `roster` command line: parses arguments and calls the library. See design.md §2.

use anyhow::Context;
use clap::{Parser, Subcommand};
use roster::config::Config;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "roster", version, about = "An SFTP server for HR data drops")]
struct Cli {
    /// The config file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        env = "ROSTER_CONFIG",
        default_value = "config/roster.toml"
    )]
    config: PathBuf,
    /// Log format: human or json (one JSON object per line, for log collectors).
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Admin API URL for the admin commands (default: from [admin] listen in the config).
    #[arg(long = "admin-url", global = true, env = "ROSTER_ADMIN_URL")]
    admin_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the SFTP server until SIGINT/SIGTERM.
    Serve,
    /// Validate the config; print tenants and host-key fingerprints.
    CheckConfig,
    /// Read a password from stdin and print its argon2id PHC string.
    HashPassword,
    /// Serve SFTP on stdin/stdout, jailed to DIR (for OpenSSH's `Subsystem sftp`).
    SftpServer {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        read_only: bool,
    },
    /// Copy the embedded store (data_dir/store; roster serve must be stopped) into an empty
    /// PostgreSQL store, then compare the two.
    MigrateStore {
        /// The PostgreSQL store: postgres://USER@HOST:PORT/DB (sslmode, sslrootcert as in
        /// [store] url).
        #[arg(long)]
        to: String,
    },
    #[command(flatten)]
    Admin(roster::cli::AdminCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::CheckConfig | Command::Admin(_)) {
        // A command whose output is piped into `head` ends quietly when the reader goes away,
        // as other Unix tools do (println! panicked on the broken pipe). Its network sockets
        // are written with MSG_NOSIGNAL by std and tokio, so only the output pipe signals.
        // SAFETY: restores the default action of one signal before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_logs(
        cli.log_format,
        matches!(cli.command, Command::SftpServer { .. } | Command::Admin(_)),
    );
    let result = match &cli.command {
        Command::Serve => runtime().and_then(|rt| {
            let result = rt.block_on(roster::serve::run(&cli.config));
            // Blocking threads still running (an import past the stop's grace period, a store
            // call that does not answer) are not waited for beyond this (review s30).
            rt.shutdown_timeout(roster::serve::RUNTIME_EXIT_BOUND);
            result
        }),
        Command::CheckConfig => check_config(&cli.config),
        Command::HashPassword => hash_password(),
        Command::SftpServer { root, read_only } => runtime()
            .and_then(|rt| rt.block_on(roster::sftp::serve_stdio(root, *read_only, u64::MAX))),
        Command::MigrateStore { to } => roster::cli::migrate_store::run(&cli.config, to),
        Command::Admin(cmd) => roster::cli::run(cmd, &cli.config, cli.admin_url.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // With --log-format json the error is one more JSON line, so a log collector sees
            // why the process ended (review s30); else the plain sentence.
            match cli.log_format {
                LogFormat::Json => tracing::error!("roster: {e:#}"),
                LogFormat::Human => eprintln!("roster: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logs(format: LogFormat, stderr_only_warnings: bool) {
    let default = if stderr_only_warnings { "warn" } else { "info" };
    roster::logs::init(format == LogFormat::Json, default);
}

/// A warning when the tenant's archives alone could reach `max_tenant_bytes`: every upload as
/// large as `max_upload_bytes`, one a day, kept `retention_days`.
/// Settings of a tenant that are valid but do nothing as written (review s19 docs F10).
fn idle_setting_warnings(t: &roster::config::Tenant) -> Vec<String> {
    use roster::config::Trigger;
    let mut out = Vec::new();
    if t.import.only_today && !t.import.file.contains("{date}") {
        out.push("only_today has no effect: file has no {date}".to_string());
    }
    if t.import.schedule.is_some() && t.import.trigger == Trigger::Upload {
        out.push(
            "schedule is set but trigger is \"upload\", so it never fires (no scheduled run, no \
             `missing` mail): set trigger = \"schedule\" or \"both\""
                .to_string(),
        );
    }
    out
}

fn share_warning(config: &Config, t: &roster::config::Tenant) -> Option<String> {
    let share = config.server.max_tenant_bytes;
    let kept = (config.server.max_upload_bytes).saturating_mul(u64::from(t.import.retention_days));
    (share > 0 && kept > share).then(|| {
        format!(
            "one upload a day of max_upload_bytes kept retention_days ({} days) is {:.1} GB, over max_tenant_bytes ({:.1} GB, archives included): raise it or lower one of them",
            t.import.retention_days,
            kept as f64 / 1e9,
            share as f64 / 1e9
        )
    })
}

fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = Config::load_to_serve(path)?;
    println!(
        "{}: valid, {} tenant(s)",
        path.display(),
        config.tenants.len()
    );
    for t in &config.tenants {
        let mut methods = Vec::new();
        if t.password_hash.is_some() {
            methods.push("password".to_string());
        }
        if !t.authorized_keys.is_empty() {
            methods.push(format!("{} key(s)", t.authorized_keys.len()));
        }
        println!(
            "  {:<20} auth: {:<22} file: {:<28} trigger: {}",
            t.id,
            methods.join(" + "),
            t.import.file,
            format!("{:?}", t.import.trigger).to_lowercase()
        );
        for w in idle_setting_warnings(t) {
            println!("  warning: {}: {w}", t.id);
        }
        // A warning, not a failure: check-config often runs where serve's environment is not.
        if let Some(Err(e)) = t.scim_push.as_ref().map(|p| p.bearer()) {
            println!(
                "  warning: {}: {e} here; SCIM push stays stopped where it is not set",
                t.id
            );
        }
        if let Some(w) = share_warning(&config, t) {
            println!("  warning: {}: {w}", t.id);
        }
    }
    if config.admin.token.trim() == roster::config::admin_token::OLD_DEFAULT {
        println!(
            "warning: [admin] token is the old example \"{}\", which is never accepted: the server \
             uses the token it generates into {} instead; set a long random one or remove the key",
            roster::config::admin_token::OLD_DEFAULT,
            roster::config::admin_token::token_path(&config).display()
        );
    }
    let keys = roster::sftp::hostkeys::load_existing(&config.server.host_keys)?;
    if keys.is_empty() {
        println!(
            "host keys: none yet in {} (created on first start)",
            config.server.host_keys.display()
        );
    }
    for k in keys {
        println!("host key {:<12} {}", k.algorithm(), k.fingerprint());
    }
    report_store(&config)
}

/// With `[store] url`: connects, applies nothing, and prints the schema version found and the
/// one this binary expects; fails when it cannot connect or the schema is newer than the binary.
/// The sled store (no url) prints nothing, as before.
fn report_store(config: &Config) -> anyhow::Result<()> {
    let Some(target) = config.store.postgres().map_err(anyhow::Error::msg)? else {
        return Ok(());
    };
    let at = target.describe();
    let found = runtime()?
        .block_on(roster::store::postgres::schema_version(&target))
        .with_context(|| format!("store: cannot reach PostgreSQL at {at} as {}", target.user))?;
    let expected = roster::store::postgres::SCHEMA_VERSION;
    let note = if found == 0 {
        ", no roster schema yet"
    } else {
        ""
    };
    println!("store: PostgreSQL at {at}, schema version {found} (binary expects {expected}{note})");
    roster::store::postgres::refuse_newer(found)?;
    // A store an unfinished migrate-store left is refused by roster serve: say so here too.
    runtime()?.block_on(roster::store::postgres::refuse_unfinished_copy_at(&target))
}

fn hash_password() -> anyhow::Result<()> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ").context("cannot read the password")?
    } else {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the password from stdin")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    println!("{}", roster::login::hash_password(&password)?);
    Ok(())
}
