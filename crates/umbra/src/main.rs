//! `umbra`: the command-line entry point. Each subcommand lives in `cmd/`; this
//! file only parses arguments and maps errors to exit codes.

#![forbid(unsafe_code)]

mod admin;
mod analysis;
mod canary;
mod cmd;
mod control;
mod dashboard;
mod duration;
mod probes;
mod scaling;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: learning a million requests makes
/// millions of small strings, and mimalloc both allocates them faster and backs
/// large vectors with fewer, larger pages (page faults cost more than parsing).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Umbra shows how a new version of a service behaves under real and synthetic
/// production traffic before users meet it.
///
/// It learns request profiles from production logs, generates traffic with the
/// same shape, shadows live requests to a new version, and compares the two.
#[derive(Parser)]
#[command(
    name = "umbra",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Learn(cmd::learn::LearnArgs),
    #[command(subcommand)]
    Profiles(cmd::profiles::ProfilesCommand),
    GenerateLog(cmd::generate::GenerateArgs),
    Load(cmd::load::LoadArgs),
    Capacity(cmd::capacity::CapacityArgs),
    Mask(cmd::mask::MaskArgs),
    Demo(cmd::demo::DemoArgs),
    Detect(cmd::detect::DetectArgs),
    Proxy(cmd::proxy::ProxyArgs),
    Check(cmd::proxy::CheckArgs),
    Alerts(cmd::alerts::AlertsArgs),
    Canary(cmd::canary::CanaryArgs),
    Report(cmd::report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Learn(args) => cmd::learn::run(args),
        Command::Profiles(c) => cmd::profiles::run(c),
        Command::GenerateLog(args) => cmd::generate::run(args),
        Command::Load(args) => cmd::load::run(args),
        Command::Capacity(args) => cmd::capacity::run(args),
        Command::Mask(args) => cmd::mask::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Detect(args) => cmd::detect::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
        Command::Check(args) => cmd::proxy::check(args),
        Command::Alerts(args) => cmd::alerts::run(args),
        Command::Canary(args) => cmd::canary::run(args),
        Command::Report(args) => cmd::report::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole chain of context: "learning from x.log: x.log line 3: ...".
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
