//! Upcasting: turning old shapes of event data into current ones on read, so aggregates (and
//! projections) only ever see current shapes.
//!
//! The schema version of an event lives in its event type (format-spec.md §13.2): `Name` is
//! version 1, `Name@v<N>` version N. An upcaster is registered for one (type name, version)
//! and produces the data of version + 1 (optionally under a new type name); the chain is
//! followed until no upcaster applies. Every step raises the version by one, so a chain ends
//! after at most as many steps as there are upcasters.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::error::{Error, Result};

type UpcastFn = dyn Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync;

struct Step {
    /// The type name of the result (the same name unless the step renames).
    to_type: String,
    f: Box<UpcastFn>,
}

/// The registered upcasters of one aggregate type (or projection).
#[derive(Default)]
pub struct Upcasters {
    /// type name -> version -> step to version + 1.
    steps: HashMap<String, HashMap<u32, Step>>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<(&str, u32)> = self
            .steps
            .iter()
            .flat_map(|(t, vs)| vs.keys().map(move |&v| (t.as_str(), v)))
            .collect();
        keys.sort_unstable();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}

/// Splits a stored event type into its name and schema version (format-spec.md §13.2).
pub fn split_event_type(stored: &str) -> (&str, u32) {
    if let Some((name, v)) = stored.rsplit_once("@v")
        && !name.is_empty()
        && !v.starts_with('0')
        && v.bytes().all(|b| b.is_ascii_digit())
        && let Ok(version) = v.parse::<u32>()
        && version >= 2
    {
        return (name, version);
    }
    (stored, 1)
}

/// The stored event type of `name` at schema `version` (format-spec.md §13.2). Fails if the
/// name is empty or holds `@`, which would make the stored form ambiguous.
pub fn versioned_event_type(name: &str, version: u32) -> Result<String> {
    if name.is_empty() || name.contains('@') {
        return Err(Error::InvalidEventType {
            reason: format!("{name:?}: event type names must be non-empty and free of '@'"),
        });
    }
    if version == 0 {
        return Err(Error::InvalidEventType { reason: format!("{name:?}: version 0") });
    }
    Ok(if version == 1 { name.to_owned() } else { format!("{name}@v{version}") })
}

impl Upcasters {
    /// No upcasters: every event is read as it is stored.
    pub fn new() -> Self {
        Upcasters::default()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Registers `f`, which turns the data of `event_type` at `from_version` into the data of
    /// `from_version + 1`. Fails if one is registered for that type and version already, or
    /// `from_version` is 0.
    pub fn register(
        &mut self,
        event_type: &str,
        from_version: u32,
        f: impl Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync + 'static,
    ) -> Result<&mut Self> {
        self.register_renaming(event_type, from_version, event_type, f)
    }

    /// Like [`Upcasters::register`], but the result has type name `to_type` (an event type
    /// that was renamed in version `from_version + 1`).
    pub fn register_renaming(
        &mut self,
        event_type: &str,
        from_version: u32,
        to_type: &str,
        f: impl Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync + 'static,
    ) -> Result<&mut Self> {
        versioned_event_type(event_type, from_version)?;
        versioned_event_type(to_type, from_version.saturating_add(1))?;
        if from_version == u32::MAX {
            return Err(Error::InvalidOptions("upcaster from the last version".into()));
        }
        let by_version = self.steps.entry(event_type.to_owned()).or_default();
        if by_version.contains_key(&from_version) {
            return Err(Error::InvalidOptions(format!(
                "an upcaster for {event_type} v{from_version} is registered already"
            )));
        }
        by_version.insert(from_version, Step { to_type: to_type.to_owned(), f: Box::new(f) });
        Ok(self)
    }

    /// Registers an upcaster over the data as a JSON value (feature `serde`).
    #[cfg(feature = "serde")]
    pub fn register_json(
        &mut self,
        event_type: &str,
        from_version: u32,
        f: impl Fn(serde_json::Value) -> Result<serde_json::Value> + Send + Sync + 'static,
    ) -> Result<&mut Self> {
        self.register(event_type, from_version, move |data| {
            let codec = |e: serde_json::Error| Error::Codec { reason: e.to_string() };
            let value = serde_json::from_slice(data).map_err(codec)?;
            serde_json::to_vec(&f(value)?).map_err(codec)
        })
    }

    /// Follows the chain from a stored event type and its data: returns the type name,
    /// schema version and data after the last upcaster that applied. Borrows when none did.
    pub fn upcast<'a>(&self, stored_type: &'a str, data: &'a [u8]) -> Result<Upcast<'a>> {
        let (name, version) = split_event_type(stored_type);
        let mut out =
            Upcast { event_type: Cow::Borrowed(name), version, data: Cow::Borrowed(data) };
        if self.steps.is_empty() {
            return Ok(out);
        }
        while let Some(step) =
            self.steps.get(out.event_type.as_ref()).and_then(|vs| vs.get(&out.version))
        {
            let next = (step.f)(&out.data).map_err(|e| Error::Codec {
                reason: format!("upcasting {} v{}: {e}", out.event_type, out.version),
            })?;
            out = Upcast {
                event_type: Cow::Owned(step.to_type.clone()),
                version: out.version + 1,
                data: Cow::Owned(next),
            };
        }
        Ok(out)
    }
}

/// An event after upcasting (see [`Upcasters::upcast`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upcast<'a> {
    /// Its type name, without version.
    pub event_type: Cow<'a, str>,
    /// Its schema version.
    pub version: u32,
    /// Its data, in that version's shape.
    pub data: Cow<'a, [u8]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_types_split_and_join() {
        assert_eq!(split_event_type("Deposited"), ("Deposited", 1));
        assert_eq!(split_event_type("Deposited@v2"), ("Deposited", 2));
        assert_eq!(split_event_type("Deposited@v12"), ("Deposited", 12));
        for odd in ["Deposited@v1", "Deposited@v02", "@v3", "x@v", "x@vv2", "x@v99999999999"] {
            assert_eq!(split_event_type(odd), (odd, 1), "{odd}");
        }
        assert_eq!(versioned_event_type("A", 1).unwrap(), "A");
        assert_eq!(versioned_event_type("A", 3).unwrap(), "A@v3");
        assert!(versioned_event_type("A@v3", 1).is_err());
        assert!(versioned_event_type("", 1).is_err());
    }

    #[test]
    fn duplicates_are_refused() {
        let mut u = Upcasters::new();
        u.register("A", 1, |d| Ok(d.to_vec())).unwrap();
        assert!(u.register("A", 1, |d| Ok(d.to_vec())).is_err());
        assert!(u.register("A", 0, |d| Ok(d.to_vec())).is_err());
    }
}
