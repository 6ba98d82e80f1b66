//! The bank domain on annal's command side: accounts are aggregates (open, deposit, withdraw
//! with an insufficient-funds rule), and a transfer is a process across two accounts, driven
//! by a process manager that keeps its own progress in a `transfer` aggregate, so an
//! interrupted transfer is resumed, step by step, exactly once.
//!
//! One file, shared: the `bank` example (`main.rs` beside it) and `annal demo`
//! (tools/src/demo.rs, through `#[path]`) both compile it as a module. It depends only on
//! `annal` and `serde`. Each user calls a different part of it, hence `allow(dead_code)`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annal::{Aggregate, ExecuteError, Repository, RepositoryOptions, Store};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// Accounts

/// An account's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub owner: Option<String>,
    pub balance: u64,
    /// Transfer steps applied to this account (`debit:<id>`, `credit:<id>`,
    /// `refund:<id>`), so a retried step changes nothing.
    pub steps: BTreeSet<String>,
}

/// What an account is asked to do. A `step` names the transfer step a command belongs to.
#[derive(Debug, Clone)]
pub enum AccountCommand {
    Open { owner: String },
    Deposit { amount: u64, step: Option<String> },
    Withdraw { amount: u64, step: Option<String> },
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: u64, step: Option<String> },
    Withdrawn { amount: u64, step: Option<String> },
}

/// Why an account refused a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountError {
    AlreadyOpen,
    NotOpen,
    ZeroAmount,
    InsufficientFunds { balance: u64, requested: u64 },
}

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountError::AlreadyOpen => f.write_str("the account is open already"),
            AccountError::NotOpen => f.write_str("no such account"),
            AccountError::ZeroAmount => f.write_str("the amount must be positive"),
            AccountError::InsufficientFunds { balance, requested } => {
                write!(f, "insufficient funds: balance {balance}, requested {requested}")
            }
        }
    }
}

impl std::error::Error for AccountError {}

