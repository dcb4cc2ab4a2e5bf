//! The life cycle of a shipment: which transitions are allowed, which the courier simulator takes
//! on its own, and which order status each one implies.

/// Where a shipment is, as delivery.proto's `ShipmentStatus` defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShipmentStatus {
    /// Created with a carrier label; waiting for pick-up.
    LabelCreated,
    Pending,
    Packed,
    Shipped,
    InTransit,
    OutForDelivery,
    Delivered,
    Failed,
    Returned,
    Cancelled,
}

/// The order status a shipment's progress implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderUpdate {
    Shipped,
    Completed,
}

impl OrderUpdate {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shipped => "SHIPPED",
            Self::Completed => "COMPLETED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "SHIPPED" => Some(Self::Shipped),
            "COMPLETED" => Some(Self::Completed),
            _ => None,
        }
    }
}

/// What packing does to a shipment whose order was paid, by the status the shipment is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// Packed where it stands: a LABEL_CREATED shipment keeps its status (the courier's path has
    /// no packing state) and becomes due for the courier's pick-up.
    InPlace,
    /// Packed with a transition to this status (PENDING -> PACKED, the warehouse path).
    Transition(ShipmentStatus),
    /// It moved on without the warehouse (an admin packed it, handed it over, or more): there is
    /// nothing left to pack; it is only recorded fulfilled.
    MovedOn,
    /// Cancelled: nothing to pack, nothing recorded.
    Cancelled,
}

impl ShipmentStatus {
    pub const ALL: [Self; 10] = [
        Self::LabelCreated,
        Self::Pending,
        Self::Packed,
        Self::Shipped,
        Self::InTransit,
        Self::OutForDelivery,
        Self::Delivered,
        Self::Failed,
        Self::Returned,
        Self::Cancelled,
    ];

    /// The stored name, which is also the protobuf name without its prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LabelCreated => "LABEL_CREATED",
            Self::Pending => "PENDING",
            Self::Packed => "PACKED",
            Self::Shipped => "SHIPPED",
            Self::InTransit => "IN_TRANSIT",
            Self::OutForDelivery => "OUT_FOR_DELIVERY",
            Self::Delivered => "DELIVERED",
            Self::Failed => "FAILED",
            Self::Returned => "RETURNED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// DELIVERED, RETURNED and CANCELLED end a shipment: nothing follows them.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Delivered | Self::Returned | Self::Cancelled)
    }

    /// Whether a shipment in this status may move to `next` (the table in delivery.proto).
    pub fn can_become(self, next: Self) -> bool {
        use ShipmentStatus::*;
        matches!(
            (self, next),
            (
                LabelCreated,
                InTransit | Pending | Packed | Shipped | Cancelled
            ) | (Pending, Packed | Cancelled)
                | (Packed, Shipped | Cancelled)
                | (Shipped, InTransit)
                | (InTransit, InTransit | OutForDelivery | Returned)
                | (OutForDelivery, Delivered | Failed)
                | (Failed, OutForDelivery | Returned)
        )
    }

    /// The step the simulated courier takes from this status, if it takes one. The courier
    /// picks up labelled parcels once the packing station has fulfilled them (a shipment is
    /// due for the courier only from then on) or shipped ones, and carries them to the door
    /// (retrying a failed attempt); PENDING and PACKED are the warehouse path, which an admin
    /// continues.
    pub fn courier_next(self) -> Option<Self> {
        match self {
            Self::LabelCreated | Self::Shipped => Some(Self::InTransit),
            Self::InTransit => Some(Self::OutForDelivery),
            Self::OutForDelivery => Some(Self::Delivered),
            Self::Failed => Some(Self::OutForDelivery),
            _ => None,
        }
    }

    /// What the packing station does with a shipment in this status when its order.paid
    /// arrives.
    pub fn packing(self) -> Packing {
        match self {
            Self::LabelCreated => Packing::InPlace,
            Self::Pending => Packing::Transition(Self::Packed),
            Self::Cancelled => Packing::Cancelled,
            Self::Packed
            | Self::Shipped
            | Self::InTransit
            | Self::OutForDelivery
            | Self::Delivered
            | Self::Failed
            | Self::Returned => Packing::MovedOn,
        }
    }

    /// The order status reaching this status implies: SHIPPED once the parcel has left
    /// (SHIPPED, IN_TRANSIT), COMPLETED once it is DELIVERED.
    pub fn order_update(self) -> Option<OrderUpdate> {
        match self {
            Self::Shipped | Self::InTransit => Some(OrderUpdate::Shipped),
            Self::Delivered => Some(OrderUpdate::Completed),
            _ => None,
        }
    }
}

