use clap::Parser as _;
use tracer::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => tracer::pipeline::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
