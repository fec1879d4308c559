//! Why the rules refuse a transaction.

use super::*;

/// Why a transaction was refused. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum EscrowError {
    #[error("nonce {got} is not the account's next nonce {want}")]
    BadNonce { got: u64, want: u64 },
    #[error("balance {have} is less than the {need} needed")]
    InsufficientBalance { have: Amount, need: Amount },
    #[error("the faucet is disabled on this ledger")]
    FaucetDisabled,
    #[error("faucet gives at most {cap} per request")]
    FaucetCap { cap: Amount },
    #[error("already registered as a provider")]
    AlreadyProvider,
    #[error("not a registered provider")]
    NotProvider,
    #[error("provider is exiting")]
    ProviderExiting,
    #[error("unknown deal")]
    UnknownDeal,
    #[error("deal has ended")]
    DealEnded,
    #[error("slot {0} does not exist in this deal")]
    UnknownSlot(u16),
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("a deal needs one provider per slot: {want} slots, {got} providers")]
    ProviderCount { got: usize, want: usize },
    #[error("a provider may hold only one slot of an object")]
    DuplicateProvider,
    #[error("provider {0} is not registered")]
    UnknownProvider(PublicKey),
    #[error("provider {provider} lacks capacity for a {need}-byte slot")]
    NoCapacity { provider: PublicKey, need: u64 },
    #[error("provider {provider} asks {price} per GiB-epoch, above the maximum {max}")]
    TooExpensive {
        provider: PublicKey,
        price: Amount,
        max: Amount,
    },
    #[error("a deal must last at least one epoch")]
    NoEpochs,
    #[error("slot is not in a state that allows this ({0:?})")]
    WrongSlotState(SlotStatus),
    #[error("only the slot's holder may do this")]
    NotHolder,
    #[error("only the deal's creator may do this")]
    NotCreator,
    #[error("collateral pool {have} is less than the {need} this slot locks")]
    InsufficientCollateral { have: Amount, need: Amount },
    #[error("proof is for epoch {got}, the ledger is in epoch {current}")]
    WrongEpoch { got: u64, current: u64 },
    #[error("slot is not due a proof before epoch {0}")]
    NotYetDue(u64),
    #[error("a proof for this slot and epoch is already recorded")]
    AlreadyProven,
    #[error("invalid proof: {0}")]
    InvalidProof(String),
    #[error("this provider lost this slot by failing it and may not claim it back")]
    FailedThisSlot,
    #[error("arithmetic overflow")]
    Overflow,
    #[error("the transaction was signed for another chain")]
    WrongChain,
    #[error("the registered peer id is not the signing key's own")]
    PeerIdMismatch,
    #[error("addresses refused: {0}")]
    BadAddresses(String),
    #[error("collateral {have} is below the {need} a provider must register with")]
    BondTooSmall { have: Amount, need: Amount },
    #[error("the provider already holds a slot of this object in a live deal")]
    HoldsObject,
    #[error("this transaction belongs to the other settlement rules than this ledger runs")]
    Retired,
    #[error("a commit for epoch {0} is already recorded")]
    AlreadyCommitted(u64),
    #[error("the reveal does not open the previous commit")]
    BadReveal,
    #[error("epoch {epoch} can no longer be reported (the ledger is in epoch {current})")]
    WindowClosed { epoch: u64, current: u64 },
    #[error("epoch {0} is not over yet")]
    NotOver(u64),
    #[error("the provider committed for epoch {0}")]
    NotMissed(u64),
    #[error("a missed commit for epoch {0} is already marked")]
    AlreadyMarked(u64),
    #[error("the slot did not owe samples from this provider in epoch {0}")]
    NotDue(u64),
    #[error("epochs up to {up_to} are not final before epoch {final_at}")]
    NotFinal { up_to: u64, final_at: u64 },
    #[error("the provider has demands open")]
    DemandOpen,
    #[error("no bounty is due to the signer for this slot (yet)")]
    NoBounty,
    #[error("the provider has not announced its exit")]
    NotExiting,
    #[error("the provider still has tenures or collateral in slots")]
    TenuresOpen,
}

/// Checks a provider's addresses: few, short, printable multiaddr text without a `/p2p/` part
/// (the ledger knows the peer id; dialers add it).
pub(super) fn check_addrs(addrs: &[String]) -> Result<(), EscrowError> {
    if addrs.len() > MAX_PROVIDER_ADDRS {
        return Err(EscrowError::BadAddresses("more than 8 addresses".into()));
    }
    for a in addrs {
        if a.len() > MAX_ADDR_LEN {
            return Err(EscrowError::BadAddresses(
                "an address is over 128 bytes".into(),
            ));
        }
        if !a.starts_with('/') || !a.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(EscrowError::BadAddresses(
                "an address is not multiaddr text".into(),
            ));
        }
        if a.contains("/p2p/") {
            return Err(EscrowError::BadAddresses(
                "an address names a peer id (leave /p2p/ out)".into(),
            ));
        }
    }
    Ok(())
}
