//! Protobuf timestamps and UTC times, both ways. Services send their domain times as
//! `google.protobuf.Timestamp`; the gateway turns them back into the times its JSON carries.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

/// A UTC time as a protobuf timestamp.
pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        // Sub-second nanos are below 2·10⁹ even in a leap second, so this always fits.
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp as a UTC time, `None` when it is out of chrono's range. Negative nanos
/// (not valid protobuf) count as zero.
pub fn from_timestamp(timestamp: Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(
        timestamp.seconds,
        u32::try_from(timestamp.nanos).unwrap_or(0),
    )
}

/// An optional protobuf timestamp as a UTC time (`None` when absent or out of range).
pub fn optional_time(timestamp: Option<Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.and_then(from_timestamp)
}

/// An optional protobuf timestamp as a UTC time, the epoch when absent or out of range.
pub fn time_or_epoch(timestamp: Option<Timestamp>) -> DateTime<Utc> {
    optional_time(timestamp).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_with_their_nanoseconds() {
        let time = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let ts = timestamp(time);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_789));
        assert_eq!(from_timestamp(ts), Some(time));
    }

    #[test]
    fn absent_or_unrepresentable_timestamps() {
        assert_eq!(optional_time(None), None);
        assert_eq!(time_or_epoch(None), DateTime::<Utc>::UNIX_EPOCH);
        let too_late = Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(optional_time(Some(too_late)), None);
        assert_eq!(time_or_epoch(Some(too_late)), DateTime::<Utc>::UNIX_EPOCH);
        let negative_nanos = Timestamp {
            seconds: 10,
            nanos: -5,
        };
        assert_eq!(
            from_timestamp(negative_nanos),
            DateTime::from_timestamp(10, 0)
        );
    }
}
