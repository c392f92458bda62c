//! The records of the topics, byte for byte.
//!
//! Every record starts with its format version, so a reader tells a newer format (wait for the
//! upgrade: an acknowledged command is never skipped) from a record it will never read. Where a
//! request's [`Origin`] is in a record it comes right after the version, so a record whose
//! command cannot be read can still be answered to the request that sent it.
//!
//! | topic | writer | record |
//! |---|---|---|
//! | `<prefix>.accounts` | ingest | [`ACCOUNTS_FORMAT`], 0, origin, command, hold price |
//! | `<prefix>.accounts` | matching stage | [`ACCOUNTS_FORMAT`], 1, [`Settlement`] |
//! | `<prefix>.commands` | funds stage | [`COMMAND_FORMAT`], origin, command, [`Funding`] |
//! | `<prefix>.ledger` | funds stage | [`LEDGER_FORMAT`], [`FundsRecord`] |
//!
//! Command records of formats 1 and 2 (an ingest older than the funds stage wrote them straight
//! to the commands topic) carry no funding; the matching stage applies them as they were.
//!
//! A record is written in the oldest format that can carry it: a mass cancel (a command older
//! builds cannot read) in command format 4 and accounts format 2, everything else as before. An
//! older stage then waits for its upgrade at the first mass cancel instead of rejecting it, and
//! a rolling upgrade that has not sent one yet needs no order.

use super::super::{JournalEntry, LogPosition, Origin, Result, encode, legacy};
use oms_core::{Command, EventRecord, Funding, LedgerEntry, Price, TransferOutcome};
use serde::{Deserialize, Serialize};

/// The newest format of command records this build writes (4: format 3 that may hold a mass
/// cancel). It reads formats 1 to 4 (1 with [`legacy`]).
pub const COMMAND_FORMAT: u8 = 4;

/// The newest format of accounts-topic records this build writes (2: format 1 that may hold a
/// mass cancel).
pub const ACCOUNTS_FORMAT: u8 = 2;

/// Whether a command needs the newest formats: only a mass cancel does.
fn newest_only(command: &Command) -> bool {
    matches!(command.action, oms_core::Action::CancelAll(_))
}

/// The format of ledger-topic records this build writes.
pub const LEDGER_FORMAT: u8 = 1;

/// An accounts-topic record's kind, after its version.
const CLIENT_COMMAND: u8 = 0;
const SETTLEMENT: u8 = 1;

/// A funded command as a command record (format 3, or 4 for a mass cancel).
pub fn encode_command(entry: &JournalEntry, funding: &Funding) -> Result<Vec<u8>> {
    let format = if newest_only(&entry.command) { 4 } else { 3 };
    let mut bytes = vec![format];
    bytes.extend(encode("command origin", &entry.origin)?);
    bytes.extend(encode("command", &entry.command)?);
    bytes.extend(encode("funding", funding)?);
    Ok(bytes)
}

/// What a record holds, as far as this build can read it.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// Something to apply.
    Record(T),
    /// A newer format: a newer build wrote it, and only a newer one may apply it.
    Newer {
        /// Its format version.
        version: u8,
    },
    /// A record of a known format whose command cannot be read: it is rejected, and its
    /// request is told so.
    Unreadable {
        /// The request that wrote it.
        origin: Origin,
        /// Why it cannot be read.
        reason: String,
    },
    /// Not one of our records (nothing readable, no origin): nothing to answer.
    Foreign {
        /// Why it cannot be read.
        reason: String,
    },
}

/// A command for the matching stage: the entry, and what funds decided (none for the formats
/// before the funds stage).
#[derive(Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// The command and the request that sent it.
    pub entry: JournalEntry,
    /// Funds' decision; `None` for records of formats 1 and 2.
    pub funding: Option<Funding>,
}

/// Reads a command record.
pub fn decode_command(bytes: &[u8]) -> Decoded<Forwarded> {
    let (version, origin, rest) = match head(bytes, COMMAND_FORMAT) {
        Ok(head) => head,
        Err(decoded) => return decoded,
    };
    let command = match version {
        1 => legacy::command(rest),
        _ => postcard::take_from_bytes::<Command>(rest),
    };
    let read = command.and_then(|(command, rest)| match version {
        3 | 4 => postcard::take_from_bytes::<Funding>(rest)
            .map(|(funding, rest)| ((command, Some(funding)), rest)),
        _ => Ok(((command, None), rest)),
    });
    finish(origin, read, |(command, funding), origin| Forwarded {
        entry: JournalEntry { command, origin },
        funding,
    })
}

