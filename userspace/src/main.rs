//! The `swoll` binary: parse arguments, set up logging, run a subcommand, map errors to an
//! exit code. Everything else is in the library.
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use swoll::cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("swoll: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Selftest(args) => {
            let checks = swoll::selftest::run(&args.into_options());
            for check in &checks {
                println!("{check}");
            }
            let failed = checks
                .iter()
                .filter(|c| c.outcome == swoll::selftest::Outcome::Fail)
                .count();
            anyhow::ensure!(
                failed == 0,
                "{failed} check(s) failed: swoll cannot run here"
            );
            println!("swoll can run here");
        }
        Command::Top(args) => swoll::top::run(args.into_options())?,
        Command::Trace(args) => swoll::trace::command::run(args.into_options()?)?,
        Command::Seccomp(args) => {
            let (profile, warnings) = swoll::seccomp::client::run(&args.into_options())?;
            for warning in &warnings {
                eprintln!("swoll: {warning}");
            }
            println!("{profile}");
        }
        Command::Unpin(args) => {
            let removed = swoll::pins::unpin_all(&args.pin_path)
                .with_context(|| format!("unpinning under {}", args.pin_path.display()))?;
            for set in &removed {
                println!("removed {}", set.display());
            }
            if removed.is_empty() {
                println!("nothing pinned under {}", args.pin_path.display());
            }
        }
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(swoll::serve::run(args.into_options()))?;
        }
    }
    Ok(())
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
}
