//! A small MQTT 3.1.1 packet reader for the relay in front of the embedded broker: [`Framer`] cuts a byte
//! stream (arriving split at any boundary) into whole packets using the fixed header's remaining-length varint,
//! and [`inspect`] reads just what the topic ACL needs from a packet — CONNECT (client id, username, will
//! topic), SUBSCRIBE (topic filters) and PUBLISH (topic). Every other packet is [`Inspected::Other`] and passes
//! through untouched. Nothing here panics on any input; malformed bytes are a [`PacketError`].

use bytes::{Bytes, BytesMut};

/// Packet type numbers (the high nibble of the first byte).
pub mod kind {
    /// CONNECT.
    pub const CONNECT: u8 = 1;
    /// PUBLISH.
    pub const PUBLISH: u8 = 3;
    /// SUBSCRIBE.
    pub const SUBSCRIBE: u8 = 8;
}

/// Why bytes are not a usable MQTT 3.1.1 packet. The relay closes the connection on any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The remaining-length varint runs past four bytes.
    #[error("remaining length is longer than four bytes")]
    BadLength,
    /// The packet is larger than the relay accepts.
    #[error("packet of {0} bytes is larger than allowed")]
    TooBig(usize),
    /// A field is missing, too short or not what 3.1.1 allows.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// The packet kind.
        what: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

/// Cuts a byte stream into whole MQTT packets.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max_packet_bytes: usize,
}

impl Framer {
    /// A framer refusing packets longer than `max_packet_bytes` (fixed header included).
    pub fn new(max_packet_bytes: usize) -> Self {
        Framer { buf: BytesMut::with_capacity(16 * 1024), max_packet_bytes }
    }

    /// The buffer to read more bytes into (append only).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not make a whole packet yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole packet (fixed header included), `None` if more bytes are needed. A packet announced larger
    /// than the limit is refused as soon as its header has arrived, before its body is buffered.
    pub fn next_packet(&mut self) -> Result<Option<Bytes>, PacketError> {
        let Some((header, remaining)) = fixed_header(&self.buf)? else {
            return Ok(None);
        };
        let total = header + remaining;
        if total > self.max_packet_bytes {
            return Err(PacketError::TooBig(total));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(total).freeze()))
    }
}

/// The fixed header's length and the remaining length of the packet starting `buf`, once its fixed header is
/// complete.
fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, PacketError> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining += usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((2 + i, remaining)));
        }
    }
    Err(PacketError::BadLength)
}

/// What the ACL needs to know about one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspected {
    /// CONNECT.
    Connect {
        /// The client identifier.
        client_id: String,
        /// The user name, if given.
        username: Option<String>,
        /// The last will's topic, if there is a will.
        will_topic: Option<String>,
    },
    /// SUBSCRIBE with its topic filters (at least one).
    Subscribe {
        /// The filters, in order.
        filters: Vec<String>,
    },
    /// PUBLISH.
    Publish {
        /// The topic name.
        topic: String,
    },
    /// Any other packet, by type number.
    Other(u8),
}

