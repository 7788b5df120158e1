//! The `ldbridge` binary: parse the command line, set up logging, run, and
//! turn the outcome into an exit code (the policy is `cli::Failure`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use ldbridge::cli::{self, Cli};

// Under batched ingest glibc's malloc/free took ~30 % of the daemon's CPU
// (perf; BENCHMARKS.md): many small JSON values, freed on other threads than
// the ones that made them. mimalloc's per-thread free lists make that cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = ldbridge::logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ldbridge: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("ldbridge: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}
