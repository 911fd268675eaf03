//! `headstart completions`: shell completion scripts.

use anyhow::Result;
use clap::CommandFactory;

/// Print a completion script for your shell on stdout. Install it, e.g.:
///
///     headstart completions bash > ~/.local/share/bash-completion/completions/headstart
///     headstart completions zsh > "${fpath[1]}/_headstart"
///     headstart completions fish > ~/.config/fish/completions/headstart.fish
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "headstart", &mut std::io::stdout());
    Ok(())
}
