//! Legs: adding, finding, resetting and forgetting the connections
//! between the router and guests, and the packets that close them.

use super::*;

impl Router {
    pub(super) fn mark(&mut self, key: LegKey) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        if leg.queued {
            return;
        }
        let Some(compartment) = self.compartments.get_mut(&key.cid) else { return };
        leg.queued = true;
        compartment.ready.push_back(key);
        self.wakeups.insert(key.cid);
    }

    pub(super) fn answer_rst(&mut self, cid: u64, header: &Header) {
        let Some(compartment) = self.compartments.get_mut(&cid) else { return };
        if compartment.loose.len() >= MAX_LOOSE {
            return;
        }
        let key = LegKey { cid, guest_port: header.src_port, router_port: header.dst_port };
        compartment.loose.push_back(router_header(key, op::RST));
        self.wakeups.insert(cid);
    }

    pub(super) fn add_leg(&mut self, key: LegKey, leg: Leg) -> bool {
        let Some(compartment) = self.compartments.get_mut(&key.cid) else { return false };
        if compartment.legs >= MAX_CONNECTIONS || self.legs.contains_key(&key) {
            return false;
        }
        compartment.legs += 1;
        self.legs.insert(key, leg);
        true
    }

    /// Forgets `key` without telling its guest; its peer is reset.
    pub(super) fn drop_leg(&mut self, key: LegKey) {
        let Some(leg) = self.forget(key) else { return };
        if let Some(peer) = leg.peer {
            self.peer_gone(peer, leg.side);
        }
    }

    /// Forgets the gone leg `key` once its bytes reached `peer`.
    pub(super) fn forget_gone(&mut self, key: LegKey, peer: LegKey) {
        self.forget(key);
        if let Some(peer_leg) = self.legs.get_mut(&peer) {
            peer_leg.peer = None;
        }
    }

    /// Removes `key` from the tables; returns it.
    pub(super) fn forget(&mut self, key: LegKey) -> Option<Leg> {
        let leg = self.legs.remove(&key)?;
        if let Some(compartment) = self.compartments.get_mut(&key.cid) {
            compartment.legs = compartment.legs.saturating_sub(1);
        }
        if let Side::Caller(Phase::Asking(id)) = leg.side {
            self.remove_ask(id);
        }
        Some(leg)
    }

    /// The other leg of `key`'s call went away abruptly (`gone_side` was its
    /// side).
    pub(super) fn peer_gone(&mut self, key: LegKey, gone_side: Side) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        leg.peer = None;
        if let (Side::Caller(Phase::Connecting), Side::Callee { connected: false }) = (leg.side, gone_side) {
            self.fail_call(key, reply::UNREACHABLE, "the callee went away");
        } else {
            self.reset(key);
        }
    }

    /// Resets `key`: the guest gets `RST`, nothing else.
    pub(super) fn reset(&mut self, key: LegKey) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        leg.rst_due = true;
        leg.rx.clear();
        leg.line_out.clear();
        leg.in_done = true;
        leg.out_done = true;
        let peer = leg.peer.take();
        self.mark(key);
        if let Some(peer) = peer {
            let side = self.legs.get(&key).map(|leg| leg.side);
            if let Some(side) = side {
                self.peer_gone(peer, side);
            }
        }
    }

    /// Ends a call that did not go through: `ERR code message`, then
    /// `SHUTDOWN` both ways, then the caller's leg is forgotten.
    pub(super) fn fail_call(&mut self, key: LegKey, code: &str, message: &str) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        if let Side::Caller(Phase::Asking(id)) = leg.side {
            leg.side = Side::Caller(Phase::Finished);
            self.remove_ask(id);
        }
        let Some(leg) = self.legs.get_mut(&key) else { return };
        leg.side = Side::Caller(Phase::Finished);
        leg.line_out = format!("ERR {code} {message}\n").into_bytes().into();
        let dropped = leg.rx.len();
        leg.rx.clear();
        leg.consume(dropped);
        leg.in_done = true;
        leg.out_done = true;
        leg.shut_owed |= shutdown::SEND | shutdown::RCV;
        leg.peer = None;
        self.mark(key);
    }
}
