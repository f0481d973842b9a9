//! The agent's local state: the services and checks registered with this agent (through
//! `/v1/agent/*` or config files). The agent owns them; anti-entropy ([`sync`]) makes the catalog
//! match them.

pub mod sync;

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::Notify;

use cairn_types::structs::{HealthCheck, NodeService};

use crate::checks::CheckDef;

/// A check with the definition its runner uses.
#[derive(Debug, Clone)]
pub struct LocalCheck {
    pub check: HealthCheck,
    pub def: CheckDef,
}

#[derive(Default)]
struct Inner {
    services: BTreeMap<String, NodeService>,
    checks: BTreeMap<String, LocalCheck>,
    /// Bumped on every change: blocking agent endpoints and the sync loop watch it.
    version: u64,
}

/// Limits: an agent holds at most this many services and checks (each), so a runaway registrar
/// cannot exhaust memory.
pub const MAX_LOCAL_SERVICES: usize = 20_000;
pub const MAX_LOCAL_CHECKS: usize = 40_000;

#[derive(Default)]
pub struct LocalState {
    inner: Mutex<Inner>,
    /// Wakes the anti-entropy loop.
    pub changed: Notify,
    /// Wakes blocking readers of local state (`/v1/agent/service/:id?hash=`).
    pub watchers: tokio::sync::watch::Sender<u64>,
}

impl LocalState {
    pub fn new() -> Self {
        Self::default()
    }

    fn touch(&self, g: &mut Inner) {
        g.version += 1;
        self.changed.notify_one();
        self.watchers.send_replace(g.version);
    }

    pub fn add_service(&self, svc: NodeService) -> Result<(), String> {
        let mut g = self.inner.lock().expect("local");
        if !g.services.contains_key(&svc.id) && g.services.len() >= MAX_LOCAL_SERVICES {
            return Err(format!("too many services registered with this agent (limit {MAX_LOCAL_SERVICES})"));
        }
        g.services.insert(svc.id.clone(), svc);
        self.touch(&mut g);
        Ok(())
    }

    /// Removes the service and every check bound to it. Returns false if it was not registered.
    pub fn remove_service(&self, id: &str) -> bool {
        let mut g = self.inner.lock().expect("local");
        if g.services.remove(id).is_none() {
            return false;
        }
        g.checks.retain(|_, c| c.check.service_id != id);
        self.touch(&mut g);
        true
    }

    pub fn add_check(&self, c: LocalCheck) -> Result<(), String> {
        let mut g = self.inner.lock().expect("local");
        if !c.check.service_id.is_empty() && !g.services.contains_key(&c.check.service_id) {
            return Err(format!("ServiceID {:?} does not exist", c.check.service_id));
        }
        if !g.checks.contains_key(&c.check.check_id) && g.checks.len() >= MAX_LOCAL_CHECKS {
            return Err(format!("too many checks registered with this agent (limit {MAX_LOCAL_CHECKS})"));
        }
        let mut c = c;
        if let Some(s) = g.services.get(&c.check.service_id) {
            c.check.service_name = s.service.clone();
            c.check.service_tags = s.tags.clone();
        }
        // Re-registering keeps the current status unless the definition sets one.
        g.checks.insert(c.check.check_id.clone(), c);
        self.touch(&mut g);
        Ok(())
    }

    pub fn remove_check(&self, id: &str) -> bool {
        let mut g = self.inner.lock().expect("local");
        let found = g.checks.remove(id).is_some();
        if found {
            self.touch(&mut g);
        }
        found
    }

    /// Sets a check's status and output; returns false for an unknown check. No-op updates do not
    /// count as changes (no catalog write, no wake-up).
    pub fn update_check(&self, id: &str, status: &str, output: &str) -> bool {
        let mut g = self.inner.lock().expect("local");
        let Some(c) = g.checks.get_mut(id) else { return false };
        if c.check.status == status && c.check.output == output {
            return true;
        }
        c.check.status = status.to_string();
        c.check.output = output.to_string();
        self.touch(&mut g);
        true
    }

    pub fn services(&self) -> BTreeMap<String, NodeService> {
        self.inner.lock().expect("local").services.clone()
    }

    pub fn service(&self, id: &str) -> Option<NodeService> {
        self.inner.lock().expect("local").services.get(id).cloned()
    }

    pub fn checks(&self) -> BTreeMap<String, LocalCheck> {
        self.inner.lock().expect("local").checks.clone()
    }

    pub fn check(&self, id: &str) -> Option<LocalCheck> {
        self.inner.lock().expect("local").checks.get(id).cloned()
    }

    /// Checks bound to one service.
    pub fn service_checks(&self, id: &str) -> Vec<HealthCheck> {
        self.inner
            .lock()
            .expect("local")
            .checks
            .values()
            .filter(|c| c.check.service_id == id)
            .map(|c| c.check.clone())
            .collect()
    }

    pub fn version(&self) -> u64 {
        self.inner.lock().expect("local").version
    }
}
