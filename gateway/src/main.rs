//! `holdfast`: an API gateway on Pingora for AI and data APIs — bearer-token auth, declarative
//! parameter mapping, fast proxying, and long-poll connections held by the tens of thousands.
//!
//! `holdfast run -c conf/example.yaml` serves; `holdfast check PATH` validates a config and
//! prints every error with its file and line. Start reading at [`app::run`] (the build step),
//! then [`pipeline::gateway::Gateway`] (the request path) — or docs/architecture.md.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod actions;
mod app;
mod backplane;
mod core;
mod edge;
mod exchange;
mod hub;
mod limits;
mod observe;
mod pipeline;
mod problem;
mod wire;

#[cfg(test)]
mod layers;

// mimalloc: +25–35 % requests/s over the system allocator on the proxy path (bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "holdfast",
    version,
    about = "An API gateway for AI and data APIs, built on Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The config file or directory of route files (for `run`, the default command).
    #[arg(short, long, global = true, default_value = "conf/example.yaml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run {
        /// Take over from the running process without dropping a connection: receive its
        /// listening sockets (`server.upgrade_socket`), tell it to hand over (SIGQUIT, to the
        /// process in `server.pid_file`), and serve while it finishes what it holds.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file or directory and print every error; exit 1 if there is one.
    Check {
        /// The config file or directory (defaults to --config).
        path: Option<PathBuf>,
    },
    /// Print the SHA-256 of an API key, for a keys file (`sha256:`); the key is read from the
    /// argument or, without one, from the first line of standard input.
    HashKey { key: Option<String> },
    /// Print the JSON Schema of the config files (for yaml-language-server and other editors).
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // rustls warns once per handshake for every client that sends an IP address as
                // its SNI name (wrk does); that is not the operator's concern.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command.unwrap_or(Command::Run { upgrade: false }) {
        Command::Run { upgrade } => match core::state::load(&cli.config, None) {
            Ok(state) => app::run(state, cli.config, upgrade),
            Err(errors) => {
                eprintln!("holdfast: the configuration is invalid:\n{errors}");
                ExitCode::from(2)
            }
        },
        Command::Schema => {
            match serde_json::to_string_pretty(&conf::schema()) {
                Ok(text) => println!("{text}"),
                Err(error) => {
                    eprintln!("holdfast: cannot render the schema: {error}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Command::HashKey { key } => {
            let key = match key {
                Some(key) => key,
                None => {
                    let mut line = String::new();
                    if let Err(error) = std::io::stdin().read_line(&mut line) {
                        eprintln!("holdfast: cannot read the key: {error}");
                        return ExitCode::FAILURE;
                    }
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            if key.is_empty() {
                eprintln!("holdfast: the key is empty");
                return ExitCode::FAILURE;
            }
            println!("{}", auth::hash_key(&key));
            ExitCode::SUCCESS
        }
        Command::Check { path } => {
            let path = path.unwrap_or(cli.config);
            match core::state::load(&path, None) {
                Ok(state) => {
                    println!(
                        "{}: ok ({} routes, {} upstreams)",
                        path.display(),
                        state.routes.routes().len(),
                        state.pools.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("{} error(s)", errors.len());
                    ExitCode::FAILURE
                }
            }
        }
    }
}
