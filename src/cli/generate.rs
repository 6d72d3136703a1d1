//! `clientele generate`: writes the man pages and shell completions that the packages install,
//! straight from the command-line definition, so they can never describe flags that do not
//! exist. Hidden from `--help` and from the man pages: it is a build step, not an operator's
//! command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Subcommand};

use super::{Cli, CliError};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    what: GenerateCommand,
}

#[derive(Debug, Subcommand)]
enum GenerateCommand {
    /// Man pages in roff: clientele.1 and one page per subcommand (clientele-serve.1, ...)
    Man {
        /// Folder to write into (created when missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// The completion script of one shell (bash: clientele.bash, zsh: _clientele,
    /// fish: clientele.fish, ...)
    Completions {
        /// The shell to write completions for
        shell: clap_complete::Shell,
        /// Folder to write into (created when missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Writes what was asked for and names each file written.
pub fn run(args: &GenerateArgs) -> Result<ExitCode, CliError> {
    let mut command = Cli::command();
    match &args.what {
        GenerateCommand::Man { out } => {
            create_dir(out)?;
            clap_mangen::generate_to(command, out).map_err(|e| write_error(out, &e))?;
            let mut pages = std::fs::read_dir(out)
                .map_err(|e| write_error(out, &e))?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "1"))
                .collect::<Vec<_>>();
            pages.sort();
            for page in pages {
                println!("{}", page.display());
            }
        }
        GenerateCommand::Completions { shell, out } => {
            create_dir(out)?;
            let path = clap_complete::generate_to(*shell, &mut command, "clientele", out)
                .map_err(|e| write_error(out, &e))?;
            println!("{}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn create_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, &e))
}

fn write_error(dir: &Path, err: &std::io::Error) -> CliError {
    CliError::Other(format!("cannot write into {}: {err}", dir.display()))
}
