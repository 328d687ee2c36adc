//! How many sessions of one tenant hold a server connection for good (transaction mode,
//! after creating session state): capped by `pool.max_pinned_per_tenant`, so that one tenant
//! cannot take every pooled connection away from the others with `SET` or `LISTEN`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Pinned sessions by tenant.
#[derive(Debug, Default)]
pub struct PinRegistry {
    by_tenant: Mutex<HashMap<String, usize>>,
}

/// One pinned session; dropping it frees its place.
#[derive(Debug)]
pub struct Pin {
    registry: Arc<PinRegistry>,
    tenant: String,
}

impl PinRegistry {
    /// A place for one more pinned session of `tenant`, unless it has `cap` already (0: no cap).
    pub fn try_pin(self: &Arc<Self>, tenant: &str, cap: usize) -> Option<Pin> {
        let mut by_tenant = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        let count = by_tenant.entry(tenant.to_string()).or_default();
        if cap > 0 && *count >= cap {
            return None;
        }
        *count += 1;
        Some(Pin { registry: self.clone(), tenant: tenant.to_string() })
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut by_tenant = self.registry.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = by_tenant.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                by_tenant.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_at_most_cap_pins_and_its_places_come_back() {
        let pins = Arc::new(PinRegistry::default());
        let a = pins.try_pin("1", 2).expect("first");
        let _b = pins.try_pin("1", 2).expect("second");
        assert!(pins.try_pin("1", 2).is_none(), "third of tenant 1");
        let _c = pins.try_pin("2", 2).expect("another tenant is not affected");
        drop(a);
        assert!(pins.try_pin("1", 2).is_some(), "a place came back");
        assert!(pins.try_pin("1", 0).is_some(), "no cap");
    }
}
