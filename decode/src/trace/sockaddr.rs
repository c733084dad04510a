//! Socket addresses captured by the trace probes (`connect`, `bind`, `accept`, …), decoded into
//! swoll's address strings: `ipv4:1.2.3.4:80`, `ipv6:[::1]:443`, `unix:/path`.
//!
//! The bytes are whatever the traced process passed or the kernel wrote, cut at the capture
//! size, so every decoder reads through `field`, which pads a short input with zeros instead
//! of panicking.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::flags::{AF_FAMILIES, enum_name};

/// `AF_UNSPEC`.
const AF_UNSPEC: u16 = 0;
/// `AF_UNIX`.
const AF_UNIX: u16 = 1;
/// `AF_INET`.
const AF_INET: u16 = 2;
/// `AF_INET6`.
const AF_INET6: u16 = 10;
/// `AF_NETLINK`.
const AF_NETLINK: u16 = 16;

/// Bytes of `sa_family`, at the start of every sockaddr.
const FAMILY_BYTES: usize = 2;

/// A decoded socket address, as trace events carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SockAddr {
    /// The family's name (`AF_INET`, `AF_INET6`, `AF_UNIX`, …), or `AF_<n>` for a number
    /// without one.
    pub family: String,
    /// The address without the port: `127.0.0.1`, `::1`, a unix path (`@name` for an abstract
    /// socket), netlink's `pid=<n>,groups=<hex>`, or the hex bytes of another family.
    pub address: String,
    /// The port in host order (0 for families without one).
    pub port: u16,
    /// The whole address in swoll's form: `ipv4:127.0.0.1:8080`, `ipv6:[::1]:443`,
    /// `unix:/run/x.sock`, `unix:@name`, `netlink:pid=0,groups=00000000`, `unspec`, or
    /// `<family>:<hex bytes>`.
    pub decoded: String,
}

/// `N` bytes of `bytes` from `offset`, zero-padded where `bytes` is too short.
fn field<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0; N];
    let src = bytes.get(offset..).unwrap_or_default();
    let n = src.len().min(N);
    out[..n].copy_from_slice(&src[..n]);
    out
}

/// Lowercase hex of `bytes`, two digits each.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a raw `struct sockaddr` of `bytes.len()` bytes. Never panics: a short input decodes
/// as if zero-padded, an unknown family as its hex bytes.
pub fn decode(bytes: &[u8]) -> SockAddr {
    // sa_family_t is in host order; everything after it is the family's own.
    let family = u16::from_ne_bytes(field(bytes, 0));
    let family_name = match enum_name(AF_FAMILIES, u64::from(family)) {
        Some(name) => name.to_owned(),
        None => format!("AF_{family}"),
    };
    let port = u16::from_be_bytes(field(bytes, 2));
    let (address, port, decoded) = match family {
        AF_INET => {
            let ip = Ipv4Addr::from(field::<4>(bytes, 4));
            (ip.to_string(), port, format!("ipv4:{ip}:{port}"))
        }
        AF_INET6 => {
            let ip = Ipv6Addr::from(field::<16>(bytes, 8));
            (ip.to_string(), port, format!("ipv6:[{ip}]:{port}"))
        }
        AF_UNIX => {
            let path = unix_path(bytes.get(FAMILY_BYTES..).unwrap_or_default());
            let decoded = format!("unix:{path}");
            (path, 0, decoded)
        }
        AF_NETLINK => {
            let pid = u32::from_ne_bytes(field(bytes, 4));
            let groups = u32::from_ne_bytes(field(bytes, 8));
            let address = format!("pid={pid},groups={groups:08x}");
            let decoded = format!("netlink:{address}");
            (address, 0, decoded)
        }
        AF_UNSPEC => (String::new(), 0, "unspec".to_owned()),
        _ => {
            let address = hex(bytes.get(FAMILY_BYTES..).unwrap_or_default());
            let decoded = format!("{family_name}:{address}");
            (address, 0, decoded)
        }
    };
    SockAddr {
        family: family_name,
        address,
        port,
        decoded,
    }
}

