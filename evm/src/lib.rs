//! # atlas-evm
//!
//! Atlas's Solidity contracts, compiled into `contracts/out` by `scripts/contracts.sh`, run here in
//! an in-process EVM (revm) on the paris rules, the EVM version they are compiled for. Tests deploy
//! them, call them with ABI-encoded arguments ([`abi`]) and compare what they answer with the Rust
//! rules; benchmarks read the gas of each call.

use revm::context::{BlockEnv, CfgEnv, Context, TxEnv};
use revm::context_interface::result::{ExecutionResult, Output};
use revm::database::{CacheDB, EmptyDB};
use revm::handler::{MainnetContext, MainnetEvm};
use revm::primitives::hardfork::SpecId;
use revm::primitives::{Bytes, TxKind, U256};
use revm::{ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext};
use std::path::{Path, PathBuf};

pub use revm::primitives::Address;

pub mod abi;

/// Gas a single transaction may use: a block's worth on the chains Atlas targets.
pub const TX_GAS_LIMIT: u64 = 30_000_000;

type Evm = MainnetEvm<MainnetContext<CacheDB<EmptyDB>>>;

/// What a call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It returned these bytes.
    Returned(Vec<u8>),
    /// It reverted with these bytes (a custom error's selector and arguments, or empty).
    Reverted(Vec<u8>),
    /// It stopped the EVM (out of gas, bad opcode, ...).
    Halted(String),
}

/// A call's outcome and the gas the transaction used (after refunds), as a receipt shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub outcome: Outcome,
    pub gas: u64,
}

impl Receipt {
    /// The returned bytes; panics with the outcome if the call did not return.
    pub fn returned(&self) -> &[u8] {
        match &self.outcome {
            Outcome::Returned(b) => b,
            other => panic!("call did not return: {other:?}"),
        }
    }
}

/// Why a contract could not be loaded or deployed.
#[derive(Debug)]
pub enum HostError {
    Artifact(PathBuf, String),
    Deploy(String, String),
}

impl std::error::Error for HostError {}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Artifact(path, why) => write!(f, "artifact {}: {why}", path.display()),
            HostError::Deploy(name, why) => write!(f, "deploying {name}: {why}"),
        }
    }
}

/// The folder of compiled contracts in this repository.
pub fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts/out")
}

/// The creation code of contract `name` from `contracts/out/<name>.json`.
pub fn creation_code(name: &str) -> Result<Vec<u8>, HostError> {
    let path = artifacts_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| HostError::Artifact(path.clone(), e.to_string()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| HostError::Artifact(path.clone(), e.to_string()))?;
    let hex_code = json["bytecode"]
        .as_str()
        .ok_or_else(|| HostError::Artifact(path.clone(), "no bytecode".into()))?;
    hex::decode(hex_code.trim_start_matches("0x"))
        .map_err(|e| HostError::Artifact(path, e.to_string()))
}

/// An EVM with an empty in-memory state, paris rules and free gas.
pub struct Host {
    evm: Evm,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Default for Host {
    fn default() -> Self {
        Self::new()
    }
}

impl Host {
    pub fn new() -> Self {
        let mut cfg = CfgEnv::new_with_spec(SpecId::MERGE);
        cfg.disable_nonce_check = true;
        let evm = Context::mainnet()
            .with_db(CacheDB::<EmptyDB>::default())
            .with_cfg(cfg)
            .modify_block_chained(|b: &mut BlockEnv| {
                b.number = U256::from(1);
                b.timestamp = U256::from(1_700_000_000u64);
                b.gas_limit = TX_GAS_LIMIT;
                b.basefee = 0;
            })
            .build_mainnet();
        Self { evm }
    }

    /// Deploys contract `name` from `contracts/out` with ABI-encoded constructor `args`.
    pub fn deploy(&mut self, from: Address, name: &str, args: &[u8]) -> Result<Address, HostError> {
        let mut code = creation_code(name)?;
        code.extend_from_slice(args);
        let tx = TxEnv::builder()
            .caller(from)
            .kind(TxKind::Create)
            .data(Bytes::from(code))
            .gas_limit(TX_GAS_LIMIT)
            .build()
            .map_err(|e| HostError::Deploy(name.into(), format!("{e:?}")))?;
        match self.evm.transact_commit(tx) {
            Ok(ExecutionResult::Success {
                output: Output::Create(_, Some(address)),
                ..
            }) => Ok(address),
            Ok(other) => Err(HostError::Deploy(name.into(), format!("{other:?}"))),
            Err(e) => Err(HostError::Deploy(name.into(), format!("{e:?}"))),
        }
    }

    /// Runs a transaction calling `to` with `data` and keeps its effects.
    pub fn transact(&mut self, from: Address, to: Address, data: Vec<u8>) -> Receipt {
        self.run(from, to, data, true)
    }

    /// Calls `to` with `data` and discards its effects, as `eth_call` does.
    pub fn call(&mut self, from: Address, to: Address, data: Vec<u8>) -> Receipt {
        self.run(from, to, data, false)
    }

    fn run(&mut self, from: Address, to: Address, data: Vec<u8>, commit: bool) -> Receipt {
        let tx = TxEnv::builder()
            .caller(from)
            .kind(TxKind::Call(to))
            .data(Bytes::from(data))
            .gas_limit(TX_GAS_LIMIT)
            .build()
            .expect("a plain call transaction is well formed");
        let result = if commit {
            self.evm.transact_commit(tx)
        } else {
            self.evm.transact(tx).map(|r| r.result)
        };
        match result {
            Ok(ExecutionResult::Success { output, gas, .. }) => Receipt {
                outcome: Outcome::Returned(output.into_data().to_vec()),
                gas: gas.tx_gas_used(),
            },
            Ok(ExecutionResult::Revert { output, gas, .. }) => Receipt {
                outcome: Outcome::Reverted(output.to_vec()),
                gas: gas.tx_gas_used(),
            },
            Ok(ExecutionResult::Halt { reason, gas, .. }) => Receipt {
                outcome: Outcome::Halted(format!("{reason:?}")),
                gas: gas.tx_gas_used(),
            },
            Err(e) => Receipt {
                outcome: Outcome::Halted(format!("refused: {e:?}")),
                gas: 0,
            },
        }
    }
}

/// A deterministic account address for tests: 19 zero bytes then `n`.
pub fn account(n: u8) -> Address {
    let mut a = [0u8; 20];
    a[19] = n;
    Address::from(a)
}
