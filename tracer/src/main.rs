use tracer::cli::Command;

fn main() -> std::process::ExitCode {
    let cli = tracer::config::parse_args(std::env::args_os().collect()).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Run(args) => tracer::pipeline::run(args, false),
        Command::Record(args) => tracer::pipeline::run(args, true),
        Command::Replay(args) => tracer::replay::run(&args),
        Command::State(args) => tracer::service::client::print_state(&args.socket),
        Command::Events(args) => {
            tracer::service::client::events(&args.client.socket, &args.kinds, args.format.name(), args.follow)
        }
        Command::Check(args) => tracer::check::run(&args),
        Command::Report(args) => tracer::report::run(&args),
        Command::Top(args) => tracer::top::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of stdout went away (`tracer run | head`, a log
        // shipper that restarted): stop quietly, but not with success, so
        // a supervisor (systemd's Restart=on-failure) starts it again.
        // 141 is what a shell reports for a process SIGPIPE ended.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) || e.downcast_ref::<tracer::output::sink::StdoutClosed>().is_some() =>
        {
            std::process::ExitCode::from(141)
        }
        Err(e) => {
            eprintln!("tracer: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