impl Aggregate for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    const CATEGORY: &'static str = "account";
    const SNAPSHOT_SCHEMA: &'static str = "bank.account/1";

    fn handle(&self, cmd: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        let done = |step: &Option<String>| step.as_ref().is_some_and(|s| self.steps.contains(s));
        match cmd {
            AccountCommand::Open { .. } if self.owner.is_some() => Err(AccountError::AlreadyOpen),
            AccountCommand::Open { owner } => {
                Ok(vec![AccountEvent::Opened { owner: owner.clone() }])
            }
            _ if self.owner.is_none() => Err(AccountError::NotOpen),
            AccountCommand::Deposit { step, .. } | AccountCommand::Withdraw { step, .. }
                if done(step) =>
            {
                Ok(Vec::new())
            }
            AccountCommand::Deposit { amount: 0, .. }
            | AccountCommand::Withdraw { amount: 0, .. } => Err(AccountError::ZeroAmount),
            AccountCommand::Deposit { amount, step } => {
                Ok(vec![AccountEvent::Deposited { amount: *amount, step: step.clone() }])
            }
            AccountCommand::Withdraw { amount, .. } if *amount > self.balance => {
                Err(AccountError::InsufficientFunds { balance: self.balance, requested: *amount })
            }
            AccountCommand::Withdraw { amount, step } => {
                Ok(vec![AccountEvent::Withdrawn { amount: *amount, step: step.clone() }])
            }
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount, step } => {
                self.balance += amount;
                self.steps.extend(step.clone());
            }
            AccountEvent::Withdrawn { amount, step } => {
                self.balance -= amount;
                self.steps.extend(step.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Transfers: the process manager's own state, one aggregate per transfer

/// Where a transfer is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    #[default]
    New,
    /// Asked for; nothing moved yet.
    Started,
    /// The source account was debited.
    Debited,
    /// The target account was credited: done.
    Completed,
    /// Refused, or undone (the debit refunded): done.
    Failed { reason: String },
}

/// A transfer's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub from: String,
    pub to: String,
    pub amount: u64,
    pub stage: Stage,
}

#[derive(Debug, Clone)]
pub enum TransferCommand {
    Start { from: String, to: String, amount: u64 },
    MarkDebited,
    MarkCompleted,
    MarkFailed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferEvent {
    Started { from: String, to: String, amount: u64 },
    Debited,
    Completed,
    Failed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// A transfer id reused for another transfer, or a step out of order.
    Conflict(String),
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let TransferError::Conflict(why) = self;
        write!(f, "transfer conflict: {why}")
    }
}

impl std::error::Error for TransferError {}

impl Aggregate for Transfer {
    type Command = TransferCommand;
    type Event = TransferEvent;
    type Error = TransferError;
    const CATEGORY: &'static str = "transfer";
    const SNAPSHOT_SCHEMA: &'static str = "bank.transfer/1";

    fn handle(&self, cmd: &TransferCommand) -> Result<Vec<TransferEvent>, TransferError> {
        use TransferCommand as C;
        let conflict = |why: &str| Err(TransferError::Conflict(why.to_owned()));
        match (cmd, &self.stage) {
            (C::Start { from, to, amount }, Stage::New) => Ok(vec![TransferEvent::Started {
                from: from.clone(),
                to: to.clone(),
                amount: *amount,
            }]),
            (C::Start { from, to, amount }, _) => {
                if (from, to, *amount) == (&self.from, &self.to, self.amount) {
                    Ok(Vec::new())
                } else {
                    conflict("the id names another transfer")
                }
            }
            (C::MarkDebited, Stage::Started) => Ok(vec![TransferEvent::Debited]),
            (C::MarkCompleted, Stage::Debited) => Ok(vec![TransferEvent::Completed]),
            (C::MarkFailed { reason }, Stage::Started | Stage::Debited) => {
                Ok(vec![TransferEvent::Failed { reason: reason.clone() }])
            }
            _ => conflict("step out of order"),
        }
    }

    fn apply(&mut self, event: &TransferEvent) {
        match event {
            TransferEvent::Started { from, to, amount } => {
                *self = Transfer {
                    from: from.clone(),
                    to: to.clone(),
                    amount: *amount,
                    stage: Stage::Started,
                };
            }
            TransferEvent::Debited => self.stage = Stage::Debited,
            TransferEvent::Completed => self.stage = Stage::Completed,
            TransferEvent::Failed { reason } => {
                self.stage = Stage::Failed { reason: reason.clone() }
            }
        }
    }

    /// A finished transfer never changes again: snapshot it.
    fn wants_snapshot(&self, _new: &[TransferEvent]) -> bool {
        matches!(self.stage, Stage::Completed | Stage::Failed { .. })
    }
}

// ---------------------------------------------------------------------------------------
// The process manager

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Moves money between accounts, one idempotent step at a time. Every step is keyed by the
/// transfer id, so running `drive` again after a crash (or concurrently) repeats nothing.
#[derive(Clone)]
pub struct Bank {
    pub accounts: Repository<Account>,
    pub transfers: Repository<Transfer>,
    /// Attempts beyond the first that the account steps of transfers needed because a
    /// concurrent writer appended to the same account first (optimistic concurrency).
    retries: Arc<AtomicU64>,
}

impl Bank {
    pub fn open(store: Store) -> Result<Bank, BoxError> {
        let opts = RepositoryOptions { snapshot_every: Some(50), ..RepositoryOptions::default() };
        Ok(Bank {
            accounts: Repository::new(store.clone(), opts.clone())?,
            transfers: Repository::new(store, opts)?,
            retries: Arc::default(),
        })
    }

    /// Starts transfer `id` and drives it to its end.
    pub fn transfer(&self, id: &str, from: &str, to: &str, amount: u64) -> Result<Stage, BoxError> {
        let start = TransferCommand::Start { from: from.into(), to: to.into(), amount };
        self.transfers.execute(id, &start)?;
        self.drive(id)
    }

    /// Runs the remaining steps of transfer `id`.
    pub fn drive(&self, id: &str) -> Result<Stage, BoxError> {
        loop {
            let t = self.transfers.load(id)?.state;
            let step = |kind: &str| Some(format!("{kind}:{id}"));
            let next = match &t.stage {
                Stage::New => return Err(format!("no transfer {id}").into()),
                Stage::Completed | Stage::Failed { .. } => return Ok(t.stage),
                Stage::Started => {
                    let debit = AccountCommand::Withdraw { amount: t.amount, step: step("debit") };
                    match self.accounts.execute(&t.from, &debit) {
                        Ok(done) => {
                            self.count_retries(done.attempts);
                            TransferCommand::MarkDebited
                        }
                        Err(ExecuteError::Rejected(why)) => {
                            TransferCommand::MarkFailed { reason: why.to_string() }
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Stage::Debited => {
                    let credit = AccountCommand::Deposit { amount: t.amount, step: step("credit") };
                    match self.accounts.execute(&t.to, &credit) {
                        Ok(done) => {
                            self.count_retries(done.attempts);
                            TransferCommand::MarkCompleted
                        }
                        Err(ExecuteError::Rejected(why)) => {
                            // Compensate: give the money back, then record the failure.
                            let refund =
                                AccountCommand::Deposit { amount: t.amount, step: step("refund") };
                            self.accounts.execute(&t.from, &refund)?;
                            TransferCommand::MarkFailed { reason: format!("refunded: {why}") }
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            self.transfers.execute(id, &next)?;
        }
    }

    /// Drives every unfinished transfer (after a restart).
    pub fn resume_all(&self) -> Result<usize, BoxError> {
        let mut resumed = 0;
        let prefix = format!("{}-", Transfer::CATEGORY);
        for stream in self.transfers.store().streams() {
            let Some(id) = stream.strip_prefix(&prefix) else { continue };
            let stage = self.transfers.load(id)?.state.stage;
            if matches!(stage, Stage::Started | Stage::Debited) {
                self.drive(id)?;
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    fn count_retries(&self, attempts: u32) {
        self.retries.fetch_add(u64::from(attempts.saturating_sub(1)), Ordering::Relaxed);
    }

    /// Retries the account steps of transfers needed so far (see the field).
    pub fn transfer_retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub fn balance(&self, account: &str) -> Result<u64, BoxError> {
        Ok(self.accounts.load(account)?.state.balance)
    }
}
