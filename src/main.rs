//! `pylon -c FILE` runs the gateway; `-t` checks the config; `-d` daemonizes; `-u` upgrades.

use clap::Parser;
use pylon::server::{self, Cli};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let runtime = match server::check(&cli) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pylon: {e}");
            std::process::exit(1);
        }
    };
    if cli.test {
        println!(
            "pylon: configuration file {} test is successful",
            cli.conf.display()
        );
        return;
    }
    std::process::exit(server::run(runtime, &cli));
}