/// The version and origin at the start of a record, or what to make of a record without them.
fn head<T>(bytes: &[u8], newest: u8) -> std::result::Result<(u8, Origin, &[u8]), Decoded<T>> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(Decoded::Foreign {
            reason: "empty record".into(),
        });
    };
    if version > newest {
        return Err(Decoded::Newer { version });
    }
    if version == 0 {
        return Err(Decoded::Foreign {
            reason: format!("unknown format {version}"),
        });
    }
    match postcard::take_from_bytes::<Origin>(rest) {
        Ok((origin, rest)) => Ok((version, origin, rest)),
        Err(error) => Err(Decoded::Foreign {
            reason: format!("origin: {error}"),
        }),
    }
}

/// The record read after its origin: whole, with nothing after it, or unreadable.
fn finish<R, T>(
    origin: Origin,
    read: postcard::Result<(R, &[u8])>,
    make: impl FnOnce(R, Origin) -> T,
) -> Decoded<T> {
    match read {
        Ok((value, [])) => Decoded::Record(make(value, origin)),
        Ok((_, trailing)) => Decoded::Unreadable {
            origin,
            reason: format!("{} bytes after the command", trailing.len()),
        },
        Err(error) => Decoded::Unreadable {
            origin,
            reason: error.to_string(),
        },
    }
}

/// What one command of the matching stage did to the orders of one funds partition's
/// accounts: the events that partition settles, in book order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The command's place in the commands topic.
    pub position: LogPosition,
    /// The events to settle.
    pub records: Vec<EventRecord>,
}

/// An accounts-topic record: a client's command, or a settlement from the matching stage.
#[derive(Debug, PartialEq, Eq)]
pub enum AccountRecord {
    /// A client's command, with the price an ingest stamped on a market buy by quantity (the
    /// matching stage's last published limit; see [`crate::store::redis`]).
    Command {
        /// The command and the request that sent it.
        entry: Box<JournalEntry>,
        /// What a market buy by quantity is held at.
        hold_price: Option<Price>,
    },
    /// Events to settle.
    Settle(Settlement),
}

/// A client's command as an accounts-topic record.
pub fn encode_client_command(entry: &JournalEntry, hold_price: Option<Price>) -> Result<Vec<u8>> {
    let format = if newest_only(&entry.command) { 2 } else { 1 };
    let mut bytes = vec![format, CLIENT_COMMAND];
    bytes.extend(encode("command origin", &entry.origin)?);
    bytes.extend(encode("command", &entry.command)?);
    bytes.extend(encode("hold price", &hold_price)?);
    Ok(bytes)
}

/// A settlement as an accounts-topic record.
pub fn encode_settlement(settlement: &Settlement) -> Result<Vec<u8>> {
    let mut bytes = vec![1, SETTLEMENT];
    bytes.extend(encode("settlement", settlement)?);
    Ok(bytes)
}

/// Reads an accounts-topic record.
pub fn decode_account_record(bytes: &[u8]) -> Decoded<AccountRecord> {
    match bytes {
        [] => Decoded::Foreign {
            reason: "empty record".into(),
        },
        [version, ..] if *version > ACCOUNTS_FORMAT => Decoded::Newer { version: *version },
        [1 | 2, SETTLEMENT, rest @ ..] => match postcard::from_bytes(rest) {
            Ok(settlement) => Decoded::Record(AccountRecord::Settle(settlement)),
            // Only a matching stage writes these, and no request waits on one.
            Err(error) => Decoded::Foreign {
                reason: format!("settlement: {error}"),
            },
        },
        [1 | 2, CLIENT_COMMAND, rest @ ..] => {
            let (origin, rest) = match postcard::take_from_bytes::<Origin>(rest) {
                Ok(read) => read,
                Err(error) => {
                    return Decoded::Foreign {
                        reason: format!("origin: {error}"),
                    };
                }
            };
            let read = postcard::take_from_bytes::<Command>(rest).and_then(|(command, rest)| {
                postcard::take_from_bytes::<Option<Price>>(rest)
                    .map(|(hold_price, rest)| ((command, hold_price), rest))
            });
            finish(origin, read, |(command, hold_price), origin| {
                AccountRecord::Command {
                    entry: Box::new(JournalEntry { command, origin }),
                    hold_price,
                }
            })
        }
        _ => Decoded::Foreign {
            reason: "not an accounts record".into(),
        },
    }
}

/// What the funds stage did with one accounts-topic record: the payload of the ledger topic,
/// which the projector folds into balances, the ledger and transfers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsRecord {
    /// The record's place in the accounts topic.
    pub position: LogPosition,
    /// Balance changes, in ledger order.
    pub ledger: Vec<LedgerEntry>,
    /// The deposit or withdrawal decided, if the record was one.
    pub transfer: Option<TransferOutcome>,
}

/// A funds record as a ledger-topic record.
pub fn encode_funds_record(record: &FundsRecord) -> Result<Vec<u8>> {
    let mut bytes = vec![LEDGER_FORMAT];
    bytes.extend(encode("funds record", record)?);
    Ok(bytes)
}

