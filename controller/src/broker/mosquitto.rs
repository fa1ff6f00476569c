//! Password and ACL files for running Loa on Mosquitto instead of the embedded broker
//! (`loa-controller mosquitto-acl --out DIR`): `passwd` in mosquitto_passwd's own format (`user:$7$101$salt$hash`,
//! PBKDF2-HMAC-SHA512 with 101 rounds and a 12-byte salt, base64), `acl` giving each receiver read on
//! `{prefix}/rx/{id}/#` and write on `{prefix}/up/{id}/+` and the controller read-write on `{prefix}/#`, and
//! `loa.conf`, a mosquitto configuration using both with `use_username_as_clientid` (so that one receiver cannot
//! take another's client id and push it off the broker).
//!
//! The controller keeps only a SHA-256 of each receiver's secret for its own broker, which Mosquitto cannot use,
//! so since schema v6 registration also stores the secret's Mosquitto hash ([`password_hash`]). Receivers
//! registered before that have none; they are listed in [`Written::without_hash`] and left out of `passwd`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use loa_protocol::Topics;
use sha2::{Digest, Sha512};

use crate::store::{Store, StoreError};

/// PBKDF2 rounds, as mosquitto_passwd (2.0) uses.
pub const ROUNDS: u32 = 101;
/// Salt length, as mosquitto_passwd uses.
pub const SALT_BYTES: usize = 12;

/// What can go wrong writing the files.
#[derive(Debug, thiserror::Error)]
pub enum MosquittoFilesError {
    /// The database cannot be read.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// A file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A login name would break the file format.
    #[error("{0:?} cannot be a Mosquitto user name (no ':', spaces or wildcards)")]
    BadUser(String),
}

/// What [`write_files`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The password file.
    pub passwd: PathBuf,
    /// The ACL file.
    pub acl: PathBuf,
    /// The mosquitto configuration using both.
    pub conf: PathBuf,
    /// Receivers in `passwd` and `acl`.
    pub receivers: usize,
    /// Receivers registered before Mosquitto hashes were kept: in `acl` but not in `passwd` (they cannot log in
    /// to Mosquitto until registered again).
    pub without_hash: Vec<String>,
}

/// What to write the files for.
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// The topic tree.
    pub topics: Topics,
    /// The controller's client id (its user name).
    pub controller_id: String,
    /// The controller's password on Mosquitto (`broker_password`).
    pub controller_password: String,
    /// The port mosquitto listens on, for `loa.conf`.
    pub port: u16,
}

/// `secret`'s line value in a mosquitto password file, with a fresh random salt.
pub fn password_hash(secret: &str) -> String {
    password_hash_with_salt(secret, &rand::random::<[u8; SALT_BYTES]>())
}

/// `secret`'s mosquitto hash with the given salt: `$7$101$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>`.
pub fn password_hash_with_salt(secret: &str, salt: &[u8]) -> String {
    let key = pbkdf2_sha512(secret.as_bytes(), salt, ROUNDS);
    format!("$7${ROUNDS}${}${}", base64(salt), base64(&key))
}