/// Reads fields from a packet body.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn bad(&self, why: &'static str) -> PacketError {
        PacketError::Malformed { what: self.what, why }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PacketError> {
        if self.bytes.len() < n {
            return Err(self.bad("too short"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, PacketError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PacketError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn binary(&mut self) -> Result<&'a [u8], PacketError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn string(&mut self) -> Result<String, PacketError> {
        let b = self.binary()?;
        let s = std::str::from_utf8(b).map_err(|_| self.bad("string is not UTF-8"))?;
        if s.contains('\0') {
            return Err(self.bad("string holds U+0000"));
        }
        Ok(s.to_string())
    }
}

/// Reads what the ACL needs from one whole packet as returned by [`Framer::next_packet`].
pub fn inspect(packet: &[u8]) -> Result<Inspected, PacketError> {
    let first = *packet.first().ok_or(PacketError::Malformed { what: "packet", why: "empty" })?;
    let header = match fixed_header(packet)? {
        Some((header, remaining)) if header + remaining == packet.len() => header,
        _ => return Err(PacketError::Malformed { what: "packet", why: "length does not match its header" }),
    };
    let body = &packet[header..];
    match first >> 4 {
        kind::CONNECT => connect(Reader { bytes: body, what: "CONNECT" }, first),
        kind::SUBSCRIBE => subscribe(Reader { bytes: body, what: "SUBSCRIBE" }, first),
        kind::PUBLISH => publish(Reader { bytes: body, what: "PUBLISH" }, first),
        other => Ok(Inspected::Other(other)),
    }
}

fn connect(mut r: Reader<'_>, first: u8) -> Result<Inspected, PacketError> {
    if first & 0x0f != 0 {
        return Err(r.bad("reserved header flags set"));
    }
    let name = r.binary()?;
    let level = r.u8()?;
    match (name, level) {
        (b"MQTT", 4) | (b"MQIsdp", 3) => {}
        _ => return Err(r.bad("only MQTT 3.1.1 is spoken here")),
    }
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(r.bad("reserved connect flag set"));
    }
    let _keep_alive = r.u16()?;
    let client_id = r.string()?;
    let will_topic = if flags & 0x04 != 0 {
        let topic = r.string()?;
        r.binary()?;
        Some(topic)
    } else {
        None
    };
    let username = if flags & 0x80 != 0 { Some(r.string()?) } else { None };
    if flags & 0x40 != 0 {
        r.binary()?;
    }
    Ok(Inspected::Connect { client_id, username, will_topic })
}

fn subscribe(mut r: Reader<'_>, first: u8) -> Result<Inspected, PacketError> {
    if first & 0x0f != 0x02 {
        return Err(r.bad("header flags must be 0010"));
    }
    let _packet_id = r.u16()?;
    let mut filters = Vec::new();
    while !r.bytes.is_empty() {
        filters.push(r.string()?);
        let qos = r.u8()?;
        if qos > 2 {
            return Err(r.bad("requested QoS above 2"));
        }
    }
    if filters.is_empty() {
        return Err(r.bad("no topic filter"));
    }
    Ok(Inspected::Subscribe { filters })
}

fn publish(mut r: Reader<'_>, first: u8) -> Result<Inspected, PacketError> {
    if (first >> 1) & 0x03 == 3 {
        return Err(r.bad("QoS 3"));
    }
    let topic = r.string()?;
    Ok(Inspected::Publish { topic })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    /// A packet: first byte, remaining-length varint, body.
    pub(crate) fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![first];
        let mut n = body.len();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            v.push(b);
            if n == 0 {
                break;
            }
        }
        v.extend_from_slice(body);
        v
    }

    pub(crate) fn connect_packet(client: &str, user: Option<&str>, will: Option<&str>) -> Vec<u8> {
        let mut body = string("MQTT");
        let mut flags = 0x02u8;
        if will.is_some() {
            flags |= 0x04 | 0x08;
        }
        if user.is_some() {
            flags |= 0x80 | 0x40;
        }
        body.extend_from_slice(&[4, flags, 0, 30]);
        body.extend(string(client));
        if let Some(w) = will {
            body.extend(string(w));
            body.extend(string("offline"));
        }
        if let Some(u) = user {
            body.extend(string(u));
            body.extend(string("secret"));
        }
        packet(0x10, &body)
    }

    pub(crate) fn subscribe_packet(filters: &[&str]) -> Vec<u8> {
        let mut body = vec![0, 7];
        for f in filters {
            body.extend(string(f));
            body.push(1);
        }
        packet(0x82, &body)
    }

    pub(crate) fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = string(topic);
        body.extend_from_slice(&[0, 9]);
        body.extend_from_slice(payload);
        packet(0x32, &body)
    }

    #[test]
    fn reads_connect_subscribe_publish() {
        let c = connect_packet("rx-0123456789ab", Some("rx-0123456789ab"), Some("loa/v1/up/rx-0123456789ab/status"));
        assert_eq!(
            inspect(&c).unwrap(),
            Inspected::Connect {
                client_id: "rx-0123456789ab".into(),
                username: Some("rx-0123456789ab".into()),
                will_topic: Some("loa/v1/up/rx-0123456789ab/status".into()),
            }
        );
        let c = connect_packet("x", None, None);
        assert_eq!(
            inspect(&c).unwrap(),
            Inspected::Connect { client_id: "x".into(), username: None, will_topic: None }
        );
        let s = subscribe_packet(&["a/#", "b/+/c"]);
        assert_eq!(inspect(&s).unwrap(), Inspected::Subscribe { filters: vec!["a/#".into(), "b/+/c".into()] });
        let p = publish_packet("loa/v1/up/x/report", &[1, 2, 3]);
        assert_eq!(inspect(&p).unwrap(), Inspected::Publish { topic: "loa/v1/up/x/report".into() });
        assert_eq!(inspect(&[0xc0, 0]).unwrap(), Inspected::Other(12));
        assert_eq!(inspect(&[0x40, 2, 0, 1]).unwrap(), Inspected::Other(4));
    }

    #[test]
    fn refuses_malformed() {
        // MQTT 5 CONNECT.
        let mut body = string("MQTT");
        body.extend_from_slice(&[5, 0x02, 0, 30, 0]);
        body.extend(string("c"));
        assert!(inspect(&packet(0x10, &body)).is_err());
        // Truncated strings, bad flags, an empty SUBSCRIBE, QoS 3, bad UTF-8.
        assert!(inspect(&packet(0x10, &string("MQTT"))).is_err());
        assert!(inspect(&packet(0x80, &[0, 1, 0, 1, b'a', 0])).is_err());
        assert!(inspect(&packet(0x82, &[0, 1])).is_err());
        assert!(inspect(&packet(0x36, &string("a"))).is_err());
        assert!(inspect(&packet(0x30, &[0, 2, 0xff, 0xfe])).is_err());
        assert!(inspect(&packet(0x30, &[0, 2, b'a', 0])).is_err());
        assert!(inspect(&packet(0x30, &[0, 5, b'a'])).is_err());
        // Length that disagrees with the header.
        assert!(inspect(&[0x30, 5, 0, 1]).is_err());
        assert!(inspect(&[]).is_err());
    }

    #[test]
    fn frames_varint_lengths_and_limits() {
        let mut f = Framer::new(1 << 20);
        let big = packet(0x30, &vec![0u8; 200_000]);
        assert_eq!(&big[1..4], &[0xc0, 0x9a, 0x0c]);
        f.push(&big[..3]);
        assert_eq!(f.next_packet().unwrap(), None);
        f.push(&big[3..]);
        assert_eq!(f.next_packet().unwrap().unwrap().len(), big.len());
        assert_eq!(f.pending(), 0);

        let mut f = Framer::new(1000);
        f.push(&[0x30, 0xe9, 0x07]);
        assert_eq!(f.next_packet(), Err(PacketError::TooBig(1004)));
        let mut f = Framer::new(usize::MAX);
        f.push(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(f.next_packet(), Err(PacketError::BadLength));
        let mut f = Framer::new(usize::MAX);
        f.push(&[0x30, 0xff, 0xff, 0xff, 0x7f]);
        assert_eq!(f.next_packet(), Ok(None));
    }

    fn any_packet() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            ("[a-z0-9/+#-]{0,40}", proptest::option::of("[a-z/]{1,20}")).prop_map(|(c, w)| connect_packet(
                &c,
                Some(&c),
                w.as_deref()
            )),
            proptest::collection::vec("[a-z0-9/+#]{0,30}", 1..4).prop_map(|fs| {
                let refs: Vec<&str> = fs.iter().map(String::as_str).collect();
                subscribe_packet(&refs)
            }),
            ("[a-z0-9/]{0,30}", proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(t, p)| publish_packet(&t, &p)),
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(b, body)| packet(b, &body)),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = inspect(&bytes);
            let mut f = Framer::new(400);
            f.push(&bytes);
            while let Ok(Some(p)) = f.next_packet() {
                let _ = inspect(&p);
            }
        }

        #[test]
        fn reframes_any_split(packets in proptest::collection::vec(any_packet(), 1..8),
                              cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
            let stream: Vec<u8> = packets.concat();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut f = Framer::new(1 << 20);
            let mut out = Vec::new();
            let mut at = 0;
            for cut in cuts {
                f.push(&stream[at..cut]);
                at = cut;
                while let Some(p) = f.next_packet().unwrap() {
                    out.push(p.to_vec());
                }
            }
            prop_assert_eq!(f.pending(), 0);
            prop_assert_eq!(&out, &packets);
            for (p, original) in out.iter().zip(&packets) {
                // A packet built by the helpers above inspects to what it was built from, or is an Other.
                let _ = inspect(p);
                prop_assert_eq!(p, original);
            }
        }
    }
}
