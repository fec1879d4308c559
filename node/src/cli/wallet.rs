//! `atlas wallet balance | faucet AMOUNT | transfer TO AMOUNT`.

use super::Context;
use crate::ledger::LedgerClient;
use anyhow::Result;
use atlas_protocol::escrow::TxBody;
use atlas_protocol::PublicKey;
use clap::{Args, Subcommand};
use serde_json::json;

#[derive(Debug, Args)]
pub struct WalletArgs {
    #[command(flatten)]
    pub ledger: super::LedgerArg,
    #[command(subcommand)]
    pub command: WalletCommand,
}

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Show this key's balance and nonce.
    Balance,
    /// Devnet only: mint AMOUNT tokens to this key.
    Faucet { amount: u128 },
    /// Send AMOUNT tokens to another public key.
    Transfer { to: PublicKey, amount: u128 },
}

pub fn run(ctx: &Context, args: WalletArgs) -> Result<()> {
    let key = ctx.home()?.load_key()?;
    let addr = args.ledger.addr()?;
    super::runtime()?.block_on(async move {
        let client = LedgerClient::connect(&key, addr).await?;
        let me = key.public();
        let height = match args.command {
            WalletCommand::Balance => None,
            WalletCommand::Faucet { amount } => {
                client.submit(&key, TxBody::Faucet { amount }).await?.height
            }
            WalletCommand::Transfer { to, amount } => {
                client
                    .submit(&key, TxBody::Transfer { to, amount })
                    .await?
                    .height
            }
        };
        let account = client.account(&me).await?;
        if ctx.json {
            ctx.print_json(&json!({
                "public_key": me.to_string(),
                "balance": account.balance.to_string(),
                "nonce": account.nonce,
                "block": height,
            }));
        } else {
            if let Some(h) = height {
                eprintln!("included in block {h}");
            }
            println!("{} {}", me, account.balance);
        }
        Ok(())
    })
}
