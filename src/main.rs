//! The `jwtgate` binary: parse the command line and hand over to [`jwtgate::cli`].
#![forbid(unsafe_code)]

/// mimalloc instead of glibc malloc: with many small, short-lived allocations on several threads,
/// glibc's per-thread arenas fragment and the resident set grows well past the live data.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    jwtgate::cli::main()
}
