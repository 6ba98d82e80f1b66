//! How events and aggregate state become bytes: the [`Codec`] trait, and [`JsonCodec`]
//! (feature `serde`).

use super::Aggregate;
use crate::error::Result;

/// An event as the codec encodes it: its type name (without schema version: the repository
/// adds that, format-spec.md §13.2) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// The event type name; must not contain `@`.
    pub event_type: String,
    /// The event data.
    pub data: Vec<u8>,
}

/// Turns an aggregate's events and state into bytes and back. Bring your own to use another
/// encoding; [`JsonCodec`] is the default.
///
/// Implementations must be deterministic inverses: `decode_event` of `encode_event`'s output
/// gives an equal event, and `decode_state` of `encode_state`'s output an equal state.
pub trait Codec<A: Aggregate>: Send + Sync + 'static {
    /// Encodes an event.
    fn encode_event(&self, event: &A::Event) -> Result<EncodedEvent>;
    /// Decodes an event of the current schema version of `event_type`.
    fn decode_event(&self, event_type: &str, data: &[u8]) -> Result<A::Event>;
    /// Encodes the state for a snapshot.
    fn encode_state(&self, state: &A) -> Result<Vec<u8>>;
    /// Decodes a snapshot's state.
    fn decode_state(&self, bytes: &[u8]) -> Result<A>;
}

/// JSON through serde (feature `serde`): the state as a JSON value; an event as serde's
/// externally tagged enum form split in two, the variant name as the event type and its
/// content as the data (`Deposited { amount: 5 }` is type `Deposited`, data
/// `{"amount":5}`; a unit variant's data is `null`).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

#[cfg(feature = "serde")]
mod json {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::{Aggregate, Codec, EncodedEvent, JsonCodec};
    use crate::error::{Error, Result};

    fn codec_error(e: impl std::fmt::Display) -> Error {
        Error::Codec { reason: e.to_string() }
    }

    impl<A> Codec<A> for JsonCodec
    where
        A: Aggregate + Serialize + DeserializeOwned,
        A::Event: Serialize + DeserializeOwned,
    {
        fn encode_event(&self, event: &A::Event) -> Result<EncodedEvent> {
            match serde_json::to_value(event).map_err(codec_error)? {
                serde_json::Value::String(variant) => {
                    Ok(EncodedEvent { event_type: variant, data: b"null".to_vec() })
                }
                serde_json::Value::Object(map) if map.len() == 1 => {
                    let Some((variant, content)) = map.into_iter().next() else {
                        return Err(codec_error("empty event object"));
                    };
                    let data = serde_json::to_vec(&content).map_err(codec_error)?;
                    Ok(EncodedEvent { event_type: variant, data })
                }
                _ => Err(codec_error(
                    "JsonCodec needs events that serialize as an externally tagged enum",
                )),
            }
        }

        fn decode_event(&self, event_type: &str, data: &[u8]) -> Result<A::Event> {
            let content: serde_json::Value = serde_json::from_slice(data).map_err(codec_error)?;
            let value = if content.is_null() {
                serde_json::Value::String(event_type.to_owned())
            } else {
                let mut map = serde_json::Map::with_capacity(1);
                map.insert(event_type.to_owned(), content);
                serde_json::Value::Object(map)
            };
            serde_json::from_value(value).map_err(codec_error)
        }

        fn encode_state(&self, state: &A) -> Result<Vec<u8>> {
            serde_json::to_vec(state).map_err(codec_error)
        }

        fn decode_state(&self, bytes: &[u8]) -> Result<A> {
            serde_json::from_slice(bytes).map_err(codec_error)
        }
    }
}
