//! A smoltcp device over two packet queues. The stack's loop moves packets between the
//! queues and the TUN device, so smoltcp itself never blocks on I/O.

use std::collections::VecDeque;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

pub struct QueueDevice {
    /// Packets read from the TUN device, waiting for smoltcp: a full-size buffer and the
    /// packet's length in it.
    pub rx: VecDeque<(Vec<u8>, usize)>,
    /// Buffers smoltcp is done with, reused for the next reads: no allocation or copy per
    /// packet on the receive path.
    pub free: Vec<Vec<u8>>,
    /// Packets smoltcp produced, waiting to be written to the TUN device.
    pub tx: VecDeque<Vec<u8>>,
    mtu: usize,
}

impl QueueDevice {
    pub fn new(mtu: usize) -> Self {
        QueueDevice {
            rx: VecDeque::new(),
            free: Vec::new(),
            tx: VecDeque::new(),
            mtu,
        }
    }

    /// A buffer that holds any packet of this device's MTU.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| vec![0u8; self.mtu])
    }

    /// Returns a buffer that was not queued.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.free.len() < MAX_FREE {
            self.free.push(buf);
        }
    }
}

/// Spare buffers kept; enough for a full read batch.
const MAX_FREE: usize = 128;

pub struct RxToken<'a> {
    buf: Vec<u8>,
    len: usize,
    free: &'a mut Vec<Vec<u8>>,
}
pub struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

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
        let mut packet = vec![0u8; len];
        let result = f(&mut packet);
        self.0.push_back(packet);
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
            free: &mut self.free,
        };
        Some((rx, TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
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
