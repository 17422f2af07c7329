//! The router's account of itself: events for the control side (asks,
//! audit lines), with the audit rate limit per caller.

use super::*;

impl Router {
    pub(super) fn emit(&mut self, event: Event) {
        // Asks are never dropped: they are few (MAX_PENDING_ASKS per
        // compartment), and a lost one would leave its caller waiting.
        if self.events.len() >= MAX_EVENTS && !matches!(event, Event::Ask { .. }) {
            self.events_dropped += 1;
            if self.events_dropped.is_power_of_two() {
                log::error!("the control side is not reading: {} asks or audit lines dropped", self.events_dropped);
            }
            return;
        }
        self.events.push_back(event);
    }

    pub(super) fn audit(&mut self, line: String) {
        self.emit(Event::Audit(line));
    }

    /// Audits a decision on a call from `cid`, within its rate.
    pub(super) fn audit_decision(&mut self, cid: u64, line: String, now: Instant) {
        self.close_audit_window(cid, now);
        let Some(compartment) = self.compartments.get_mut(&cid) else { return };
        compartment.audit_window.get_or_insert(now);
        if compartment.audited < AUDIT_BURST {
            compartment.audited += 1;
            self.audit(line);
        } else {
            compartment.audit_skipped += 1;
        }
    }

    /// Ends `cid`'s audit window once it is over, reporting what it left
    /// out.
    pub(super) fn close_audit_window(&mut self, cid: u64, now: Instant) {
        let Some(compartment) = self.compartments.get_mut(&cid) else { return };
        let over = compartment.audit_window.is_some_and(|at| now.saturating_duration_since(at) >= AUDIT_WINDOW);
        if !over {
            return;
        }
        let skipped = std::mem::take(&mut compartment.audit_skipped);
        compartment.audited = 0;
        compartment.audit_window = None;
        if skipped > 0 {
            let name = compartment.name.clone();
            self.audit(format!("limit {name}: {skipped} more decisions on its calls not logged"));
        }
    }
}
