//! The `clientele` binary: parses the command line and hands over to `clientele::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    clientele::cli::main()
}
