//! A small account aggregate shared by the aggregate and snapshot tests. Its state records
//! an order-sensitive digest of every event, so a load that skipped, repeated or reordered
//! an event differs from a full replay.

#![allow(dead_code, reason = "each test file uses a different part")]

use serde::{Deserialize, Serialize};

use annal::Aggregate;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub open: bool,
    pub balance: u64,
    pub events: u64,
    pub digest: u64,
}

#[derive(Debug, Clone)]
pub enum Cmd {
    Open,
    Deposit(u64),
    Withdraw(u64),
    /// Emits `n` deposits of 1 in one append.
    Burst(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Opened,
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    NotOpen,
    AlreadyOpen,
    Insufficient,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Rejected {}

impl Aggregate for Account {
    type Command = Cmd;
    type Event = Event;
    type Error = Rejected;
    const CATEGORY: &'static str = "account";
    const SNAPSHOT_SCHEMA: &'static str = "test.account/1";

    fn handle(&self, cmd: &Cmd) -> Result<Vec<Event>, Rejected> {
        match (cmd, self.open) {
            (Cmd::Open, false) => Ok(vec![Event::Opened]),
            (Cmd::Open, true) => Err(Rejected::AlreadyOpen),
            (_, false) => Err(Rejected::NotOpen),
            (Cmd::Deposit(a), true) => Ok(vec![Event::Deposited { amount: *a }]),
            (Cmd::Withdraw(a), true) if *a > self.balance => Err(Rejected::Insufficient),
            (Cmd::Withdraw(a), true) => Ok(vec![Event::Withdrawn { amount: *a }]),
            (Cmd::Burst(n), true) => Ok((0..*n).map(|_| Event::Deposited { amount: 1 }).collect()),
        }
    }

    fn apply(&mut self, e: &Event) {
        let code = match e {
            Event::Opened => {
                self.open = true;
                1
            }
            Event::Deposited { amount } => {
                self.balance += amount;
                2 + amount * 4
            }
            Event::Withdrawn { amount } => {
                self.balance -= amount;
                3 + amount * 4
            }
        };
        self.events += 1;
        self.digest = self.digest.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(code);
    }
}
