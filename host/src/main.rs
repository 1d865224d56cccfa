//! The `dialgate` binary: see `dialgate --help`.

/// mimalloc rather than the system allocator: requests and plugin calls allocate and
/// free on every worker thread, and glibc's arenas contended (see the README's
/// Performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dialgate::cli::main()
}
