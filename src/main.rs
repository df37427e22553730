//! The `jwtgate` binary: parse the command line and hand over to [`jwtgate::cli`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    jwtgate::cli::main()
}
