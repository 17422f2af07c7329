//! Calls: the call line, the policy's decision, the user's answers to
//! asks, and joining a caller to its callee.

use super::*;

/// A parsed call line.
#[derive(Debug)]
struct CallLine {
    to: String,
    call: ServiceCall,
}

/// Parses `CALL <to> <service>[+<argument>]` (without the newline).
fn parse_call_line(line: &[u8]) -> Option<CallLine> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split(' ');
    let (Some("CALL"), Some(to), Some(service), None) = (words.next(), words.next(), words.next(), words.next()) else {
        return None;
    };
    if !is_compartment_name(to) {
        return None;
    }
    let call = ServiceCall::parse(service).ok()?;
    Some(CallLine { to: to.to_owned(), call })
}

impl Router {
    pub(super) fn remove_ask(&mut self, id: u64) -> Option<PendingAsk> {
        let ask = self.asks.remove(&id)?;
        if let Some(compartment) = self.compartments.get_mut(&ask.caller.cid) {
            compartment.asks = compartment.asks.saturating_sub(1);
        }
        Some(ask)
    }

    pub(super) fn try_call_line(&mut self, key: LegKey, now: Instant) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        let newline = leg.rx.iter().take(MAX_LINE).position(|&b| b == b'\n');
        let Some(newline) = newline else {
            if leg.rx.len() >= MAX_LINE {
                self.fail_call(key, reply::BAD_REQUEST, "call line too long");
            }
            return;
        };
        let line: Vec<u8> = leg.rx.drain(..=newline).collect();
        leg.consume(line.len());
        self.mark(key);
        let Some(call) = line.strip_suffix(b"\n").and_then(parse_call_line) else {
            return self.fail_call(key, reply::BAD_REQUEST, "expected CALL <to> <service>[+<argument>]");
        };
        self.decide(key, call, now);
    }

    fn decide(&mut self, key: LegKey, line: CallLine, now: Instant) {
        let Some(from) = self.compartments.get(&key.cid).map(|c| c.name.clone()) else { return };
        let what = format!("{from} -> {} {}", line.to, line.call);
        let Some(policy) = &self.policy else {
            self.audit_decision(key.cid, format!("deny {what}: no policy"), now);
            return self.fail_call(key, reply::DENIED, "no policy");
        };
        let decision = policy.decide(&from, &line.to, &line.call);
        let how = match decision.rule {
            Some(index) => match policy.rule_location(index) {
                Some(at) => format!("rule #{} at {}:{}", index + 1, at.file, at.line),
                None => format!("rule #{}", index + 1),
            },
            None => "no rule".to_owned(),
        };
        let target = decision.target.map(str::to_owned);
        let redirect = target.as_ref().map(|t| format!(", redirected to {t}")).unwrap_or_default();
        match decision.action {
            Action::Deny => {
                self.audit_decision(key.cid, format!("deny {what}: {how}"), now);
                self.fail_call(key, reply::DENIED, "by policy");
            }
            Action::Allow => {
                self.audit_decision(key.cid, format!("allow {what}: {how}{redirect}"), now);
                let callee = target.unwrap_or_else(|| line.to.clone());
                self.connect(key, &from, &callee, &line.call);
            }
            Action::Ask => {
                let Some(compartment) = self.compartments.get_mut(&key.cid) else { return };
                if compartment.asks >= MAX_PENDING_ASKS {
                    return self.fail_call(key, reply::BUSY, "too many calls waiting for the user");
                }
                compartment.asks += 1;
                // The decision to ask is audited here (always: asks are
                // few); wardd audits the user's answer.
                self.audit(format!("ask {what}: {how}{redirect}"));
                let id = self.next_ask;
                self.next_ask += 1;
                if let Some(leg) = self.legs.get_mut(&key) {
                    leg.side = Side::Caller(Phase::Asking(id));
                }
                self.emit(Event::Ask { id, from, to: line.to.clone(), service: line.call.to_string() });
                self.asks.insert(id, PendingAsk { caller: key, to: line.to, target, call: line.call, since: now });
            }
        }
    }

    pub(super) fn connect(&mut self, caller: LegKey, from: &str, callee: &str, call: &ServiceCall) {
        let Some(callee_cid) = self.by_name.get(callee).copied() else {
            return self.fail_call(caller, reply::UNREACHABLE, &format!("{callee} is not running"));
        };
        if self.compartments.get(&callee_cid).is_none_or(|c| c.legs >= MAX_CONNECTIONS) {
            return self.fail_call(caller, reply::BUSY, &format!("{callee} has too many connections"));
        }
        let open = self.legs.iter().filter(|(k, l)| k.cid == callee_cid && l.peer.is_some_and(|p| p.cid == caller.cid));
        if open.count() >= MAX_CALLS_PER_PAIR {
            return self.fail_call(caller, reply::BUSY, &format!("too many calls open from {from} to {callee}"));
        }
        let guest_port = service_port(call.name().as_bytes());
        let Some(router_port) = self.free_router_port(callee_cid, guest_port) else {
            return self.fail_call(caller, reply::BUSY, "no free port");
        };
        let key = LegKey { cid: callee_cid, guest_port, router_port };
        let mut leg = Leg::new(Side::Callee { connected: false }, None);
        leg.request_due = true;
        leg.peer = Some(caller);
        leg.line_out = format!("FROM {from} {call}\n").into_bytes().into();
        if !self.add_leg(key, leg) {
            return self.fail_call(caller, reply::BUSY, &format!("{callee} has too many connections"));
        }
        if let Some(caller_leg) = self.legs.get_mut(&caller) {
            caller_leg.side = Side::Caller(Phase::Connecting);
            caller_leg.peer = Some(key);
        }
        if callee_cid == HOST_CID {
            // The host side needs to know what to connect its end to.
            self.emit(Event::HostCall {
                service_port: guest_port,
                router_port,
                from: from.to_owned(),
                service: call.to_string(),
            });
        }
        self.mark(key);
    }

    pub(super) fn free_router_port(&mut self, cid: u64, guest_port: u32) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_router_port;
            self.next_router_port = if port >= LAST_ROUTER_PORT { FIRST_LOCAL_PORT } else { port + 1 };
            if !self.legs.contains_key(&LegKey { cid, guest_port, router_port: port }) {
                return Some(port);
            }
        }
        None
    }

    /// The user's answer to ask `id`: the call goes on or is denied.
    pub fn answer(&mut self, id: u64, answer: Answer) -> Result<(), UnknownError> {
        let ask = self.remove_ask(id).ok_or(UnknownError::Ask(id))?;
        let Some(from) = self.compartments.get(&ask.caller.cid).map(|c| c.name.clone()) else {
            return Ok(());
        };
        let what = format!("{from} -> {} {}", ask.to, ask.call);
        let waiting = match self.legs.get_mut(&ask.caller) {
            Some(leg) if leg.side == Side::Caller(Phase::Asking(id)) && !leg.rst_due => {
                leg.side = Side::Caller(Phase::Line);
                true
            }
            _ => false,
        };
        if !waiting {
            // The caller went away meanwhile: nothing to continue.
            return Ok(());
        }
        // wardd audits the answers it sends; the router only those it
        // makes itself.
        match answer {
            Answer::Allowed => {
                let callee = ask.target.unwrap_or(ask.to);
                self.connect(ask.caller, &from, &callee, &ask.call);
            }
            Answer::Denied => self.fail_call(ask.caller, reply::DENIED, "by the user"),
            Answer::NoAnswer(seconds) => {
                self.audit(format!("deny {what}: no answer in {seconds} s"));
                self.fail_call(ask.caller, reply::DENIED, "no answer");
            }
        }
        Ok(())
    }

    /// Denies the asks older than [`ASK_EXPIRY`].
    /// The periodic tick (about once a second): expires asks nobody
    /// answered and calls whose callee never answered the router's
    /// `REQUEST` within [`ANSWER_TIMEOUT`] (a hostile or hung callee cannot
    /// hold its callers' connections for good).
    pub fn expire(&mut self, now: Instant) {
        self.expire_asks(now);
        let cids: Vec<u64> = self.compartments.keys().copied().collect();
        for cid in cids {
            self.close_audit_window(cid, now);
        }
        let mut silent = Vec::new();
        for (key, leg) in &mut self.legs {
            if leg.connected() {
                continue;
            }
            let since = *leg.waiting_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= ANSWER_TIMEOUT {
                silent.push(*key);
            }
        }
        for key in silent {
            let Some(leg) = self.forget(key) else { continue };
            // Tell the callee we gave up, should it answer late.
            if let Some(compartment) = self.compartments.get_mut(&key.cid)
                && compartment.loose.len() < MAX_LOOSE
            {
                compartment.loose.push_back(router_header(key, op::RST));
                self.wakeups.insert(key.cid);
            }
            if let Some(caller) = leg.peer {
                let callee = self.compartments.get(&key.cid).map(|c| c.name.clone()).unwrap_or_default();
                self.fail_call(caller, reply::UNREACHABLE, &format!("{callee} did not answer"));
            }
        }
    }

    /// Expires asks nobody answered in [`ASK_EXPIRY`].
    pub fn expire_asks(&mut self, now: Instant) {
        let old: Vec<u64> = self
            .asks
            .iter()
            .filter(|(_, ask)| now.saturating_duration_since(ask.since) >= ASK_EXPIRY)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            let _ = self.answer(id, Answer::NoAnswer(ASK_EXPIRY.as_secs()));
        }
    }
}
