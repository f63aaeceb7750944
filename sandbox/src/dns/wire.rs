//! Bytes on the wire: encoding answers within the size a UDP client accepts, and the errors
//! sent for packets too broken to parse.

use hickory_proto::op::{Message, ResponseCode};

use super::answer;

/// The largest answer a UDP client takes: 512 bytes, or what its EDNS record says.
pub fn udp_limit(query: &Message) -> usize {
    usize::from(query.max_payload())
}

/// Encodes a response in at most `limit` bytes: first without the additional section (which
/// needs no TC bit, RFC 2181 §9), else as just the question with TC set so the client retries
/// over TCP. `None` when the response cannot be encoded at all.
pub fn encode(resp: &Message, limit: usize) -> Option<Vec<u8>> {
    let full = resp.to_vec().ok()?;
    if full.len() <= limit {
        return Some(full);
    }
    if !resp.additionals.is_empty() {
        let mut slim = resp.clone();
        slim.additionals.clear();
        if let Ok(bytes) = slim.to_vec()
            && bytes.len() <= limit
        {
            return Some(bytes);
        }
    }
    resp.truncate().to_vec().ok()
}

/// A FORMERR answer to a packet that does not parse, built from its header alone; `None`
/// when there is no header to answer or the packet is itself a response (answering those
/// could loop between two servers).
pub fn formerr(packet: &[u8]) -> Option<Vec<u8>> {
    let header = packet.get(..12)?;
    if header[2] & 0x80 != 0 {
        return None;
    }
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&header[..2]);
    // QR set, opcode and RD copied; RA set; rcode FORMERR; all counts zero.
    out[2] = 0x80 | (header[2] & 0x79);
    out[3] = 0x80 | ResponseCode::FormErr.low();
    Some(out)
}

/// A SERVFAIL answer to a query (upstream failure).
pub fn servfail(query: &Message) -> Option<Vec<u8>> {
    answer::response_to(query, ResponseCode::ServFail)
        .to_vec()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::net::Ipv4Addr;

    fn big(edns: Option<u16>) -> (Message, Message) {
        let name = Name::from_ascii("db.default.svc.cluster.local.").unwrap();
        let mut q = Message::query();
        q.add_query(Query::query(name.clone(), RecordType::A));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            q.set_edns(e);
        }
        let mut r = answer::response_to(&q, ResponseCode::NoError);
        for i in 0..60 {
            r.answers.push(Record::from_rdata(
                name.clone(),
                5,
                RData::A(A(Ipv4Addr::new(10, 244, 0, i))),
            ));
        }
        (q, r)
    }

    #[test]
    fn large_answers_are_truncated_for_udp_unless_edns_allows_them() {
        let (q, r) = big(None);
        assert_eq!(udp_limit(&q), 512);
        let bytes = encode(&r, udp_limit(&q)).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        assert_eq!(m.queries, q.queries);
        let (q, r) = big(Some(4096));
        let m = Message::from_vec(&encode(&r, udp_limit(&q)).unwrap()).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
    }

    #[test]
    fn unparsable_queries_get_formerr_with_their_id() {
        let packet = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff];
        let m = Message::from_vec(&formerr(&packet).unwrap()).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(m.metadata.recursion_desired);
        assert!(formerr(&packet[..5]).is_none());
        let mut response = packet;
        response[2] |= 0x80;
        assert!(formerr(&response).is_none());
    }
}
