//! What a guest gets: the next packet for it, made when it has a receive
//! buffer, within the other side's credit.

use super::*;

impl Router {
    /// The next packet for the guest of `cid`, whose receive buffer takes
    /// `max_payload` bytes after the header; `None` when there is nothing
    /// to send (or nothing that fits the guest's credit).
    pub fn next_packet(&mut self, cid: u64, max_payload: usize) -> Option<Packet> {
        let max_payload = max_payload.min(MAX_PAYLOAD);
        loop {
            let compartment = self.compartments.get_mut(&cid)?;
            if let Some(header) = compartment.loose.pop_front() {
                return Some(Packet { header, payload: Vec::new() });
            }
            let key = compartment.ready.pop_front()?;
            let Some(leg) = self.legs.get_mut(&key) else { continue };
            leg.queued = false;
            if let Some(packet) = self.produce(key, max_payload) {
                // It may have more: back of the line.
                self.mark(key);
                return Some(packet);
            }
        }
    }

    /// The next packet of leg `key`, if it has one.
    pub(super) fn produce(&mut self, key: LegKey, max_payload: usize) -> Option<Packet> {
        let leg = self.legs.get(&key)?;
        if leg.gone {
            // Its guest forgot it: nothing goes there any more.
            if leg.rst_due {
                self.forget(key);
            }
            return None;
        }
        if leg.rst_due {
            self.forget(key);
            return Some(Packet { header: router_header(key, op::RST), payload: Vec::new() });
        }
        if leg.request_due || leg.response_due {
            let leg = self.legs.get_mut(&key)?;
            let operation = if leg.request_due { op::REQUEST } else { op::RESPONSE };
            leg.request_due = false;
            leg.response_due = false;
            return Some(self.stamp(key, router_header(key, operation), Vec::new()));
        }
        if !leg.connected() {
            return None;
        }
        let credit = usize::try_from(leg.credit()).unwrap_or(usize::MAX).min(max_payload);
        let peer_bytes = leg.peer.and_then(|peer| self.legs.get(&peer)).map_or(0, |peer| peer.rx.len());
        let forwarding = matches!(leg.side, Side::Callee { .. } | Side::Caller(Phase::Joined));
        let waiting = !leg.line_out.is_empty() || (forwarding && peer_bytes > 0);
        if waiting {
            if credit > 0 {
                let leg = self.legs.get_mut(&key)?;
                let payload: Vec<u8> = if leg.line_out.is_empty() {
                    let peer = leg.peer?;
                    let peer_leg = self.legs.get_mut(&peer)?;
                    let n = credit.min(peer_leg.rx.len());
                    let bytes: Vec<u8> = peer_leg.rx.drain(..n).collect();
                    peer_leg.consume(n);
                    if peer_leg.gone {
                        if peer_leg.rx.is_empty() {
                            self.forget_gone(peer, key);
                        }
                    } else if peer_leg.credit_update_due {
                        self.mark(peer);
                    }
                    bytes
                } else {
                    let n = credit.min(leg.line_out.len());
                    leg.line_out.drain(..n).collect()
                };
                let mut header = router_header(key, op::RW);
                header.len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
                let leg = self.legs.get_mut(&key)?;
                leg.tx_cnt = leg.tx_cnt.wrapping_add(header.len);
                return Some(self.stamp(key, header, payload));
            }
            let leg = self.legs.get_mut(&key)?;
            if !leg.credit_request_sent {
                leg.credit_request_sent = true;
                return Some(self.stamp(key, router_header(key, op::CREDIT_REQUEST), Vec::new()));
            }
        }
        let leg = self.legs.get(&key)?;
        let drained = leg.line_out.is_empty() && (peer_bytes == 0 || !forwarding);
        let mut flags = leg.shut_owed & !leg.shut_sent;
        if !drained {
            flags &= !shutdown::SEND;
        }
        if flags != 0 {
            let leg = self.legs.get_mut(&key)?;
            leg.shut_sent |= flags;
            let mut header = router_header(key, op::SHUTDOWN);
            header.flags = leg.shut_sent;
            let packet = self.stamp(key, header, Vec::new());
            self.finish_if_done(key);
            return Some(packet);
        }
        if leg.credit_update_due {
            return Some(self.stamp(key, router_header(key, op::CREDIT_UPDATE), Vec::new()));
        }
        self.finish_if_done(key);
        None
    }

    /// Fills in the leg's credit and notes what the guest was told.
    pub(super) fn stamp(&mut self, key: LegKey, mut header: Header, payload: Vec<u8>) -> Packet {
        if let Some(leg) = self.legs.get_mut(&key) {
            header.fwd_cnt = leg.fwd_cnt;
            leg.fwd_reported = leg.fwd_cnt;
            leg.credit_update_due = false;
        }
        debug_assert!(payload.len() <= MAX_PAYLOAD && HEADER_SIZE == 44);
        Packet { header, payload }
    }

    /// A leg closed both ways with nothing left to send is forgotten: after
    /// our `SHUTDOWN` of both directions quietly, otherwise with an `RST`.
    pub(super) fn finish_if_done(&mut self, key: LegKey) {
        let Some(leg) = self.legs.get(&key) else { return };
        let peer_bytes = leg.peer.and_then(|peer| self.legs.get(&peer)).map_or(0, |peer| peer.rx.len());
        // Nothing left for the guest, and nothing of the guest's left for
        // its peer.
        let idle = leg.line_out.is_empty() && peer_bytes == 0 && leg.rx.is_empty();
        if !(leg.in_done && leg.out_done && idle && leg.shut_owed & !leg.shut_sent == 0) {
            return;
        }
        if leg.shut_sent == shutdown::SEND | shutdown::RCV {
            let peer = leg.peer;
            self.forget(key);
            if let Some(peer) = peer
                && let Some(peer_leg) = self.legs.get_mut(&peer)
            {
                peer_leg.peer = None;
                self.mark(peer);
            }
        } else if let Some(leg) = self.legs.get_mut(&key) {
            leg.rst_due = true;
            self.mark(key);
        }
    }
}
