//! What crossed an emulated link: [`LinkCounters`] (shared atomics, one per relay, both directions) and their
//! plain [`LinkStats`] snapshot, plus [`MqttMeter`], which splits a byte stream into MQTT packets as it passes
//! so the wire benchmark can count MQTT-level bytes and publish payloads per receiver.
//!
//! TCP-level bytes are modelled, not captured: every segment (one read of at most [`SEGMENT_BYTES`] from the
//! sender) costs [`HEADER_BYTES`] of IPv4 + TCP headers (without options; Linux adds 12 bytes of timestamps),
//! every lost segment is sent again in full, and the receiving side sends one pure ACK per two data segments
//! (delayed ACK), also [`HEADER_BYTES`] each. Link-layer framing (PPP, RLC) is not counted.

use std::sync::atomic::{AtomicU64, Ordering};

/// Largest payload of one emulated TCP segment (Ethernet MSS).
pub const SEGMENT_BYTES: usize = 1460;
/// IPv4 + TCP header bytes per segment.
pub const HEADER_BYTES: u64 = 40;

/// Counters of one direction.
#[derive(Debug, Default)]
pub struct DirCounters {
    /// TCP payload bytes delivered.
    pub bytes: AtomicU64,
    /// Segments delivered.
    pub segments: AtomicU64,
    /// Segment losses (each one sent again).
    pub lost_segments: AtomicU64,
    /// Payload bytes of the lost segments (sent again).
    pub lost_bytes: AtomicU64,
    /// Summed over lost segments: how much later each was delivered than without its losses, µs.
    pub held_us: AtomicU64,
    /// Complete MQTT packets that passed.
    pub mqtt_packets: AtomicU64,
    /// Bytes of those packets (fixed header included).
    pub mqtt_bytes: AtomicU64,
    /// Application payload bytes of the PUBLISH packets among them.
    pub publish_payload_bytes: AtomicU64,
}

/// Counters of one relay (all its connections).
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Broker → receiver.
    pub down: DirCounters,
    /// Receiver → broker.
    pub up: DirCounters,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed by [`crate::link::RelayHandle::disconnect`], an outage over the limit, or a random
    /// disconnect.
    pub forced_closes: AtomicU64,
    /// Outages started (by hand or at random).
    pub outages: AtomicU64,
}

/// A snapshot of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DirStats {
    /// TCP payload bytes.
    pub bytes: u64,
    /// Segments.
    pub segments: u64,
    /// Lost (and resent) segments.
    pub lost_segments: u64,
    /// Payload bytes of the lost segments.
    pub lost_bytes: u64,
    /// Summed delivery delay of the lost segments, µs.
    pub held_us: u64,
    /// Complete MQTT packets.
    pub mqtt_packets: u64,
    /// Bytes of complete MQTT packets.
    pub mqtt_bytes: u64,
    /// PUBLISH payload bytes.
    pub publish_payload_bytes: u64,
}

/// A snapshot of a relay's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStats {
    /// Broker → receiver.
    pub down: DirStats,
    /// Receiver → broker.
    pub up: DirStats,
    /// Connections accepted.
    pub connections: u64,
    /// Connections closed by the link.
    pub forced_closes: u64,
    /// Outages.
    pub outages: u64,
}

impl DirCounters {
    fn snapshot(&self) -> DirStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DirStats {
            bytes: l(&self.bytes),
            segments: l(&self.segments),
            lost_segments: l(&self.lost_segments),
            lost_bytes: l(&self.lost_bytes),
            held_us: l(&self.held_us),
            mqtt_packets: l(&self.mqtt_packets),
            mqtt_bytes: l(&self.mqtt_bytes),
            publish_payload_bytes: l(&self.publish_payload_bytes),
        }
    }
}

impl LinkCounters {
    /// The current values.
    pub fn snapshot(&self) -> LinkStats {
        LinkStats {
            down: self.down.snapshot(),
            up: self.up.snapshot(),
            connections: self.connections.load(Ordering::Relaxed),
            forced_closes: self.forced_closes.load(Ordering::Relaxed),
            outages: self.outages.load(Ordering::Relaxed),
        }
    }
}

impl DirStats {
    /// Modelled bytes of this direction's data segments on the wire: payload, headers, retransmissions.
    pub fn tcp_data_bytes(&self) -> u64 {
        self.bytes + self.lost_bytes + HEADER_BYTES * (self.segments + self.lost_segments)
    }

