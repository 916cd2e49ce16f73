//! The `tars` binary: everything lives in the library; see [`tars::cli`].

fn main() -> std::process::ExitCode {
    tars::cli::main()
}
