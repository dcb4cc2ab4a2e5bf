//! What a notification tells. Each kind has one template, is muted for e-mail on its own, and
//! is stored under its name.

/// A kind of notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Welcome,
    OrderPaid,
    PaymentFailed,
    OrderShipped,
    OrderDelivered,
    OrderRefunded,
    OrderCancelled,
}

impl Kind {
    /// Every kind, in contract order.
    pub const ALL: [Kind; 7] = [
        Kind::Welcome,
        Kind::OrderPaid,
        Kind::PaymentFailed,
        Kind::OrderShipped,
        Kind::OrderDelivered,
        Kind::OrderRefunded,
        Kind::OrderCancelled,
    ];

    /// The stored name, which is also the template's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Welcome => "welcome",
            Kind::OrderPaid => "order_paid",
            Kind::PaymentFailed => "payment_failed",
            Kind::OrderShipped => "order_shipped",
            Kind::OrderDelivered => "order_delivered",
            Kind::OrderRefunded => "order_refunded",
            Kind::OrderCancelled => "order_cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// How a notification reached its user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Only in the inbox (its kind is muted for e-mail, or the user has no address).
    InApp,
    /// An e-mail was queued for it too.
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::InApp => "in_app",
            Channel::Email => "email",
        }
    }

    pub fn parse(name: &str) -> Option<Channel> {
        match name {
            "in_app" => Some(Channel::InApp),
            "email" => Some(Channel::Email),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("order_lost"), None);
        for channel in [Channel::InApp, Channel::Email] {
            assert_eq!(Channel::parse(channel.as_str()), Some(channel));
        }
    }
}