    /// `self − earlier`, field by field (saturating).
    pub fn since(&self, earlier: &DirStats) -> DirStats {
        DirStats {
            bytes: self.bytes.saturating_sub(earlier.bytes),
            segments: self.segments.saturating_sub(earlier.segments),
            lost_segments: self.lost_segments.saturating_sub(earlier.lost_segments),
            lost_bytes: self.lost_bytes.saturating_sub(earlier.lost_bytes),
            held_us: self.held_us.saturating_sub(earlier.held_us),
            mqtt_packets: self.mqtt_packets.saturating_sub(earlier.mqtt_packets),
            mqtt_bytes: self.mqtt_bytes.saturating_sub(earlier.mqtt_bytes),
            publish_payload_bytes: self.publish_payload_bytes.saturating_sub(earlier.publish_payload_bytes),
        }
    }
}

impl LinkStats {
    /// TCP-level bytes both ways: data segments (payload + headers + retransmissions) plus one pure ACK per two
    /// data segments of the other direction. See the module documentation.
    pub fn tcp_bytes(&self) -> u64 {
        let acks = (self.down.segments + self.down.lost_segments).div_ceil(2)
            + (self.up.segments + self.up.lost_segments).div_ceil(2);
        self.down.tcp_data_bytes() + self.up.tcp_data_bytes() + HEADER_BYTES * acks
    }

    /// MQTT-level bytes both ways (complete packets, headers included).
    pub fn mqtt_bytes(&self) -> u64 {
        self.down.mqtt_bytes + self.up.mqtt_bytes
    }

    /// `self − earlier`.
    pub fn since(&self, earlier: &LinkStats) -> LinkStats {
        LinkStats {
            down: self.down.since(&earlier.down),
            up: self.up.since(&earlier.up),
            connections: self.connections.saturating_sub(earlier.connections),
            forced_closes: self.forced_closes.saturating_sub(earlier.forced_closes),
            outages: self.outages.saturating_sub(earlier.outages),
        }
    }
}

/// Splits an MQTT 3.1.1 / 5 byte stream into packets, incrementally (any split of the stream gives the same
/// counts). Only the fixed header and, for PUBLISH, the topic length are looked at.
#[derive(Debug, Default, Clone)]
pub struct MqttMeter {
    /// Header bytes of the packet being read (type byte, remaining length, and for PUBLISH the topic length).
    head: Vec<u8>,
    /// Bytes of the current packet still to skip once its header is known.
    skip: u64,
    /// Whether the current packet's header is complete.
    in_body: bool,
    /// Size of the current packet.
    packet: u64,
    /// PUBLISH payload of the current packet.
    payload: u64,
    /// Set when the stream is not MQTT (remaining length over 4 bytes): counting stops.
    broken: bool,
}

/// What [`MqttMeter::feed`] found in one piece of the stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MeterCount {
    /// Packets completed.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their PUBLISH payload bytes.
    pub publish_payload: u64,
}

impl MqttMeter {
    /// A meter at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream; returns the packets completed by them.
    pub fn feed(&mut self, mut data: &[u8]) -> MeterCount {
        let mut out = MeterCount::default();
        while !data.is_empty() && !self.broken {
            if self.in_body {
                let take = self.skip.min(data.len() as u64);
                self.skip -= take;
                data = &data[take as usize..];
                if self.skip == 0 {
                    self.finish(&mut out);
                }
                continue;
            }
            self.head.push(data[0]);
            data = &data[1..];
            self.parse_head(&mut out);
        }
        out
    }

    fn finish(&mut self, out: &mut MeterCount) {
        out.packets += 1;
        out.bytes += self.packet;
        out.publish_payload += self.payload;
        self.head.clear();
        self.in_body = false;
        self.skip = 0;
    }

    /// Looks at the header bytes so far; switches to skipping once it is complete.
    fn parse_head(&mut self, out: &mut MeterCount) {
        let h = &self.head;
        if h.len() < 2 {
            return;
        }
        let mut remaining: u64 = 0;
        let mut len_bytes = 0;
        for (i, b) in h[1..].iter().enumerate() {
            remaining |= u64::from(b & 0x7f) << (7 * i);
            len_bytes = i + 1;
            if b & 0x80 == 0 {
                break;
            }
            if i == 3 {
                self.broken = true;
                return;
            }
        }
        if h[len_bytes] & 0x80 != 0 {
            return; // the remaining length continues
        }
        let fixed = 1 + len_bytes as u64;
        let is_publish = h[0] >> 4 == 3;
        if !is_publish || remaining < 2 {
            self.start_body(fixed + remaining, 0, remaining, out);
            return;
        }
        let have_var = (h.len() as u64) - fixed;
        if have_var < 2 {
            return; // need the topic length
        }
        let topic_len = u64::from(u16::from_be_bytes([h[fixed as usize], h[fixed as usize + 1]]));
        let qos = (h[0] >> 1) & 0x3;
        let id = if qos > 0 { 2 } else { 0 };
        let payload = remaining.saturating_sub(2 + topic_len + id);
        self.start_body(fixed + remaining, payload, remaining - 2, out);
    }

