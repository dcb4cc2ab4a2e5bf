//! Plain domain types of the payment service, validated by parsing. Generated protobuf types are
//! converted into these at the gRPC edge and never travel further in.

mod card;
mod money;
mod payment;

pub use self::card::{Brand, Card, Scenario, luhn_valid};
pub use self::money::{Currency, MAX_AMOUNT_MINOR, Money, parse_amount};
pub use self::payment::{
    ChargeInput, Failure, FailureReason, Payment, PaymentStatus, Refund, RefundInput, RefundReason,
    RefundStatus, parse_uuid,
};
