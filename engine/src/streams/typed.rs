//! Typed helpers over serde (feature `serde`): JSON data, and the metadata convention for
//! correlation and causation ids.
//!
//! The convention (as EventStoreDB's): metadata is a JSON object; `$correlationId` names the
//! conversation or request an event belongs to, `$causationId` the event or command that
//! caused it. Both are strings, normally UUIDs. Other keys are the caller's.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::{NewEvent, RecordedEvent};
use crate::error::{Error, Result};

/// Metadata key of the correlation id.
pub const CORRELATION_ID: &str = "$correlationId";
/// Metadata key of the causation id.
pub const CAUSATION_ID: &str = "$causationId";

impl NewEvent {
    /// An event whose data is `value` as JSON.
    pub fn json<T: Serialize>(event_type: impl Into<String>, value: &T) -> Result<Self> {
        let data = serde_json::to_vec(value).map_err(|e| Error::Codec { reason: e.to_string() })?;
        Ok(NewEvent::new(event_type, data))
    }

    /// Sets the metadata to a JSON object holding the correlation and causation ids.
    pub fn with_correlation(mut self, correlation_id: Uuid, causation_id: Uuid) -> Self {
        let meta = serde_json::json!({
            CORRELATION_ID: correlation_id.to_string(),
            CAUSATION_ID: causation_id.to_string(),
        });
        self.metadata = Bytes::from(meta.to_string());
        self
    }

    /// An event caused by `cause`: it inherits `cause`'s correlation id (or takes `cause`'s
    /// event id when it has none) and names `cause`'s event id as its causation id.
    pub fn caused_by(self, cause: &RecordedEvent) -> Self {
        let correlation = cause.correlation_id().unwrap_or(cause.event_id);
        self.with_correlation(correlation, cause.event_id)
    }
}

impl RecordedEvent {
    /// The data decoded from JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.data).map_err(|e| Error::Codec { reason: e.to_string() })
    }

    fn metadata_id(&self, key: &str) -> Option<Uuid> {
        let meta: serde_json::Value = serde_json::from_slice(&self.metadata).ok()?;
        meta.get(key)?.as_str()?.parse().ok()
    }

    /// The `$correlationId` of the metadata, if there is one.
    pub fn correlation_id(&self) -> Option<Uuid> {
        self.metadata_id(CORRELATION_ID)
    }

    /// The `$causationId` of the metadata, if there is one.
    pub fn causation_id(&self) -> Option<Uuid> {
        self.metadata_id(CAUSATION_ID)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Deposited {
        amount: u64,
    }

    fn recorded(e: &NewEvent, id: Uuid) -> RecordedEvent {
        RecordedEvent {
            stream_id: "acc-1".into(),
            event_type: e.event_type.as_str().into(),
            event_id: id,
            version: 0,
            seq: 0,
            timestamp_us: 0,
            metadata: e.metadata.clone(),
            data: e.data.clone(),
        }
    }

    #[test]
    fn json_round_trip_and_correlation_chain() {
        let first = NewEvent::json("Deposited", &Deposited { amount: 5 }).unwrap();
        let first_id = Uuid::now_v7();
        let r1 = recorded(&first, first_id);
        assert_eq!(r1.json::<Deposited>().unwrap(), Deposited { amount: 5 });
        assert_eq!(r1.correlation_id(), None);
        let second = NewEvent::json("Deposited", &Deposited { amount: 7 }).unwrap().caused_by(&r1);
        let r2 = recorded(&second, Uuid::now_v7());
        assert_eq!(r2.correlation_id(), Some(first_id));
        assert_eq!(r2.causation_id(), Some(first_id));
        let third = NewEvent::new("X", "").caused_by(&r2);
        let r3 = recorded(&third, Uuid::now_v7());
        assert_eq!(r3.correlation_id(), Some(first_id), "correlation flows down the chain");
        assert_eq!(r3.causation_id(), Some(r2.event_id));
        assert!(matches!(r3.json::<Deposited>(), Err(Error::Codec { .. })));
    }
}
