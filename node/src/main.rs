use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = atlas_node::cli::Cli::parse();
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