    fn start_body(&mut self, packet: u64, payload: u64, skip: u64, out: &mut MeterCount) {
        self.packet = packet;
        self.payload = payload;
        self.skip = skip;
        self.in_body = true;
        if skip == 0 {
            self.finish(out);
        }
    }

    /// Adds what a feed found to `dir`.
    pub fn record(count: MeterCount, dir: &DirCounters) {
        if count.packets > 0 {
            dir.mqtt_packets.fetch_add(count.packets, Ordering::Relaxed);
            dir.mqtt_bytes.fetch_add(count.bytes, Ordering::Relaxed);
            dir.publish_payload_bytes.fetch_add(count.publish_payload, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn varint(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                return out;
            }
        }
    }

    /// A PUBLISH (qos 0/1) or another packet with `body` bytes after the fixed header; returns (bytes, payload).
    fn packet(kind: u8, qos: u8, topic: usize, body: usize) -> (Vec<u8>, u64) {
        if kind == 3 {
            let id = if qos > 0 { 2 } else { 0 };
            let remaining = 2 + topic + id + body;
            let mut p = vec![0x30 | (qos << 1)];
            p.extend(varint(remaining));
            p.extend((topic as u16).to_be_bytes());
            p.extend(std::iter::repeat_n(b't', topic));
            p.extend(std::iter::repeat_n(0u8, id + body));
            (p, body as u64)
        } else {
            let mut p = vec![kind << 4];
            p.extend(varint(body));
            p.extend(std::iter::repeat_n(7u8, body));
            (p, 0)
        }
    }

    #[test]
    fn counts_simple_packets() {
        let mut m = MqttMeter::new();
        let (a, _) = packet(12, 0, 0, 0); // PINGREQ
        let (b, pb) = packet(3, 1, 20, 8192);
        let mut stream = a.clone();
        stream.extend(&b);
        let c = m.feed(&stream);
        assert_eq!(c, MeterCount { packets: 2, bytes: stream.len() as u64, publish_payload: pb });
        assert_eq!(pb, 8192);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_counts(
            packets in proptest::collection::vec((prop_oneof![Just(3u8), Just(4u8), Just(12u8), Just(8u8)], 0u8..2, 0usize..40, 0usize..20_000), 1..12),
            cuts in proptest::collection::vec(1usize..3000, 0..40),
        ) {
            let mut stream = Vec::new();
            let mut payload = 0;
            for (kind, qos, topic, body) in &packets {
                let (p, pl) = packet(*kind, *qos, *topic, *body);
                stream.extend(p);
                payload += pl;
            }
            let mut m = MqttMeter::new();
            let mut total = MeterCount::default();
            let mut rest = &stream[..];
            for cut in cuts {
                let n = cut.min(rest.len());
                let c = m.feed(&rest[..n]);
                total.packets += c.packets;
                total.bytes += c.bytes;
                total.publish_payload += c.publish_payload;
                rest = &rest[n..];
            }
            let c = m.feed(rest);
            total.packets += c.packets;
            total.bytes += c.bytes;
            total.publish_payload += c.publish_payload;
            prop_assert_eq!(total, MeterCount { packets: packets.len() as u64, bytes: stream.len() as u64, publish_payload: payload });
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4000)) {
            let mut m = MqttMeter::new();
            let c = m.feed(&data);
            prop_assert!(c.bytes <= data.len() as u64);
        }
    }

    #[test]
    fn tcp_bytes_model() {
        let s = LinkStats {
            down: DirStats { bytes: 14_600, segments: 10, lost_segments: 1, lost_bytes: 1460, ..DirStats::default() },
            up: DirStats { bytes: 100, segments: 2, ..DirStats::default() },
            ..LinkStats::default()
        };
        // down: 14600 + 1460 + 40*11; up: 100 + 40*2; acks: ceil(11/2)=6 + ceil(2/2)=1 → 7*40
        assert_eq!(s.tcp_bytes(), 14_600 + 1460 + 440 + 100 + 80 + 280);
    }
}
