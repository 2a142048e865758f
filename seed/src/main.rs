//! The `seed` command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    seed::cli::init_tracing();
    let cli = seed::cli::Cli::parse();
    match seed::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
