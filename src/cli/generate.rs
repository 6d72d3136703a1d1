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
            append(&out.join("clientele.1"), TOP_PAGE_SECTIONS)?;
            append(&out.join("clientele-serve.1"), SERVE_PAGE_SECTIONS)?;
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

/// Sections the command-line definition cannot give: where the files are, the environment,
/// and the signals the server answers.
const TOP_PAGE_SECTIONS: &str = r".SH ENVIRONMENT
.TP
\fBCLIENTELE_CONFIG\fR
The configuration file, as \fB\-\-config\fR.
.TP
\fBCLIENTELE_\fR\fISECTION\fR\fB__\fR\fIKEY\fR, \fBCLIENTELE_\fR\fIKEY\fR
Override one configuration key, e.g. \fBCLIENTELE_SERVER__LISTEN=127.0.0.1:9443\fR. A variable
that names no key is an error.
.TP
\fBCREDENTIALS_DIRECTORY\fR
Set by systemd; a credential named \fBclientele\-master\-key\fR in it is the master key.
.SH FILES
.TP
\fI/etc/clientele/clientele.toml\fR
The configuration, annotated key by key.
.TP
\fI/var/lib/clientele/\fR
Database, subject keystore, master key (\fIkeys/master.key\fR), self\-signed certificate
(\fItls/\fR) and control socket.
.TP
\fI/var/log/clientele/\fR
Daily log files.
.TP
\fI/usr/lib/systemd/system/clientele.service\fR
The systemd unit.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBsystemd.exec\fR(5), \fBsystemd\-creds\fR(1)
";

const SERVE_PAGE_SECTIONS: &str = r".SH SIGNALS
.TP
\fBSIGHUP\fR
Read the configuration again and apply the TLS certificate and the \fBlog.level\fR and
\fBlog.stderr\fR keys; open connections stay. Other keys need a restart.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting, finish the requests in flight, close the store and exit.
.SH NOTES
Under systemd with \fBType=notify\fR, \fBREADY=1\fR is sent once the store is open and the
listeners are bound, and \fBSTOPPING=1\fR when a stop begins.
";

fn append(page: &Path, sections: &str) -> Result<(), CliError> {
    let mut text = std::fs::read_to_string(page).map_err(|e| write_error(page, &e))?;
    text.push_str(sections);
    std::fs::write(page, text).map_err(|e| write_error(page, &e))
}

fn create_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, &e))
}

fn write_error(dir: &Path, err: &std::io::Error) -> CliError {
    CliError::Other(format!("cannot write into {}: {err}", dir.display()))
}
