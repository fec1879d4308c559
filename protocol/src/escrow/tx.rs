//! Ledger transactions and their signed envelope.
//!
//! A transaction is `Tx { chain, signer, nonce, body }`, encoded canonically with postcard and signed
//! in the `atlas/tx/v1` domain. `chain` names the ledger it was signed for (its genesis), so a
//! transaction signed for one chain is refused by every other. The envelope keeps the exact signed bytes. The enum's variant order is part of
//! the wire format: new transactions are appended, retired ones stay as placeholders.

use crate::challenge::StorageProof;
use crate::id::DealId;
use crate::manifest::SignedManifest;
use crate::sign::{self, Domain, Keypair, PublicKey, SignError, Signature};
use serde::{Deserialize, Serialize};

/// Token amounts, in integer base units.
pub type Amount = u128;

/// A chain's identity: BLAKE3 of its genesis (rules, sequencer, a random salt).
pub type ChainId = [u8; 32];

/// Largest encoded transaction accepted (a manifest of 256 slots plus a proof fit well under it).
pub const MAX_TX_SIZE: usize = 64 * 1024;

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxBody {
    /// Move tokens to another account.
    Transfer { to: PublicKey, amount: Amount },
    /// Devnet only: mint tokens to the signer, up to the ledger's cap.
    Faucet { amount: Amount },
    /// Offer storage: `price` per GiB per epoch, `collateral` moved from balance into the provider's
    /// collateral pool.
    RegisterProvider {
        peer_id: Vec<u8>,
        addrs: Vec<String>,
        capacity: u64,
        price: Amount,
        collateral: Amount,
    },
    /// Change a registered provider's addresses, capacity or price (existing deals keep their price),
    /// and add collateral.
    UpdateProvider {
        addrs: Vec<String>,
        capacity: u64,
        price: Amount,
        add_collateral: Amount,
    },
    /// Leave: no new slots; held slots are handed over after the notice period (see the escrow rules).
    ExitProvider,
    /// Pin an object: slot `j` goes to `providers[j]`; the creator deposits the whole price for
    /// `epochs` epochs plus the repair reserve.
    OpenDeal {
        manifest: SignedManifest,
        providers: Vec<PublicKey>,
        epochs: u64,
        /// Refuse if the per-slot epoch price would exceed this.
        max_price: Amount,
    },
    /// A provider holds and has verified its whole slot; locks its collateral for it.
    AcceptSlot { deal: DealId, slot: u16 },
    /// The answer to this epoch's challenge for one slot.
    SubmitProof {
        deal: DealId,
        slot: u16,
        epoch: u64,
        proof: StorageProof,
    },
    /// A provider takes a freed slot to repair it; locks collateral.
    ClaimSlot { deal: DealId, slot: u16 },
    /// Add tokens to a deal's escrow.
    TopUp { deal: DealId, amount: Amount },
    /// Extend a deal by `epochs`, paying for them from the signer's balance.
    Extend { deal: DealId, epochs: u64 },
    /// End a deal early: holders are paid through the current epoch, the rest is refunded.
    CancelDeal { deal: DealId },
    /// A holder hands back a slot it can no longer serve (its copy was found damaged): the slot
    /// is freed at once for repair, at the cost of one missed proof's slash; the rest of its
    /// collateral returns. It may not claim the slot again.
    ReleaseSlot { deal: DealId, slot: u16 },
    /// Committed rules: a provider's one commitment for `epoch` (the current one) to every sample
    /// it owes, as the root over `leaves` sample leaves; `reveal` opens the previous commit's
    /// `next`, and `next` commits to the reveal of the following epoch.
    Commit {
        epoch: u64,
        root: [u8; 32],
        leaves: u32,
        reveal: [u8; 32],
        next: [u8; 32],
    },
    /// Committed rules: `provider` owed samples for `epoch` (slot `slot` of `deal` shows it) and
    /// sent no commit. Slashes it; the signer gets the reporter's reward.
    MarkMissed {
        provider: PublicKey,
        epoch: u64,
        deal: DealId,
        slot: u16,
    },
    /// Committed rules: pays `provider` for its good epochs below `up_to`, which must be final.
    SettleProvider { provider: PublicKey, up_to: u64 },
    /// Committed rules: applies what time has done to a slot (deadlines, ends) and finalizes its
    /// closed tenures that are final.
    FinalizeSlot { deal: DealId, slot: u16 },
    /// Committed rules: once a deal's last epoch is final, finalizes its slots, returns the
    /// holders' collateral and refunds the creator. Anyone may send it.
    CloseDeal { deal: DealId },
    /// Committed rules: an exited provider with no tenures left takes its collateral and
    /// whatever is still streamed to it.
    CompleteExit,
    /// Committed rules: a repairer takes its bounty after its first final good epoch.
    ClaimBounty { deal: DealId, slot: u16 },
}

