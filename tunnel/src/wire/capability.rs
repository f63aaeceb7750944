//! What a peer can do, as the handshake announces it.
//!
//! On the wire a capability set is a sequence of names (postcard strings), the layout
//! protocol v1 has always had. Names keep the set readable across builds: a name this build
//! does not know is ignored when decoding, so a newer peer may offer more without a protocol
//! bump, and whether a peer can do something is decided by the names it sent, not by its
//! version number.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One thing a peer can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// The control stream ([`super::control`]).
    Control,
    /// TCP flows.
    Tcp,
    /// UDP flows ([`super::datagram`] frames).
    Udp,
    /// DNS exchanges.
    Dns,
    /// Streams both ways: this end both opens streams and accepts the ones its peer opens;
    /// each starts with its opener's [`super::flow::FlowRequest`]. Builds from before it
    /// were one-way: the laptop only opened streams (and dropped any the manager opened),
    /// the manager only accepted them.
    TwoWay,
    /// Intercept claims on the control stream ([`super::intercept`]): offered by the
    /// sidecar only.
    Intercept,
    /// Filtered and mirroring claims ([`super::route`]): offered by sidecars that route HTTP
    /// requests one by one.
    HttpRoutes,
}

impl Capability {
    /// Every capability this build knows, in the order they are listed on the wire.
    pub const ALL: [Capability; 7] = [
        Capability::Control,
        Capability::Tcp,
        Capability::Udp,
        Capability::Dns,
        Capability::TwoWay,
        Capability::Intercept,
        Capability::HttpRoutes,
    ];

    /// The name on the wire; never changes once released.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Control => "control",
            Capability::Tcp => "tcp",
            Capability::Udp => "udp",
            Capability::Dns => "dns",
            Capability::TwoWay => "two-way",
            Capability::Intercept => "intercept",
            Capability::HttpRoutes => "http-routes",
        }
    }

    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

// Each capability is one bit of a `Capabilities`.
const _: () = assert!(Capability::ALL.len() <= u8::BITS as usize);

/// A set of [`Capability`] values.
#[derive(Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "Vec<&'static str>", from = "Vec<String>")]
pub struct Capabilities(u8);

impl Capabilities {
    pub const fn empty() -> Self {
        Capabilities(0)
    }

    /// What a tunnel between a laptop and the manager carries: every kind of flow, both
    /// ways.
    pub const TUNNEL: Capabilities = Capabilities::empty()
        .with(Capability::Control)
        .with(Capability::Tcp)
        .with(Capability::Udp)
        .with(Capability::Dns)
        .with(Capability::TwoWay);

    /// Everything this build knows.
    pub const fn all() -> Self {
        let mut set = Capabilities::empty();
        let mut i = 0;
        while i < Capability::ALL.len() {
            set = set.with(Capability::ALL[i]);
            i += 1;
        }
        set
    }

    pub const fn with(mut self, capability: Capability) -> Self {
        self.0 |= capability.bit();
        self
    }

    pub const fn without(mut self, capability: Capability) -> Self {
        self.0 &= !capability.bit();
        self
    }

    pub const fn contains(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    /// What both sets hold.
    pub const fn common(self, other: Capabilities) -> Self {
        Capabilities(self.0 & other.0)
    }

    /// What `self` requires that `offered` lacks.
    pub const fn missing_from(self, offered: Capabilities) -> Self {
        Capabilities(self.0 & !offered.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter()
            .fold(Capabilities::empty(), Capabilities::with)
    }
}

impl From<Capabilities> for Vec<&'static str> {
    fn from(set: Capabilities) -> Self {
        set.iter().map(Capability::name).collect()
    }
}

/// Unknown names are a newer peer's; they are dropped, not an error.
impl From<Vec<String>> for Capabilities {
    fn from(names: Vec<String>) -> Self {
        names
            .iter()
            .filter_map(|n| Capability::from_name(n))
            .collect()
    }
}

/// Names, comma-separated (`none` for the empty set), as error messages show them.
impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, c) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(c.name())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, encode};
    use proptest::prelude::*;

    fn any_set() -> impl Strategy<Value = Capabilities> {
        any::<[bool; 5]>().prop_map(|picks| {
            Capability::ALL
                .into_iter()
                .zip(picks)
                .filter_map(|(c, keep)| keep.then_some(c))
                .collect()
        })
    }

    #[test]
    fn names_are_the_ones_protocol_v1_sent() {
        // Builds before `two-way` sent exactly these; renaming one would make them lack it.
        let v1 = ["tcp", "udp", "dns", "control"];
        for name in v1 {
            assert!(Capability::from_name(name).is_some(), "{name}");
        }
        assert_eq!(Capability::from_name("two-way"), Some(Capability::TwoWay));
    }

    #[test]
    fn set_operations() {
        let required = Capabilities::TUNNEL;
        let offered = required.without(Capability::TwoWay);
        assert_eq!(
            required.missing_from(offered),
            Capabilities::empty().with(Capability::TwoWay)
        );
        assert!(offered.missing_from(required).is_empty());
        assert_eq!(required.common(offered), offered);
        assert_eq!(offered.to_string(), "control, tcp, udp, dns");
        assert_eq!(Capabilities::empty().to_string(), "none");
    }

    #[test]
    fn decodes_the_names_an_old_peer_sent_and_skips_unknown_ones() {
        let names: Vec<String> = ["tcp", "teleport", "dns", ""].map(str::to_owned).to_vec();
        let set: Capabilities = decode("capabilities", &encode(&names)).unwrap();
        assert_eq!(
            set,
            Capabilities::empty()
                .with(Capability::Tcp)
                .with(Capability::Dns)
        );
    }

    proptest! {
        #[test]
        fn sets_round_trip(set in any_set()) {
            let back: Capabilities = decode("capabilities", &encode(&set)).unwrap();
            prop_assert_eq!(back, set);
        }

        #[test]
        fn encoded_as_names(set in any_set()) {
            let names: Vec<String> = decode("capabilities", &encode(&set)).unwrap();
            prop_assert_eq!(names.len(), set.iter().count());
            prop_assert!(names.iter().all(|n| Capability::from_name(n).is_some()));
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Capabilities>("capabilities", &bytes);
        }
    }
}