/// Reads a ledger-topic record.
pub fn decode_funds_record(bytes: &[u8]) -> Decoded<FundsRecord> {
    match bytes {
        [] => Decoded::Foreign {
            reason: "empty record".into(),
        },
        [version, ..] if *version > LEDGER_FORMAT => Decoded::Newer { version: *version },
        [LEDGER_FORMAT, rest @ ..] => match postcard::from_bytes(rest) {
            Ok(record) => Decoded::Record(record),
            Err(error) => Decoded::Foreign {
                reason: error.to_string(),
            },
        },
        _ => Decoded::Foreign {
            reason: "not a ledger record".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_core::{Action, CancelOrder, OrderId, Reject, RejectReason, Timestamp};

    fn entry() -> JournalEntry {
        JournalEntry {
            command: Command {
                ts: Timestamp(7),
                action: Action::Cancel(CancelOrder {
                    order_id: OrderId(42),
                    account: "alice".into(),
                    symbol: "BTC-USDT".into(),
                }),
            },
            origin: Origin {
                principal: "desk".into(),
                key: "k-1".into(),
                fingerprint: "f".into(),
            },
        }
    }

    #[test]
    fn funded_commands_round_trip() {
        for funding in [
            Funding::PASS,
            Funding::Funded {
                cap: Some(Price(9)),
            },
            Funding::Refused(Reject::new(RejectReason::InsufficientFunds)),
        ] {
            let bytes = encode_command(&entry(), &funding).unwrap();
            assert_eq!(bytes[0], 3, "what older matching stages read");
            assert_eq!(
                decode_command(&bytes),
                Decoded::Record(Forwarded {
                    entry: entry(),
                    funding: Some(funding),
                })
            );
        }
    }

    #[test]
    fn a_mass_cancel_is_written_in_the_newest_formats_only() {
        let mut mass = entry();
        mass.command.action = Action::CancelAll(oms_core::CancelAll {
            account: "alice".into(),
            symbol: None,
        });
        let bytes = encode_command(&mass, &Funding::PASS).unwrap();
        assert_eq!(bytes[0], COMMAND_FORMAT);
        assert_eq!(
            decode_command(&bytes),
            Decoded::Record(Forwarded {
                entry: mass.clone(),
                funding: Some(Funding::PASS),
            })
        );
        let bytes = encode_client_command(&mass, None).unwrap();
        assert_eq!(bytes[0], ACCOUNTS_FORMAT);
        assert_eq!(
            decode_account_record(&bytes),
            Decoded::Record(AccountRecord::Command {
                entry: Box::new(mass),
                hold_price: None,
            })
        );
        assert_eq!(encode_client_command(&entry(), None).unwrap()[0], 1);
    }

    #[test]
    fn accounts_records_round_trip_and_say_what_they_cannot_read() {
        let bytes = encode_client_command(&entry(), Some(Price(5))).unwrap();
        assert_eq!(
            decode_account_record(&bytes),
            Decoded::Record(AccountRecord::Command {
                entry: Box::new(entry()),
                hold_price: Some(Price(5)),
            })
        );
        let settlement = Settlement {
            position: LogPosition {
                partition: 1,
                offset: 2,
            },
            records: Vec::new(),
        };
        let settled = encode_settlement(&settlement).unwrap();
        assert_eq!(
            decode_account_record(&settled),
            Decoded::Record(AccountRecord::Settle(settlement))
        );
        let mut newer = bytes.clone();
        newer[0] = ACCOUNTS_FORMAT + 1;
        assert_eq!(
            decode_account_record(&newer),
            Decoded::Newer {
                version: ACCOUNTS_FORMAT + 1
            }
        );
        // origin readable, the command cut short: answered as unreadable
        let origin_len = encode("o", &entry().origin).unwrap().len();
        assert!(matches!(
            decode_account_record(&bytes[..2 + origin_len + 2]),
            Decoded::Unreadable { origin, .. } if origin == entry().origin
        ));
        for foreign in [&[][..], &[0u8, 1][..], &[ACCOUNTS_FORMAT, 9, 1][..]] {
            assert!(matches!(
                decode_account_record(foreign),
                Decoded::Foreign { .. }
            ));
        }
    }

    #[test]
    fn ledger_records_round_trip() {
        let record = FundsRecord {
            position: LogPosition {
                partition: 0,
                offset: 3,
            },
            ledger: Vec::new(),
            transfer: None,
        };
        let bytes = encode_funds_record(&record).unwrap();
        assert_eq!(decode_funds_record(&bytes), Decoded::Record(record));
        assert_eq!(
            decode_funds_record(&[LEDGER_FORMAT + 1]),
            Decoded::Newer {
                version: LEDGER_FORMAT + 1
            }
        );
    }
}
