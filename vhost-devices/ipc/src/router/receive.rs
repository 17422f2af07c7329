//! What a guest sends: each packet of a leg, by operation (request,
//! response, reset, shutdown, data).

use super::*;

impl Router {
    /// Takes one packet the guest of `cid` sent. Never fails: whatever is
    /// wrong with it is the guest's problem, dropped and logged once.
    pub fn receive(&mut self, cid: u64, header: &Header, payload: &[u8], now: Instant) {
        if !self.compartments.contains_key(&cid) {
            return;
        }
        if header.src_cid != cid {
            return self.bad_packet(cid, BadPacket::SourceCid);
        }
        if header.dst_cid != ROUTER_CID {
            return self.bad_packet(cid, BadPacket::DestinationCid);
        }
        let key = LegKey { cid, guest_port: header.src_port, router_port: header.dst_port };
        let known = self.legs.contains_key(&key);
        if header.kind != TYPE_STREAM {
            self.bad_packet(cid, BadPacket::Type);
            return self.abort(key, header);
        }
        if !(op::REQUEST..=op::CREDIT_REQUEST).contains(&{ header.op }) {
            self.bad_packet(cid, BadPacket::Operation);
            return self.abort(key, header);
        }
        let len = usize::try_from(header.len).unwrap_or(usize::MAX);
        if len != payload.len() || len > MAX_PAYLOAD || (header.op != op::RW && len != 0) {
            self.bad_packet(cid, BadPacket::Length);
            return self.abort(key, header);
        }
        if header.op == op::REQUEST {
            return self.on_request(key, header);
        }
        if !known {
            if header.op != op::RST {
                self.bad_packet(cid, BadPacket::NoConnection);
                self.answer_rst(cid, header);
            }
            return;
        }
        // Every header carries the guest's credit.
        if let Some(leg) = self.legs.get_mut(&key) {
            let more = header.fwd_cnt != leg.peer_fwd_cnt || header.buf_alloc != leg.peer_buf_alloc;
            leg.peer_buf_alloc = header.buf_alloc;
            leg.peer_fwd_cnt = header.fwd_cnt;
            if more {
                leg.credit_request_sent = false;
                self.mark(key);
            }
        }
        match header.op {
            op::RESPONSE => self.on_response(key),
            op::RST => self.on_rst(key),
            op::SHUTDOWN => self.on_shutdown(key, header.flags),
            op::RW => self.on_data(key, payload, now),
            op::CREDIT_REQUEST => {
                if let Some(leg) = self.legs.get_mut(&key) {
                    leg.credit_update_due = true;
                }
                self.mark(key);
            }
            // CREDIT_UPDATE: taken above.
            _ => {}
        }
    }

    /// A bad packet: reset its connection if it has one.
    pub(super) fn abort(&mut self, key: LegKey, header: &Header) {
        if self.legs.contains_key(&key) {
            self.reset(key);
        } else if header.op != op::RST {
            self.answer_rst(key.cid, header);
        }
    }

    pub(super) fn on_request(&mut self, key: LegKey, header: &Header) {
        if self.legs.contains_key(&key) {
            self.bad_packet(key.cid, BadPacket::Protocol);
            return self.reset(key);
        }
        if key.router_port != CALL_PORT {
            // Nobody listens there.
            return self.answer_rst(key.cid, header);
        }
        let mut leg = Leg::new(Side::Caller(Phase::Line), Some(header));
        leg.response_due = true;
        if self.add_leg(key, leg) {
            self.mark(key);
        } else {
            self.answer_rst(key.cid, header);
        }
    }

    pub(super) fn on_response(&mut self, key: LegKey) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        // A RESPONSE answers the router's REQUEST (virtio 5.10.6.3): one
        // sent before that REQUEST went out answers nothing, and the
        // caller must not hear OK from a callee that was never asked.
        let (Side::Callee { connected: false }, false) = (leg.side, leg.request_due) else {
            self.bad_packet(key.cid, BadPacket::Protocol);
            return self.reset(key);
        };
        leg.side = Side::Callee { connected: true };
        let caller = leg.peer;
        self.mark(key);
        if let Some(caller) = caller
            && let Some(caller_leg) = self.legs.get_mut(&caller)
        {
            caller_leg.side = Side::Caller(Phase::Joined);
            caller_leg.line_out.extend(b"OK\n");
            self.mark(caller);
            // Bytes the caller sent after its call line go on now.
            self.mark(key);
        }
    }

    pub(super) fn on_rst(&mut self, key: LegKey) {
        let refused = self.legs.get(&key).is_some_and(|leg| leg.side == Side::Callee { connected: false });
        if !refused {
            // After its SHUTDOWN(SEND), a guest's RST is the end of a
            // clean close (virtio 5.10.6.6): it forgot the connection, but
            // the bytes it sent before still go to its peer, then the end.
            if let Some(leg) = self.legs.get_mut(&key)
                && leg.in_done
                && let Some(peer) = leg.peer
            {
                leg.gone = true;
                leg.out_done = true;
                leg.line_out.clear();
                leg.credit_update_due = false;
                if leg.rx.is_empty() {
                    self.forget_gone(key, peer);
                }
                self.mark(peer);
                return;
            }
            return self.drop_leg(key);
        }
        let Some(leg) = self.forget(key) else { return };
        if let Some(caller) = leg.peer {
            let callee = self.compartments.get(&key.cid).map(|c| c.name.clone()).unwrap_or_default();
            self.fail_call(caller, reply::NOT_LISTENING, &format!("{callee} does not listen for the service"));
        }
    }

    pub(super) fn on_shutdown(&mut self, key: LegKey, flags: u32) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        let peer = leg.peer;
        if flags & shutdown::SEND != 0 {
            leg.in_done = true;
        }
        if flags & shutdown::RCV != 0 {
            leg.out_done = true;
            leg.line_out.clear();
        }
        let line_phase = leg.side == Side::Caller(Phase::Line);
        if line_phase && flags & shutdown::SEND != 0 {
            // The call line can no longer be completed.
            return self.fail_call(key, reply::BAD_REQUEST, "no call line");
        }
        if let Some(peer) = peer
            && let Some(peer_leg) = self.legs.get_mut(&peer)
        {
            if flags & shutdown::SEND != 0 {
                peer_leg.out_done = true;
                peer_leg.shut_owed |= shutdown::SEND;
            }
            if flags & shutdown::RCV != 0 {
                // Bytes for this guest are dropped; the peer sends no more.
                let dropped = peer_leg.rx.len();
                peer_leg.rx.clear();
                peer_leg.consume(dropped);
                peer_leg.in_done = true;
                peer_leg.shut_owed |= shutdown::RCV;
            }
            self.mark(peer);
        }
        self.mark(key);
    }

    pub(super) fn on_data(&mut self, key: LegKey, payload: &[u8], now: Instant) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        if payload.is_empty() {
            return;
        }
        if !leg.connected() {
            self.bad_packet(key.cid, BadPacket::Protocol);
            return self.reset(key);
        }
        if leg.in_done {
            // Sent before the guest saw our shutdown: dropped, but counted.
            leg.consume(payload.len());
            return self.mark(key);
        }
        let room = usize::try_from(BUF_ALLOC).unwrap_or(usize::MAX).saturating_sub(leg.rx.len());
        if payload.len() > room {
            self.bad_packet(key.cid, BadPacket::Credit);
            return self.reset(key);
        }
        leg.rx.extend(payload);
        match (leg.side, leg.peer) {
            (Side::Caller(Phase::Line), _) => self.try_call_line(key, now),
            (_, Some(peer)) => self.mark(peer),
            _ => {}
        }
    }
}
