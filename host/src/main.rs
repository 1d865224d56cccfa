//! The `dialgate` binary: see `dialgate --help`.

fn main() -> std::process::ExitCode {
    dialgate::cli::main()
}
