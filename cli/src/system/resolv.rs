//! Pointing the system resolver at tether's DNS server.
//!
//! The original file is copied to a backup in the state directory before the rewrite, and
//! written back, in place, on exit or by the next tether run after a crash. Writing in place
//! (not rename) keeps bind mounts and the file's identity intact.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use tether_tunnel::resolv::ResolvConf;
use thiserror::Error;

/// First line of every file tether writes, so that a restore never clobbers a file that
/// something else rewrote in the meantime.
pub const MARKER: &str = "# Written by tether";

#[derive(Debug, Error)]
pub enum ResolvError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn read(path: &Path) -> Result<String, ResolvError> {
    std::fs::read_to_string(path).map_err(|source| ResolvError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The nameservers a resolv.conf lists, on port 53.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    ResolvConf::parse(text).nameservers
}

/// The file tether writes: its DNS server only, the cluster's search path before the
/// machine's own, and the machine's options.
pub fn render(original: &str, dns: Ipv4Addr, cluster_search: &[String], backup: &Path) -> String {
    format!(
        "{MARKER}; the original is in {} and comes back when tether exits.\n{}",
        backup.display(),
        resolver_lines(original, dns, cluster_search)
    )
}

/// The file a rootless run's namespace sees as /etc/resolv.conf: as [`render`] makes it, for
/// a file that nothing outside the namespace reads.
pub fn render_for_namespace(original: &str, dns: Ipv4Addr, cluster_search: &[String]) -> String {
    format!(
        "{MARKER} for this namespace; the machine's own file is unchanged.\n{}",
        resolver_lines(original, dns, cluster_search)
    )
}

fn resolver_lines(original: &str, dns: Ipv4Addr, cluster_search: &[String]) -> String {
    let original = ResolvConf::parse(original);
    let mut search: Vec<String> = cluster_search.to_vec();
    // The machine's own list is its last search or domain line, as glibc reads it.
    for word in original.search {
        if !search.contains(&word) {
            search.push(word);
        }
    }
    let mut out = format!("nameserver {dns}\n");
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for words in original.options {
        out.push_str(&format!("options {}\n", words.join(" ")));
    }
    out
}

/// Saves `original` to `backup`, then writes `new` over `path`.
pub fn rewrite(path: &Path, backup: &Path, original: &str, new: &str) -> Result<(), ResolvError> {
    write_durably(backup, original, true)?;
    write_durably(path, new, false)
}

/// Puts the backup back if `path` still holds tether's file. Returns false when the file was
/// changed by someone else since (it is then left alone). The backup is removed either way.
pub fn restore(path: &Path, backup: &Path) -> Result<bool, ResolvError> {
    let original = match std::fs::read_to_string(backup) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(source) => {
            return Err(ResolvError::Read {
                path: backup.to_owned(),
                source,
            });
        }
    };
    let current = read(path)?;
    let ours = current.starts_with(MARKER);
    if ours {
        write_durably(path, &original, false)?;
    }
    let _ = std::fs::remove_file(backup);
    Ok(ours)
}

/// Replaces the contents of an existing file, keeping its inode: a bind mount of it shows
/// the new text.
pub fn write_in_place(path: &Path, text: &str) -> Result<(), ResolvError> {
    write_durably(path, text, false)
}

fn write_durably(path: &Path, text: &str, create: bool) -> Result<(), ResolvError> {
    let result = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .create(create)
        .open(path)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
    result.map_err(|source| ResolvError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &str = "# from dhcp\nnameserver 10.53.0.53\nnameserver fd00::53\nsearch corp.example\noptions edns0 timeout:2\n";

    #[test]
    fn parses_nameservers() {
        assert_eq!(
            nameservers(ORIGINAL),
            vec![
                "10.53.0.53:53".parse().unwrap(),
                "[fd00::53]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn renders_cluster_first() {
        let search = vec![
            "shop.svc.cluster.local".to_owned(),
            "svc.cluster.local".to_owned(),
        ];
        let out = render(
            ORIGINAL,
            Ipv4Addr::new(198, 18, 0, 2),
            &search,
            Path::new("/b"),
        );
        assert!(out.starts_with(MARKER));
        assert!(out.contains("\nnameserver 198.18.0.2\n"));
        assert!(!out.contains("10.53.0.53"));
        assert!(out.contains("search shop.svc.cluster.local svc.cluster.local corp.example\n"));
        assert!(out.contains("options edns0 timeout:2\n"));
    }

    #[test]
    fn rewrite_and_restore() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("resolv.conf");
        let backup = dir.join("backup");
        std::fs::write(&path, ORIGINAL).unwrap();
        let new = render(ORIGINAL, Ipv4Addr::new(198, 18, 0, 2), &[], &backup);
        rewrite(&path, &backup, ORIGINAL, &new).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), new);
        assert!(restore(&path, &backup).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ORIGINAL);
        assert!(!backup.exists());

        // Someone else rewrote the file while tether ran: leave theirs alone.
        rewrite(&path, &backup, ORIGINAL, &new).unwrap();
        std::fs::write(&path, "nameserver 1.2.3.4\n").unwrap();
        assert!(!restore(&path, &backup).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 1.2.3.4\n"
        );
    }
}
