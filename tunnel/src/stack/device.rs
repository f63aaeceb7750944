//! A smoltcp device over two packet queues. The stack's loop moves packets between the
//! queues and the TUN device, so smoltcp itself never blocks on I/O.

use std::collections::VecDeque;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

pub struct QueueDevice {
    /// Packets read from the TUN device, waiting for smoltcp: a full-size buffer and the
    /// packet's length in it.
    pub rx: VecDeque<(Vec<u8>, usize)>,
    /// Full-size buffers, reused for the next reads and for the packets smoltcp produces:
    /// no allocation or zeroing per packet either way.
    pub free: Vec<Vec<u8>>,
    /// Buffers of received packets smoltcp is done with, moved to `free` by [`Self::buffer`]
    /// (kept apart so a receive can hand out tokens for both directions at once).
    spent: Vec<Vec<u8>>,
    /// Packets smoltcp produced, waiting to be written to the TUN device: a full-size buffer
    /// and the packet's length in it; the buffer goes back through [`Self::recycle`].
    pub tx: VecDeque<(Vec<u8>, usize)>,
    mtu: usize,
}

impl QueueDevice {
    pub fn new(mtu: usize) -> Self {
        QueueDevice {
            rx: VecDeque::new(),
            free: Vec::new(),
            spent: Vec::new(),
            tx: VecDeque::new(),
            mtu,
        }
    }

    /// A buffer that holds any packet of this device's MTU.
    pub fn buffer(&mut self) -> Vec<u8> {
        if self.free.is_empty() {
            self.free.append(&mut self.spent);
        }
        self.free.pop().unwrap_or_else(|| vec![0u8; self.mtu])
    }

    /// Returns a buffer from [`Self::buffer`] or [`Self::tx`] that is no longer needed.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        // Packets made elsewhere (a reset for a failed dial) may be smaller.
        if buf.len() >= self.mtu && self.free.len() < MAX_FREE {
            self.free.push(buf);
        }
    }
}

/// Spare buffers kept; enough for a full read batch.
const MAX_FREE: usize = 64;

pub struct RxToken<'a> {
    buf: Vec<u8>,
    len: usize,
    free: &'a mut Vec<Vec<u8>>,
}
pub struct TxToken<'a> {
    tx: &'a mut VecDeque<(Vec<u8>, usize)>,
    free: &'a mut Vec<Vec<u8>>,
    mtu: usize,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(&self.buf[..self.len]);
        if self.free.len() < MAX_FREE {
            self.free.push(self.buf);
        }
        result
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = self
            .free
            .pop()
            .unwrap_or_else(|| vec![0u8; self.mtu.max(len)]);
        if packet.len() < len {
            packet.resize(len, 0);
        }
        let result = f(&mut packet[..len]);
        self.tx.push_back((packet, len));
        result
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let (buf, len) = self.rx.pop_front()?;
        let rx = RxToken {
            buf,
            len,
            free: &mut self.spent,
        };
        let tx = TxToken {
            tx: &mut self.tx,
            free: &mut self.free,
            mtu: self.mtu,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            tx: &mut self.tx,
            free: &mut self.free,
            mtu: self.mtu,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // Packets come from this machine's own kernel through the TUN device, which has
        // already validated them; verifying every checksum again only costs throughput.
        let mut checksum = ChecksumCapabilities::default();
        checksum.ipv4 = Checksum::Tx;
        checksum.tcp = Checksum::Tx;
        checksum.udp = Checksum::Tx;
        caps.checksum = checksum;
        caps
    }
}
