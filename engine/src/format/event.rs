//! The body of an event record: the log record payload written by the streams layer
//! (format-spec.md §11).
//!
//! The record's CRC (format-spec.md §4.2) already covers these bytes; this layer checks the
//! structure: known version, reserved bytes zero, lengths that add up exactly, and UTF-8 ids
//! within their limits. A stream version is not stored: it is the event's position among the
//! events of its stream in log order, so it can never disagree with the log.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{DecodeError, prefix};
use crate::limits::{EVENT_HEADER_BYTES, EVENT_TYPE_BYTES_MAX, STREAM_ID_BYTES_MAX};

/// The event body version this build writes and reads.
pub const EVENT_VERSION: u8 = 1;

const OFF_VERSION: usize = 0;
const OFF_FLAGS: usize = OFF_VERSION + 1;
const OFF_STREAM_LEN: usize = OFF_FLAGS + 1;
const OFF_TYPE_LEN: usize = OFF_STREAM_LEN + 2;
const OFF_RESERVED: usize = OFF_TYPE_LEN + 2;
const OFF_EVENT_ID: usize = OFF_RESERVED + 2;
const OFF_META_LEN: usize = OFF_EVENT_ID + 16;
const OFF_DATA_LEN: usize = OFF_META_LEN + 4;
const _: () = assert!(OFF_DATA_LEN + 4 == EVENT_HEADER_BYTES);

/// A decoded event body, borrowing from the record payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBody<'a> {
    /// The stream (aggregate) the event belongs to.
    pub stream_id: &'a str,
    /// The event's type name.
    pub event_type: &'a str,
    /// The event's unique id (a UUID).
    pub event_id: [u8; 16],
    /// Caller-defined metadata bytes.
    pub metadata: &'a [u8],
    /// The event's data bytes.
    pub data: &'a [u8],
}

/// An event body whose layout is checked but whose ids are not yet checked as UTF-8
/// ([`EventBody::decode_layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEventBody<'a> {
    /// The stream id's bytes.
    pub stream_id: &'a [u8],
    /// The event type's bytes.
    pub event_type: &'a [u8],
    /// The event's unique id (a UUID).
    pub event_id: [u8; 16],
    /// Caller-defined metadata bytes.
    pub metadata: &'a [u8],
    /// The event's data bytes.
    pub data: &'a [u8],
}

/// The error of a stream id that is not UTF-8 (format-spec.md §11).
pub(crate) const STREAM_ID_NOT_UTF8: DecodeError =
    DecodeError::Inconsistent("stream id is not UTF-8");

/// The error of an event type that is not UTF-8 (format-spec.md §11).
pub(crate) const EVENT_TYPE_NOT_UTF8: DecodeError =
    DecodeError::Inconsistent("event type is not UTF-8");

