use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match atlas_node::cli::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Services set their own default; everything else logs warnings only unless ATLAS_LOG says so.
    if !matches!(
        cli.command,
        atlas_node::cli::Command::Ledger(_) | atlas_node::cli::Command::Provider(_)
    ) {
        atlas_node::init_logging("warn,libp2p_swarm=error,libp2p_kad=error");
    }
    match atlas_node::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, outermost first.
            let causes: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", causes.join(": "));
            ExitCode::from(1)
        }
    }
}
