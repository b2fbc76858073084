//! `pylon -c FILE` runs the gateway; `-t` checks the config; `-d` daemonizes; `-u` upgrades.

use clap::Parser;
use pylon::server::{self, Cli};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs before Rust's runtime (and so before the first allocation): mimalloc then commits
/// arena memory as it is used instead of up front, which takes idle RSS from 24 to 16 MiB.
#[used]
#[link_section = ".init_array"]
static MIMALLOC_LAZY_COMMIT: extern "C" fn() = lazy_commit;

extern "C" fn lazy_commit() {
    // `mi_option_arena_eager_commit` is option 4 in mimalloc v3's mimalloc.h (the crate's
    // constants predate it); 0 turns eager commit off.
    const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: setting an option is a plain store in mimalloc, valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) }
}

/// OpenSSL's allocations go to mimalloc too, set before OpenSSL allocates anything: in the
/// system allocator, what a TLS connection held stayed in the process after it closed (its
/// free lists keep it), while mimalloc gives it back (see `pylon::memory`).
fn openssl_uses_mimalloc() -> bool {
    // SAFETY: the three functions have the signatures OpenSSL 3 declares for them, and
    // CRYPTO_set_mem_functions refuses (returns 0) once OpenSSL has allocated.
    unsafe {
        openssl_alloc::CRYPTO_set_mem_functions(
            openssl_alloc::malloc,
            openssl_alloc::realloc,
            openssl_alloc::free,
        ) == 1
    }
}

/// OpenSSL 3's allocator hooks, which openssl-sys does not declare.
mod openssl_alloc {
    use std::ffi::{c_char, c_int, c_void};

    extern "C" {
        pub fn CRYPTO_set_mem_functions(
            malloc: unsafe extern "C" fn(usize, *const c_char, c_int) -> *mut c_void,
            realloc: unsafe extern "C" fn(*mut c_void, usize, *const c_char, c_int) -> *mut c_void,
            free: unsafe extern "C" fn(*mut c_void, *const c_char, c_int),
        ) -> c_int;
    }

    pub unsafe extern "C" fn malloc(
        size: usize,
        _file: *const c_char,
        _line: c_int,
    ) -> *mut c_void {
        // SAFETY: mi_malloc takes any size
        unsafe { libmimalloc_sys::mi_malloc(size) }
    }

    pub unsafe extern "C" fn realloc(
        ptr: *mut c_void,
        size: usize,
        _file: *const c_char,
        _line: c_int,
    ) -> *mut c_void {
        // SAFETY: OpenSSL passes null or a pointer it had from `malloc` or `realloc` here
        unsafe { libmimalloc_sys::mi_realloc(ptr, size) }
    }

    pub unsafe extern "C" fn free(ptr: *mut c_void, _file: *const c_char, _line: c_int) {
        // SAFETY: as for realloc
        unsafe { libmimalloc_sys::mi_free(ptr) }
    }
}

fn main() {
    let openssl_in_mimalloc = openssl_uses_mimalloc();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if !openssl_in_mimalloc {
        log::warn!("OpenSSL had allocated before its allocator could be set; it keeps malloc");
    }
    let cli = Cli::parse();
    let runtime = match server::check(&cli) {
        Ok(rt) => rt,
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
        print!("{}", server::summary(&runtime));
        return;
    }
    std::process::exit(server::run(runtime, &cli));
}
