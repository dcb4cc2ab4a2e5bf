//! What the simulated courier reports at each step of its path.

use crate::domain::{ShipmentStatus, Step};

/// The step the simulated courier of `carrier` takes from `status` for a parcel going to
/// `city`, with the location and note a real carrier's scan would carry; `None` when the
/// courier has nothing to do with a shipment in that status.
pub fn courier_step(status: ShipmentStatus, carrier: &str, city: &str) -> Option<Step> {
    let next = status.courier_next()?;
    let (location, note) = match (status, next) {
        (ShipmentStatus::Failed, _) => (
            format!("{city} delivery depot"),
            "Out for delivery again".to_owned(),
        ),
        (_, ShipmentStatus::InTransit) => (
            format!("{carrier} sorting centre"),
            format!("Picked up by {carrier}"),
        ),
        (_, ShipmentStatus::OutForDelivery) => (
            format!("{city} delivery depot"),
            "Out for delivery".to_owned(),
        ),
        (_, ShipmentStatus::Delivered) => {
            (city.to_owned(), "Delivered to the recipient".to_owned())
        }
        _ => (String::new(), String::new()),
    };
    Some(Step {
        status: next,
        location,
        note,
        carrier: None,
        tracking_number: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_courier_reports_each_step() {
        let step = courier_step(ShipmentStatus::LabelCreated, "SimPost", "Leipzig").unwrap();
        assert_eq!(step.status, ShipmentStatus::InTransit);
        assert_eq!(step.location, "SimPost sorting centre");
        let step = courier_step(ShipmentStatus::OutForDelivery, "SimPost", "Leipzig").unwrap();
        assert_eq!(step.status, ShipmentStatus::Delivered);
        assert_eq!(step.location, "Leipzig");
        assert!(courier_step(ShipmentStatus::Pending, "SimPost", "Leipzig").is_none());
        assert!(courier_step(ShipmentStatus::Delivered, "SimPost", "Leipzig").is_none());
    }
}