impl std::fmt::Display for ShipmentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ShipmentStatus::*;
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in ShipmentStatus::ALL {
            assert_eq!(ShipmentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ShipmentStatus::parse("LOST"), None);
    }

    #[test]
    fn the_courier_path_is_allowed() {
        assert!(LabelCreated.can_become(InTransit));
        assert!(InTransit.can_become(OutForDelivery));
        assert!(OutForDelivery.can_become(Delivered));
        let mut status = LabelCreated;
        let mut path = vec![status];
        while let Some(next) = status.courier_next() {
            assert!(status.can_become(next), "{status} -> {next}");
            status = next;
            path.push(status);
        }
        assert_eq!(path, [LabelCreated, InTransit, OutForDelivery, Delivered]);
    }

    #[test]
    fn every_courier_step_is_an_allowed_transition() {
        for status in ShipmentStatus::ALL {
            if let Some(next) = status.courier_next() {
                assert!(status.can_become(next), "{status} -> {next}");
            }
        }
    }

    #[test]
    fn illegal_transitions_are_refused() {
        assert!(!LabelCreated.can_become(Delivered));
        assert!(!InTransit.can_become(Cancelled));
        assert!(!OutForDelivery.can_become(OutForDelivery));
        assert!(!Pending.can_become(InTransit));
        assert!(!Shipped.can_become(Cancelled));
        assert!(!LabelCreated.can_become(LabelCreated));
        for terminal in [Delivered, Returned, Cancelled] {
            assert!(terminal.is_terminal());
            for next in ShipmentStatus::ALL {
                assert!(!terminal.can_become(next), "{terminal} -> {next}");
            }
        }
    }

    #[test]
    fn cancelling_is_allowed_only_before_pick_up() {
        let cancellable: Vec<_> = ShipmentStatus::ALL
            .into_iter()
            .filter(|s| s.can_become(Cancelled))
            .collect();
        assert_eq!(cancellable, [LabelCreated, Pending, Packed]);
    }

    #[test]
    fn packing_follows_the_transition_table() {
        assert_eq!(LabelCreated.packing(), Packing::InPlace);
        assert_eq!(Pending.packing(), Packing::Transition(Packed));
        assert_eq!(Cancelled.packing(), Packing::Cancelled);
        for status in ShipmentStatus::ALL {
            match status.packing() {
                Packing::Transition(to) => assert!(status.can_become(to), "{status} -> {to}"),
                // Packed in place means the courier picks it up next.
                Packing::InPlace => assert!(status.courier_next().is_some(), "{status}"),
                Packing::MovedOn => assert!(!matches!(status, LabelCreated | Pending)),
                Packing::Cancelled => assert!(status.is_terminal()),
            }
        }
    }

    #[test]
    fn the_order_follows_the_parcel() {
        assert_eq!(InTransit.order_update(), Some(OrderUpdate::Shipped));
        assert_eq!(Shipped.order_update(), Some(OrderUpdate::Shipped));
        assert_eq!(Delivered.order_update(), Some(OrderUpdate::Completed));
        assert_eq!(OutForDelivery.order_update(), None);
        assert_eq!(Cancelled.order_update(), None);
    }
}