impl TxBody {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            TxBody::Transfer { .. } => "transfer",
            TxBody::Faucet { .. } => "faucet",
            TxBody::RegisterProvider { .. } => "register_provider",
            TxBody::UpdateProvider { .. } => "update_provider",
            TxBody::ExitProvider => "exit_provider",
            TxBody::OpenDeal { .. } => "open_deal",
            TxBody::AcceptSlot { .. } => "accept_slot",
            TxBody::SubmitProof { .. } => "submit_proof",
            TxBody::ClaimSlot { .. } => "claim_slot",
            TxBody::TopUp { .. } => "top_up",
            TxBody::Extend { .. } => "extend",
            TxBody::CancelDeal { .. } => "cancel_deal",
            TxBody::ReleaseSlot { .. } => "release_slot",
            TxBody::Commit { .. } => "commit",
            TxBody::MarkMissed { .. } => "mark_missed",
            TxBody::SettleProvider { .. } => "settle_provider",
            TxBody::FinalizeSlot { .. } => "finalize_slot",
            TxBody::CloseDeal { .. } => "close_deal",
            TxBody::CompleteExit => "complete_exit",
            TxBody::ClaimBounty { .. } => "claim_bounty",
        }
    }
}

/// A transaction: who, in which order, does what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tx {
    /// The chain this transaction is for: [`crate::escrow::Escrow::chain_id`] of its genesis.
    pub chain: ChainId,
    pub signer: PublicKey,
    /// Must equal the signer's account nonce; replays are refused.
    pub nonce: u64,
    pub body: TxBody,
}

impl Tx {
    /// Signs the canonical bytes with `key` (which must be the signer).
    pub fn sign(self, key: &Keypair) -> Result<SignedTx, TxError> {
        if key.public() != self.signer {
            return Err(TxError::WrongKey);
        }
        let bytes = postcard::to_stdvec(&self).expect("serializing to a Vec cannot fail");
        if bytes.len() > MAX_TX_SIZE {
            return Err(TxError::TooLarge(bytes.len()));
        }
        let signature = key.sign(Domain::Transaction, &bytes);
        Ok(SignedTx { bytes, signature })
    }
}

/// Why a transaction envelope was refused before execution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transaction is {0} bytes, more than the {MAX_TX_SIZE} allowed")]
    TooLarge(usize),
    #[error("transaction bytes do not decode: {0}")]
    Malformed(String),
    #[error("transaction bytes are not in canonical form")]
    NotCanonical,
    #[error("signature: {0}")]
    Signature(#[from] SignError),
    #[error("the signing key is not the transaction's signer")]
    WrongKey,
}

/// A transaction as it travels: exact signed bytes and signature. Untrusted until verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    pub bytes: Vec<u8>,
    pub signature: Signature,
}

impl SignedTx {
    /// Decodes and checks the signature.
    pub fn verify(&self) -> Result<Tx, TxError> {
        if self.bytes.len() > MAX_TX_SIZE {
            return Err(TxError::TooLarge(self.bytes.len()));
        }
        let tx: Tx =
            postcard::from_bytes(&self.bytes).map_err(|e| TxError::Malformed(e.to_string()))?;
        if postcard::to_stdvec(&tx).expect("serializing to a Vec cannot fail") != self.bytes {
            return Err(TxError::NotCanonical);
        }
        sign::verify(
            &tx.signer,
            Domain::Transaction,
            &self.bytes,
            &self.signature,
        )?;
        Ok(tx)
    }

    /// The transaction's id: BLAKE3 of its signed bytes.
    pub fn id(&self) -> [u8; 32] {
        *blake3::hash(&self.bytes).as_bytes()
    }
}
