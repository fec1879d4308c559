// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.37;

/// @title Atlas test token
/// @notice A plain ERC-20 with a capped faucet, for tests and local chains only. In production the
/// escrow takes any ERC-20 (for example BTT on BTTC); nothing in the escrow depends on this one.
/// @dev Amounts are `uint256` as ERC-20 requires; the escrow's own bookkeeping is `uint128`, like
/// the Rust rules' `Amount`.
contract TestToken {
    string public constant name = "Atlas Test Token";
    string public constant symbol = "ATT";
    uint8 public constant decimals = 18;

    /// @notice Largest amount one `mint` call may create, the devnet `Faucet` cap's counterpart.
    uint256 public immutable mintCap;

    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    error MintCap(uint256 cap);
    error InsufficientBalance(uint256 balance, uint256 needed);
    error InsufficientAllowance(uint256 allowance, uint256 needed);
    error ZeroAddress();

    constructor(uint256 cap) {
        mintCap = cap;
    }

    /// @notice Creates `amount` tokens for `to`; anyone may call it, up to `mintCap` a call.
    function mint(address to, uint256 amount) external {
        if (amount > mintCap) revert MintCap(mintCap);
        if (to == address(0)) revert ZeroAddress();
        totalSupply += amount;
        unchecked {
            // Cannot overflow: totalSupply bounds every balance.
            balanceOf[to] += amount;
        }
        emit Transfer(address(0), to, amount);
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _move(msg.sender, to, amount);
        return true;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < amount) revert InsufficientAllowance(allowed, amount);
            unchecked {
                allowance[from][msg.sender] = allowed - amount;
            }
        }
        _move(from, to, amount);
        return true;
    }

    function _move(address from, address to, uint256 amount) private {
        if (to == address(0)) revert ZeroAddress();
        uint256 balance = balanceOf[from];
        if (balance < amount) revert InsufficientBalance(balance, amount);
        unchecked {
            balanceOf[from] = balance - amount;
            balanceOf[to] += amount;
        }
        emit Transfer(from, to, amount);
    }
}
