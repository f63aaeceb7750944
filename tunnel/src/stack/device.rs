//! A smoltcp device over two packet queues. The stack's loop moves packets between the
//! queues and the TUN device, so smoltcp itself never blocks on I/O.

use std::cell::RefCell;
use std::collections::VecDeque;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

pub struct QueueDevice {
    /// Packets read from the TUN device, waiting for smoltcp: a full-size buffer and the
    /// packet's length in it.
    pub rx: VecDeque<(Vec<u8>, usize)>,
    /// Packets smoltcp produced, waiting to be written to the TUN device: a full-size buffer
    /// and the packet's length in it; the buffer goes back through [`Self::recycle`].
    pub tx: VecDeque<(Vec<u8>, usize)>,
    /// Full-size buffers for the next reads and for the packets smoltcp produces: no
    /// allocation or zeroing per packet either way. Shared by the receive and transmit
    /// tokens smoltcp holds at once, hence the cell.
    pool: Pool,
}

/// Spare buffers kept; enough for a full read batch.
const MAX_FREE: usize = 64;

struct Pool {
    free: RefCell<Vec<Vec<u8>>>,
    mtu: usize,
}

impl Pool {
    fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; self.mtu])
    }

    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        // Packets made elsewhere (a reset for a failed dial) may be smaller.
        if buf.len() >= self.mtu && free.len() < MAX_FREE {
            free.push(buf);
        }
    }
}

impl QueueDevice {
    pub fn new(mtu: usize) -> Self {
        QueueDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            pool: Pool {
                free: RefCell::new(Vec::new()),
                mtu,
            },
        }
    }

    /// A buffer that holds any packet of this device's MTU.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.pool.take()
    }

    /// Returns a buffer from [`Self::buffer`] or [`Self::tx`] that is no longer needed.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.give(buf);
    }
}

pub struct RxToken<'a> {
    buf: Vec<u8>,
    len: usize,
    pool: &'a Pool,
}
pub struct TxToken<'a> {
    tx: &'a mut VecDeque<(Vec<u8>, usize)>,
    pool: &'a Pool,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(&self.buf[..self.len]);
        self.pool.give(self.buf);
        result
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = self.pool.take();
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
            pool: &self.pool,
        };
        let tx = TxToken {
            tx: &mut self.tx,
            pool: &self.pool,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            tx: &mut self.tx,
            pool: &self.pool,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.pool.mtu;
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