/// HMAC-SHA512 (RFC 2104).
fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> [u8; 64] {
    const BLOCK: usize = 128;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..64].copy_from_slice(&Sha512::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha512::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha512::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// PBKDF2-HMAC-SHA512 (RFC 8018) with a 64-byte output (one block).
fn pbkdf2_sha512(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 64] {
    let mut u = hmac_sha512(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..rounds {
        u = hmac_sha512(password, &[&u]);
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// Standard base64 with padding (what mosquitto_passwd writes).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn check_user(name: &str) -> Result<(), MosquittoFilesError> {
    if name.is_empty() || name.contains([':', ' ', '\t', '\n', '\r', '#', '+', '/']) {
        return Err(MosquittoFilesError::BadUser(name.to_string()));
    }
    Ok(())
}

/// The three files' text: (passwd, acl), and the receivers left out of passwd.
pub fn render(
    settings: &FileSettings,
    logins: &[(String, Option<String>)],
) -> Result<(String, String, Vec<String>), MosquittoFilesError> {
    let prefix = settings.topics.prefix();
    check_user(&settings.controller_id)?;
    let mut passwd = format!("{}:{}\n", settings.controller_id, password_hash(&settings.controller_password));
    let acl = format!(
        "# Loa topic ACL, written by `loa-controller mosquitto-acl` (rerun it after registering receivers: passwd\n\
         # gains them; then send mosquitto SIGHUP). A receiver reads only its own downlink and writes only its own\n\
         # uplink.\n\n\
         user {}\ntopic readwrite {prefix}/#\n\n\
         # Every receiver logs in with its id as user name (and client id): one pattern for all of them, so Mosquitto\n\
         # does not scan a block per receiver on every connect.\n\
         pattern read {prefix}/rx/%u/#\npattern write {prefix}/up/%u/+\n",
        settings.controller_id
    );
    let mut without_hash = Vec::new();
    for (id, hash) in logins {
        check_user(id)?;
        match hash {
            Some(h) => {
                let _ = writeln!(passwd, "{id}:{h}");
            }
            None => without_hash.push(id.clone()),
        }
    }
    Ok((passwd, acl, without_hash))
}

/// Writes `passwd` (mode 0600), `acl` and `loa.conf` into `out` (created if needed), each atomically.
pub fn write_files(store: &Store, settings: &FileSettings, out: &Path) -> Result<Written, MosquittoFilesError> {
    let logins = store.broker_logins()?;
    let (passwd_text, acl_text, without_hash) = render(settings, &logins)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MosquittoFilesError::Write { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let out = std::fs::canonicalize(out).map_err(io(out))?;
    let (passwd, acl, conf) = (out.join("passwd"), out.join("acl"), out.join("loa.conf"));
    let conf_text = format!(
        "# mosquitto configuration for Loa, written by `loa-controller mosquitto-acl`.\n\
         per_listener_settings false\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
         listener {}\nuse_username_as_clientid true\nmessage_size_limit 1048576\n",
        passwd.display(),
        acl.display(),
        settings.port
    );
    let write = |path: &Path, text: &str| {
        crate::store::write_atomic(path, text.as_bytes()).map_err(|e| match e {
            StoreError::Io(source) => MosquittoFilesError::Write { path: path.to_path_buf(), source },
            other => MosquittoFilesError::Store(other),
        })
    };
    write_private(&passwd, &passwd_text).map_err(io(&passwd))?;
    write(&acl, &acl_text)?;
    write(&conf, &conf_text)?;
    Ok(Written { passwd, acl, conf, receivers: logins.len(), without_hash })
}

/// Writes `text` to `path` atomically (temporary file, fsync, rename) with mode 0600 from the start.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("{}.tmp", crate::store::random_id("", 6)));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_known_vectors() {
        // PBKDF2-HMAC-SHA512("password", "salt"), as Python's hashlib computes it.
        assert_eq!(
            hex::encode(pbkdf2_sha512(b"password", b"salt", 1)),
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252c02d470a285a0501bad999bfe943c08f\
             050235d7d68b1da55e63f73b60a57fce"
        );
        assert_eq!(
            hex::encode(pbkdf2_sha512(b"password", b"salt", 101)),
            "0899b1f8f12cd157a81fc4cc1f8f046f1ac1f5f733a0534b26eebf34e94415d0e3983938e77f0e205b568937a0c9e217\
             92c46a6944aba1b30ab14186a117e7f2"
        );
        let long_key = [7u8; 200];
        assert_ne!(hmac_sha512(&long_key, &[b"x"]), hmac_sha512(&long_key[..128], &[b"x"]));
    }

    #[test]
    fn same_line_as_mosquitto_passwd() {
        // `mosquitto_passwd -b pw rx-aaaaaaaaaaaa secret123` (mosquitto 2.0.11) wrote this line.
        let line = "$7$101$CqsWg5Kboapx+vj+$bDM34dg+oQPttW5JjAsxgXtSqZ7XG5/L9Kmv+qo64dAyKmZGNUzAXU0pY3avqTQx85C3\
                    YdniCcuH7oKuH9IfgA==";
        let salt = hex::decode("0aab1683929ba1aa71faf8fe").unwrap();
        assert_eq!(password_hash_with_salt("secret123", &salt), line);
        let fresh = password_hash("secret123");
        assert!(fresh.starts_with("$7$101$") && fresh.len() == line.len() && fresh != line, "{fresh}");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn renders_a_login_per_receiver_and_one_pattern_for_all() {
        let settings = FileSettings {
            topics: Topics::default(),
            controller_id: "loa-controller".into(),
            controller_password: "pw".into(),
            port: 1883,
        };
        let logins = vec![("rx-aaaaaaaaaaaa".to_string(), Some("$7$h".to_string())), ("rx-bbbbbbbbbbbb".into(), None)];
        let (passwd, acl, without) = render(&settings, &logins).unwrap();
        let lines: Vec<&str> = passwd.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("loa-controller:$7$101$"));
        assert_eq!(lines[1], "rx-aaaaaaaaaaaa:$7$h");
        assert_eq!(without, vec!["rx-bbbbbbbbbbbb".to_string()]);
        assert!(acl.contains("user loa-controller\ntopic readwrite loa/v1/#\n"));
        assert!(acl.contains("pattern read loa/v1/rx/%u/#\npattern write loa/v1/up/%u/+\n"));
        assert!(!acl.contains("user rx-"), "one pattern, not a block per receiver:\n{acl}");
        let bad = FileSettings { controller_id: "a:b".into(), ..settings };
        assert!(matches!(render(&bad, &[]), Err(MosquittoFilesError::BadUser(_))));
    }
}
