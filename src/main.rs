//! `pylon -c FILE` runs the gateway; `-t` checks the config; `-d` daemonizes; `-u` upgrades.

use clap::Parser;
use pylon::server::{self, Cli};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs before Rust's runtime, so before the first allocation (see `pylon::memory`).
#[used]
#[link_section = ".init_array"]
static MIMALLOC_LAZY_COMMIT: extern "C" fn() = pylon::memory::mimalloc_lazy_commit;

fn main() {
    let openssl_in_mimalloc = pylon::memory::openssl_uses_mimalloc();
    pylon::telemetry::logger::init();
    if !openssl_in_mimalloc {
        log::warn!("OpenSSL had allocated before its allocator could be set; it keeps malloc");
    }
    let cli = Cli::parse();
    let started = match server::check(&cli) {
        Ok(checked) => checked,
        Err(e) => {
            // one line per error: a file with several mistakes lists them all
            for line in e.to_string().lines() {
                eprintln!("pylon: {line}");
            }
            std::process::exit(1);
        }
    };
    if cli.test {
        println!(
            "pylon: configuration file {} test is successful",
            cli.conf.display()
        );
        print!("{}", server::summary(&started.runtime));
        if let Some(fleet) = &started.fleet {
            println!(
                "policy document: fleet {}'s, in {} (checked by each PUT /config, not by -t)",
                fleet.name(),
                fleet.store()
            );
        }
        return;
    }
    std::process::exit(server::run(started, &cli));
}
