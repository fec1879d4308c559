//! `atlas key gen | show`.

use super::Context;
use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a new key in $ATLAS_HOME and print its public key.
    Gen {
        /// Replace an existing key (its identity and anything it owns are lost).
        #[arg(long)]
        force: bool,
    },
    /// Print the public key of the key in $ATLAS_HOME.
    Show,
}

pub fn run(ctx: &Context, cmd: KeyCommand) -> Result<()> {
    let home = ctx.home()?;
    let key = match cmd {
        KeyCommand::Gen { force } => home.generate_key(force)?,
        KeyCommand::Show => home.load_key()?,
    };
    if ctx.json {
        ctx.print_json(&json!({
            "public_key": key.public().to_string(),
            "key_file": home.key_path(),
        }));
    } else {
        println!("{}", key.public());
    }
    Ok(())
}