impl EventBody<'_> {
    /// Bytes this body encodes to.
    pub fn encoded_len(&self) -> usize {
        EVENT_HEADER_BYTES
            + self.stream_id.len()
            + self.event_type.len()
            + self.metadata.len()
            + self.data.len()
    }

    /// Appends the encoded body to `out`. The caller has checked the id lengths against
    /// their limits and the total against the record limit (asserted).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(!self.stream_id.is_empty() && self.stream_id.len() <= STREAM_ID_BYTES_MAX);
        assert!(!self.event_type.is_empty() && self.event_type.len() <= EVENT_TYPE_BYTES_MAX);
        assert!(
            u32::try_from(self.metadata.len()).is_ok() && u32::try_from(self.data.len()).is_ok()
        );
        let mut h = [0u8; EVENT_HEADER_BYTES];
        h[OFF_VERSION] = EVENT_VERSION;
        LE::write_u16(&mut h[OFF_STREAM_LEN..OFF_TYPE_LEN], self.stream_id.len() as u16);
        LE::write_u16(&mut h[OFF_TYPE_LEN..OFF_RESERVED], self.event_type.len() as u16);
        h[OFF_EVENT_ID..OFF_META_LEN].copy_from_slice(&self.event_id);
        LE::write_u32(&mut h[OFF_META_LEN..OFF_DATA_LEN], self.metadata.len() as u32);
        LE::write_u32(&mut h[OFF_DATA_LEN..], self.data.len() as u32);
        out.reserve(self.encoded_len());
        out.extend_from_slice(&h);
        out.extend_from_slice(self.stream_id.as_bytes());
        out.extend_from_slice(self.event_type.as_bytes());
        out.extend_from_slice(self.metadata);
        out.extend_from_slice(self.data);
    }

    /// Decodes and validates a body; `buf` must be exactly the record payload.
    pub fn decode(buf: &[u8]) -> Result<EventBody<'_>, DecodeError> {
        let raw = EventBody::decode_layout(buf)?;
        Ok(EventBody {
            stream_id: std::str::from_utf8(raw.stream_id).map_err(|_| STREAM_ID_NOT_UTF8)?,
            event_type: std::str::from_utf8(raw.event_type).map_err(|_| EVENT_TYPE_NOT_UTF8)?,
            event_id: raw.event_id,
            metadata: raw.metadata,
            data: raw.data,
        })
    }

    /// Every check of [`EventBody::decode`] but the UTF-8 of the two ids, which the caller
    /// must still make: for a reader that turns the ids into shared strings sliced out of
    /// the payload, whose conversion checks them anyway (`Store`'s reads).
    #[inline]
    pub fn decode_layout(buf: &[u8]) -> Result<RawEventBody<'_>, DecodeError> {
        let h = prefix::<EVENT_HEADER_BYTES>(buf)?;
        if h[OFF_VERSION] != EVENT_VERSION {
            return Err(DecodeError::UnsupportedVersion(h[OFF_VERSION].into()));
        }
        if h[OFF_FLAGS] != 0 || h[OFF_RESERVED..OFF_EVENT_ID].iter().any(|&b| b != 0) {
            return Err(DecodeError::ReservedNonZero);
        }
        let stream_len = usize::from(LE::read_u16(&h[OFF_STREAM_LEN..OFF_TYPE_LEN]));
        let type_len = usize::from(LE::read_u16(&h[OFF_TYPE_LEN..OFF_RESERVED]));
        let meta_len = LE::read_u32(&h[OFF_META_LEN..OFF_DATA_LEN]) as usize;
        let data_len = LE::read_u32(&h[OFF_DATA_LEN..]) as usize;
        if stream_len == 0 || stream_len > STREAM_ID_BYTES_MAX {
            return Err(DecodeError::OutOfBounds {
                field: "stream_id_bytes",
                value: stream_len as u64,
                max: STREAM_ID_BYTES_MAX as u64,
            });
        }
        if type_len == 0 || type_len > EVENT_TYPE_BYTES_MAX {
            return Err(DecodeError::OutOfBounds {
                field: "event_type_bytes",
                value: type_len as u64,
                max: EVENT_TYPE_BYTES_MAX as u64,
            });
        }
        // Lengths are at most 2 * u16 + 2 * u32: their sum cannot overflow a u64.
        let total = EVENT_HEADER_BYTES as u64
            + stream_len as u64
            + type_len as u64
            + meta_len as u64
            + data_len as u64;
        if total != buf.len() as u64 {
            return Err(DecodeError::Inconsistent("event lengths do not add up to the record"));
        }
        let rest = buf.get(EVENT_HEADER_BYTES..).unwrap_or_default();
        let (stream_id, rest) = rest.split_at(stream_len);
        let (event_type, rest) = rest.split_at(type_len);
        let (metadata, data) = rest.split_at(meta_len);
        let mut event_id = [0u8; 16];
        event_id.copy_from_slice(&h[OFF_EVENT_ID..OFF_META_LEN]);
        Ok(RawEventBody { stream_id, event_type, event_id, metadata, data })
    }

    /// Reads only the stream id of an encoded body, validating what it reads (for index
    /// rebuilds, which need nothing else).
    pub fn decode_stream_id(buf: &[u8]) -> Result<&str, DecodeError> {
        EventBody::decode(buf).map(|b| b.stream_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventBody<'static> {
        EventBody {
            stream_id: "order-42",
            event_type: "OrderPlaced",
            event_id: [9; 16],
            metadata: b"{\"correlation_id\":\"x\"}",
            data: b"{\"total\":12}",
        }
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        sample().encode_into(&mut out);
        assert_eq!(out.len(), sample().encoded_len());
        assert_eq!(EventBody::decode(&out), Ok(sample()));
    }

    #[test]
    fn every_truncation_and_length_change_is_rejected() {
        let mut good = Vec::new();
        sample().encode_into(&mut good);
        for n in 0..good.len() {
            assert!(EventBody::decode(&good[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(EventBody::decode(&longer).is_err());
        for field in [OFF_STREAM_LEN, OFF_TYPE_LEN, OFF_META_LEN, OFF_DATA_LEN] {
            let mut b = good.clone();
            b[field] ^= 0x40;
            assert!(EventBody::decode(&b).is_err(), "changed length at {field} decoded");
        }
    }

    #[test]
    fn invalid_utf8_and_empty_ids_are_rejected() {
        let mut good = Vec::new();
        sample().encode_into(&mut good);
        let mut bad = good.clone();
        bad[EVENT_HEADER_BYTES] = 0xFF;
        assert!(EventBody::decode(&bad).is_err());
        let mut empty = good;
        LE::write_u16(&mut empty[OFF_STREAM_LEN..OFF_TYPE_LEN], 0);
        assert!(EventBody::decode(&empty).is_err());
    }
}
