use std::process::ExitCode;

/// The gateway decodes on many threads at once, each through buffers of megabytes. By default
/// glibc gives each thread a heap of its own and raises its mapping threshold to the largest
/// buffer freed so far, after which stripe buffers come from those heaps, which keep the pages
/// when freed: the gateway then held ~250 MiB where it used ~70. Two heaps, and buffers of 4 MiB
/// and more mapped on their own (and so returned when freed), keep it near what it uses.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn bound_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_allocator() {}

fn main() -> ExitCode {
    let cli = match atlas_node::cli::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, atlas_node::cli::Command::Gateway(_)) {
        bound_allocator();
    }
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