/// `sun_path`: a path up to its NUL, or, when it starts with a NUL, an abstract name shown as
/// `@name` (its length is the address length, so only trailing NULs are dropped).
fn unix_path(sun_path: &[u8]) -> String {
    match sun_path.split_first() {
        Some((0, name)) => {
            let end = name.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            format!("@{}", String::from_utf8_lossy(&name[..end]))
        }
        _ => {
            let end = sun_path
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(sun_path.len());
            String::from_utf8_lossy(&sun_path[..end]).into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut b = AF_INET.to_ne_bytes().to_vec();
        b.extend(port.to_be_bytes());
        b.extend(ip);
        b.extend([0; 8]);
        b
    }

    fn unix(path: &[u8]) -> Vec<u8> {
        let mut b = AF_UNIX.to_ne_bytes().to_vec();
        b.extend(path);
        b
    }

    #[test]
    fn sockaddr_ipv4() {
        let got = decode(&inet([127, 0, 0, 1], 8080));
        assert_eq!(
            serde_json::to_value(&got).ok(),
            Some(serde_json::json!({
                "family": "AF_INET",
                "address": "127.0.0.1",
                "port": 8080,
                "decoded": "ipv4:127.0.0.1:8080",
            }))
        );
    }

    #[test]
    fn sockaddr_ipv6_port_in_host_order() {
        let mut b = AF_INET6.to_ne_bytes().to_vec();
        b.extend(443u16.to_be_bytes());
        b.extend([0; 4]);
        b.extend(Ipv6Addr::LOCALHOST.octets());
        b.extend([0; 4]);
        let got = decode(&b);
        assert_eq!(got.family, "AF_INET6");
        assert_eq!(got.address, "::1");
        assert_eq!(got.port, 443);
        assert_eq!(got.decoded, "ipv6:[::1]:443");
    }

    #[test]
    fn sockaddr_unix_path_and_abstract() {
        let got = decode(&unix(b"/run/docker.sock\0\0\0"));
        assert_eq!(
            (
                got.family.as_str(),
                got.address.as_str(),
                got.decoded.as_str()
            ),
            ("AF_UNIX", "/run/docker.sock", "unix:/run/docker.sock")
        );
        let got = decode(&unix(b"\0my-name"));
        assert_eq!(
            (got.address.as_str(), got.decoded.as_str()),
            ("@my-name", "unix:@my-name")
        );
        assert_eq!(decode(&unix(b"")).decoded, "unix:");
    }

    #[test]
    fn sockaddr_netlink_unspec_and_others() {
        let mut b = AF_NETLINK.to_ne_bytes().to_vec();
        b.extend([0; 2]);
        b.extend(42u32.to_ne_bytes());
        b.extend(0x11u32.to_ne_bytes());
        assert_eq!(decode(&b).decoded, "netlink:pid=42,groups=00000011");
        assert_eq!(decode(&[0, 0]).decoded, "unspec");
        let mut b = 17u16.to_ne_bytes().to_vec();
        b.extend([0xab, 0x01]);
        let got = decode(&b);
        assert_eq!(
            (got.family.as_str(), got.decoded.as_str()),
            ("AF_PACKET", "AF_PACKET:ab01")
        );
        let got = decode(&999u16.to_ne_bytes());
        assert_eq!(
            (got.family.as_str(), got.decoded.as_str()),
            ("AF_999", "AF_999:")
        );
    }

    #[test]
    fn sockaddr_short_input_never_panics() {
        for bytes in [&[][..], &[2], &[2, 0, 0x1f], &[10, 0, 1, 2, 3], &[1, 0, 0]] {
            let _ = decode(bytes);
        }
        assert_eq!(
            decode(&inet([10, 0, 0, 1], 80)[..5]).decoded,
            "ipv4:10.0.0.0:80"
        );
    }
}
